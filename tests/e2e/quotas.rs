//! Quotas, set by the platform admin and enforced when desired state is written.

use berth_tests::TestApp;
use reqwest::StatusCode;
use serde_json::json;

use crate::fixtures;

#[tokio::test]
async fn every_quota_is_enforced_and_names_its_limit() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let quotas = format!("/api/v1/admin/tenants/{}/quotas", t.id);

    // Counts: clusters and nodes.
    app.put(&quotas, &app.admin, json!({"max_clusters": 1, "max_nodes": 3})).await.expect(StatusCode::OK);
    let cluster = app.post("/api/v1/clusters", &t.owner, json!({"name": "one", "managers": 1, "workers": 1})).await;
    cluster.expect(StatusCode::ACCEPTED);
    let r = app.post("/api/v1/clusters", &t.owner, json!({"name": "two", "managers": 1, "workers": 0})).await;
    r.problem(StatusCode::FORBIDDEN, "quota-exceeded");
    assert_eq!(r.body["errors"][0]["field"], "max_clusters");
    let scale = format!("/api/v1/clusters/{}", cluster.id());
    app.patch(&scale, &t.owner, json!({"workers": 2})).await.expect(StatusCode::ACCEPTED);
    let r = app.patch(&scale, &t.owner, json!({"workers": 3})).await;
    r.problem(StatusCode::FORBIDDEN, "quota-exceeded");
    assert_eq!(r.body["errors"][0]["field"], "max_nodes");
    // Shrinking is always allowed.
    app.patch(&scale, &t.owner, json!({"workers": 0})).await.expect(StatusCode::ACCEPTED);

    // Applications, services, summed reservations (the fixture: web 2 × 0.25 CPU × 64 MiB, worker 1 × 0).
    let template = fixtures::template(&app, &t.owner).await;
    let deploy = |name: &str| json!({"name": name, "cluster_id": cluster.id(), "template_id": template});
    for (quota, limit) in [
        (json!({"max_applications": 0}), "max_applications"),
        (json!({"max_services": 1}), "max_services"),
        (json!({"max_cpus": 0.4}), "max_cpus"),
        (json!({"max_memory_mb": 100}), "max_memory_mb"),
    ] {
        app.put(&quotas, &app.admin, quota.clone()).await.expect(StatusCode::OK);
        let before = app.row_counts().await;
        // The preview shows which quota the deploy would exceed, and stores nothing either.
        let preview = app.post("/api/v1/applications/preview", &t.owner, deploy("web")).await;
        preview.expect(StatusCode::OK);
        let over: Vec<&str> = preview.body["quota"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["over"] == true)
            .filter_map(|q| q["quota"].as_str())
            .collect();
        assert_eq!(over, [limit], "{}", preview.body);
        let r = app.post("/api/v1/applications", &t.owner, deploy("web")).await;
        r.problem(StatusCode::FORBIDDEN, "quota-exceeded");
        assert_eq!(r.body["errors"][0]["field"], limit, "{quota}");
        assert_eq!(app.row_counts().await, before, "an over-quota deploy or its preview wrote something");
    }
    // What a preview says, line by line: the services with their reservations, the default route, and
    // each quota's usage, addition and limit (here the limits of the last case).
    let preview = app.post("/api/v1/applications/preview", &t.owner, deploy("web")).await.body;
    let web = preview["services"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap().clone();
    assert_eq!((web["replicas"].as_i64(), web["cpus"].as_f64(), web["memory_mb"].as_i64()), (Some(2), Some(0.25), Some(64)));
    assert_eq!(preview["routes"], json!([format!("web.web.{}.apps.localhost", t.slug)]), "{preview}");
    let memory = preview["quota"].as_array().unwrap().iter().find(|q| q["quota"] == "max_memory_mb").unwrap().clone();
    assert_eq!(memory, json!({"quota": "max_memory_mb", "in_use": 0.0, "adds": 128.0, "limit": 100.0, "over": true}));
    // The same checks as a deploy, with the same errors.
    let broken = json!({"name": "web", "cluster_id": cluster.id(), "compose": "services:\n  web: {}\n"});
    let r = app.post("/api/v1/applications/preview", &t.owner, broken).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
    assert_eq!((r.body["errors"][0]["field"].as_str(), r.body["line"].as_i64()), (Some("compose.services.web.image"), Some(2)));
    let nowhere = json!({"name": "web", "cluster_id": uuid::Uuid::nil(), "template_id": template});
    let r = app.post("/api/v1/applications/preview", &t.owner, nowhere).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(r.body["errors"][0]["field"], "cluster_id");
    // Exactly at the limit fits.
    app.put(&quotas, &app.admin, json!({"max_applications": 1, "max_services": 2, "max_cpus": 0.5, "max_memory_mb": 128}))
        .await
        .expect(StatusCode::OK);
    let a = app.post("/api/v1/applications", &t.owner, deploy("web")).await;
    a.expect(StatusCode::ACCEPTED);
    let report = app.get("/api/v1/quotas", &t.owner).await;
    assert_eq!(report.body["usage"]["applications"], 1);
    assert_eq!(report.body["usage"]["services"], 2);
    assert_eq!(report.body["usage"]["cpus"], 0.5);
    assert_eq!(report.body["usage"]["memory_mb"], 128);
    // Scaling a service past the reservation quota is refused; scaling down is not.
    let services = app.get(&format!("/api/v1/applications/{}/services", a.id()), &t.owner).await;
    let web = services.body["items"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app.patch(&format!("/api/v1/services/{web}"), &t.owner, json!({"replicas": 3})).await;
    r.problem(StatusCode::FORBIDDEN, "quota-exceeded");
    assert_eq!(r.body["errors"][0]["field"], "max_cpus");
    app.patch(&format!("/api/v1/services/{web}"), &t.owner, json!({"replicas": 1})).await.expect(StatusCode::ACCEPTED);
    // A name in use is the deploy's 409, before anything else.
    app.post("/api/v1/applications/preview", &t.owner, deploy("web")).await.problem(StatusCode::CONFLICT, "name-taken");
    // With the one application allowed in use, a second is refused.
    app.post("/api/v1/applications", &t.owner, deploy("second")).await.problem(StatusCode::FORBIDDEN, "quota-exceeded");

    // Missing fields mean unlimited.
    app.put(&quotas, &app.admin, json!({})).await.expect(StatusCode::OK);
    app.post("/api/v1/clusters", &t.owner, json!({"name": "two", "managers": 3, "workers": 5}))
        .await
        .expect(StatusCode::ACCEPTED);
    let got = app.get(&quotas, &app.admin).await;
    assert!(got.body["quotas"]["max_clusters"].is_null());
    // Negative quotas are refused with the field named.
    let r = app.put(&quotas, &app.admin, json!({"max_nodes": -1})).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(r.body["errors"][0]["field"], "max_nodes");
}

#[tokio::test]
async fn concurrent_creates_cannot_overshoot_a_quota() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    app.put(&format!("/api/v1/admin/tenants/{}/quotas", t.id), &app.admin, json!({"max_clusters": 3}))
        .await
        .expect(StatusCode::OK);
    let attempts =
        (0..12).map(|i| app.post("/api/v1/clusters", &t.owner, json!({"name": format!("c{i}"), "managers": 1, "workers": 0})));
    let results = futures_util::future::join_all(attempts).await;
    let accepted = results.iter().filter(|r| r.status == StatusCode::ACCEPTED).count();
    let refused = results.iter().filter(|r| r.status == StatusCode::FORBIDDEN).count();
    assert_eq!((accepted, refused), (3, 9));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters").fetch_one(&app.db).await.unwrap();
    assert_eq!(n, 3);
}

/// The platform admin's view of a tenant's quotas and usage reads across tenants (the system pool), and
/// shows what the tenant's own view shows.
#[tokio::test]
async fn the_platform_admin_sees_a_tenants_real_quotas_and_usage() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    app.put(&format!("/api/v1/admin/tenants/{}/quotas", t.id), &app.admin, json!({"max_clusters": 2, "max_nodes": 5}))
        .await
        .expect(StatusCode::OK);
    let admin_view = app.get(&format!("/api/v1/admin/tenants/{}/quotas", t.id), &app.admin).await;
    admin_view.expect(StatusCode::OK);
    let own_view = app.get("/api/v1/quotas", &t.owner).await;
    own_view.expect(StatusCode::OK);
    assert_eq!(admin_view.body, own_view.body);
    assert_eq!(admin_view.body["quotas"]["max_nodes"], 5, "{}", admin_view.body);
}
