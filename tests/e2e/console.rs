//! The web console: served by `berth serve`, used in a real Chromium (Debian's, through ChromeDriver)
//! against a real Berth and PostgreSQL — and, where a journey needs them, a real local Swarm cluster.
//! Every main page is checked with axe-core and photographed at desktop and phone widths into
//! `target/screenshots/`.

use std::time::Duration;

use berth_tests::browser::Browser;
use berth_tests::{PASSWORD, TestApp};
use reqwest::StatusCode;
use serde_json::json;

/// The console's files: `index.html` for every page path (never cached without revalidation), hashed
/// assets cached for a year, brotli when accepted, a strict Content-Security-Policy, and problem+json
/// for everything under `/api/` that is not an API route.
#[tokio::test]
async fn the_console_is_served_with_hashed_cached_assets_and_a_strict_policy() {
    let app = TestApp::spawn_with_console(900).await;
    let http = reqwest::Client::builder().no_brotli().no_gzip().build().unwrap();
    for page in ["/", "/clusters/0190a1b2-0000-7000-8000-000000000000", "/deploy"] {
        let r = http.get(app.url(page)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{page}");
        let h = r.headers().clone();
        assert_eq!(h["cache-control"], "no-cache", "{page}");
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self' 'wasm-unsafe-eval'") && csp.contains("default-src 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let html = r.text().await.unwrap();
        assert!(html.contains("/assets/boot-") && !html.contains("<script>"), "no inline script: {html}");
    }
    let html = http.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    let wasm = html
        .split("/assets/")
        .filter_map(|s| s.split('"').next())
        .find(|s| s.starts_with("berth-console-") && s.ends_with(".js"))
        .unwrap();
    let asset = http.get(app.url(&format!("/assets/{wasm}"))).header("accept-encoding", "br").send().await.unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
    assert_eq!(asset.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(asset.headers()["content-encoding"], "br");
    assert_eq!(asset.headers()["vary"], "accept-encoding");
    let plain = http.get(app.url(&format!("/assets/{wasm}"))).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    // A missing asset is a 404 that nobody caches, not the index page.
    let missing = http.get(app.url("/assets/berth-console-0000.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["cache-control"], "no-store");
    // The API keeps its own 404s and methods.
    app.get("/api/v1/nothing-here", &app.admin).await.problem(StatusCode::NOT_FOUND, "no-such-route");
    let post = http.post(app.url("/clusters")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
}

fn set_cookie(r: &reqwest::Response) -> String {
    r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

/// The console's session: the refresh token only in an HttpOnly, SameSite=Strict cookie on the
/// session path; each refresh rotates it; a reused one ends the login; logout clears it, everywhere
/// when asked.
#[tokio::test]
async fn browser_sessions_keep_the_refresh_token_in_an_httponly_cookie() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Cookie Co").await;
    let http = reqwest::Client::new();
    let login = |email: String| {
        let http = http.clone();
        let url = app.url("/api/v1/auth/session");
        async move { http.post(url).json(&json!({"email": email, "password": PASSWORD})).send().await.unwrap() }
    };
    let r = login(t.owner_email.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = set_cookie(&r);
    for attr in ["Path=/api/v1/auth/session", "HttpOnly", "SameSite=Strict", "Max-Age=3600"] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP on loopback: {cookie}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "the refresh token never reaches scripts: {body}");
    assert_eq!(body["me"]["email"], t.owner_email.as_str());
    assert_eq!(body["me"]["role"], "owner");
    app.get("/api/v1/me", body["access_token"].as_str().unwrap()).await.expect(StatusCode::OK);

    let refresh = |token: String| {
        let http = http.clone();
        let url = app.url("/api/v1/auth/session/refresh");
        async move { http.post(url).header("cookie", format!("berth_session={token}")).send().await.unwrap() }
    };
    let first = cookie_value(&cookie);
    let r = refresh(first.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second = cookie_value(&set_cookie(&r));
    assert_ne!(first, second, "each refresh rotates the cookie");
    // The first cookie again: stolen and replayed. It fails, clears the cookie, and ends the login.
    let r = refresh(first).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r).contains("berth_session=; Max-Age=0"));
    assert_eq!(refresh(second).await.status(), StatusCode::UNAUTHORIZED);
    // No cookie at all: a plain 401 problem.
    let r = http.post(app.url("/api/v1/auth/session/refresh")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // Logging out ends this browser's session only; `everywhere` ends every one.
    let a = cookie_value(&set_cookie(&login(t.owner_email.clone()).await));
    let b = cookie_value(&set_cookie(&login(t.owner_email.clone()).await));
    let out = http.delete(app.url("/api/v1/auth/session")).header("cookie", format!("berth_session={a}")).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(set_cookie(&out).contains("Max-Age=0"));
    assert_eq!(refresh(a).await.status(), StatusCode::UNAUTHORIZED);
    let r = refresh(b).await;
    assert_eq!(r.status(), StatusCode::OK);
    let b = cookie_value(&set_cookie(&r));
    let c = cookie_value(&set_cookie(&login(t.owner_email.clone()).await));
    let out = http
        .delete(app.url("/api/v1/auth/session?everywhere=true"))
        .header("cookie", format!("berth_session={c}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(refresh(b).await.status(), StatusCode::UNAUTHORIZED);
    // Logging out without a session is not an error.
    assert_eq!(http.delete(app.url("/api/v1/auth/session")).send().await.unwrap().status(), StatusCode::NO_CONTENT);

    // A suspended tenant's user is told why.
    app.post(&format!("/api/v1/admin/tenants/{}/suspend", t.id), &app.admin, json!({})).await.expect(StatusCode::OK);
    let r = login(t.owner_email.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["type"].as_str().unwrap().ends_with("tenant-suspended"), "{body}");
}

/// Log in, reload without logging in again, outlive the access token without noticing, sign out.
#[tokio::test]
async fn a_customer_signs_in_survives_reloads_and_expiry_and_signs_out() {
    // Access tokens of 4 s: the console must renew them silently.
    let app = TestApp::spawn_with_console(4).await;
    let t = app.tenant("Acme Console").await;
    let b = Browser::start(&app.base).await;
    b.goto("/clusters").await;
    b.find("#email").await;
    b.survey("login").await;
    // A wrong password is told plainly, on the form.
    b.fill("#email", &t.owner_email).await;
    b.fill("#password", "not-the-password").await;
    b.click("#sign-in").await;
    b.wait_text(".error", "wrong e-mail or password").await;
    b.log_in(&t.owner_email, PASSWORD).await;
    // The page asked for opens once signed in.
    b.wait_text("h1", "Clusters").await;
    b.wait_text(".empty", "No clusters yet").await;
    b.wait_text("#who", "(owner)").await;
    // A reload keeps the session (the cookie buys a new access token); the access token is not in
    // any storage a script could read.
    b.client.refresh().await.unwrap();
    b.wait_text("#who", &t.owner_email).await;
    let stored = b.eval("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie").await;
    assert_eq!(stored, json!("{}{}"), "nothing readable by scripts");
    // Outlive two access tokens, then use the console: no login page, data loads.
    tokio::time::sleep(Duration::from_secs(9)).await;
    b.click("nav a[href='/']").await;
    b.wait_text("h1", "Dashboard").await;
    b.find(".tally").await;
    assert!(!b.has("#email").await, "the session was renewed silently");
    b.survey("dashboard").await;
    b.click("#logout").await;
    b.wait_text(".notice", "Signed out").await;
    // The session is over on the server too: a reload does not sign back in.
    b.client.refresh().await.unwrap();
    b.find("#email").await;
}

/// Many tabs of the console in one browser: each holds the change feed only while it is seen, so the
/// eighth tab still gets answers from a browser that opens six connections to one HTTP/1.1 server, and
/// a tab brought back catches up on what happened while it was hidden.
#[tokio::test]
async fn many_tabs_share_the_browsers_six_connections() {
    let app = TestApp::spawn_with_console(900).await;
    let t = app.tenant("Tabs").await;
    let b = Browser::start(&app.base).await;
    b.goto("/clusters").await;
    b.log_in(&t.owner_email, PASSWORD).await;
    b.wait_text(".live", "● live").await;
    let first = b.client.window().await.unwrap();
    for tab in 2..=8 {
        let opened = b.client.new_window(true).await.unwrap();
        b.client.switch_to_window(opened.handle).await.unwrap();
        b.goto("/clusters").await;
        b.wait_until(&format!("tab {tab} to load and go live"), Duration::from_secs(20), || async {
            let live = b.client.find(fantoccini::Locator::Css(".live.on")).await.ok()?;
            b.client.find(fantoccini::Locator::Css(".empty")).await.ok()?;
            Some(live)
        })
        .await;
    }
    // Back on the first tab: live again, and it shows the cluster made while it was hidden.
    let made = app.post("/api/v1/clusters", &t.owner, json!({"name": "made-while-hidden", "managers": 1, "workers": 0})).await;
    made.expect(StatusCode::ACCEPTED);
    b.client.switch_to_window(first).await.unwrap();
    b.wait_text(".live", "● live").await;
    b.wait_text("main", "made-while-hidden").await;
}

/// A customer's whole day in the console, on a real local Swarm and the built-in registry: create a
/// cluster and watch its progress bar, import an image, deploy a gallery template with variables, scale
/// from the console (the engine agrees) and from the API (the console follows without a reload), read
/// live logs, roll back, mint an API token and use it with curl; then a viewer sees no controls, and
/// another tenant sees none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_runs_an_application_from_the_console() {
    let app = TestApp::spawn_with_registry_and(berth_tests::console_config(900), 1 << 30).await.with_workers();
    let t = app.tenant("Journey").await;
    let b = Browser::start(&app.base).await;

    // A cluster, created in the console; its progress bar moves to the end.
    b.goto("/clusters/new").await;
    b.log_in(&t.owner_email, PASSWORD).await;
    b.survey("cluster-new").await;
    b.fill("#cluster-name", "prod").await;
    b.fill("#managers", "1").await;
    b.fill("#workers", "0").await;
    b.click("#create-cluster").await;
    // The bar's values as the job runs, read until the job is over.
    let mut seen: Vec<i64> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(v) = b.eval("return document.querySelector('#job-progress progress')?.value ?? null").await.as_f64() {
            seen.push(v as i64);
        }
        let state = match b.client.find(fantoccini::Locator::Css("#job-progress")).await {
            Ok(e) => e.attr("data-state").await.ok().flatten().unwrap_or_default(),
            Err(_) => String::new(),
        };
        if state == "succeeded" || state == "failed" {
            assert_eq!(state, "succeeded");
            let last = b.eval("return document.querySelector('#job-progress progress').value").await;
            seen.push(last.as_f64().unwrap() as i64);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the cluster's job did not finish: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.dedup();
    println!("the progress bar showed {seen:?}");
    b.wait_text("#job-progress", "Done").await;
    assert_eq!(*seen.last().unwrap(), 100, "the bar ends full: {seen:?}");
    b.click("#open-cluster").await;
    b.wait_text("#cluster-status", "ready").await;
    b.find("#nodes tbody tr").await;
    b.survey("cluster").await;
    b.click("nav a[href='/clusters']").await;
    b.find("#clusters").await;
    b.survey("clusters").await;
    let clusters = app.get("/api/v1/clusters", &t.owner).await.body;
    let cluster = clusters["items"][0]["id"].as_str().unwrap().to_owned();

    // An image, imported from a tarball with the upload form.
    b.click("nav a[href='/images']").await;
    let tarball = berth_tests::temp_data_dir("berth-console-upload").join("tools.tar");
    std::fs::write(&tarball, berth_tests::saved_tarball(&["tools:1"], &"x".repeat(2 << 20))).unwrap();
    b.find("#import-file").await.send_keys(tarball.to_str().unwrap()).await.unwrap();
    b.click("#import").await;
    b.wait_text("#import-progress", "/journey/tools:1").await;
    b.wait_text(".repository summary", "/tools").await;
    b.find("#push-commands").await;
    b.survey("images").await;
    std::fs::remove_dir_all(tarball.parent().unwrap()).unwrap();

    // A gallery template with variables, deployed from the form.
    b.click("nav a[href='/deploy']").await;
    b.find("#template").await.select_by_value("gallery:web-worker-queue").await.unwrap();
    b.wait_text("#variables", "WORKERS").await;
    assert_eq!(b.find("#var-WORKERS").await.prop("value").await.unwrap().as_deref(), Some("2"), "defaults are filled in");
    b.fill("#var-WORKERS", "1").await;
    b.fill("#var-INTERVAL", "1").await;
    b.fill("#app-name", "shop").await;
    // The preview follows the form: the worker count typed above, what the services reserve.
    b.wait_text("#quota-impact", "Services: 0 → 3").await;
    b.wait_text("#preview-services tr[data-service='worker'] td:nth-child(3)", "1").await;
    b.wait_text("#quota-impact li[data-quota='max_memory_mb']", "Memory reserved (MiB): 0 → 0").await;
    b.survey("deploy").await;
    b.click("#deploy-submit").await;
    b.wait_text("#app-status", "running").await;
    let apps = app.get("/api/v1/applications", &t.owner).await.body;
    let app_id = apps["items"][0]["id"].as_str().unwrap().to_owned();
    let services = app.get(&format!("/api/v1/applications/{app_id}/services"), &t.owner).await.body;
    let worker = services["items"].as_array().unwrap().iter().find(|s| s["name"] == "worker").unwrap().clone();
    let worker_id = worker["id"].as_str().unwrap().to_owned();
    b.wait_text("tr[data-service='worker'] .count", "1/1").await;
    b.survey("application").await;
    // The services table is laid out as grids (one per row): screen readers must still meet a table,
    // with its column headers and a row per service.
    assert_eq!(b.accessible("#services", "table").await, 1);
    assert_eq!(b.accessible("#services", "columnheader").await, 7);
    assert_eq!(b.accessible("#services", "row").await, 4, "a header row and a row per service");
    assert_eq!(b.accessible("#services", "cell").await, 21);
    b.click("nav a[href='/applications']").await;
    b.find("#applications").await;
    b.survey("applications").await;
    b.goto(&format!("/applications/{app_id}")).await;
    b.find("#services").await;

    // Scale from the console: Berth and the engine agree.
    b.click("tr[data-service='worker'] button[aria-label='Add a replica of worker']").await;
    b.wait_text("tr[data-service='worker'] .count", "2/2").await;
    let creds = app.get(&format!("/api/v1/clusters/{cluster}/credentials"), &t.owner).await.body;
    let engine = creds["endpoint"].as_str().unwrap().trim_start_matches("tcp://").split(':').next().unwrap().to_owned();
    let cli = berth_tests::docker_cli::Docker::new(&creds);
    let swarm_id =
        app.get(&format!("/api/v1/services/{worker_id}"), &t.owner).await.body["swarm_service_id"].as_str().unwrap().to_owned();
    assert_eq!(cli.ok(&engine, &["service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}", &swarm_id]), "2");

    // Scale from the API (and from the Docker CLI): the page follows without a reload.
    let scaled = app.patch(&format!("/api/v1/services/{worker_id}"), &t.owner, json!({"replicas": 3})).await;
    scaled.expect(StatusCode::ACCEPTED);
    let started = std::time::Instant::now();
    b.wait_text("tr[data-service='worker'] .count", "/3").await;
    let followed_api = started.elapsed();
    // (Once Berth's own change has reached the engine: a scale with the CLI meanwhile would be undone
    // by Berth's job, which carries out the earlier API request.)
    app.wait_job(&t.owner, scaled.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    cli.ok(&engine, &["service", "scale", "--detach", &format!("{swarm_id}=1")]);
    let started = std::time::Instant::now();
    b.wait_text("tr[data-service='worker'] .count", "/1").await;
    let followed_cli = started.elapsed();
    println!("the console followed a scale from the API in {followed_api:?}, from the Docker CLI in {followed_cli:?}");
    assert!(followed_api < Duration::from_secs(3), "{followed_api:?}");

    // Live logs of the workers.
    b.click("tr[data-service='worker'] a").await;
    b.wait_text("#logs", "processed: job at").await;
    b.survey("service").await;
    // Hidden behind another tab, the page gives its log stream back; seen again, it goes on from the
    // last line it showed: the jobs processed meanwhile appear, none twice.
    let page = b.client.window().await.unwrap();
    let before = b.find("#logs").await.text().await.unwrap().lines().count();
    let other = b.client.new_window(true).await.unwrap();
    b.client.switch_to_window(other.handle).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    b.client.close_window().await.unwrap();
    b.client.switch_to_window(page).await.unwrap();
    let shown = b
        .wait_until("lines processed while hidden", Duration::from_secs(20), || async {
            let text = b.client.find(fantoccini::Locator::Css("#logs")).await.ok()?.text().await.ok()?;
            (text.lines().count() >= before + 4).then_some(text)
        })
        .await;
    let lines: Vec<&str> = shown.lines().collect();
    let distinct: std::collections::BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(distinct.len(), lines.len(), "a line shown twice after the tab came back:\n{shown}");
    // None missed either: the web service posts a job about every second, and every one is processed.
    let mut jobs: Vec<i64> = lines
        .iter()
        .filter_map(|l| l.rsplit("processed: job at ").next().filter(|_| l.contains("processed: job at"))?.trim().parse().ok())
        .collect();
    jobs.sort();
    assert!(jobs.windows(2).all(|w| w[1] - w[0] <= 3), "jobs missing from the log after the tab came back:\n{shown}");

    // A second revision (from the API), rolled back from the console to the first's images.
    app.patch(&format!("/api/v1/applications/{app_id}"), &t.owner, json!({"variables": {"WORKERS": "1", "INTERVAL": "2"}}))
        .await
        .expect(StatusCode::ACCEPTED);
    b.goto(&format!("/applications/{app_id}")).await;
    b.wait_text("#revisions", "2 (current)").await;
    b.click_text("Roll back to 1").await;
    b.wait_text("#revisions", "3 (current)").await;
    let revisions = app.get(&format!("/api/v1/applications/{app_id}/revisions"), &t.owner).await.body;
    let by_number = |n: i64| revisions["items"].as_array().unwrap().iter().find(|r| r["revision"] == n).unwrap().clone();
    assert_eq!(by_number(3)["variables"], by_number(1)["variables"]);
    assert_eq!(by_number(3)["images"], by_number(1)["images"]);

    // An API token, shown once, used with curl.
    b.click("nav a[href='/tokens']").await;
    b.fill("#token-name", "ci").await;
    b.find("#token-role").await.select_by_value("developer").await.unwrap();
    b.click("#create-token").await;
    let secret = b.find("#token-secret").await.text().await.unwrap();
    b.survey("tokens").await;
    let curl = std::process::Command::new("curl")
        .args(["-sf", "-H", &format!("authorization: Bearer {secret}"), &app.url("/api/v1/applications")])
        .output()
        .unwrap();
    assert!(curl.status.success());
    assert!(String::from_utf8_lossy(&curl.stdout).contains(&app_id), "curl with the token sees the application");
    b.client.refresh().await.unwrap();
    b.find("#tokens").await;
    assert!(!b.has("#token-secret").await, "the secret is shown once");

    // A viewer sees the same objects and no control that changes them.
    let viewer = format!("viewer@{}.test", t.slug);
    app.post("/api/v1/users", &t.owner, json!({"email": viewer, "password": PASSWORD, "role": "viewer"}))
        .await
        .expect(StatusCode::CREATED);
    b.click("#logout").await;
    b.log_in(&viewer, PASSWORD).await;
    for (page, ready) in [
        (format!("/applications/{app_id}"), "#services"),
        ("/applications".to_owned(), "#applications"),
        (format!("/clusters/{cluster}"), "#nodes"),
        ("/clusters".to_owned(), "#clusters"),
        (format!("/services/{worker_id}"), "#tasks"),
        ("/images".to_owned(), ".repository"),
    ] {
        b.goto(&page).await;
        b.find(ready).await;
        for control in [
            "button.small",
            "#delete-application",
            "#delete-cluster",
            "#new-cluster",
            "#deploy",
            "#scale",
            "#set-image",
            "#restart",
            "#import",
            "#download-credentials",
            "#scale-cluster",
            ".row-actions button",
            "#revisions button",
        ] {
            assert!(!b.has(control).await, "a viewer sees `{control}` on {page}");
        }
    }
    assert!(!b.has("nav a[href='/deploy']").await);

    // Another tenant sees none of it, even by URL.
    let other = app.tenant("Elsewhere").await;
    b.click("#logout").await;
    b.log_in(&other.owner_email, PASSWORD).await;
    b.goto("/applications").await;
    b.wait_text(".empty", "No applications yet").await;
    b.goto(&format!("/applications/{app_id}")).await;
    b.find(".error").await;
    b.goto("/clusters").await;
    b.wait_text(".empty", "No clusters yet").await;

    // Back as the owner: delete the cluster with its typed confirmation.
    b.click("#logout").await;
    b.log_in(&t.owner_email, PASSWORD).await;
    b.goto(&format!("/clusters/{cluster}")).await;
    b.click("#delete-cluster").await;
    assert!(!b.find("#delete-cluster-go").await.is_enabled().await.unwrap(), "disabled until the name is typed");
    b.fill("#delete-cluster-confirm", "prod").await;
    b.click("#delete-cluster-go").await;
    b.wait_text("h1", "Clusters").await;
    app.wait_for(&t.owner, "/api/v1/clusters", Duration::from_secs(120), |c| c["items"].as_array().is_some_and(|i| i.is_empty()))
        .await;
}

/// Templates in the console: the Compose editor marks the server's errors at their line and lists
/// them; a fixed file is saved, edited into a second version and compared side by side; a bundle is
/// imported.
#[tokio::test]
async fn templates_are_written_with_findings_at_their_line_and_compared_side_by_side() {
    let app = TestApp::spawn_with_console(900).await;
    let t = app.tenant("Editors").await;
    let b = Browser::start(&app.base).await;
    b.goto("/templates/new").await;
    b.log_in(&t.owner_email, PASSWORD).await;
    b.fill("#template-name", "site").await;
    b.fill("#compose", "version: \"3.8\"\nservices:\n  web:\n    image: busybox\n    deploy:\n      replicas: many\n").await;
    b.wait_text("#compose-findings", "line 6").await;
    b.wait_text("#compose-findings", "services.web.deploy.replicas").await;
    let marked = b.eval("return [...document.querySelectorAll('.editor .line')].flatMap((l, i) => l.classList.contains('err') ? [i + 1] : [])").await;
    assert_eq!(marked, json!([6]), "the error is marked at its line");
    b.survey("template-new").await;
    // Fixed, with a key Swarm ignores: a warning at its line, and the file can be saved.
    b.fill(
        "#compose",
        "version: \"3.8\"\nservices:\n  web:\n    image: busybox\n    container_name: web\n    deploy:\n      replicas: 2\n",
    )
    .await;
    b.wait_text("#compose-findings", "Warning").await;
    b.wait_text("#compose-findings", "line 5").await;
    b.click("#create-template").await;
    b.wait_text("h1", "site").await;
    b.find("#versions").await;
    // A second version, compared with the first side by side.
    b.fill("#compose", "version: \"3.8\"\nservices:\n  web:\n    image: busybox\n    deploy:\n      replicas: 3\n").await;
    b.click("#save-template").await;
    b.wait_text(".notice", "Saved as version 2").await;
    b.find("#diff").await;
    let sides = b
        .eval("return ['removed', 'added'].map(c => [...document.querySelectorAll('#diff td.' + c)].map(td => td.textContent))")
        .await;
    assert_eq!(sides, json!([["    container_name: web", "      replicas: 2"], ["      replicas: 3"]]), "side by side: {sides}");
    b.survey("template").await;
    // A bundle becomes a template.
    b.click("nav a[href='/templates']").await;
    b.fill("#dab-name", "bundled").await;
    b.fill("#dab-bundle", r#"{"Version": "0.1", "Services": {"api": {"Image": "busybox", "Args": ["sleep", "1d"]}}}"#).await;
    b.click("#import-dab").await;
    b.wait_text("h1", "bundled").await;
    b.wait_text("#compose-findings", "Valid: services api").await;
    b.click("nav a[href='/templates']").await;
    b.find("#gallery").await;
    b.survey("templates").await;
}

/// The platform admin manages tenants (quotas, admission policy, suspension) and a tenant's admin
/// manages its people and reads its audit log; a suspended tenant and a removed user are told so.
#[tokio::test]
async fn admins_manage_tenants_people_and_the_audit_log() {
    // Access tokens of 12 s: a removed user's session ends at its next renewal, within the test's wait.
    // (So the API calls below each use a token fresh from a login.)
    let app = TestApp::spawn_with_console(12).await;
    let admin = || app.login(berth_tests::ADMIN_EMAIL, berth_tests::ADMIN_PASSWORD);
    let b = Browser::start(&app.base).await;
    b.goto("/").await;
    b.log_in(berth_tests::ADMIN_EMAIL, berth_tests::ADMIN_PASSWORD).await;
    b.wait_text("h1", "Tenants").await;
    b.fill("#tenant-name", "Globex").await;
    b.fill("#owner-email", "owner@globex.test").await;
    b.fill("#owner-password", PASSWORD).await;
    b.click("#create-tenant").await;
    b.wait_text("#tenants", "globex").await;
    b.survey("tenants").await;
    b.click("#tenants a").await;
    b.wait_text("h1", "Globex").await;
    b.fill("#max_clusters", "2").await;
    b.click("#save-quotas").await;
    b.wait_text("#quota-editor .notice", "Saved").await;
    b.click("#allow_bind_mounts").await;
    b.fill("#default-memory", "256").await;
    b.click("#save-policy").await;
    b.wait_text("#admission-policy .notice", "Saved").await;
    b.survey("tenant").await;

    // The routers at work and why one keeps an older route table (reported straight into the database:
    // no router runs in this test; `routing::services_are_routed…` makes a real one fail).
    use berth::routing::applied;
    for name in ["edge-1@0.0.0.0:80", "edge-2@0.0.0.0:80", "edge-3@0.0.0.0:80"] {
        applied::report(&app.db, name, applied::now(&app.db).await.unwrap()).await.unwrap();
    }
    applied::failed(&app.db, "edge-2@0.0.0.0:80", "HAProxy refuses the configuration: [ALERT] parsing").await.unwrap();
    applied::stopped(&app.db, "edge-3@0.0.0.0:80").await.unwrap();
    b.click("nav a[href='/admin/routers']").await;
    b.wait_text("tr[data-router='edge-1@0.0.0.0:80']", "serving").await;
    b.wait_text("tr[data-router='edge-2@0.0.0.0:80']", "failing").await;
    b.wait_text("tr[data-router='edge-2@0.0.0.0:80']", "HAProxy refuses the configuration").await;
    b.wait_text("tr[data-router='edge-3@0.0.0.0:80']", "stopped").await;
    // Every page's navigation says so too, beside the Routers link (a router stopped on purpose needs
    // no attention).
    b.wait_text("nav a[href='/admin/routers'] .attention", "1 failing").await;
    b.survey("routers").await;
    let a = admin().await;
    let tenants = app.get("/api/v1/admin/tenants", &a).await.body;
    let id =
        tenants["items"].as_array().unwrap().iter().find(|t| t["slug"] == "globex").unwrap()["id"].as_str().unwrap().to_owned();
    let quotas = app.get(&format!("/api/v1/admin/tenants/{id}/quotas"), &a).await.body;
    assert_eq!(quotas["quotas"]["max_clusters"], 2);
    let policy = app.get(&format!("/api/v1/admin/tenants/{id}/admission-policy"), &a).await.body;
    assert_eq!((policy["allow_bind_mounts"].clone(), policy["default_memory_limit_mb"].clone()), (json!(true), json!(256)));

    // Suspended: its owner is told so at login.
    b.click("nav a[href='/']").await;
    b.click("tr[data-tenant='globex'] button").await;
    b.wait_text("tr[data-tenant='globex']", "suspended").await;
    b.click("#logout").await;
    b.fill("#email", "owner@globex.test").await;
    b.fill("#password", PASSWORD).await;
    b.click("#sign-in").await;
    b.wait_text(".error", "suspended").await;
    app.post(&format!("/api/v1/admin/tenants/{id}/resume"), &admin().await, json!({})).await.expect(StatusCode::OK);

    // The owner adds a developer, then makes them a viewer; the audit log shows both, filtered.
    b.log_in("owner@globex.test", PASSWORD).await;
    b.click("nav a[href='/users']").await;
    b.fill("#user-email", "dev@globex.test").await;
    b.fill("#user-password", PASSWORD).await;
    b.find("#user-role").await.select_by_value("developer").await.unwrap();
    b.click("#add-user").await;
    b.wait_text("#users", "dev@globex.test").await;
    b.find("select[aria-label='Role of dev@globex.test']").await.select_by_value("viewer").await.unwrap();
    b.survey("users").await;
    let owner = app.login("owner@globex.test", PASSWORD).await;
    app.wait_for(&owner, "/api/v1/users", Duration::from_secs(10), |u| {
        u["items"].as_array().unwrap().iter().any(|u| u["email"] == "dev@globex.test" && u["role"] == "viewer")
    })
    .await;
    b.click("nav a[href='/audit']").await;
    b.fill("#audit-action", "user.").await;
    b.click("#audit-filter").await;
    b.wait_text("#audit tbody tr", "user.update").await;
    let actions =
        b.eval("return [...document.querySelectorAll('#audit tbody tr td:nth-child(3)')].map(td => td.textContent)").await;
    assert_eq!(actions, json!(["user.update", "user.create"]), "newest first, only `user.` actions");
    b.survey("audit").await;

    // A user removed while signed in is told so when the session is next renewed.
    let owner = app.login("owner@globex.test", PASSWORD).await;
    let dev = app.get("/api/v1/users", &owner).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "dev@globex.test")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.click("#logout").await;
    b.log_in("dev@globex.test", PASSWORD).await;
    let owner = app.login("owner@globex.test", PASSWORD).await;
    app.delete(&format!("/api/v1/users/{dev}"), &owner).await.expect(StatusCode::NO_CONTENT);
    b.wait_text(".notice", "session has ended").await;
    b.find("#email").await;
}
