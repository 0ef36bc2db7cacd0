//! The resources' behaviour: desired state plus queued jobs, versions and revisions, pagination,
//! idempotency keys, the audit log, and the operability endpoints.

use berth_tests::TestApp;
use reqwest::StatusCode;
use serde_json::json;

use crate::fixtures;

#[tokio::test]
async fn creating_a_cluster_writes_its_nodes_and_queues_a_job() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let r =
        app.post("/api/v1/clusters", &t.owner, json!({"name": "prod", "provider": "local", "managers": 1, "workers": 2})).await;
    r.expect(StatusCode::ACCEPTED);
    assert_eq!(r.body["status"], "provisioning");
    assert_eq!((r.body["managers"].as_i64(), r.body["workers"].as_i64()), (Some(1), Some(2)));
    let job_id = r.body["job_id"].as_str().unwrap();
    let job = app.get(&format!("/api/v1/jobs/{job_id}"), &t.owner).await;
    job.expect(StatusCode::OK);
    assert_eq!(job.body["kind"], "cluster.create");
    assert_eq!(job.body["state"], "queued");
    assert_eq!(job.body["target_id"], r.body["id"]);
    assert!(!job.body["logs"].as_array().unwrap().is_empty());

    let nodes = app.get(&format!("/api/v1/clusters/{}/nodes", r.id()), &t.owner).await;
    let mut names: Vec<(String, String, String)> = nodes.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap().into(), n["role"].as_str().unwrap().into(), n["state"].as_str().unwrap().into()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [("prod-manager-1", "manager"), ("prod-worker-1", "worker"), ("prod-worker-2", "worker")].map(|(n, r)| (
            n.to_owned(),
            r.to_owned(),
            "pending".to_owned()
        ))
    );
    // Names are unique per tenant.
    app.post("/api/v1/clusters", &t.owner, json!({"name": "prod", "managers": 1, "workers": 0}))
        .await
        .problem(StatusCode::CONFLICT, "name-taken");
    // Scale down marks the highest-numbered workers for removal; delete queues teardown.
    app.patch(&format!("/api/v1/clusters/{}", r.id()), &t.owner, json!({"workers": 1})).await.expect(StatusCode::ACCEPTED);
    let removing: Vec<String> =
        sqlx::query_scalar("SELECT name FROM nodes WHERE state = 'removing'").fetch_all(&app.db).await.unwrap();
    assert_eq!(removing, ["prod-worker-2"]);
    let d = app.delete(&format!("/api/v1/clusters/{}", r.id()), &t.owner).await;
    d.expect(StatusCode::ACCEPTED);
    assert_eq!(d.body["status"], "deleting");
    app.patch(&format!("/api/v1/clusters/{}", r.id()), &t.owner, json!({"workers": 2}))
        .await
        .problem(StatusCode::CONFLICT, "cluster-deleting");
    // A tenant with clusters cannot be deleted out from under them.
    app.delete(&format!("/api/v1/admin/tenants/{}", t.id), &app.admin).await.problem(StatusCode::CONFLICT, "tenant-has-clusters");
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM jobs ORDER BY id").fetch_all(&app.db).await.unwrap();
    assert_eq!(kinds, ["cluster.create", "cluster.scale", "cluster.delete"]);
}

#[tokio::test]
async fn templates_are_versioned_and_applications_keep_revisions() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let cluster = fixtures::cluster(&app, &t.owner).await;
    let created = app
        .post("/api/v1/templates", &t.owner, json!({"name": "shop", "compose": fixtures::COMPOSE, "description": "a shop"}))
        .await;
    created.expect(StatusCode::CREATED);
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["services"], json!(["web", "worker"]));
    assert_eq!(
        created.body["variables"],
        json!({"IMAGE": {"default": "busybox", "required": false}, "TAG": {"default": "1", "required": false}})
    );
    let id = created.id();

    let v2 = fixtures::COMPOSE.replace("replicas: 2", "replicas: 4");
    let edited = app.patch(&format!("/api/v1/templates/{id}"), &t.owner, json!({"compose": v2})).await;
    edited.expect(StatusCode::OK);
    assert_eq!(edited.body["version"], 2);
    app.patch(&format!("/api/v1/templates/{id}"), &t.owner, json!({"description": "renamed"})).await.expect(StatusCode::OK);
    let got = app.get(&format!("/api/v1/templates/{id}"), &t.owner).await;
    assert_eq!((got.body["version"].as_i64(), got.body["description"].as_str()), (Some(2), Some("renamed")));
    let versions = app.get(&format!("/api/v1/templates/{id}/versions"), &t.owner).await;
    assert_eq!(versions.body["items"].as_array().unwrap().len(), 2);
    let v1 = app.get(&format!("/api/v1/templates/{id}/versions/1"), &t.owner).await;
    assert_eq!(v1.body["compose"], fixtures::COMPOSE);
    app.get(&format!("/api/v1/templates/{id}/versions/3"), &t.owner).await.problem(StatusCode::NOT_FOUND, "not-found");

    // Deploy version 1 with a variable; the services follow the template.
    let a = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "shop", "cluster_id": cluster, "template_id": id, "template_version": 1, "variables": {"TAG": "7"}}),
        )
        .await;
    a.expect(StatusCode::ACCEPTED);
    assert_eq!(a.body["revision"], 1);
    let services = app.get(&format!("/api/v1/applications/{}/services", a.id()), &t.owner).await;
    let web = services.body["items"].as_array().unwrap().iter().find(|s| s["name"] == "web").unwrap().clone();
    assert_eq!((web["image"].as_str(), web["replicas_desired"].as_i64()), (Some("busybox:7"), Some(2)));
    // Unknown variables are named.
    let r = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "x", "cluster_id": cluster, "template_id": id, "variables": {"NOPE": "1"}}),
        )
        .await;
    assert_eq!(r.body["errors"][0]["field"], "variables.NOPE");
    // Redeploy on version 2: a new revision, services updated in place.
    let up = app.patch(&format!("/api/v1/applications/{}", a.id()), &t.owner, json!({"template_version": 2})).await;
    up.expect(StatusCode::ACCEPTED);
    assert_eq!(up.body["revision"], 2);
    let svc = app.get(&format!("/api/v1/services/{}", web["id"].as_str().unwrap()), &t.owner).await;
    assert_eq!((svc.body["replicas_desired"].as_i64(), svc.body["image"].as_str()), (Some(4), Some("busybox:7")));
    let revs = app.get(&format!("/api/v1/applications/{}/revisions", a.id()), &t.owner).await;
    assert_eq!(revs.body["items"][1]["template_version"], 2);
    assert_eq!(revs.body["items"][1]["variables"], json!({"TAG": "7"}));
    // A template in use cannot be deleted.
    app.delete(&format!("/api/v1/templates/{id}"), &t.owner).await.problem(StatusCode::CONFLICT, "template-in-use");
    let containers = app.get(&format!("/api/v1/services/{}/containers", web["id"].as_str().unwrap()), &t.owner).await;
    assert_eq!(containers.body, json!({"items": [], "next_cursor": null}));
}

#[tokio::test]
async fn lists_page_with_cursors_and_list_100_templates() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let mut created = Vec::new();
    for i in 0..120 {
        created.push(
            app.post("/api/v1/templates", &t.owner, json!({"name": format!("t{i:03}"), "compose": fixtures::COMPOSE})).await.id(),
        );
    }
    let first = app.get("/api/v1/templates?limit=100", &t.owner).await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 100);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app.get(&format!("/api/v1/templates?limit=100&cursor={cursor}"), &t.owner).await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 20);
    assert!(second.body["next_cursor"].is_null());
    let seen: Vec<uuid::Uuid> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["items"].as_array().unwrap())
        .map(|i| i["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seen, created, "every item once, in creation order");
    let default = app.get("/api/v1/templates", &t.owner).await;
    assert_eq!(default.body["items"].as_array().unwrap().len(), 50);
}

#[tokio::test]
async fn idempotency_keys_replay_instead_of_acting_twice() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let send = |key: &'static str, name: &'static str| {
        app.http
            .post(app.url("/api/v1/clusters"))
            .bearer_auth(&t.owner)
            .header("idempotency-key", key)
            .json(&json!({"name": name, "managers": 1, "workers": 0}))
            .send()
    };
    let first = berth_tests::Resp::from(send("k-1", "one").await.unwrap()).await;
    first.expect(StatusCode::ACCEPTED);
    let again = berth_tests::Resp::from(send("k-1", "one").await.unwrap()).await;
    again.expect(StatusCode::ACCEPTED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM clusters").fetch_one(&app.db).await.unwrap();
    assert_eq!(n, 1);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&app.db).await.unwrap();
    assert_eq!(jobs, 1);
    // The same key with another body is a mistake worth reporting.
    let other = berth_tests::Resp::from(send("k-1", "two").await.unwrap()).await;
    other.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    // Another caller's identical key is theirs alone.
    let other_tenant = app.tenant("Other").await;
    let theirs = app
        .http
        .post(app.url("/api/v1/clusters"))
        .bearer_auth(&other_tenant.owner)
        .header("idempotency-key", "k-1")
        .json(&json!({"name": "one", "managers": 1, "workers": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn mutations_are_audited_with_actor_outcome_and_request_id() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let viewer = app.user(&t.owner, "viewer").await;
    let created = app
        .http
        .post(app.url("/api/v1/templates"))
        .bearer_auth(&t.owner)
        .header("x-request-id", "req-abc-123")
        .json(&json!({"name": "web", "compose": fixtures::COMPOSE}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.headers().get("x-request-id").unwrap(), "req-abc-123");
    let template_id = berth_tests::Resp::from(created).await.id();
    app.post("/api/v1/templates", &viewer, json!({"name": "nope", "compose": fixtures::COMPOSE}))
        .await
        .expect(StatusCode::FORBIDDEN);
    app.post("/api/v1/templates", &t.owner, json!({"name": "web", "compose": fixtures::COMPOSE}))
        .await
        .expect(StatusCode::CONFLICT);

    let log = app.get("/api/v1/audit?limit=500", &t.owner).await;
    let entries = log.body["items"].as_array().unwrap();
    let ok = entries.iter().find(|e| e["request_id"] == "req-abc-123").expect("audited with the request id");
    assert_eq!(ok["action"], "template.create");
    assert_eq!(ok["target_id"], template_id.to_string());
    assert_eq!(ok["outcome"], "success");
    assert_eq!(ok["actor_type"], "user");
    assert!(ok["actor_label"].as_str().unwrap().starts_with("owner@"));
    assert_eq!(ok["tenant_id"], t.id.to_string());
    assert!(entries.iter().any(|e| e["outcome"] == "denied"
        && e["status_code"] == 403
        && e["actor_label"].as_str().unwrap().starts_with("viewer-")));
    assert!(entries.iter().any(|e| e["outcome"] == "failure" && e["status_code"] == 409));
    // Reads are not audited; the platform admin sees every tenant's entries, including tenant creation.
    assert!(entries.iter().all(|e| !e["action"].as_str().unwrap().starts_with("GET")));
    let all = app.get("/api/v1/audit?limit=500", &app.admin).await;
    assert!(
        all.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "tenant.create" && e["target_id"] == t.id.to_string())
    );
    assert!(all.body["items"].as_array().unwrap().len() > entries.len());
}

#[tokio::test]
async fn health_readiness_metrics_and_docs_are_served() {
    let app = TestApp::spawn().await;
    let get = |p: &str| app.http.get(app.url(p)).send();
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    app.get("/api/v1/clusters", &app.admin).await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"berth_http_requests_total{method="GET",route="/api/v1/clusters",status="403"} 1"#), "{metrics}");
    assert!(
        metrics.contains(
            "berth_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\",status=\"200\",le=\"+Inf\"} 1"
        )
    );
    assert!(metrics.contains("berth_jobs{state=\"queued\"} 0"));
    let docs = get("/api/docs/").await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().to_lowercase().contains("swagger"));
    let spec: serde_json::Value = get("/api/openapi.json").await.unwrap().json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    // Readiness follows the schema: with a migration record missing, the server is not ready.
    sqlx::query("UPDATE _sqlx_migrations SET success = false").execute(&app.db).await.unwrap();
    assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn tenants_get_unique_dns_safe_slugs_and_can_be_deleted() {
    let app = TestApp::spawn().await;
    let a = app.tenant("Acme Corp").await;
    let b = app.tenant("ACME corp!").await;
    let c = app.tenant("Acme-Corp").await;
    assert_eq!((a.slug.as_str(), b.slug.as_str(), c.slug.as_str()), ("acme-corp", "acme-corp-2", "acme-corp-3"));
    let list = app.get("/api/v1/admin/tenants", &app.admin).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 3);
    fixtures::template(&app, &b.owner).await;
    app.delete(&format!("/api/v1/admin/tenants/{}", b.id), &app.admin).await.expect(StatusCode::NO_CONTENT);
    app.get(&format!("/api/v1/admin/tenants/{}", b.id), &app.admin).await.problem(StatusCode::NOT_FOUND, "not-found");
    app.get("/api/v1/me", &b.owner).await.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM templates").fetch_one(&app.db).await.unwrap();
    assert_eq!(left, 0);
}

/// Reads Server-Sent Events from `path` until `n` events have arrived (or 10 s pass).
#[tokio::test]
async fn the_event_stream_shows_a_tenant_its_own_changes_only() {
    let app = TestApp::spawn().await;
    let a = app.tenant("A").await;
    let b = app.tenant("B").await;
    let a_cluster = app.post("/api/v1/clusters", &a.owner, json!({"name": "one", "managers": 1, "workers": 0})).await.id();
    let b_cluster = app.post("/api/v1/clusters", &b.owner, json!({"name": "two", "managers": 1, "workers": 0})).await.id();
    // From the start of the feed: each tenant sees its own cluster's job, and nothing of the other's.
    let a_events = app.read_events(&a.owner, "/api/v1/events?after=0", 1).await;
    let b_events = app.read_events(&b.owner, "/api/v1/events?after=0", 1).await;
    assert_eq!(
        (a_events[0]["kind"].as_str(), a_events[0]["target_id"].as_str()),
        (Some("job.queued"), Some(a_cluster.to_string().as_str()))
    );
    assert_eq!(
        (b_events[0]["kind"].as_str(), b_events[0]["target_id"].as_str()),
        (Some("job.queued"), Some(b_cluster.to_string().as_str()))
    );
    // Resuming after the last seen id delivers only what came later.
    let after = a_events[0]["id"].as_i64().unwrap();
    let later = app.post("/api/v1/clusters", &a.owner, json!({"name": "later", "managers": 1, "workers": 0})).await.id();
    let next = app.read_events(&a.owner, &format!("/api/v1/events?after={after}"), 1).await;
    assert_eq!(next[0]["target_id"], later.to_string());
    // Platform admins have no tenant feed; the unauthenticated get nothing.
    app.get("/api/v1/events", &app.admin).await.problem(StatusCode::FORBIDDEN, "forbidden");
    app.call(reqwest::Method::GET, "/api/v1/events", None, None).await.problem(StatusCode::UNAUTHORIZED, "unauthorized");
}
