//! Tenant isolation: tenant B, whatever its role, cannot see or touch tenant A's objects. Another
//! tenant's object answers 404 — exactly like an object that does not exist — and nothing changes.

use berth_tests::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

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
        (M::GET, format!("/api/v1/applications/{}", o.application), None),
        (M::PATCH, format!("/api/v1/applications/{}", o.application), Some(json!({}))),
        (M::DELETE, format!("/api/v1/applications/{}", o.application), None),
        (M::GET, format!("/api/v1/applications/{}/revisions", o.application), None),
        (M::GET, format!("/api/v1/routes/{}", o.route), None),
        (M::PATCH, format!("/api/v1/routes/{}", o.route), Some(json!({"sticky": true}))),
        (M::DELETE, format!("/api/v1/routes/{}", o.route), None),
        (M::GET, format!("/api/v1/applications/{}/releases", o.application), None),
        (M::POST, format!("/api/v1/applications/{}/releases", o.application), Some(json!({"variables": {"TAG": "3"}}))),
        (M::GET, format!("/api/v1/releases/{}", o.release), None),
        (M::PATCH, format!("/api/v1/releases/{}", o.release), Some(json!({"weight": 50}))),
        (M::POST, format!("/api/v1/releases/{}/promote", o.release), Some(json!({}))),
        (M::POST, format!("/api/v1/releases/{}/abort", o.release), Some(json!({}))),
        (M::GET, format!("/api/v1/certificates/{}", o.certificate), None),
        (M::POST, format!("/api/v1/certificates/{}/renew", o.certificate), Some(json!({}))),
        (M::DELETE, format!("/api/v1/certificates/{}", o.certificate), None),
        (M::GET, format!("/api/v1/load-balancers/{}", o.balancer), None),
        (M::PUT, format!("/api/v1/load-balancers/{}/listeners", o.balancer), Some(json!({"listeners": []}))),
        (M::DELETE, format!("/api/v1/load-balancers/{}", o.balancer), None),
        (M::GET, format!("/api/v1/applications/{}/services", o.application), None),
        (M::GET, format!("/api/v1/services/{}", o.service), None),
        (M::PATCH, format!("/api/v1/services/{}", o.service), Some(json!({"replicas": 9}))),
        (M::GET, format!("/api/v1/services/{}/containers", o.service), None),
        (M::POST, format!("/api/v1/applications/{}/rollback", o.application), Some(json!({"revision": 1}))),
        (M::POST, format!("/api/v1/services/{}/restart", o.service), Some(json!({}))),
        (M::GET, format!("/api/v1/services/{}/logs", o.service), None),
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
                .replace(&o.application.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.service.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.job.to_string(), &uuid::Uuid::now_v7().to_string())
                .replace(&o.route.to_string(), &uuid::Uuid::now_v7().to_string())
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
        "/api/v1/routes",
        "/api/v1/jobs",
        "/api/v1/users",
        "/api/v1/tokens",
    ] {
        let r = app.get(list, &b.owner).await;
        r.expect(StatusCode::OK);
        let a_ids = [o.cluster, o.template, o.registry, o.application, o.route, o.job, o.user, o.token].map(|id| id.to_string());
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
    // Routing to A's service is refused the same way.
    let r =
        app.post("/api/v1/routes", &b.owner, json!({"service_id": o.service, "port": 80, "domain": "steal.example.com"})).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(r.body["errors"][0]["field"], "service_id");
    assert_eq!(app.row_counts().await, before);
}

/// Row-level security, the second wall: a deliberately unscoped query (no tenant filter at all) through
/// the tenant pool sees only the scoped tenant's rows, writes to another tenant's rows are refused by
/// the database itself, and every table with a `tenant_id` is covered.
#[tokio::test]
async fn row_level_security_holds_an_unscoped_query_to_the_callers_tenant() {
    let app = TestApp::spawn().await;
    let a = app.tenant("Alpha").await;
    let b = app.tenant("Beta").await;
    let compose = "services:\n  web:\n    image: busybox\n";
    app.post("/api/v1/templates", &a.owner, json!({"name": "alpha-web", "compose": compose})).await.expect(StatusCode::CREATED);
    app.post("/api/v1/templates", &b.owner, json!({"name": "beta-web", "compose": compose})).await.expect(StatusCode::CREATED);

    let pools = berth::db::Pools::lazy(berth_tests::connect_options(&app.db_name), 2);
    let unscoped = "SELECT name FROM templates ORDER BY name";
    let seen: Vec<String> = berth::db::scoped(Some(a.id), sqlx::query_scalar(unscoped).fetch_all(&pools.tenant)).await.unwrap();
    assert_eq!(seen, ["alpha-web"], "scoped to Alpha, the tenant pool shows only Alpha's rows");
    let seen: Vec<String> = sqlx::query_scalar(unscoped).fetch_all(&pools.tenant).await.unwrap();
    assert!(seen.is_empty(), "outside any scope the tenant pool shows no tenant rows: {seen:?}");
    let seen: Vec<String> = sqlx::query_scalar(unscoped).fetch_all(&pools.system).await.unwrap();
    assert_eq!(seen, ["alpha-web", "beta-web"], "the system pool is the visible exception");

    // Writing Beta's rows from Alpha's scope: updates find nothing, inserts are refused.
    let updated = berth::db::scoped(
        Some(a.id),
        sqlx::query("UPDATE templates SET name = 'stolen' WHERE tenant_id = $1").bind(b.id).execute(&pools.tenant),
    )
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let inserted = berth::db::scoped(
        Some(a.id),
        sqlx::query("INSERT INTO templates (id, tenant_id, name) VALUES ($1, $2, 'planted')")
            .bind(Uuid::now_v7())
            .bind(b.id)
            .execute(&pools.tenant),
    )
    .await;
    let err = inserted.expect_err("the database refuses a row for another tenant").to_string();
    assert!(err.contains("row-level security"), "{err}");

    // The scope is set on every connection taken, so a connection used for Beta and handed back is
    // scoped afresh for the next taker.
    let seen: Vec<String> = berth::db::scoped(Some(b.id), sqlx::query_scalar(unscoped).fetch_all(&pools.tenant)).await.unwrap();
    assert_eq!(seen, ["beta-web"]);
    let seen: Vec<String> = berth::db::scoped(Some(a.id), sqlx::query_scalar(unscoped).fetch_all(&pools.tenant)).await.unwrap();
    assert_eq!(seen, ["alpha-web"]);

    // Every table holding tenants' rows has a forced policy.
    let uncovered: Vec<String> = sqlx::query_scalar(
        "SELECT c.table_name::text FROM information_schema.columns c
           JOIN pg_class t ON t.relname = c.table_name AND t.relkind = 'r'
          WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id'
            AND NOT (t.relrowsecurity AND t.relforcerowsecurity)",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(uncovered.is_empty(), "tables with tenant rows but no row-level security: {uncovered:?}");
    pools.close().await;
}
