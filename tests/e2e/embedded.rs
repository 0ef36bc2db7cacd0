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

fn postgres_pids(data_dir: &std::path::Path) -> Vec<i32> {
    let needle = data_dir.join("postgres").to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("postgres") && cmd.contains(&needle)
        })
        .collect()
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
            .env("BERTH_ADMIN_PASSWORD", "root-password");
        cmd
    }

    async fn start(prefix: &str) -> Served {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let child = Self::command(&dir, port).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let mut served = Served { child, base: format!("http://127.0.0.1:{port}"), dir };
        served.wait_ready(Duration::from_secs(90)).await;
        served
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
async fn serve_runs_and_stops_its_own_postgres() {
    let mut served = Served::start("berth-embedded").await;
    assert_eq!(served.login_status().await, 200);
    let dir = served.dir.clone();
    assert!(dir.join("postgres/PG_VERSION").exists(), "the database lives in the data dir");
    assert!(dir.join("secret").exists(), "the generated master secret is kept");
    assert!(!postgres_pids(&dir).is_empty(), "a private postgres runs");

    assert!(served.stop_within(Duration::from_secs(30)), "berth serve did not stop on SIGTERM");
    assert!(postgres_pids(&dir).is_empty(), "postgres outlived berth serve");
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
