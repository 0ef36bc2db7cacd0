//! The real `berth` binary on its embedded default: with no database configured it runs a private
//! PostgreSQL in its data directory, serves, and stops that PostgreSQL when it is told to stop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn berth_binary() -> PathBuf {
    // Integration tests live in target/<profile>/deps; the binary sits one level up.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("berth");
    assert!(bin.exists(), "build the binary first (`cargo build -p berth`): {}", bin.display());
    bin
}

/// Processes whose command line starts with `program` and mentions `path`.
fn pids_of(program: &str, path: &std::path::Path) -> Vec<i32> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned();
            cmd.contains(program) && cmd.contains(&needle)
        })
        .collect()
}

fn postgres_pids(data_dir: &std::path::Path) -> Vec<i32> {
    pids_of("postgres", &data_dir.join("postgres"))
}

/// A `berth serve` on its embedded database, stopped (SIGTERM) when dropped.
struct Served {
    child: std::process::Child,
    base: String,
    dir: PathBuf,
}

impl Served {
    fn command(dir: &std::path::Path, port: u16) -> Command {
        let mut cmd = Command::new(berth_binary());
        cmd.arg("serve")
            .env_remove("BERTH_DATABASE_URL")
            .env("BERTH_DATA_DIR", dir)
            .env("BERTH_LISTEN", format!("127.0.0.1:{port}"))
            .env("BERTH_ADMIN_EMAIL", "root@example.test")
            .env("BERTH_ADMIN_PASSWORD", "root-password")
            .env("BERTH_REGISTRY", "off")
            // Each Berth its own router ports (the defaults, 8000 and 8443, are one per machine).
            .env("BERTH_ROUTER_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("BERTH_ROUTER_TLS_LISTEN", format!("127.0.0.1:{}", free_port()));
        cmd
    }

    async fn start(prefix: &str) -> Served {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        Self::start_in(dir, free_port(), &[]).await
    }

    async fn start_in(dir: PathBuf, port: u16, env: &[(&str, &str)]) -> Served {
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("serve.log")).unwrap();
        let child = Self::command(&dir, port).envs(env.iter().copied()).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let mut served = Served { child, base: format!("http://127.0.0.1:{port}"), dir };
        served.wait_ready(Duration::from_secs(90)).await;
        served
    }

    async fn token(&self, email: &str, password: &str) -> String {
        let r: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().unwrap_or_else(|| panic!("login failed: {r}")).to_owned()
    }

    async fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.base)).await
                && r.status() == 200
            {
                return;
            }
            assert!(self.child.try_wait().unwrap().is_none(), "berth serve exited early");
            assert!(Instant::now() < deadline, "berth serve was not ready within {limit:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn login_status(&self) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&serde_json::json!({"email": "root@example.test", "password": "root-password"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    fn terminate(&self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    }

    /// Stops the server and waits for it; true when it exited within `limit`.
    fn stop_within(&mut self, limit: Duration) -> bool {
        self.terminate();
        let deadline = Instant::now() + limit;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop_within(Duration::from_secs(30));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are plain.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn serve_runs_and_stops_its_own_postgres_and_registry() {
    // This one runs the built-in registry too, on free ports of the platform address.
    let ip = berth_tests::platform_address().await;
    let (port, auth_port) = (berth_tests::free_port_on(ip), berth_tests::free_port_on(ip));
    let address = format!("{ip}:{port}");
    let auth = auth_port.to_string();
    let dir = std::env::temp_dir().join(format!("berth-embedded-{}", uuid::Uuid::new_v4().simple()));
    let router = format!("127.0.0.1:{}", free_port());
    let env = [
        ("BERTH_REGISTRY", "builtin"),
        ("BERTH_REGISTRY_ADDRESS", address.as_str()),
        ("BERTH_REGISTRY_AUTH_PORT", auth.as_str()),
        ("BERTH_ROUTER_LISTEN", router.as_str()),
    ];
    let mut served = Served::start_in(dir.clone(), free_port(), &env).await;
    assert_eq!(served.login_status().await, 200);
    assert!(dir.join("postgres/PG_VERSION").exists(), "the database lives in the data dir");
    assert!(dir.join("secret").exists(), "the generated master secret is kept");
    assert!(!postgres_pids(&dir).is_empty(), "a private postgres runs");
    let registry = registry_pids(&dir);
    assert_eq!(registry.len(), 1, "one registry runs, with its storage in the data dir");
    assert!(dir.join("registry/storage").is_dir());
    assert!(std::net::TcpStream::connect(&address).is_ok(), "the registry listens on {address}");
    // The router: HAProxy, from the data directory, answering for hosts no route names.
    // (The router starts beside the API, so it may answer a moment after `/readyz` does.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let routed = loop {
        match reqwest::Client::new().get(format!("http://{router}/")).header("host", "x.apps.localhost").send().await {
            Ok(r) => break r,
            Err(e) => assert!(Instant::now() < deadline, "the router does not answer: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(routed.status(), 404);
    assert_eq!(routed.text().await.unwrap(), "No route for this host.\n");
    assert!(!pids_of("haproxy", &dir.join("router")).is_empty(), "HAProxy runs from the data dir");

    assert!(served.stop_within(Duration::from_secs(30)), "berth serve did not stop on SIGTERM");
    assert!(pids_of("haproxy", &dir.join("router")).iter().all(|p| !berth_tests::alive(*p)), "HAProxy outlived berth serve");
    assert!(postgres_pids(&dir).is_empty(), "postgres outlived berth serve");
    assert!(registry_pids(&dir).is_empty(), "the registry outlived berth serve");
}

/// `docker-registry` processes serving a configuration under `dir`.
fn registry_pids(dir: &std::path::Path) -> Vec<i32> {
    pids_of("docker-registry", dir)
}

/// Starting Berth twice on one data directory (a second `make run`, say) must leave the first alone: the
/// second refuses with one line naming the first, and the first's database keeps serving.
#[tokio::test]
async fn a_second_serve_on_a_directory_in_use_refuses_and_touches_nothing() {
    let first = Served::start("berth-twice").await;
    let before = postgres_pids(&first.dir);
    assert!(!before.is_empty());

    let out = Served::command(&first.dir, free_port()).output().unwrap();
    assert!(!out.status.success(), "the second serve must exit non-zero");
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("in use by another Berth") && last.contains(&format!("pid {}", first.child.id())),
        "one line naming the running Berth, got: {err}"
    );
    assert_eq!(postgres_pids(&first.dir), before, "the first Berth's postgres was touched");
    assert_eq!(first.login_status().await, 200, "the first Berth still serves");
}

/// The embedded postgres is supervised: killed under a running Berth, it is started again and requests
/// recover without anyone restarting Berth.
#[tokio::test]
async fn a_killed_embedded_postgres_is_restarted_and_requests_recover() {
    let mut served = Served::start("berth-pgkill").await;
    let berth = served.child.id() as i32;
    let postmaster = postgres_pids(&served.dir)
        .into_iter()
        .find(|pid| parent_pid(*pid) == Some(berth))
        .expect("the postmaster is a child of berth serve");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(postmaster), nix::sys::signal::Signal::SIGKILL).unwrap();

    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(60);
    loop {
        if served.login_status().await == 200 {
            break;
        }
        assert!(served.child.try_wait().unwrap().is_none(), "berth serve died with its database");
        assert!(Instant::now() < deadline, "requests did not recover within 60 s of killing postgres");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    served.wait_ready(Duration::from_secs(10)).await;
    let restarted = postgres_pids(&served.dir).into_iter().find(|pid| parent_pid(*pid) == Some(berth));
    assert!(restarted.is_some_and(|p| p != postmaster), "a new postmaster runs under berth");
    eprintln!("recovered {:?} after the postmaster was killed", killed_at.elapsed());

    let dir = served.dir.clone();
    assert!(served.stop_within(Duration::from_secs(30)), "berth serve did not stop on SIGTERM");
    assert!(postgres_pids(&dir).is_empty(), "postgres outlived berth serve");
}

#[test]
fn a_missing_postgres_is_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("berth-nopg-{}", uuid::Uuid::new_v4().simple()));
    let out = Command::new(berth_binary())
        .args(["migrate"])
        .env_remove("BERTH_DATABASE_URL")
        .env("BERTH_DATA_DIR", &dir)
        .env("BERTH_POSTGRES_BIN", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap();
    assert!(last.contains("apt-get install postgresql") && last.contains("BERTH_DATABASE_URL"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM: event streams end with a retry hint, a job in hand is handed back (queued again, its attempt
/// not counted) instead of waiting out its lease, and the process and its database stop within bounds.
#[tokio::test]
async fn sigterm_ends_streams_hands_running_jobs_back_and_stops() {
    use futures_util::StreamExt;

    let dir = std::env::temp_dir().join(format!("berth-sigterm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // An engine socket that accepts connections and never answers: adopting it keeps a job running.
    let socket = dir.join("silent-engine.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let port = free_port();
    let dirs = dir.to_string_lossy().into_owned();
    let mut served = Served::start_in(dir.clone(), port, &[("BERTH_EXISTING_SOCKET_DIRS", &dirs)]).await;
    let http = reqwest::Client::new();
    let admin = served.token("root@example.test", "root-password").await;
    let created = http
        .post(format!("{}/api/v1/admin/tenants", served.base))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "Acme", "owner_email": "owner@acme.test", "owner_password": "owner-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let owner = served.token("owner@acme.test", "owner-password").await;

    let stream = http.get(format!("{}/api/v1/events?after=0", served.base)).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();

    let cluster: serde_json::Value = http
        .post(format!("{}/api/v1/clusters", served.base))
        .bearer_auth(&owner)
        .json(&serde_json::json!({"name": "silent", "provider": "existing", "endpoint": format!("unix://{}", socket.display())}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = cluster["job_id"].as_str().unwrap_or_else(|| panic!("{cluster}")).to_owned();
    let job_url = format!("{}/api/v1/jobs/{job}", served.base);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j: serde_json::Value = http.get(&job_url).bearer_auth(&owner).send().await.unwrap().json().await.unwrap();
        if j["state"] == "running" {
            assert_eq!(j["attempts"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "the job never ran: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stopping = Instant::now();
    served.terminate();
    // The stream ends on its own, with a retry hint, rather than being cut or left hanging.
    let mut seen = String::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(e) => panic!("the stream was cut instead of ended: {e}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the event stream did not end on SIGTERM; got: {seen}");
    assert!(seen.contains("job.running") && seen.contains("retry: 1000"), "{seen}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while served.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "berth serve did not stop within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = stopping.elapsed();
    assert!(served.child.try_wait().unwrap().unwrap().success(), "a clean stop exits 0");
    assert!(postgres_pids(&dir).is_empty(), "postgres outlived berth serve");
    eprintln!("stopped {took:?} after SIGTERM");

    // The job was handed back, not left to its lease: the next Berth runs it as attempt 1 again, and its
    // log says what happened.
    served.dir = std::env::temp_dir().join("berth-not-this-one");
    drop(served);
    let served = Served::start_in(dir.clone(), port, &[("BERTH_EXISTING_SOCKET_DIRS", &dirs)]).await;
    let owner = served.token("owner@acme.test", "owner-password").await;
    let j: serde_json::Value = http.get(&job_url).bearer_auth(&owner).send().await.unwrap().json().await.unwrap();
    assert!(j["attempts"].as_i64().unwrap() <= 1, "the handed-back attempt was not counted: {j}");
    let logs = j["logs"].to_string();
    assert!(logs.contains("handed back by"), "{j}");
}
