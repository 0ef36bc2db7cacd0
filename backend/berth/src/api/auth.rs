//! Login, refresh, logout and `me`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{LoginRequest, Me, Problem, RefreshRequest, Role, TenantStatus, TokenResponse};
use chrono::Utc;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::extract::ApiJson;
use crate::api::tenants::load_tenant;
use crate::auth::throttle::{self, Attempt, ClientAddr};
use crate::auth::{Actor, Principal, jwt, password};
use crate::crypto::{random_token, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Refresh tokens start with this, which keeps them apart from API tokens (`berth_`) at a glance.
const REFRESH_PREFIX: &str = "brt_";

#[derive(sqlx::FromRow)]
struct LoginRow {
    id: Uuid,
    password_hash: String,
    #[sqlx(try_from = "String")]
    role: Role,
    tenant_id: Option<Uuid>,
    tenant_status: Option<String>,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid-credentials", "wrong e-mail or password")
}

/// Exchanges an e-mail and password for an access token and a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem),
              (status = 429, body = Problem, description = "Too many failed logins for this account from this address (or from everywhere); see `Retry-After`.")))]
pub async fn login(
    State(state): State<AppState>,
    audit: Audit,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    Ok(Json(sign_in(&state, &audit, addr, req).await?.0))
}

/// Checks the credentials and starts a login session (a new refresh-token family): the login
/// endpoint's work, shared with the console's session endpoint.
pub async fn sign_in(
    state: &AppState,
    audit: &Audit,
    addr: std::net::IpAddr,
    req: LoginRequest,
) -> ApiResult<(TokenResponse, Principal)> {
    audit.actor_label(&req.email);
    audit.record("auth.login", "user", "");
    let checked = check_password(state, &req.email, req.password, addr).await;
    let (principal, user_id) = match checked {
        Ok(ok) => ok,
        Err(Refused { user, principal, error }) => {
            if let Some(user) = user {
                audit.record("auth.login", "user", user);
            }
            if let Some(p) = &principal {
                audit.principal(p);
            }
            return Err(error);
        }
    };
    audit.record("auth.login", "user", user_id);
    audit.principal(&principal);
    let mut tx = state.system.begin().await?;
    let tokens = issue_tokens(state, &mut tx, user_id, principal.tenant_id, principal.role, Uuid::now_v7()).await?;
    tx.commit().await?;
    Ok((tokens, principal))
}

/// Why a password check failed, and whose account it was (for the audit log) when that is known.
pub struct Refused {
    pub user: Option<Uuid>,
    /// Set when the credentials were right but the account may not act (suspended tenant).
    pub principal: Option<Principal>,
    pub error: ApiError,
}

/// Checks an e-mail and password, throttled (see `auth::throttle`): the login endpoint's rule, shared by
/// the registry's token endpoint (`docker login`). A suspended tenant's users are refused after the
/// password is known to be right, so they are told why.
pub async fn check_password(
    state: &AppState,
    email: &str,
    password: String,
    addr: std::net::IpAddr,
) -> Result<(Principal, Uuid), Refused> {
    let refused = |error: ApiError| Refused { user: None, principal: None, error };
    let attempt = Attempt::Login { email: email.to_owned(), addr };
    throttle::attempt(&state.system, &state.security.throttle, &attempt).await.map_err(refused)?;
    let row: Option<LoginRow> = sqlx::query_as(
        "SELECT u.id, u.password_hash, u.role, u.tenant_id, t.status AS tenant_status
           FROM users u LEFT JOIN tenants t ON t.id = u.tenant_id
          WHERE lower(u.email) = lower($1)",
    )
    .bind(email)
    .fetch_optional(&state.system)
    .await
    .map_err(|e| refused(e.into()))?;
    let stored = row.as_ref().map(|r| r.password_hash.clone());
    if !password::verify(password, stored).await {
        return Err(Refused { user: row.as_ref().map(|r| r.id), principal: None, error: invalid_credentials() });
    }
    let row = row.ok_or_else(|| refused(invalid_credentials()))?;
    throttle::succeeded(&state.system, &attempt, &state.security.throttle).await.map_err(refused)?;
    let principal =
        Principal { actor: Actor::User { user_id: row.id }, tenant_id: row.tenant_id, role: row.role, label: email.to_owned() };
    if row.tenant_status.as_deref() == Some(TenantStatus::Suspended.as_str()) {
        return Err(Refused {
            user: Some(row.id),
            principal: Some(principal),
            error: ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant-suspended",
                "this tenant is suspended; contact the platform administrator",
            ),
        });
    }
    Ok((principal, row.id))
}

async fn issue_tokens(
    state: &AppState,
    tx: &mut PgConnection,
    user: Uuid,
    tenant: Option<Uuid>,
    role: Role,
    family: Uuid,
) -> ApiResult<TokenResponse> {
    let ttl = state.security.access_token_ttl().as_secs();
    let access_token = jwt::issue(&state.keys.jwt, user, tenant, role, ttl)?;
    let refresh_token = format!("{REFRESH_PREFIX}{}", random_token(32));
    let expires_at = Utc::now() + state.security.refresh_token_ttl();
    sqlx::query("INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(Uuid::now_v7())
        .bind(user)
        .bind(family)
        .bind(token_hash(&refresh_token))
        .bind(expires_at)
        .execute(tx)
        .await?;
    Ok(TokenResponse { access_token, token_type: "Bearer".to_owned(), expires_in: ttl, refresh_token })
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    id: Uuid,
    user_id: Uuid,
    family_id: Uuid,
    used: bool,
    revoked: bool,
    expired: bool,
    #[sqlx(try_from = "String")]
    role: Role,
    tenant_id: Option<Uuid>,
    tenant_status: Option<String>,
}

/// Exchanges a refresh token for a new access token and a new refresh token. Each refresh token works
/// once; presenting one that was already used revokes every token of that login (it was likely stolen).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 429, body = Problem, description = "Too many invalid refresh tokens from this address; see `Retry-After`.")))]
pub async fn refresh(
    State(state): State<AppState>,
    audit: Audit,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    Ok(Json(rotate(&state, &audit, addr, &req.refresh_token).await?.0))
}

/// Exchanges a refresh token for new tokens (the refresh endpoint's work, shared with the console's
/// cookie session): single use, reuse revokes the whole login, throttled per address.
pub async fn rotate(
    state: &AppState,
    audit: &Audit,
    addr: std::net::IpAddr,
    refresh_token: &str,
) -> ApiResult<(TokenResponse, Principal)> {
    audit.record("auth.refresh", "user", "");
    let attempt = Attempt::Refresh { addr };
    throttle::attempt(&state.system, &state.security.throttle, &attempt).await?;
    let mut tx = state.system.begin().await?;
    let row: Option<RefreshRow> = sqlx::query_as(
        "SELECT r.id, r.user_id, r.family_id, r.used_at IS NOT NULL AS used, r.revoked_at IS NOT NULL AS revoked,
                r.expires_at <= now() AS expired, u.role, u.tenant_id, t.status AS tenant_status
           FROM refresh_tokens r
           JOIN users u ON u.id = r.user_id
           LEFT JOIN tenants t ON t.id = u.tenant_id
          WHERE r.token_hash = $1
            FOR UPDATE OF r",
    )
    .bind(token_hash(refresh_token))
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| ApiError::unauthorized("invalid refresh token"))?;
    // A token that exists was not guessed, whatever else is wrong with it.
    throttle::succeeded(&state.system, &attempt, &state.security.throttle).await?;
    audit.record("auth.refresh", "user", row.user_id);
    if row.revoked {
        return Err(ApiError::unauthorized("this refresh token has been revoked; log in again"));
    }
    if row.used {
        revoke_family(&mut tx, row.family_id).await?;
        tx.commit().await?;
        return Err(ApiError::unauthorized("this refresh token was already used; every session of this login is now revoked"));
    }
    if row.expired {
        return Err(ApiError::unauthorized("this refresh token has expired; log in again"));
    }
    if row.tenant_status.as_deref() == Some(TenantStatus::Suspended.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant-suspended",
            "this tenant is suspended; contact the platform administrator",
        ));
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1").bind(row.id).execute(&mut *tx).await?;
    let tokens = issue_tokens(state, &mut tx, row.user_id, row.tenant_id, row.role, row.family_id).await?;
    tx.commit().await?;
    let principal =
        Principal { actor: Actor::User { user_id: row.user_id }, tenant_id: row.tenant_id, role: row.role, label: String::new() };
    Ok((tokens, principal))
}

pub async fn revoke_family(tx: &mut PgConnection, family: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family)
        .execute(tx)
        .await?;
    Ok(())
}

/// Ends a login session: its refresh token (and every token rotated from the same login) stops working.
/// Access tokens already issued expire on their own within their short lifetime.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "Logged out"), (status = 401, body = Problem)))]
pub async fn logout(State(state): State<AppState>, audit: Audit, ApiJson(req): ApiJson<RefreshRequest>) -> ApiResult<StatusCode> {
    let mut tx = state.system.begin().await?;
    let row: Option<(Uuid, Uuid)> = sqlx::query_as("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1")
        .bind(token_hash(&req.refresh_token))
        .fetch_optional(&mut *tx)
        .await?;
    let (family, user) = row.ok_or_else(|| ApiError::unauthorized("invalid refresh token"))?;
    audit.record("auth.logout", "user", user);
    revoke_family(&mut tx, family).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every refresh token of the given users (on suspension, deletion, password change).
pub async fn revoke_sessions_of(tx: &mut PgConnection, users: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = ANY($1) AND revoked_at IS NULL")
        .bind(users)
        .execute(tx)
        .await?;
    Ok(())
}

/// Who the caller is.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = Problem)), security(("bearer" = [])))]
pub async fn me(State(state): State<AppState>, me: Principal) -> ApiResult<Json<Me>> {
    Ok(Json(describe(&state, &me).await?))
}

/// The `me` document of a principal.
pub async fn describe(state: &AppState, me: &Principal) -> ApiResult<Me> {
    let email: String =
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1").bind(me.user_id()).fetch_one(&state.system).await?;
    let tenant = match me.tenant_id {
        Some(id) => Some(load_tenant(&state.system, id).await?),
        None => None,
    };
    let via = match me.actor {
        Actor::User { .. } => "user",
        Actor::Token { .. } => "token",
    };
    Ok(Me { id: me.user_id(), email, role: me.role, tenant, via: via.to_owned() })
}
