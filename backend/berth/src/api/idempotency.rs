//! `Idempotency-Key` on POST: the first request with a key runs and its response is kept for 24 hours;
//! a retry with the same key and body gets that response again (header `Idempotent-Replayed: true`)
//! instead of creating a second object. Keys are per caller, so two callers cannot collide.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::principal::Authentication;
use crate::error::ApiError;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";

pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER).cloned() else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        _ => {
            return ApiError::bad_request("invalid-idempotency-key", "Idempotency-Key must be 1–255 visible ASCII characters")
                .into_response();
        }
    };
    // Unauthenticated requests carry on to the handler, which answers 401 as usual.
    let Some(principal) = req.extensions().get::<Authentication>().and_then(Authentication::principal) else {
        return next.run(req).await;
    };
    match run(&state, principal.key(), key, req, next).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn run(state: &AppState, principal: String, key: String, req: Request, next: Next) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, state.max_body_bytes).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "the request body is larger than the server accepts")
    })?;
    let path = parts.uri.path().to_owned();
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update([0]);
    h.update(&bytes);
    let hash = h.finalize().to_vec();

    sqlx::query("DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND created_at < now() - interval '24 hours'")
        .bind(&principal)
        .bind(&key)
        .execute(&state.system)
        .await?;
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (principal, key, method, path, request_hash) VALUES ($1, $2, 'POST', $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(&principal)
    .bind(&key)
    .bind(&path)
    .bind(&hash)
    .execute(&state.system)
    .await?
    .rows_affected()
        == 1;

    if !claimed {
        let (stored_hash, status, body): (Vec<u8>, Option<i32>, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE principal = $1 AND key = $2",
        )
        .bind(&principal)
        .bind(&key)
        .fetch_one(&state.system)
        .await?;
        if stored_hash != hash {
            return Err(ApiError::invalid_field(
                "Idempotency-Key",
                "this key was already used for a different request; use a new key for a new request",
            ));
        }
        let Some(status) = status else {
            return Err(ApiError::conflict(
                "idempotency-in-progress",
                "a request with this Idempotency-Key is still being processed",
            ));
        };
        let status = StatusCode::from_u16(status as u16).map_err(anyhow::Error::from)?;
        let mut resp = (status, body.unwrap_or_default()).into_response();
        let content_type = if status.is_client_error() { "application/problem+json" } else { "application/json" };
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(resp);
    }

    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (resp_parts, resp_body) = resp.into_parts();
    let resp_bytes = axum::body::to_bytes(resp_body, usize::MAX).await.map_err(|e| anyhow::anyhow!("buffering response: {e}"))?;
    if resp_parts.status.is_server_error() {
        // Nothing was done (or nothing we can vouch for): let the client retry with the same key.
        sqlx::query("DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2")
            .bind(&principal)
            .bind(&key)
            .execute(&state.system)
            .await?;
    } else {
        sqlx::query("UPDATE idempotency_keys SET status_code = $3, response_body = $4 WHERE principal = $1 AND key = $2")
            .bind(&principal)
            .bind(&key)
            .bind(resp_parts.status.as_u16() as i32)
            .bind(resp_bytes.to_vec())
            .execute(&state.system)
            .await?;
    }
    Ok(Response::from_parts(resp_parts, Body::from(resp_bytes)))
}
