//! The audit log: every mutation (any method but GET/HEAD/OPTIONS), successful or not, is recorded by a
//! middleware after the handler ran. Handlers name what they did through the [`Audit`] extractor; when
//! they fail before that, the entry names the route instead.

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use berth_types::{AuditEntry, Page, Role};
use uuid::Uuid;

use crate::api::extract::ApiQuery;
use crate::api::pagination::{PageParams, page};
use crate::auth::{Actor, Principal};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Default)]
struct AuditInfo {
    principal: Option<Principal>,
    action: Option<String>,
    target_type: Option<String>,
    target_id: Option<String>,
    /// Set when the action concerns a tenant other than the caller's (a platform admin acting on one).
    tenant_id: Option<Uuid>,
    /// For actions taken before anyone is authenticated (login): who it was about.
    actor_label: Option<String>,
}

/// Shared between the middleware and the request's extractors.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<AuditInfo>>);

impl AuditSlot {
    pub fn set_principal(&self, p: &Principal) {
        self.0.lock().expect("audit slot").principal = Some(p.clone());
    }
}

/// Lets a handler say what it did, for the audit entry.
pub struct Audit(AuditSlot);

impl Audit {
    /// Names the action (`cluster.create`) and its target.
    pub fn record(&self, action: &str, target_type: &str, target_id: impl ToString) {
        let mut info = self.0.0.lock().expect("audit slot");
        info.action = Some(action.to_owned());
        info.target_type = Some(target_type.to_owned());
        info.target_id = Some(target_id.to_string());
    }

    /// The tenant the action concerns, when it is not the caller's own.
    pub fn tenant(&self, tenant_id: Uuid) {
        self.0.0.lock().expect("audit slot").tenant_id = Some(tenant_id);
    }

    /// Who an unauthenticated action (a login) was about.
    pub fn actor_label(&self, label: &str) {
        self.0.0.lock().expect("audit slot").actor_label = Some(label.to_owned());
    }

    pub fn principal(&self, p: &Principal) {
        self.0.set_principal(p);
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Audit(parts.extensions.get::<AuditSlot>().cloned().unwrap_or_default()))
    }
}

/// Records one entry per mutating request, after the response is known, and one per read whose handler
/// asked for it (reading secrets, such as cluster credentials).
pub async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| req.uri().path().to_owned());
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();

    let resp = next.run(req).await;

    let status = resp.status();
    let info = std::mem::take(&mut *slot.0.lock().expect("audit slot"));
    if read && info.action.is_none() {
        return resp;
    }
    let (actor_type, actor_id, label, caller_tenant) = match &info.principal {
        Some(p) => match p.actor {
            Actor::User { user_id } => ("user", Some(user_id), p.label.clone(), p.tenant_id),
            Actor::Token { token_id, .. } => ("token", Some(token_id), p.label.clone(), p.tenant_id),
        },
        None => ("anonymous", None, info.actor_label.clone().unwrap_or_default(), None),
    };
    let outcome = if status.is_success() || status.is_redirection() {
        "success"
    } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS) {
        "denied"
    } else {
        "failure"
    };
    let action = info.action.unwrap_or_else(|| format!("{method} {route}"));
    let result = sqlx::query(
        "INSERT INTO audit_log (tenant_id, actor_type, actor_id, actor_label, action, target_type, target_id,
                                outcome, status_code, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(info.tenant_id.or(caller_tenant))
    .bind(actor_type)
    .bind(actor_id)
    .bind(label)
    .bind(&action)
    .bind(info.target_type.unwrap_or_else(|| "route".to_owned()))
    .bind(info.target_id)
    .bind(outcome)
    .bind(status.as_u16() as i32)
    .bind(request_id)
    .execute(&state.system)
    .await;
    if let Err(e) = result {
        // The action has happened; failing the response now would make the client retry it.
        tracing::error!(error = %e, %action, "could not write audit entry");
    }
    resp
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    tenant_id: Option<Uuid>,
    actor_type: String,
    actor_id: Option<Uuid>,
    actor_label: String,
    action: String,
    target_type: String,
    target_id: Option<String>,
    outcome: String,
    status_code: i32,
    request_id: String,
    at: chrono::DateTime<chrono::Utc>,
}

/// Which entries of the audit log to list, and in which order.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Items per page, 1–500 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (of the same order and filters).
    pub cursor: Option<String>,
    /// Only actions starting with this, e.g. `cluster.` or `auth.login`.
    pub action: Option<String>,
    /// Only entries whose actor's label (e-mail or token name) contains this, ignoring case.
    pub actor: Option<String>,
    /// Only entries about this kind of object (`cluster`, `user`, …).
    pub target_type: Option<String>,
    /// Only `success` or only `failure`.
    pub outcome: Option<String>,
    /// Newest entries first (the default is oldest first).
    #[serde(default)]
    pub newest_first: bool,
}

/// The audit log, oldest entries first unless asked otherwise, optionally filtered. Owners and admins
/// see their tenant's; platform admins see all.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = Page<AuditEntry>), (status = 400, body = berth_types::Problem), (status = 401, body = berth_types::Problem),
              (status = 403, body = berth_types::Problem), (status = 422, body = berth_types::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    me: Principal,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> ApiResult<axum::Json<Page<AuditEntry>>> {
    let scope = if me.role == Role::PlatformAdmin { None } else { Some(me.tenant_with(Role::Admin)?) };
    if let Some(o) = &q.outcome
        && !matches!(o.as_str(), "success" | "failure")
    {
        return Err(ApiError::invalid_field("outcome", "must be `success` or `failure`"));
    }
    let paging = PageParams { limit: q.limit, cursor: q.cursor.clone() };
    let limit = paging.limit()?;
    let (after, order) = if q.newest_first { ("id < $2", "DESC") } else { ("id > $2", "ASC") };
    // LIKE patterns from user text: its own wildcards are matched literally.
    let like = |s: &str| s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    let rows: Vec<AuditRow> = sqlx::query_as(&format!(
        "SELECT id, tenant_id, actor_type, actor_id, actor_label, action, target_type, target_id, outcome,
                status_code, request_id, at
           FROM audit_log
          WHERE ($1::uuid IS NULL OR tenant_id = $1) AND ($2::bigint IS NULL OR {after})
            AND ($4::text IS NULL OR action LIKE $4 || '%')
            AND ($5::text IS NULL OR actor_label ILIKE '%' || $5 || '%')
            AND ($6::text IS NULL OR target_type = $6)
            AND ($7::text IS NULL OR outcome = $7)
          ORDER BY id {order} LIMIT $3"
    ))
    .bind(scope)
    .bind(paging.after::<i64>()?)
    .bind(limit + 1)
    .bind(q.action.as_deref().map(like))
    .bind(q.actor.as_deref().map(like))
    .bind(&q.target_type)
    .bind(&q.outcome)
    .fetch_all(state.pool_for(&me))
    .await?;
    Ok(axum::Json(page(
        rows,
        limit,
        |r| r.id,
        |r| AuditEntry {
            id: r.id,
            tenant_id: r.tenant_id,
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            actor_label: r.actor_label,
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            outcome: r.outcome,
            status_code: r.status_code,
            request_id: r.request_id,
            at: r.at,
        },
    )))
}
