//! Typed configuration: defaults, overridden by `BERTH_*` environment variables, overridden by flags.
//! `berth serve --help` lists every setting with its variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use crate::auth::throttle::ThrottleConfig;
pub use crate::clusters::existing_policy::ExistingPolicy;
pub use crate::events::Delivery;
pub use crate::registry::external::ExternalRegistryPolicy;
pub use crate::registry::{RegistryConfig, RegistryMode};

/// Settings shared by every subcommand that talks to the database.
#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// Postgres to use, e.g. `postgres://berth:pw@127.0.0.1/berth`. When unset, Berth runs a private
    /// PostgreSQL from the machine's own binaries inside the data directory and stops it on exit.
    #[arg(long, env = "BERTH_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Where Berth keeps its state: the embedded database, the generated master secret.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./.berth")]
    pub data_dir: PathBuf,

    /// Directory holding `initdb` and `postgres` for the embedded database. Found automatically under
    /// /usr/lib/postgresql/*/bin or on PATH when unset.
    #[arg(long, env = "BERTH_POSTGRES_BIN")]
    pub postgres_bin: Option<PathBuf>,

    /// Size of the connection pool. Default: twice the CPU count, which measured best on small
    /// machines where Berth and PostgreSQL share the cores (see BENCHMARKS.md).
    #[arg(long, env = "BERTH_DB_POOL_SIZE")]
    pub db_pool_size: Option<u32>,
}

impl DbConfig {
    pub fn pool_size(&self) -> u32 {
        self.db_pool_size.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2);
            (cpus * 2).max(4)
        })
    }
}

/// Settings of `berth serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub db: DbConfig,

    /// Address the API listens on.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// E-mail of the first platform admin, created on first start when no platform admin exists.
    #[arg(long, env = "BERTH_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of the first platform admin (at least 8 characters).
    #[arg(long, env = "BERTH_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    #[command(flatten)]
    pub security: SecurityConfig,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "BERTH_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// The built web console (`scripts/build-console.sh` writes it here), served at `/`. When it holds
    /// no console, Berth serves the API alone and `/` leads to the API docs.
    #[arg(long, env = "BERTH_CONSOLE_DIR", default_value = "target/console")]
    pub console_dir: std::path::PathBuf,

    #[command(flatten)]
    pub existing: ExistingPolicy,

    #[command(flatten)]
    pub registry: RegistryConfig,

    #[command(flatten)]
    pub external: ExternalRegistryPolicy,

    #[command(flatten)]
    pub routing: crate::routing::RoutingConfig,

    #[command(flatten)]
    pub acme: crate::certificates::AcmeConfig,

    /// How event streams learn of new events: `listen` (one LISTEN per process, the default) or `poll`
    /// (each stream polls the table; only for comparing the two in the benchmark).
    #[arg(long, env = "BERTH_EVENT_DELIVERY", value_enum, default_value_t = Delivery::Listen, hide = true)]
    pub event_delivery: Delivery,
}

/// Settings of `berth worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub db: DbConfig,

    /// The master secret (the same as the API servers'), to open cluster keys and tokens.
    #[arg(long, env = "BERTH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    #[command(flatten)]
    pub existing: ExistingPolicy,

    /// The built-in registry nodes should trust (`--registry off`: none).
    #[command(flatten)]
    pub registry: RegistryConfig,

    #[command(flatten)]
    pub acme: crate::certificates::AcmeConfig,

    /// Where pending custom-domain claims are looked up: `system`, `off`, or `ip:port[,ip:port…]` (as
    /// for `berth serve`).
    #[arg(long, env = "BERTH_DNS_RESOLVER", default_value = "system")]
    pub dns_resolver: String,
}

/// Settings of `berth registry`: the built-in registry on its own, for operators who run it apart
/// from the API servers.
#[derive(Debug, Clone, Args)]
pub struct RegistryRoleConfig {
    #[command(flatten)]
    pub db: DbConfig,

    #[command(flatten)]
    pub security: SecurityConfig,

    #[command(flatten)]
    pub registry: RegistryConfig,
}

/// Secrets and token lifetimes.
#[derive(Debug, Clone, Args)]
pub struct SecurityConfig {
    /// Master secret from which the JWT signing key and the at-rest encryption key are derived. When
    /// unset, a random one is generated once and kept in `<data_dir>/secret` (mode 0600).
    #[arg(long, env = "BERTH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Lifetime of access tokens (JWTs), in seconds.
    #[arg(long, env = "BERTH_ACCESS_TOKEN_TTL", default_value_t = 900)]
    pub access_token_ttl_secs: u64,

    /// Lifetime of refresh tokens, in seconds.
    #[arg(long, env = "BERTH_REFRESH_TOKEN_TTL", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_secs: u64,

    #[command(flatten)]
    pub throttle: ThrottleConfig,
}

impl SecurityConfig {
    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs)
    }
    pub fn refresh_token_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_secs)
    }
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings of `berth router`: a router on its own, for the clusters named (or all).
#[derive(Debug, Clone, Args)]
pub struct RouterRoleConfig {
    #[command(flatten)]
    pub db: DbConfig,

    #[command(flatten)]
    pub routing: crate::routing::RoutingConfig,

    /// Route only to these clusters (repeat the flag); all clusters when none is given.
    #[arg(long = "cluster", env = "BERTH_ROUTER_CLUSTERS", value_delimiter = ',')]
    pub clusters: Vec<uuid::Uuid>,

    /// The master secret (`berth serve`'s): certificates' keys are sealed with it.
    #[arg(long, env = "BERTH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}
