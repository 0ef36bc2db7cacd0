//! Test harness: a real PostgreSQL server shared by the test process, a fresh database per test, and
//! the real Berth application served on a loopback port chosen by the kernel.
//!
//! The server is started from the machine's PostgreSQL binaries inside a shell that holds the read end
//! of a pipe from this process: when the test process exits — passing, failing, panicking or killed —
//! the pipe closes, the shell stops PostgreSQL and removes its directory. Nothing outlives the tests.

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
    pub http: reqwest::Client,
    pub admin: String,
}

pub fn serve_config(max_body: usize) -> ServeConfig {
    ServeConfig {
        db: DbConfig { database_url: None, data_dir: std::env::temp_dir(), postgres_bin: None, db_pool_size: Some(10) },
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_email: Some(ADMIN_EMAIL.to_owned()),
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
        security: SecurityConfig { secret: Some(SECRET.to_owned()), access_token_ttl_secs: 900, refresh_token_ttl_secs: 3600 },
        max_body_bytes: max_body,
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(serve_config(64 * 1024)).await
    }

    pub async fn spawn_with(cfg: ServeConfig) -> TestApp {
        let (_, pool) = fresh_database().await;
        let state = berth::serve::prepare(pool.clone(), &cfg).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, berth::api::router(state)).await.unwrap();
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut app = TestApp { base: format!("http://{addr}"), db: pool, http, admin: String::new() };
        app.admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        app
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
        Tenant { id: r.id(), slug: r.body["slug"].as_str().unwrap().to_owned(), owner }
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
            "images",
            "applications",
            "application_revisions",
            "services",
            "containers",
            "jobs",
            "events",
        ] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&self.db).await.unwrap();
            out.push((table.to_owned(), n));
        }
        out
    }
}

pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub owner: String,
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
