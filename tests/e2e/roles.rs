//! The role × endpoint matrix: for every route and every kind of caller, the exact status.

use berth_tests::TestApp;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{self, Objects};

/// Callers, in the order of each case's expected statuses.
const CALLERS: [&str; 7] = ["anonymous", "viewer", "developer", "admin", "owner", "developer API token", "platform admin"];

#[derive(Clone, Copy, PartialEq)]
enum Fresh {
    No,
    Cluster,
    Template,
    Registry,
    Application,
    User,
    Token,
    Tenant,
    Node,
    Route,
    Release,
    Certificate,
    LoadBalancer,
}

struct Case {
    method: Method,
    path: &'static str,
    /// An object created anew for each caller, for calls that consume it (deletes, suspensions).
    fresh: Fresh,
    body: fn(&str) -> Option<Value>,
    expect: [u16; 7],
}

fn none(_: &str) -> Option<Value> {
    None
}

fn case(method: Method, path: &'static str, expect: [u16; 7]) -> Case {
    Case { method, path, fresh: Fresh::No, body: none, expect }
}

fn with_body(method: Method, path: &'static str, body: fn(&str) -> Option<Value>, expect: [u16; 7]) -> Case {
    Case { method, path, fresh: Fresh::No, body, expect }
}

fn fresh(method: Method, path: &'static str, fresh: Fresh, expect: [u16; 7]) -> Case {
    Case { method, path, fresh, body: none, expect }
}

const READ: [u16; 7] = [401, 200, 200, 200, 200, 200, 403];
const ADMIN_ONLY_READ: [u16; 7] = [401, 403, 403, 200, 200, 403, 403];
const ADMIN_WRITE_202: [u16; 7] = [401, 403, 403, 202, 202, 403, 403];
const DEV_WRITE_202: [u16; 7] = [401, 403, 202, 202, 202, 202, 403];
const DEV_CREATE: [u16; 7] = [401, 403, 201, 201, 201, 201, 403];
const DEV_DELETE: [u16; 7] = [401, 403, 204, 204, 204, 204, 403];
const PLATFORM: [u16; 7] = [401, 403, 403, 403, 403, 403, 200];

fn cases() -> Vec<Case> {
    use Method as M;
    vec![
        case(M::GET, "/api/v1/me", [401, 200, 200, 200, 200, 200, 200]),
        case(M::GET, "/api/v1/quotas", READ),
        // users
        case(M::GET, "/api/v1/users", ADMIN_ONLY_READ),
        with_body(
            M::POST,
            "/api/v1/users",
            |s| Some(json!({"email": format!("new-{s}@example.test"), "password": "password-123", "role": "viewer"})),
            [401, 403, 403, 201, 201, 403, 403],
        ),
        case(M::GET, "/api/v1/users/{user}", ADMIN_ONLY_READ),
        with_body(M::PATCH, "/api/v1/users/{user}", |_| Some(json!({"role": "developer"})), [401, 403, 403, 200, 200, 403, 403]),
        fresh(M::DELETE, "/api/v1/users/{fresh}", Fresh::User, [401, 403, 403, 204, 204, 403, 403]),
        // tokens
        case(M::GET, "/api/v1/tokens", [401, 200, 200, 200, 200, 200, 200]),
        with_body(
            M::POST,
            "/api/v1/tokens",
            |_| Some(json!({"name": "ci", "role": "viewer"})),
            [401, 201, 201, 201, 201, 403, 422],
        ),
        // Only the creator, owners and admins see a token: to anyone else it does not exist.
        fresh(M::DELETE, "/api/v1/tokens/{fresh}", Fresh::Token, [401, 404, 404, 204, 204, 404, 404]),
        // clusters and nodes
        case(M::GET, "/api/v1/clusters", READ),
        with_body(
            M::POST,
            "/api/v1/clusters",
            |s| Some(json!({"name": format!("c-{s}"), "provider": "local", "managers": 1, "workers": 0})),
            ADMIN_WRITE_202,
        ),
        case(M::GET, "/api/v1/clusters/{cluster}", READ),
        with_body(M::PATCH, "/api/v1/clusters/{cluster}", |_| Some(json!({"workers": 2})), ADMIN_WRITE_202),
        fresh(M::DELETE, "/api/v1/clusters/{fresh}", Fresh::Cluster, ADMIN_WRITE_202),
        case(M::GET, "/api/v1/clusters/{cluster}/nodes", READ),
        case(M::GET, "/api/v1/nodes/{node}", READ),
        with_body(
            M::PATCH,
            "/api/v1/nodes/{node}",
            |_| Some(json!({"availability": "drain", "labels": {"zone": "a"}})),
            ADMIN_WRITE_202,
        ),
        // templates
        case(M::GET, "/api/v1/templates", READ),
        with_body(
            M::POST,
            "/api/v1/templates",
            |s| Some(json!({"name": format!("t-{s}"), "compose": fixtures::COMPOSE})),
            DEV_CREATE,
        ),
        case(M::GET, "/api/v1/templates/{template}", READ),
        with_body(
            M::PATCH,
            "/api/v1/templates/{template}",
            |_| Some(json!({"description": "edited"})),
            [401, 403, 200, 200, 200, 200, 403],
        ),
        fresh(M::DELETE, "/api/v1/templates/{fresh}", Fresh::Template, DEV_DELETE),
        case(M::GET, "/api/v1/templates/{template}/versions", READ),
        case(M::GET, "/api/v1/templates/{template}/versions/1", READ),
        // The fixture's template has one version: past authorization, no earlier one to compare with.
        case(M::GET, "/api/v1/templates/{template}/versions/1/diff", [401, 404, 404, 404, 404, 404, 403]),
        with_body(
            M::POST,
            "/api/v1/templates/import-dab",
            |s| Some(json!({"name": format!("d-{s}"), "bundle": {"Version": "0.1", "Services": {"a": {"Image": "busybox"}}}})),
            DEV_CREATE,
        ),
        // Checking Compose stores nothing: every member of a tenant may.
        with_body(M::POST, "/api/v1/templates/check", |_| Some(json!({"compose": fixtures::COMPOSE})), READ),
        case(M::GET, "/api/v1/gallery", READ),
        case(M::GET, "/api/v1/gallery/static-site", READ),
        // registries and images
        case(M::GET, "/api/v1/registries", READ),
        // Admins pass authorization; the address (outside the networks tests allow) is then refused.
        with_body(
            M::POST,
            "/api/v1/registries",
            |s| Some(json!({"name": format!("r-{s}"), "address": "127.0.0.1:1"})),
            [401, 403, 403, 422, 422, 403, 403],
        ),
        case(M::GET, "/api/v1/registries/{registry}", READ),
        fresh(M::DELETE, "/api/v1/registries/{fresh}", Fresh::Registry, [401, 403, 403, 204, 204, 403, 403]),
        case(M::GET, "/api/v1/images", READ),
        case(M::DELETE, "/api/v1/images/repositories/nothing-here", [401, 403, 404, 404, 404, 404, 403]),
        with_body(
            M::PUT,
            "/api/v1/images/repositories/app/retention",
            |_| Some(json!({"keep_last": 1})),
            [401, 403, 200, 200, 200, 200, 403],
        ),
        with_body(M::POST, "/api/v1/images/resolve", |_| Some(json!({"image": "busybox"})), [401, 422, 422, 422, 422, 422, 403]),
        // These apps run no registry: past authorization, the answer is 503.
        case(M::GET, "/api/v1/clusters/{cluster}/registry-credential", [401, 403, 403, 503, 503, 403, 403]),
        case(M::POST, "/api/v1/admin/registry/maintenance", [401, 403, 403, 403, 403, 403, 503]),
        // applications, services, containers
        case(M::GET, "/api/v1/applications", READ),
        case(M::GET, "/api/v1/applications/{application}", READ),
        // A preview stores nothing, but shows only those who may deploy what it would deploy.
        with_body(
            M::POST,
            "/api/v1/applications/preview",
            |s| Some(json!({"name": format!("p-{s}"), "cluster_id": "{cluster}", "compose": fixtures::COMPOSE})),
            [401, 403, 200, 200, 200, 200, 403],
        ),
        with_body(M::PATCH, "/api/v1/applications/{application}", |_| Some(json!({"variables": {"TAG": "2"}})), DEV_WRITE_202),
        fresh(M::DELETE, "/api/v1/applications/{fresh}", Fresh::Application, DEV_WRITE_202),
        case(M::GET, "/api/v1/applications/{application}/revisions", READ),
        case(M::GET, "/api/v1/applications/{application}/services", READ),
        case(M::GET, "/api/v1/services/{service}", READ),
        with_body(M::PATCH, "/api/v1/services/{service}", |_| Some(json!({"replicas": 3})), DEV_WRITE_202),
        case(M::GET, "/api/v1/services/{service}/containers", READ),
        // By now the PATCH above has made later revisions for each writer.
        with_body(M::POST, "/api/v1/applications/{application}/rollback", |_| Some(json!({"revision": 1})), DEV_WRITE_202),
        with_body(M::POST, "/api/v1/services/{service}/restart", |_| Some(json!({})), DEV_WRITE_202),
        // These apps reach no cluster: past authorization, the answer is 503.
        case(M::GET, "/api/v1/services/{service}/logs", [401, 503, 503, 503, 503, 503, 403]),
        case(M::GET, "/api/v1/admission-policy", READ),
        case(M::GET, "/api/v1/routes", READ),
        case(M::GET, "/api/v1/routes/{route}", READ),
        with_body(
            M::POST,
            "/api/v1/routes",
            |s| Some(json!({"service_id": "{service}", "port": 80, "domain": format!("r-{s}.example.com")})),
            DEV_CREATE,
        ),
        with_body(M::PATCH, "/api/v1/routes/{route}", |_| Some(json!({"timeout_secs": 30})), [401, 403, 200, 200, 200, 200, 403]),
        fresh(M::DELETE, "/api/v1/routes/{fresh}", Fresh::Route, DEV_DELETE),
        // The default route belongs to the Compose file: past authorization, removing it is refused.
        case(M::DELETE, "/api/v1/routes/{route}", [401, 403, 409, 409, 409, 409, 403]),
        case(M::GET, "/api/v1/domains", READ),
        case(M::GET, "/api/v1/events/recent", READ),
        with_body(
            M::POST,
            "/api/v1/domains",
            |s| Some(json!({"domain": format!("d-{s}.example.org")})),
            [401, 403, 403, 201, 201, 403, 403],
        ),
        case(M::POST, "/api/v1/domains/none.example.org/verify", [401, 403, 403, 404, 404, 403, 403]),
        case(M::DELETE, "/api/v1/domains/none.example.org", [401, 403, 403, 404, 404, 403, 403]),
        // releases: the fixture's applications never ran, so past authorization a new release is refused
        case(M::GET, "/api/v1/applications/{application}/releases", READ),
        with_body(
            M::POST,
            "/api/v1/applications/{application}/releases",
            |_| Some(json!({"variables": {"TAG": "3"}})),
            [401, 403, 409, 409, 409, 409, 403],
        ),
        case(M::GET, "/api/v1/releases/{release}", READ),
        with_body(M::PATCH, "/api/v1/releases/{release}", |_| Some(json!({"weight": 20})), [401, 403, 200, 200, 200, 200, 403]),
        fresh(M::POST, "/api/v1/releases/{fresh}/promote", Fresh::Release, DEV_WRITE_202),
        fresh(M::POST, "/api/v1/releases/{fresh}/abort", Fresh::Release, DEV_WRITE_202),
        // certificates: past authorization, a name the tenant does not route is refused
        case(M::GET, "/api/v1/certificates", READ),
        with_body(
            M::POST,
            "/api/v1/certificates",
            |s| Some(json!({"domain": format!("c-{s}.example.org")})),
            [401, 403, 422, 422, 422, 422, 403],
        ),
        case(M::GET, "/api/v1/certificates/{certificate}", READ),
        case(M::POST, "/api/v1/certificates/{certificate}/renew", DEV_WRITE_202),
        fresh(M::DELETE, "/api/v1/certificates/{fresh}", Fresh::Certificate, DEV_DELETE),
        // load balancers
        case(M::GET, "/api/v1/load-balancers", READ),
        with_body(
            M::POST,
            "/api/v1/load-balancers",
            |s| Some(json!({"name": format!("lb-{s}"), "cluster_id": "{cluster}"})),
            DEV_CREATE,
        ),
        case(M::GET, "/api/v1/load-balancers/{balancer}", READ),
        with_body(
            M::PUT,
            "/api/v1/load-balancers/{balancer}/listeners",
            |_| Some(json!({"listeners": []})),
            [401, 403, 200, 200, 200, 200, 403],
        ),
        fresh(M::DELETE, "/api/v1/load-balancers/{fresh}", Fresh::LoadBalancer, DEV_DELETE),
        // jobs and audit
        case(M::GET, "/api/v1/jobs", READ),
        case(M::GET, "/api/v1/jobs/{job}", READ),
        case(M::GET, "/api/v1/audit", [401, 403, 403, 200, 200, 403, 200]),
        with_body(M::GET, "/api/v1/clusters/{cluster}/credentials", none, [401, 403, 403, 409, 409, 403, 403]),
        fresh(M::POST, "/api/v1/nodes/{fresh}/restart", Fresh::Node, ADMIN_WRITE_202),
        // platform administration
        case(M::GET, "/api/v1/admin/tenants", PLATFORM),
        case(M::GET, "/api/v1/admin/routers", PLATFORM),
        with_body(
            M::POST,
            "/api/v1/admin/tenants",
            |s| {
                Some(
                    json!({"name": format!("T {s}"), "owner_email": format!("o-{s}@example.test"), "owner_password": "password-123"}),
                )
            },
            [401, 403, 403, 403, 403, 403, 201],
        ),
        case(M::GET, "/api/v1/admin/tenants/{tenant}", PLATFORM),
        case(M::GET, "/api/v1/admin/tenants/{tenant}/quotas", PLATFORM),
        case(M::GET, "/api/v1/admin/tenants/{tenant}/admission-policy", PLATFORM),
        with_body(M::PUT, "/api/v1/admin/tenants/{tenant}/admission-policy", |_| Some(json!({})), PLATFORM),
        with_body(M::PUT, "/api/v1/admin/tenants/{tenant}/quotas", |_| Some(json!({})), PLATFORM),
        fresh(M::POST, "/api/v1/admin/tenants/{fresh}/suspend", Fresh::Tenant, PLATFORM),
        case(M::POST, "/api/v1/admin/tenants/{tenant}/resume", PLATFORM),
        case(M::GET, "/api/v1/admin/tenants/{tenant}/domains", PLATFORM),
        with_body(
            M::POST,
            "/api/v1/admin/tenants/{tenant}/domains",
            |s| Some(json!({"domain": format!("g-{s}.example.org")})),
            [401, 403, 403, 403, 403, 403, 201],
        ),
        case(M::DELETE, "/api/v1/admin/tenants/{tenant}/domains/none.example.org", [401, 403, 403, 403, 403, 403, 404]),
        fresh(M::DELETE, "/api/v1/admin/tenants/{fresh}", Fresh::Tenant, [401, 403, 403, 403, 403, 403, 204]),
    ]
}

async fn make_fresh(app: &TestApp, owner: &str, objects: &Objects, kind: Fresh) -> Uuid {
    match kind {
        Fresh::No => Uuid::nil(),
        Fresh::Cluster => fixtures::cluster(app, owner).await,
        Fresh::Template => fixtures::template(app, owner).await,
        Fresh::Registry => fixtures::registry(app, owner).await,
        Fresh::Application => fixtures::application(app, owner, objects.cluster, objects.template).await,
        Fresh::User => fixtures::tenant_user(app, owner).await,
        Fresh::Token => app.post("/api/v1/tokens", owner, json!({"name": "doomed", "role": "viewer"})).await.id(),
        Fresh::Tenant => app.tenant("Doomed").await.id,
        Fresh::Node => objects.node,
        Fresh::Release => fixtures::release(app, owner, objects.cluster, objects.template).await,
        Fresh::Certificate => fixtures::certificate(app, owner).await,
        Fresh::LoadBalancer => fixtures::load_balancer(app, owner, objects.cluster).await,
        Fresh::Route => {
            let domain = format!("doomed-{}.example.com", Uuid::new_v4().simple());
            let r = app.post("/api/v1/routes", owner, json!({"service_id": objects.service, "port": 80, "domain": domain})).await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.id()
        }
    }
}

fn fill(path: &str, tenant: Uuid, o: &Objects, fresh: Uuid) -> String {
    path.replace("{tenant}", &tenant.to_string())
        .replace("{cluster}", &o.cluster.to_string())
        .replace("{node}", &o.node.to_string())
        .replace("{template}", &o.template.to_string())
        .replace("{registry}", &o.registry.to_string())
        .replace("{application}", &o.application.to_string())
        .replace("{service}", &o.service.to_string())
        .replace("{job}", &o.job.to_string())
        .replace("{route}", &o.route.to_string())
        .replace("{release}", &o.release.to_string())
        .replace("{certificate}", &o.certificate.to_string())
        .replace("{balancer}", &o.balancer.to_string())
        .replace("{user}", &o.user.to_string())
        .replace("{fresh}", &fresh.to_string())
}

#[tokio::test]
async fn every_role_gets_exactly_the_expected_status_on_every_endpoint() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let objects = fixtures::objects(&app, &t).await;
    let developer = app.user(&t.owner, "developer").await;
    let callers: [Option<String>; 7] = [
        None,
        Some(app.user(&t.owner, "viewer").await),
        Some(developer.clone()),
        Some(app.user(&t.owner, "admin").await),
        Some(t.owner.clone()),
        Some(app.api_token(&developer, "developer").await),
        Some(app.admin.clone()),
    ];

    let mut failures = Vec::new();
    for case in cases() {
        for (i, caller) in callers.iter().enumerate() {
            let fresh = make_fresh(&app, &t.owner, &objects, case.fresh).await;
            let path = fill(case.path, t.id, &objects, fresh);
            let suffix = Uuid::new_v4().simple().to_string()[..10].to_owned();
            // Bodies name fixture objects with the same placeholders as paths.
            let body = (case.body)(&suffix).map(|b| serde_json::from_str(&fill(&b.to_string(), t.id, &objects, fresh)).unwrap());
            let r = app.call(case.method.clone(), &path, caller.as_deref(), body).await;
            if r.status.as_u16() != case.expect[i] {
                failures.push(format!(
                    "{} {} as {}: expected {}, got {} ({})",
                    case.method, case.path, CALLERS[i], case.expect[i], r.status, r.text
                ));
            }
            if !r.status.is_success() {
                assert_eq!(
                    r.content_type, "application/problem+json",
                    "{} {} as {}: {}",
                    case.method, case.path, CALLERS[i], r.text
                );
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
