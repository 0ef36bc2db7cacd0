//! The whole pipeline on small Compose files: what loads, what is reported where, and the specs that
//! come out. The engine-level parity with `docker stack deploy` is proven by the e2e conformance test.

use std::collections::BTreeMap;

use bollard::models::{EndpointPortConfigPublishModeEnum, MountType};

use super::convert::{ObjectIds, Stack};
use super::policy::Policy;
use super::{Diagnostic, Input, Loaded, load};

fn try_load(text: &str, vars: &[(&str, &str)]) -> Result<Loaded, Vec<Diagnostic>> {
    let files = BTreeMap::from([("app.env".to_owned(), "# comment\nFROM_FILE=1\nBOTH=file\n".to_owned())]);
    let variables: BTreeMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    load(&Input { text, files: &files, variables: &variables }, &Policy::default())
}

fn errors(text: &str) -> Vec<(String, u32)> {
    try_load(text, &[]).unwrap_err().into_iter().map(|d| (d.path, d.line)).collect()
}

#[test]
fn every_error_is_reported_with_its_path_and_line() {
    let text = "version: '3.8'
services:
  web:
    image: nginx
    deploy:
      replicas: lots
      restart_policy: {condition: sometimes}
    ports: ['80:http']
    volumes: [data:/data]
    healthcheck: {interval: 10}
    frobnicate: yes
  db:
    networks: [back]
";
    assert_eq!(
        errors(text),
        vec![
            ("services.web.deploy.replicas".into(), 6),
            ("services.web.deploy.restart_policy.condition".into(), 7),
            ("services.web.ports[0]".into(), 8),
            ("services.web.volumes[0]".into(), 9),
            ("services.web.healthcheck.interval".into(), 10),
            ("services.web.frobnicate".into(), 11),
            ("services.db.image".into(), 13),
            ("services.db.networks[0]".into(), 13),
        ]
    );
    let all = try_load(text, &[]).unwrap_err();
    assert_eq!(all[0].message, "expected an integer, found a string");
}

#[test]
fn hostile_files_are_refused_by_the_default_policy() {
    let text = "version: '3.8'
services:
  a:
    image: x
    privileged: true
    network_mode: host
    volumes: ['/:/host', '/var/run/docker.sock:/var/run/docker.sock']
    cap_add: [SYS_ADMIN, CHOWN]
    deploy: {placement: {constraints: ['node.role == manager']}}
  b:
    image: x
    networks: [hostnet]
networks:
  hostnet: {external: true, name: host}
";
    let paths: Vec<String> = errors(text).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "services.a.privileged",
            "services.a.network_mode",
            "services.a.volumes[0]",
            "services.a.volumes[1]",
            "services.a.cap_add[0]",
            "services.a.deploy.placement.constraints[0]",
            "services.b"
        ]
    );
    // A volume that is a host path in disguise.
    let disguised = "version: '3.8'\nservices:\n  a: {image: x, volumes: ['v:/v']}\nvolumes:\n  v: {driver_opts: {type: none, o: bind, device: /etc}}\n";
    assert_eq!(errors(disguised), vec![("volumes.v.driver_opts".to_owned(), 1)]);
}

#[test]
fn interpolation_anchors_and_env_files() {
    let text = "version: '3.8'
x-common: &common
  image: ${IMAGE:-busybox}:${TAG}
  env_file: ./app.env
services:
  web:
    <<: *common
    environment: {BOTH: inline, EMPTY: '', BARE: null}
    deploy: {replicas: '${N}'}
";
    let loaded = try_load(text, &[("TAG", "1.36"), ("N", "3"), ("EMPTY", "from-var")]).unwrap();
    let web = &loaded.project.services["web"];
    assert_eq!(web.image, "busybox:1.36");
    assert_eq!(web.deploy.mode, super::model::Mode::Replicated(Some(3)));
    let env: Vec<_> = web.environment.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    assert_eq!(env, ["BARE=None", "BOTH=Some(\"inline\")", "EMPTY=Some(\"from-var\")", "FROM_FILE=Some(\"1\")"]);
    // A quoted number that no variable produced stays a string, as for the CLI.
    assert_eq!(errors("version: '3'\nservices:\n  a: {image: x, deploy: {replicas: '3'}}\n")[0].0, "services.a.deploy.replicas");
    assert!(try_load("version: '3'\nservices:\n  a: {image: '${X:?set X}'}\n", &[]).unwrap_err()[0].message.contains("set X"));
}

#[test]
fn warnings_for_keys_swarm_ignores() {
    let text = "services:\n  a:\n    image: x\n    build: .\n    depends_on: [b]\n    restart: always\n    deploy: {restart_policy: {condition: any}, resources: {limits: {memory: 64m}}}\n  b: {image: x, ports: ['127.0.0.1:80:80']}\n";
    let loaded = try_load(text, &[]).unwrap();
    let paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "version",
            "services.a.build",
            "services.a.depends_on",
            "services.a.restart",
            "services.b.deploy.resources.limits.memory",
            "services.b.ports[0]"
        ]
    );
}

#[test]
fn specs_follow_the_cli() {
    let text = "version: '3.8'
services:
  web:
    image: nginx
    command: nginx -g 'daemon off;'
    environment: [B=2, A=1]
    ports: ['8080-8081:80', {target: 443, published: 8443, mode: host}, 53/udp]
    volumes: ['data:/data:ro', {type: tmpfs, target: /tmp, tmpfs: {size: 1048576}}]
    networks: {front: {aliases: [www]}}
    secrets: [{source: token, target: t, mode: 0440}]
    configs: [conf]
    extra_hosts: ['db:10.0.0.5']
    ulimits: {nofile: {soft: 10, hard: 20}, core: 0}
    healthcheck: {test: curl -f localhost, interval: 5s}
    stop_grace_period: 1m30s
    deploy:
      replicas: 2
      resources: {limits: {cpus: '0.5', memory: 128M}}
      update_config: {order: start-first}
      placement: {preferences: [{spread: node.id}]}
      labels: [tier=web]
networks:
  front: {}
volumes:
  data: {labels: {keep: 'yes'}}
secrets:
  token: {content: s3cret}
configs:
  conf: {file: app.env}
";
    let loaded = try_load(text, &[]).unwrap();
    let stack = Stack { name: "shop", project: &loaded.project };
    let ids = ObjectIds {
        secrets: [("shop_token".to_owned(), "sid".to_owned())].into(),
        configs: [("shop_conf".to_owned(), "cid".to_owned())].into(),
    };
    let spec = stack.service("web", &ids);
    assert_eq!(spec.name.as_deref(), Some("shop_web"));
    let labels = spec.labels.as_ref().unwrap();
    assert_eq!(labels["com.docker.stack.namespace"], "shop");
    assert_eq!(labels["com.docker.stack.image"], "nginx");
    assert_eq!(labels["tier"], "web");
    let task = spec.task_template.as_ref().unwrap();
    let c = task.container_spec.as_ref().unwrap();
    assert_eq!(c.image.as_deref(), Some("nginx:latest"));
    assert_eq!(c.args.as_ref().unwrap(), &["nginx", "-g", "daemon off;"]);
    assert_eq!(c.env.as_ref().unwrap(), &["A=1", "B=2"]);
    assert_eq!(c.hosts.as_ref().unwrap(), &["10.0.0.5 db"]);
    assert_eq!(c.stop_grace_period, Some(90_000_000_000));
    assert_eq!(c.health_check.as_ref().unwrap().test.as_ref().unwrap(), &["CMD-SHELL", "curl -f localhost"]);
    assert_eq!(c.health_check.as_ref().unwrap().interval, Some(5_000_000_000));
    let ulimits: Vec<_> = c.ulimits.as_ref().unwrap().iter().map(|u| (u.name.clone().unwrap(), u.soft, u.hard)).collect();
    assert_eq!(ulimits, [("core".to_owned(), Some(0), Some(0)), ("nofile".to_owned(), Some(10), Some(20))]);
    let secret = &c.secrets.as_ref().unwrap()[0];
    assert_eq!((secret.secret_id.as_deref(), secret.file.as_ref().unwrap().mode), (Some("sid"), Some(0o440)));
    assert_eq!(c.configs.as_ref().unwrap()[0].file.as_ref().unwrap().name.as_deref(), Some("conf"));
    let mounts = c.mounts.as_ref().unwrap();
    assert_eq!(
        (mounts[0].typ, mounts[0].source.as_deref(), mounts[0].read_only),
        (Some(MountType::VOLUME), Some("shop_data"), Some(true))
    );
    assert_eq!(mounts[0].volume_options.as_ref().unwrap().labels.as_ref().unwrap()["keep"], "yes");
    assert_eq!(mounts[1].tmpfs_options.as_ref().unwrap().size_bytes, Some(1 << 20));
    let nets = task.networks.as_ref().unwrap();
    assert_eq!(
        (nets[0].target.as_deref(), nets[0].aliases.as_ref().unwrap().clone()),
        (Some("shop_front"), vec!["www".to_owned(), "web".to_owned()])
    );
    let limits = task.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!((limits.nano_cpus, limits.memory_bytes), (Some(500_000_000), Some(128 << 20)));
    assert!(task.restart_policy.is_none());
    assert_eq!(spec.update_config.as_ref().unwrap().parallelism, Some(1));
    assert!(spec.rollback_config.is_none());
    let ports: Vec<_> = spec
        .endpoint_spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.target_port.unwrap(), p.published_port.unwrap(), p.publish_mode.unwrap()))
        .collect();
    use EndpointPortConfigPublishModeEnum::{HOST, INGRESS};
    assert_eq!(ports, [(53, 0, INGRESS), (80, 8080, INGRESS), (80, 8081, INGRESS), (443, 8443, HOST)]);
    let (networks, external) = stack.networks();
    assert_eq!(networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["shop_front"]);
    assert!(external.is_empty());
    assert_eq!(stack.secrets()[0].data.as_deref(), Some("czNjcmV0"));
}
