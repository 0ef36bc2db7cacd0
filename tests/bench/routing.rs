//! The routing benchmark (`make bench-routing`): Berth's router (Debian's HAProxy, driven by Berth)
//! on a real 1 + 1 local cluster, measured in one run against baselines on the same machine.
//!
//! 1. Route propagation, p50/p95 over `TRIALS` scale-ups: from a new task running (the engine's own
//!    timestamp of the task's `running` state) to its first answer through the router; and the router's
//!    share of it, from the moment Berth's database shows the task running.
//! 2. Throughput (`wrk`, `WRK_SECS` each, alternated `ROUNDS` times, medians) to one task: through
//!    Berth's router, straight to the task's host port, and through a hand-written static HAProxy
//!    configuration for the same task (same defaults Berth writes, no controller).
//!    The client side — `wrk`, the static HAProxy and the router's HAProxy — runs on a core of its own
//!    (`CLIENT_CPU`, default 0) and everything else — Berth, PostgreSQL, the registry, the cluster's
//!    engines and the tasks — on the others, as a backend's node and the machines in front of it
//!    would; `CLIENT_CPU=shared` lets them all share every core (the form of the runs before
//!    2026-11-27).
//! 3. Failed requests during rolling updates of 4 tasks at `RATE` requests per second, through Berth's
//!    router and through a static configuration of the tasks as they were before the update (a load
//!    balancer nobody keeps in step with Swarm): for a service declaring `order: start-first`, and for
//!    one with Swarm's default update (stop-first).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_tests::docker_cli::{RealCluster, push_versions};
use berth_tests::load::Load;
use berth_tests::{PASSWORD, TestApp, TestRouter, routed_config};
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Running tasks of a service: (task id, slot, node address, host port of 8080, when the engine
/// says it started running).
async fn tasks(app: &TestApp, service: &str) -> Vec<(String, i32, String, u16, chrono::DateTime<chrono::Utc>)> {
    type Row = (String, Option<i32>, Option<String>, Option<i32>, Option<chrono::DateTime<chrono::Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.swarm_task_id, c.slot, n.address, (SELECT (hp->>'published')::int FROM jsonb_array_elements(c.host_ports) hp
                                                     WHERE (hp->>'target')::int = 8080 LIMIT 1), c.started_at
           FROM containers c LEFT JOIN nodes n ON n.id = c.node_id
          WHERE c.service_id = $1::uuid AND c.state = 'running' AND c.desired_state = 'running'",
    )
    .bind(service)
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.into_iter().filter_map(|(t, s, a, p, at)| Some((t, s.unwrap_or(0), a?, u16::try_from(p?).ok()?, at?))).collect()
}

async fn scale(app: &TestApp, token: &str, service: &str, replicas: usize) {
    let r = app.patch(&format!("/api/v1/services/{service}"), token, json!({"replicas": replicas})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(120);
    while tasks(app, service).await.len() != replicas {
        assert!(Instant::now() < deadline, "scaling to {replicas} did not settle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `wrk` reached against `url` (with `host` as the Host header): requests per second and the
/// 99th percentile latency in milliseconds.
fn wrk(url: &str, host: &str, secs: usize, client: &Client) -> (f64, f64) {
    let out = client
        .command("wrk")
        .args(["-t", "2", "-c", "16", "-d", &format!("{secs}s"), "--latency", "-H", &format!("Host: {host}"), url])
        .output()
        .expect("wrk (scripts/install-deps.sh bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk printed no rate: {text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| {
            let v = v.trim();
            let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
            let n: f64 = n.parse().unwrap_or(f64::NAN);
            match unit {
                "us" => n / 1000.0,
                "s" => n * 1000.0,
                _ => n,
            }
        })
        .unwrap_or(f64::NAN);
    assert!(!text.contains("Non-2xx"), "wrk saw errors against {url}: {text}");
    (rps, p99)
}

/// Waits (at most 70 s) until this host holds fewer than 500 TIME_WAIT sockets toward `addr`:`port`.
/// BusyBox's httpd answers every request with `Connection: close`; wrk then closes first, leaving
/// one TIME_WAIT socket per request on this side for 60 s, and every connection anyone opens to the
/// same address and port meanwhile must search past them for a free source port (measured: ~12 ms
/// per connection with 14,000 of them). Each run starts clean so that none pays for the one before.
fn drain_time_wait(addr: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(70);
    loop {
        let out = std::process::Command::new("ss")
            .args(["-Htan", "state", "time-wait", "dst", &format!("{addr}:{port}")])
            .output()
            .expect("ss (iproute2)");
        let n = String::from_utf8_lossy(&out.stdout).lines().count();
        if n < 500 || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Where the client side runs: on CPU `cpu` alone, or (`None`) wherever the kernel puts it.
struct Client {
    cpu: Option<usize>,
}

impl Client {
    /// Confines this process, and so everything it starts from now on (PostgreSQL, the registry, the
    /// cluster's engines and tasks), to the CPUs other than the client's (`CLIENT_CPU`, default 0).
    fn separate() -> Client {
        let choice = std::env::var("CLIENT_CPU").unwrap_or_else(|_| "0".into());
        if choice == "shared" {
            return Client { cpu: None };
        }
        let cpu: usize = choice.parse().expect("CLIENT_CPU: a CPU number, or `shared`");
        let rest: Vec<usize> = berth_tests::cpus::allowed().into_iter().filter(|c| *c != cpu).collect();
        if rest.is_empty() || !berth_tests::cpus::allowed().contains(&cpu) {
            println!("CLIENT_CPU={cpu}: no core to spare for the rest; everything shares every core");
            return Client { cpu: None };
        }
        // Only this thread now; the runtime's threads and every process started later inherit it.
        berth_tests::cpus::confine(std::process::id() as i32, &rest);
        Client { cpu: Some(cpu) }
    }

    /// `program`, started on the client's core.
    fn command(&self, program: &str) -> std::process::Command {
        match self.cpu {
            Some(cpu) => {
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", &cpu.to_string(), program]);
                c
            }
            None => std::process::Command::new(program),
        }
    }

    /// Moves the router's HAProxy (started by Berth, so on the others' cores) to the client's core:
    /// it is the machine in front of the nodes.
    fn take_router(&self) {
        if let Some(cpu) = self.cpu {
            let rest: Vec<usize> = berth_tests::cpus::allowed().into_iter().filter(|c| *c != cpu).collect();
            berth_tests::cpus::confine_tree(&rest, &[("haproxy", &[cpu])]);
        }
    }
}

/// A hand-written HAProxy for fixed servers: the defaults and checks Berth writes, no controller.
struct StaticHaproxy {
    child: std::process::Child,
    dir: std::path::PathBuf,
    listen: std::net::SocketAddr,
}

impl StaticHaproxy {
    fn start(servers: &[(String, u16)], client: &Client) -> StaticHaproxy {
        let dir = berth_tests::temp_data_dir("berth-bench-static");
        let listen = std::net::SocketAddr::new([127, 0, 0, 1].into(), berth_tests::free_port_on([127, 0, 0, 1].into()));
        let mut cfg = format!(
            "global\n    maxconn 4096\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n    \
             retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response response-timeout\n\
             frontend f\n    bind {listen}\n    default_backend b\nbackend b\n    balance roundrobin\n"
        );
        for (i, (address, port)) in servers.iter().enumerate() {
            cfg.push_str(&format!("    server s{i} {address}:{port} check inter 1s fall 2 rise 1\n"));
        }
        std::fs::write(dir.join("haproxy.cfg"), cfg).unwrap();
        let child = client
            .command("haproxy")
            .args(["-W", "-db", "-f"])
            .arg(dir.join("haproxy.cfg"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(listen).is_err() {
            assert!(Instant::now() < deadline, "the static HAProxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        StaticHaproxy { child, dir, listen }
    }
}

impl Drop for StaticHaproxy {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    let client = Client::separate();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(run(client));
}

async fn run(client: Client) {
    match client.cpu {
        Some(cpu) => {
            println!("wrk and both HAProxies run on CPU {cpu}; Berth, PostgreSQL, the registry and the cluster on the others")
        }
        None => println!("wrk, the HAProxies, Berth and the cluster share every CPU"),
    }
    let trials = env_usize("TRIALS", 20);
    let rounds = env_usize("ROUNDS", 3);
    let wrk_secs = env_usize("WRK_SECS", 5);
    let rate = env_usize("RATE", 200);

    let cfg = routed_config();
    let listen = cfg.routing.router_listen;
    let app = TestApp::spawn_with_registry_and(cfg, 1 << 30).await.with_workers();
    let router = TestRouter::start(&app.db, listen).await;
    let address = app.registry.as_ref().unwrap().address.clone();
    let t = app.tenant("Bench").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();
    let real = RealCluster::create(&app, &t.owner, "bench", 1, 1).await;
    let (manager, cli) = (real.manager.clone(), &real.cli);
    let (images, _cleanup) = push_versions(cli, &manager, &address, (&email, PASSWORD), (&t.slug, "web"), &["1", "2"]);
    let compose = r#"services:
  web:
    image: ${IMAGE}
    command: ["/bin/busybox", "sh", "-c", "mkdir /www && hostname > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
    hostname: "web-{{.Task.Slot}}"
    ports: [{target: 8080, mode: host}]
    deploy:
      replicas: 2
      update_config: {parallelism: 1, order: start-first, monitor: 1s}
      resources: {limits: {memory: 32M}}
  plain:
    image: ${IMAGE}
    command: ["/bin/busybox", "sh", "-c", "mkdir /www && hostname > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
    ports: [{target: 8080, mode: host}]
    deploy:
      replicas: 4
      # Swarm's default, declared: Berth would otherwise roll this routed service start-first.
      update_config: {order: stop-first}
      resources: {limits: {memory: 32M}}
"#;
    let r = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "shop", "cluster_id": real.id, "compose": compose, "variables": {"IMAGE": images[0]}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let application = r.id();
    let host = format!("web.shop.{}.apps.localhost", t.slug);
    let services = app.get(&format!("/api/v1/applications/{application}/services"), &t.owner).await.body;
    let id_of = |name: &str| {
        services["items"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["id"].as_str().unwrap().to_owned()
    };
    let (service, plain) = (id_of("web"), id_of("plain"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while tasks(&app, &service).await.len() < 2 {
        assert!(Instant::now() < deadline, "the service did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let router_url = format!("http://{listen}/");
    println!(
        "# Routing benchmark: {trials} propagation trials, {rounds} rounds of wrk × {wrk_secs} s, rolling update at {rate} req/s\n"
    );

    // 1. Propagation.
    let mut delays = Vec::new();
    let mut end_to_end = Vec::new();
    for _ in 0..trials {
        let before: Vec<i32> = tasks(&app, &service).await.iter().map(|t| t.1).collect();
        let r = app.patch(&format!("/api/v1/services/{service}"), &t.owner, json!({"replicas": before.len() + 1})).await;
        assert_eq!(r.status, 202);
        let deadline = Instant::now() + Duration::from_secs(60);
        let (slot, running_at, started) = loop {
            if let Some(t) = tasks(&app, &service).await.into_iter().find(|t| !before.contains(&t.1)) {
                break (t.1, Instant::now(), t.4);
            }
            assert!(Instant::now() < deadline, "no new task");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let want = format!("web-{slot}");
        loop {
            let body = http.get(&router_url).header("host", &host).send().await.unwrap().text().await.unwrap();
            if body.trim() == want {
                break;
            }
            assert!(Instant::now() < deadline, "the new task never answered through the router");
        }
        delays.push(running_at.elapsed().as_secs_f64() * 1000.0);
        end_to_end.push((chrono::Utc::now() - started).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        scale(&app, &t.owner, &service, before.len()).await;
    }
    let (p50, p95) = (percentile(end_to_end.clone(), 0.5), percentile(end_to_end.clone(), 0.95));
    let (r50, r95) = (percentile(delays.clone(), 0.5), percentile(delays.clone(), 0.95));
    println!("| route propagation | p50 | p95 |");
    println!("|---|---|---|");
    println!("| engine reports the task running → it answers through the router | {p50:.0} ms | {p95:.0} ms |");
    println!("| of which: Berth's database shows it running → it answers (the router's part) | {r50:.0} ms | {r95:.0} ms |");
    println!("| Traefik's Swarm provider, default polling interval (not measured here) | up to 15000 ms | |\n");

    // 2. Throughput to one task.
    scale(&app, &t.owner, &service, 1).await;
    let one = tasks(&app, &service).await.remove(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let direct_url = format!("http://{}:{}/", one.2, one.3);
    let fixed = StaticHaproxy::start(&[(one.2.clone(), one.3)], &client);
    client.take_router();
    let static_url = format!("http://{}/", fixed.listen);
    if let Some(secs) = std::env::var("HOLD_SECS").ok().and_then(|s| s.parse().ok()) {
        // For experiments by hand: the three ways to the one task stay up this long.
        println!("holding {secs} s: direct {direct_url}, static {static_url}, router {router_url} (Host: {host})");
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut tails: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        for (name, url) in [("direct", &direct_url), ("router", &router_url), ("static", &static_url)] {
            drain_time_wait(&one.2, one.3);
            let (rps, p99) = wrk(url, &host, wrk_secs, &client);
            results.entry(name).or_default().push(rps);
            tails.entry(name).or_default().push(p99);
        }
    }
    let med = |k: &str| percentile(results[k].clone(), 0.5);
    let tail = |k: &str| percentile(tails[k].clone(), 0.5);
    println!("| throughput to one task (wrk -t2 -c16) | requests/s (median) | ratio | p99 latency (median) |");
    println!("|---|---|---|---|");
    println!("| straight to the task's host port | {:.0} | 1.00 | {:.1} ms |", med("direct"), tail("direct"));
    println!(
        "| hand-written static HAProxy | {:.0} | {:.2} of direct | {:.1} ms |",
        med("static"),
        med("static") / med("direct"),
        tail("static")
    );
    println!(
        "| Berth's router | {:.0} | {:.2} of direct, {:.2} of static | {:.1} ms |\n",
        med("router"),
        med("router") / med("direct"),
        med("router") / med("static"),
        tail("router")
    );
    drop(fixed);

    // 3. Rolling updates of 4 tasks under load: Berth's router against a static configuration of the
    // tasks as they were before the update.
    scale(&app, &t.owner, &service, 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let plain_host = format!("plain.shop.{}.apps.localhost", t.slug);
    let mut failures = Vec::new();
    for (round, service, host, image) in [
        ("start-first", &service, &host, &images[1]),
        ("Swarm's default (stop-first)", &plain, &plain_host, &images[1]),
        ("start-first", &service, &host, &images[0]),
        ("Swarm's default (stop-first)", &plain, &plain_host, &images[0]),
    ] {
        let before: Vec<(String, u16)> = tasks(&app, service).await.into_iter().map(|t| (t.2, t.3)).collect();
        let fixed = StaticHaproxy::start(&before, &client);
        let limit = Duration::from_secs(120);
        let via_router = Load::paced(router_url.clone(), host, rate / 2, limit);
        let via_static = Load::paced(format!("http://{}/", fixed.listen), host, rate / 2, limit);
        let r = app.patch(&format!("/api/v1/services/{service}"), &t.owner, json!({"image": image})).await;
        assert_eq!(r.status, 202);
        let deadline = Instant::now() + Duration::from_secs(180);
        tokio::time::sleep(Duration::from_secs(1)).await;
        loop {
            let s = app.get(&format!("/api/v1/services/{service}"), &t.owner).await.body;
            let new_image = s["image_digest"].as_str().is_some_and(|d| d.starts_with(&format!("{image}@")));
            if new_image && s["update_state"] == "completed" && s["replicas_running"] == 4 {
                break;
            }
            assert!(Instant::now() < deadline, "the update did not complete: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (router_ok, router_failed) = via_router.stop().await;
        let (static_ok, static_failed) = via_static.stop().await;
        let (router_failed, static_failed) = (router_failed.len(), static_failed.len());
        failures.push((round, router_ok, router_failed, static_ok, static_failed));
    }
    println!("| rolling update of 4 tasks, {} req/s to each way in | answered | failed |", rate / 2);
    println!("|---|---|---|");
    for (round, router_ok, router_failed, static_ok, static_failed) in failures {
        println!("| {round}: through Berth's router | {router_ok} | {router_failed} |");
        println!("| {round}: through a static HAProxy of the tasks before the update | {static_ok} | {static_failed} |");
    }
    drop(router);
    real.delete(&app, &t.owner).await;
}
