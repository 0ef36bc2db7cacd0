//! Registries a tenant pulls from: the built-in one (listed first, id nil, not removable) and the
//! external ones it adds.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{CreateRegistry, Page, Problem, Registry, RepositoryList, Role, TagList};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::domain::validate;
use crate::error::{ApiError, ApiResult};
use crate::registry::external::{ExternalRegistry, StoredRegistry};
use crate::registry::pin::external_problem;
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct RegistryRow {
    id: Uuid,
    name: String,
    address: String,
    username: Option<String>,
    has_password: bool,
    ca_pem: Option<String>,
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
            ca_pem: r.ca_pem,
            created_at: r.created_at,
        }
    }
}

const REGISTRY_COLUMNS: &str = "id, name, address, username, password_encrypted IS NOT NULL AS has_password, ca_pem, created_at";

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

/// Adds a registry, once `GET /v2/` with the credentials given succeeds there. Its password is
/// encrypted at rest (AES-256-GCM) and never returned. Private addresses are accepted only inside the
/// networks the operator allows (`BERTH_EXTERNAL_REGISTRY_ALLOWED_NETWORKS`).
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
    if let Some(pem) = &req.ca_pem
        && reqwest::Certificate::from_pem(pem.as_bytes()).is_err()
    {
        return Err(ApiError::invalid_field("ca_pem", "must be a PEM certificate"));
    }
    let credentials = req.username.clone().map(|u| (u, req.password.clone().unwrap_or_default()));
    let external = ExternalRegistry::connect(&state.external, &req.address, credentials, req.ca_pem.clone())
        .await
        .map_err(external_problem)?;
    external.check().await.map_err(external_problem)?;
    let sealed = req.password.as_deref().map(|p| state.keys.seal(p.as_bytes()));
    let row: RegistryRow = sqlx::query_as(&format!(
        "INSERT INTO registries (id, tenant_id, name, address, username, password_encrypted, ca_pem)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {REGISTRY_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(&req.name)
    .bind(&req.address)
    .bind(&req.username)
    .bind(sealed)
    .bind(&req.ca_pem)
    .fetch_one(&mut *db)
    .await
    .map_err(|e| ApiError::or_name_taken(e, "registry"))?;
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
        ca_pem: Some(reg.ca.cert.clone()),
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

/// Connects to one of the tenant's external registries with its stored credentials.
async fn external(state: &AppState, db: &mut TenantDb, tenant: Uuid, id: Uuid) -> ApiResult<ExternalRegistry> {
    let stored = StoredRegistry::by_id(db, tenant, id).await?.ok_or_else(|| ApiError::not_found("registry"))?;
    stored.connect(&state.keys, &state.external).await.map_err(external_problem)
}

/// The repositories of a registry: for the built-in one (id nil), the tenant's; for an external one,
/// its catalog (which many registries do not open to every account: then 422 `registry-error`).
#[utoipa::path(get, path = "/api/v1/registries/{id}/repositories", tag = "registries", params(("id" = Uuid, Path)),
    responses((status = 200, body = RepositoryList)), security(("bearer" = [])))]
pub async fn repositories(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<RepositoryList>> {
    let tenant = me.tenant()?;
    if id.is_nil() {
        let repositories = sqlx::query_scalar("SELECT DISTINCT repository FROM image_tags WHERE tenant_id = $1 ORDER BY 1")
            .bind(tenant)
            .fetch_all(&mut *db)
            .await?;
        return Ok(Json(RepositoryList { repositories }));
    }
    let ext = external(&state, &mut db, tenant, id).await?;
    Ok(Json(RepositoryList { repositories: ext.catalog().await.map_err(external_problem)? }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RegistryRepositoryPath {
    pub id: Uuid,
    /// The repository as the registry names it (a `/` in it is sent as `%2F`).
    pub repository: String,
}

/// The tags of a repository in a registry (for the built-in one, `repository` is inside the tenant's
/// namespace, e.g. `web`).
#[utoipa::path(get, path = "/api/v1/registries/{id}/repositories/{repository}/tags", tag = "registries",
    params(RegistryRepositoryPath), responses((status = 200, body = TagList)), security(("bearer" = [])))]
pub async fn tags(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiPath(p): ApiPath<RegistryRepositoryPath>,
) -> ApiResult<Json<TagList>> {
    let tenant = me.tenant()?;
    if !crate::registry::token::valid_repository(&p.repository) {
        return Err(ApiError::not_found("repository"));
    }
    if p.id.is_nil() {
        let tags = sqlx::query_scalar(
            "SELECT tag FROM image_tags WHERE tenant_id = $1 AND repository = $2 ORDER BY pushed_at DESC, tag",
        )
        .bind(tenant)
        .bind(&p.repository)
        .fetch_all(&mut *db)
        .await?;
        return Ok(Json(TagList { tags }));
    }
    let ext = external(&state, &mut db, tenant, p.id).await?;
    Ok(Json(TagList { tags: ext.tags(&p.repository).await.map_err(external_problem)? }))
}
