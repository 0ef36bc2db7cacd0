//! Browser sessions (the console's login): the same credentials, throttling, rotation and audit as
//! `/auth/login` and `/auth/refresh`, but the refresh token travels only in a cookie that scripts
//! cannot read — `HttpOnly`, `SameSite=Strict` (never sent by another site's page, which is what keeps
//! these cookie-authenticated endpoints safe from cross-site requests), scoped to this path, and
//! `Secure` when the request came over HTTPS. API calls still carry the access token as a bearer header;
//! the cookie only ever buys a new one.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_types::{LoginRequest, Problem, SessionResponse, TokenResponse};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::auth::{describe, revoke_family, revoke_sessions_of, rotate, sign_in};
use crate::api::extract::{ApiJson, ApiQuery};
use crate::auth::Principal;
use crate::auth::throttle::ClientAddr;
use crate::crypto::token_hash;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The cookie that holds the refresh token.
pub const COOKIE: &str = "berth_session";
/// The only path the browser sends it to.
const COOKIE_PATH: &str = "/api/v1/auth/session";

/// Starts a browser session: the access token in the body, the refresh token in the session cookie.
#[utoipa::path(post, path = "/api/v1/auth/session", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = SessionResponse, headers(("set-cookie" = String, description = "`berth_session`: the refresh token, HttpOnly, SameSite=Strict"))),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem),
              (status = 429, body = Problem, description = "Too many failed logins for this account from this address (or from everywhere); see `Retry-After`.")))]
pub async fn start_session(
    State(state): State<AppState>,
    audit: Audit,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let (tokens, principal) = sign_in(&state, &audit, addr, req).await?;
    respond(&state, &headers, tokens, &principal).await
}

/// Renews the access token from the session cookie (and rotates the cookie: each refresh token works
/// once). A refused session also clears the cookie.
#[utoipa::path(post, path = "/api/v1/auth/session/refresh", tag = "auth",
    params(("berth_session" = Option<String>, Cookie, description = "The session's refresh token, set by `POST /api/v1/auth/session`")),
    responses((status = 200, body = SessionResponse, headers(("set-cookie" = String, description = "The rotated `berth_session` cookie"))),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 429, body = Problem, description = "Too many invalid refresh tokens from this address; see `Retry-After`.")))]
pub async fn renew_session(
    State(state): State<AppState>,
    audit: Audit,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let token = cookie(&headers).ok_or_else(|| ApiError::unauthorized("no session in this browser; log in"))?;
        let (tokens, principal) = rotate(&state, &audit, addr, &token).await?;
        respond(&state, &headers, tokens, &principal).await
    }
    .await;
    match result {
        Ok(resp) => resp,
        Err(e) => {
            let mut resp = e.into_response();
            if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
                resp.headers_mut().insert(header::SET_COOKIE, clear_cookie(&headers));
            }
            resp
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndSession {
    /// Also end every other session of this user (every browser, every refresh token).
    #[serde(default)]
    pub everywhere: bool,
}

/// Logs out: the session cookie's login (or, with `everywhere`, every login of the user) stops working,
/// and the cookie is cleared. Answers 204 whether or not there was a session to end.
#[utoipa::path(delete, path = "/api/v1/auth/session", tag = "auth", params(EndSession,
        ("berth_session" = Option<String>, Cookie, description = "The session's refresh token")),
    responses((status = 204, description = "Logged out; the cookie is cleared"), (status = 400, body = Problem)))]
pub async fn end_session(
    State(state): State<AppState>,
    audit: Audit,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EndSession>,
) -> ApiResult<Response> {
    if let Some(token) = cookie(&headers) {
        let mut tx = state.system.begin().await?;
        let row: Option<(Uuid, Uuid)> = sqlx::query_as("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash(&token))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((family, user)) = row {
            audit.record("auth.logout", "user", user);
            match q.everywhere {
                true => revoke_sessions_of(&mut tx, &[user]).await?,
                false => revoke_family(&mut tx, family).await?,
            }
        }
        tx.commit().await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, clear_cookie(&headers));
    Ok(resp)
}

async fn respond(state: &AppState, headers: &HeaderMap, tokens: TokenResponse, principal: &Principal) -> ApiResult<Response> {
    let me = describe(state, principal).await?;
    let max_age = state.security.refresh_token_ttl().as_secs();
    let set = format!("{COOKIE}={}; Max-Age={max_age}; {}", tokens.refresh_token, attributes(headers));
    let body =
        SessionResponse { access_token: tokens.access_token, token_type: tokens.token_type, expires_in: tokens.expires_in, me };
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&set).map_err(anyhow::Error::from)?);
    // The body holds a token: no cache may keep it (the request itself carried no credentials).
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn attributes(headers: &HeaderMap) -> String {
    // Behind a TLS-terminating proxy, Berth learns the scheme from `X-Forwarded-Proto`. Trusting it is
    // harmless: at worst a client asks for a cookie that is only sent over HTTPS.
    let https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("Path={COOKIE_PATH}; HttpOnly; SameSite=Strict{}", if https { "; Secure" } else { "" })
}

fn clear_cookie(headers: &HeaderMap) -> HeaderValue {
    HeaderValue::from_str(&format!("{COOKIE}=; Max-Age=0; {}", attributes(headers))).expect("a valid header")
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; berth_session=brt_x; b=2"));
        assert_eq!(cookie(&h).as_deref(), Some("brt_x"));
        h.insert(header::COOKIE, HeaderValue::from_static("berth_session="));
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn the_cookie_is_secure_only_behind_https() {
        let mut h = HeaderMap::new();
        assert!(!attributes(&h).contains("Secure"));
        assert!(attributes(&h).contains("HttpOnly; SameSite=Strict"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(attributes(&h).ends_with("; Secure"));
    }
}
