//! Test harness: a real PostgreSQL server shared by the test process, a fresh database per test, and
//! the real Berth application served on a loopback port chosen by the kernel.
//!
//! The server is started from the machine's PostgreSQL binaries inside a shell that holds the read end
//! of a pipe from this process: when the test process exits — passing, failing, panicking or killed —
//! the pipe closes, the shell stops PostgreSQL and removes its directory. Nothing outlives the tests.

pub mod acme;
pub mod browser;
pub mod cpus;
pub mod dns;
pub mod docker_cli;
pub mod load;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth::config::{DbConfig, SecurityConfig, ServeConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use uuid::Uuid;

pub const ADMIN_EMAIL: &str = "admin@berth.test";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const PASSWORD: &str = "password-123";
pub const SECRET: &str = "test-master-secret-0123456789";

/// The shared server: its socket directory, and the pipe whose closing stops it.
struct PgServer {
    socket_dir: PathBuf,
    _guard: Child,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();
static TEMPLATE_READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

fn pg_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries are needed: run `make test`, which installs them")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versions.sort();
    versions.pop().expect("no /usr/lib/postgresql/<version>").1
}

fn server() -> &'static PgServer {
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-test-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let bin = pg_bin();
        let script = format!(
            r#"set -e
{bin}/initdb -D "$D/data" -U berth --auth=trust -E UTF8 --no-locale >"$D/initdb.log" 2>&1
{bin}/postgres -D "$D/data" -k "$D" -c listen_addresses= -c fsync=off -c synchronous_commit=off \
  -c full_page_writes=off -c max_connections=300 >"$D/postgres.log" 2>&1 &
pid=$!
cat >/dev/null || true
kill -INT $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
rm -rf "$D""#,
            bin = bin.display()
        );
        let mut cmd = Command::new("sh");
        let as_postgres = nix::unistd::Uid::effective().is_root();
        cmd.arg("-c").arg(script).env("D", &dir).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
        // PostgreSQL refuses to run as root; as root, run it as the `postgres` user Debian's package makes.
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres").unwrap().expect("the postgres system user");
            nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
            std::os::unix::process::CommandExt::uid(&mut cmd, user.uid.as_raw());
            std::os::unix::process::CommandExt::gid(&mut cmd, user.gid.as_raw());
            cmd.current_dir("/");
        }
        let child = cmd.spawn().expect("starting the test PostgreSQL");
        let socket = dir.join(".s.PGSQL.5432");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !socket.exists() {
            if Instant::now() > deadline {
                let mut log = String::new();
                let _ = std::fs::File::open(dir.join("postgres.log")).and_then(|mut f| f.read_to_string(&mut log));
                panic!("test PostgreSQL did not start: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        PgServer { socket_dir: dir, _guard: child }
    })
}

pub fn connect_options(db: &str) -> PgConnectOptions {
    PgConnectOptions::new().socket(&server().socket_dir).username("berth").database(db).disable_statement_logging()
}

/// Creates a migrated database for one test, cloned from a template migrated once per process.
pub async fn fresh_database() -> (String, PgPool) {
    TEMPLATE_READY
        .get_or_init(|| async {
            let mut admin = connect_admin().await;
            sqlx::query("CREATE DATABASE berth_template").execute(&mut admin).await.unwrap();
            let pool = PgPool::connect_with(connect_options("berth_template")).await.unwrap();
            berth::db::migrate(&pool).await.unwrap();
            pool.close().await;
        })
        .await;
    let name = format!("t_{}", Uuid::new_v4().simple());
    let mut admin = connect_admin().await;
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE berth_template")).execute(&mut admin).await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(10).connect_with(connect_options(&name)).await.unwrap();
    (name, pool)
}

async fn connect_admin() -> sqlx::PgConnection {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sqlx::PgConnection::connect_with(&connect_options("postgres")).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("cannot reach test PostgreSQL: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A running Berth with its own database.
pub struct TestApp {
    pub base: String,
    pub db: PgPool,
    /// The database's name on the shared test server (for worker processes to connect to).
    pub db_name: String,
    pub http: reqwest::Client,
    pub admin: String,
    /// In-process job workers and reconcilers, when started with [`TestApp::spawn_with_workers`].
    workers: Option<InProcessWorkers>,
    /// The built-in registry, when started with [`TestApp::spawn_with_registry`].
    pub registry: Option<TestRegistry>,
    state: Option<berth::state::AppState>,
}

/// A built-in registry run for one test on its own ports of the platform address.
pub struct TestRegistry {
    pub running: berth::registry::Running,
    /// `10.213.0.1:<port>`.
    pub address: String,
    /// The token service's `IP:port`.
    pub auth_address: String,
    /// The platform CA (PEM), which the registry's certificate comes from.
    pub ca_pem: String,
    data_dir: PathBuf,
}

struct InProcessWorkers {
    stop: tokio::sync::watch::Sender<bool>,
    data_dir: PathBuf,
}

impl Drop for TestApp {
    /// Whatever the test did or failed to do, nothing it provisioned outlives it.
    fn drop(&mut self) {
        if let Some(w) = &self.workers {
            let _ = w.stop.send(true);
            berth::providers::local::LocalProvider::new(&w.data_dir, None).destroy_all_blocking();
            let _ = std::fs::remove_dir_all(&w.data_dir);
        }
        if let Some(r) = &self.registry {
            // The registry process is also killed when the test's runtime drops its supervisor; do it
            // now (and tell the supervisor not to start it again) so that its storage can go.
            r.running.registry.process.begin_stop();
            let pid = r.running.registry.process.pid();
            if pid != 0 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = std::fs::remove_dir_all(&r.data_dir);
        }
    }
}

/// A fresh directory for a test's Berth state, reachable by every process of the test.
pub fn temp_data_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The URL of a test database, for processes started by a test.
pub fn database_url(db_name: &str) -> String {
    format!("postgres://berth@localhost/{db_name}?host={}", server().socket_dir.display())
}

pub fn serve_config(max_body: usize) -> ServeConfig {
    ServeConfig {
        db: DbConfig { database_url: None, data_dir: std::env::temp_dir(), postgres_bin: None, db_pool_size: Some(10) },
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_email: Some(ADMIN_EMAIL.to_owned()),
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
        security: SecurityConfig {
            secret: Some(SECRET.to_owned()),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 3600,
            throttle: Default::default(),
        },
        max_body_bytes: max_body,
        // Only the console's own tests serve it (see `TestApp::spawn_with`).
        console_dir: PathBuf::from("/nonexistent"),
        existing: test_existing_policy(),
        // Tests that need the registry start their own (see `TestApp::spawn_with_registry`).
        registry: berth::config::RegistryConfig { mode: berth::config::RegistryMode::Off, ..Default::default() },
        // External registries in tests are Berth's own, on the platform address; no test looks up a
        // host name (that would send DNS queries off the machine).
        external: berth::config::ExternalRegistryPolicy {
            external_registry_allowed_networks: vec![LOCAL_NODE_NETWORKS.parse().unwrap()],
            external_registry_names: false,
        },
        event_delivery: Default::default(),
        // Tests that route start their own router (see `TestRouter::start`).
        routing: berth::routing::RoutingConfig {
            apps_domain: "apps.localhost".into(),
            router: berth::routing::RouterMode::Off,
            router_listen: "127.0.0.1:8000".parse().unwrap(),
            router_name: None,
            haproxy_bin: "haproxy".into(),
            router_tls_listen: "off".into(),
            // Tests take free ports wherever they are.
            lb_ports: "1024-65535".into(),
            // No test looks names up off the machine; the domain test starts its own DNS server.
            dns_resolver: "off".into(),
        },
        acme: Default::default(),
    }
}

/// A configuration whose route URLs name a router on a free loopback port (start it with
/// [`TestRouter::start`] on `cfg.routing.router_listen`).
pub fn routed_config() -> ServeConfig {
    let mut cfg = serve_config(64 * 1024);
    cfg.routing.router_listen = std::net::SocketAddr::new([127, 0, 0, 1].into(), free_port_on([127, 0, 0, 1].into()));
    cfg
}

/// Whether a process is running (not gone, not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// A router (HAProxy driven by Berth) run in-process for one test, as `berth serve` runs it; its
/// HAProxy and directory go when dropped.
pub struct TestRouter {
    pub listen: std::net::SocketAddr,
    pub dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
}

impl TestRouter {
    /// Starts a router for the local clusters of `db` on `listen`, and waits until it answers.
    pub async fn start(db: &PgPool, listen: std::net::SocketAddr) -> TestRouter {
        Self::start_scoped(db, listen, berth::routing::table::Scope::Local).await
    }

    pub async fn start_scoped(db: &PgPool, listen: std::net::SocketAddr, scope: berth::routing::table::Scope) -> TestRouter {
        Self::start_with(db, listen, None, scope).await
    }

    /// A router that also serves HTTPS on `tls_listen`.
    pub async fn start_with(
        db: &PgPool,
        listen: std::net::SocketAddr,
        tls_listen: Option<std::net::SocketAddr>,
        scope: berth::routing::table::Scope,
    ) -> TestRouter {
        Self::start_as(db, listen, tls_listen, scope, None).await
    }

    /// A router reporting under `name` (`BERTH_ROUTER_NAME`) instead of host name and address.
    pub async fn start_as(
        db: &PgPool,
        listen: std::net::SocketAddr,
        tls_listen: Option<std::net::SocketAddr>,
        scope: berth::routing::table::Scope,
        name: Option<&str>,
    ) -> TestRouter {
        let dir = temp_data_dir("berth-router");
        let name = name.map(str::to_owned);
        let setup = berth::routing::haproxy::Setup { bin: "haproxy".into(), dir: dir.clone(), listen, tls_listen, name };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let keys = berth::crypto::Keys::from_secret(SECRET).unwrap();
        tokio::spawn(berth::routing::router::run(db.clone(), setup, scope, keys, stopped));
        let router = TestRouter { listen, dir, stop };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the router did not start listening on {listen}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        router
    }

    /// HAProxy processes started from this router's directory (master and workers).
    pub fn haproxy_pids(&self) -> Vec<i32> {
        let needle = self.dir.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmd =
                    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned();
                cmd.starts_with("haproxy") && cmd.contains(&needle)
            })
            .collect()
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let _ = self.stop.send(true);
        // The master first (it stops and reaps its workers), then anything left, so that no worker is
        // orphaned to an init that may not reap it.
        let pids = self.haproxy_pids();
        let me = std::process::id().to_string();
        for pid in &pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).unwrap_or("");
            if ppid == me {
                let _ = kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGTERM);
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.into_iter().filter(|p| alive(*p)) {
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A configuration that serves the built console (see [`browser::console_dir`]), with access tokens
/// that live `access_ttl_secs`.
pub fn console_config(access_ttl_secs: u64) -> ServeConfig {
    let mut cfg = serve_config(64 * 1024);
    cfg.console_dir = browser::console_dir();
    cfg.security.access_token_ttl_secs = access_ttl_secs;
    cfg
}

/// Tests may adopt swarms through sockets under the temporary directory and over TCP only inside the
/// local provider's node networks, which the tests themselves create.
pub fn test_existing_policy() -> berth::config::ExistingPolicy {
    berth::config::ExistingPolicy {
        existing_socket_dirs: vec![std::env::temp_dir()],
        existing_allowed_networks: vec![LOCAL_NODE_NETWORKS.parse().unwrap()],
    }
}

/// The registry's platform address (`10.213.0.1`), on the loopback interface for as long as this test
/// process runs. When the tests add it, a shell holding a pipe from this process removes it again
/// when the process exits, however it exits (as with the test PostgreSQL).
pub async fn platform_address() -> std::net::IpAddr {
    static GUARD: tokio::sync::OnceCell<Option<std::sync::Mutex<Child>>> = tokio::sync::OnceCell::const_new();
    let ip: std::net::IpAddr = "10.213.0.1".parse().unwrap();
    GUARD
        .get_or_init(|| async move {
            let present = std::net::UdpSocket::bind((ip, 0)).is_ok();
            berth::registry::ensure_local_address(ip).await.expect("adding the platform address (tests run as root)");
            (!present).then(|| {
                let child = Command::new("sh")
                    .arg("-c")
                    .arg("cat >/dev/null; ip addr del 10.213.0.1/32 dev lo 2>/dev/null")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("starting the address guard");
                std::sync::Mutex::new(child)
            })
        })
        .await;
    ip
}

/// A port of `ip` that is free now (for servers a test starts on the platform address).
pub fn free_port_on(ip: std::net::IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Where the local provider puts its nodes (see `providers/local.rs`).
pub const LOCAL_NODE_NETWORKS: &str = "10.213.0.0/16";

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(serve_config(64 * 1024)).await
    }

    /// An app that also runs job workers and reconcilers in-process, as `berth serve` does.
    pub async fn spawn_with_workers() -> TestApp {
        Self::spawn().await.with_workers()
    }

    /// An app running the built-in registry on free ports of the platform address (`import_max_bytes`
    /// as given). Add workers whose nodes trust it with [`TestApp::with_workers`].
    pub async fn spawn_with_registry(import_max_bytes: u64) -> TestApp {
        Self::spawn_with_registry_and(serve_config(64 * 1024), import_max_bytes).await
    }

    /// [`TestApp::spawn_with_registry`] with a configuration of the test's own.
    pub async fn spawn_with_registry_and(cfg: ServeConfig, import_max_bytes: u64) -> TestApp {
        let mut app = Self::spawn_with(cfg).await;
        let state = app.state.clone().expect("spawned apps keep their state");
        let ip = platform_address().await;
        let (port, auth_port) = (free_port_on(ip), free_port_on(ip));
        let cfg = berth::config::RegistryConfig {
            mode: berth::config::RegistryMode::Builtin,
            registry_address: std::net::SocketAddr::new(ip, port),
            registry_auth_port: Some(auth_port),
            registry_bin: "docker-registry".into(),
            import_max_bytes,
        };
        let data_dir = temp_data_dir("berth-registry");
        let running = berth::registry::start(&state, &cfg, &data_dir).await.expect("starting the built-in registry");
        let ca_pem = running.registry.ca.cert.clone();
        app.registry = Some(TestRegistry {
            running,
            address: cfg.registry_address.to_string(),
            auth_address: cfg.auth_address().to_string(),
            ca_pem,
            data_dir,
        });
        app
    }

    /// An app that also serves the built console (see [`browser::console_dir`]), with access tokens
    /// that live `access_ttl_secs`.
    pub async fn spawn_with_console(access_ttl_secs: u64) -> TestApp {
        Self::spawn_with(console_config(access_ttl_secs)).await
    }

    /// Runs job workers and reconcilers in-process, as `berth serve` does (trusting the registry, if any).
    pub fn with_workers(self) -> TestApp {
        self.with_workers_acme(Default::default())
    }

    /// Workers that obtain certificates from `acme` (a test authority).
    pub fn with_workers_acme(mut self, acme: berth::certificates::AcmeConfig) -> TestApp {
        let data_dir = temp_data_dir("berth-workers");
        let keys = berth::crypto::Keys::from_secret(SECRET).unwrap();
        let trust = self
            .registry
            .as_ref()
            .map(|r| berth::registry::RegistryTrust { address: r.address.clone(), ca_pem: r.ca_pem.clone() });
        let env = berth::clusters::WorkerEnv::new(keys, data_dir.clone(), test_existing_policy(), trust, acme);
        if let Some(state) = &self.state {
            state.set_clusters(env.clone());
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let dns = self.state.as_ref().map_or(berth::custom_domains::proof::DnsResolver::Off, |s| s.routing.dns.clone());
        tokio::spawn(berth::worker::run(self.db.clone(), env, dns, stopped));
        self.workers = Some(InProcessWorkers { stop, data_dir });
        self
    }

    pub async fn spawn_with(cfg: ServeConfig) -> TestApp {
        // `BERTH_TEST_LOG=debug cargo test …` shows the server's log (errors behind a 500, say).
        if let Ok(filter) = std::env::var("BERTH_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let (db_name, pool) = fresh_database().await;
        let pools = berth::db::Pools::lazy(connect_options(&db_name), cfg.db.db_pool_size.unwrap_or(10));
        let state = berth::serve::prepare(pools, &cfg).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let kept = state.clone();
        let console = berth::console::Console::open(&cfg.console_dir);
        tokio::spawn(async move {
            let app = berth::api::router(state, console).into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app).await.unwrap();
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut app = TestApp {
            base: format!("http://{addr}"),
            db: pool,
            db_name,
            http,
            admin: String::new(),
            workers: None,
            registry: None,
            state: Some(kept),
        };
        app.admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        app
    }

    /// The server's system pool (authentication, jobs, reconcilers, the event hub).
    pub fn system_pool(&self) -> PgPool {
        self.state.as_ref().expect("an in-process server").system.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; `body` is sent as JSON when present.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::from(req.send().await.expect("request failed")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": email, "password": password}))).await;
        r.expect(StatusCode::OK);
        r.body["access_token"].as_str().unwrap().to_owned()
    }

    /// Creates a tenant (as the platform admin) and logs its owner in.
    pub async fn tenant(&self, name: &str) -> Tenant {
        let email = format!("owner@{}.test", Uuid::new_v4().simple());
        let r = self
            .post("/api/v1/admin/tenants", &self.admin, json!({"name": name, "owner_email": email, "owner_password": PASSWORD}))
            .await;
        r.expect(StatusCode::CREATED);
        let owner = self.login(&email, PASSWORD).await;
        Tenant { id: r.id(), slug: r.body["slug"].as_str().unwrap().to_owned(), owner, owner_email: email }
    }

    /// Adds a user with `role` to the owner's tenant and returns its access token.
    pub async fn user(&self, owner: &str, role: &str) -> String {
        let email = format!("{role}-{}@example.test", Uuid::new_v4().simple());
        self.post("/api/v1/users", owner, json!({"email": email, "password": PASSWORD, "role": role}))
            .await
            .expect(StatusCode::CREATED);
        self.login(&email, PASSWORD).await
    }

    /// Creates an API token with `role` and returns its secret.
    pub async fn api_token(&self, creator: &str, role: &str) -> String {
        let r = self.post("/api/v1/tokens", creator, json!({"name": format!("ci-{role}"), "role": role})).await;
        r.expect(StatusCode::CREATED);
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// Row counts of every table an API call could write, to prove that a refused call wrote nothing.
    pub async fn row_counts(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for table in [
            "tenants",
            "quotas",
            "users",
            "api_tokens",
            "refresh_tokens",
            "clusters",
            "nodes",
            "templates",
            "template_versions",
            "registries",
            "image_tags",
            "applications",
            "application_revisions",
            "services",
            "containers",
            "routes",
            "domain_grants",
            "domain_claims",
            "releases",
            "certificates",
            "load_balancers",
            "jobs",
            "events",
        ] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&self.db).await.unwrap();
            out.push((table.to_owned(), n));
        }
        out
    }
    /// Reads the first `n` events of an event stream (Server-Sent Events), waiting at most 10 s.
    pub async fn read_events(&self, token: &str, path: &str, n: usize) -> Vec<Value> {
        self.read_events_until(token, path, |events| events.len() >= n).await
    }

    /// Reads an event stream until `done` holds for the events read so far, waiting at most 10 s.
    pub async fn read_events_until(&self, token: &str, path: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        use futures_util::StreamExt;
        let resp = self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(&events) {
            let chunk =
                tokio::time::timeout_at(deadline, stream.next()).await.expect("events did not arrive in time").unwrap().unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    events.push(serde_json::from_str(data).unwrap());
                }
            }
        }
        events
    }

    /// Polls a job until it has finished, and returns its final JSON.
    pub async fn wait_job(&self, token: &str, job: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.get(&format!("/api/v1/jobs/{job}"), token).await;
            let state = r.body["state"].as_str().unwrap_or_default().to_owned();
            if state == "succeeded" || state == "failed" {
                return r.body;
            }
            assert!(Instant::now() < deadline, "job {job} still {state} after {limit:?}: {}", r.text);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until `check` holds for the JSON at `path`, and returns that JSON.
    pub async fn wait_for(&self, token: &str, path: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.get(path, token).await;
            if check(&r.body) {
                return r.body;
            }
            assert!(Instant::now() < deadline, "{path} did not reach the expected state within {limit:?}: {}", r.text);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What Berth could leave behind on the host: namespaces, bridges, dockerd processes, runtime dirs.
#[derive(Debug, PartialEq, Eq)]
pub struct HostSnapshot {
    pub namespaces: Vec<String>,
    pub bridges: Vec<String>,
    pub dockerds: Vec<i32>,
    pub run_dirs: Vec<String>,
}

fn names_in(dir: &str) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Host state restricted to what belongs to the given clusters (by the last 8 hex digits of their id,
/// which name their namespaces) — other tests may be running clusters of their own.
pub fn host_snapshot(clusters: &[Uuid]) -> HostSnapshot {
    let tags: Vec<String> = clusters
        .iter()
        .map(|c| {
            let s = c.simple().to_string();
            format!("berth-{}-", &s[s.len() - 8..])
        })
        .collect();
    let mine = |n: &String| tags.iter().any(|t| n.starts_with(t.as_str()));
    let namespaces: Vec<String> = names_in("/run/netns").into_iter().filter(|n| mine(n)).collect();
    let run_dirs: Vec<String> = names_in("/run/berth").into_iter().filter(|n| mine(n)).collect();
    let bridges = {
        let out = Command::new("ip").args(["-o", "link", "show", "type", "bridge"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| clusters.iter().any(|c| l.contains(&format!("alias {c}"))))
            .filter_map(|l| l.split(": ").nth(1).map(|s| s.to_owned()))
            .collect();
        v.sort();
        v
    };
    let dockerds = {
        let candidates: Vec<(i32, i32)> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmd =
                    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned();
                cmd.starts_with("dockerd") && tags.iter().any(|t| cmd.contains(t.as_str()))
            })
            .map(|pid| (pid, parent_of(pid)))
            .collect();
        // A dockerd starting a child (containerd, a reexec) shows the child under its own command line
        // until the child's exec; such a child is not another engine.
        let mut v: Vec<i32> = candidates
            .iter()
            .filter(|(_, parent)| !candidates.iter().any(|(pid, _)| pid == parent))
            .map(|(pid, _)| *pid)
            .collect();
        v.sort();
        v
    };
    HostSnapshot { namespaces, bridges, dockerds, run_dirs }
}

/// The parent of a process, 0 when it is gone (from `/proc/<pid>/stat`, after the command's closing
/// parenthesis: state, then the parent's pid).
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// The host PID of a node's dockerd (the first process of its PID namespace), found through its
/// network namespace.
pub fn node_dockerd(netns: &str) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(format!("/run/netns/{netns}")).ok()?;
    let engines: Vec<i32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let same = std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ns.ino() && m.dev() == ns.dev());
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            same && comm.trim() == "dockerd"
        })
        .collect();
    // Not a child the engine is starting (it bears the engine's name until its exec).
    engines.iter().copied().find(|pid| !engines.contains(&parent_of(*pid)))
}

/// Destroys every local node made under a data directory (namespaces, dockerds, bridges) and removes
/// the directory when dropped: for tests whose nodes are made by `berth worker` processes.
pub struct DestroyNodesOnDrop(pub PathBuf);

impl Drop for DestroyNodesOnDrop {
    fn drop(&mut self) {
        berth::providers::local::LocalProvider::new(&self.0, None).destroy_all_blocking();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `berth worker` process on a test database, killed (and its nodes left to the test) on drop.
pub struct WorkerProcess {
    pub child: std::process::Child,
}

impl WorkerProcess {
    pub fn start(db_name: &str, data_dir: &std::path::Path, lease_secs: u64) -> WorkerProcess {
        Self::start_with(db_name, data_dir, lease_secs, &[])
    }

    /// The same, with more of the environment set (later settings win).
    pub fn start_with(db_name: &str, data_dir: &std::path::Path, lease_secs: u64, env: &[(&str, &str)]) -> WorkerProcess {
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("berth");
        let child = Command::new(bin)
            .arg("worker")
            .env("BERTH_DATABASE_URL", database_url(db_name))
            .env("BERTH_DATA_DIR", data_dir)
            .env("BERTH_SECRET", SECRET)
            .env("BERTH_JOB_LEASE_SECS", lease_secs.to_string())
            .env("BERTH_EXISTING_ALLOWED_NETWORKS", LOCAL_NODE_NETWORKS)
            .env("BERTH_REGISTRY", "off")
            .env("BERTH_DNS_RESOLVER", "off")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("worker.log")).unwrap())
            .spawn()
            .expect("starting berth worker (build it first: cargo build -p berth)");
        WorkerProcess { child }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub owner: String,
    /// The owner logs in with this and [`PASSWORD`].
    pub owner_email: String,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, content_type, headers, body, text }
    }

    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts an RFC 9457 problem with this status and a `type` ending in `kind`.
    #[track_caller]
    pub fn problem(&self, status: StatusCode, kind: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.content_type, "application/problem+json", "body: {}", self.text);
        for field in ["type", "title", "status", "detail"] {
            assert!(!self.body[field].is_null(), "problem lacks `{field}`: {}", self.text);
        }
        assert_eq!(self.body["status"], status.as_u16());
        let t = self.body["type"].as_str().unwrap();
        assert!(t.ends_with(kind), "problem type {t} does not end with {kind}; body: {}", self.text);
        self
    }

    pub fn id(&self) -> Uuid {
        self.body["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no id in {}", self.text))
    }
}

/// A `docker save`-style tarball built here, for the bad-input cases (no engine needed).
pub fn saved_tarball(repo_tags: &[&str], marker: &str) -> Vec<u8> {
    use sha2::Digest as _;
    let mut layer = tar::Builder::new(Vec::new());
    let data = marker.as_bytes();
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    layer.append_data(&mut h, "marker", data).unwrap();
    let layer = layer.into_inner().unwrap();
    let layer_hex = hex::encode(sha2::Sha256::digest(&layer));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]}
    }))
    .unwrap();
    let config_hex = hex::encode(sha2::Sha256::digest(&config));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": repo_tags,
        "Layers": [format!("{layer_hex}/layer.tar")]
    }]))
    .unwrap();
    let mut out = tar::Builder::new(Vec::new());
    for (name, bytes) in [
        (format!("{config_hex}.json"), &config),
        (format!("{layer_hex}/layer.tar"), &layer),
        ("manifest.json".to_owned(), &manifest),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    out.into_inner().unwrap()
}
