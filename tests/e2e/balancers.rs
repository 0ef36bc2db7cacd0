//! Load balancers on a real Swarm through a real HAProxy: listeners (HTTP and TCP) on the router's
//! address forward to a service's tasks, follow its scaling, refuse what they cannot serve, and close
//! when removed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use berth_tests::docker_cli::{RealCluster, push_versions};
use berth_tests::{PASSWORD, TestApp, TestRouter, free_port_on, routed_config};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The answers of `n` requests through an HTTP listener.
async fn answers(port: u16, n: usize) -> BTreeSet<String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/")).send().await
            && r.status() == 200
        {
            seen.insert(r.text().await.unwrap_or_default().trim().to_owned());
        }
    }
    seen
}

/// One HTTP/1.0 exchange over a plain TCP connection to a TCP listener.
async fn over_tcp(port: u16) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_forward_to_a_service_s_tasks_and_follow_it() {
    let mut cfg = routed_config();
    cfg.console_dir = berth_tests::browser::console_dir();
    let listen = cfg.routing.router_listen;
    let app = TestApp::spawn_with_registry_and(cfg, 1 << 30).await.with_workers();
    let router = TestRouter::start(&app.db, listen).await;
    let t = app.tenant("Balanced").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();
    let real = RealCluster::create(&app, &t.owner, "lb", 1, 0).await;
    let address = app.registry.as_ref().unwrap().address.clone();
    let (images, _cleanup) = push_versions(&real.cli, &real.manager, &address, (&email, PASSWORD), (&t.slug, "web"), &["1"]);
    let compose = r#"services:
  web:
    image: ${IMAGE}
    command: ["/bin/busybox", "sh", "-c", "mkdir /www && hostname > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
    hostname: "web-{{.Task.Slot}}"
    ports: ["8080"]
    deploy:
      replicas: 2
      resources: {limits: {memory: 32M}}
"#;
    let deployed = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "shop", "cluster_id": real.id, "compose": compose, "variables": {"IMAGE": images[0]}}),
        )
        .await;
    deployed.expect(StatusCode::ACCEPTED);
    let application = deployed.id();
    let services = app.get(&format!("/api/v1/applications/{application}/services"), &t.owner).await.body;
    let service = services["items"][0]["id"].as_str().unwrap().to_owned();
    app.wait_for(&t.owner, &format!("/api/v1/services/{service}"), Duration::from_secs(120), |s| s["replicas_running"] == 2)
        .await;

    let lo = [127, 0, 0, 1].into();
    let (http_port, tcp_port) = (free_port_on(lo), free_port_on(lo));
    let listener = |port: u16, protocol: &str, target: i32| json!({"port": port, "protocol": protocol, "service_id": service, "target_port": target});

    // Mistakes are 422s at the listener's field, and nothing is stored.
    for (listeners, field) in [
        (json!([listener(80, "http", 8080)]), "listeners[0].port"),
        (json!([listener(http_port, "udp", 8080)]), "listeners[0].protocol"),
        (json!([listener(http_port, "http", 9999)]), "listeners[0].target_port"),
        (json!([listener(http_port, "http", 8080), listener(http_port, "tcp", 8080)]), "listeners[1].port"),
        (
            json!([{"port": http_port, "protocol": "http", "service_id": uuid::Uuid::now_v7(), "target_port": 8080}]),
            "listeners[0].service_id",
        ),
    ] {
        let r = app
            .post("/api/v1/load-balancers", &t.owner, json!({"name": "edge", "cluster_id": real.id, "listeners": listeners}))
            .await;
        r.expect(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["errors"][0]["field"], field, "{}", r.body);
    }
    assert_eq!(app.get("/api/v1/load-balancers", &t.owner).await.body["items"], json!([]));

    let made = app
        .post(
            "/api/v1/load-balancers",
            &t.owner,
            json!({"name": "edge", "cluster_id": real.id,
                   "listeners": [listener(http_port, "http", 8080), listener(tcp_port, "tcp", 8080)]}),
        )
        .await;
    made.expect(StatusCode::CREATED);
    assert_eq!((made.body["driver"].as_str(), made.body["address"].as_str()), (Some("local"), Some("127.0.0.1")));
    let balancer = made.id();

    // Both tasks answer through the HTTP listener, and through the TCP one.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = answers(http_port, 10).await;
        if seen == BTreeSet::from(["web-1".to_owned(), "web-2".to_owned()]) {
            break;
        }
        assert!(Instant::now() < deadline, "through the HTTP listener: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tcp = over_tcp(tcp_port).await.unwrap();
    assert!(tcp.starts_with("HTTP/1.") && tcp.contains("web-"), "{tcp}");

    // The listener follows the service: a third task serves within seconds.
    app.patch(&format!("/api/v1/services/{service}"), &t.owner, json!({"replicas": 3})).await.expect(StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers(http_port, 9).await.contains("web-3") {
        assert!(Instant::now() < deadline, "the new task does not serve through the listener");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // No other tenant can take a port in use, nor see the balancer.
    let b = app.tenant("Elsewhere").await;
    let other = app.post("/api/v1/load-balancers", &b.owner, json!({"name": "edge", "cluster_id": real.id})).await;
    other.expect(StatusCode::UNPROCESSABLE_ENTITY);
    app.get(&format!("/api/v1/load-balancers/{balancer}"), &b.owner).await.expect(StatusCode::NOT_FOUND);
    let second = app.post("/api/v1/load-balancers", &t.owner, json!({"name": "second", "cluster_id": real.id})).await;
    second.expect(StatusCode::CREATED);
    let taken = app
        .put(
            &format!("/api/v1/load-balancers/{}/listeners", second.id()),
            &t.owner,
            json!({"listeners": [listener(http_port, "tcp", 8080)]}),
        )
        .await;
    taken.expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(taken.body["detail"].as_str().unwrap_or_default().contains("taken"), "{}", taken.body);

    // Listeners are set whole: the TCP one removed closes its port; the HTTP one keeps serving.
    let set = app
        .put(
            &format!("/api/v1/load-balancers/{balancer}/listeners"),
            &t.owner,
            json!({"listeners": [listener(http_port, "http", 8080)]}),
        )
        .await;
    set.expect(StatusCode::OK);
    assert_eq!(set.body["listeners"].as_array().unwrap().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while over_tcp(tcp_port).await.is_ok() {
        assert!(Instant::now() < deadline, "the removed listener still answers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!answers(http_port, 3).await.is_empty());

    // What went through each listener reaches the API and /metrics within seconds (the routers read
    // HAProxy's counters every 5 s): more than the 20 requests sent above, kept across the PUT that
    // removed the TCP listener (whose traffic went with it).
    let path = format!("/api/v1/load-balancers/{balancer}");
    let counted = app
        .wait_for(&t.owner, &path, Duration::from_secs(20), |b| {
            b["traffic"].as_array().is_some_and(|ts| {
                ts.iter().any(|l| l["port"] == http_port && l["traffic"]["requests_total"].as_i64().unwrap_or(0) >= 20)
            })
        })
        .await;
    assert_eq!(counted["traffic"].as_array().unwrap().len(), 1, "{counted}");
    assert_eq!(counted["traffic"][0]["traffic"]["responses_5xx_total"], 0, "{counted}");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("berth_balancer_requests_total{") && l.contains(&format!("port=\"{http_port}\"")))
        .unwrap_or_else(|| panic!("no traffic line for listener {http_port} in /metrics"));
    assert!(line.contains(&format!("load_balancer=\"{balancer}\",name=\"edge\"")), "{line}");
    assert!(line.rsplit(' ').next().unwrap().parse::<i64>().unwrap() >= 20, "{line}");

    // The console: the balancers are listed; on the balancer's page a TCP listener is added from the
    // form (the target filled in from the service's port) and answers, then removed and closed.
    // What happened before anyone looked: the latest events, newest first, for the tenant only.
    let recent = app.get("/api/v1/events/recent?limit=5", &t.owner).await;
    recent.expect(StatusCode::OK);
    let ids: Vec<i64> = recent.body.as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.len() == 5 && ids.windows(2).all(|w| w[0] > w[1]), "{}", recent.text);
    assert_eq!(app.get("/api/v1/events/recent", &b.owner).await.body, json!([]));
    app.get("/api/v1/events/recent?limit=0", &t.owner).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");

    let b = berth_tests::browser::Browser::start(&app.base).await;
    b.goto("/").await;
    b.log_in(&t.owner_email, PASSWORD).await;
    // The dashboard shows them at once.
    b.wait_text("#recent-events", "ago").await;
    b.goto("/load-balancers").await;
    b.wait_text("#balancers", "second").await;
    b.goto(&format!("/load-balancers/{balancer}")).await;
    b.wait_text(&format!("#listeners tr[data-port='{http_port}']"), &format!("http://127.0.0.1:{http_port}/")).await;
    b.wait_text(&format!("#listeners tr[data-port='{http_port}']"), "shop / web").await;
    b.wait_text(&format!("#listeners tr[data-port='{http_port}'] .traffic"), "requests in all").await;
    let console_port = free_port_on(lo);
    b.fill("#listener-port", &console_port.to_string()).await;
    b.find("#listener-protocol").await.select_by_value("tcp").await.unwrap();
    b.find(&format!("#listener-service option[value='{service}']")).await;
    b.find("#listener-service").await.select_by_value(&service).await.unwrap();
    assert_eq!(b.find("#listener-target").await.prop("value").await.unwrap().as_deref(), Some("8080"));
    b.click("#add-listener-submit").await;
    b.wait_text(&format!("#listeners tr[data-port='{console_port}']"), "tcp").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while over_tcp(console_port).await.is_err() {
        assert!(Instant::now() < deadline, "the listener added in the console does not answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.survey("load-balancer").await;
    b.click(&format!("#listeners tr[data-port='{console_port}'] .remove")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.has(&format!("#listeners tr[data-port='{console_port}']")).await || over_tcp(console_port).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener removed in the console is still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.goto("/load-balancers").await;
    b.wait_text("#balancers", "edge").await;
    b.survey("load-balancers").await;
    drop(b);

    app.delete(&format!("/api/v1/load-balancers/{balancer}"), &t.owner).await.expect(StatusCode::NO_CONTENT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(http_port, 1).await.is_empty() {
        assert!(Instant::now() < deadline, "the deleted balancer still answers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(router);
    real.delete(&app, &t.owner).await;
}
