//! Tenant isolation: tenant B, whatever its role, cannot see or touch tenant A's objects. Another
//! tenant's object answers 404 — exactly like an object that does not exist — and nothing changes.

use berth_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::fixtures;

#[tokio::test]
async fn another_tenants_objects_are_404_on_every_verb_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let a = app.tenant("Tenant A").await;
    let b = app.tenant("Tenant B").await;
    let o = fixtures::objects(&app, &a).await;
    let b_token = app.api_token(&b.owner, "owner").await;
    let b_admin = app.user(&b.owner, "admin").await;

    use Method as M;
    let calls: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (M::GET, format!("/api/v1/clusters/{}", o.cluster), None),
        (M::PATCH, format!("/api/v1/clusters/{}", o.cluster), Some(json!({"workers": 3}))),
        (M::DELETE, format!("/api/v1/clusters/{}", o.cluster), None),
        (M::GET, format!("/api/v1/clusters/{}/nodes", o.cluster), None),
        (M::GET, format!("/api/v1/nodes/{}", o.node), None),
        (M::POST, format!("/api/v1/nodes/{}/restart", o.node), Some(json!({}))),
        (M::GET, format!("/api/v1/clusters/{}/credentials", o.cluster), None),
        (M::PATCH, format!("/api/v1/nodes/{}", o.node), Some(json!({"availability": "drain"}))),
        (M::GET, format!("/api/v1/templates/{}", o.template), None),
        (M::PATCH, format!("/api/v1/templates/{}", o.template), Some(json!({"compose": fixtures::COMPOSE}))),
        (M::DELETE, format!("/api/v1/templates/{}", o.template), None),
        (M::GET, format!("/api/v1/templates/{}/versions", o.template), None),
        (M::GET, format!("/api/v1/templates/{}/versions/1", o.template), None),
        (M::GET, format!("/api/v1/registries/{}", o.registry), None),
        (M::DELETE, format!("/api/v1/registries/{}", o.registry), None),
        (M::GET, format!("/api/v1/images/{}", o.image), None),
        (M::DELETE, format!("/api/v1/images/{}", o.image), None),
        (M::GET, format!("/api/v1/applications/{}", o.application), None),
        (M::PATCH, format!("/api/v1/applications/{}", o.application), Some(json!({}))),
        (M::DELETE, format!("/api/v1/applications/{}", o.application), None),
        (M::GET, format!("/api/v1/applications/{}/revisions", o.application), None),
        (M::GET, format!("/api/v1/applications/{}/services", o.application), None),
        (M::GET, format!("/api/v1/services/{}", o.service), None),
        (M::PATCH, format!("/api/v1/services/{}", o.service), Some(json!({"replicas": 9}))),
        (M::GET, format!("/api/v1/services/{}/containers", o.service), None),
        (M::GET, format!("/api/v1/jobs/{}", o.job), None),
        (M::GET, format!("/api/v1/users/{}", o.user), None),
        (M::PATCH, format!("/api/v1/users/{}", o.user), Some(json!({"role": "admin"}))),
        (M::DELETE, format!("/api/v1/users/{}", o.user), None),
        (M::DELETE, format!("/api/v1/tokens/{}", o.token), None),
    ];

    let before = app.row_counts().await;
    let a_cluster_before = app.get(&format!("/api/v1/clusters/{}", o.cluster), &a.owner).await.body;
    for caller in [&b.owner, &b_token, &b_admin] {
        for (method, path, body) in &calls {
            let r = app.call(method.clone(), path, Some(caller), body.clone()).await;
            r.problem(StatusCode::NOT_FOUND, "not-found");
            // The answer is the same as for an id that exists nowhere: nothing tells B that A's object exists.
            let nowhere = path
                .replace(&o.cluster.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.node.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.template.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.registry.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.image.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.application.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.service.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.job.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.user.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.token.to_string(), &uuid::Uuid::now_v7().to_string());
            let r2 = app.call(method.clone(), &nowhere, Some(caller), body.clone()).await;
            assert_eq!(
                (r.status, &r.body["type"], &r.body["detail"]),
                (r2.status, &r2.body["type"], &r2.body["detail"]),
                "{method} {path}"
            );
        }
    }
    assert_eq!(app.row_counts().await, before, "a cross-tenant call changed something");
    assert_eq!(app.get(&format!("/api/v1/clusters/{}", o.cluster), &a.owner).await.body, a_cluster_before);

    // B's lists never show A's objects.
    for list in [
        "/api/v1/clusters",
        "/api/v1/templates",
        "/api/v1/registries",
        "/api/v1/images",
        "/api/v1/applications",
        "/api/v1/jobs",
        "/api/v1/users",
        "/api/v1/tokens",
    ] {
        let r = app.get(list, &b.owner).await;
        r.expect(StatusCode::OK);
        let a_ids = [o.cluster, o.template, o.registry, o.image, o.application, o.job, o.user, o.token].map(|id| id.to_string());
        for item in r.body["items"].as_array().unwrap() {
            assert!(!a_ids.contains(&item["id"].as_str().unwrap().to_owned()), "{list} shows A's {item}");
        }
    }
    // B's audit log shows only B's entries.
    let audit = app.get("/api/v1/audit?limit=500", &b.owner).await;
    for e in audit.body["items"].as_array().unwrap() {
        assert_eq!(e["tenant_id"].as_str().unwrap(), b.id.to_string(), "{e}");
    }
    // Referring to A's objects from B's request body is refused as if they did not exist.
    let r = app
        .post("/api/v1/applications", &b.owner, json!({"name": "steal", "cluster_id": o.cluster, "template_id": o.template}))
        .await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(r.body["errors"][0]["field"], "template_id");
    let r = app.post("/api/v1/images", &b.owner, json!({"repository": "x", "registry_id": o.registry})).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(app.row_counts().await, before);
}
