//! A Compose file once loaded: typed, interpolated, every cross-reference checked. Field meanings follow
//! Compose file format 3.9 as `docker stack deploy` (v20.10) reads it; what each becomes on Swarm is
//! `convert.rs`'s business.

use std::collections::BTreeMap;

/// Where a value is written, for errors raised after loading (admission policy).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spot {
    pub path: String,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Project {
    pub services: BTreeMap<String, Service>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    pub secrets: BTreeMap<String, FileObject>,
    pub configs: BTreeMap<String, FileObject>,
}

#[derive(Debug, Clone, Default)]
pub struct Service {
    pub spot: Spot,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// `env_file` contents, then `environment` over them; `None` is a bare `KEY` with no value.
    pub environment: BTreeMap<String, Option<String>>,
    pub labels: BTreeMap<String, String>,
    pub hostname: Option<String>,
    /// `host:ip` entries in the order written (a mapping is sorted, as the CLI does).
    pub extra_hosts: Vec<String>,
    pub dns: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub healthcheck: Option<Healthcheck>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub volumes: Vec<ServiceVolume>,
    /// Nanoseconds.
    pub stop_grace_period: Option<i64>,
    pub stop_signal: Option<String>,
    pub tty: bool,
    pub stdin_open: bool,
    pub read_only: bool,
    pub init: Option<bool>,
    pub isolation: Option<String>,
    pub sysctls: BTreeMap<String, String>,
    pub cap_add: Vec<(String, Spot)>,
    pub cap_drop: Vec<String>,
    /// name → (soft, hard).
    pub ulimits: BTreeMap<String, (i64, i64)>,
    pub logging: Option<Logging>,
    pub secrets: Vec<FileRef>,
    pub configs: Vec<FileRef>,
    pub credential_spec: Option<CredentialSpec>,
    pub ports: Vec<Port>,
    /// Network key → attachment options; `None` when the service names no networks (it joins `default`).
    pub networks: Option<BTreeMap<String, ServiceNetwork>>,
    pub deploy: Deploy,
    /// The service-level `restart:`, the restart policy when `deploy.restart_policy` is absent.
    pub restart: Option<String>,
    /// Routes declared in the service's `x-berth: {routes: [...]}` extension (Berth's; the CLI ignores
    /// `x-` keys).
    pub routes: Vec<RouteDecl>,
    /// Keys Swarm cannot honour (the CLI ignores them with a warning) whose value the admission policy
    /// judges: `privileged`, `network_mode`, `pid`, `ipc`, `devices`, `security_opt`, `userns_mode`,
    /// `cgroup_parent`. Each with its value as written.
    pub host_access: Vec<(String, String, Spot)>,
}

/// One entry of `x-berth.routes`: requests for `domain` (under `path`) reach target port `port`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDecl {
    pub port: u16,
    pub domain: String,
    pub path: Option<String>,
    pub spot: Spot,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Healthcheck {
    pub test: Option<Vec<String>>,
    pub disable: bool,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub retries: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VolumeKind {
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceVolume {
    pub spot: Spot,
    pub kind: VolumeKind,
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    pub consistency: Option<String>,
    /// `bind.propagation`; `Some("")` for a `bind:` block without it.
    pub propagation: Option<String>,
    pub nocopy: bool,
    pub tmpfs_size: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Logging {
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileRef {
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CredentialSpec {
    Config(String),
    File(String),
    Registry(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub target: u32,
    pub published: Option<u32>,
    /// `tcp`, `udp`, `sctp`, or `""` (a long-syntax port without `protocol`; the engine means tcp).
    pub protocol: String,
    /// `ingress`, `host`, or `""` (a long-syntax port without `mode`; the engine means ingress).
    pub mode: String,
    pub spot: Spot,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceNetwork {
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Replicated(Option<u64>),
    Global,
}

impl Default for Mode {
    fn default() -> Self {
        Mode::Replicated(None)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Deploy {
    pub mode: Mode,
    pub endpoint_mode: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub limits: Option<Limits>,
    pub reservations: Option<Reservations>,
    pub restart_policy: Option<RestartPolicy>,
    pub constraints: Option<Vec<(String, Spot)>>,
    pub preferences: Vec<String>,
    pub max_replicas_per_node: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateConfig {
    pub parallelism: u64,
    pub delay: i64,
    pub failure_action: String,
    pub monitor: i64,
    pub max_failure_ratio: f64,
    pub order: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub nano_cpus: i64,
    pub memory: i64,
    pub pids: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reservations {
    pub nano_cpus: i64,
    pub memory: i64,
    /// `generic_resources` as (kind, value); `None` for an entry without `discrete_resource_spec`.
    pub generic_resources: Vec<Option<(String, i64)>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartPolicy {
    pub condition: String,
    pub delay: Option<i64>,
    pub max_attempts: Option<u64>,
    pub window: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Network {
    /// The engine's name for it when `name:` (or an external name) is given.
    pub name: Option<String>,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub ipam_driver: Option<String>,
    /// `Some` when an `ipam` block with `driver` or `config` is given: the subnets.
    pub ipam_subnets: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Volume {
    pub name: Option<String>,
    pub external: bool,
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileObject {
    pub name: Option<String>,
    pub external: bool,
    /// The bytes: the named file's content from the template's files, or `content:` written inline.
    pub data: Vec<u8>,
    pub labels: BTreeMap<String, String>,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub template_driver: Option<String>,
}
