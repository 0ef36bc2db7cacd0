//! HAProxy's configuration, rendered from the route table as pure text. Requests are matched by host
//! (exact, through a map file) or by host and path prefix (longest prefix first); each route is a
//! backend whose servers are the tasks serving it. Everything that can change without a reload
//! (servers, their weights and states) is written so that a reload reproduces what the Runtime API
//! set: the file always describes the whole table.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use super::table::{Backend, Balance, Protocol, Server, Table};

/// Options every server line and every `add server` share: a TCP check each second, out after two
/// failures, back after one success; and a task that refuses or drops a real request is out at once
/// (the request itself is retried on another task), instead of waiting for its checks to fail.
pub const SERVER_CHECK: &str = "check inter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down";

/// Where the router's files are, and where it listens.
pub struct Files<'a> {
    pub dir: &'a Path,
    pub listen: SocketAddr,
    /// Where it serves HTTPS, if it does.
    pub tls_listen: Option<SocketAddr>,
}

impl Files<'_> {
    pub fn admin_socket(&self) -> std::path::PathBuf {
        self.dir.join("admin.sock")
    }
    pub fn hosts_map(&self) -> std::path::PathBuf {
        self.dir.join("hosts.map")
    }
    /// ACME HTTP-01 answers: token → key authorization (changed live with `add map`/`del map`).
    pub fn acme_map(&self) -> std::path::PathBuf {
        self.dir.join("acme.map")
    }
    /// Hosts whose plain-HTTP requests are redirected to HTTPS.
    pub fn redirect_map(&self) -> std::path::PathBuf {
        self.dir.join("https.map")
    }
    /// One PEM (chain and key) per certificate, chosen by SNI.
    pub fn certificates_dir(&self) -> std::path::PathBuf {
        self.dir.join("certs")
    }
    /// The certificate for names no other certificate covers (self-signed, made once per directory).
    pub fn default_certificate(&self) -> std::path::PathBuf {
        self.dir.join("default.pem")
    }
}

/// Everything a router's HAProxy reads, rendered from a table.
#[derive(Debug, Default, PartialEq)]
pub struct Rendered {
    pub cfg: String,
    pub hosts_map: String,
    pub acme_map: String,
    pub redirect_map: String,
    /// File name in the certificates directory → PEM.
    pub certificates: Vec<(String, String)>,
}

/// For HTTP frontends: on a reload the old worker keeps a client's idle keep-alive connection until it
/// has answered one more request (with `Connection: close`). By default HAProxy 2.6 closes idle
/// connections at once, under a request the client may already be sending, which then fails.
const KEEP_IDLE_ON_RELOAD: &str = "    option idle-close-on-response\n";

/// A line of the ACME map.
pub fn acme_line(token: &str, key_authorization: &str) -> String {
    format!("{token} {key_authorization}")
}

/// The configuration file and the files it names, for a table.
pub fn render(table: &Table, files: &Files<'_>) -> Rendered {
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
{keep_idle}",
        admin = admin.display(),
        listen = files.listen,
        keep_idle = KEEP_IDLE_ON_RELOAD,
    );
    if let Some(tls) = files.tls_listen {
        let _ = writeln!(
            cfg,
            "    bind {tls} ssl crt {default} crt {dir}",
            default = files.default_certificate().display(),
            dir = files.certificates_dir().display()
        );
    }
    let acme = files.acme_map();
    let _ = write!(
        cfg,
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower
    # ACME HTTP-01 challenges of certificates Berth is obtaining, answered by the router itself.
    http-request return status 200 content-type text/plain lf-string \"%[path,field(4,/),map({acme})]\" if {{ path_beg /.well-known/acme-challenge/ }} {{ path,field(4,/),map({acme}) -m found }}
    # Only requests that are safe to send twice are retried after reaching a task.
    acl idempotent method GET HEAD OPTIONS PUT DELETE
    http-request disable-l7-retry if !idempotent
",
        acme = acme.display(),
    );
    let mut redirect_map = String::new();
    if let Some(tls) = files.tls_listen {
        // Only to hosts the router has a certificate for: anything else would meet the default one.
        for b in table.backends.values().filter(|b| b.https_redirect) {
            if table.certificates.values().any(|c| c.covers(&b.domain)) && !redirect_map.contains(&format!("{} 1\n", b.domain)) {
                let _ = writeln!(redirect_map, "{} 1", b.domain);
            }
        }
        let port = if tls.port() == 443 { String::new() } else { format!(":{}", tls.port()) };
        let _ = writeln!(
            cfg,
            "    http-request redirect location https://%[var(txn.host)]{port}%[url] code 308 if !{{ ssl_fc }} {{ var(txn.host),map_str({map}) -m found }}",
            map = files.redirect_map().display()
        );
    }
    // Path prefixes first, longest first, so `/api/v2` wins over `/api`.
    let mut prefixed: Vec<&Backend> = table.backends.values().filter(|b| b.path_prefix != "/").collect();
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
    for b in table.backends.values() {
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
        if let Some(path) = &b.probe_path {
            // The servers' `check` then asks over HTTP, with the route's own host name.
            let _ = writeln!(
                cfg,
                "    option httpchk\n    http-check send meth GET uri {path} ver HTTP/1.1 hdr Host {}\n    http-check expect status 200-399",
                b.domain
            );
        }
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
    // Load balancers' listeners: a frontend on the router's address and a backend each.
    for l in table.listeners.values() {
        let (name, mode) = (l.name(), if l.protocol == Protocol::Tcp { "tcp" } else { "http" });
        let keep_idle = if l.protocol == Protocol::Http { KEEP_IDLE_ON_RELOAD } else { "" };
        let _ = write!(
            cfg,
            "\nfrontend {name}\n    mode {mode}\n    bind {ip}:{port}\n{keep_idle}    default_backend {name}\n\nbackend {name}\n    mode {mode}\n    balance roundrobin\n",
            ip = files.listen.ip(),
            port = l.port,
        );
        for (server, s) in &l.servers {
            let _ = writeln!(cfg, "    server {server} {}", server_options(server, s, false));
        }
    }
    let acme_map = table.challenges.iter().map(|(t, k)| acme_line(t, k) + "\n").collect();
    let certificates = table.certificates.iter().map(|(id, c)| (format!("{}.pem", id.simple()), c.pem.clone())).collect();
    Rendered { cfg, hosts_map: map, acme_map, redirect_map, certificates }
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
    use crate::routing::table::Certificate;

    fn backend(domain: &str, path: &str, servers: &[(&str, u16)]) -> Backend {
        Backend {
            route: Uuid::now_v7(),
            domain: domain.into(),
            path_prefix: path.into(),
            balance: Balance::RoundRobin,
            sticky: false,
            timeout_secs: 60,
            max_body_bytes: None,
            https_redirect: false,
            probe_path: None,
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
        let table = Table { backends: [&a, &b, &c].into_iter().map(|b| (b.route, b.clone())).collect(), ..Default::default() };
        let dir = Path::new("/run/berth-router");
        let Rendered { cfg, hosts_map: map, .. } =
            render(&table, &Files { dir, listen: "127.0.0.1:8000".parse().unwrap(), tls_listen: None });
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
        let mut table = Table::default();
        for (i, balance) in [Balance::RoundRobin, Balance::LeastConn, Balance::Source, Balance::Random].into_iter().enumerate() {
            let mut b =
                backend(&format!("s{i}.example.com"), if i % 2 == 0 { "/" } else { "/api" }, &[("abc", 30001), ("def", 30002)]);
            b.balance = balance;
            b.sticky = i % 2 == 0;
            b.max_body_bytes = (i > 1).then_some(1 << 20);
            b.servers.get_mut("t_def").unwrap().weight = 0;
            b.https_redirect = true;
            b.probe_path = (i % 2 == 1).then(|| "/healthz?full=1".to_owned());
            table.backends.insert(b.route, b);
        }
        // A certificate for one of them, and a challenge in progress.
        let cert = rcgen::generate_simple_self_signed(vec!["s0.example.com".to_owned()]).unwrap();
        let pem = format!("{}{}", cert.cert.pem(), cert.signing_key.serialize_pem());
        table.certificates.insert(Uuid::now_v7(), Certificate { domain: "s0.example.com".into(), pem });
        table.challenges.insert("tok3n".into(), "tok3n.thumbprint".into());
        // Load balancers' listeners of both protocols.
        for (port, protocol) in [(18100, Protocol::Http), (18101, Protocol::Tcp)] {
            let servers = backend("x", "/", &[("abc", 30001)]).servers;
            table.listeners.insert(port, crate::routing::table::Listener { port, protocol, servers });
        }
        let files =
            Files { dir: &dir, listen: "127.0.0.1:18000".parse().unwrap(), tls_listen: Some("127.0.0.1:18443".parse().unwrap()) };
        let rendered = render(&table, &files);
        assert_eq!(rendered.redirect_map, "s0.example.com 1\n", "only hosts with a certificate are redirected");
        assert_eq!(rendered.acme_map, "tok3n tok3n.thumbprint\n");
        crate::routing::haproxy::write_files(&files, &rendered).unwrap();
        let cfg = rendered.cfg;
        let out = std::process::Command::new("haproxy").arg("-c").arg("-f").arg(dir.join("haproxy.cfg")).output();
        let _ = std::fs::remove_dir_all(&dir);
        let out = out.expect("running haproxy -c (scripts/install-deps.sh installs Debian's haproxy)");
        assert!(out.status.success(), "{}\n{cfg}", String::from_utf8_lossy(&out.stderr));
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(!warnings.contains("WARNING"), "{warnings}\n{cfg}");
    }
}
