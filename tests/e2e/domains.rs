//! Custom domains a tenant proves itself: it claims a domain, publishes the TXT record Berth names in
//! a real DNS server (`pebble-challtestsrv` on loopback), and its routes there are routed once the
//! record is found — and no other tenant can take the domain or a name under it.

use berth_tests::dns::TestDns;
use berth_tests::{TestApp, routed_config};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_prove_custom_domains_with_a_txt_record() {
    let dns = TestDns::start();
    let mut cfg = routed_config();
    cfg.console_dir = berth_tests::browser::console_dir();
    cfg.routing.dns_resolver = dns.addr.to_string();
    let app = TestApp::spawn_with(cfg).await;
    let a = app.tenant("Alpha").await;
    let b = app.tenant("Beta").await;
    let cluster = crate::fixtures::cluster(&app, &a.owner).await;
    let compose = "services:\n  web:\n    image: busybox\n    labels:\n      berth.routing.port_8080: www.shop.test\n";
    let shop =
        app.post("/api/v1/applications", &a.owner, json!({"name": "shop", "cluster_id": cluster, "compose": compose})).await;
    shop.expect(StatusCode::ACCEPTED);
    let routes = app.get(&format!("/api/v1/routes?application_id={}&domain=www.shop.test", shop.id()), &a.owner).await;
    let route = format!("/api/v1/routes/{}", routes.body["items"][0]["id"].as_str().unwrap());
    assert_eq!(app.get(&route, &a.owner).await.body["verified"], false, "an unproved domain is not routed");

    // Malformed names and names under the apps domain are refused, and nothing is stored.
    let before = app.row_counts().await;
    for bad in ["not a domain", "10.0.0.1", "x.shop.apps.localhost", "localhost"] {
        let r = app.post("/api/v1/domains", &a.owner, json!({"domain": bad})).await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(r.body["errors"][0]["field"], "domain", "{bad}: {}", r.text);
    }
    assert_eq!(app.row_counts().await, before);

    // A claims the domain: the answer names the record to publish; claiming again gives the same.
    let claim = app.post("/api/v1/domains", &a.owner, json!({"domain": "Shop.TEST"})).await;
    claim.expect(StatusCode::CREATED);
    assert_eq!((claim.body["domain"].as_str(), claim.body["status"].as_str()), (Some("shop.test"), Some("pending")));
    let record = claim.body["verification"].clone();
    assert_eq!((record["record_type"].as_str(), record["name"].as_str()), (Some("TXT"), Some("_berth-challenge.shop.test")));
    let a_value = record["value"].as_str().unwrap().to_owned();
    assert!(a_value.starts_with("berth-domain-verification=") && a_value.len() > 50, "{a_value}");
    let again = app.post("/api/v1/domains", &a.owner, json!({"domain": "shop.test"})).await;
    again.expect(StatusCode::CREATED);
    assert_eq!(again.body["verification"]["value"], a_value.as_str());
    // B claims it too (anyone may claim; only the one whose record is published gets it).
    let b_claim = app.post("/api/v1/domains", &b.owner, json!({"domain": "shop.test"})).await;
    b_claim.expect(StatusCode::CREATED);
    let b_value = b_claim.body["verification"]["value"].as_str().unwrap().to_owned();
    assert_ne!(a_value, b_value);

    // Before the record exists the check says so, and the claim keeps what was found.
    let early = app.post("/api/v1/domains/shop.test/verify", &a.owner, json!({})).await;
    early.problem(StatusCode::UNPROCESSABLE_ENTITY, "domain-unproved");
    assert!(early.text.contains("no TXT record at _berth-challenge.shop.test"), "{}", early.text);
    let listed = app.get("/api/v1/domains", &a.owner).await;
    assert_eq!(listed.body[0]["status"], "pending");
    assert!(listed.body[0]["last_error"].as_str().unwrap().contains("no TXT record"), "{}", listed.text);
    assert!(listed.body[0]["checked_at"].is_string());

    // A record for someone else's claim proves nothing.
    dns.add_txt("_berth-challenge.shop.test", "berth-domain-verification=someone-else").await;
    let wrong = app.post("/api/v1/domains/shop.test/verify", &a.owner, json!({})).await;
    wrong.problem(StatusCode::UNPROCESSABLE_ENTITY, "domain-unproved");
    assert!(wrong.text.contains("someone-else"), "the check shows what it found: {}", wrong.text);

    // A publishes its record: the domain is A's, and A's route under it is routed.
    dns.add_txt("_berth-challenge.shop.test", &a_value).await;
    let proved = app.post("/api/v1/domains/shop.test/verify", &a.owner, json!({})).await;
    proved.expect(StatusCode::OK);
    assert_eq!(
        (proved.body["status"].as_str(), proved.body["proved_by"].as_str(), proved.body["verification"].is_null()),
        (Some("verified"), Some("dns"), true)
    );
    assert_eq!(app.get(&route, &a.owner).await.body["verified"], true);
    assert_eq!(
        app.post("/api/v1/domains/shop.test/verify", &a.owner, json!({})).await.status,
        200,
        "verifying again is harmless"
    );
    let names = app.get("/api/v1/domains", &a.owner).await;
    assert_eq!(names.body.as_array().unwrap().len(), 1, "the claim became the domain: {}", names.text);
    let covered = app.post("/api/v1/domains", &a.owner, json!({"domain": "api.shop.test"})).await;
    covered.problem(StatusCode::CONFLICT, "domain-verified");

    // B cannot take it, even once its own record is published too, nor any name above or under it.
    dns.add_txt("_berth-challenge.shop.test", &b_value).await;
    let taken = app.post("/api/v1/domains/shop.test/verify", &b.owner, json!({})).await;
    taken.problem(StatusCode::CONFLICT, "domain-granted");
    for name in ["api.shop.test", "shop.test"] {
        let r = app.post("/api/v1/domains", &b.owner, json!({"domain": name})).await;
        r.problem(StatusCode::CONFLICT, "domain-granted");
    }
    assert_eq!(app.get("/api/v1/domains/shop.test/verify", &b.owner).await.status, 405);
    let theirs = app.get("/api/v1/domains", &b.owner).await;
    assert_eq!((theirs.body[0]["domain"].as_str(), theirs.body[0]["status"].as_str()), (Some("shop.test"), Some("pending")));
    let gone = app.delete("/api/v1/domains/shop.test", &b.owner).await;
    gone.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get("/api/v1/domains", &b.owner).await.body, json!([]));

    // A gives the domain up: its route stops being routed. A platform admin's grant is the admin's to
    // take back.
    app.delete("/api/v1/domains/shop.test", &a.owner).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(app.get(&route, &a.owner).await.body["verified"], false);
    app.delete("/api/v1/domains/shop.test", &a.owner).await.problem(StatusCode::NOT_FOUND, "not-found");
    app.post(&format!("/api/v1/admin/tenants/{}/domains", a.id), &app.admin, json!({"domain": "shop.test"}))
        .await
        .expect(StatusCode::CREATED);
    let grants = app.get(&format!("/api/v1/admin/tenants/{}/domains", a.id), &app.admin).await;
    assert_eq!(grants.body[0]["proved_by"], "admin");
    assert_eq!(app.get(&route, &a.owner).await.body["verified"], true);
    app.delete("/api/v1/domains/shop.test", &a.owner).await.problem(StatusCode::CONFLICT, "domain-granted-by-admin");

    // Recent claims are also checked in the background: a published record proves its claim with no
    // one pressing Verify, and a claim another tenant won says so.
    let resolver = berth::custom_domains::proof::DnsResolver::Servers(vec![dns.addr]);
    let theirs = app.post("/api/v1/domains", &b.owner, json!({"domain": "race.test"})).await;
    let ours = app.post("/api/v1/domains", &a.owner, json!({"domain": "race.test"})).await;
    dns.add_txt("_berth-challenge.race.test", ours.body["verification"]["value"].as_str().unwrap()).await;
    berth::custom_domains::verify::recheck_due(&app.db, &resolver).await.unwrap();
    let race = |body: serde_json::Value| body.as_array().unwrap().iter().find(|d| d["domain"] == "race.test").cloned().unwrap();
    let won = race(app.get("/api/v1/domains", &a.owner).await.body);
    assert_eq!((won["status"].as_str(), won["proved_by"].as_str()), (Some("verified"), Some("dns")), "{won}");
    let waiting = race(app.get("/api/v1/domains", &b.owner).await.body);
    assert!(waiting["last_error"].as_str().unwrap().contains("do not hold"), "{waiting}");
    dns.add_txt("_berth-challenge.race.test", theirs.body["verification"]["value"].as_str().unwrap()).await;
    sqlx::query("UPDATE domain_claims SET checked_at = NULL").execute(&app.db).await.unwrap();
    berth::custom_domains::verify::recheck_due(&app.db, &resolver).await.unwrap();
    let lost = race(app.get("/api/v1/domains", &b.owner).await.body);
    assert_eq!(lost["status"], "pending");
    assert!(lost["last_error"].as_str().unwrap().contains("belongs to another tenant"), "{lost}");

    // The console: the granted domain is listed without a Remove button; a new domain is added from
    // the form, its record published, and Verify makes it the tenant's.
    let b = berth_tests::browser::Browser::start(&app.base).await;
    b.goto("/domains").await;
    b.log_in(&a.owner_email, berth_tests::PASSWORD).await;
    b.wait_text("tr[data-domain='shop.test']", "granted by a platform admin").await;
    assert!(!b.has("tr[data-domain='shop.test'] .remove").await, "an admin's grant offers no Remove");
    b.fill("#domain-name", "web.test").await;
    b.click("#claim-domain").await;
    b.wait_text("tr[data-domain='web.test'] code.name", "_berth-challenge.web.test").await;
    let value = b.find("tr[data-domain='web.test'] code.value").await.text().await.unwrap();
    b.click("tr[data-domain='web.test'] .verify").await;
    b.wait_text("tr[data-domain='web.test']", "no TXT record at _berth-challenge.web.test").await;
    b.screenshot("domains-pending").await;
    dns.add_txt("_berth-challenge.web.test", &value).await;
    b.click("tr[data-domain='web.test'] .verify").await;
    b.wait_text("tr[data-domain='web.test'] .status", "verified").await;
    b.wait_text("tr[data-domain='web.test']", "TXT record in its DNS").await;
    b.survey("domains").await;
    drop(b);

    // A `berth worker` process checks pending claims too (at its start, then every minute), through
    // its own BERTH_DNS_RESOLVER.
    let claim = app.post("/api/v1/domains", &a.owner, json!({"domain": "worker.test"})).await;
    dns.add_txt("_berth-challenge.worker.test", claim.body["verification"]["value"].as_str().unwrap()).await;
    let data_dir = berth_tests::temp_data_dir("berth-domains-worker");
    // The worker also runs the jobs waiting in this database: it provisions the test's cluster, whose
    // nodes this guard destroys (with the directory) once the worker is gone.
    let nodes = berth_tests::DestroyNodesOnDrop(data_dir.clone());
    let worker =
        berth_tests::WorkerProcess::start_with(&app.db_name, &data_dir, 3, &[("BERTH_DNS_RESOLVER", &dns.addr.to_string())]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mine = app.get("/api/v1/domains", &a.owner).await.body;
        let claimed = mine.as_array().unwrap().iter().find(|d| d["domain"] == "worker.test").cloned().unwrap();
        if claimed["status"] == "verified" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the worker process did not check the claim: {claimed}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(worker);
    drop(nodes);

    // With its DNS server gone, a check says the lookup failed rather than that the record is missing.
    app.post("/api/v1/domains", &a.owner, json!({"domain": "other.test"})).await.expect(StatusCode::CREATED);
    drop(dns);
    let down = app.post("/api/v1/domains/other.test/verify", &a.owner, json!({})).await;
    down.problem(StatusCode::SERVICE_UNAVAILABLE, "dns-unavailable");
    assert_eq!(down.headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("60"));
    assert!(down.text.contains("looking up TXT _berth-challenge.other.test"), "{}", down.text);
}
