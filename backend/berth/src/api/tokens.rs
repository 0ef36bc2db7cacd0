//! API tokens for integrators: created by a logged-in user, with a role no higher than theirs, shown once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{ApiToken, CreateApiToken, CreatedApiToken, Page, Problem, Role};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::{Actor, Principal};
use crate::crypto::{API_TOKEN_PREFIX, random_token, token_hash};
use crate::domain::validate;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    name: String,
    #[sqlx(try_from = "String")]
    role: Role,
    created_by: Uuid,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<TokenRow> for ApiToken {
    fn from(r: TokenRow) -> Self {
        ApiToken {
            id: r.id,
            name: r.name,
            role: r.role,
            created_by: r.created_by,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            created_at: r.created_at,
        }
    }
}

const TOKEN_COLUMNS: &str = "id, name, role, created_by, expires_at, last_used_at, created_at";

/// Creates a token. Only people create tokens (a token cannot mint tokens, which would let a leaked
/// token outlive its revocation).
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateApiToken,
    responses((status = 201, body = CreatedApiToken), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateApiToken>,
) -> ApiResult<(StatusCode, Json<CreatedApiToken>)> {
    let Actor::User { user_id } = me.actor else {
        return Err(ApiError::forbidden("API tokens cannot create API tokens; log in as a user"));
    };
    validate::display_name("name", &req.name)?;
    if req.role == Role::PlatformAdmin && me.role != Role::PlatformAdmin
        || me.role == Role::PlatformAdmin && req.role != Role::PlatformAdmin
    {
        return Err(ApiError::invalid_field(
            "role",
            format!("a token of yours can have role `{}` or lower tenant roles of your tenant", me.role),
        ));
    }
    if !me.role.at_least(req.role) {
        return Err(ApiError::forbidden(format!("a token cannot have a role (`{}`) above yours (`{}`)", req.role, me.role)));
    }
    if let Some(at) = req.expires_at
        && at <= Utc::now()
    {
        return Err(ApiError::invalid_field("expires_at", "must be in the future"));
    }
    let secret = format!("{API_TOKEN_PREFIX}{}", random_token(32));
    let row: TokenRow = sqlx::query_as(&format!(
        "INSERT INTO api_tokens (id, tenant_id, created_by, name, role, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(me.tenant_id)
    .bind(user_id)
    .bind(req.name.trim())
    .bind(req.role.as_str())
    .bind(token_hash(&secret))
    .bind(req.expires_at)
    .fetch_one(state.pool_for(&me))
    .await?;
    audit.record("token.create", "api_token", row.id);
    Ok((StatusCode::CREATED, Json(CreatedApiToken { meta: row.into(), token: secret })))
}

/// Lists live (unrevoked) tokens: all of the tenant's for owners and admins, one's own for others.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(PageParams),
    responses((status = 200, body = Page<ApiToken>), (status = 401, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    me: Principal,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ApiToken>>> {
    let limit = q.limit()?;
    let all_of_tenant = me.tenant_id.is_some() && me.role.at_least(Role::Admin);
    let rows: Vec<TokenRow> = sqlx::query_as(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens
          WHERE revoked_at IS NULL
            AND tenant_id IS NOT DISTINCT FROM $1
            AND ($2 OR created_by = $3)
            AND ($4::uuid IS NULL OR id > $4)
          ORDER BY id LIMIT $5"
    ))
    .bind(me.tenant_id)
    .bind(all_of_tenant)
    .bind(me.user_id())
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(state.pool_for(&me))
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, Into::into)))
}

/// Revokes a token: one's own, or (owners and admins) any of the tenant's.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), (status = 401, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    audit.record("token.revoke", "api_token", id);
    let all_of_tenant = me.tenant_id.is_some() && me.role.at_least(Role::Admin);
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now()
          WHERE id = $1 AND revoked_at IS NULL AND tenant_id IS NOT DISTINCT FROM $2 AND ($3 OR created_by = $4)",
    )
    .bind(id)
    .bind(me.tenant_id)
    .bind(all_of_tenant)
    .bind(me.user_id())
    .execute(state.pool_for(&me))
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("API token"));
    }
    Ok(StatusCode::NO_CONTENT)
}
