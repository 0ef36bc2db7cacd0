//! Registries a tenant pulls from, and the images it knows about.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{CreateImage, CreateRegistry, Image, Page, Problem, Registry, Role};
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
pub async fn list(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<Registry>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let rows: Vec<RegistryRow> = sqlx::query_as(&format!(
        "SELECT {REGISTRY_COLUMNS} FROM registries WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, Into::into)))
}

#[utoipa::path(get, path = "/api/v1/registries/{id}", tag = "registries", params(("id" = Uuid, Path)),
    responses((status = 200, body = Registry), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(mut db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Registry>> {
    let tenant = me.tenant()?;
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
    let done =
        sqlx::query("DELETE FROM registries WHERE tenant_id = $1 AND id = $2").bind(tenant).bind(id).execute(&mut *db).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("registry"));
    }
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------------------------------- images

#[derive(sqlx::FromRow)]
struct ImageRow {
    id: Uuid,
    repository: String,
    tag: String,
    registry_id: Option<Uuid>,
    digest: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<ImageRow> for Image {
    fn from(r: ImageRow) -> Self {
        Image {
            id: r.id,
            repository: r.repository,
            tag: r.tag,
            registry_id: r.registry_id,
            digest: r.digest,
            created_at: r.created_at,
        }
    }
}

const IMAGE_COLUMNS: &str = "id, repository, tag, registry_id, digest, created_at";

/// Docker's reference grammar, simplified: path components of lowercase alphanumerics and separators,
/// optionally led by a registry host[:port].
fn check_image(req: &CreateImage) -> ApiResult<()> {
    // As in Docker, a first component is a registry host only if more follow and it looks like a host
    // (has a dot or a port, or is `localhost`); every other component is lowercase.
    let parts: Vec<&str> = req.repository.split('/').collect();
    let is_host = |p: &str| p.contains('.') || p.contains(':') || p == "localhost";
    let path_ok = |p: &str| {
        !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    };
    let host_ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let repo_ok = req.repository.len() <= 255
        && parts.iter().enumerate().all(|(i, p)| if i == 0 && parts.len() > 1 && is_host(p) { host_ok(p) } else { path_ok(p) });
    if !repo_ok {
        return Err(ApiError::invalid_field(
            "repository",
            "must be a Docker repository name such as `web` or `127.0.0.1:5000/acme/web`",
        ));
    }
    let tag_ok = !req.tag.is_empty()
        && req.tag.len() <= 128
        && req.tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && req.tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !tag_ok {
        return Err(ApiError::invalid_field("tag", "must be 1–128 letters, digits, `.`, `_` or `-`"));
    }
    if let Some(d) = &req.digest {
        let ok = d
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        if !ok {
            return Err(ApiError::invalid_field("digest", "must be `sha256:` followed by 64 lowercase hex digits"));
        }
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/images", tag = "images", request_body = CreateImage,
    responses((status = 201, body = Image), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn create_image(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateImage>,
) -> ApiResult<(StatusCode, Json<Image>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    check_image(&req)?;
    let mut tx = db.begin().await?;
    if let Some(reg) = req.registry_id {
        let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM registries WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(reg)
            .fetch_optional(&mut *tx)
            .await?;
        found.ok_or_else(|| ApiError::invalid_field("registry_id", "no such registry"))?;
    }
    let row: ImageRow = sqlx::query_as(&format!(
        "INSERT INTO images (id, tenant_id, registry_id, repository, tag, digest) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {IMAGE_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(req.registry_id)
    .bind(&req.repository)
    .bind(&req.tag)
    .bind(&req.digest)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| name_taken(e, "image (repository and tag)"))?;
    tx.commit().await?;
    audit.record("image.create", "image", row.id);
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[utoipa::path(get, path = "/api/v1/images", tag = "images", params(PageParams),
    responses((status = 200, body = Page<Image>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list_images(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<Image>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let rows: Vec<ImageRow> = sqlx::query_as(&format!(
        "SELECT {IMAGE_COLUMNS} FROM images WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, Into::into)))
}

#[utoipa::path(get, path = "/api/v1/images/{id}", tag = "images", params(("id" = Uuid, Path)),
    responses((status = 200, body = Image), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_image(mut db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Image>> {
    let tenant = me.tenant()?;
    let row: Option<ImageRow> = sqlx::query_as(&format!("SELECT {IMAGE_COLUMNS} FROM images WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *db)
        .await?;
    row.map(|r| Json(r.into())).ok_or_else(|| ApiError::not_found("image"))
}

#[utoipa::path(delete, path = "/api/v1/images/{id}", tag = "images", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete_image(mut db: TenantDb, me: Principal, audit: Audit, ApiPath(id): ApiPath<Uuid>) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("image.delete", "image", id);
    let done = sqlx::query("DELETE FROM images WHERE tenant_id = $1 AND id = $2").bind(tenant).bind(id).execute(&mut *db).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("image"));
    }
    Ok(StatusCode::NO_CONTENT)
}
