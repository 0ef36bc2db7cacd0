//! A loaded Compose project → the Swarm objects `docker stack deploy` would send for it, field by field
//! as docker/cli v20.10's `cli/compose/convert` builds them (docs/compose-translation.md §4–§8).
//!
//! Pure code: the stack name and the engine's ids for secrets and configs come in, specs go out. The
//! deploy job does the talking.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ConfigSpec, Driver, EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec,
    EndpointSpecModeEnum, GenericResourcesInner, GenericResourcesInnerDiscreteResourceSpec, HealthConfig, Ipam, IpamConfig,
    Limit, Mount, MountBindOptions, MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, NetworkAttachmentConfig, NetworkCreateRequest, ResourceObject, ResourcesUlimits, SecretSpec,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecConfigs, TaskSpecContainerSpecDnsConfig, TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1,
    TaskSpecContainerSpecIsolationEnum, TaskSpecContainerSpecPrivileges, TaskSpecContainerSpecPrivilegesCredentialSpec,
    TaskSpecContainerSpecSecrets, TaskSpecLogDriver, TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use super::model::*;

/// The label every object of a stack carries: how `docker stack` finds them, and how Berth does.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The service label keeping the image exactly as the Compose file wrote it.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// A project deployed under a stack name.
pub struct Stack<'a> {
    pub name: &'a str,
    pub project: &'a Project,
}

/// The engine's ids of the stack's secrets and configs, by name.
#[derive(Default)]
pub struct ObjectIds {
    pub secrets: HashMap<String, String>,
    pub configs: HashMap<String, String>,
}

fn hash<K: Clone + Eq + std::hash::Hash, V: Clone>(map: &BTreeMap<K, V>) -> HashMap<K, V> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl Stack<'_> {
    pub fn scoped(&self, key: &str) -> String {
        format!("{}_{key}", self.name)
    }

    fn labels(&self, own: &BTreeMap<String, String>) -> HashMap<String, String> {
        let mut labels = hash(own);
        labels.insert(NAMESPACE_LABEL.to_owned(), self.name.to_owned());
        labels
    }

    /// The engine's name for a network key: `name:` (external ones included), else `<stack>_<key>`; an
    /// external network without `name:` keeps its key.
    pub fn network_name(&self, key: &str) -> String {
        match self.project.networks.get(key) {
            Some(n) => n.name.clone().unwrap_or_else(|| if n.external { key.to_owned() } else { self.scoped(key) }),
            None => self.scoped(key),
        }
    }

    fn object_name(&self, key: &str, obj: Option<&FileObject>) -> String {
        match obj {
            Some(o) => o.name.clone().unwrap_or_else(|| if o.external { key.to_owned() } else { self.scoped(key) }),
            None => self.scoped(key),
        }
    }

    pub fn secret_name(&self, key: &str) -> String {
        self.object_name(key, self.project.secrets.get(key))
    }

    pub fn config_name(&self, key: &str) -> String {
        self.object_name(key, self.project.configs.get(key))
    }

    /// The network keys some service uses, `default` for services that name none.
    fn used_networks(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .project
            .services
            .values()
            .flat_map(|s| s.networks.as_ref().map(|n| n.keys().cloned().collect()).unwrap_or_else(|| vec!["default".to_owned()]))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Networks to create (not external, used by a service) and the external ones to check exist.
    pub fn networks(&self) -> (Vec<NetworkCreateRequest>, Vec<String>) {
        let mut create = Vec::new();
        let mut external = Vec::new();
        let empty = Network::default();
        for key in self.used_networks() {
            let net = self.project.networks.get(&key).unwrap_or(&empty);
            if net.external {
                external.push(self.network_name(&key));
                continue;
            }
            create.push(NetworkCreateRequest {
                name: self.network_name(&key),
                driver: Some(net.driver.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "overlay".to_owned())),
                internal: Some(net.internal),
                attachable: Some(net.attachable),
                options: Some(hash(&net.driver_opts)),
                labels: Some(self.labels(&net.labels)),
                ipam: net.ipam_subnets.as_ref().map(|subnets| Ipam {
                    driver: net.ipam_driver.clone(),
                    config: Some(subnets.iter().map(|s| IpamConfig { subnet: Some(s.clone()), ..Default::default() }).collect()),
                    options: None,
                }),
                ..Default::default()
            });
        }
        (create, external)
    }

    /// Every non-external secret, used or not (as the CLI creates them).
    pub fn secrets(&self) -> Vec<SecretSpec> {
        self.project
            .secrets
            .iter()
            .filter(|(_, s)| !s.external)
            .map(|(key, s)| SecretSpec {
                name: Some(self.secret_name(key)),
                labels: Some(self.labels(&s.labels)),
                data: s.driver.is_none().then(|| base64(&s.data)),
                driver: s.driver.as_ref().map(|d| Driver { name: d.clone(), options: Some(hash(&s.driver_opts)) }),
                templating: s.template_driver.as_ref().map(|d| Driver { name: d.clone(), options: None }),
            })
            .collect()
    }

    pub fn configs(&self) -> Vec<ConfigSpec> {
        self.project
            .configs
            .iter()
            .filter(|(_, c)| !c.external)
            .map(|(key, c)| ConfigSpec {
                name: Some(self.config_name(key)),
                labels: Some(self.labels(&c.labels)),
                data: Some(base64(&c.data)),
                templating: c.template_driver.as_ref().map(|d| Driver { name: d.clone(), options: None }),
            })
            .collect()
    }

    /// The service spec for one Compose service. The image is the Compose one with `:latest` added
    /// when it has no tag, as the CLI's API client does; pinning to a digest is the deploy job's step.
    pub fn service(&self, key: &str, ids: &ObjectIds) -> ServiceSpec {
        let svc = &self.project.services[key];
        let d = &svc.deploy;
        let mut service_labels = hash(&d.labels);
        service_labels.insert(NAMESPACE_LABEL.to_owned(), self.name.to_owned());
        service_labels.insert(IMAGE_LABEL.to_owned(), svc.image.clone());
        let mut configs = self.config_refs(svc, ids);
        let credential_spec = svc.credential_spec.as_ref().map(|c| match c {
            CredentialSpec::Config(k) => {
                let name = self.config_name(k);
                if !configs.iter().any(|c| c.config_name.as_deref() == Some(&name) && c.runtime.is_some()) {
                    configs.push(TaskSpecContainerSpecConfigs {
                        runtime: Some(HashMap::new()),
                        config_id: ids.configs.get(&name).cloned(),
                        config_name: Some(name.clone()),
                        file: None,
                    });
                    configs.sort_by(|a, b| a.config_name.cmp(&b.config_name));
                }
                TaskSpecContainerSpecPrivilegesCredentialSpec { config: ids.configs.get(&name).cloned(), ..Default::default() }
            }
            CredentialSpec::File(f) => {
                TaskSpecContainerSpecPrivilegesCredentialSpec { file: Some(f.clone()), ..Default::default() }
            }
            CredentialSpec::Registry(r) => {
                TaskSpecContainerSpecPrivilegesCredentialSpec { registry: Some(r.clone()), ..Default::default() }
            }
        });
        let container = TaskSpecContainerSpec {
            image: Some(with_default_tag(&svc.image)),
            labels: Some(self.labels(&svc.labels)),
            command: svc.entrypoint.clone(),
            args: svc.command.clone(),
            hostname: svc.hostname.clone(),
            env: Some(env(&svc.environment)),
            dir: svc.working_dir.clone(),
            user: svc.user.clone(),
            privileges: Some(TaskSpecContainerSpecPrivileges { credential_spec, ..Default::default() }),
            tty: Some(svc.tty),
            open_stdin: Some(svc.stdin_open),
            read_only: Some(svc.read_only),
            mounts: Some(svc.volumes.iter().map(|v| self.mount(v)).collect()),
            stop_signal: svc.stop_signal.clone(),
            stop_grace_period: svc.stop_grace_period,
            health_check: svc.healthcheck.as_ref().map(healthcheck),
            hosts: Some(extra_hosts(&svc.extra_hosts)),
            dns_config: (svc.dns.is_some() || svc.dns_search.is_some()).then(|| TaskSpecContainerSpecDnsConfig {
                nameservers: svc.dns.clone(),
                search: svc.dns_search.clone(),
                options: None,
            }),
            secrets: Some(self.secret_refs(svc, ids)),
            configs: Some(configs),
            isolation: svc.isolation.as_deref().map(|i| match i {
                "process" => TaskSpecContainerSpecIsolationEnum::PROCESS,
                "hyperv" => TaskSpecContainerSpecIsolationEnum::HYPERV,
                _ => TaskSpecContainerSpecIsolationEnum::DEFAULT,
            }),
            init: svc.init,
            sysctls: Some(hash(&svc.sysctls)),
            capability_add: Some(
                capabilities(svc.cap_add.iter().map(|(c, _)| c.as_str()), svc.cap_drop.iter().map(String::as_str)).0,
            ),
            capability_drop: Some(
                capabilities(svc.cap_add.iter().map(|(c, _)| c.as_str()), svc.cap_drop.iter().map(String::as_str)).1,
            ),
            ulimits: Some(
                svc.ulimits
                    .iter()
                    .map(|(name, (soft, hard))| ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(*soft),
                        hard: Some(*hard),
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        let task = TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: d.limits.as_ref().map(|l| Limit {
                    nano_cpus: Some(l.nano_cpus),
                    memory_bytes: Some(l.memory),
                    pids: Some(l.pids),
                }),
                reservations: d.reservations.as_ref().map(|r| ResourceObject {
                    nano_cpus: Some(r.nano_cpus),
                    memory_bytes: Some(r.memory),
                    generic_resources: (!r.generic_resources.is_empty()).then(|| {
                        r.generic_resources
                            .iter()
                            .map(|g| GenericResourcesInner {
                                discrete_resource_spec: g.as_ref().map(|(kind, value)| {
                                    GenericResourcesInnerDiscreteResourceSpec { kind: Some(kind.clone()), value: Some(*value) }
                                }),
                                named_resource_spec: None,
                            })
                            .collect()
                    }),
                }),
                ..Default::default()
            }),
            restart_policy: match &d.restart_policy {
                Some(p) => Some(TaskSpecRestartPolicy {
                    condition: Some(condition(&p.condition)),
                    delay: p.delay,
                    max_attempts: p.max_attempts.map(|n| n as i64),
                    window: p.window,
                }),
                None => svc.restart.as_deref().and_then(|r| restart_from_key(r).ok().flatten()),
            },
            placement: Some(TaskSpecPlacement {
                constraints: d.constraints.as_ref().map(|c| c.iter().map(|(s, _)| s.clone()).collect()),
                preferences: Some(
                    d.preferences
                        .iter()
                        .map(|s| TaskSpecPlacementPreferences {
                            spread: Some(TaskSpecPlacementSpread { spread_descriptor: Some(s.clone()) }),
                        })
                        .collect(),
                ),
                max_replicas: Some(d.max_replicas_per_node as i64),
                platforms: None,
            }),
            force_update: Some(0),
            networks: Some(self.attachments(key, svc)),
            log_driver: svc
                .logging
                .as_ref()
                .map(|l| TaskSpecLogDriver { name: Some(l.driver.clone()), options: Some(hash(&l.options)) }),
            ..Default::default()
        };
        ServiceSpec {
            name: Some(self.scoped(key)),
            labels: Some(service_labels),
            task_template: Some(task),
            mode: Some(match d.mode {
                Mode::Replicated(n) => ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated { replicas: n.map(|n| n as i64) }),
                    ..Default::default()
                },
                Mode::Global => ServiceSpecMode { global: Some(HashMap::new()), ..Default::default() },
            }),
            update_config: d.update_config.as_ref().map(|u| ServiceSpecUpdateConfig {
                parallelism: Some(u.parallelism as i64),
                delay: Some(u.delay),
                failure_action: Some(match u.failure_action.as_str() {
                    "continue" => ServiceSpecUpdateConfigFailureActionEnum::CONTINUE,
                    "pause" => ServiceSpecUpdateConfigFailureActionEnum::PAUSE,
                    "rollback" => ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK,
                    _ => ServiceSpecUpdateConfigFailureActionEnum::EMPTY,
                }),
                monitor: Some(u.monitor),
                max_failure_ratio: Some(u.max_failure_ratio),
                order: Some(match u.order.as_str() {
                    "start-first" => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
                    "stop-first" => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
                    _ => ServiceSpecUpdateConfigOrderEnum::EMPTY,
                }),
            }),
            rollback_config: d.rollback_config.as_ref().map(|u| ServiceSpecRollbackConfig {
                parallelism: Some(u.parallelism as i64),
                delay: Some(u.delay),
                failure_action: Some(match u.failure_action.as_str() {
                    "continue" => ServiceSpecRollbackConfigFailureActionEnum::CONTINUE,
                    "pause" => ServiceSpecRollbackConfigFailureActionEnum::PAUSE,
                    _ => ServiceSpecRollbackConfigFailureActionEnum::EMPTY,
                }),
                monitor: Some(u.monitor),
                max_failure_ratio: Some(u.max_failure_ratio),
                order: Some(match u.order.as_str() {
                    "start-first" => ServiceSpecRollbackConfigOrderEnum::START_FIRST,
                    "stop-first" => ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
                    _ => ServiceSpecRollbackConfigOrderEnum::EMPTY,
                }),
            }),
            networks: None,
            endpoint_spec: Some(EndpointSpec {
                mode: d.endpoint_mode.as_deref().map(|m| match m {
                    "dnsrr" => EndpointSpecModeEnum::DNSRR,
                    _ => EndpointSpecModeEnum::VIP,
                }),
                ports: Some(ports(&svc.ports)),
            }),
        }
    }

    fn attachments(&self, key: &str, svc: &Service) -> Vec<NetworkAttachmentConfig> {
        let default = BTreeMap::from([("default".to_owned(), ServiceNetwork::default())]);
        let mut out: Vec<NetworkAttachmentConfig> = svc
            .networks
            .as_ref()
            .unwrap_or(&default)
            .iter()
            .map(|(net, attach)| {
                let target = self.network_name(net);
                let mut aliases = attach.aliases.clone();
                let user_defined =
                    !matches!(target.as_str(), "default" | "bridge" | "host" | "none") && !target.starts_with("container:");
                if user_defined {
                    aliases.push(key.to_owned());
                }
                NetworkAttachmentConfig { target: Some(target), aliases: Some(aliases), driver_opts: None }
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    fn mount(&self, v: &ServiceVolume) -> Mount {
        let mut m = Mount {
            target: Some(v.target.clone()),
            source: v.source.clone(),
            read_only: Some(v.read_only),
            consistency: v.consistency.clone(),
            ..Default::default()
        };
        match v.kind {
            VolumeKind::Volume => {
                m.typ = Some(MountType::VOLUME);
                let Some(source) = &v.source else { return m };
                let vol = self.project.volumes.get(source);
                m.source = Some(match vol {
                    Some(vol) => {
                        vol.name.clone().unwrap_or_else(|| if vol.external { source.clone() } else { self.scoped(source) })
                    }
                    None => self.scoped(source),
                });
                let mut options = MountVolumeOptions { no_copy: Some(v.nocopy), ..Default::default() };
                if let Some(vol) = vol.filter(|vol| !vol.external) {
                    options.labels = Some(self.labels(&vol.labels));
                    if vol.driver.is_some() || vol.driver_opts.is_some() {
                        options.driver_config = Some(MountVolumeOptionsDriverConfig {
                            name: vol.driver.clone(),
                            options: vol.driver_opts.as_ref().map(hash),
                        });
                    }
                }
                m.volume_options = Some(options);
            }
            VolumeKind::Bind => {
                m.typ = Some(MountType::BIND);
                m.bind_options = v.propagation.as_deref().map(|p| MountBindOptions {
                    propagation: Some(match p {
                        "private" => MountBindOptionsPropagationEnum::PRIVATE,
                        "rprivate" => MountBindOptionsPropagationEnum::RPRIVATE,
                        "shared" => MountBindOptionsPropagationEnum::SHARED,
                        "rshared" => MountBindOptionsPropagationEnum::RSHARED,
                        "slave" => MountBindOptionsPropagationEnum::SLAVE,
                        "rslave" => MountBindOptionsPropagationEnum::RSLAVE,
                        _ => MountBindOptionsPropagationEnum::EMPTY,
                    }),
                    ..Default::default()
                });
            }
            VolumeKind::Tmpfs => {
                m.typ = Some(MountType::TMPFS);
                m.tmpfs_options = v.tmpfs_size.map(|size| MountTmpfsOptions { size_bytes: Some(size), ..Default::default() });
            }
        }
        m
    }

    fn secret_refs(&self, svc: &Service, ids: &ObjectIds) -> Vec<TaskSpecContainerSpecSecrets> {
        let mut out: Vec<_> = svc
            .secrets
            .iter()
            .map(|r| {
                let name = self.secret_name(&r.source);
                TaskSpecContainerSpecSecrets {
                    file: Some(TaskSpecContainerSpecFile {
                        name: Some(r.target.clone().unwrap_or_else(|| r.source.clone())),
                        uid: Some(r.uid.clone().unwrap_or_else(|| "0".to_owned())),
                        gid: Some(r.gid.clone().unwrap_or_else(|| "0".to_owned())),
                        mode: Some(r.mode.unwrap_or(0o444)),
                    }),
                    secret_id: ids.secrets.get(&name).cloned(),
                    secret_name: Some(name),
                }
            })
            .collect();
        out.sort_by(|a, b| a.secret_name.cmp(&b.secret_name));
        out
    }

    fn config_refs(&self, svc: &Service, ids: &ObjectIds) -> Vec<TaskSpecContainerSpecConfigs> {
        let mut out: Vec<_> = svc
            .configs
            .iter()
            .map(|r| {
                let name = self.config_name(&r.source);
                TaskSpecContainerSpecConfigs {
                    file: Some(TaskSpecContainerSpecFile1 {
                        name: Some(r.target.clone().unwrap_or_else(|| r.source.clone())),
                        uid: Some(r.uid.clone().unwrap_or_else(|| "0".to_owned())),
                        gid: Some(r.gid.clone().unwrap_or_else(|| "0".to_owned())),
                        mode: Some(r.mode.unwrap_or(0o444)),
                    }),
                    runtime: None,
                    config_id: ids.configs.get(&name).cloned(),
                    config_name: Some(name),
                }
            })
            .collect();
        out.sort_by(|a, b| a.config_name.cmp(&b.config_name));
        out
    }
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `nginx` → `nginx:latest`; references with a tag or digest (and ones that do not parse, which the
/// engine will refuse as they are) are kept.
pub fn with_default_tag(image: &str) -> String {
    match crate::registry::pin::ImageRef::parse(image) {
        Ok(r) if r.tag.is_none() && r.digest.is_none() => format!("{image}:latest"),
        _ => image.to_owned(),
    }
}

fn env(environment: &BTreeMap<String, Option<String>>) -> Vec<String> {
    // BTreeMap order is byte order, the CLI's sort.
    environment
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect()
}

/// `host:ip` → `ip host`, split at the first colon; entries without one are dropped.
fn extra_hosts(hosts: &[String]) -> Vec<String> {
    hosts.iter().filter_map(|h| h.split_once(':').map(|(host, ip)| format!("{ip} {host}"))).collect()
}

fn healthcheck(h: &Healthcheck) -> HealthConfig {
    if h.disable {
        return HealthConfig { test: Some(vec!["NONE".to_owned()]), ..Default::default() };
    }
    HealthConfig {
        test: h.test.clone(),
        interval: Some(h.interval.unwrap_or(0)),
        timeout: Some(h.timeout.unwrap_or(0)),
        retries: Some(h.retries.unwrap_or(0)),
        start_period: Some(h.start_period.unwrap_or(0)),
        start_interval: None,
    }
}

fn condition(c: &str) -> TaskSpecRestartPolicyConditionEnum {
    match c {
        "none" => TaskSpecRestartPolicyConditionEnum::NONE,
        "on-failure" => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
        "any" => TaskSpecRestartPolicyConditionEnum::ANY,
        _ => TaskSpecRestartPolicyConditionEnum::EMPTY,
    }
}

/// The restart policy a service-level `restart:` means when `deploy.restart_policy` is absent.
pub fn restart_from_key(value: &str) -> Result<Option<TaskSpecRestartPolicy>, String> {
    let (name, count) = match value.split(':').collect::<Vec<_>>().as_slice() {
        [name] => (*name, None),
        [name, count] => (*name, Some(count.parse::<i64>().map_err(|_| "the retry count must be an integer".to_owned())?)),
        _ => return Err(format!("`{value}` is not a restart policy")),
    };
    let policy =
        |condition, max_attempts| Some(TaskSpecRestartPolicy { condition: Some(condition), max_attempts, ..Default::default() });
    match name {
        "" | "no" => Ok(None),
        "always" | "unless-stopped" => Ok(policy(TaskSpecRestartPolicyConditionEnum::ANY, None)),
        "on-failure" => Ok(policy(TaskSpecRestartPolicyConditionEnum::ON_FAILURE, Some(count.unwrap_or(0)))),
        other => Err(format!("`{other}` is not a restart policy: use no, always, unless-stopped or on-failure[:N]")),
    }
}

/// Capability lists as the CLI normalises them: upper case, `CAP_` prefix, duplicates removed, `ALL`
/// taking over its list, add winning over drop, both sorted.
pub fn capabilities<'a>(add: impl Iterator<Item = &'a str>, drop: impl Iterator<Item = &'a str>) -> (Vec<String>, Vec<String>) {
    let normal = |c: &str| {
        let c = c.trim().to_ascii_uppercase();
        if c == "ALL" || c == "RESET" || c.starts_with("CAP_") { c } else { format!("CAP_{c}") }
    };
    let clean = |list: Vec<String>| {
        let mut list: Vec<String> = list.into_iter().filter(|c| c != "RESET" && c != "CAP_").collect();
        if list.iter().any(|c| c == "ALL") {
            return vec!["ALL".to_owned()];
        }
        list.sort();
        list.dedup();
        list
    };
    let add = clean(add.map(normal).collect());
    let mut drop = clean(drop.map(normal).collect());
    if add.iter().any(|c| c == "ALL") {
        drop.clear();
    } else {
        drop.retain(|c| !add.contains(c));
    }
    (add, drop)
}

fn ports(ports: &[Port]) -> Vec<EndpointPortConfig> {
    let mut out: Vec<EndpointPortConfig> = ports
        .iter()
        .map(|p| EndpointPortConfig {
            name: None,
            protocol: Some(match p.protocol.as_str() {
                "tcp" => EndpointPortConfigProtocolEnum::TCP,
                "udp" => EndpointPortConfigProtocolEnum::UDP,
                "sctp" => EndpointPortConfigProtocolEnum::SCTP,
                _ => EndpointPortConfigProtocolEnum::EMPTY,
            }),
            target_port: Some(i64::from(p.target)),
            published_port: Some(i64::from(p.published.unwrap_or(0))),
            publish_mode: Some(match p.mode.as_str() {
                "ingress" => EndpointPortConfigPublishModeEnum::INGRESS,
                "host" => EndpointPortConfigPublishModeEnum::HOST,
                _ => EndpointPortConfigPublishModeEnum::EMPTY,
            }),
        })
        .collect();
    out.sort_by_key(|p| p.published_port);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_key() {
        assert!(restart_from_key("no").unwrap().is_none());
        assert_eq!(restart_from_key("always").unwrap().unwrap().condition, Some(TaskSpecRestartPolicyConditionEnum::ANY));
        assert_eq!(restart_from_key("on-failure:3").unwrap().unwrap().max_attempts, Some(3));
        assert!(restart_from_key("on-failure:x").is_err());
        assert!(restart_from_key("sometimes").is_err());
    }

    #[test]
    fn capability_lists() {
        let (add, drop) =
            capabilities(["net_admin", "CAP_SYS_TIME", "net_admin"].into_iter(), ["net_admin", "chown"].into_iter());
        assert_eq!(add, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
        assert_eq!(drop, ["CAP_CHOWN"]);
        let (add, drop) = capabilities(["all"].into_iter(), ["chown"].into_iter());
        assert_eq!((add, drop), (vec!["ALL".to_owned()], vec![]));
    }

    #[test]
    fn images_get_latest() {
        assert_eq!(with_default_tag("nginx"), "nginx:latest");
        assert_eq!(with_default_tag("10.0.0.1:5000/a/b"), "10.0.0.1:5000/a/b:latest");
        assert_eq!(with_default_tag("a/b:1"), "a/b:1");
        assert_eq!(with_default_tag("a@sha256:00"), "a@sha256:00");
    }
}
