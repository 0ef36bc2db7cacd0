//! One of every kind of tenant object, for tests that act on them.

use berth_tests::{Tenant, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

pub const COMPOSE: &str = "services:
  web:
    image: ${IMAGE:-busybox}:${TAG:-1}
    ports: [{target: 80, mode: host}]
    deploy:
      replicas: 2
      resources:
        reservations: {cpus: '0.25', memory: 64M}
  worker:
    image: busybox
";

/// Ids of one object of each kind, all in one tenant.
#[derive(Clone, Debug)]
pub struct Objects {
    pub cluster: Uuid,
    pub node: Uuid,
    pub template: Uuid,
    pub registry: Uuid,
    pub application: Uuid,
    pub service: Uuid,
    pub route: Uuid,
    pub release: Uuid,
    pub certificate: Uuid,
    pub balancer: Uuid,
    pub job: Uuid,
    pub user: Uuid,
    pub token: Uuid,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..8])
}

pub async fn cluster(app: &TestApp, token: &str) -> Uuid {
    let r =
        app.post("/api/v1/clusters", token, json!({"name": unique("c"), "provider": "local", "managers": 1, "workers": 1})).await;
    r.expect(StatusCode::ACCEPTED);
    r.id()
}

pub async fn template(app: &TestApp, token: &str) -> Uuid {
    let r = app.post("/api/v1/templates", token, json!({"name": unique("t"), "compose": COMPOSE})).await;
    r.expect(StatusCode::CREATED);
    r.id()
}

/// A registry row of the caller's tenant. Written straight to the database: adding one through the API
/// checks it against a live registry (see the registry tests), which these tests of other rules do
/// not need.
pub async fn registry(app: &TestApp, token: &str) -> Uuid {
    let me = app.get("/api/v1/me", token).await;
    let tenant: Uuid = me.body["tenant"]["id"].as_str().unwrap().parse().unwrap();
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO registries (id, tenant_id, name, address, username) VALUES ($1, $2, $3, '10.213.0.1:1', 'u')")
        .bind(id)
        .bind(tenant)
        .bind(unique("r"))
        .execute(&app.db)
        .await
        .unwrap();
    id
}

pub async fn application(app: &TestApp, token: &str, cluster: Uuid, template: Uuid) -> Uuid {
    let r = app
        .post("/api/v1/applications", token, json!({"name": unique("a"), "cluster_id": cluster, "template_id": template}))
        .await;
    r.expect(StatusCode::ACCEPTED);
    r.id()
}

/// A running release of a new application of the tenant's. Written straight to the database: a release
/// through the API needs the application running on a real cluster (see the releases tests), which
/// these tests of other rules do not have. It "releases" the revision the application runs, so a
/// promotion has a revision to apply.
pub async fn release(app: &TestApp, token: &str, cluster: Uuid, template: Uuid) -> Uuid {
    let application = application(app, token, cluster, template).await;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO releases (id, tenant_id, application_id, from_revision, to_revision, strategy, weight, state)
         SELECT $1, tenant_id, id, 1, 1, 'canary', 10, 'running' FROM applications WHERE id = $2",
    )
    .bind(id)
    .bind(application)
    .execute(&app.db)
    .await
    .unwrap();
    id
}

/// An ACME certificate of the tenant's, pending (no authority is reached: written straight to the
/// database, as the API needs a routed name).
pub async fn certificate(app: &TestApp, token: &str) -> Uuid {
    let me = app.get("/api/v1/me", token).await;
    let tenant: Uuid = me.body["tenant"]["id"].as_str().unwrap().parse().unwrap();
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO certificates (id, tenant_id, domain, source) VALUES ($1, $2, $3, 'acme')")
        .bind(id)
        .bind(tenant)
        .bind(format!("{}.example.net", unique("cert")))
        .execute(&app.db)
        .await
        .unwrap();
    id
}

/// A load balancer without listeners on the cluster.
pub async fn load_balancer(app: &TestApp, token: &str, cluster: Uuid) -> Uuid {
    let r = app.post("/api/v1/load-balancers", token, json!({"name": unique("lb"), "cluster_id": cluster})).await;
    r.expect(StatusCode::CREATED);
    r.id()
}

pub async fn tenant_user(app: &TestApp, owner: &str) -> Uuid {
    let r = app
        .post(
            "/api/v1/users",
            owner,
            json!({"email": format!("{}@example.test", unique("u")), "password": "password-123", "role": "viewer"}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    r.id()
}

pub async fn objects(app: &TestApp, t: &Tenant) -> Objects {
    let cluster = cluster(app, &t.owner).await;
    let nodes = app.get(&format!("/api/v1/clusters/{cluster}/nodes"), &t.owner).await;
    let node = nodes.body["items"][0]["id"].as_str().unwrap().parse().unwrap();
    let template = template(app, &t.owner).await;
    let application = application(app, &t.owner, cluster, template).await;
    let services = app.get(&format!("/api/v1/applications/{application}/services"), &t.owner).await;
    let service = services.body["items"][0]["id"].as_str().unwrap().parse().unwrap();
    let routes = app.get(&format!("/api/v1/routes?application_id={application}"), &t.owner).await;
    let route = routes.body["items"][0]["id"].as_str().unwrap().parse().unwrap();
    let jobs = app.get("/api/v1/jobs", &t.owner).await;
    let job = jobs.body["items"][0]["id"].as_str().unwrap().parse().unwrap();
    let token = app.post("/api/v1/tokens", &t.owner, json!({"name": "fixture", "role": "viewer"})).await;
    Objects {
        cluster,
        node,
        template,
        registry: registry(app, &t.owner).await,
        application,
        service,
        route,
        release: release(app, &t.owner, cluster, template).await,
        certificate: certificate(app, &t.owner).await,
        balancer: load_balancer(app, &t.owner, cluster).await,
        job,
        user: tenant_user(app, &t.owner).await,
        token: token.id(),
    }
}
