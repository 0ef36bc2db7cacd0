//! Defences against a hostile caller: throttled credential guessing, the operator's limits on where
//! adopted swarms may be, and security headers.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use berth_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

/// A client whose connections come from `addr` (any address in 127.0.0.0/8 is this machine's loopback).
fn client_from(addr: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(addr.parse::<IpAddr>().unwrap()).timeout(Duration::from_secs(30)).build().unwrap()
}

async fn login(app: &TestApp, client: &reqwest::Client, email: &str, password: &str) -> (StatusCode, Option<u64>) {
    let r = client.post(app.url("/api/v1/auth/login")).json(&json!({"email": email, "password": password})).send().await.unwrap();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (r.status(), retry)
}

#[tokio::test]
async fn password_guessing_slows_down_but_the_real_user_elsewhere_still_logs_in() {
    let app = TestApp::spawn().await;
    let attacker = client_from("127.0.0.1");
    // The default allowance: 5 free failures per account and address, then 1 s, 2 s, 4 s, ... locks.
    for n in 1..=5 {
        let (status, _) = login(&app, &attacker, ADMIN_EMAIL, &format!("guess-{n}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "free attempt {n}");
    }
    // The sixth is checked (and wrong), and locks the pair for a second.
    assert_eq!(login(&app, &attacker, ADMIN_EMAIL, "guess-6").await.0, StatusCode::UNAUTHORIZED);
    let (status, retry) = login(&app, &attacker, ADMIN_EMAIL, "guess-7").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some_and(|s| (1..=2).contains(&s)), "Retry-After names the wait: {retry:?}");
    // While locked, even the right password is refused from that address: otherwise the lock would be
    // no obstacle to a guesser.
    assert_eq!(login(&app, &attacker, ADMIN_EMAIL, ADMIN_PASSWORD).await.0, StatusCode::TOO_MANY_REQUESTS);

    // A bounded burst of guesses for 5 s: with locks of 1, 2 and 4 s, at most three are even checked.
    let start = Instant::now();
    let (mut checked, mut refused) = (0, 0);
    for n in 0..400 {
        if start.elapsed() > Duration::from_secs(5) {
            break;
        }
        match login(&app, &attacker, ADMIN_EMAIL, &format!("burst-{n}")).await.0 {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(checked <= 3, "guessing must slow to the configured rate: {checked} guesses checked in 5 s");
    assert!(refused > 10, "the burst was refused: {refused}");

    // The real user, from another address, is not locked out by any of this.
    let user = client_from("127.0.0.2");
    assert_eq!(login(&app, &user, ADMIN_EMAIL, ADMIN_PASSWORD).await.0, StatusCode::OK);

    // Every attempt is in the audit log.
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM audit_log WHERE action = 'auth.login' GROUP BY outcome ORDER BY outcome")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let count = |o: &str| outcomes.iter().find(|(k, _)| k == o).map_or(0, |(_, n)| *n);
    assert!(count("denied") + count("failure") >= 8 + checked as i64 + refused as i64, "{outcomes:?}");
    assert!(count("success") >= 2, "{outcomes:?}");
}

#[tokio::test]
async fn many_addresses_guessing_one_account_do_not_lock_out_a_clean_address() {
    let app = TestApp::spawn().await;
    // 50 failures (the account-wide allowance) spread over 10 addresses, none of them locked on its own.
    for a in 10..20 {
        let c = client_from(&format!("127.0.1.{a}"));
        for n in 0..5 {
            assert_eq!(login(&app, &c, ADMIN_EMAIL, &format!("g{a}-{n}")).await.0, StatusCode::UNAUTHORIZED);
        }
    }
    // One more from a new address is checked, and puts the account over its ceiling; from then on an
    // address that has failed on the account waits, even with the right password...
    let failed_before = client_from("127.0.1.30");
    assert_eq!(login(&app, &failed_before, ADMIN_EMAIL, "one-more").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(login(&app, &failed_before, ADMIN_EMAIL, ADMIN_PASSWORD).await.0, StatusCode::TOO_MANY_REQUESTS);
    // ...but the real user at a clean address gets in.
    assert_eq!(login(&app, &client_from("127.0.2.1"), ADMIN_EMAIL, ADMIN_PASSWORD).await.0, StatusCode::OK);
}

#[tokio::test]
async fn refresh_token_guessing_is_throttled_per_address() {
    let app = TestApp::spawn().await;
    let guesser = client_from("127.0.0.3");
    let mut statuses = Vec::new();
    for n in 0..24 {
        let r = guesser
            .post(app.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": format!("brt_guess{n}")}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[21..].iter().all(|s| *s == 429), "{statuses:?}");
    // Another address refreshes a real token normally.
    let tokens = app
        .call(reqwest::Method::POST, "/api/v1/auth/login", None, Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})))
        .await;
    let r = client_from("127.0.0.4")
        .post(app.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": tokens.body["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";

#[tokio::test]
async fn existing_clusters_may_only_point_inside_the_operators_networks() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let before = app.row_counts().await;
    // The test harness allows only the local provider's node networks (10.213.0.0/16); loopback is outside.
    for (endpoint, says) in [
        ("tcp://127.0.0.1:2376", "BERTH_EXISTING_ALLOWED_NETWORKS"),
        ("tcp://[::1]:2376", "BERTH_EXISTING_ALLOWED_NETWORKS"),
        ("tcp://localhost:2376", "by IP address"),
        ("unix:///var/run/docker.sock", "BERTH_EXISTING_SOCKET_DIRS"),
    ] {
        let r = app
            .post(
                "/api/v1/clusters",
                &t.owner,
                json!({"name": "ssrf", "provider": "existing", "endpoint": endpoint,
                       "ca_pem": PEM_CERT, "cert_pem": PEM_CERT, "key_pem": PEM_KEY}),
            )
            .await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(r.body["errors"][0]["field"], "endpoint", "{}", r.body);
        assert!(r.body["errors"][0]["message"].as_str().unwrap().contains(says), "{endpoint}: {}", r.body);
    }
    assert_eq!(app.row_counts().await, before, "nothing was written");
}

#[tokio::test]
async fn a_worker_rechecks_the_rules_when_it_connects() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    // A cluster registered while the operator allowed loopback, say, and refused after the list narrowed:
    // the worker must not connect.
    let cluster = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO clusters (id, tenant_id, name, provider, desired_managers, desired_workers, settings)
         VALUES ($1, $2, 'old', 'existing', 1, 0, '{\"endpoint\": \"tcp://127.0.0.1:9\"}')",
    )
    .bind(cluster)
    .bind(t.id)
    .execute(&app.db)
    .await
    .unwrap();
    let keys = berth::crypto::Keys::from_secret(berth_tests::SECRET).unwrap();
    let dir = berth_tests::temp_data_dir("berth-recheck");
    let env = berth::clusters::WorkerEnv::new(keys, dir.clone(), berth_tests::test_existing_policy(), None, Default::default());
    let err = berth::clusters::access::connect_manager(&app.db, &env, cluster).await.err().expect("refused");
    assert!(format!("{err:#}").contains("refusing to connect to tcp://127.0.0.1:9"), "{err:#}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let authed = http.get(app.url("/api/v1/me")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(authed.status(), 200);
    let h = authed.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));

    let refused = http.get(app.url("/api/v1/me")).bearer_auth("nonsense").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["cache-control"], "no-store");
    assert_eq!(refused.headers()["x-content-type-options"], "nosniff");

    let docs = http.get(app.url("/api/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let csp = docs.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let page = docs.text().await.unwrap();
    assert!(!page.contains("<script>"), "the docs page must not need inline scripts under its CSP");
}
