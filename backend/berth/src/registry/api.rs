//! `/api/v1/images`: the tenant's repositories in the built-in registry, deleting tags and
//! repositories, and importing `docker save` tarballs; and the registry's notification sink.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use berth_types::{
    ImageRepository, ImportResult, Page, RegistryCredential, RegistryMaintenance, ResolveImage, ResolvedImage, RetentionPolicy,
    Role,
};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use uuid::Uuid;

use super::Registry;
use super::auth_server::Envelope;
use super::client::{MANIFEST_LIST_V2, MANIFEST_V2, OCI_INDEX, OCI_MANIFEST};
use super::{retention, store};
use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn registry(state: &AppState) -> ApiResult<Arc<Registry>> {
    state.registry().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "registry-unavailable",
            "the built-in registry is not running on this server",
        )
    })
}

/// The tenant's repositories in the built-in registry, by name, each with its tags (newest first),
/// digests, sizes and push times. This is the tenant's catalog: the registry's own `/v2/_catalog`
/// spans every tenant and is not granted to anyone.
#[utoipa::path(get, path = "/api/v1/images", tag = "images", params(PageParams),
    responses((status = 200, body = Page<ImageRepository>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ImageRepository>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let after: Option<String> = q.after()?;
    let slug = store::slug_of(&state.system, tenant).await?.unwrap_or_default();
    let address = state.registry().map(|r| r.address.clone()).unwrap_or_default();
    let prefix = format!("{address}/{slug}/");
    let rows = store::repositories(&mut db, tenant, &prefix, after.as_deref(), limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.name.clone(), |r| r)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RepositoryPath {
    /// The repository inside the tenant's namespace, e.g. `web` (a `/` in it is sent as `%2F`).
    pub repository: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TagPath {
    /// The repository inside the tenant's namespace, e.g. `web` (a `/` in it is sent as `%2F`).
    pub repository: String,
    pub tag: String,
}

/// Deletes a repository: every tag and the images they point at. The disk space returns at the next
/// garbage collection.
#[utoipa::path(delete, path = "/api/v1/images/repositories/{repository}", tag = "images", params(RepositoryPath),
    responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
pub async fn delete_repository(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(p): ApiPath<RepositoryPath>,
) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("image.delete", "image", &p.repository);
    let tags: Vec<String> = sqlx::query_scalar("SELECT tag FROM image_tags WHERE tenant_id = $1 AND repository = $2")
        .bind(tenant)
        .bind(&p.repository)
        .fetch_all(&mut *db)
        .await?;
    if tags.is_empty() {
        return Err(ApiError::not_found("repository"));
    }
    let reg = registry(&state)?;
    let slug = store::slug_of(&state.system, tenant).await?.unwrap_or_default();
    retention::remove_tags(&reg, &state.system, tenant, &slug, &p.repository, &tags).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes one tag; other tags of the same image stay. The disk space returns at the next garbage
/// collection.
#[utoipa::path(delete, path = "/api/v1/images/repositories/{repository}/tags/{tag}", tag = "images", params(TagPath),
    responses((status = 204, description = "Deleted")), security(("bearer" = [])))]
pub async fn delete_tag(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(p): ApiPath<TagPath>,
) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("image.delete", "image", format!("{}:{}", p.repository, p.tag));
    if store::digests(&mut db, tenant, &p.repository, Some(&p.tag)).await?.is_empty() {
        return Err(ApiError::not_found("tag"));
    }
    let reg = registry(&state)?;
    let slug = store::slug_of(&state.system, tenant).await?.unwrap_or_default();
    retention::remove_tags(&reg, &state.system, tenant, &slug, &p.repository, std::slice::from_ref(&p.tag)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A `docker save` tarball, sent as raw bytes.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Tarball(Vec<u8>);

/// Sets a repository's retention policy (it may be set before the first push). The retention pass
/// runs with the registry's maintenance (every 15 minutes) and removes the tags the policy does not
/// keep.
#[utoipa::path(put, path = "/api/v1/images/repositories/{repository}/retention", tag = "images", params(RepositoryPath),
    request_body = RetentionPolicy, responses((status = 200, body = RetentionPolicy)), security(("bearer" = [])))]
pub async fn set_retention(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(p): ApiPath<RepositoryPath>,
    ApiJson(policy): ApiJson<RetentionPolicy>,
) -> ApiResult<Json<RetentionPolicy>> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("image.retention.set", "image", &p.repository);
    if !super::token::valid_repository(&p.repository) {
        return Err(ApiError::invalid_field("repository", "not a repository name"));
    }
    let mut errors = Vec::new();
    for (field, value, most) in [("keep_last", policy.keep_last, 100_000), ("keep_days", policy.keep_days, 36_500)] {
        if value.is_some_and(|v| !(1..=most).contains(&v)) {
            errors.push(berth_types::FieldError::new(field, format!("must be between 1 and {most}")));
        }
    }
    if policy.keep_last.is_none() && policy.keep_days.is_none() {
        errors.push(berth_types::FieldError::new(
            "keep_last",
            "set keep_last, keep_days or both (DELETE the policy to keep everything)",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    sqlx::query(
        "INSERT INTO image_retention (tenant_id, repository, keep_last, keep_days) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, repository) DO UPDATE SET keep_last = $3, keep_days = $4, updated_at = now()",
    )
    .bind(tenant)
    .bind(&p.repository)
    .bind(policy.keep_last)
    .bind(policy.keep_days)
    .execute(&mut *db)
    .await?;
    Ok(Json(policy))
}

/// Removes a repository's retention policy: every tag is kept.
#[utoipa::path(delete, path = "/api/v1/images/repositories/{repository}/retention", tag = "images", params(RepositoryPath),
    responses((status = 204, description = "Removed")), security(("bearer" = [])))]
pub async fn delete_retention(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(p): ApiPath<RepositoryPath>,
) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("image.retention.delete", "image", &p.repository);
    let done = sqlx::query("DELETE FROM image_retention WHERE tenant_id = $1 AND repository = $2")
        .bind(tenant)
        .bind(&p.repository)
        .execute(&mut *db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("retention policy"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Runs the registry's maintenance now: every retention policy, then garbage collection, for which the
/// registry stops for a few seconds (pushes and pulls meanwhile are refused; engines retry).
#[utoipa::path(post, path = "/api/v1/admin/registry/maintenance", tag = "admin",
    responses((status = 200, body = RegistryMaintenance)), security(("bearer" = [])))]
pub async fn maintain(State(state): State<AppState>, me: Principal, audit: Audit) -> ApiResult<Json<RegistryMaintenance>> {
    me.require_platform_admin()?;
    audit.record("registry.maintenance", "registry", "builtin");
    let reg = registry(&state)?;
    Ok(Json(retention::maintain(&reg, &state.system).await?))
}

/// Resolves an image reference to its digest through the registry that holds it (the built-in one, in
/// the caller's namespace, or one of the tenant's registries), so a deploy can pin exactly these bytes.
#[utoipa::path(post, path = "/api/v1/images/resolve", tag = "images", request_body = ResolveImage,
    responses((status = 200, body = ResolvedImage)), security(("bearer" = [])))]
pub async fn resolve(
    State(state): State<AppState>,
    me: Principal,
    ApiJson(req): ApiJson<ResolveImage>,
) -> ApiResult<Json<ResolvedImage>> {
    let tenant = me.tenant()?;
    let image = super::pin::pin(&state, tenant, &req.image).await?;
    let digest = image.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default();
    Ok(Json(ResolvedImage { image, digest }))
}

/// The cluster's pull-only credential for the tenant's namespace of the built-in registry: what Berth
/// hands the cluster's engines when it deploys. Created on first use.
#[utoipa::path(get, path = "/api/v1/clusters/{id}/registry-credential", tag = "clusters", params(("id" = Uuid, Path)),
    responses((status = 200, body = RegistryCredential)), security(("bearer" = [])))]
pub async fn cluster_credential(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<RegistryCredential>> {
    robot_credential(&state, &mut db, &me, &audit, id, false).await
}

/// Replaces the cluster's registry credential; the old one stops working at once.
#[utoipa::path(post, path = "/api/v1/clusters/{id}/registry-credential/rotate", tag = "clusters", params(("id" = Uuid, Path)),
    responses((status = 200, body = RegistryCredential)), security(("bearer" = [])))]
pub async fn rotate_cluster_credential(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<RegistryCredential>> {
    robot_credential(&state, &mut db, &me, &audit, id, true).await
}

/// A cluster's robot credential, as it is or freshly rotated: tenant admins only, for their clusters.
async fn robot_credential(
    state: &AppState,
    db: &mut TenantDb,
    me: &Principal,
    audit: &Audit,
    id: Uuid,
    rotate: bool,
) -> ApiResult<Json<RegistryCredential>> {
    let tenant = me.tenant_with(Role::Admin)?;
    audit.record(if rotate { "cluster.registry_credential.rotate" } else { "cluster.registry_credential" }, "cluster", id);
    let reg = registry(state)?;
    let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM clusters WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **db)
        .await?;
    found.ok_or_else(|| ApiError::not_found("cluster"))?;
    let credential = if rotate {
        super::credentials::rotate(db, &state.keys, tenant, id, &reg.address).await?
    } else {
        super::credentials::robot(db, &state.keys, tenant, id, &reg.address).await?
    };
    Ok(Json(credential))
}

/// Imports a `docker save` tarball (`Content-Type: application/x-tar`) into the caller's namespace:
/// every image in it, under every name it was saved with (a name's registry host and the caller's own
/// namespace are dropped: `web:1` and `<address>/<slug>/web:1` both become `<address>/<slug>/web:1`).
/// Checked whole before anything is tagged; a corrupt or truncated archive changes nothing.
#[utoipa::path(post, path = "/api/v1/images/import", tag = "images",
    request_body(content = Tarball, content_type = "application/x-tar", description = "A `docker save` tarball"),
    responses((status = 201, body = ImportResult),
              (status = 413, body = berth_types::Problem, description = "Larger than `BERTH_IMPORT_MAX_BYTES`."),
              (status = 415, body = berth_types::Problem, description = "Not `application/x-tar`.")),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<ImportResult>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !matches!(essence.as_str(), "application/x-tar" | "application/tar") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the `docker save` tarball as `Content-Type: application/x-tar`",
        ));
    }
    let reg = registry(&state)?;
    audit.record("image.import", "image", "");
    let slug = store::slug_of(&state.system, tenant).await?.ok_or_else(|| ApiError::not_found("tenant"))?;
    let images = super::import::import(&reg, &state.system, tenant, &slug, body).await?;
    Ok((StatusCode::CREATED, Json(ImportResult { images })))
}

/// `POST /notifications` from the registry process: pushed and deleted manifests. Answers 200 for
/// events Berth does not care about (so the registry does not retry them forever) and 503 when it
/// could not record one (so the registry retries).
pub async fn notifications(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(reg) = state.registry() else { return StatusCode::SERVICE_UNAVAILABLE };
    let expected = format!("Bearer {}", reg.notify_secret);
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) else { return StatusCode::BAD_REQUEST };
    for event in envelope.events {
        if let Err(e) = record(&state, &reg, &event).await {
            tracing::warn!(error = %format!("{e:#}"), repository = %event.target.repository, "recording a registry notification failed");
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    StatusCode::OK
}

async fn record(state: &AppState, reg: &Registry, event: &super::auth_server::Notification) -> anyhow::Result<()> {
    let t = &event.target;
    let is_manifest =
        t.media_type.as_deref().is_some_and(|m| [MANIFEST_V2, MANIFEST_LIST_V2, OCI_MANIFEST, OCI_INDEX].contains(&m));
    let Some((slug, repository)) = t.repository.split_once('/') else { return Ok(()) };
    let Some(tenant) = store::tenant_by_slug(&state.system, slug).await? else { return Ok(()) };
    match event.action.as_str() {
        "push" if is_manifest => {
            reg.note_push();
            let (Some(tag), Some(digest)) = (&t.tag, &t.digest) else { return Ok(()) };
            // A manifest Berth cannot size (malformed by its pusher) is still recorded: an event that
            // can never succeed must not hold up the registry's queue of notifications.
            let size = match reg.client.image_size(&t.repository, digest).await {
                Ok(size) => size,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), repository = %t.repository, "cannot size a pushed image");
                    0
                }
            };
            store::record_tag(&state.system, tenant, repository, tag, digest, size).await?;
        }
        "delete" => {
            if let Some(digest) = &t.digest {
                store::forget_digest(&state.system, tenant, repository, digest).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
