//! Bad input of every kind gets a clear problem+json answer, and writes nothing.

use berth_tests::{TestApp, serve_config};
use reqwest::StatusCode;
use serde_json::json;

use crate::fixtures;

async fn raw(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> berth_tests::Resp {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(token).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    berth_tests::Resp::from(req.send().await.unwrap()).await
}

#[tokio::test]
async fn malformed_mistyped_and_unknown_input_is_refused_without_writing() {
    let app = TestApp::spawn_with(serve_config(16 * 1024)).await;
    let t = app.tenant("Acme").await;
    let cluster = fixtures::cluster(&app, &t.owner).await;
    let before = app.row_counts().await;
    let post = reqwest::Method::POST;

    // Not JSON at all, or cut short.
    let r = raw(&app, post.clone(), "/api/v1/clusters", &t.owner, Some("application/json"), b"{\"name\": ".to_vec()).await;
    r.problem(StatusCode::BAD_REQUEST, "malformed-json");
    let r = raw(&app, post.clone(), "/api/v1/templates", &t.owner, Some("application/json"), b"not json".to_vec()).await;
    r.problem(StatusCode::BAD_REQUEST, "malformed-json");
    // Wrong content type.
    let r = raw(&app, post.clone(), "/api/v1/clusters", &t.owner, Some("text/plain"), b"{}".to_vec()).await;
    r.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    let r = raw(&app, post.clone(), "/api/v1/clusters", &t.owner, None, b"{}".to_vec()).await;
    r.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");

    // Well-formed but wrong: each names the field.
    for (path, body, field) in [
        ("/api/v1/clusters", json!({"name": "x", "managers": "one", "workers": 0}), "managers"),
        ("/api/v1/clusters", json!({"name": "x", "managers": 1}), "workers"),
        ("/api/v1/clusters", json!({"name": "x", "managers": 1, "workers": 0, "colour": "red"}), "colour"),
        ("/api/v1/clusters", json!({"name": "x", "managers": 1, "workers": 0, "provider": "ec3"}), "provider"),
        ("/api/v1/clusters", json!({"name": "Not_DNS", "managers": 1, "workers": 0}), "name"),
        ("/api/v1/clusters", json!({"name": "ok", "managers": 0, "workers": 0}), "managers"),
        ("/api/v1/clusters", json!({"name": "ok", "managers": 1, "workers": 1000}), "workers"),
        ("/api/v1/clusters", json!({"name": "ok", "provider": "existing"}), "endpoint"),
        ("/api/v1/clusters", json!({"name": "ok", "provider": "existing", "managers": 1, "endpoint": "tcp://h:1"}), "managers"),
        ("/api/v1/clusters", json!({"name": "ok", "provider": "existing", "endpoint": "http://x"}), "endpoint"),
        ("/api/v1/clusters", json!({"name": "ok", "provider": "existing", "endpoint": "tcp://10.213.1.2:2376"}), "ca_pem"),
        (
            "/api/v1/clusters",
            json!({"name": "ok", "provider": "existing", "endpoint": "unix:///var/run/docker.sock"}),
            "endpoint",
        ),
        (
            "/api/v1/clusters",
            json!({"name": "ok", "provider": "local", "managers": 1, "workers": 0, "endpoint": "tcp://h:1"}),
            "endpoint",
        ),
        ("/api/v1/users", json!({"email": "not-an-email", "password": "password-123", "role": "viewer"}), "email"),
        ("/api/v1/users", json!({"email": "a@b.test", "password": "short", "role": "viewer"}), "password"),
        ("/api/v1/users", json!({"email": "a@b.test", "password": "password-123", "role": "god"}), "role"),
        ("/api/v1/users", json!({"email": "a@b.test", "password": "password-123", "role": "platform_admin"}), "role"),
        ("/api/v1/templates", json!({"name": "t", "compose": 42}), "compose"),
        ("/api/v1/registries", json!({"name": "r", "address": "https://registry.test"}), "address"),
        ("/api/v1/applications", json!({"name": "a", "cluster_id": "not-a-uuid", "template_id": cluster}), "cluster_id"),
        ("/api/v1/tokens", json!({"name": "", "role": "viewer"}), "name"),
        ("/api/v1/tokens", json!({"name": "n", "role": "viewer", "expires_at": "yesterday"}), "expires_at"),
    ] {
        let r = app.post(path, &t.owner, body.clone()).await;
        r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
        assert_eq!(r.body["errors"][0]["field"], field, "{path} {body}: {}", r.text);
    }
    // Nested fields are named by their path.
    let r = app.patch(&format!("/api/v1/clusters/{cluster}"), &t.owner, json!({"workers": [1]})).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    assert_eq!(r.body["errors"][0]["field"], "workers");

    // A Compose syntax error points at its line and column.
    let r =
        app.post("/api/v1/templates", &t.owner, json!({"name": "bad", "compose": "services:\n  web:\n    image: [oops\n"})).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
    assert!(r.body["line"].as_u64().unwrap() >= 3, "{}", r.text);
    assert!(r.body["column"].as_u64().is_some());
    let r = app.post("/api/v1/templates", &t.owner, json!({"name": "bad", "compose": "services:\n  web:\n    build: .\n"})).await;
    r.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose");
    assert!(r.body["detail"].as_str().unwrap().contains("image"));

    // Bad ids and queries.
    app.get("/api/v1/clusters/not-a-uuid", &t.owner).await.problem(StatusCode::BAD_REQUEST, "invalid-id");
    app.delete("/api/v1/templates/12345", &t.owner).await.problem(StatusCode::BAD_REQUEST, "invalid-id");
    app.get("/api/v1/clusters?limit=0", &t.owner).await.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed");
    app.get("/api/v1/clusters?limit=abc", &t.owner).await.problem(StatusCode::BAD_REQUEST, "invalid-query");
    app.get("/api/v1/clusters?cursor=%%%", &t.owner).await.problem(StatusCode::BAD_REQUEST, "invalid-cursor");
    app.get("/api/v1/clusters?cursor=bm90LWEtdXVpZA", &t.owner).await.problem(StatusCode::BAD_REQUEST, "invalid-cursor");
    // Unknown routes and methods.
    app.get("/api/v1/nothing-here", &t.owner).await.problem(StatusCode::NOT_FOUND, "no-such-route");
    app.put("/api/v1/clusters", &t.owner, json!({})).await.problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");

    // A body over the limit is 413, streamed or not.
    let huge = json!({"name": "big", "compose": "x".repeat(64 * 1024)});
    app.post("/api/v1/templates", &t.owner, huge.clone()).await.problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    let chunked = reqwest::Body::wrap_stream(futures_stream(vec![
        b"{\"name\":\"big\",\"compose\":\"".to_vec(),
        vec![b'x'; 40 * 1024],
        b"\"}".to_vec(),
    ]));
    let r = app
        .http
        .post(app.url("/api/v1/templates"))
        .bearer_auth(&t.owner)
        .header("content-type", "application/json")
        .body(chunked)
        .send()
        .await
        .unwrap();
    let r = berth_tests::Resp::from(r).await;
    r.problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");

    assert_eq!(app.row_counts().await, before, "refused input wrote something");
}

fn futures_stream(chunks: Vec<Vec<u8>>) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    struct Chunks(std::vec::IntoIter<Vec<u8>>);
    impl futures_core::Stream for Chunks {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next().map(Ok))
        }
    }
    Chunks(chunks.into_iter())
}

#[tokio::test]
async fn five_hundreds_do_not_leak_internals() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    // Break the database under the API: the request fails as a generic 500 problem.
    sqlx::query("ALTER TABLE templates RENAME TO templates_gone").execute(&app.db).await.unwrap();
    let r = app.get("/api/v1/templates", &t.owner).await;
    r.problem(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(!r.text.contains("templates"), "the 500 leaks the cause: {}", r.text);
    assert!(r.headers.get("x-request-id").is_some());
    sqlx::query("ALTER TABLE templates_gone RENAME TO templates").execute(&app.db).await.unwrap();
}
