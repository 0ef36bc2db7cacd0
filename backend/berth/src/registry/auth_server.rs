//! The two small servers beside the registry:
//! - the **token service**, `GET /token`, on the registry's IP over TLS (platform CA): the realm every
//!   engine and Docker CLI is sent to, so it must be reachable wherever the registry is;
//! - the **notification sink**, `POST /notifications`, on a loopback port only the registry process
//!   is told about, authenticated with a per-start shared secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use berth_types::Role;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::credentials;
use super::token::{self, Access, Scope};
use crate::api::auth::{Refused, check_password};
use crate::auth::Principal;
use crate::auth::throttle::{self, Attempt, ClientAddr};
use crate::crypto::API_TOKEN_PREFIX;
use crate::error::ApiError;
use crate::pki::Pem;
use crate::state::AppState;

pub struct Servers {
    /// Where the notification sink listens (loopback, port chosen by the kernel).
    pub notify_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Servers {
    pub async fn start(state: AppState, token_addr: SocketAddr, tls: &Pem) -> anyhow::Result<Servers> {
        let (stop, stopping) = watch::channel(false);
        let acceptor = tls_acceptor(tls)?;
        let token_listener =
            TcpListener::bind(token_addr).await.with_context(|| format!("listening for registry tokens on {token_addr}"))?;
        let notify_listener = TcpListener::bind("127.0.0.1:0").await?;
        let notify_addr = notify_listener.local_addr()?;

        let token_app = Router::new()
            .route("/token", get(issue_token))
            .with_state(state.clone())
            .layer(axum::middleware::from_fn(crate::api::run_to_completion));
        let notify_app = Router::new()
            .route("/notifications", post(super::api::notifications))
            .with_state(state)
            .layer(axum::middleware::from_fn(crate::api::run_to_completion));

        let mut on_stop = stopping.clone();
        let notify = tokio::spawn(async move {
            let served = axum::serve(notify_listener, notify_app)
                .with_graceful_shutdown(async move {
                    let _ = on_stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the registry notification sink stopped");
            }
        });
        let token = tokio::spawn(serve_tls(token_listener, acceptor, token_app, stopping));
        Ok(Servers { notify_addr, stop, tasks: vec![notify, token] })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

fn tls_acceptor(tls: &Pem) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls.cert.as_bytes()).collect::<Result<_, _>>().context("reading the TLS certificate")?;
    let key = PrivateKeyDer::from_pem_slice(tls.key.as_bytes()).context("reading the TLS key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` over TLS until `stopping` turns true. Each request carries the peer's address, as
/// `axum::serve` with connect info would, so throttling sees the real client.
async fn serve_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: Router, mut stopping: watch::Receiver<bool>) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a registry token connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = crate::supervise::stopped(&mut stopping) => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An error as the Docker registry protocol spells it (`{"errors": [{"code", "message"}]}`), which the
/// Docker CLI prints to the user.
fn registry_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut resp = (status, axum::Json(json!({"errors": [{"code": code, "message": message, "detail": null}]}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Berth registry\""));
    }
    resp
}

fn from_api_error(e: ApiError) -> Response {
    let code = match e.status {
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::TOO_MANY_REQUESTS => "TOOMANYREQUESTS",
        StatusCode::FORBIDDEN => "DENIED",
        _ => "UNKNOWN",
    };
    if e.status.is_server_error() {
        // Logged with its cause; the client gets no internals.
        return e.into_response();
    }
    let mut resp = registry_error(e.status, code, &e.detail);
    if let Some(secs) = e.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// `GET /token?service=berth-registry&scope=repository:<slug>/<repo>:pull,push[&scope=…]`, with Basic
/// credentials: an e-mail and password, or any user name and an API token.
async fn issue_token(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params: Vec<(String, String)> = match serde_urlencoded::from_str(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(_) => return registry_error(StatusCode::BAD_REQUEST, "UNSUPPORTED", "malformed query string"),
    };
    if let Some((_, service)) = params.iter().find(|(k, _)| k == "service")
        && service != token::SERVICE
    {
        return registry_error(StatusCode::BAD_REQUEST, "UNSUPPORTED", &format!("unknown service `{service}`"));
    }
    let mut scopes = Vec::new();
    for (_, value) in params.iter().filter(|(k, _)| k == "scope") {
        // Several scopes may also come space-separated in one parameter.
        for s in value.split(' ').filter(|s| !s.is_empty()) {
            match Scope::parse(s) {
                Ok(scope) => scopes.push(scope),
                Err(message) => return registry_error(StatusCode::BAD_REQUEST, "UNSUPPORTED", &message),
            }
        }
    }
    let Some((user, password)) = basic_credentials(&headers) else {
        return registry_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "log in first: `docker login` with your Berth e-mail and password, or any user name and an API token",
        );
    };
    let caller = match authenticate(&state, &user, password, addr).await {
        Ok(c) => c,
        Err(e) => return from_api_error(e),
    };
    match grants(&state, &caller, &scopes).await {
        Ok(access) => {
            let subject = caller.label.clone();
            match state.registry().map(|r| r.signer.mint(&subject, access, token::TOKEN_TTL)) {
                Some(Ok(jwt)) => axum::Json(json!({
                    "token": jwt,
                    "access_token": jwt,
                    "expires_in": token::TOKEN_TTL.as_secs(),
                    "issued_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }))
                .into_response(),
                Some(Err(e)) => ApiError::internal(e).into_response(),
                None => registry_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the built-in registry is not running"),
            }
        }
        Err(e) => from_api_error(e),
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Who is asking for a token: a tenant (none for platform admins), a role in it, and a name for the
/// token's subject.
struct Caller {
    tenant: Option<uuid::Uuid>,
    role: Role,
    label: String,
}

impl From<Principal> for Caller {
    fn from(p: Principal) -> Self {
        Caller { tenant: p.tenant_id, role: p.role, label: p.label }
    }
}

/// The caller behind Basic credentials: a cluster's robot (`robot-<cluster id>`, pull only); any user
/// name with an API token (as with other registries' robot tokens); otherwise an e-mail and password,
/// throttled like the login page.
async fn authenticate(state: &AppState, user: &str, password: String, addr: std::net::IpAddr) -> Result<Caller, ApiError> {
    if user.starts_with(credentials::ROBOT_PREFIX) {
        let attempt = Attempt::ApiToken { addr };
        throttle::attempt(&state.system, &state.security.throttle, &attempt).await?;
        let robot = credentials::check_robot(&state.system, user, &password)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid robot credential (rotated, or its cluster deleted)"))?;
        throttle::succeeded(&state.system, &attempt, &state.security.throttle).await?;
        if robot.suspended {
            return Err(ApiError::forbidden("this tenant is suspended; contact the platform administrator"));
        }
        return Ok(Caller { tenant: Some(robot.tenant), role: Role::Viewer, label: user.to_owned() });
    }
    if password.starts_with(API_TOKEN_PREFIX) {
        let attempt = Attempt::ApiToken { addr };
        throttle::attempt(&state.system, &state.security.throttle, &attempt).await?;
        let principal = crate::auth::principal::from_api_token(state, &password).await?;
        throttle::succeeded(&state.system, &attempt, &state.security.throttle).await?;
        return Ok(principal.into());
    }
    if let Some(caller) = recently_verified(state, user, &password).await? {
        return Ok(caller);
    }
    // One check per account at a time; whoever waited finds the login remembered.
    let registry = state.registry();
    let _guard = match &registry {
        Some(reg) => Some(reg.logins.one_at_a_time(user).await),
        None => None,
    };
    if let Some(caller) = recently_verified(state, user, &password).await? {
        return Ok(caller);
    }
    let (principal, id) = check_password(state, user, password.clone(), addr).await.map_err(|Refused { error, .. }| error)?;
    if let Some(reg) = &registry {
        let hash: Option<String> =
            sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1").bind(id).fetch_optional(&state.system).await?;
        if let Some(hash) = hash {
            reg.logins.remember(user, &password, id, hash);
        }
    }
    Ok(principal.into())
}

/// A login the token service verified recently, if the user's current row still has the password hash
/// it was verified against; the current row gives the role and the tenant's state.
async fn recently_verified(state: &AppState, email: &str, password: &str) -> Result<Option<Caller>, ApiError> {
    let Some(reg) = state.registry() else { return Ok(None) };
    let Some((user, verified_hash)) = reg.logins.lookup(email, password) else { return Ok(None) };
    #[derive(sqlx::FromRow)]
    struct Row {
        email: String,
        #[sqlx(try_from = "String")]
        role: Role,
        tenant_id: Option<uuid::Uuid>,
        tenant_status: Option<String>,
        password_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT u.email, u.role, u.tenant_id, t.status AS tenant_status, u.password_hash
           FROM users u LEFT JOIN tenants t ON t.id = u.tenant_id WHERE u.id = $1",
    )
    .bind(user)
    .fetch_optional(&state.system)
    .await?;
    let Some(row) = row.filter(|r| r.password_hash == verified_hash) else { return Ok(None) };
    if row.tenant_status.as_deref() == Some(berth_types::TenantStatus::Suspended.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant-suspended",
            "this tenant is suspended; contact the platform administrator",
        ));
    }
    Ok(Some(Caller { tenant: row.tenant_id, role: row.role, label: row.email }))
}

/// What the caller gets for the scopes it asked for. A request for push access by a tenant whose
/// stored images already fill its quota is refused outright, with a message the Docker CLI shows.
async fn grants(state: &AppState, caller: &Caller, scopes: &[Scope]) -> Result<Vec<Access>, ApiError> {
    let Some(tenant) = caller.tenant else { return Ok(Vec::new()) };
    let slug = super::store::slug_of(&state.system, tenant).await?;
    let access: Vec<Access> = scopes.iter().filter_map(|s| token::grant(slug.as_deref(), caller.role, s)).collect();
    if access.iter().any(|a| a.actions.iter().any(|x| x == "push")) {
        let mut conn = state.system.acquire().await?;
        if let Some((used, limit)) = super::store::storage_over_quota(&mut conn, tenant, 0).await? {
            return Err(ApiError::quota_exceeded(
                "max_image_storage_mb",
                format!(
                    "image storage quota reached: {} of {} MiB used; delete images or ask a platform admin for more",
                    used / (1024 * 1024),
                    limit
                ),
            ));
        }
    }
    Ok(access)
}

/// The registry's notification envelope (only the fields Berth reads).
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub events: Vec<Notification>,
}

#[derive(Debug, Deserialize)]
pub struct Notification {
    pub action: String,
    pub target: Target,
}

#[derive(Debug, Deserialize)]
pub struct Target {
    #[serde(rename = "mediaType")]
    pub media_type: Option<String>,
    pub digest: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
}
