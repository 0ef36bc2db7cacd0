//! The built-in registry: Debian's `docker-registry` (distribution 2.8) run and supervised by Berth,
//! with Berth as its token server, its notification sink and its only admin.
//!
//! One canonical address (`BERTH_REGISTRY_ADDRESS`, by default `10.213.0.1:5000`) names images the same
//! way everywhere: on one machine that address sits on the host's loopback interface, outside every
//! cluster's /24, and each node reaches it through its default route to its bridge, so the host's
//! Docker CLI and every node of every cluster push and pull `10.213.0.1:5000/<tenant>/<repo>`.
//! The registry serves TLS with a certificate from the platform CA, which every node trusts
//! (`certs.d/<address>/ca.crt` in its own mount namespace) — no `insecure-registries` anywhere.
//!
//! Pieces, one job each:
//! - [`keys`]: the platform CA and the token-signing key, kept sealed in `platform_keys`;
//! - [`process`]: the registry process: its config, its supervision, garbage collection;
//! - [`token`] and [`auth_server`]: the token endpoint (TLS, on the registry's IP, port + 1 by default)
//!   and the notification endpoint (loopback only); [`login_cache`]: recently verified logins;
//! - [`client`]: Berth's own client of the registry; [`external`]: a client of tenants' external
//!   registries, behind an address policy;
//! - [`credentials`]: clusters' pull-only robots and the registry auth handed to engines on deploy;
//! - [`pin`]: resolving `image:tag` to its digest through the right registry;
//! - [`store`]: the `image_tags` rows and storage usage;
//! - [`retention`]: removing tags, retention policies, the catalog pass, and the maintenance loop that
//!   runs garbage collection at a quiet moment;
//! - [`import`]: `docker save` tarballs into a tenant's namespace, read as they arrive
//!   ([`tar_stream`]);
//! - [`api`]: the `/api/v1/images` handlers.

pub mod api;
pub mod auth_server;
pub mod client;
pub mod credentials;
pub mod external;
pub mod import;
pub mod keys;
pub mod login_cache;
pub mod pin;
pub mod process;
pub mod retention;
pub mod store;
pub mod tar_stream;
pub mod token;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::crypto::Keys;
use crate::pki::Pem;
use crate::state::AppState;

/// Whether `berth serve` runs the built-in registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum RegistryMode {
    /// Run `docker-registry` as a supervised child (the default).
    #[default]
    Builtin,
    /// No built-in registry (another process runs `berth registry`, or none is wanted).
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct RegistryConfig {
    /// Whether `berth serve` runs the built-in registry itself.
    #[arg(long = "registry", env = "BERTH_REGISTRY", value_enum, default_value_t = RegistryMode::Builtin)]
    pub mode: RegistryMode,

    /// The registry's one canonical address, `IP:port`: images are named `<address>/<tenant>/<repo>`
    /// from the host's Docker CLI and from every node alike. The default sits on the host's loopback
    /// interface (Berth adds it there), reachable from every local cluster's nodes.
    #[arg(long, env = "BERTH_REGISTRY_ADDRESS", default_value = "10.213.0.1:5000")]
    pub registry_address: SocketAddr,

    /// Port of the registry's token service on the same IP (TLS, platform CA). Default: the registry's
    /// port + 1.
    #[arg(long, env = "BERTH_REGISTRY_AUTH_PORT")]
    pub registry_auth_port: Option<u16>,

    /// The registry program (Debian's `docker-registry`, distribution 2.8).
    #[arg(long, env = "BERTH_REGISTRY_BIN", default_value = "docker-registry")]
    pub registry_bin: PathBuf,

    /// Largest `docker save` tarball `POST /api/v1/images/import` accepts, in bytes.
    #[arg(long, env = "BERTH_IMPORT_MAX_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub import_max_bytes: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            mode: RegistryMode::Builtin,
            registry_address: "10.213.0.1:5000".parse().expect("constant"),
            registry_auth_port: None,
            registry_bin: PathBuf::from("docker-registry"),
            import_max_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

impl RegistryConfig {
    pub fn auth_address(&self) -> SocketAddr {
        let port = self.registry_auth_port.unwrap_or_else(|| self.registry_address.port().wrapping_add(1));
        SocketAddr::new(self.registry_address.ip(), port)
    }
}

/// What a node needs to trust the registry: its address and the platform CA.
#[derive(Debug, Clone)]
pub struct RegistryTrust {
    pub address: String,
    pub ca_pem: String,
}

impl RegistryTrust {
    pub async fn load(db: &PgPool, keys: &Keys, cfg: &RegistryConfig) -> anyhow::Result<Self> {
        let ca = keys::platform_ca(db, keys).await?;
        Ok(RegistryTrust { address: cfg.registry_address.to_string(), ca_pem: ca.cert })
    }
}

/// The running built-in registry, as request handlers see it.
pub struct Registry {
    /// The canonical `IP:port`.
    pub address: String,
    pub client: client::RegistryClient,
    pub signer: token::Signer,
    pub ca: Pem,
    pub import_max_bytes: u64,
    /// The shared secret the registry's notifications carry.
    pub notify_secret: String,
    pub process: process::Handle,
    /// Set when manifests were deleted since the last garbage collection.
    pub needs_collection: AtomicBool,
    /// When the last manifest push was notified (Unix seconds).
    pub last_push: AtomicI64,
    /// One maintenance pass (retention, catalog pass, garbage collection) at a time.
    pub maintenance: tokio::sync::Mutex<()>,
    /// Logins the token service verified recently (see [`login_cache`]).
    pub logins: login_cache::LoginCache,
}

impl Registry {
    /// How long since the last push (forever, if none since Berth started).
    pub fn quiet_for(&self) -> std::time::Duration {
        let last = self.last_push.load(Ordering::Relaxed);
        let now = chrono::Utc::now().timestamp();
        std::time::Duration::from_secs(now.saturating_sub(last).max(0) as u64)
    }

    pub fn note_push(&self) {
        self.last_push.store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }
}

/// The built-in registry and the servers and maintenance beside it, until [`Running::stop`].
pub struct Running {
    pub registry: Arc<Registry>,
    servers: auth_server::Servers,
    stop_maintenance: watch::Sender<bool>,
    maintenance: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop_maintenance.send(true);
        let _ = self.maintenance.await;
        self.servers.stop().await;
        self.registry.process.stop().await;
    }
}

/// Starts the built-in registry for `state`: keys, certificates, the token and notification servers,
/// then the supervised registry process; and tells `state` about it.
pub async fn start(state: &AppState, cfg: &RegistryConfig, data_dir: &Path) -> anyhow::Result<Running> {
    let ip = cfg.registry_address.ip();
    ensure_local_address(ip).await?;
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()).join("registry");
    std::fs::create_dir_all(dir.join("tls"))?;
    std::fs::create_dir_all(dir.join("storage"))?;

    let ca = keys::platform_ca(&state.system, &state.keys).await?;
    let signer_pem = keys::token_signer(&state.system, &state.keys).await?;
    let tls = keys::server_cert(&ca, &[ip])?;
    let signer = token::Signer::new(&signer_pem.key)?;
    let address = cfg.registry_address.to_string();
    let client = client::RegistryClient::new(&address, &ca.cert, signer.clone())?;

    let servers = auth_server::Servers::start(state.clone(), cfg.auth_address(), &tls).await?;
    let notify_secret = crate::crypto::random_token(32);
    let files = process::Files::write(&dir, &tls, &signer_pem.cert)?;
    let settings = process::Settings {
        bin: cfg.registry_bin.clone(),
        address: cfg.registry_address,
        realm: format!("https://{}/token", cfg.auth_address()),
        notify_url: format!("http://{}/notifications", servers.notify_addr),
        notify_secret: notify_secret.clone(),
        files,
    };
    let process = match process::Handle::start(settings).await {
        Ok(p) => p,
        Err(e) => {
            servers.stop().await;
            return Err(e);
        }
    };
    let registry = Arc::new(Registry {
        address,
        client,
        signer,
        ca,
        import_max_bytes: cfg.import_max_bytes,
        notify_secret,
        process,
        needs_collection: AtomicBool::new(false),
        last_push: AtomicI64::new(0),
        maintenance: tokio::sync::Mutex::new(()),
        logins: login_cache::LoginCache::default(),
    });
    state.set_registry(registry.clone());
    let (stop_maintenance, stopping) = watch::channel(false);
    let maintenance = tokio::spawn(retention::run_loop(state.clone(), registry.clone(), stopping));
    Ok(Running { registry, servers, stop_maintenance, maintenance })
}

/// The reserved platform network: addresses here that are missing on the host are added to `lo`.
const PLATFORM_NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 213, 0, 0), 24);

/// Makes sure the registry's IP is an address of this host. An address in Berth's reserved platform
/// network (10.213.0.0/24) is added to the loopback interface; any other must already be there.
pub async fn ensure_local_address(ip: IpAddr) -> anyhow::Result<()> {
    if std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok() {
        return Ok(());
    }
    let IpAddr::V4(v4) = ip else { bail!("BERTH_REGISTRY_ADDRESS {ip} is not an address of this host") };
    let net = ipnet::Ipv4Net::new(PLATFORM_NETWORK.0, PLATFORM_NETWORK.1).expect("constant");
    if !net.contains(&v4) {
        bail!("BERTH_REGISTRY_ADDRESS {ip} is not an address of this host (only addresses in {net} are added automatically)");
    }
    let out = tokio::process::Command::new("ip")
        .args(["addr", "add", &format!("{v4}/32"), "dev", "lo"])
        .output()
        .await
        .context("running `ip addr add`")?;
    // Another Berth on this host may have added it at the same moment.
    if !out.status.success() && std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_err() {
        bail!("adding {v4} to the loopback interface failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `berth registry`: the built-in registry and its token service on their own, against the shared
/// database, until SIGINT/SIGTERM.
pub async fn run_role(cfg: crate::config::RegistryRoleConfig) -> anyhow::Result<()> {
    let database = crate::db::Database::open(&cfg.db).await?;
    let result = async {
        crate::db::wait_for_migrations(&database.pools.system).await?;
        let secret = crate::crypto::load_or_create_secret(cfg.security.secret.as_deref(), &cfg.db.data_dir)?;
        let keys = Keys::from_secret(&secret)?;
        let state = AppState::new(
            database.pools.clone(),
            keys,
            cfg.security.clone(),
            1024 * 1024,
            crate::config::ExistingPolicy::default(),
            external::ExternalRegistryPolicy::default(),
            crate::events::Delivery::Listen,
            crate::routing::Routing::default(),
        );
        let running = start(&state, &cfg.registry, &cfg.db.data_dir).await?;
        println!("Registry is up: {}  (tokens at https://{}/token)", running.registry.address, cfg.registry.auth_address());
        crate::serve::shutdown_signal().await;
        running.stop().await;
        Ok(())
    }
    .await;
    database.close().await;
    result
}
