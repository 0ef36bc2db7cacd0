//! Registries a tenant pulls from: the built-in one (listed first, id nil, not removable) and the
//! external ones it adds.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{CreateRegistry, Page, Problem, Registry, Role};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::clusters::name_taken;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::domain::validate;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct RegistryRow {
    id: Uuid,
    name: String,
    address: String,
    username: Option<String>,
    has_password: bool,
    created_at: DateTime<Utc>,
}

impl From<RegistryRow> for Registry {
    fn from(r: RegistryRow) -> Self {
        Registry {
            id: r.id,
            name: r.name,
            address: r.address,
            username: r.username,
            has_password: r.has_password,
            builtin: false,
            created_at: r.created_at,
        }
    }
}

const REGISTRY_COLUMNS: &str = "id, name, address, username, password_encrypted IS NOT NULL AS has_password, created_at";

/// `host[:port]`, as Docker accepts a registry address.
fn check_address(address: &str) -> ApiResult<()> {
    let (host, port) = match address.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (address, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field("address", "must be `host` or `host:port`, without a scheme"))
    }
}

/// Adds a registry. Its password is encrypted at rest (AES-256-GCM) and never returned.
#[utoipa::path(post, path = "/api/v1/registries", tag = "registries", request_body = CreateRegistry,
    responses((status = 201, body = Registry), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateRegistry>,
) -> ApiResult<(StatusCode, Json<Registry>)> {
    let tenant = me.tenant_with(Role::Admin)?;
    validate::dns_name("name", &req.name)?;
    check_address(&req.address)?;
    if req.password.is_some() && req.username.is_none() {
        return Err(ApiError::invalid_field("username", "a password needs a username"));
    }
    let sealed = req.password.as_deref().map(|p| state.keys.seal(p.as_bytes()));
    let row: RegistryRow = sqlx::query_as(&format!(
        "INSERT INTO registries (id, tenant_id, name, address, username, password_encrypted) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {REGISTRY_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(&req.name)
    .bind(&req.address)
    .bind(&req.username)
    .bind(sealed)
    .fetch_one(&mut *db)
    .await
    .map_err(|e| name_taken(e, "registry"))?;
    audit.record("registry.create", "registry", row.id);
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[utoipa::path(get, path = "/api/v1/registries", tag = "registries", params(PageParams),
    responses((status = 200, body = Page<Registry>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Registry>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    // The built-in registry has the nil id, so it sorts first and keyset pages stay consistent.
    let builtin = if q.after::<Uuid>()?.is_none() { builtin(&state) } else { None };
    let limit = limit - i64::from(builtin.is_some());
    if limit == 0 {
        let next_cursor =
            Some(base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, Uuid::nil().to_string()));
        return Ok(Json(Page { items: builtin.into_iter().collect(), next_cursor }));
    }
    let rows: Vec<RegistryRow> = sqlx::query_as(&format!(
        "SELECT {REGISTRY_COLUMNS} FROM registries WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    let mut listed = page(rows, limit, |r| r.id, Into::into);
    if let Some(b) = builtin {
        listed.items.insert(0, b);
    }
    Ok(Json(listed))
}

/// The built-in registry as a registry entry, when this server runs it.
fn builtin(state: &AppState) -> Option<Registry> {
    let reg = state.registry()?;
    Some(Registry {
        id: Uuid::nil(),
        name: "builtin".to_owned(),
        address: reg.address.clone(),
        username: None,
        has_password: false,
        builtin: true,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
    })
}

#[utoipa::path(get, path = "/api/v1/registries/{id}", tag = "registries", params(("id" = Uuid, Path)),
    responses((status = 200, body = Registry), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Registry>> {
    let tenant = me.tenant()?;
    if id.is_nil()
        && let Some(b) = builtin(&state)
    {
        return Ok(Json(b));
    }
    let row: Option<RegistryRow> =
        sqlx::query_as(&format!("SELECT {REGISTRY_COLUMNS} FROM registries WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *db)
            .await?;
    row.map(|r| Json(r.into())).ok_or_else(|| ApiError::not_found("registry"))
}

/// Removes a registry and the images recorded under it.
#[utoipa::path(delete, path = "/api/v1/registries/{id}", tag = "registries", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete(mut db: TenantDb, me: Principal, audit: Audit, ApiPath(id): ApiPath<Uuid>) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Admin)?;
    audit.record("registry.delete", "registry", id);
    if id.is_nil() {
        return Err(ApiError::conflict("builtin-registry", "the built-in registry cannot be removed"));
    }
    let done =
        sqlx::query("DELETE FROM registries WHERE tenant_id = $1 AND id = $2").bind(tenant).bind(id).execute(&mut *db).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("registry"));
    }
    Ok(StatusCode::NO_CONTENT)
}
