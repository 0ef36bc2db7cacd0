//! Canary and blue/green releases on a real Swarm through a real HAProxy: the new revision's share of
//! requests follows the release's weight, promote moves every request to it under load without a
//! failed request, abort takes it away and removes its services from the engine, and a revision that
//! answers 500s or fails its health checks is aborted on its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_tests::docker_cli::{RealCluster, push_versions};
use berth_tests::load::Load;
use berth_tests::{PASSWORD, TestApp, TestRouter, routed_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The web service answers with its image's marker (`v1`, `v2`), or with a 500 from a CGI script
/// when `BROKEN` is set.
const COMPOSE: &str = r#"services:
  web:
    image: ${IMAGE}
    command: ["/bin/busybox", "sh", "-c", "mkdir -p /www/cgi-bin && if [ -n \"$$BROKEN\" ]; then printf '#!/bin/busybox sh\\necho Status: 500\\necho\\necho broken\\n' > /www/cgi-bin/index.cgi && chmod +x /www/cgi-bin/index.cgi; else cp /marker /www/index.html; fi && exec /bin/busybox httpd -f -p 8080 -h /www"]
    environment:
      BROKEN: ${BROKEN:-}
    ports: ["8080"]
    deploy:
      replicas: 2
      update_config: {parallelism: 1, order: start-first, monitor: 1s}
      resources: {limits: {memory: 32M}}
"#;

/// Answers through the router for `host`: how many of `n` sequential requests got each body (a
/// failure counts under its status).
async fn shares(http: &reqwest::Client, router: &TestRouter, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let key = match http.get(format!("http://{}/", router.listen)).header("host", host).send().await {
            Ok(r) if r.status() == 200 => r.text().await.unwrap_or_default().trim().to_owned(),
            Ok(r) => format!("status {}", r.status().as_u16()),
            Err(e) => format!("error {e}"),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Waits (bounded) until the router sends some of `host`'s requests to `marker`.
async fn until_some(http: &reqwest::Client, router: &TestRouter, host: &str, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = shares(http, router, host, 20).await;
        if seen.contains_key(marker) {
            return;
        }
        assert!(Instant::now() < deadline, "{marker} never answered: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn release_state(app: &TestApp, token: &str, release: &str, state: &str, limit: Duration) -> Value {
    app.wait_for(token, &format!("/api/v1/releases/{release}"), limit, |r| r["state"] == state).await
}

/// The names of the engine's services.
fn engine_services(real: &RealCluster) -> Vec<String> {
    real.cli.ok(&real.manager, &["service", "ls", "--format", "{{.Name}}"]).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_share_routes_by_weight_and_promote_or_abort() {
    let mut cfg = routed_config();
    cfg.console_dir = berth_tests::browser::console_dir();
    let listen = cfg.routing.router_listen;
    let app = TestApp::spawn_with_registry_and(cfg, 1 << 30).await.with_workers();
    let router = TestRouter::start(&app.db, listen).await;
    let address = app.registry.as_ref().unwrap().address.clone();
    let t = app.tenant("Canary").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();
    let real = RealCluster::create(&app, &t.owner, "canary", 1, 1).await;
    let (images, _cleanup) = push_versions(&real.cli, &real.manager, &address, (&email, PASSWORD), (&t.slug, "web"), &["1", "2"]);

    let deployed = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "shop", "cluster_id": real.id, "compose": COMPOSE, "variables": {"IMAGE": images[0]}}),
        )
        .await;
    deployed.expect(StatusCode::ACCEPTED);
    let application = deployed.id();
    app.wait_for(&t.owner, &format!("/api/v1/applications/{application}"), Duration::from_secs(120), |a| {
        a["status"] == "running" && a["deployed_revision"] == 1
    })
    .await;
    let host = format!("web.shop.{}.apps.localhost", t.slug);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    until_some(&http, &router, &host, "v1").await;
    let releases = format!("/api/v1/applications/{application}/releases");

    // Mistakes are 422s, and nothing is stored.
    for (body, field) in [
        (json!({}), "revision"),
        (json!({"weight": 150, "variables": {"IMAGE": images[1]}}), "weight"),
        (json!({"strategy": "blue_green", "weight": 30, "variables": {"IMAGE": images[1]}}), "weight"),
        (json!({"revision": 1, "variables": {"IMAGE": images[1]}}), "revision"),
        (json!({"revision": 1}), "revision"),
        (json!({"variables": {"IMAGE": images[0]}}), "revision"),
        (json!({"variables": {"IMAGE": images[1]}, "auto_abort": {"max_error_rate": 2}}), "auto_abort.max_error_rate"),
    ] {
        let r = app.post(&releases, &t.owner, body.clone()).await;
        r.expect(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["errors"][0]["field"], field, "{body}: {}", r.body);
    }
    assert_eq!(app.get(&releases, &t.owner).await.body["items"], json!([]));

    // A canary at 10%, started from the console: the new image runs beside the old, and gets a tenth of
    // the requests.
    let b = berth_tests::browser::Browser::start(&app.base).await;
    b.goto(&format!("/applications/{application}")).await;
    b.log_in(&t.owner_email, PASSWORD).await;
    b.find("#start-release").await;
    b.fill("#release-variables", &format!("IMAGE={}", images[1])).await;
    b.click("#release-start").await;
    b.wait_text("#release-strategy-shown", "canary").await;
    let listed = app.get(&releases, &t.owner).await.body;
    let started = &listed["items"][0];
    assert_eq!((started["strategy"].as_str(), started["weight"].as_i64()), (Some("canary"), Some(10)), "{listed}");
    assert_eq!(started["to_revision"], 2);
    assert_eq!(started["services"][0]["name"], "web", "only the changed service is copied: {started}");
    let canary = started["id"].as_str().unwrap().to_owned();

    let running = release_state(&app, &t.owner, &canary, "running", Duration::from_secs(120)).await;
    assert!(engine_services(&real).contains(&"shop_r2_web".to_owned()), "{:?}", engine_services(&real));
    // While it is open, the application takes no other revision and no other release.
    let other =
        app.patch(&format!("/api/v1/applications/{application}"), &t.owner, json!({"variables": {"IMAGE": images[0]}})).await;
    other.expect(StatusCode::CONFLICT);
    app.post(&releases, &t.owner, json!({"variables": {"IMAGE": images[1]}})).await.expect(StatusCode::CONFLICT);
    app.wait_for(&t.owner, &format!("/api/v1/releases/{canary}"), Duration::from_secs(60), |r| {
        r["services"][0]["replicas_running"] == 2
    })
    .await;
    until_some(&http, &router, &host, "v2").await;
    let counts = shares(&http, &router, &host, 2000).await;
    let new = counts.get("v2").copied().unwrap_or(0);
    println!("canary at 10%: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), counts.get("v1").unwrap_or(&0) + new, "only answers: {counts:?}");
    assert!((140..=260).contains(&new), "the new revision's share is 10% ± 3% of 2000: {counts:?} ({running})");

    // The console shows the release; its slider changes the weight, live.
    b.wait_text("#release-state", "running").await;
    b.wait_text("tr[data-copy='web'] td:nth-child(2)", "2/2").await;
    b.survey("application-release").await;
    b.eval(
        "const s = document.querySelector('#release-weight'); s.value = '50'; s.dispatchEvent(new Event('input', {bubbles: true}));",
    )
    .await;
    b.wait_text("#release-weight-value", "50%").await;
    b.click("#release-set-weight").await;
    b.wait_text("#release-weight-shown", "50%").await;
    assert_eq!(app.get(&format!("/api/v1/releases/{canary}"), &t.owner).await.body["weight"], 50);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = shares(&http, &router, &host, 400).await;
    let new = counts.get("v2").copied().unwrap_or(0);
    assert!((170..=230).contains(&new), "50% of 400: {counts:?}");
    // The routers saw what the new revision answered.
    app.wait_for(&t.owner, &format!("/api/v1/releases/{canary}"), Duration::from_secs(20), |r| {
        r["traffic"]["requests_total"].as_i64().unwrap_or(0) >= 300
    })
    .await;

    // Promote from the console under steady load: not one request fails while every request moves to
    // the new revision, the application's own service is updated to it, and the copy is removed.
    let load = Load::start(&router, &host, 4, Duration::from_secs(180));
    b.click("#release-promote").await;
    let done = release_state(&app, &t.owner, &canary, "promoted", Duration::from_secs(180)).await;
    let (ok, failed) = load.stop().await;
    println!("promotion under load: {ok} answered, {} failed", failed.len());
    assert!(ok > 100, "too little load to prove anything: {ok}");
    assert!(failed.is_empty(), "client-visible failures during the promotion: {failed:?}");
    assert_eq!(done["services"], json!([]), "{done}");
    assert!(done["finished_at"].is_string());
    let a = app.get(&format!("/api/v1/applications/{application}"), &t.owner).await.body;
    assert_eq!((a["revision"].as_i64(), a["deployed_revision"].as_i64()), (Some(2), Some(2)), "{a}");
    assert_eq!(shares(&http, &router, &host, 100).await, BTreeMap::from([("v2".to_owned(), 100)]));
    assert!(!engine_services(&real).iter().any(|s| s.starts_with("shop_r")), "{:?}", engine_services(&real));

    // Blue/green back to revision 1: it runs beside at weight 0 (no request reaches it), takes every
    // request at 100, and abort returns them and removes it from the engine.
    let blue = app.post(&releases, &t.owner, json!({"strategy": "blue_green", "revision": 1})).await;
    blue.expect(StatusCode::ACCEPTED);
    assert_eq!(blue.body["weight"], 0);
    let blue = blue.id().to_string();
    release_state(&app, &t.owner, &blue, "running", Duration::from_secs(120)).await;
    app.wait_for(&t.owner, &format!("/api/v1/releases/{blue}"), Duration::from_secs(60), |r| {
        r["services"][0]["replicas_running"] == 2
    })
    .await;
    assert!(engine_services(&real).contains(&"shop_r1_web".to_owned()));
    assert_eq!(shares(&http, &router, &host, 100).await, BTreeMap::from([("v2".to_owned(), 100)]));
    app.patch(&format!("/api/v1/releases/{blue}"), &t.owner, json!({"weight": 30}))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
    app.patch(&format!("/api/v1/releases/{blue}"), &t.owner, json!({"weight": 100})).await.expect(StatusCode::OK);
    until_some(&http, &router, &host, "v1").await;
    assert_eq!(shares(&http, &router, &host, 100).await, BTreeMap::from([("v1".to_owned(), 100)]));
    // Abort from the console: requests leave at once.
    b.wait_text("#release-strategy-shown", "blue/green").await;
    b.wait_text("#release-weight-shown", "100%").await;
    b.click("#release-abort").await;
    app.wait_for(&t.owner, &format!("/api/v1/releases/{blue}"), Duration::from_secs(10), |r| r["weight"] == 0).await;
    release_state(&app, &t.owner, &blue, "aborted", Duration::from_secs(60)).await;
    assert_eq!(shares(&http, &router, &host, 100).await, BTreeMap::from([("v2".to_owned(), 100)]));
    assert!(!engine_services(&real).iter().any(|s| s.starts_with("shop_r")), "{:?}", engine_services(&real));
    let a = app.get(&format!("/api/v1/applications/{application}"), &t.owner).await.body;
    assert_eq!(a["revision"], 2, "abort leaves the application where it was: {a}");

    // A revision that answers 500s, with automatic abort: it is aborted on its own.
    let broken = app
        .post(
            &releases,
            &t.owner,
            json!({"variables": {"IMAGE": images[1], "BROKEN": "1"}, "weight": 50,
                   "auto_abort": {"max_error_rate": 0.2, "window_secs": 10, "min_requests": 10}}),
        )
        .await;
    broken.expect(StatusCode::ACCEPTED);
    let broken = broken.id().to_string();
    release_state(&app, &t.owner, &broken, "running", Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeMap::new();
    let why = loop {
        for (k, n) in shares(&http, &router, &host, 20).await {
            *seen.entry(k).or_insert(0) += n;
        }
        let r = app.get(&format!("/api/v1/releases/{broken}"), &t.owner).await.body;
        if r["state"] == "aborting" || r["state"] == "aborted" {
            break r["message"].as_str().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "the failing release was not aborted: {r} (answers: {seen:?})");
    };
    println!("auto-abort after {seen:?}: {why}");
    assert!(why.contains("5xx") && why.contains("limit is 20%"), "{why}");
    let counted: Vec<u64> = why.split_whitespace().filter_map(|w| w.parse().ok()).take(2).collect();
    assert!(counted.len() == 2 && counted[0] <= counted[1] && counted[1] >= 10, "errors of answers: {why}");
    release_state(&app, &t.owner, &broken, "aborted", Duration::from_secs(60)).await;
    assert_eq!(shares(&http, &router, &host, 100).await, BTreeMap::from([("v2".to_owned(), 100)]));
    assert!(!engine_services(&real).iter().any(|s| s.starts_with("shop_r")), "{:?}", engine_services(&real));

    // With an HTTP health check on the route, the same revision's tasks fail it and get no request at
    // all (the current tasks take them), so no error rate can tell; the release is aborted for their
    // health instead.
    let route = app.get(&format!("/api/v1/routes?application_id={application}"), &t.owner).await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.patch(&format!("/api/v1/routes/{route}"), &t.owner, json!({"probe_path": "/"})).await.expect(StatusCode::OK);
    let sick = app
        .post(
            &releases,
            &t.owner,
            json!({"variables": {"IMAGE": images[1], "BROKEN": "1"}, "weight": 50,
                   "auto_abort": {"max_error_rate": 0.2, "window_secs": 5, "min_requests": 10}}),
        )
        .await;
    sick.expect(StatusCode::ACCEPTED);
    let sick = sick.id().to_string();
    release_state(&app, &t.owner, &sick, "running", Duration::from_secs(120)).await;
    let aborting = app
        .wait_for(&t.owner, &format!("/api/v1/releases/{sick}"), Duration::from_secs(60), |r| {
            r["state"] == "aborting" || r["state"] == "aborted"
        })
        .await;
    let why = aborting["message"].as_str().unwrap_or_default();
    assert!(why.contains("failed the routers' health checks for the last 5 s"), "{aborting}");
    release_state(&app, &t.owner, &sick, "aborted", Duration::from_secs(60)).await;
    assert_eq!(shares(&http, &router, &host, 50).await, BTreeMap::from([("v2".to_owned(), 50)]));
    let samples: i64 = sqlx::query_scalar("SELECT count(*) FROM release_health").fetch_one(&app.db).await.unwrap();
    assert_eq!(samples, 0, "health samples go with the release");
    app.patch(&format!("/api/v1/routes/{route}"), &t.owner, json!({"probe_path": ""})).await.expect(StatusCode::OK);

    // Every step is on the tenant's event stream.
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM events WHERE target_type = 'release' ORDER BY id").fetch_all(&app.db).await.unwrap();
    for kind in [
        "release.created",
        "release.running",
        "release.weight",
        "release.promoting",
        "release.promoted",
        "release.aborting",
        "release.aborted",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let listed = app.get(&releases, &t.owner).await.body;
    let states: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["promoted", "aborted", "aborted", "aborted"]);

    // The console lists them.
    b.wait_text("#past-releases", "aborted on its own").await;
    b.find("#start-release").await;

    // Deleting the application removes everything, copies included.
    let gone = app.delete(&format!("/api/v1/applications/{application}"), &t.owner).await;
    let job = app.wait_job(&t.owner, gone.body["job_id"].as_str().unwrap(), Duration::from_secs(90)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(!engine_services(&real).iter().any(|s| s.starts_with("shop")), "{:?}", engine_services(&real));
    real.delete(&app, &t.owner).await;
}

/// Copy traffic older than any rule's window is summed into one row per release and router, with the
/// release's totals unchanged; summing again changes nothing.
#[tokio::test]
async fn old_copy_traffic_is_summed_without_changing_the_totals() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Long canary").await;
    let (cluster, template) = (crate::fixtures::cluster(&app, &t.owner).await, crate::fixtures::template(&app, &t.owner).await);
    let release = crate::fixtures::release(&app, &t.owner, cluster, template).await;
    // Two routers, each with three readings three hours ago and one half a minute ago.
    for router in ["r1", "r2"] {
        for (age, requests, errors) in
            [("3 hours", 10, 1), ("3 hours 5 seconds", 20, 0), ("3 hours 10 seconds", 30, 2), ("30 seconds", 5, 1)]
        {
            sqlx::query(
                "INSERT INTO release_traffic (release_id, tenant_id, router, at, requests, responses_5xx)
                 SELECT id, tenant_id, $2, now() - $3::interval, $4, $5 FROM releases WHERE id = $1",
            )
            .bind(release)
            .bind(router)
            .bind(age)
            .bind(requests)
            .bind(errors)
            .execute(&app.db)
            .await
            .unwrap();
        }
    }
    let path = format!("/api/v1/releases/{release}");
    let before = app.get(&path, &t.owner).await.body;
    let traffic = |r: &serde_json::Value| r["traffic"].clone();
    assert_eq!(
        traffic(&before),
        json!({"requests_total": 130, "responses_5xx_total": 8, "requests_last_minute": 10, "responses_5xx_last_minute": 2})
    );
    assert_eq!(berth::releases::watch::compact_traffic(&app.db).await.unwrap(), 4, "six old rows became two");
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT router, requests, responses_5xx FROM release_traffic WHERE release_id = $1 ORDER BY router, at")
            .bind(release)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(rows, [("r1".to_owned(), 60, 3), ("r1".to_owned(), 5, 1), ("r2".to_owned(), 60, 3), ("r2".to_owned(), 5, 1)]);
    let after = app.get(&path, &t.owner).await.body;
    assert_eq!(traffic(&after), traffic(&before));
    assert_eq!(berth::releases::watch::compact_traffic(&app.db).await.unwrap(), 0, "nothing left to sum");
}
