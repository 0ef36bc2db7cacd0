//! The built-in registry for real: Debian's `docker-registry` run by Berth with Berth as its token
//! server, the Docker CLI (docker.io) driving the engines of a real local cluster, images imported
//! from `docker save` tarballs and pulled by every node.

use std::path::Path;
use std::time::Duration;

use berth_tests::{PASSWORD, TestApp, saved_tarball, temp_data_dir};

use berth_tests::docker_cli::{Docker, RemoveOnDrop, build_context};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn import(app: &TestApp, token: &str, tarball: Vec<u8>) -> berth_tests::Resp {
    let r = app
        .http
        .post(app.url("/api/v1/images/import"))
        .bearer_auth(token)
        .header("content-type", "application/x-tar")
        .body(tarball)
        .send()
        .await
        .unwrap();
    berth_tests::Resp::from(r).await
}

fn node_addresses(nodes: &Value) -> Vec<String> {
    nodes["items"].as_array().unwrap().iter().map(|n| n["address"].as_str().unwrap().to_owned()).collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_go_through_the_builtin_registry_to_every_node_with_tenant_isolation() {
    let app = TestApp::spawn_with_registry(1 << 30).await.with_workers();
    let reg = app.registry.as_ref().unwrap();
    let address = reg.address.clone();
    let t = app.tenant("Acme").await;
    let slug = t.slug.clone();
    let dev_email = format!("dev@{slug}.test");
    let viewer_email = format!("viewer@{slug}.test");
    for (email, role) in [(&dev_email, "developer"), (&viewer_email, "viewer")] {
        app.post("/api/v1/users", &t.owner, json!({"email": email, "password": PASSWORD, "role": role}))
            .await
            .expect(StatusCode::CREATED);
    }
    let other = app.tenant("Other").await;
    let other_email = app.get("/api/v1/me", &other.owner).await.body["email"].as_str().unwrap().to_owned();

    // The registry is listed as the tenant's built-in one.
    let regs = app.get("/api/v1/registries", &t.owner).await;
    assert_eq!(regs.body["items"][0]["name"], "builtin");
    assert_eq!(regs.body["items"][0]["address"], address.as_str());

    // A real 1 + 1 cluster, whose nodes trust the registry's CA with no `insecure-registries`.
    let created = app.post("/api/v1/clusters", &t.owner, json!({"name": "imgs", "managers": 1, "workers": 1})).await;
    created.expect(StatusCode::ACCEPTED);
    let cluster = created.id();
    let job = app.wait_job(&t.owner, created.body["job_id"].as_str().unwrap(), Duration::from_secs(180)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let creds = app.get(&format!("/api/v1/clusters/{cluster}/credentials"), &t.owner).await.body;
    let engines = node_addresses(&app.get(&format!("/api/v1/clusters/{cluster}/nodes"), &t.owner).await.body);
    assert_eq!(engines.len(), 2);
    let manager = creds["endpoint"].as_str().unwrap().trim_start_matches("tcp://").split(':').next().unwrap().to_owned();
    let cli = Docker::new(&creds);

    // Build on the manager's engine, `docker save`, import through the API.
    let ctx = build_context(&format!("probe {}", uuid::Uuid::new_v4()));
    let _cleanup = RemoveOnDrop(vec![ctx.clone()]);
    cli.ok(&manager, &["build", "-q", "-t", "probe:1", ctx.to_str().unwrap()]);
    let saved_dir = temp_data_dir("berth-saved");
    let _cleanup_saved = RemoveOnDrop(vec![saved_dir.clone()]);
    let saved = saved_dir.join("probe.tar");
    cli.ok(&manager, &["save", "-o", saved.to_str().unwrap(), "probe:1"]);
    let imported = import(&app, &t.owner, read(&saved)).await;
    imported.expect(StatusCode::CREATED);
    let image = &imported.body["images"][0];
    assert_eq!(image["repository"], format!("{address}/{slug}/probe"));
    assert_eq!(image["tag"], "1");
    let digest = image["digest"].as_str().unwrap().to_owned();
    let reference = format!("{address}/{slug}/probe:1");

    // Every node pulls it, through TLS and token auth, and has the same bytes.
    let login = cli.login(&manager, &address, &dev_email, PASSWORD);
    assert!(login.status.success(), "docker login: {}", String::from_utf8_lossy(&login.stderr));
    for engine in &engines {
        cli.ok(engine, &["pull", &reference]);
        let digests = cli.ok(engine, &["image", "inspect", "--format", "{{json .RepoDigests}}", &reference]);
        assert!(digests.contains(&digest), "{engine} has {digests}, expected {digest}");
    }

    // A developer pushes with the Docker CLI; the push appears in the images API and on the event stream.
    let pushed = format!("{address}/{slug}/pushed:v2");
    cli.ok(&manager, &["tag", "probe:1", &pushed]);
    cli.ok(&manager, &["push", &pushed]);
    let listed = app
        .wait_for(&t.owner, "/api/v1/images", Duration::from_secs(20), |b| {
            b["items"].as_array().unwrap().iter().any(|r| r["name"] == "pushed" && r["tags"][0]["tag"] == "v2")
        })
        .await;
    let repo = listed["items"].as_array().unwrap().iter().find(|r| r["name"] == "pushed").unwrap().clone();
    assert_eq!(repo["reference"], format!("{address}/{slug}/pushed"));
    assert!(repo["size_bytes"].as_i64().unwrap() > 1_000_000, "{repo}");
    let is_push = |e: &Value| e["kind"] == "image.pushed" && e["data"]["repository"] == "pushed" && e["data"]["tag"] == "v2";
    app.read_events_until(&t.owner, "/api/v1/events?after=0", |events| events.iter().any(is_push)).await;

    // An API token works as the password, with any user name; revoking it stops it at once.
    let token = app.post("/api/v1/tokens", &t.owner, json!({"name": "ci", "role": "developer"})).await;
    let (token_id, token_secret) = (token.id(), token.body["token"].as_str().unwrap().to_owned());
    let login = cli.login(&manager, &address, "ci", &token_secret);
    assert!(login.status.success(), "docker login with a token: {}", String::from_utf8_lossy(&login.stderr));
    let by_token = format!("{address}/{slug}/pushed:by-token");
    cli.ok(&manager, &["tag", "probe:1", &by_token]);
    cli.ok(&manager, &["push", &by_token]);
    app.delete(&format!("/api/v1/tokens/{token_id}"), &t.owner).await.expect(StatusCode::NO_CONTENT);
    cli.ok(&manager, &["rmi", &by_token]);
    let err = cli.fails(&manager, &["pull", &by_token]);
    assert!(err.contains("revoked") || err.contains("unauthorized"), "{err}");

    // A viewer pulls but cannot push.
    let login = cli.login(&manager, &address, &viewer_email, PASSWORD);
    assert!(login.status.success());
    cli.ok(engines.iter().find(|e| **e != manager).unwrap(), &["pull", &pushed]);
    let denied = format!("{address}/{slug}/viewer-push:1");
    cli.ok(&manager, &["tag", "probe:1", &denied]);
    let err = cli.fails(&manager, &["push", &denied]);
    assert!(err.contains("denied"), "{err}");

    // Another tenant can neither pull nor push in this namespace, nor see its repositories.
    let login = cli.login(&manager, &address, &other_email, PASSWORD);
    assert!(login.status.success());
    cli.ok(&manager, &["rmi", &pushed]);
    let err = cli.fails(&manager, &["pull", &pushed]);
    assert!(err.contains("denied") || err.contains("unauthorized"), "{err}");
    let err = cli.fails(&manager, &["push", &reference]);
    assert!(err.contains("denied"), "{err}");
    let theirs = app.get("/api/v1/images", &other.owner).await;
    assert_eq!(theirs.body["items"], json!([]), "{}", theirs.text);
    // Nobody is granted the registry-wide catalog.
    let catalog = token_request(&app, &other_email, PASSWORD, "scope=registry:catalog:*").await;
    assert_eq!(catalog.1["access"], json!([]), "{:?}", catalog);

    // A suspended tenant cannot pull.
    let login = cli.login(&manager, &address, &dev_email, PASSWORD);
    assert!(login.status.success());
    app.post(&format!("/api/v1/admin/tenants/{}/suspend", t.id), &app.admin, json!({})).await.expect(StatusCode::OK);
    cli.ok(&manager, &["rmi", &reference]);
    let err = cli.fails(&manager, &["pull", &reference]);
    assert!(err.contains("suspended"), "{err}");
    app.post(&format!("/api/v1/admin/tenants/{}/resume", t.id), &app.admin, json!({})).await.expect(StatusCode::OK);

    // The registry process dies: Berth starts it again and pushes work.
    let pid = reg.running.registry.process.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reg.running.registry.process.pid() == pid || reg.running.registry.process.pid() == 0 {
        assert!(std::time::Instant::now() < deadline, "the registry was not restarted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = format!("{address}/{slug}/after-restart:1");
    cli.ok(&manager, &["tag", "probe:1", &again]);
    cli.ok(&manager, &["push", &again]);

    // Deleting a tag and a repository through the API removes them from the registry too.
    app.delete(&format!("/api/v1/images/repositories/pushed/tags/{}", "by-token"), &t.owner).await.expect(StatusCode::NO_CONTENT);
    cli.ok(&manager, &["pull", &pushed]); // v2 shared the image with by-token and is still there
    cli.fails(&manager, &["pull", &by_token]); // and by-token is gone from the registry itself
    app.delete("/api/v1/images/repositories/after-restart", &t.owner).await.expect(StatusCode::NO_CONTENT);
    cli.ok(&manager, &["rmi", &again]);
    cli.fails(&manager, &["pull", &again]);
    let names: Vec<Value> =
        app.get("/api/v1/images", &t.owner).await.body["items"].as_array().unwrap().iter().map(|r| r["name"].clone()).collect();
    assert!(!names.contains(&json!("after-restart")), "{names:?}");

    let d = app.delete(&format!("/api/v1/clusters/{cluster}"), &t.owner).await;
    let job = app.wait_job(&t.owner, d.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

/// Asks the token service directly, over TLS with the platform CA; returns the status and the JWT's
/// claims (or the error body).
async fn token_request(app: &TestApp, user: &str, password: &str, query: &str) -> (StatusCode, Value) {
    let reg = app.registry.as_ref().unwrap();
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(reg.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = http
        .get(format!("https://{}/token?service=berth-registry&{query}", reg.auth_address))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return (status, body);
    }
    use base64::Engine;
    let jwt = body["token"].as_str().unwrap();
    assert!(body.get("refresh_token").is_none());
    let claims = jwt.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    (status, claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_imports_and_bad_token_requests_are_refused_and_store_nothing() {
    let app = TestApp::spawn_with_registry(64 * 1024).await;
    let reg = app.registry.as_ref().unwrap();
    let t = app.tenant("Acme").await;
    let other = app.tenant("Other").await;
    let owner_email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();

    let good = saved_tarball(&["web:1"], "hello");
    // Not a tar archive at all; a truncated one; one whose layer does not match its config.
    import(&app, &t.owner, b"this is not a tarball".repeat(100))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-archive");
    import(&app, &t.owner, good[..good.len() / 2].to_vec()).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-archive");
    let mut corrupt = good.clone();
    let at = corrupt.windows(5).position(|w| w == b"hello").unwrap();
    corrupt[at] = b'j';
    let r = import(&app, &t.owner, corrupt).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-archive");
    assert!(r.body["detail"].as_str().unwrap().contains("corrupt"), "{}", r.text);
    // Over the limit (64 KiB here).
    let big = saved_tarball(&["big:1"], &"x".repeat(100 * 1024));
    import(&app, &t.owner, big).await.problem(StatusCode::PAYLOAD_TOO_LARGE, "too-large");
    // Naming another tenant's namespace.
    let foreign = saved_tarball(&[&format!("{}/{}/web:1", reg.address, other.slug)], "hi");
    import(&app, &t.owner, foreign).await.problem(StatusCode::FORBIDDEN, "forbidden");
    // Not sent as a tarball; sent by a viewer.
    let r = app.http.post(app.url("/api/v1/images/import")).bearer_auth(&t.owner).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let viewer = app.user(&t.owner, "viewer").await;
    import(&app, &viewer, good.clone()).await.problem(StatusCode::FORBIDDEN, "forbidden");

    // Nothing was stored: no rows, and no repository in the registry.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM image_tags").fetch_one(&app.db).await.unwrap();
    assert_eq!(rows, 0);
    assert_eq!(reg.running.registry.client.catalog().await.unwrap(), Vec::<String>::new());

    // The good one imports, under the tenant's namespace; importing it again changes nothing.
    let r = import(&app, &t.owner, good.clone()).await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.body["images"][0]["repository"], format!("{}/{}/web", reg.address, t.slug));
    let again = import(&app, &t.owner, good).await;
    assert_eq!(again.body["images"][0]["digest"], r.body["images"][0]["digest"]);

    // The token service: bad scopes are 400s, wrong passwords 401s, and grants follow role and namespace.
    let (status, body) = token_request(&app, &owner_email, PASSWORD, "scope=repository:Acme/WEB:pull").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("malformed scope"), "{body}");
    let (status, _) = token_request(&app, &owner_email, PASSWORD, "scope=repository:x:steal").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = token_request(&app, &owner_email, "wrong-password", "scope=repository:x/y:pull").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let scope = format!("scope=repository:{}/web:pull,push&scope=repository:{}/web:pull", t.slug, other.slug);
    let (status, claims) = token_request(&app, &owner_email, PASSWORD, &scope).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claims["aud"], "berth-registry", "aud must be a string");
    assert_eq!(claims["access"], json!([{"type": "repository", "name": format!("{}/web", t.slug), "actions": ["pull", "push"]}]));

    // A login the token service verified recently skips Argon2, but the user's current row still
    // decides: a new role applies to the next token, a changed password refuses the old one at once.
    let dev =
        app.post("/api/v1/users", &t.owner, json!({"email": "dev@acme.test", "password": PASSWORD, "role": "developer"})).await;
    let dev_id = dev.id();
    let push = format!("scope=repository:{}/web:pull,push", t.slug);
    for _ in 0..2 {
        let (status, claims) = token_request(&app, "dev@acme.test", PASSWORD, &push).await;
        assert_eq!((status, &claims["access"][0]["actions"]), (StatusCode::OK, &json!(["pull", "push"])));
    }
    app.patch(&format!("/api/v1/users/{dev_id}"), &t.owner, json!({"role": "viewer"})).await.expect(StatusCode::OK);
    let (_, claims) = token_request(&app, "dev@acme.test", PASSWORD, &push).await;
    assert_eq!(claims["access"][0]["actions"], json!(["pull"]));
    app.patch(&format!("/api/v1/users/{dev_id}"), &t.owner, json!({"password": "a-new-password"})).await.expect(StatusCode::OK);
    let (status, _) = token_request(&app, "dev@acme.test", PASSWORD, &push).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = token_request(&app, "dev@acme.test", "a-new-password", &push).await;
    assert_eq!(status, StatusCode::OK);

    // Image storage quota: the usage shows, and once full, push tokens are refused with a clear message.
    let quotas = app.get("/api/v1/quotas", &t.owner).await;
    assert!(quotas.body["usage"]["image_storage_bytes"].as_i64().unwrap() > 0, "{}", quotas.text);
    app.put(&format!("/api/v1/admin/tenants/{}/quotas", t.id), &app.admin, json!({"max_image_storage_mb": 0}))
        .await
        .expect(StatusCode::OK);
    let (status, body) = token_request(&app, &owner_email, PASSWORD, &format!("scope=repository:{}/web:pull,push", t.slug)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("quota"), "{body}");
    let (status, _) = token_request(&app, &owner_email, PASSWORD, &format!("scope=repository:{}/web:pull", t.slug)).await;
    assert_eq!(status, StatusCode::OK, "pulls stay allowed over quota");
    import(&app, &t.owner, saved_tarball(&["more:1"], "more")).await.problem(StatusCode::FORBIDDEN, "quota-exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_tags_and_garbage_collection_frees_the_disk() {
    let app = TestApp::spawn_with_registry(1 << 30).await;
    let reg = app.registry.as_ref().unwrap();
    let t = app.tenant("Acme").await;

    // Five tags of five different images, each with a 512 KiB layer of its own.
    for n in 1..=5 {
        let layer = format!("{n}{}", "x".repeat(512 * 1024));
        import(&app, &t.owner, saved_tarball(&[&format!("app:{n}")], &layer)).await.expect(StatusCode::CREATED);
    }
    // A policy is checked; then keep the newest two.
    let path = "/api/v1/images/repositories/app/retention";
    app.put(path, &t.owner, json!({})).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    app.put(path, &t.owner, json!({"keep_last": 0})).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    let viewer = app.user(&t.owner, "viewer").await;
    app.put(path, &viewer, json!({"keep_last": 2})).await.problem(StatusCode::FORBIDDEN, "forbidden");
    app.put(path, &t.owner, json!({"keep_last": 2})).await.expect(StatusCode::OK);
    let listed = app.get("/api/v1/images", &t.owner).await;
    assert_eq!(listed.body["items"][0]["retention"], json!({"keep_last": 2, "keep_days": null}));

    // Only platform admins run maintenance by hand; it applies retention, then collects garbage.
    app.post("/api/v1/admin/registry/maintenance", &t.owner, json!({})).await.problem(StatusCode::FORBIDDEN, "forbidden");
    let done = app.post("/api/v1/admin/registry/maintenance", &app.admin, json!({})).await;
    done.expect(StatusCode::OK);
    assert_eq!(done.body["tags_removed"], 3, "{}", done.text);
    let (before, after) = (done.body["bytes_before"].as_i64().unwrap(), done.body["bytes_after"].as_i64().unwrap());
    assert!(before - after >= 3 * 512 * 1024, "garbage collection freed only {} bytes", before - after);

    // What remains, in the API and in the registry itself.
    let listed = app.get("/api/v1/images", &t.owner).await;
    let tags: Vec<&str> =
        listed.body["items"][0]["tags"].as_array().unwrap().iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(tags, ["5", "4"]);
    let mut in_registry = reg.running.registry.client.tags(&format!("{}/app", t.slug)).await.unwrap();
    in_registry.sort();
    assert_eq!(in_registry, ["4", "5"]);

    // The registry is serving again after its maintenance window.
    import(&app, &t.owner, saved_tarball(&["app:6"], "six")).await.expect(StatusCode::CREATED);
    app.delete(path, &t.owner).await.expect(StatusCode::NO_CONTENT);
    app.delete(path, &t.owner).await.problem(StatusCode::NOT_FOUND, "not-found");

    // The catalog pass repairs what notifications missed: a forgotten tag comes back, and a tag the
    // registry does not have goes.
    let rows = || async {
        let mut v: Vec<String> =
            sqlx::query_scalar("SELECT repository || ':' || tag FROM image_tags").fetch_all(&app.db).await.unwrap();
        v.sort();
        v
    };
    let truth = rows().await;
    sqlx::query("DELETE FROM image_tags WHERE tag = '6'").execute(&app.db).await.unwrap();
    sqlx::query("INSERT INTO image_tags (tenant_id, repository, tag, digest, size_bytes) SELECT tenant_id, 'ghost', '1', digest, 1 FROM image_tags LIMIT 1")
        .execute(&app.db)
        .await
        .unwrap();
    berth::registry::retention::sync_catalog(&reg.running.registry, &app.db).await.unwrap();
    assert_eq!(rows().await, truth);

    // Deleting the tenant empties its namespace in the registry, and its slug is never given out again:
    // a new tenant of the same name gets another namespace, and starts with nothing.
    app.delete(&format!("/api/v1/admin/tenants/{}", t.id), &app.admin).await.expect(StatusCode::NO_CONTENT);
    assert_eq!(reg.running.registry.client.tags(&format!("{}/app", t.slug)).await.unwrap(), Vec::<String>::new());
    let again = app.tenant("Acme").await;
    assert_ne!(again.slug, t.slug);
    berth::registry::retention::sync_catalog(&reg.running.registry, &app.db).await.unwrap();
    assert_eq!(app.get("/api/v1/images", &again.owner).await.body["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_registries_digest_pinning_and_cluster_robots() {
    let app = TestApp::spawn_with_registry(1 << 30).await;
    let reg = app.registry.as_ref().unwrap();
    let t = app.tenant("Acme").await;
    let imported = import(&app, &t.owner, saved_tarball(&["web:1"], "pin me")).await;
    imported.expect(StatusCode::CREATED);
    let digest = imported.body["images"][0]["digest"].as_str().unwrap().to_owned();

    // Pinning through the built-in registry, in the caller's namespace only.
    let image = format!("{}/{}/web:1", reg.address, t.slug);
    let r = app.post("/api/v1/images/resolve", &t.owner, json!({"image": image})).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["image"], format!("{image}@{digest}"));
    assert_eq!(r.body["digest"], digest.as_str());
    let pinned = r.body["image"].as_str().unwrap().to_owned();
    assert_eq!(app.post("/api/v1/images/resolve", &t.owner, json!({"image": pinned})).await.body["image"], pinned.as_str());
    for bad in [
        format!("{}/other/web:1", reg.address),
        format!("{}/{}/web:2", reg.address, t.slug),
        "busybox:1".to_owned(),
        "Bad".to_owned(),
    ] {
        let r = app.post("/api/v1/images/resolve", &t.owner, json!({"image": bad})).await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    }

    // The built-in registry lists the tenant's repositories and tags like any other.
    let nil = uuid::Uuid::nil();
    let r = app.get(&format!("/api/v1/registries/{nil}/repositories"), &t.owner).await;
    assert_eq!(r.body["repositories"], json!(["web"]));
    let r = app.get(&format!("/api/v1/registries/{nil}/repositories/web/tags"), &t.owner).await;
    assert_eq!(r.body["tags"], json!(["1"]));
    app.delete(&format!("/api/v1/registries/{nil}"), &t.owner).await.problem(StatusCode::CONFLICT, "builtin-registry");

    // An external registry: another Berth's, with its own CA and token service.
    let far = TestApp::spawn_with_registry(1 << 30).await;
    let far_reg = far.registry.as_ref().unwrap();
    let ft = far.tenant("Far").await;
    let far_email = far.get("/api/v1/me", &ft.owner).await.body["email"].as_str().unwrap().to_owned();
    let far_import = import(&far, &ft.owner, saved_tarball(&["tool:3"], "far away")).await;
    far_import.expect(StatusCode::CREATED);
    let far_digest = far_import.body["images"][0]["digest"].as_str().unwrap().to_owned();
    let add = |name: &str, password: &str, ca: Option<&str>, address: &str| json!({"name": name, "address": address, "username": far_email, "password": password, "ca_pem": ca});
    // Credentials and reachability are checked when it is added.
    let r = app.post("/api/v1/registries", &t.owner, add("far", "wrong-password", Some(&far_reg.ca_pem), &far_reg.address)).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "registry-credentials-refused");
    let r = app.post("/api/v1/registries", &t.owner, add("far", PASSWORD, None, &far_reg.address)).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "registry-unreachable");
    let r = app.post("/api/v1/registries", &t.owner, add("far", PASSWORD, Some(&far_reg.ca_pem), "127.0.0.1:1")).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert!(r.body["detail"].as_str().unwrap().contains("BERTH_EXTERNAL_REGISTRY_ALLOWED_NETWORKS"), "{}", r.text);
    let r = app.post("/api/v1/registries", &t.owner, add("far", PASSWORD, Some(&far_reg.ca_pem), &far_reg.address)).await;
    r.expect(StatusCode::CREATED);
    let far_id = r.id();
    // Its password is stored encrypted (nonce, ciphertext, tag) and never returned.
    assert!(r.body.get("password").is_none());
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT password_encrypted FROM registries WHERE id = $1")
        .bind(far_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sealed.len(), 12 + PASSWORD.len() + 16);
    let keys = berth::crypto::Keys::from_secret(berth_tests::SECRET).unwrap();
    assert_eq!(keys.open(&sealed).unwrap(), PASSWORD.as_bytes());
    let far_repo = format!("{}/tool", ft.slug);
    let r = app.get(&format!("/api/v1/registries/{far_id}/repositories/{}/tags", far_repo.replace('/', "%2F")), &t.owner).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["tags"], json!(["3"]));
    // Its catalog is closed (Berth grants nobody the registry-wide catalog): a clear error.
    let r = app.get(&format!("/api/v1/registries/{far_id}/repositories"), &t.owner).await;
    assert!(r.body["detail"].as_str().unwrap().contains("catalog"), "{}", r.text);
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "registry-access-denied");
    // Pinning goes through it with the stored credentials.
    let far_image = format!("{}/{far_repo}:3", far_reg.address);
    let r = app.post("/api/v1/images/resolve", &t.owner, json!({"image": far_image})).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["digest"], far_digest.as_str());

    // Each cluster has a pull-only robot for the tenant's namespace; rotating it retires the old one.
    let cluster = crate::fixtures::cluster(&app, &t.owner).await;
    let developer = app.user(&t.owner, "developer").await;
    app.get(&format!("/api/v1/clusters/{cluster}/registry-credential"), &developer)
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    let robot = app.get(&format!("/api/v1/clusters/{cluster}/registry-credential"), &t.owner).await;
    robot.expect(StatusCode::OK);
    assert_eq!(robot.body["username"], format!("robot-{cluster}"));
    assert_eq!(robot.body["address"], reg.address.as_str());
    let (user, secret) =
        (robot.body["username"].as_str().unwrap().to_owned(), robot.body["password"].as_str().unwrap().to_owned());
    let again = app.get(&format!("/api/v1/clusters/{cluster}/registry-credential"), &t.owner).await;
    assert_eq!(again.body["password"], secret.as_str(), "the credential is stable until rotated");
    let scope = format!("scope=repository:{}/web:pull,push", t.slug);
    let (status, claims) = token_request(&app, &user, &secret, &scope).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claims["access"][0]["actions"], json!(["pull"]));
    // What a deploy would hand the engine: the robot for built-in images, the stored login for external ones.
    let auth = berth::registry::credentials::for_deploy(&app.db, &keys, Some(&reg.address), t.id, cluster, &image)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((auth.username.as_str(), auth.password.as_str()), (user.as_str(), secret.as_str()));
    let auth = berth::registry::credentials::for_deploy(&app.db, &keys, Some(&reg.address), t.id, cluster, &far_image)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password.as_str(), auth.address.as_str()),
        (far_email.as_str(), PASSWORD, far_reg.address.as_str())
    );
    let rotated = app.post(&format!("/api/v1/clusters/{cluster}/registry-credential/rotate"), &t.owner, json!({})).await;
    rotated.expect(StatusCode::OK);
    assert_ne!(rotated.body["password"], secret.as_str());
    let (status, _) = token_request(&app, &user, &secret, &scope).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = token_request(&app, &user, rotated.body["password"].as_str().unwrap(), &scope).await;
    assert_eq!(status, StatusCode::OK);
    // Other tenants' admins get a 404 for this cluster's credential.
    let other = app.tenant("Other").await;
    app.get(&format!("/api/v1/clusters/{cluster}/registry-credential"), &other.owner)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}
