//! The typed client of Berth's REST API: the only module that knows URLs and tokens.
//!
//! The session follows the usual rule for browser apps: the short-lived access token lives only in this
//! module's memory (never in storage a script could read after a reload), the refresh token only in an
//! HttpOnly, SameSite=Strict cookie scoped to `/api/v1/auth/session` that the server sets and rotates.
//! A reload therefore starts with `resume()` (the cookie buys a new access token); the access token is
//! renewed silently before it expires and, should one still be refused, once on a 401 before the
//! request is retried, so a page never loses what it was doing.

use std::cell::RefCell;
use std::time::Duration;

use berth_types::{FieldError, Problem, SessionResponse};
use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, Shared};
use gloo_net::http::{Method, Request, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const BASE: &str = "/api/v1";
const SESSION: &str = "/api/v1/auth/session";

/// An error as the console shows it: the server's problem+json when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// The problem's `type` (`quota-exceeded`, `invalid-credentials`, …), or `network`.
    pub kind: String,
    pub detail: String,
    pub errors: Vec<FieldError>,
}

impl ApiError {
    /// A mistake the console catches before asking Berth (shown like the server's own errors).
    pub fn input(detail: impl Into<String>) -> ApiError {
        ApiError { status: 0, kind: "input".into(), detail: detail.into(), errors: vec![] }
    }

    fn network(e: impl std::fmt::Display) -> ApiError {
        ApiError { status: 0, kind: "network".into(), detail: format!("Berth could not be reached: {e}"), errors: vec![] }
    }

    fn from_problem(status: u16, p: Problem) -> ApiError {
        let kind = p.type_.rsplit('/').next().unwrap_or(&p.type_).to_owned();
        ApiError { status, kind, detail: p.detail, errors: p.errors }
    }

    /// Field errors for one field (forms show them beside it).
    pub fn field(&self, name: &str) -> Option<String> {
        self.errors.iter().find(|e| e.field == name).map(|e| e.message.clone())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

type Refresh = Shared<LocalBoxFuture<'static, ApiResult<()>>>;
type OnLost = Box<dyn Fn(ApiError)>;

thread_local! {
    /// The access token, in memory only.
    static ACCESS: RefCell<Option<String>> = const { RefCell::new(None) };
    /// A refresh in flight: concurrent 401s wait for the same one (a refresh token works once).
    static REFRESHING: RefCell<Option<Refresh>> = const { RefCell::new(None) };
    /// Told when the session is over (refresh refused): the app shows the login page with the reason.
    static ON_LOST: RefCell<Option<OnLost>> = const { RefCell::new(None) };
    /// Bumped by every new session, so a timer of an older one does nothing.
    static GENERATION: RefCell<u64> = const { RefCell::new(0) };
}

pub fn on_session_lost(f: impl Fn(ApiError) + 'static) {
    ON_LOST.with(|l| *l.borrow_mut() = Some(Box::new(f)));
}

pub fn access_token() -> Option<String> {
    ACCESS.with(|a| a.borrow().clone())
}

fn start_session(s: &SessionResponse) {
    ACCESS.with(|a| *a.borrow_mut() = Some(s.access_token.clone()));
    let generation = GENERATION.with(|g| {
        *g.borrow_mut() += 1;
        *g.borrow()
    });
    // Renew at three quarters of the lifetime: early enough for slow networks, late enough to be rare.
    let after = Duration::from_millis((s.expires_in.max(1) * 750).max(500));
    leptos::prelude::set_timeout(
        move || {
            if GENERATION.with(|g| *g.borrow()) == generation {
                wasm_bindgen_futures::spawn_local(async {
                    let _ = refresh().await;
                });
            }
        },
        after,
    );
}

fn end_session() {
    ACCESS.with(|a| *a.borrow_mut() = None);
    GENERATION.with(|g| *g.borrow_mut() += 1);
}

/// Logs in; the server sets the refresh cookie.
pub async fn login(email: String, password: String) -> ApiResult<SessionResponse> {
    let body = berth_types::LoginRequest { email, password };
    let resp = Request::post(SESSION).json(&body).map_err(ApiError::network)?.send().await.map_err(ApiError::network)?;
    let session: SessionResponse = decode(resp).await?;
    start_session(&session);
    Ok(session)
}

/// After a reload: a session from the refresh cookie, if the browser still has a valid one.
pub async fn resume() -> ApiResult<SessionResponse> {
    let session = renew().await?;
    start_session(&session);
    Ok(session)
}

async fn renew() -> ApiResult<SessionResponse> {
    let resp = Request::post(&format!("{SESSION}/refresh")).send().await.map_err(ApiError::network)?;
    decode(resp).await
}

/// Renews the access token (one renewal at a time); when the server refuses, the session is over.
pub async fn refresh() -> ApiResult<()> {
    let pending = REFRESHING.with(|r| r.borrow().clone());
    let fut = match pending {
        Some(f) => f,
        None => {
            let f: LocalBoxFuture<'static, ApiResult<()>> = Box::pin(async {
                let result = renew().await;
                REFRESHING.with(|r| *r.borrow_mut() = None);
                match result {
                    Ok(s) => {
                        start_session(&s);
                        Ok(())
                    }
                    Err(e) => {
                        if e.status == 401 || e.status == 403 {
                            end_session();
                            ON_LOST.with(|l| {
                                if let Some(f) = l.borrow().as_ref() {
                                    f(e.clone())
                                }
                            });
                        }
                        Err(e)
                    }
                }
            });
            let shared = f.shared();
            REFRESHING.with(|r| *r.borrow_mut() = Some(shared.clone()));
            shared
        }
    };
    fut.await
}

/// Logs out this browser, or every session of the user (`everywhere`).
pub async fn logout(everywhere: bool) -> ApiResult<()> {
    let url = format!("{SESSION}?everywhere={everywhere}");
    let resp = Request::delete(&url).send().await.map_err(ApiError::network);
    end_session();
    let resp = resp?;
    if resp.ok() || resp.status() == 401 { Ok(()) } else { Err(error_of(resp).await) }
}

fn builder(method: Method, path: &str) -> RequestBuilder {
    let url = format!("{BASE}{path}");
    let b = RequestBuilder::new(&url).method(method);
    match access_token() {
        Some(t) => b.header("authorization", &format!("Bearer {t}")),
        None => b,
    }
}

/// Sends a request with the access token; on a 401, renews the token once and sends it again.
async fn send(method: Method, path: &str, body: Option<String>) -> ApiResult<Response> {
    let build = |m: Method| -> ApiResult<Request> {
        let b = builder(m, path);
        match &body {
            Some(json) => b.header("content-type", "application/json").body(json.clone()).map_err(ApiError::network),
            None => b.build().map_err(ApiError::network),
        }
    };
    let resp = build(method.clone())?.send().await.map_err(ApiError::network)?;
    if resp.status() == 401 && access_token().is_some() {
        refresh().await?;
        return build(method)?.send().await.map_err(ApiError::network);
    }
    Ok(resp)
}

async fn error_of(resp: Response) -> ApiError {
    let status = resp.status();
    match resp.json::<Problem>().await {
        Ok(p) => ApiError::from_problem(status, p),
        Err(_) => ApiError { status, kind: "http".into(), detail: format!("Berth answered {status}"), errors: vec![] },
    }
}

async fn decode<T: DeserializeOwned>(resp: Response) -> ApiResult<T> {
    if !resp.ok() {
        return Err(error_of(resp).await);
    }
    resp.json::<T>().await.map_err(|e| ApiError { status: 0, kind: "decode".into(), detail: e.to_string(), errors: vec![] })
}

async fn expect_empty(resp: Response) -> ApiResult<()> {
    if resp.ok() { Ok(()) } else { Err(error_of(resp).await) }
}

fn json(body: &impl Serialize) -> Option<String> {
    Some(serde_json::to_string(body).expect("request bodies serialise"))
}

pub async fn get<T: DeserializeOwned>(path: &str) -> ApiResult<T> {
    decode(send(Method::GET, path, None).await?).await
}

pub async fn post<T: DeserializeOwned>(path: &str, body: &impl Serialize) -> ApiResult<T> {
    decode(send(Method::POST, path, json(body)).await?).await
}

pub async fn post_empty<T: DeserializeOwned>(path: &str) -> ApiResult<T> {
    decode(send(Method::POST, path, None).await?).await
}

pub async fn patch<T: DeserializeOwned>(path: &str, body: &impl Serialize) -> ApiResult<T> {
    decode(send(Method::PATCH, path, json(body)).await?).await
}

pub async fn put<T: DeserializeOwned>(path: &str, body: &impl Serialize) -> ApiResult<T> {
    decode(send(Method::PUT, path, json(body)).await?).await
}

pub async fn delete(path: &str) -> ApiResult<()> {
    expect_empty(send(Method::DELETE, path, None).await?).await
}

/// `DELETE` that answers with a body (jobs answer `202 Accepted`).
pub async fn delete_accepted<T: DeserializeOwned>(path: &str) -> ApiResult<T> {
    decode(send(Method::DELETE, path, None).await?).await
}

/// Opens a streaming `GET` (for Server-Sent Events), with the access token; `signal` cancels it.
pub async fn open_stream(path: &str, signal: &web_sys::AbortSignal) -> ApiResult<Response> {
    let open = || builder(Method::GET, path).header("accept", "text/event-stream").abort_signal(Some(signal)).send();
    let resp = open().await.map_err(ApiError::network)?;
    let resp = if resp.status() == 401 && access_token().is_some() {
        refresh().await?;
        open().await.map_err(ApiError::network)?
    } else {
        resp
    };
    if resp.ok() { Ok(resp) } else { Err(error_of(resp).await) }
}
