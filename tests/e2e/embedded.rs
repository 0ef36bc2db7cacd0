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

#[tokio::test]
async fn serve_runs_and_stops_its_own_postgres() {
    let dir = std::env::temp_dir().join(format!("berth-embedded-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(berth_binary())
        .arg("serve")
        .env_remove("BERTH_DATABASE_URL")
        .env("BERTH_DATA_DIR", &dir)
        .env("BERTH_LISTEN", format!("127.0.0.1:{port}"))
        .env("BERTH_ADMIN_EMAIL", "root@example.test")
        .env("BERTH_ADMIN_PASSWORD", "root-password")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Whatever happens below, stop the server and wait for it.
    struct Stop(nix::unistd::Pid);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGTERM);
        }
    }
    let guard = Stop(pid);

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "berth serve exited early");
        assert!(Instant::now() < deadline, "berth serve did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let login = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "root@example.test", "password": "root-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert!(dir.join("postgres/PG_VERSION").exists(), "the database lives in the data dir");
    assert!(dir.join("secret").exists(), "the generated master secret is kept");
    assert!(!postgres_pids(&dir).is_empty(), "a private postgres runs");

    drop(guard);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "berth serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(postgres_pids(&dir).is_empty(), "postgres outlived berth serve");
    std::fs::remove_dir_all(&dir).unwrap();
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
