//! The caller of a request: resolved once, from the `Authorization` header, by this extractor.
//!
//! Architecture invariant: tenant scoping happens here and only here. Handlers get the tenant id from
//! [`Principal::tenant`] and pass it to every store function; an id from the URL is never trusted alone.

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use berth_types::{Role, TenantStatus};
use uuid::Uuid;

use crate::api::audit::AuditSlot;
use crate::auth::jwt;
use crate::crypto::{API_TOKEN_PREFIX, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A person logged in with a password (access token = JWT).
    User { user_id: Uuid },
    /// An integrator's API token, created by `user_id`.
    Token { token_id: Uuid, user_id: Uuid },
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    pub tenant_id: Option<Uuid>,
    pub role: Role,
    /// The user's e-mail, or the token's name: how the audit log shows the actor.
    pub label: String,
}

impl Principal {
    /// The caller's tenant. Platform admins are outside every tenant and manage tenants through
    /// `/api/v1/admin`; tenant resources are not theirs to touch.
    pub fn tenant(&self) -> ApiResult<Uuid> {
        self.tenant_id.ok_or_else(|| {
            ApiError::forbidden("platform admins belong to no tenant; tenant resources are managed by the tenant's users")
        })
    }

    /// The caller's tenant, provided its role is at least `min`.
    pub fn tenant_with(&self, min: Role) -> ApiResult<Uuid> {
        let tenant = self.tenant()?;
        self.require(min)?;
        Ok(tenant)
    }

    pub fn require(&self, min: Role) -> ApiResult<()> {
        if self.role.at_least(min) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("this needs the `{min}` role or higher; you have `{}`", self.role)))
        }
    }

    pub fn require_platform_admin(&self) -> ApiResult<()> {
        if self.role == Role::PlatformAdmin { Ok(()) } else { Err(ApiError::forbidden("only platform admins may do this")) }
    }

    pub fn user_id(&self) -> Uuid {
        match self.actor {
            Actor::User { user_id } | Actor::Token { user_id, .. } => user_id,
        }
    }

    /// A stable key for per-caller state such as idempotency keys.
    pub fn key(&self) -> String {
        match self.actor {
            Actor::User { user_id } => format!("user:{user_id}"),
            Actor::Token { token_id, .. } => format!("token:{token_id}"),
        }
    }
}

/// The outcome of authenticating a request, resolved once by [`middleware`] and handed to the
/// [`Principal`] extractor and to the idempotency check.
#[derive(Clone)]
pub struct Authentication(Arc<Mutex<Option<ApiResult<Principal>>>>);

impl Authentication {
    /// The caller, if the request authenticated (without consuming the outcome).
    pub fn principal(&self) -> Option<Principal> {
        match &*self.0.lock().expect("authentication slot") {
            Some(Ok(p)) => Some(p.clone()),
            _ => None,
        }
    }
}

/// Authenticates each request that carries credentials, once, before the idempotency check and the
/// handler, and runs the rest of the request scoped to the caller's tenant: every connection the
/// handler takes from the tenant pool then shows only that tenant's rows (row-level security).
/// Platform admins and anonymous callers run unscoped, so the tenant pool shows them no tenant rows.
pub async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !req.headers().contains_key(header::AUTHORIZATION) {
        return crate::db::scoped(None, next.run(req)).await;
    }
    let outcome = authenticate(&state, req.headers()).await;
    let tenant = outcome.as_ref().ok().and_then(|p| p.tenant_id);
    req.extensions_mut().insert(Authentication(Arc::new(Mutex::new(Some(outcome)))));
    crate::db::scoped(tenant, next.run(req)).await
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let resolved = parts.extensions.get::<Authentication>().and_then(|a| a.0.lock().expect("authentication slot").take());
        let principal = match resolved {
            Some(outcome) => outcome?,
            None => authenticate(state, &parts.headers).await?,
        };
        if let Some(slot) = parts.extensions.get::<AuditSlot>() {
            slot.set_principal(&principal);
        }
        Ok(principal)
    }
}

/// Resolves the bearer credential in `headers` to a principal, through the system pool (it reads users
/// and tokens of every tenant). Called once per request by [`middleware`].
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    let token = bearer(headers)?;
    if token.starts_with(API_TOKEN_PREFIX) { from_api_token(state, token).await } else { from_jwt(state, token).await }
}

fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization header; send `Authorization: Bearer <token>`"))?;
    let value = value.to_str().map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    Ok(value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?
        .trim())
}

#[derive(sqlx::FromRow)]
struct LiveUser {
    email: String,
    #[sqlx(try_from = "String")]
    role: Role,
    tenant_id: Option<Uuid>,
    tenant_status: Option<String>,
}

fn verify_jwt(state: &AppState, token: &str) -> ApiResult<Uuid> {
    let claims = jwt::verify(&state.keys.jwt, token).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::unauthorized("the access token has expired; refresh it"),
        _ => ApiError::unauthorized("invalid access token"),
    })?;
    Ok(claims.sub)
}

fn live_user(user_id: Uuid, user: Option<LiveUser>) -> ApiResult<Principal> {
    let user = user.ok_or_else(|| ApiError::unauthorized("the user of this token no longer exists"))?;
    check_tenant_active(user.tenant_status.as_deref())?;
    Ok(Principal { actor: Actor::User { user_id }, tenant_id: user.tenant_id, role: user.role, label: user.email })
}

async fn from_jwt(state: &AppState, token: &str) -> ApiResult<Principal> {
    let user_id = verify_jwt(state, token)?;
    // The token proves who the caller was when it was issued. The user's current row decides the rest, so
    // a deleted user, a changed role or a suspended tenant takes effect at once, not when the token expires.
    let user: Option<LiveUser> = sqlx::query_as(
        "SELECT u.email, u.role, u.tenant_id, t.status AS tenant_status
           FROM users u LEFT JOIN tenants t ON t.id = u.tenant_id
          WHERE u.id = $1",
    )
    .bind(user_id)
    .fetch_optional(&state.system)
    .await?;
    live_user(user_id, user)
}

#[derive(sqlx::FromRow)]
struct LiveToken {
    id: Uuid,
    name: String,
    created_by: Uuid,
    #[sqlx(try_from = "String")]
    role: Role,
    tenant_id: Option<Uuid>,
    expired: bool,
    revoked: bool,
    tenant_status: Option<String>,
    #[sqlx(try_from = "String")]
    creator_role: Role,
}

/// The caller an API token stands for, checked against the token's and its creator's current rows.
pub async fn from_api_token(state: &AppState, token: &str) -> ApiResult<Principal> {
    let row: Option<LiveToken> = sqlx::query_as(
        "SELECT k.id, k.name, k.created_by, k.role, k.tenant_id,
                coalesce(k.expires_at <= now(), false) AS expired,
                k.revoked_at IS NOT NULL AS revoked,
                t.status AS tenant_status, u.role AS creator_role
           FROM api_tokens k
           JOIN users u ON u.id = k.created_by
           LEFT JOIN tenants t ON t.id = k.tenant_id
          WHERE k.token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(&state.system)
    .await?;
    let row = row.ok_or_else(|| ApiError::unauthorized("invalid API token"))?;
    if row.revoked {
        return Err(ApiError::unauthorized("this API token has been revoked"));
    }
    if row.expired {
        return Err(ApiError::unauthorized("this API token has expired"));
    }
    check_tenant_active(row.tenant_status.as_deref())?;
    // A token never acts above its creator's *current* role: demoting a user demotes their tokens.
    let role = if row.creator_role.at_least(row.role) { row.role } else { row.creator_role };
    // Recording use at most once a minute keeps authentication from being a write on every request.
    sqlx::query(
        "UPDATE api_tokens SET last_used_at = now()
          WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(row.id)
    .execute(&state.system)
    .await?;
    Ok(Principal {
        actor: Actor::Token { token_id: row.id, user_id: row.created_by },
        tenant_id: row.tenant_id,
        role,
        label: format!("token:{}", row.name),
    })
}

fn check_tenant_active(status: Option<&str>) -> ApiResult<()> {
    if status == Some(TenantStatus::Suspended.as_str()) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "tenant-suspended",
            "this tenant is suspended; contact the platform administrator",
        ));
    }
    Ok(())
}
