//! Applications on a real Swarm: one Compose file deployed by `docker stack deploy` (docker.io's CLI)
//! and by Berth onto the same local cluster, with an image from the built-in registry; the specs the
//! engine returns must be equal. Then scale and delete, each checked on the engine.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use berth_tests::{PASSWORD, TestApp, temp_data_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};

use berth_tests::docker_cli::{Docker, RealCluster, RemoveOnDrop, build_context};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/compose");

/// The template files of the corpus, by name.
fn corpus_files() -> BTreeMap<String, String> {
    ["web.env", "site.conf", "token.txt"]
        .iter()
        .map(|f| ((*f).to_owned(), std::fs::read_to_string(Path::new(CORPUS).join(f)).unwrap()))
        .collect()
}

/// An engine object as JSON with what legitimately differs between two stacks removed: ids, versions,
/// timestamps, and the stack name (`stack` → `STACK`). Network ids (the engine stores a service's
/// network targets as ids) become the networks' names first.
fn normalise(mut v: Value, stack: &str, networks: &BTreeMap<String, String>) -> Value {
    fn walk(v: &mut Value, stack: &str, networks: &BTreeMap<String, String>) {
        match v {
            Value::Object(map) => {
                for key in [
                    "ID",
                    "SecretID",
                    "ConfigID",
                    "Version",
                    "CreatedAt",
                    "UpdatedAt",
                    "PreviousSpec",
                    "Endpoint",
                    "UpdateStatus",
                ] {
                    map.remove(key);
                }
                for (_, child) in map.iter_mut() {
                    walk(child, stack, networks);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, stack, networks)),
            Value::String(s) => {
                if let Some(name) = networks.get(s.as_str()) {
                    *s = name.clone();
                }
                if s == stack {
                    *s = "STACK".to_owned();
                } else if let Some(rest) = s.strip_prefix(&format!("{stack}_")) {
                    *s = format!("STACK_{rest}");
                }
            }
            _ => {}
        }
    }
    walk(&mut v, stack, networks);
    v
}

/// Network id → name, for every network of the engine.
fn network_names(cli: &Docker, engine: &str) -> BTreeMap<String, String> {
    cli.ok(engine, &["network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}"])
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(id, name)| (id.to_owned(), name.to_owned())))
        .collect()
}

fn inspect(cli: &Docker, engine: &str, kind: &str, name: &str) -> Value {
    let out = cli.ok(engine, &[kind, "inspect", name]);
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_deployed_by_berth_equals_docker_stack_deploy_and_is_operated_on_the_engine() {
    let app = TestApp::spawn_with_registry(1 << 30).await.with_workers();
    let address = app.registry.as_ref().unwrap().address.clone();
    let t = app.tenant("Acme").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();

    let real = RealCluster::create(&app, &t.owner, "apps", 1, 1).await;
    let cluster = real.id;
    let (manager, cli) = (real.manager.clone(), &real.cli);

    // An image in the tenant's namespace of the built-in registry.
    let ctx = build_context(&format!("apps {}", uuid::Uuid::new_v4()));
    let _cleanup = RemoveOnDrop(vec![ctx.clone()]);
    let image = format!("{address}/{}/web:1", t.slug);
    cli.ok(&manager, &["build", "-q", "-t", &image, ctx.to_str().unwrap()]);
    let login = cli.login(&manager, &address, &email, PASSWORD);
    assert!(login.status.success(), "docker login: {}", String::from_utf8_lossy(&login.stderr));
    cli.ok(&manager, &["push", &image]);

    // The same file, twice: `docker stack deploy` as stack `cli`, Berth as application `berth`.
    let compose = std::fs::read_to_string(Path::new(CORPUS).join("stack.yml")).unwrap();
    let dir = temp_data_dir("berth-stack");
    let _cleanup_dir = RemoveOnDrop(vec![dir.clone()]);
    for (name, content) in corpus_files() {
        std::fs::write(dir.join(name), content).unwrap();
    }
    std::fs::write(dir.join("stack.yml"), &compose).unwrap();
    cli.stack_deploy(&manager, &dir, "stack.yml", &[("IMAGE", &image)], "cli");

    let deployed = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "berth", "cluster_id": cluster, "compose": compose, "files": corpus_files(), "variables": {"IMAGE": image}}),
        )
        .await;
    deployed.expect(StatusCode::ACCEPTED);
    let application = deployed.id();
    let job = app.wait_job(&t.owner, deployed.body["job_id"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!(job["state"], "succeeded", "{job}");

    // `docker stack services berth` lists Berth's services: the stack namespace is the application name.
    let listed = cli.ok(&manager, &["stack", "services", "--format", "{{.Name}}", "berth"]);
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort();
    assert_eq!(names, ["berth_agent", "berth_web", "berth_worker"]);

    // Whole specs, equal once the stack names, ids and versions are set aside.
    let nets = network_names(cli, &manager);
    for service in ["web", "worker", "agent"] {
        let ours = normalise(inspect(cli, &manager, "service", &format!("berth_{service}"))["Spec"].clone(), "berth", &nets);
        let theirs = normalise(inspect(cli, &manager, "service", &format!("cli_{service}"))["Spec"].clone(), "cli", &nets);
        assert_eq!(ours, theirs, "service {service}: Berth's spec (left) differs from docker stack deploy's (right)");
    }
    for (kind, name) in [("network", "front"), ("network", "back"), ("config", "site"), ("secret", "token")] {
        let mut ours = normalise(inspect(cli, &manager, kind, &format!("berth_{name}")), "berth", &nets);
        let mut theirs = normalise(inspect(cli, &manager, kind, &format!("cli_{name}")), "cli", &nets);
        for v in [&mut ours, &mut theirs] {
            // Networks: the engine's own bookkeeping (subnets handed out, attached containers, peers).
            for key in ["Id", "Created", "IPAM", "Containers", "Peers", "Services"] {
                v.as_object_mut().unwrap().remove(key);
            }
            if let Some(options) = v.get_mut("Options").and_then(Value::as_object_mut) {
                options.remove("com.docker.network.driver.overlay.vxlanid_list");
            }
        }
        assert_eq!(ours, theirs, "{kind} {name}: Berth's (left) differs from docker stack deploy's (right)");
    }

    // The CLI's stack goes (its host-mode port would keep Berth's web tasks off both nodes); Berth's
    // application is then observed running: every task up, on a node, with its host port.
    cli.ok(&manager, &["stack", "rm", "cli"]);
    let running = app
        .wait_for(&t.owner, &format!("/api/v1/applications/{application}"), Duration::from_secs(90), |a| a["status"] == "running")
        .await;
    assert_eq!((running["revision"].as_i64(), running["deployed_revision"].as_i64()), (Some(1), Some(1)));
    let services = app.get(&format!("/api/v1/applications/{application}/services"), &t.owner).await;
    for s in services.body["items"].as_array().unwrap() {
        assert_eq!(s["status"], "running", "{s}");
        assert_eq!(s["replicas_running"], s["replicas_desired"], "{s}");
        assert!(s["image_digest"].as_str().unwrap().contains("@sha256:"), "{s}");
    }
    let web = services.body["items"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap().clone();
    assert_eq!((web["replicas_desired"].as_i64(), web["mode"].as_str()), (Some(2), Some("replicated")));
    assert_eq!(web["ports"], json!([{"target": 8080, "published": 18080, "protocol": "tcp", "mode": "host"}]));
    let agent = services.body["items"].as_array().unwrap().iter().find(|s| s["name"] == "agent").unwrap().clone();
    assert_eq!((agent["replicas_desired"].as_i64(), agent["mode"].as_str()), (Some(2), Some("global")));
    let containers = app.get(&format!("/api/v1/services/{}/containers", web["id"].as_str().unwrap()), &t.owner).await;
    let live: Vec<&Value> = containers.body["items"].as_array().unwrap().iter().filter(|c| c["state"] == "running").collect();
    assert_eq!(live.len(), 2, "{}", containers.body);
    for c in &live {
        assert!(c["node_id"].is_string() && c["container_id"].is_string(), "{c}");
        assert_eq!(c["host_ports"][0]["published"], 18080, "{c}");
    }
    // Each running task gets its container's addresses (one per network it is on: front and back).
    let with_addresses = app
        .wait_for(
            &t.owner,
            &format!("/api/v1/services/{}/containers", web["id"].as_str().unwrap()),
            Duration::from_secs(30),
            |b| {
                b["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["state"] == "running")
                    .all(|c| c["addresses"].as_array().unwrap().len() == 2)
            },
        )
        .await;
    for c in with_addresses["items"].as_array().unwrap().iter().filter(|c| c["state"] == "running") {
        for a in c["addresses"].as_array().unwrap() {
            assert!(a.as_str().unwrap().parse::<std::net::IpAddr>().is_ok(), "{c}");
        }
    }
    // Each web task answers on its node's host port.
    for node in app.get(&format!("/api/v1/clusters/{cluster}/nodes"), &t.owner).await.body["items"].as_array().unwrap() {
        let url = format!("http://{}:18080/marker", node["address"].as_str().unwrap());
        let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
        assert!(body.starts_with("apps "), "{url}: {body}");
    }

    // A new revision (another variable) and a rollback to the first, seen in the engine's spec.
    let env_of =
        |cli: &Docker| inspect(cli, &manager, "service", "berth_web")["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"].clone();
    let updated = app
        .patch(&format!("/api/v1/applications/{application}"), &t.owner, json!({"variables": {"IMAGE": image, "WHO": "berth"}}))
        .await;
    updated.expect(StatusCode::ACCEPTED);
    assert_eq!(updated.body["revision"], 2);
    let job = app.wait_job(&t.owner, updated.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(env_of(cli).as_array().unwrap().contains(&json!("GREETING=hello berth")));
    let back = app.post(&format!("/api/v1/applications/{application}/rollback"), &t.owner, json!({})).await;
    back.expect(StatusCode::ACCEPTED);
    assert_eq!(back.body["revision"], 3);
    let job = app.wait_job(&t.owner, back.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(env_of(cli).as_array().unwrap().contains(&json!("GREETING=hello world")));
    let revisions = app.get(&format!("/api/v1/applications/{application}/revisions"), &t.owner).await;
    let revs = revisions.body["items"].as_array().unwrap();
    assert_eq!(revs.len(), 3);
    assert_eq!(revs[2]["variables"], revs[0]["variables"]);
    assert_eq!(revs[2]["images"], revs[0]["images"], "a rollback runs the same bytes");

    // Scale through the API: the engine's spec follows.
    let services = app.get(&format!("/api/v1/applications/{application}/services"), &t.owner).await;
    let worker = services.body["items"].as_array().unwrap().iter().find(|s| s["name"] == "worker").unwrap().clone();
    assert_eq!(worker["replicas_desired"], 1);
    let scaled =
        app.patch(&format!("/api/v1/services/{}", worker["id"].as_str().unwrap()), &t.owner, json!({"replicas": 3})).await;
    scaled.expect(StatusCode::ACCEPTED);
    let job = app.wait_job(&t.owner, scaled.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let spec = inspect(cli, &manager, "service", "berth_worker");
    assert_eq!(spec["Spec"]["Mode"]["Replicated"]["Replicas"], 3);
    // The feed carries the service itself, as the API shows it: the change, then what the engine runs.
    let worker_id = worker["id"].as_str().unwrap();
    let carried = |kind: &'static str, running: i32| {
        move |page: &Value| {
            page.as_array().unwrap().iter().any(|e| {
                e["kind"] == kind
                    && e["target_id"] == worker_id
                    && serde_json::from_value::<berth_types::Service>(e["data"].clone())
                        .is_ok_and(|s| s.replicas_desired == 3 && s.replicas_running == running)
            })
        }
    };
    let recent =
        app.wait_for(&t.owner, "/api/v1/events/recent?limit=100", Duration::from_secs(60), carried("service.observed", 3)).await;
    let updated = recent.as_array().unwrap().iter().find(|e| e["kind"] == "service.updated" && e["target_id"] == worker_id);
    let updated: berth_types::Service =
        serde_json::from_value(updated.expect("a service.updated event")["data"].clone()).unwrap();
    let answered: berth_types::Service = serde_json::from_value(scaled.body.clone()).unwrap();
    assert_eq!(updated, answered, "service.updated carries the service as PATCH answered it");

    // Hostile Compose is refused before anything reaches the engine.
    for (hostile, path) in [
        ("services:\n  x: {image: busybox, privileged: true}\n", "compose.services.x.privileged"),
        ("services:\n  x: {image: busybox, volumes: ['/:/host']}\n", "compose.services.x.volumes[0]"),
        ("services:\n  x: {image: busybox, network_mode: host}\n", "compose.services.x.network_mode"),
    ] {
        let r =
            app.post("/api/v1/applications", &t.owner, json!({"name": "evil", "cluster_id": cluster, "compose": hostile})).await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
        assert_eq!(r.body["errors"][0]["field"], path, "{}", r.body);
    }
    assert!(cli.ok(&manager, &["service", "ls", "--format", "{{.Name}}"]).lines().all(|n| !n.starts_with("evil")));

    // Delete: everything of the stack leaves the engine.
    let deleted = app.delete(&format!("/api/v1/applications/{application}"), &t.owner).await;
    deleted.expect(StatusCode::ACCEPTED);
    let job = app.wait_job(&t.owner, deleted.body["job_id"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    for kind in ["service", "network", "config", "secret"] {
        let left = cli.ok(&manager, &[kind, "ls", "--filter", "label=com.docker.stack.namespace=berth", "-q"]);
        assert!(left.is_empty(), "{kind}s of the deleted application remain: {left}");
    }
    app.get(&format!("/api/v1/applications/{application}"), &t.owner).await.problem(StatusCode::NOT_FOUND, "not-found");

    // The cluster (and with it every node, namespace and process) goes with its deletion.
    real.delete(&app, &t.owner).await;
}

/// The `data` of every event in a finished Server-Sent Events body.
fn sse_data(body: &str) -> Vec<Value> {
    body.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| serde_json::from_str(d.trim()).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_observed_logged_updated_start_first_and_restarted() {
    let app = TestApp::spawn_with_registry(1 << 30).await.with_workers();
    let address = app.registry.as_ref().unwrap().address.clone();
    let t = app.tenant("Ops").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();
    let real = RealCluster::create(&app, &t.owner, "ops", 1, 1).await;
    let cluster = real.id;
    let (manager, cli) = (real.manager.clone(), &real.cli);
    let login = cli.login(&manager, &address, &email, PASSWORD);
    assert!(login.status.success(), "docker login: {}", String::from_utf8_lossy(&login.stderr));
    let mut dirs = Vec::new();
    let mut images = Vec::new();
    for version in ["1", "2"] {
        let ctx = build_context(&format!("ops v{version} {}", uuid::Uuid::new_v4()));
        let image = format!("{address}/{}/api:{version}", t.slug);
        cli.ok(&manager, &["build", "-q", "-t", &image, ctx.to_str().unwrap()]);
        cli.ok(&manager, &["push", &image]);
        dirs.push(ctx);
        images.push(image);
    }
    let _cleanup = RemoveOnDrop(dirs);

    let compose = r#"version: "3.8"
services:
  api:
    image: ${IMAGE}
    command: ["/bin/busybox", "sh", "-c", "echo hello from $$(hostname); exec /bin/busybox httpd -f -p 8080 -h /"]
    hostname: "api-{{.Task.Slot}}"
    deploy:
      replicas: 2
      update_config: {parallelism: 1, order: start-first}
      resources: {limits: {memory: 32M}}
  broken:
    image: ${IMAGE}
    command: ["/bin/busybox", "sh", "-c", "echo about to fail; exit 3"]
    deploy:
      restart_policy: {condition: on-failure, delay: 1s}
      resources: {limits: {memory: 16M}}
"#;
    let deployed = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "ops", "cluster_id": cluster, "compose": compose, "variables": {"IMAGE": images[0]}}),
        )
        .await;
    deployed.expect(StatusCode::ACCEPTED);
    let application = deployed.id();

    // A service whose tasks keep failing shows the engine's own error, and the application is degraded.
    let started = std::time::Instant::now();
    let degraded = app
        .wait_for(&t.owner, &format!("/api/v1/applications/{application}"), Duration::from_secs(60), |a| {
            a["status"] == "degraded"
        })
        .await;
    assert!(degraded["message"].as_str().unwrap().contains("non-zero exit (3)"), "{degraded}");
    let services = app.get(&format!("/api/v1/applications/{application}/services"), &t.owner).await.body;
    let find = |name: &str| services["items"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    let (api, broken) = (find("api"), find("broken"));
    assert!(broken["message"].as_str().unwrap().contains("non-zero exit (3)"), "{broken}");
    assert!(matches!(broken["status"].as_str(), Some("failed" | "degraded")), "{broken}");
    println!("the failing task's error reached the API {:?} after the deploy request", started.elapsed());
    let api_id = api["id"].as_str().unwrap().to_owned();
    app.wait_for(&t.owner, &format!("/api/v1/services/{api_id}"), Duration::from_secs(60), |s| s["replicas_running"] == 2).await;

    // Logs of both tasks, across both nodes, on one stream, each line naming its task and node.
    let url = app.url(&format!("/api/v1/services/{api_id}/logs?timestamps=true"));
    let body = app.http.get(&url).bearer_auth(&t.owner).send().await.unwrap().text().await.unwrap();
    let lines = sse_data(&body);
    let mut hellos: Vec<String> = lines.iter().map(|l| l["line"].as_str().unwrap().to_owned()).collect();
    hellos.sort();
    assert_eq!(hellos, ["hello from api-1", "hello from api-2"], "{body}");
    let nodes: std::collections::HashSet<&str> = lines.iter().map(|l| l["node_id"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "the two tasks run on both nodes: {body}");
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["task_id"].is_string() && l["stream"] == "stdout"));
    let containers = app.get(&format!("/api/v1/services/{api_id}/containers"), &t.owner).await.body;
    let first = containers["items"].as_array().unwrap().iter().find(|c| c["state"] == "running").unwrap().clone();
    let one = app
        .http
        .get(app.url(&format!("/api/v1/containers/{}/logs", first["id"].as_str().unwrap())))
        .bearer_auth(&t.owner)
        .send()
        .await
        .unwrap();
    let one = sse_data(&one.text().await.unwrap());
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["task_id"], first["swarm_task_id"]);

    // A new image rolls through start-first: a new task runs before the old one stops.
    let patched = app.patch(&format!("/api/v1/services/{api_id}"), &t.owner, json!({"image": images[1]})).await;
    patched.expect(StatusCode::ACCEPTED);
    let mut most_running = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let states = cli.ok(&manager, &["service", "ps", "--format", "{{.CurrentState}}", "ops_api"]);
        most_running = most_running.max(states.lines().filter(|s| s.starts_with("Running")).count());
        let spec = inspect(cli, &manager, "service", "ops_api");
        let done = spec["UpdateStatus"]["State"] == "completed";
        if done || std::time::Instant::now() > deadline {
            assert!(done, "the update did not complete: {}", spec["UpdateStatus"]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most_running > 2, "start-first never ran old and new tasks together (at most {most_running} running)");
    let spec = inspect(cli, &manager, "service", "ops_api");
    let running_image = spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].as_str().unwrap().to_owned();
    assert!(running_image.starts_with(&format!("{}@sha256:", images[1])), "{running_image}");
    app.wait_for(&t.owner, &format!("/api/v1/services/{api_id}"), Duration::from_secs(30), |s| {
        s["image_digest"] == running_image.as_str() && s["status"] == "running"
    })
    .await;

    // Restart: a forced update replaces the tasks.
    let before = spec["Spec"]["TaskTemplate"]["ForceUpdate"].as_u64().unwrap_or(0);
    let restarted = app.post(&format!("/api/v1/services/{api_id}/restart"), &t.owner, json!({})).await;
    restarted.expect(StatusCode::ACCEPTED);
    let job = app.wait_job(&t.owner, restarted.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let after = inspect(cli, &manager, "service", "ops_api")["Spec"]["TaskTemplate"]["ForceUpdate"].as_u64().unwrap();
    assert_eq!(after, before + 1);

    real.delete(&app, &t.owner).await;
}

#[tokio::test]
async fn malformed_and_hostile_compose_is_refused_with_every_path_and_writes_nothing() {
    // A 2 MiB request limit (the default is 1 MiB), so that a Compose file over its own limit reaches it.
    let app = TestApp::spawn_with(berth_tests::serve_config(2 << 20)).await;
    let t = app.tenant("Careful").await;
    let cluster = crate::fixtures::cluster(&app, &t.owner).await;
    let deploy = |compose: String| json!({"name": "x", "cluster_id": cluster, "compose": compose});
    let before = app.row_counts().await;

    // Every error at once, each with its path and line, in document order.
    let wrong = "version: '3.8'\nservices:\n  web:\n    image: busybox\n    deploy: {replicas: many}\n    ports: ['80:http']\n    frobnicate: 1\n  db:\n    image: ${DB_IMAGE:?pick a database image}\n";
    let r = app.post("/api/v1/applications", &t.owner, deploy(wrong.to_owned())).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
    let found: Vec<(String, i64)> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap().to_owned(), e["line"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("compose.services.web.deploy.replicas".to_owned(), 5),
            ("compose.services.web.ports[0]".to_owned(), 6),
            ("compose.services.web.frobnicate".to_owned(), 7),
            ("compose.services.db.image".to_owned(), 9),
        ],
        "{}",
        r.body
    );
    assert!(r.body["detail"].as_str().unwrap().contains("services.web.deploy.replicas: expected an integer"), "{}", r.body);

    // Not YAML; a billion laughs; a file over the size limit; a hostile file.
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        laughs.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(", ")));
    }
    let big = format!("version: '3.8'\nservices:\n  a: {{image: busybox}}\nx-pad: '{}'\n", "x".repeat(600 * 1024));
    for (text, needle) in [
        ("services: [unclosed\n".to_owned(), "not valid YAML"),
        (laughs, "anchors and aliases"),
        (big, "the limit is"),
        (
            "services:\n  a: {image: busybox, volumes: ['/var/run/docker.sock:/var/run/docker.sock']}\n".to_owned(),
            "Docker socket",
        ),
    ] {
        let r = app.post("/api/v1/applications", &t.owner, deploy(text)).await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
        assert!(r.body["detail"].as_str().unwrap().contains(needle), "{needle}: {}", r.body);
    }
    // Bigger than any request body: the server's body limit answers first.
    let huge = app.post("/api/v1/applications", &t.owner, deploy("x".repeat(5 << 20))).await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.row_counts().await, before, "a refused deploy wrote something");

    // A platform admin may allow bind mounts for one tenant; the others keep the safe default.
    let policy = format!("/api/v1/admin/tenants/{}/admission-policy", t.id);
    let set = app.put(&policy, &app.admin, json!({"allow_bind_mounts": true, "default_memory_limit_mb": 256})).await;
    set.expect(StatusCode::OK);
    assert_eq!(set.body["allow_docker_socket"], false);
    assert_eq!(app.get("/api/v1/admission-policy", &t.owner).await.body["allow_bind_mounts"], true);
    let bind = "services:\n  a: {image: busybox, volumes: ['/srv/data:/data']}\n";
    let ok = app.post("/api/v1/applications", &t.owner, deploy(bind.to_owned())).await;
    ok.expect(StatusCode::ACCEPTED);
    let warned = ok.body["warnings"].as_array().unwrap();
    assert!(warned.iter().any(|w| w["message"] == "no memory limit: limited to 256 MiB"), "{}", ok.body);
    // Short-syntax ports are kept as the CLI makes them (ingress), with a warning where the kernel has no
    // IPVS for the routing mesh.
    let meshed = "services:\n  a: {image: busybox, ports: ['8080:80']}\n";
    let r = app.post("/api/v1/applications", &t.owner, json!({"name": "meshed", "cluster_id": cluster, "compose": meshed})).await;
    r.expect(StatusCode::ACCEPTED);
    let warned = r.body["warnings"].as_array().unwrap().iter().any(|w| w["path"] == "services.a.ports[0]");
    assert_eq!(warned, !berth::providers::local::kernel_has_ipvs(), "{}", r.body);
    let other = app.tenant("Other").await;
    let other_cluster = crate::fixtures::cluster(&app, &other.owner).await;
    let r =
        app.post("/api/v1/applications", &other.owner, json!({"name": "x", "cluster_id": other_cluster, "compose": bind})).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
    let bad = app.put(&policy, &app.admin, json!({"allowed_capabilities": ["net admin"]})).await;
    bad.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_killed_mid_way_converges_after_restart_with_no_duplicate_or_orphaned_service() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Crash").await;
    let data_dir = temp_data_dir("berth-app-crash");
    let _cleanup = berth_tests::DestroyNodesOnDrop(data_dir.clone());
    let mut a = berth_tests::WorkerProcess::start(&app.db_name, &data_dir, 3);
    let real = RealCluster::create(&app, &t.owner, "crash", 1, 0).await;
    let cluster = real.id;
    let (manager, cli) = (real.manager.clone(), &real.cli);
    // A one-node cluster runs an image built on its own engine (no registry needed).
    let ctx = build_context("crash");
    let _ctx = RemoveOnDrop(vec![ctx.clone()]);
    cli.ok(&manager, &["build", "-q", "-t", "crashapp:1", ctx.to_str().unwrap()]);

    let mut compose = String::from("version: '3.8'\nservices:\n");
    // Enough services (a deploy applies several at once) that the kill lands while some are still to be
    // created; one of them runs a task, the others none.
    for i in 10..50 {
        let replicas = if i == 10 { 1 } else { 0 };
        compose.push_str(&format!(
            "  s{i}:\n    image: crashapp:1\n    command: ['/bin/busybox', 'sleep', '3600']\n    deploy: {{replicas: {replicas}, resources: {{limits: {{memory: 16M}}}}}}\n"
        ));
    }
    let deployed =
        app.post("/api/v1/applications", &t.owner, json!({"name": "crash", "cluster_id": cluster, "compose": compose})).await;
    deployed.expect(StatusCode::ACCEPTED);
    let job_id = deployed.body["job_id"].as_str().unwrap().to_owned();
    // Kill the worker as soon as it has begun creating services.
    app.wait_for(&t.owner, &format!("/api/v1/jobs/{job_id}"), Duration::from_secs(60), |j| {
        j["logs"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["line"].as_str().is_some_and(|s| s.starts_with("creating service"))))
    })
    .await;
    a.kill9();
    let on_engine = |cli: &Docker| {
        let mut names: Vec<String> = cli
            .ok(&manager, &["service", "ls", "--filter", "label=com.docker.stack.namespace=crash", "--format", "{{.Name}}"])
            .lines()
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    };
    let partial = on_engine(cli);
    println!("services on the engine when the worker died: {partial:?}");

    // Another worker resumes the job once the lease runs out; the stack converges.
    let _b = berth_tests::WorkerProcess::start(&app.db_name, &data_dir, 3);
    let job = app.wait_job(&t.owner, &job_id, Duration::from_secs(120)).await;
    assert_eq!((job["state"].as_str(), job["attempts"].as_i64()), (Some("succeeded"), Some(2)), "{job}");
    assert!(partial.len() < 40, "the worker died before the deploy finished: {partial:?}");
    let expected: Vec<String> = (10..50).map(|i| format!("crash_s{i}")).collect();
    assert_eq!(on_engine(cli), expected, "exactly the file's services");
    let running =
        app.wait_for(&t.owner, "/api/v1/applications", Duration::from_secs(90), |b| b["items"][0]["status"] == "running").await;
    assert_eq!(running["items"][0]["deployed_revision"], 1);
    let services = app.get(&format!("/api/v1/applications/{}/services?limit=100", deployed.id()), &t.owner).await.body;
    let ids: std::collections::HashSet<&str> =
        services["items"].as_array().unwrap().iter().map(|s| s["swarm_service_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 40, "each row names its own engine service: {services}");

    real.delete(&app, &t.owner).await;
}

/// Every line of a service's logs so far.
async fn log_lines(app: &TestApp, token: &str, service: &str) -> Vec<String> {
    let body = app.http.get(app.url(&format!("/api/v1/services/{service}/logs"))).bearer_auth(token).send().await.unwrap();
    sse_data(&body.text().await.unwrap()).iter().map(|l| l["line"].as_str().unwrap().to_owned()).collect()
}

async fn service_id(app: &TestApp, token: &str, application: &str, name: &str) -> String {
    let services = app.get(&format!("/api/v1/applications/{application}/services"), token).await.body;
    services["items"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gallery_template_deploys_and_works_on_a_real_cluster() {
    let app = TestApp::spawn_with_registry(1 << 30).await.with_workers();
    let t = app.tenant("Gallery").await;
    let gallery = app.get("/api/v1/gallery", &t.owner).await;
    let names: Vec<String> =
        gallery.body["items"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap().to_owned()).collect();
    assert!(names.len() >= 6, "{names:?}");
    let real = RealCluster::create(&app, &t.owner, "gallery", 1, 0).await;
    let cluster = real.id;

    // Each template deploys with its defaults, on the base image Berth makes from Debian's busybox.
    let mut apps = BTreeMap::new();
    for name in &names {
        let r = app.post("/api/v1/applications", &t.owner, json!({"name": name, "cluster_id": cluster, "gallery": name})).await;
        r.expect(StatusCode::ACCEPTED);
        assert!(r.body["warnings"].as_array().unwrap().is_empty(), "{name}: {}", r.body);
        apps.insert(name.clone(), r.id().to_string());
    }
    let images = app.get("/api/v1/images", &t.owner).await.body;
    assert!(images["items"].as_array().unwrap().iter().any(|i| i["name"] == "busybox"), "{images}");
    for (name, id) in &apps {
        let a = app
            .wait_for(&t.owner, &format!("/api/v1/applications/{id}"), Duration::from_secs(120), |a| {
                a["status"] == "running" || a["status"] == "failed" || a["status"] == "degraded"
            })
            .await;
        assert_eq!(a["status"], "running", "{name}: {a}");
    }

    // They do what they say: the site answers, the workers process the web's jobs through the queue,
    // the stateful service keeps its count across a restart.
    let nodes = app.get(&format!("/api/v1/clusters/{cluster}/nodes"), &t.owner).await.body;
    let address = nodes["items"][0]["address"].as_str().unwrap().to_owned();
    let page = reqwest::get(format!("http://{address}:8080/")).await.unwrap().text().await.unwrap();
    assert!(page.contains("Hello from Berth"), "{page}");
    let worker = service_id(&app, &t.owner, &apps["web-worker-queue"], "worker").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lines = log_lines(&app, &t.owner, &worker).await;
        if lines.iter().any(|l| l.starts_with("processed: job at")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no job was processed: {lines:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let store = service_id(&app, &t.owner, &apps["stateful"], "store").await;
    assert_eq!(log_lines(&app, &t.owner, &store).await, ["start number 1"]);
    let restarted = app.post(&format!("/api/v1/services/{store}/restart"), &t.owner, json!({})).await;
    app.wait_job(&t.owner, restarted.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lines = log_lines(&app, &t.owner, &store).await;
        if lines.contains(&"start number 2".to_owned()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the restarted task did not count on: {lines:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    real.delete(&app, &t.owner).await;
}

#[tokio::test]
async fn templates_carry_files_show_diffs_and_import_bundles() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Tmpl").await;
    let compose = "version: '3.8'\nservices:\n  web:\n    image: busybox\n    env_file: ./web.env\n    configs: [site]\nconfigs:\n  site: {file: ./site.conf}\n";
    let created = app
        .post(
            "/api/v1/templates",
            &t.owner,
            json!({"name": "filed", "compose": compose, "files": {"web.env": "A=1\n", "site.conf": "one\n"}}),
        )
        .await;
    created.expect(StatusCode::CREATED);
    let id = created.id();
    // A file the text names but the template lacks is an error at its path.
    let missing = app
        .post("/api/v1/templates", &t.owner, json!({"name": "lacking", "compose": compose, "files": {"web.env": "A=1\n"}}))
        .await;
    missing.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
    assert_eq!(missing.body["errors"][0]["field"], "compose.configs.site.file");
    let escaping =
        app.post("/api/v1/templates", &t.owner, json!({"name": "escaping", "compose": compose, "files": {"../x": ""}})).await;
    escaping.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");

    // Editing only a file is a new version; the diff shows it.
    let edited = app
        .patch(&format!("/api/v1/templates/{id}"), &t.owner, json!({"files": {"web.env": "A=1\n", "site.conf": "two\n"}}))
        .await;
    edited.expect(StatusCode::OK);
    assert_eq!(edited.body["version"], 2);
    assert_eq!(edited.body["compose"], compose);
    let diff = app.get(&format!("/api/v1/templates/{id}/versions/2/diff"), &t.owner).await;
    diff.expect(StatusCode::OK);
    let text = diff.body["diff"].as_str().unwrap();
    assert!(text.contains("--- a/site.conf") && text.contains("-one") && text.contains("+two"), "{text}");
    assert!(!text.contains("compose.yml"), "the Compose text did not change: {text}");
    let back = app.get(&format!("/api/v1/templates/{id}/versions/1/diff?against=2"), &t.owner).await;
    assert!(back.body["diff"].as_str().unwrap().contains("+one"));
    app.get(&format!("/api/v1/templates/{id}/versions/1/diff"), &t.owner).await.problem(StatusCode::NOT_FOUND, "not-found");

    // A bundle becomes a template.
    let bundle = json!({"Version": "0.1", "Services": {"api": {"Image": "busybox", "Args": ["sleep", "60"], "Env": ["A=1"], "Ports": [{"Protocol": "tcp", "Port": 80}]}}});
    let imported = app.post("/api/v1/templates/import-dab", &t.owner, json!({"name": "bundled", "bundle": bundle})).await;
    imported.expect(StatusCode::CREATED);
    assert_eq!(imported.body["services"], json!(["api"]));
    assert!(imported.body["compose"].as_str().unwrap().contains("command: [\"sleep\", \"60\"]"), "{}", imported.body);
    let bad = app
        .post(
            "/api/v1/templates/import-dab",
            &t.owner,
            json!({"name": "bad", "bundle": {"Version": "0.1", "Services": {"x": {}}}}),
        )
        .await;
    bad.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(bad.body["errors"][0]["field"], "bundle.Services.x.Image");

    // The gallery is the same for everyone and read-only; deploying from it needs the built-in registry.
    let gallery = app.get("/api/v1/gallery/web-worker-queue", &t.owner).await;
    gallery.expect(StatusCode::OK);
    assert_eq!(gallery.body["services"], json!(["queue", "web", "worker"]));
    assert_eq!(gallery.body["variables"]["WORKERS"], json!({"default": "2", "required": false}));
    assert!(gallery.body["variables"].get("BERTH_REGISTRY").is_none(), "Berth sets its own variables: {}", gallery.body);
    let cluster = crate::fixtures::cluster(&app, &t.owner).await;
    let r = app.post("/api/v1/applications", &t.owner, json!({"name": "g", "cluster_id": cluster, "gallery": "stateful"})).await;
    r.problem(StatusCode::CONFLICT, "registry-off");
    let r = app.post("/api/v1/applications", &t.owner, json!({"name": "g", "cluster_id": cluster, "gallery": "nope"})).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
}

/// The names of the engine's objects of `kind` carrying a stack's label, with the stack prefix cut.
fn stack_objects(cli: &Docker, engine: &str, kind: &str, stack: &str) -> Vec<String> {
    let filter = format!("label=com.docker.stack.namespace={stack}");
    let mut names: Vec<String> = cli
        .ok(engine, &[kind, "ls", "--filter", &filter, "--format", "{{.Name}}"])
        .lines()
        .map(|n| n.strip_prefix(&format!("{stack}_")).unwrap_or(n).to_owned())
        .collect();
    names.sort();
    names
}

/// Compares every service, network, config and secret of two stacks: the same names, and specs equal
/// once stack names, ids, versions and the engine's own bookkeeping are set aside.
fn assert_same_stacks(cli: &Docker, engine: &str, ours: &str, theirs: &str, file: &str) {
    let nets = network_names(cli, engine);
    for kind in ["service", "network", "config", "secret"] {
        let names = stack_objects(cli, engine, kind, ours);
        assert_eq!(names, stack_objects(cli, engine, kind, theirs), "{file}: the {kind}s differ");
        println!("{file}: {kind}s compared: {names:?}");
        assert!(kind != "service" || !names.is_empty(), "{file}: no services to compare");
        for name in names {
            let mut a = normalise(inspect(cli, engine, kind, &format!("{ours}_{name}")), ours, &nets);
            let mut b = normalise(inspect(cli, engine, kind, &format!("{theirs}_{name}")), theirs, &nets);
            for v in [&mut a, &mut b] {
                let map = v.as_object_mut().unwrap();
                for key in ["Id", "Created", "IPAM", "Containers", "Peers", "Services", "ServiceStatus"] {
                    map.remove(key);
                }
                if let Some(options) = map.get_mut("Options").and_then(Value::as_object_mut) {
                    options.remove("com.docker.network.driver.overlay.vxlanid_list");
                }
            }
            if kind == "service" {
                without_routing_extensions(&mut a, &b);
            }
            assert_eq!(a, b, "{file}: {kind} {name}: Berth's (left) differs from docker stack deploy's (right)");
        }
    }
}

/// Sets aside Berth's two documented extensions of a service's spec (README's routing section): a
/// host-mode TCP port with no fixed published port for each exposed target (what its router reaches
/// tasks at), when the CLI's spec does not have that port; and `start-first` where the file declares no
/// order and the engine's default is `stop-first` (only the order: every other field must agree).
fn without_routing_extensions(ours: &mut Value, theirs: &Value) {
    for config in ["UpdateConfig", "RollbackConfig"] {
        if ours["Spec"][config]["Order"] == "start-first" && theirs["Spec"][config]["Order"] == "stop-first" {
            ours["Spec"][config]["Order"] = "stop-first".into();
        }
    }
    let theirs_ports = theirs["Spec"]["EndpointSpec"]["Ports"].as_array().cloned().unwrap_or_default();
    let Some(endpoint) = ours["Spec"]["EndpointSpec"].as_object_mut() else { return };
    let Some(ports) = endpoint.get_mut("Ports").and_then(Value::as_array_mut) else { return };
    ports.retain(|p| {
        let added = p["PublishMode"] == "host" && p["Protocol"] == "tcp" && p["PublishedPort"].as_u64().unwrap_or(0) == 0;
        !added || theirs_ports.contains(p)
    });
    if ports.is_empty() && theirs_ports.is_empty() && theirs["Spec"]["EndpointSpec"].get("Ports").is_none() {
        endpoint.remove("Ports");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_file_deploys_exactly_as_docker_stack_deploy_does() {
    let app = TestApp::spawn_with_registry(1 << 30).await.with_workers();
    let address = app.registry.as_ref().unwrap().address.clone();
    let t = app.tenant("Corpus").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();
    let real = RealCluster::create(&app, &t.owner, "corpus", 1, 0).await;
    let cluster = real.id;
    let (manager, cli) = (real.manager.clone(), &real.cli);
    let ctx = build_context("corpus");
    let dir = temp_data_dir("berth-corpus");
    let _cleanup = RemoveOnDrop(vec![ctx.clone(), dir.clone()]);
    let image = format!("{address}/{}/corpus:1", t.slug);
    cli.ok(&manager, &["build", "-q", "-t", &image, ctx.to_str().unwrap()]);
    let login = cli.login(&manager, &address, &email, PASSWORD);
    assert!(login.status.success(), "docker login: {}", String::from_utf8_lossy(&login.stderr));
    cli.ok(&manager, &["push", &image]);
    // What the corpus declares as external.
    cli.ok(&manager, &["network", "create", "-d", "overlay", "--attachable", "shared"]);
    std::fs::write(dir.join("token"), "external\n").unwrap();
    cli.ok(&manager, &["secret", "create", "shared_token", dir.join("token").to_str().unwrap()]);

    for (i, file) in ["ingress.yml", "volumes.yml"].iter().enumerate() {
        let compose = std::fs::read_to_string(Path::new(CORPUS).join(file)).unwrap();
        std::fs::write(dir.join(file), &compose).unwrap();
        let (theirs, ours) = (format!("cli{i}"), format!("berth{i}"));
        cli.stack_deploy(&manager, &dir, file, &[("IMAGE", &image)], &theirs);
        let r = app
            .post(
                "/api/v1/applications",
                &t.owner,
                json!({"name": ours, "cluster_id": cluster, "compose": compose, "variables": {"IMAGE": image}}),
            )
            .await;
        r.expect(StatusCode::ACCEPTED);
        let job = app.wait_job(&t.owner, r.body["job_id"].as_str().unwrap(), Duration::from_secs(120)).await;
        assert_eq!(job["state"], "succeeded", "{file}: {job}");
        assert_same_stacks(cli, &manager, &ours, &theirs, file);
    }

    real.delete(&app, &t.owner).await;
}
