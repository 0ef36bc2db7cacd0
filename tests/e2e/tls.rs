//! TLS on the router: a certificate obtained over ACME from a real authority (Debian's pebble on
//! loopback), its HTTP-01 challenge answered by the router itself, served by SNI, renewed; an
//! uploaded one for a granted domain; HTTP → HTTPS redirects; mistakes refused before anything is
//! stored.

use std::time::{Duration, Instant};

use berth_tests::acme::{Pebble, TestCertificate, https_get};
use berth_tests::docker_cli::{RealCluster, push_versions};
use berth_tests::{PASSWORD, TestApp, TestRouter, free_port_on, routed_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Waits (bounded) until the router serves `host` over HTTPS with a certificate `root` verifies and
/// whose serial is not `not`; returns (status, body, serial).
async fn served(router_tls: std::net::SocketAddr, host: &str, root: &str, not: &str) -> (u16, String, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = https_get(router_tls, host, root, "/").await;
        match &got {
            Ok((_, _, serial)) if serial != not => return got.unwrap(),
            _ => assert!(Instant::now() < deadline, "{host} is not served as expected over HTTPS: {got:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn certificate(app: &TestApp, token: &str, id: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    app.wait_for(token, &format!("/api/v1/certificates/{id}"), limit, check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_obtained_over_acme_served_by_sni_renewed_and_uploaded() {
    let mut cfg = routed_config();
    cfg.console_dir = berth_tests::browser::console_dir();
    let listen = cfg.routing.router_listen;
    let tls = std::net::SocketAddr::new([127, 0, 0, 1].into(), free_port_on([127, 0, 0, 1].into()));
    let pebble = Pebble::start(listen.port(), tls.port());
    let acme = berth::certificates::AcmeConfig {
        acme_directory: pebble.directory.clone(),
        acme_ca_file: Some(pebble.https_ca_file.clone()),
        acme_contact: Some("ops@example.test".into()),
        acme_renew_days: 30,
    };
    let app = TestApp::spawn_with_registry_and(cfg, 1 << 30).await.with_workers_acme(acme);
    let router = TestRouter::start_with(&app.db, listen, Some(tls), berth::routing::table::Scope::Local).await;
    let t = app.tenant("Secure").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();
    let real = RealCluster::create(&app, &t.owner, "tls", 1, 0).await;
    let address = app.registry.as_ref().unwrap().address.clone();
    let (images, _cleanup) = push_versions(&real.cli, &real.manager, &address, (&email, PASSWORD), (&t.slug, "web"), &["1"]);
    let compose = r#"services:
  web:
    image: ${IMAGE}
    command: ["/bin/busybox", "sh", "-c", "mkdir /www && echo secure > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
    ports: ["8080"]
    deploy: {resources: {limits: {memory: 32M}}}
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
    let host = format!("web.shop.{}.apps.localhost", t.slug);
    let routes = app.get(&format!("/api/v1/routes?application_id={application}"), &t.owner).await.body;
    let route = routes["items"][0]["id"].as_str().unwrap().to_owned();
    let service = routes["items"][0]["service_id"].as_str().unwrap().to_owned();
    app.wait_for(&t.owner, &format!("/api/v1/routes/{route}"), Duration::from_secs(120), |r| r["endpoints"] == 1).await;

    // Mistakes are 422s and store nothing.
    for (body, field) in [
        (json!({"domain": "not a domain"}), "domain"),
        (json!({"domain": "nobody.example.org"}), "domain"),
        (json!({"domain": format!("other.shop.{}.apps.localhost", t.slug)}), "domain"),
        (json!({"domain": "*.example.org"}), "domain"),
        (json!({"domain": host, "certificate_pem": "x"}), "private_key_pem"),
    ] {
        let r = app.post("/api/v1/certificates", &t.owner, body.clone()).await;
        r.expect(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["errors"][0]["field"], field, "{body}: {}", r.body);
    }
    assert_eq!(app.get("/api/v1/certificates", &t.owner).await.body["items"], json!([]));

    // ACME, asked for from the service's page: pebble validates the HTTP-01 challenge through the
    // router, and issues.
    let b = berth_tests::browser::Browser::start(&app.base).await;
    b.goto(&format!("/services/{service}")).await;
    b.log_in(&t.owner_email, PASSWORD).await;
    b.click(&format!("tr[data-route='{host}'] button.certify")).await;
    let asked = app.wait_for(&t.owner, "/api/v1/certificates", Duration::from_secs(10), |l| l["items"][0].is_object()).await;
    let asked = &asked["items"][0];
    assert_eq!((asked["source"].as_str(), asked["domain"].as_str()), (Some("acme"), Some(host.as_str())));
    let id = asked["id"].as_str().unwrap().to_owned();
    let issued = certificate(&app, &t.owner, &id, Duration::from_secs(120), |c| c["state"] != "pending").await;
    assert_eq!(issued["state"], "issued", "{issued}");
    let root = pebble.issuing_root().await;
    let (status, body, serial) = served(tls, &host, &root, "").await;
    assert_eq!((status, body.as_str()), (200, "secure"), "the route answers over HTTPS");
    assert_eq!(serial, issued["serial"].as_str().unwrap(), "the router serves the issued certificate");
    let challenges: i64 = sqlx::query_scalar("SELECT count(*) FROM acme_challenges").fetch_one(&app.db).await.unwrap();
    assert_eq!(challenges, 0, "challenges are gone once answered");
    // The job asked the authority to check once the router served the challenge, not after a guess.
    let live: Vec<String> = sqlx::query_scalar("SELECT name FROM routers WHERE seen_at > now() - interval '10 seconds'")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(live.len(), 1, "the router reports what it serves: {live:?}");
    let late: i64 = sqlx::query_scalar("SELECT count(*) FROM job_logs WHERE line LIKE 'routers not serving%'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(late, 0, "every router served the challenge before the authority checked it");
    // A name without a certificate of its own gets the router's default one, which nothing trusts.
    assert!(https_get(tls, "nothing.example.org", &root, "/").await.is_err());
    b.wait_text(&format!("tr[data-route='{host}'] td.https"), "issued").await;

    // HTTP → HTTPS, once asked for on the service's page (the certificate exists).
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let plain = || http.get(format!("http://{listen}/index.html?y=1")).header("host", &host).send();
    assert_eq!(plain().await.unwrap().status(), 200);
    b.click(&format!("#https-{route}")).await;
    b.click(&format!("tr[data-route='{host}'] button[type='submit']")).await;
    app.wait_for(&t.owner, &format!("/api/v1/routes/{route}"), Duration::from_secs(10), |r| r["https_redirect"] == true).await;
    b.survey("service-https").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let moved = loop {
        let r = plain().await.unwrap();
        if r.status() == 308 {
            break r;
        }
        assert!(Instant::now() < deadline, "no redirect: {}", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(moved.headers()["location"], format!("https://{host}:{}/index.html?y=1", tls.port()).as_str());

    // A route's HTTP probe: a path the task does not serve takes it out of rotation; one it serves
    // brings it back. (Set on the service's page.)
    b.fill(&format!("#probe-{route}"), "/missing").await;
    b.click(&format!("tr[data-route='{host}'] button[type='submit']")).await;
    app.wait_for(&t.owner, &format!("/api/v1/routes/{route}"), Duration::from_secs(10), |r| r["probe_path"] == "/missing").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body, _) = https_get(tls, &host, &root, "/").await.unwrap();
        if status == 503 {
            assert_eq!(body, "No task of this service can answer right now.");
            break;
        }
        assert!(Instant::now() < deadline, "a task failing its probe still serves: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.patch(&format!("/api/v1/routes/{route}"), &t.owner, json!({"probe_path": "/index.html"})).await.expect(StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(15);
    while https_get(tls, &host, &root, "/").await.unwrap().0 != 200 {
        assert!(Instant::now() < deadline, "the task passing its probe is not back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bad = app.patch(&format!("/api/v1/routes/{route}"), &t.owner, json!({"probe_path": "no slash"})).await;
    bad.expect(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["errors"][0]["field"], "probe_path");

    // Renewal obtains a new certificate, and the router serves it.
    let renewing = app.post(&format!("/api/v1/certificates/{id}/renew"), &t.owner, json!({})).await;
    renewing.expect(StatusCode::ACCEPTED);
    let renewed =
        certificate(&app, &t.owner, &id, Duration::from_secs(120), |c| c["serial"] != issued["serial"] && c["state"] == "issued")
            .await;
    let (_, _, now_serving) = served(tls, &host, &root, &serial).await;
    assert_eq!(now_serving, renewed["serial"].as_str().unwrap());

    // An uploaded wildcard certificate for a granted domain, chosen by SNI.
    app.post(&format!("/api/v1/admin/tenants/{}/domains", t.id), &app.admin, json!({"domain": "example.test"}))
        .await
        .expect(StatusCode::CREATED);
    app.post("/api/v1/routes", &t.owner, json!({"service_id": service, "port": 8080, "domain": "www.example.test"}))
        .await
        .expect(StatusCode::CREATED);
    let own = TestCertificate::new(&["*.example.test"], None);
    let other = TestCertificate::new(&["*.example.test"], None);
    let chain = format!("{}{}", own.cert_pem, own.ca_pem);
    for (body, field) in [
        (json!({"domain": "*.example.test", "certificate_pem": chain, "private_key_pem": other.key_pem}), "private_key_pem"),
        (json!({"domain": "*.other.test", "certificate_pem": chain, "private_key_pem": own.key_pem}), "certificate_pem"),
        (
            json!({"domain": "*.example.test", "certificate_pem": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n", "private_key_pem": own.key_pem}),
            "certificate_pem",
        ),
    ] {
        let r = app.post("/api/v1/certificates", &t.owner, body).await;
        r.expect(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["errors"][0]["field"], field, "{}", r.body);
    }
    let uploaded = app
        .post(
            "/api/v1/certificates",
            &t.owner,
            json!({"domain": "*.example.test", "certificate_pem": chain, "private_key_pem": own.key_pem}),
        )
        .await;
    uploaded.expect(StatusCode::CREATED);
    assert_eq!((uploaded.body["source"].as_str(), uploaded.body["state"].as_str()), (Some("uploaded"), Some("issued")));
    let (status, body, _) = served(tls, "www.example.test", &own.ca_pem, "").await;
    assert_eq!((status, body.as_str()), (200, "secure"));
    // A router holds only the certificates of the names it routes: one scoped to another cluster
    // gets no key of this tenant's.
    let keys = berth::crypto::Keys::from_secret(berth_tests::SECRET).unwrap();
    let here = berth::routing::table::read(&app.db, &berth::routing::table::Scope::Local, &keys).await.unwrap();
    assert!(here.certificates.values().any(|c| c.domain == "*.example.test"), "the local router serves the upload");
    let elsewhere = berth::routing::table::Scope::Clusters(vec![uuid::Uuid::now_v7()]);
    let there = berth::routing::table::read(&app.db, &elsewhere, &keys).await.unwrap();
    assert!(there.certificates.is_empty() && there.backends.is_empty(), "another cluster's router holds certificates");
    // The key is sealed at rest: not in the row as given.
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT key_sealed FROM certificates WHERE domain = '*.example.test'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"));
    // Another tenant cannot take the name, nor see the certificate.
    let b = app.tenant("Other").await;
    let r = app.post("/api/v1/certificates", &b.owner, json!({"domain": "www.example.test"})).await;
    r.expect(StatusCode::UNPROCESSABLE_ENTITY);
    app.get(&format!("/api/v1/certificates/{id}"), &b.owner).await.expect(StatusCode::NOT_FOUND);

    // Deleting a certificate stops serving it.
    app.delete(&format!("/api/v1/certificates/{}", uploaded.id()), &t.owner).await.expect(StatusCode::NO_CONTENT);
    let deadline = Instant::now() + Duration::from_secs(10);
    while https_get(tls, "www.example.test", &own.ca_pem, "/").await.is_ok() {
        assert!(Instant::now() < deadline, "the deleted certificate is still served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(router);
    real.delete(&app, &t.owner).await;
}

/// What an ACME job waits for before the authority checks a challenge: every router at work serving
/// a table read after the challenge was written. A router that has not caught up holds it (within
/// the job's patience); one not seen for ten seconds is gone and holds nothing, as does one stopped.
#[tokio::test]
async fn work_waits_for_every_router_at_work_to_serve_what_it_wrote() {
    use berth::routing::applied;
    let app = TestApp::spawn().await;
    let db = &app.db;
    applied::report(db, "old@127.0.0.1:1", applied::now(db).await.unwrap()).await.unwrap();
    applied::report(db, "new@127.0.0.1:2", applied::now(db).await.unwrap()).await.unwrap();
    let written = applied::now(db).await.unwrap();
    assert_eq!(applied::behind(db, written).await.unwrap(), ["new@127.0.0.1:2", "old@127.0.0.1:1"]);
    let started = Instant::now();
    let behind = applied::wait_served(db, written, Duration::from_millis(300)).await.unwrap();
    assert_eq!(behind.len(), 2, "nobody caught up within the patience");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // One catches up while the other waits; an older report never moves a router back.
    let caught_up = {
        let db = db.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            applied::report(&db, "new@127.0.0.1:2", applied::now(&db).await.unwrap()).await.unwrap();
            applied::report(&db, "new@127.0.0.1:2", written - chrono::Duration::seconds(5)).await.unwrap();
        })
    };
    sqlx::query("UPDATE routers SET seen_at = now() - interval '11 seconds' WHERE name = 'old@127.0.0.1:1'")
        .execute(db)
        .await
        .unwrap();
    let behind = applied::wait_served(db, written, Duration::from_secs(5)).await.unwrap();
    caught_up.await.unwrap();
    assert!(behind.is_empty(), "{behind:?}");
    assert!(applied::behind(db, written).await.unwrap().is_empty(), "an older report does not move it back");

    // A router that is alive but cannot apply the newest table holds the work, and operators see why;
    // applying one again clears it. The one not seen for ten seconds is gone.
    applied::failed(db, "new@127.0.0.1:2", "HAProxy refuses the configuration: [ALERT] …").await.unwrap();
    let written = applied::now(db).await.unwrap();
    assert_eq!(applied::behind(db, written).await.unwrap(), ["new@127.0.0.1:2"]);
    let states = |body: &serde_json::Value| -> Vec<(String, String, serde_json::Value)> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap().to_owned(), r["state"].as_str().unwrap().to_owned(), r["error"].clone()))
            .collect()
    };
    let listed = app.get("/api/v1/admin/routers", &app.admin).await;
    listed.expect(StatusCode::OK);
    assert_eq!(
        states(&listed.body),
        [
            ("new@127.0.0.1:2".into(), "failing".into(), json!("HAProxy refuses the configuration: [ALERT] …")),
            ("old@127.0.0.1:1".into(), "gone".into(), json!(null)),
        ]
    );
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in ["berth_routers{state=\"serving\"} 0", "berth_routers{state=\"failing\"} 1", "berth_routers{state=\"gone\"} 1"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in /metrics");
    }
    applied::report(db, "new@127.0.0.1:2", applied::now(db).await.unwrap()).await.unwrap();
    let listed = app.get("/api/v1/admin/routers", &app.admin).await;
    assert_eq!(states(&listed.body)[0], ("new@127.0.0.1:2".into(), "serving".into(), json!(null)));
    // A router asked to stop says so: listed as stopped, not gone, and no longer waited for, though
    // it never served the newest table; once it reports again it serves.
    let written = applied::now(db).await.unwrap();
    applied::stopped(db, "new@127.0.0.1:2").await.unwrap();
    assert!(applied::behind(db, written).await.unwrap().is_empty(), "a stopped router holds no work");
    let listed = app.get("/api/v1/admin/routers", &app.admin).await;
    assert_eq!(states(&listed.body)[0], ("new@127.0.0.1:2".into(), "stopped".into(), json!(null)));
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "berth_routers{state=\"stopped\"} 1"), "{metrics}");
    applied::report(db, "new@127.0.0.1:2", applied::now(db).await.unwrap()).await.unwrap();
    let listed = app.get("/api/v1/admin/routers", &app.admin).await;
    assert_eq!(states(&listed.body)[0], ("new@127.0.0.1:2".into(), "serving".into(), json!(null)));
    // Tenants do not see the platform's routers.
    let t = app.tenant("Curious").await;
    app.get("/api/v1/admin/routers", &t.owner).await.problem(StatusCode::FORBIDDEN, "forbidden");
}
