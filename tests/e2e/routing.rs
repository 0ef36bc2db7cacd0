//! Routing on a real Swarm through a real HAProxy: host-based routes to a service's tasks on two nodes,
//! tasks entering and leaving rotation as the service scales (measured), tasks killed under steady
//! load, and routes that are refused before they reach HAProxy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use berth_tests::docker_cli::{RealCluster, push_versions};
use berth_tests::load::Load;
use berth_tests::{PASSWORD, TestApp, TestRouter, routed_config};
use reqwest::StatusCode;
use serde_json::json;

/// A request through the router for `host`: (status, body). Connects to the router's IP; the name
/// travels only in the Host header (nothing is looked up).
async fn through(http: &reqwest::Client, router: &TestRouter, host: &str) -> (u16, String) {
    through_path(http, router, host, "/").await
}

async fn through_path(http: &reqwest::Client, router: &TestRouter, host: &str, path: &str) -> (u16, String) {
    match http.get(format!("http://{}{path}", router.listen)).header("host", host).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default().trim().to_owned()),
        Err(e) => (0, e.to_string()),
    }
}

/// The running tasks' slots the database shows for a service, by swarm task id.
async fn running_slots(app: &TestApp, service: &str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, Option<i32>)> = sqlx::query_as(
        "SELECT swarm_task_id, slot FROM containers WHERE service_id = $1::uuid AND state = 'running' AND desired_state = 'running'",
    )
    .bind(service)
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.into_iter().map(|(t, s)| (t, i64::from(s.unwrap_or(0)))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_routed_by_host_to_tasks_on_every_node_and_follow_scaling() {
    let mut cfg = routed_config();
    cfg.console_dir = berth_tests::browser::console_dir();
    let listen = cfg.routing.router_listen;
    let app = TestApp::spawn_with_registry_and(cfg, 1 << 30).await.with_workers();
    let router = TestRouter::start(&app.db, listen).await;
    let address = app.registry.as_ref().unwrap().address.clone();
    let t = app.tenant("Routed").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();
    let real = RealCluster::create(&app, &t.owner, "edge", 1, 1).await;
    let (manager, cli) = (real.manager.clone(), &real.cli);
    let (images, _cleanup) = push_versions(cli, &manager, &address, (&email, PASSWORD), (&t.slug, "web"), &["1", "2"]);
    let image = images[0].clone();

    // `ports: ["8080"]` is the short syntax (Swarm's routing mesh, absent here): Berth adds the
    // host-mode port its router reaches each task at.
    let compose = r#"services:
  web:
    image: ${IMAGE}
    command: ["/bin/busybox", "sh", "-c", "mkdir /www && hostname > /www/index.html && cp /marker /www/version && exec /bin/busybox httpd -f -p 8080 -h /www"]
    hostname: "web-{{.Task.Slot}}"
    ports: ["8080"]
    deploy:
      replicas: 2
      update_config: {parallelism: 1, order: start-first, monitor: 1s, delay: 3s}
      resources: {limits: {memory: 32M}}
"#;
    let deployed = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "shop", "cluster_id": real.id, "compose": compose, "variables": {"IMAGE": image}}),
        )
        .await;
    deployed.expect(StatusCode::ACCEPTED);
    let application = deployed.id();
    let host = format!("web.shop.{}.apps.localhost", t.slug);

    // The route exists as soon as the application does, with its URL on the router.
    let routes = app.get(&format!("/api/v1/routes?application_id={application}"), &t.owner).await;
    routes.expect(StatusCode::OK);
    let route = routes.body["items"][0].clone();
    assert_eq!(routes.body["items"].as_array().unwrap().len(), 1, "{}", routes.body);
    assert_eq!(route["domain"], host.as_str());
    assert_eq!(route["port"], 8080);
    assert_eq!(route["source"], "default");
    assert_eq!(route["verified"], true);
    assert_eq!(route["url"], format!("http://{host}:{}/", listen.port()));
    let service = route["service_id"].as_str().unwrap().to_owned();
    app.wait_for(&t.owner, &format!("/api/v1/routes/{}", route["id"].as_str().unwrap()), Duration::from_secs(90), |r| {
        r["endpoints"] == 2
    })
    .await;

    // Both replicas, one on each node, answer through the router.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let containers = app.get(&format!("/api/v1/services/{service}/containers"), &t.owner).await.body;
    let nodes: BTreeSet<&str> = containers["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "running")
        .map(|c| c["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "the two tasks run on both nodes: {containers}");
    // Each running task has the one host port Berth added, listed once (the engine reports it per
    // address family it binds).
    for c in containers["items"].as_array().unwrap().iter().filter(|c| c["state"] == "running") {
        let ports = c["host_ports"].as_array().unwrap();
        assert_eq!((ports.len(), &ports[0]["target"]), (1, &json!(8080)), "{c}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        let (status, body) = through(&http, &router, &host).await;
        assert!(Instant::now() < deadline, "through the router only {seen:?} answered (last: {status} {body})");
        if status == 200 {
            seen.insert(body);
        }
    }
    assert_eq!(seen, BTreeSet::from(["web-1".to_owned(), "web-2".to_owned()]));
    let mut counts = BTreeMap::<String, u32>::new();
    for _ in 0..40 {
        let (status, body) = through(&http, &router, &host).await;
        assert_eq!(status, 200, "{body}");
        *counts.entry(body).or_default() += 1;
    }
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [20, 20], "round robin over both tasks: {counts:?}");

    // A route table HAProxy would refuse (a path the API never lets through, written straight into the
    // database) never replaces the working one: the router keeps routing and tells operators why it
    // is failing; once the route is right again it serves the newest table again.
    let routers = |want: &'static str| {
        let app = &app;
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let r = app.get("/api/v1/admin/routers", &app.admin).await;
                r.expect(StatusCode::OK);
                let all = r.body.as_array().unwrap().clone();
                if all.len() == 1 && all[0]["state"] == want {
                    return all[0].clone();
                }
                assert!(Instant::now() < deadline, "the router is not {want}: {}", r.body);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(routers("serving").await["error"], json!(null));
    let route_id: uuid::Uuid = route["id"].as_str().unwrap().parse().unwrap();
    let set_path = |path: &'static str| {
        let db = app.db.clone();
        async move {
            sqlx::query("UPDATE routes SET path_prefix = $2 WHERE id = $1").bind(route_id).bind(path).execute(&db).await.unwrap();
        }
    };
    set_path("/x }").await;
    let failing = routers("failing").await;
    assert!(failing["error"].as_str().unwrap().contains("HAProxy refuses the configuration"), "{failing}");
    let (status, body) = through(&http, &router, &host).await;
    assert_eq!(status, 200, "the router still serves its last good table: {body}");
    set_path("/").await;
    assert_eq!(routers("serving").await["error"], json!(null));
    // The host is matched without its port and case-insensitively; other hosts have no route.
    let (status, _) = through(&http, &router, &format!("{}:{}", host.to_uppercase(), listen.port())).await;
    assert_eq!(status, 200);
    let (status, body) = through(&http, &router, &format!("nothing.shop.{}.apps.localhost", t.slug)).await;
    assert_eq!((status, body.as_str()), (404, "No route for this host."));

    // The console's application page shows where the service answers and how many tasks serve it.
    let b = berth_tests::browser::Browser::start(&app.base).await;
    b.goto(&format!("/applications/{application}")).await;
    b.log_in(&t.owner_email, PASSWORD).await;
    b.wait_text(&format!("tr[data-route='{host}'] .serving"), "2 tasks").await;
    let link = b.find(&format!("tr[data-route='{host}'] a[target='_blank']")).await;
    assert_eq!(link.attr("href").await.unwrap().as_deref(), Some(format!("http://{host}:{}/", listen.port()).as_str()));
    b.survey("application-routes").await;

    // A custom domain through the API, for one path: stored at once, routed once the domain is granted.
    let custom = app
        .post(
            "/api/v1/routes",
            &t.owner,
            json!({"service_id": service, "port": 8080, "domain": "www.shop.test", "path_prefix": "/version"}),
        )
        .await;
    custom.expect(StatusCode::CREATED);
    assert_eq!(custom.body["verified"], false);
    assert_eq!(through_path(&http, &router, "www.shop.test", "/version").await.0, 404, "an unproved domain is not routed");
    let grant = app.post(&format!("/api/v1/admin/tenants/{}/domains", t.id), &app.admin, json!({"domain": "shop.test"})).await;
    grant.expect(StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(5);
    while through_path(&http, &router, "www.shop.test", "/version").await != (200, "v1".to_owned()) {
        assert!(Instant::now() < deadline, "the granted domain is not routed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(through_path(&http, &router, "www.shop.test", "/version/").await.0, 404, "httpd's own 404 under the prefix");
    assert_eq!(
        through_path(&http, &router, "www.shop.test", "/versions").await.1,
        "No route for this host.",
        "a prefix is a path segment"
    );
    assert_eq!(through_path(&http, &router, "www.shop.test", "/").await.1, "No route for this host.");

    // Stickiness (a reload, since HAProxy 2.6 adds no cookie to live servers): a client keeps its task.
    let sticky = app.patch(&format!("/api/v1/routes/{}", route["id"].as_str().unwrap()), &t.owner, json!({"sticky": true})).await;
    sticky.expect(StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    let cookie = loop {
        let r = http.get(format!("http://{listen}/")).header("host", &host).send().await.unwrap();
        if let Some(c) = r.headers().get("set-cookie") {
            break c.to_str().unwrap().split(';').next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no stickiness cookie");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(cookie.starts_with("BERTH_STICKY=t_"), "{cookie}");
    let mut stuck = BTreeSet::new();
    for _ in 0..10 {
        let r = http.get(format!("http://{listen}/")).header("host", &host).header("cookie", &cookie).send().await.unwrap();
        stuck.insert(r.text().await.unwrap());
    }
    assert_eq!(stuck.len(), 1, "a sticky client went to several tasks: {stuck:?}");
    let plain = app.patch(&format!("/api/v1/routes/{}", route["id"].as_str().unwrap()), &t.owner, json!({"sticky": false})).await;
    plain.expect(StatusCode::OK);
    // The console shows the custom route, waiting for nothing now that the domain is granted.
    b.goto(&format!("/applications/{application}")).await;
    b.wait_text("tr[data-route='www.shop.test']", "www.shop.test/version").await;
    b.wait_text("tr[data-route='www.shop.test']", "routed").await;
    // The service page: its routes with their settings, and a custom domain added from the form.
    b.goto(&format!("/services/{service}")).await;
    b.wait_text(&format!("#service-routes tr[data-route='{host}']"), "2 tasks").await;
    b.wait_text("#service-update-order", "start-first").await;
    b.fill("#route-domain", "api.shop.test").await;
    b.click("#add-route-submit").await;
    b.wait_text("#service-routes tr[data-route='api.shop.test']", "api.shop.test").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while through(&http, &router, "api.shop.test").await.0 != 200 {
        assert!(Instant::now() < deadline, "the route added in the console is not served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.survey("service-routes").await;
    drop(b);

    // Scaling: each new task serves through the router soon after the engine reports it running,
    // and requests keep succeeding while tasks come and go.
    let mut delays = Vec::new();
    let mut end_to_end = Vec::new();
    for (trial, replicas) in [4, 2, 4, 2, 4].into_iter().enumerate() {
        let before = running_slots(&app, &service).await;
        let r = app.patch(&format!("/api/v1/services/{service}"), &t.owner, json!({"replicas": replicas})).await;
        r.expect(StatusCode::ACCEPTED);
        let mut running_at: BTreeMap<i64, Instant> = BTreeMap::new();
        let mut served_at: BTreeMap<String, Instant> = BTreeMap::new();
        let mut served_wall: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = running_slots(&app, &service).await;
            for slot in now.values() {
                if !before.values().any(|s| s == slot) {
                    running_at.entry(*slot).or_insert_with(Instant::now);
                }
            }
            let (status, body) = through(&http, &router, &host).await;
            assert_eq!(status, 200, "trial {trial}: a request failed while scaling to {replicas}: {body}");
            served_wall.entry(body.clone()).or_insert_with(chrono::Utc::now);
            served_at.entry(body).or_insert_with(Instant::now);
            let grown = replicas > before.len() && running_at.len() == replicas - before.len();
            let all_served = running_at.keys().all(|slot| served_at.contains_key(&format!("web-{slot}")));
            let shrunk = replicas < before.len() && now.len() == replicas;
            if (grown && all_served) || shrunk {
                break;
            }
            assert!(Instant::now() < deadline, "trial {trial}: scaling to {replicas} did not settle: {now:?} {served_at:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (slot, at) in &running_at {
            delays.push(served_at[&format!("web-{slot}")].saturating_duration_since(*at));
            // End to end: from the engine's own timestamp of the task's `running` state.
            let started: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
                "SELECT started_at FROM containers WHERE service_id = $1::uuid AND slot = $2 AND state = 'running'",
            )
            .bind(&service)
            .bind(*slot as i32)
            .fetch_one(&app.db)
            .await
            .unwrap();
            let since_engine = served_wall[&format!("web-{slot}")] - started.expect("a running task has its start time");
            end_to_end.push(since_engine.to_std().unwrap_or_default());
        }
        if replicas < before.len() {
            // Removed tasks leave the rotation: only the remaining ones answer.
            let remaining: BTreeSet<String> = running_slots(&app, &service).await.values().map(|s| format!("web-{s}")).collect();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut answered = BTreeSet::new();
                for _ in 0..8 {
                    let (status, body) = through(&http, &router, &host).await;
                    assert_eq!(status, 200, "{body}");
                    answered.insert(body);
                }
                if answered.is_subset(&remaining) {
                    break;
                }
                assert!(Instant::now() < deadline, "removed tasks still answer: {answered:?} vs {remaining:?}");
            }
        }
    }
    delays.sort();
    end_to_end.sort();
    let p95 = |v: &[Duration]| v[(v.len() * 95).div_ceil(100) - 1];
    println!("Berth sees a new task running → it serves through the router: {delays:?} (p95 {:?})", p95(&delays));
    println!("the engine reports it running → it serves: {end_to_end:?} (p95 {:?})", p95(&end_to_end));
    // The router's part is asserted; the whole path also holds Swarm's own reporting and the
    // observer's pass (measured in a release build by `make bench-routing`).
    assert!(p95(&delays) <= Duration::from_secs(1), "new tasks took too long to serve: {delays:?}");

    // A rolling image update under steady load (200 requests a second, for at least 20 s): new tasks
    // take traffic once running, old ones leave the rotation as Swarm stops them, and no request fails.
    let started = Instant::now();
    let load = Load::paced(format!("http://{listen}/"), &host, 200, Duration::from_secs(150));
    let r = app.patch(&format!("/api/v1/services/{service}"), &t.owner, json!({"image": images[1]})).await;
    r.expect(StatusCode::ACCEPTED);
    app.wait_for(&t.owner, &format!("/api/v1/services/{service}"), Duration::from_secs(120), |s| {
        s["update_state"] == "completed" && s["status"] == "running" && s["replicas_running"] == 4
    })
    .await;
    let updated = started.elapsed();
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(updated)).await;
    let (ok, failed) = load.stop().await;
    let held = started.elapsed();
    println!(
        "200 req/s through a rolling update of 4 tasks ({updated:.1?}), held {held:.1?}: {ok} requests answered, {} failed",
        failed.len()
    );
    assert!(f64::from(ok) >= 200.0 * held.as_secs_f64() * 0.9, "the load fell short of 200 req/s: {ok} in {held:?}");
    assert!(failed.is_empty(), "client-visible failures during the rolling update: {failed:?}");
    for _ in 0..8 {
        assert_eq!(through_path(&http, &router, &host, "/version").await, (200, "v2".to_owned()));
    }
    // The router's statistics reach the API and /metrics within a few seconds: every request the load
    // sent is counted (4xx and 5xx included), none of them a 5xx.
    let route_path = format!("/api/v1/routes/{}", route["id"].as_str().unwrap());
    let counted = app
        .wait_for(&t.owner, &route_path, Duration::from_secs(20), |r| {
            r["traffic"]["requests_total"].as_i64().unwrap_or(0) >= i64::from(ok)
        })
        .await;
    assert_eq!(counted["traffic"]["responses_5xx_total"], 0, "{counted}");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("berth_route_requests_total{") && l.contains(&format!("domain=\"{host}\"")))
        .unwrap_or_else(|| panic!("no traffic line for {host} in /metrics"));
    let total: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(total >= i64::from(ok), "{line}");

    // A second router, for this cluster only, builds the same table from Berth and serves at once. It
    // has a name of its own (BERTH_ROUTER_NAME), as two machines with one host name behind address
    // translation would need.
    let second_listen = std::net::SocketAddr::new([127, 0, 0, 1].into(), berth_tests::free_port_on([127, 0, 0, 1].into()));
    let scope = berth::routing::table::Scope::Clusters(vec![real.id]);
    let second = TestRouter::start_as(&app.db, second_listen, None, scope, Some("edge-2")).await;
    let everyone: BTreeSet<String> = running_slots(&app, &service).await.values().map(|s| format!("web-{s}")).collect();
    let mut seen = BTreeSet::new();
    for _ in 0..16 {
        let (status, body) = through(&http, &second, &host).await;
        assert_eq!(status, 200, "{body}");
        seen.insert(body);
    }
    assert_eq!(seen, everyone, "the second router balances over every task at once");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let routers = app.get("/api/v1/admin/routers", &app.admin).await.body;
        let named = routers.as_array().unwrap().iter().find(|r| r["name"] == "edge-2").map(|r| r["state"].clone());
        if named == Some(json!("serving")) {
            break;
        }
        assert!(Instant::now() < deadline, "the second router is not listed as edge-2, serving: {routers}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The first router stops; under steady load through the second, a task's container is killed and
    // then a whole node: no request fails (a dead task's requests are retried on another one).
    drop(router);
    // Operators see the first router stopped (asked to), not gone, beside the second serving.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let routers = app.get("/api/v1/admin/routers", &app.admin).await.body;
        let states: BTreeMap<String, String> = routers
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let name = r["name"].as_str().unwrap();
                let name = if name.ends_with(&format!("@{listen}")) { "first" } else { name };
                (name.to_owned(), r["state"].as_str().unwrap().to_owned())
            })
            .collect();
        if states == BTreeMap::from([("first".into(), "stopped".into()), ("edge-2".into(), "serving".into())]) {
            break;
        }
        assert!(Instant::now() < deadline, "the first router is not listed as stopped: {routers}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nodes = app.get(&format!("/api/v1/clusters/{}/nodes", real.id), &t.owner).await.body;
    let node_address = |id: &str| {
        nodes["items"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap()["address"].as_str().unwrap().to_owned()
    };
    // The tasks serving now: once the update's last outgoing task is seen gone, four remain.
    let deadline = Instant::now() + Duration::from_secs(15);
    let running: Vec<serde_json::Value> = loop {
        let containers = app.get(&format!("/api/v1/services/{service}/containers"), &t.owner).await.body;
        let running: Vec<serde_json::Value> = containers["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == "running" && c["desired_state"] == "running")
            .cloned()
            .collect();
        let all_running = containers["items"].as_array().unwrap().iter().filter(|c| c["state"] == "running").count();
        if running.len() == 4 && all_running == 4 {
            break running;
        }
        assert!(Instant::now() < deadline, "the service did not settle on 4 tasks: {containers}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The task killed runs on the worker whose node is killed next, so the manager's tasks serve
    // throughout. Killing one on the manager instead could leave none: a rolling update may end with
    // one task on the manager, and Swarm restarts a killed task only after its 5 s restart delay.
    let on_manager = running.iter().filter(|c| node_address(c["node_id"].as_str().unwrap()) == manager).count();
    let on_worker =
        running.iter().find(|c| node_address(c["node_id"].as_str().unwrap()) != manager).expect("a task on the worker");
    assert!(on_manager > 0, "every task runs on the worker, so killing it leaves none: {running:?}");
    println!("tasks before the kills: {on_manager} on the manager, {} on the worker", running.len() - on_manager);
    let worker = nodes["items"].as_array().unwrap().iter().find(|n| n["role"] == "worker").unwrap().clone();
    let worker_address = worker["address"].as_str().unwrap().to_owned();
    let load = Load::start(&second, &host, 4, Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cli.ok(&worker_address, &["kill", on_worker["container_id"].as_str().unwrap()]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let netns = format!("berth-{}-{}", &real.id.simple().to_string()[24..], worker_address.rsplit('.').next().unwrap());
    let pid = berth_tests::node_dockerd(&netns).expect("the worker's dockerd runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ok, failed) = load.stop().await;
    println!("steady load through a killed task and a killed node: {ok} requests answered, {} failed", failed.len());
    assert!(ok > 200, "too little load to prove anything: {ok}");
    assert!(failed.is_empty(), "client-visible failures: {failed:?}");
    drop(second);

    // Deleting the application removes its routes; the router stops answering for the host.
    let router = TestRouter::start(&app.db, listen).await;
    let gone = app.delete(&format!("/api/v1/applications/{application}"), &t.owner).await;
    gone.expect(StatusCode::ACCEPTED);
    let job = app.wait_job(&t.owner, gone.body["job_id"].as_str().unwrap(), Duration::from_secs(90)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let routes = app.get("/api/v1/routes", &t.owner).await;
    assert_eq!(routes.body["items"], json!([]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while through(&http, &router, &host).await.0 != 404 {
        assert!(Instant::now() < deadline, "the deleted application's host is still routed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    real.delete(&app, &t.owner).await;
}

#[tokio::test]
async fn malformed_and_taken_routes_are_refused_before_anything_is_stored() {
    let app = TestApp::spawn().await;
    let a = app.tenant("Alpha").await;
    let b = app.tenant("Beta").await;
    let cluster_a = crate::fixtures::cluster(&app, &a.owner).await;
    let cluster_b = crate::fixtures::cluster(&app, &b.owner).await;
    let with_label =
        |value: &str| format!("services:\n  web:\n    image: busybox\n    labels:\n      berth.routing.port_8080: '{value}'\n");
    let before = app.row_counts().await;
    for (value, says) in [
        ("not a domain", "not a domain name"),
        ("10.0.0.1", "an IP address"),
        ("shop.example.com/a?b", "path prefix"),
        ("x.apps.localhost", "given by Berth"),
    ] {
        let r = app
            .post(
                "/api/v1/applications",
                &a.owner,
                json!({"name": "shop", "cluster_id": cluster_a, "compose": with_label(value)}),
            )
            .await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
        assert_eq!(r.body["errors"][0]["field"], "compose.services.web.labels.berth.routing.port_8080", "{}", r.text);
        assert!(r.body["errors"][0]["message"].as_str().unwrap().contains(says), "{value}: {}", r.text);
    }
    let port = app
        .post(
            "/api/v1/applications",
            &a.owner,
            json!({"name": "shop", "cluster_id": cluster_a, "compose": "services:\n  web:\n    image: busybox\n    labels: {berth.routing.port_http: a.example.com}\n"}),
        )
        .await;
    port.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
    assert!(port.text.contains("is not a port"), "{}", port.text);
    assert_eq!(app.row_counts().await, before, "a refused route stored something");

    // A custom domain is one tenant's: the second tenant to declare it is refused, and its
    // application is not created. The first tenant's route waits for proof before it is routed.
    let ok = app
        .post(
            "/api/v1/applications",
            &a.owner,
            json!({"name": "shop", "cluster_id": cluster_a, "compose": with_label("www.example.com/api")}),
        )
        .await;
    ok.expect(StatusCode::ACCEPTED);
    let routes = app.get(&format!("/api/v1/routes?application_id={}", ok.id()), &a.owner).await.body;
    let custom = routes["items"].as_array().unwrap().iter().find(|r| r["domain"] == "www.example.com").unwrap().clone();
    assert_eq!(
        (custom["path_prefix"].as_str(), custom["verified"].as_bool(), custom["source"].as_str()),
        (Some("/api"), Some(false), Some("compose"))
    );
    assert_eq!(routes["items"].as_array().unwrap().len(), 2, "the default domain and the label's: {routes}");
    let before = app.row_counts().await;
    let taken = app
        .post(
            "/api/v1/applications",
            &b.owner,
            json!({"name": "copy", "cluster_id": cluster_b, "compose": with_label("WWW.example.com/api/")}),
        )
        .await;
    taken.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(taken.body["errors"][0]["field"], "compose.services.web");
    assert!(taken.text.contains("`www.example.com/api` is already routed"), "{}", taken.text);
    assert_eq!(app.row_counts().await, before);
    // B sees none of A's routes, and filters by domain find nothing of A's.
    let theirs = app.get("/api/v1/routes?domain=www.example.com", &b.owner).await;
    assert_eq!(theirs.body["items"], json!([]));

    // A platform admin grants A the domain: A's route under it is routed from then on. The domain and
    // names under it are A's alone.
    let route = format!("/api/v1/routes/{}", custom["id"].as_str().unwrap());
    let grant = app.post(&format!("/api/v1/admin/tenants/{}/domains", a.id), &app.admin, json!({"domain": "Example.com"})).await;
    grant.expect(StatusCode::CREATED);
    assert_eq!(grant.body["domain"], "example.com");
    assert_eq!(app.get(&route, &a.owner).await.body["verified"], true);
    assert_eq!(app.get("/api/v1/domains", &a.owner).await.body[0]["domain"], "example.com");
    assert_eq!(app.get("/api/v1/domains", &b.owner).await.body, json!([]));
    let clash =
        app.post(&format!("/api/v1/admin/tenants/{}/domains", b.id), &app.admin, json!({"domain": "shop.example.com"})).await;
    clash.problem(StatusCode::CONFLICT, "domain-granted");
    let mine = app
        .post(
            "/api/v1/applications",
            &b.owner,
            json!({"name": "mine", "cluster_id": cluster_b, "compose": "services:\n  web:\n    image: busybox\n    ports: [{target: 8080, mode: host}]\n"}),
        )
        .await;
    mine.expect(StatusCode::ACCEPTED);
    let b_service =
        app.get(&format!("/api/v1/applications/{}/services", mine.id()), &b.owner).await.body["items"][0]["id"].clone();
    let before = app.row_counts().await;
    let squat =
        app.post("/api/v1/routes", &b.owner, json!({"service_id": b_service, "port": 8080, "domain": "api.example.com"})).await;
    squat.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert!(squat.text.contains("belongs to another tenant"), "{}", squat.text);
    let closed =
        app.post("/api/v1/routes", &b.owner, json!({"service_id": b_service, "port": 9000, "domain": "b.example.net"})).await;
    closed.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(closed.body["errors"][0]["field"], "port");
    assert!(closed.text.contains("does not expose port 9000 (it exposes: 8080)"), "{}", closed.text);
    for (body, field) in [
        (json!({"service_id": b_service, "port": 8080, "domain": "b.example.net", "balance": "fastest"}), "balance"),
        (json!({"service_id": b_service, "port": 8080, "domain": "b.example.net", "timeout_secs": 0}), "timeout_secs"),
        (json!({"service_id": b_service, "port": 8080, "domain": "b.example.net", "path_prefix": "api"}), "path_prefix"),
        (json!({"service_id": b_service, "port": 8080, "domain": "b.apps.localhost"}), "domain"),
    ] {
        let r = app.post("/api/v1/routes", &b.owner, body).await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(r.body["errors"][0]["field"], field, "{}", r.text);
    }
    assert_eq!(app.row_counts().await, before);

    // Revoking the grant stops A's route being routed.
    let revoked = app.delete(&format!("/api/v1/admin/tenants/{}/domains/example.com", a.id), &app.admin).await;
    revoked.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get(&route, &a.owner).await.body["verified"], false);
}

/// A configuration HAProxy would refuse never replaces the one it runs: the router's checked write
/// leaves the files as they were.
#[tokio::test]
async fn a_configuration_haproxy_refuses_never_replaces_a_working_one() {
    use berth::routing::table::{Backend, Balance, Table};
    let dir = berth_tests::temp_data_dir("berth-router-check");
    let setup = berth::routing::haproxy::Setup {
        bin: "haproxy".into(),
        dir: dir.clone(),
        listen: "127.0.0.1:18999".parse().unwrap(),
        tls_listen: None,
        name: None,
    };
    let backend = |domain: &str| Backend {
        route: uuid::Uuid::now_v7(),
        domain: domain.into(),
        path_prefix: "/".into(),
        balance: Balance::RoundRobin,
        sticky: false,
        timeout_secs: 60,
        max_body_bytes: None,
        https_redirect: false,
        probe_path: None,
        servers: Default::default(),
    };
    let good = Table { backends: [backend("a.example.com")].into_iter().map(|b| (b.route, b)).collect(), ..Default::default() };
    setup.write_checked(&good).await.unwrap();
    let written = std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap();
    // A path with a brace would break HAProxy's ACL syntax (the API never lets one through).
    let mut bad = good.clone();
    let mut b = backend("b.example.com");
    b.path_prefix = "/x }".into();
    bad.backends.insert(b.route, b);
    let err = setup.write_checked(&bad).await.unwrap_err();
    assert!(format!("{err:#}").contains("HAProxy refuses the configuration: [ALERT]"), "the refusal says why: {err:#}");
    assert_eq!(std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap(), written);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload hands the listeners to a new worker; the old one must not close a client's idle keep-alive
/// connection under a request it is sending (by default HAProxy 2.6 closes idle connections at once on
/// a soft stop, and a client that reuses one sees its request fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_fail_no_request_of_a_keep_alive_client() {
    use berth::routing::table::Table;
    let dir = berth_tests::temp_data_dir("berth-router-reload");
    let listen: std::net::SocketAddr = format!("127.0.0.1:{}", berth_tests::free_port_on([127, 0, 0, 1].into())).parse().unwrap();
    let setup = berth::routing::haproxy::Setup { bin: "haproxy".into(), dir: dir.clone(), listen, tls_listen: None, name: None };
    let table = Table::default();
    let mut haproxy = berth::routing::haproxy::Haproxy::start(&setup, &table).await.unwrap();
    // One connection, reused for every request, as a browser or an upstream proxy would.
    let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    let client = tokio::spawn(async move {
        let (mut answered, mut failed) = (0, Vec::new());
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            match http.get(format!("http://{listen}/")).header("host", "nothing.example").send().await {
                Ok(r) if r.status() == 404 => answered += 1,
                Ok(r) => failed.push(format!("status {}", r.status())),
                Err(e) => failed.push(format!("{e:?}")),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (answered, failed)
    });
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        haproxy.reload(&table).await.unwrap();
    }
    let (answered, failed) = client.await.unwrap();
    haproxy.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(answered > 100, "the client was answered {answered} times");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across 15 reloads: {:?}",
        failed.len(),
        answered + failed.len(),
        &failed[..failed.len().min(3)]
    );
}

/// A rolling update `start-first` (Berth's default for a routed service): each old task leaves the
/// rotation as soon as its replacement is scheduled, so the requests it serves finish before Swarm
/// stops it. Slow POSTs, which no proxy may
/// retry on another task, run through the whole update: none fails (draining only once Swarm decides
/// to stop a task, as before, lost 3 to 6 of about 170 in this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_drains_each_replaced_task_before_swarm_stops_it() {
    let cfg = routed_config();
    let listen = cfg.routing.router_listen;
    let app = TestApp::spawn_with_registry_and(cfg, 1 << 30).await.with_workers();
    let _router = TestRouter::start(&app.db, listen).await;
    let address = app.registry.as_ref().unwrap().address.clone();
    let t = app.tenant("Drained").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();
    let real = RealCluster::create(&app, &t.owner, "drain", 1, 0).await;
    let (images, _cleanup) =
        push_versions(&real.cli, &real.manager, &address, (&email, PASSWORD), (&t.slug, "slow"), &["1", "2"]);
    // Each answer takes half a second (a CGI script) and ends with the version's marker. Swarm cuts a
    // task's connections the moment it decides to stop it, before any stop signal: only a task no
    // longer sent requests by then has none to lose.
    let compose = r#"services:
  api:
    image: ${IMAGE}
    command: ["/bin/busybox", "sh", "-c", "hostname > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
    ports: ["8080"]
    configs:
      - {source: slow, target: /www/cgi-bin/slow, mode: 0555}
    deploy:
      replicas: 2
      # No order: Berth rolls a routed service start-first unless told otherwise.
      update_config: {parallelism: 1, delay: 1s}
      resources: {limits: {memory: 32M}}
  ledger:
    image: ${IMAGE}
    command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/data"]
    ports: ["8080"]
    volumes: ["ledger:/data"]
    deploy:
      resources: {limits: {memory: 32M}}
configs:
  slow: {file: ./slow.sh}
volumes:
  ledger: {}
"#;
    let script = "#!/bin/busybox sh\n/bin/busybox cat > /dev/null\n/bin/busybox sleep 0.5\necho 'Content-Type: text/plain'\necho\n/bin/busybox cat /marker\n";
    let deployed = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "orders", "cluster_id": real.id, "compose": compose, "files": {"slow.sh": script},
                   "variables": {"IMAGE": images[0]}}),
        )
        .await;
    deployed.expect(StatusCode::ACCEPTED);
    let application = deployed.id();
    let host = format!("api.orders.{}.apps.localhost", t.slug);
    let routes = app.get(&format!("/api/v1/routes?application_id={application}"), &t.owner).await.body;
    let api = routes["items"].as_array().unwrap().iter().find(|r| r["domain"] == host.as_str()).expect("the api's route");
    let (route, service) = (api["id"].as_str().unwrap().to_owned(), api["service_id"].as_str().unwrap().to_owned());
    app.wait_for(&t.owner, &format!("/api/v1/routes/{route}"), Duration::from_secs(90), |r| r["endpoints"] == 2).await;
    // The engine got the default; a service keeping data in a volume kept Swarm's (stop-first), since
    // two copies of it must not share the volume.
    let orders = |service: &str| {
        real.cli.ok(
            &real.manager,
            &["service", "inspect", "--format", "{{.Spec.UpdateConfig.Order}} {{.Spec.RollbackConfig.Order}}", service],
        )
    };
    assert_eq!(orders("orders_api").trim(), "start-first start-first");
    assert_eq!(orders("orders_ledger").trim(), "stop-first stop-first", "Swarm's default, which it spells out");
    // The API says which order each got, as observed on the engine.
    let services = app.get(&format!("/api/v1/applications/{application}/services"), &t.owner).await.body;
    let observed: BTreeMap<String, serde_json::Value> = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["update_order"].clone()))
        .collect();
    assert_eq!(observed, BTreeMap::from([("api".into(), json!("start-first")), ("ledger".into(), json!("stop-first"))]));

    // Six clients, each posting one order after another, through the whole update.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (stop, host) = (stop.clone(), host.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                let (mut answers, mut failed) = (Vec::new(), Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = http.post(format!("http://{listen}/cgi-bin/slow")).header("host", &host).body("one order");
                    match sent.send().await {
                        Ok(r) if r.status() == 200 => answers.push(r.text().await.unwrap_or_default()),
                        Ok(r) => failed.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default().trim())),
                        Err(e) => failed.push(format!("{e:?}")),
                    }
                }
                (answers, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = app.patch(&format!("/api/v1/services/{service}"), &t.owner, json!({"image": images[1]})).await;
    r.expect(StatusCode::ACCEPTED);
    app.wait_for(&t.owner, &format!("/api/v1/services/{service}"), Duration::from_secs(120), |s| {
        s["update_state"] == "completed" && s["replicas_running"] == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut answers, mut failed) = (Vec::new(), Vec::new());
    for client in clients {
        let (a, f) = client.await.unwrap();
        answers.extend(a);
        failed.extend(f);
    }
    println!("slow POSTs through a default (start-first) update of 2 tasks: {} answered, {} failed", answers.len(), failed.len());
    assert!(failed.is_empty(), "orders lost during the update: {failed:?}");
    assert!(answers.iter().any(|a| a.trim() == "v1") && answers.iter().any(|a| a.trim() == "v2"), "{answers:?}");
    assert!(answers.len() >= 60, "too few orders to prove anything: {}", answers.len());

    let gone = app.delete(&format!("/api/v1/applications/{application}"), &t.owner).await;
    app.wait_job(&t.owner, gone.body["job_id"].as_str().unwrap(), Duration::from_secs(90)).await;
    real.delete(&app, &t.owner).await;
}
