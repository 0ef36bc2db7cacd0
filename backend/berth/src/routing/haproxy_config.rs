//! HAProxy's configuration, rendered from the route table as pure text. Requests are matched by host
//! (exact, through a map file) or by host and path prefix (longest prefix first); each route is a
//! backend whose servers are the tasks serving it. Everything that can change without a reload
//! (servers, their weights and states) is written so that a reload reproduces what the Runtime API
//! set: the file always describes the whole table.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use super::table::{Backend, Balance, Server, Table};

/// Options every server line and every `add server` share: a TCP check each second, out after two
/// failures, back after one success; and a task that refuses or drops a real request is out at once
/// (the request itself is retried on another task), instead of waiting for its checks to fail.
pub const SERVER_CHECK: &str = "check inter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down";

/// Where the router's files are.
pub struct Files<'a> {
    pub dir: &'a Path,
    pub listen: SocketAddr,
}

impl Files<'_> {
    pub fn admin_socket(&self) -> std::path::PathBuf {
        self.dir.join("admin.sock")
    }
    pub fn hosts_map(&self) -> std::path::PathBuf {
        self.dir.join("hosts.map")
    }
}

/// The configuration file and the host map for a table.
pub fn render(table: &Table, files: &Files<'_>) -> (String, String) {
    let mut cfg = String::new();
    let admin = files.admin_socket();
    let hosts = files.hosts_map();
    let _ = write!(
        cfg,
        "# Written by Berth from its route table; changes here are lost.
global
    stats socket {admin} mode 600 level admin expose-fd listeners
    stats timeout 10s
    # A reload's old worker finishes its requests, but no longer than this.
    hard-stop-after 30s

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    # A request that found no task able to answer is tried again on another task.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend routes
    bind {listen}
    http-request set-var(txn.host) req.hdr(host),field(1,:),lower
    # Only requests that are safe to send twice are retried after reaching a task.
    acl idempotent method GET HEAD OPTIONS PUT DELETE
    http-request disable-l7-retry if !idempotent
",
        admin = admin.display(),
        listen = files.listen,
    );
    // Path prefixes first, longest first, so `/api/v2` wins over `/api`.
    let mut prefixed: Vec<&Backend> = table.values().filter(|b| b.path_prefix != "/").collect();
    prefixed.sort_by(|a, b| b.path_prefix.len().cmp(&a.path_prefix.len()).then(a.domain.cmp(&b.domain)));
    for b in prefixed {
        let name = b.name();
        let _ = writeln!(
            cfg,
            "    use_backend {name} if {{ var(txn.host) -m str {domain} }} {{ path -m str {p} }} || {{ var(txn.host) -m str {domain} }} {{ path -m beg {p}/ }}",
            domain = b.domain,
            p = b.path_prefix,
        );
    }
    let _ = write!(
        cfg,
        "    use_backend %[var(txn.host),map_str({hosts})] if {{ var(txn.host),map_str({hosts}) -m found }}
    default_backend no_route

backend no_route
    http-request return status 404 content-type text/plain string \"No route for this host.\\n\"
",
        hosts = hosts.display(),
    );
    let mut map = String::new();
    for b in table.values() {
        let name = b.name();
        if b.path_prefix == "/" {
            let _ = writeln!(map, "{} {name}", b.domain);
        }
        let _ = write!(cfg, "\nbackend {name}\n    # {}{}\n", b.domain, b.path_prefix);
        let _ = match b.balance {
            Balance::RoundRobin => writeln!(cfg, "    balance roundrobin"),
            Balance::LeastConn => writeln!(cfg, "    balance leastconn"),
            Balance::Source => writeln!(cfg, "    balance source\n    hash-type consistent"),
            Balance::Random => writeln!(cfg, "    balance random"),
        };
        let _ = writeln!(cfg, "    timeout server {}s", b.timeout_secs);
        if let Some(max) = b.max_body_bytes {
            let _ = writeln!(cfg, "    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {max} }}");
        }
        if b.sticky {
            let _ = writeln!(cfg, "    cookie BERTH_STICKY insert indirect nocache httponly");
        }
        // With no task able to answer, say so instead of HAProxy's bare page. (Not an `nbsrv()` rule:
        // a freshly reloaded worker counts no usable server until its first checks, and such a rule
        // refused requests its servers could have answered.)
        let _ = writeln!(
            cfg,
            "    http-error status 503 content-type text/plain string \"No task of this service can answer right now.\\n\""
        );
        for (server, s) in &b.servers {
            let _ = writeln!(cfg, "    server {server} {}", server_options(server, s, b.sticky));
        }
    }
    (cfg, map)
}

/// What follows a server's name, in the file and in `add server` alike.
pub fn server_options(name: &str, s: &Server, sticky: bool) -> String {
    let mut line = format!("{}:{} weight {} {SERVER_CHECK}", s.address, s.port, s.weight);
    if sticky {
        let _ = write!(line, " cookie {name}");
    }
    line
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;

    fn backend(domain: &str, path: &str, servers: &[(&str, u16)]) -> Backend {
        Backend {
            route: Uuid::now_v7(),
            domain: domain.into(),
            path_prefix: path.into(),
            balance: Balance::RoundRobin,
            sticky: false,
            timeout_secs: 60,
            max_body_bytes: None,
            servers: servers
                .iter()
                .map(|(task, port)| {
                    (format!("t_{task}"), Server { address: "10.213.1.2".into(), port: *port, weight: 1, draining: false })
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn hosts_go_to_the_map_and_longer_prefixes_come_first() {
        let a = backend("web.shop.acme.apps.localhost", "/", &[("abc", 30001), ("def", 30002)]);
        let b = backend("www.example.com", "/api", &[]);
        let c = backend("www.example.com", "/api/v2", &[("ghi", 30003)]);
        let table: Table = [&a, &b, &c].into_iter().map(|b| (b.route, b.clone())).collect();
        let dir = Path::new("/run/berth-router");
        let (cfg, map) = render(&table, &Files { dir, listen: "127.0.0.1:8000".parse().unwrap() });
        assert_eq!(map, format!("web.shop.acme.apps.localhost {}\n", a.name()));
        let v2 = cfg.find(&format!("use_backend {} if", c.name())).unwrap();
        let v1 = cfg.find(&format!("use_backend {} if", b.name())).unwrap();
        assert!(v2 < v1, "{cfg}");
        assert!(cfg.contains(&format!("server t_abc 10.213.1.2:30001 weight 1 {SERVER_CHECK}")), "{cfg}");
        assert!(cfg.contains("bind 127.0.0.1:8000"));
        // A route without tasks answers 503 with a reason instead of HAProxy's bare page.
        let empty = &cfg[cfg.find(&format!("\nbackend {}", b.name())).unwrap()..];
        let empty = &empty[..empty[1..].find("\nbackend ").map_or(empty.len(), |i| i + 1)];
        assert!(empty.contains("status 503") && !empty.contains("    server t_"), "{empty}");
    }

    /// The rendering is checked by the real HAProxy (a required dependency): every option of a route
    /// at once, so a keyword HAProxy 2.6 does not know fails here rather than in a router.
    #[test]
    fn haproxy_accepts_every_option() {
        let dir = std::env::temp_dir().join(format!("berth-haproxy-check-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut table = Table::new();
        for (i, balance) in [Balance::RoundRobin, Balance::LeastConn, Balance::Source, Balance::Random].into_iter().enumerate() {
            let mut b =
                backend(&format!("s{i}.example.com"), if i % 2 == 0 { "/" } else { "/api" }, &[("abc", 30001), ("def", 30002)]);
            b.balance = balance;
            b.sticky = i % 2 == 0;
            b.max_body_bytes = (i > 1).then_some(1 << 20);
            b.servers.get_mut("t_def").unwrap().weight = 0;
            table.insert(b.route, b);
        }
        let files = Files { dir: &dir, listen: "127.0.0.1:18000".parse().unwrap() };
        let (cfg, map) = render(&table, &files);
        std::fs::write(dir.join("haproxy.cfg"), &cfg).unwrap();
        std::fs::write(files.hosts_map(), map).unwrap();
        let out = std::process::Command::new("haproxy").arg("-c").arg("-f").arg(dir.join("haproxy.cfg")).output();
        let _ = std::fs::remove_dir_all(&dir);
        let out = out.expect("running haproxy -c (scripts/install-deps.sh installs Debian's haproxy)");
        assert!(out.status.success(), "{}\n{cfg}", String::from_utf8_lossy(&out.stderr));
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(!warnings.contains("WARNING"), "{warnings}\n{cfg}");
    }
}
