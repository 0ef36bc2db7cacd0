//! A real DNS server for tests: Debian's `pebble-challtestsrv` on loopback, whose TXT records a test
//! sets through its management API (as a tenant would publish them at its DNS provider). Ended, by
//! its process id, when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port_on;

pub struct TestDns {
    /// Where it answers DNS queries (UDP and TCP).
    pub addr: SocketAddr,
    management: SocketAddr,
    child: Child,
}

impl TestDns {
    pub fn start() -> TestDns {
        let lo = [127, 0, 0, 1].into();
        let addr = SocketAddr::new(lo, free_port_on(lo));
        let management = SocketAddr::new(lo, free_port_on(lo));
        let child = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &addr.to_string(), "-management", &management.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's pebble is needed: run `make test`");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(management).is_err() || std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "pebble-challtestsrv did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        TestDns { addr, management, child }
    }

    /// Adds a TXT record (beside any others at the name).
    pub async fn add_txt(&self, name: &str, value: &str) {
        self.manage("set-txt", serde_json::json!({"host": format!("{name}."), "value": value})).await;
    }

    /// Removes every TXT record at the name.
    pub async fn clear_txt(&self, name: &str) {
        self.manage("clear-txt", serde_json::json!({"host": format!("{name}.")})).await;
    }

    async fn manage(&self, verb: &str, body: serde_json::Value) {
        let r = reqwest::Client::new().post(format!("http://{}/{verb}", self.management)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "pebble-challtestsrv {verb}: {}", r.status());
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
