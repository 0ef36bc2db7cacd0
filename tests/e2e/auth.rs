//! Login, refresh rotation, logout, JWT validation, API tokens and suspension.

use berth_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, SECRET, TestApp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn login_full(app: &TestApp, email: &str, password: &str) -> berth_tests::Resp {
    app.call(Method::POST, "/api/v1/auth/login", None, Some(json!({"email": email, "password": password}))).await
}

#[tokio::test]
async fn login_returns_the_contracted_shape_and_me_knows_the_caller() {
    let app = TestApp::spawn().await;
    let r = login_full(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 900);
    assert!(r.body["access_token"].as_str().unwrap().split('.').count() == 3, "a JWT");
    assert!(r.body["refresh_token"].as_str().unwrap().len() > 30);
    let me = app.get("/api/v1/me", r.body["access_token"].as_str().unwrap()).await;
    me.expect(StatusCode::OK);
    assert_eq!(me.body["email"], ADMIN_EMAIL);
    assert_eq!(me.body["role"], "platform_admin");
    assert!(me.body["tenant"].is_null());

    let t = app.tenant("Acme Corp").await;
    let me = app.get("/api/v1/me", &t.owner).await;
    assert_eq!(me.body["role"], "owner");
    assert_eq!(me.body["tenant"]["slug"], "acme-corp");
    assert_eq!(me.body["via"], "user");
}

#[tokio::test]
async fn wrong_credentials_are_one_clear_401() {
    let app = TestApp::spawn().await;
    let wrong_password = login_full(&app, ADMIN_EMAIL, "not-the-password").await;
    wrong_password.problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    let unknown = login_full(&app, "nobody@example.test", "whatever-pass").await;
    unknown.problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    // The same answer either way: the API does not reveal which e-mail addresses have accounts.
    assert_eq!(wrong_password.body, unknown.body);
    // E-mail comparison ignores case.
    login_full(&app, &ADMIN_EMAIL.to_uppercase(), ADMIN_PASSWORD).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_login() {
    let app = TestApp::spawn().await;
    let first = login_full(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let rt1 = first.body["refresh_token"].as_str().unwrap().to_owned();
    let second = app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": rt1}))).await;
    second.expect(StatusCode::OK);
    let rt2 = second.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    app.get("/api/v1/me", second.body["access_token"].as_str().unwrap()).await.expect(StatusCode::OK);

    // Presenting the used token again looks like theft: both it and its successor stop working.
    let replay = app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": rt1}))).await;
    replay.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let after = app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": rt2}))).await;
    after.problem(StatusCode::UNAUTHORIZED, "unauthorized");

    // A separate login is unaffected, and logout ends it.
    let other = login_full(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let rt3 = other.body["refresh_token"].as_str().unwrap().to_owned();
    app.call(Method::POST, "/api/v1/auth/logout", None, Some(json!({"refresh_token": rt3}))).await.expect(StatusCode::NO_CONTENT);
    app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": rt3})))
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": "brt_made-up"})))
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

fn jwt(secret_key: &[u8], claims: serde_json::Value, alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret_key)).unwrap()
}

#[tokio::test]
async fn expired_forged_and_malformed_credentials_are_401() {
    let app = TestApp::spawn().await;
    let me = app.get("/api/v1/me", &app.admin).await;
    let sub = me.body["id"].as_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    let real_key = berth::crypto::Keys::from_secret(SECRET).unwrap().jwt;

    let expired = jwt(
        &real_key,
        json!({"sub": sub, "role": "platform_admin", "iat": now - 100, "exp": now - 10, "aud": "berth-api"}),
        Algorithm::HS256,
    );
    let forged = jwt(
        b"some other key that is long enough!",
        json!({"sub": sub, "role": "platform_admin", "iat": now, "exp": now + 600, "aud": "berth-api"}),
        Algorithm::HS256,
    );
    let wrong_aud = jwt(
        &real_key,
        json!({"sub": sub, "role": "platform_admin", "iat": now, "exp": now + 600, "aud": "elsewhere"}),
        Algorithm::HS256,
    );
    let other_alg = jwt(
        &real_key,
        json!({"sub": sub, "role": "platform_admin", "iat": now, "exp": now + 600, "aud": "berth-api"}),
        Algorithm::HS512,
    );
    let unknown_user = jwt(
        &real_key,
        json!({"sub": uuid::Uuid::now_v7(), "role": "platform_admin", "iat": now, "exp": now + 600, "aud": "berth-api"}),
        Algorithm::HS256,
    );
    // `alg: none`, hand-made: header {"alg":"none"} and no signature.
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64_url(&json!({"sub": sub, "role": "platform_admin", "exp": now + 600, "aud": "berth-api"}).to_string())
    );

    let expired_resp = app.get("/api/v1/me", &expired).await;
    expired_resp.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(expired_resp.body["detail"].as_str().unwrap().contains("expired"));
    for bad in [forged, wrong_aud, other_alg, unknown_user, none, "garbage".into(), "berth_not-a-real-token".into()] {
        app.get("/api/v1/me", &bad).await.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    app.call(Method::GET, "/api/v1/me", None, None).await.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let basic = app.http.get(app.url("/api/v1/me")).header("authorization", "Basic YTpi").send().await.unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
}

fn base64_url(s: &str) -> String {
    use std::fmt::Write;
    // A tiny base64url encoder, so the test does not depend on the code under test for it.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let _ = out.write_char(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn api_tokens_authenticate_are_capped_by_role_and_stop_when_revoked() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let dev = app.user(&t.owner, "developer").await;

    // A developer cannot mint an admin token.
    app.post("/api/v1/tokens", &dev, json!({"name": "too-strong", "role": "admin"}))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    app.post("/api/v1/tokens", &dev, json!({"name": "past", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");

    let created = app.post("/api/v1/tokens", &dev, json!({"name": "ci", "role": "developer"})).await;
    created.expect(StatusCode::CREATED);
    let secret = created.body["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("berth_"));
    let me = app.get("/api/v1/me", &secret).await;
    me.expect(StatusCode::OK);
    assert_eq!(me.body["via"], "token");
    assert_eq!(me.body["role"], "developer");
    // The secret is shown once: listing never returns it.
    let list = app.get("/api/v1/tokens", &dev).await;
    assert!(!list.text.contains(&secret));
    assert!(list.body["items"].as_array().unwrap().iter().any(|i| i["id"] == created.body["id"]));
    // Stored hashed: the secret is not in the database.
    let raw: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM api_tokens").fetch_all(&app.db).await.unwrap();
    assert!(raw.iter().all(|h| h.len() == 32 && h.as_slice() != secret.as_bytes()));
    // Tokens cannot create tokens.
    app.post("/api/v1/tokens", &secret, json!({"name": "child", "role": "viewer"}))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");

    app.delete(&format!("/api/v1/tokens/{}", created.id()), &dev).await.expect(StatusCode::NO_CONTENT);
    let revoked = app.get("/api/v1/me", &secret).await;
    revoked.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(revoked.body["detail"].as_str().unwrap().contains("revoked"));

    // Demoting the creator demotes their tokens at once.
    let admin_email = format!("adm-{}@example.test", uuid::Uuid::new_v4().simple());
    let admin_user =
        app.post("/api/v1/users", &t.owner, json!({"email": admin_email, "password": PASSWORD, "role": "admin"})).await;
    let admin = app.login(&admin_email, PASSWORD).await;
    let admin_token = app.api_token(&admin, "admin").await;
    app.get("/api/v1/users", &admin_token).await.expect(StatusCode::OK);
    app.patch(&format!("/api/v1/users/{}", admin_user.id()), &t.owner, json!({"role": "viewer"})).await.expect(StatusCode::OK);
    app.get("/api/v1/users", &admin_token).await.problem(StatusCode::FORBIDDEN, "forbidden");
    app.get("/api/v1/users", &admin).await.problem(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn a_suspended_tenant_is_locked_out_at_once_and_resumes() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let token = app.api_token(&t.owner, "viewer").await;
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE tenant_id = $1 AND role = 'owner'")
        .bind(t.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    app.post(&format!("/api/v1/admin/tenants/{}/suspend", t.id), &app.admin, json!({})).await.expect(StatusCode::OK);
    app.get("/api/v1/clusters", &t.owner).await.problem(StatusCode::FORBIDDEN, "tenant-suspended");
    app.get("/api/v1/clusters", &token).await.problem(StatusCode::FORBIDDEN, "tenant-suspended");
    login_full(&app, &email, PASSWORD).await.problem(StatusCode::FORBIDDEN, "tenant-suspended");
    app.post(&format!("/api/v1/admin/tenants/{}/resume", t.id), &app.admin, json!({})).await.expect(StatusCode::OK);
    app.get("/api/v1/clusters", &t.owner).await.expect(StatusCode::OK);
    login_full(&app, &email, PASSWORD).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn user_management_keeps_an_owner_and_respects_rank() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let owner_id = app.get("/api/v1/me", &t.owner).await.id();
    let admin = app.user(&t.owner, "admin").await;
    // The last owner can be neither removed nor demoted.
    app.delete(&format!("/api/v1/users/{owner_id}"), &t.owner).await.problem(StatusCode::CONFLICT, "last-owner");
    app.patch(&format!("/api/v1/users/{owner_id}"), &t.owner, json!({"role": "admin"}))
        .await
        .problem(StatusCode::CONFLICT, "last-owner");
    // Admins do not touch owners or make them.
    app.delete(&format!("/api/v1/users/{owner_id}"), &admin).await.problem(StatusCode::FORBIDDEN, "forbidden");
    app.post("/api/v1/users", &admin, json!({"email": "o2@example.test", "password": PASSWORD, "role": "owner"}))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    // Duplicate e-mail addresses are refused, case-insensitively.
    app.post("/api/v1/users", &t.owner, json!({"email": "dup@example.test", "password": PASSWORD, "role": "viewer"}))
        .await
        .expect(StatusCode::CREATED);
    app.post("/api/v1/users", &t.owner, json!({"email": "DUP@example.test", "password": PASSWORD, "role": "viewer"}))
        .await
        .problem(StatusCode::CONFLICT, "email-taken");
    // A user changes their own password; their sessions end, the new password works.
    let viewer_email = "v@example.test";
    app.post("/api/v1/users", &t.owner, json!({"email": viewer_email, "password": PASSWORD, "role": "viewer"}))
        .await
        .expect(StatusCode::CREATED);
    let viewer = login_full(&app, viewer_email, PASSWORD).await;
    let vt = viewer.body["access_token"].as_str().unwrap();
    let vid = app.get("/api/v1/me", vt).await.id();
    app.patch(&format!("/api/v1/users/{vid}"), vt, json!({"password": "a-new-password"})).await.expect(StatusCode::OK);
    app.call(Method::POST, "/api/v1/auth/refresh", None, Some(json!({"refresh_token": viewer.body["refresh_token"]})))
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    app.login(viewer_email, "a-new-password").await;
    // ...but cannot change their own role.
    app.patch(&format!("/api/v1/users/{vid}"), vt, json!({"role": "owner"})).await.problem(StatusCode::FORBIDDEN, "forbidden");
}

/// Clients that hang up mid-request (a load generator stopping, a browser closing) must not leave a
/// pooled connection inside an open transaction, holding locks that stall everyone else: requests run
/// to their end whatever the client does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_off_by_their_clients_leave_no_transaction_open() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let impatient = reqwest::Client::builder().build().unwrap();
    for round in 0..10u64 {
        let mut calls = Vec::new();
        for i in 0..24u64 {
            let (client, url, owner) = (impatient.clone(), app.url("/api/v1/auth/login"), t.owner.clone());
            let cluster_url = app.url("/api/v1/clusters");
            // Cut off after a few milliseconds: somewhere inside the throttle's or the create's transaction.
            let wait = std::time::Duration::from_micros(500 + 700 * ((round * 24 + i) % 11));
            calls.push(tokio::spawn(async move {
                let login = client.post(url).json(&json!({"email": "nobody@example.test", "password": "wrong-password"}));
                let _ = tokio::time::timeout(wait, login.send()).await;
                let create = client
                    .post(cluster_url)
                    .bearer_auth(owner)
                    .json(&json!({"name": format!("c{round}x{i}"), "managers": 1, "workers": 0}));
                let _ = tokio::time::timeout(wait, create.send()).await;
            }));
        }
        for c in calls {
            c.await.unwrap();
        }
    }
    // Whatever was cut off has finished by now; no connection of this database waits inside a transaction.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let open: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(query, '') FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(open.is_empty(), "connections left inside a transaction: {open:?}");
    // And the server still answers everything that takes locks.
    app.get("/api/v1/clusters", &t.owner).await.expect(StatusCode::OK);
    app.post("/api/v1/clusters", &t.owner, json!({"name": "after", "managers": 1, "workers": 0}))
        .await
        .expect(StatusCode::ACCEPTED);
}

#[tokio::test]
async fn listeners_take_no_connection_from_the_pool_sign_in_uses() {
    // Two connections in the system pool (Berth's default is two per CPU, at least four). The event
    // hub listens from the start; it used to hold one of them for as long as it ran (as did the job
    // runner and the router), and sign-ins waited for what was left until they timed out.
    let mut cfg = berth_tests::serve_config(1 << 20);
    cfg.db.db_pool_size = Some(2);
    let app = TestApp::spawn_with(cfg).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listening: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query = 'LISTEN \"berth_events\"'")
                .bind(&app.db_name)
                .fetch_one(&app.db)
                .await
                .unwrap();
        if listening == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the event hub never listened");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let system = app.system_pool();
    let mut held = Vec::new();
    for n in 1..=2 {
        let conn = tokio::time::timeout(std::time::Duration::from_secs(3), system.acquire())
            .await
            .unwrap_or_else(|_| panic!("system connection {n} of 2 not given within 3 s while the event hub listens"))
            .unwrap();
        held.push(conn);
    }
    drop(held);
    assert_eq!(login_full(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await.status, 200);
}
