//! `/api/v1/images`: the tenant's repositories in the built-in registry, deleting tags and
//! repositories, and importing `docker save` tarballs; and the registry's notification sink.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use berth_types::{ImageRepository, ImportResult, Page, Role};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

use super::Registry;
use super::auth_server::Envelope;
use super::client::{MANIFEST_LIST_V2, MANIFEST_V2, OCI_INDEX, OCI_MANIFEST};
use super::store;
use crate::api::audit::Audit;
use crate::api::extract::{ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn registry(state: &AppState) -> ApiResult<Arc<Registry>> {
    state.registry().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "registry-unavailable", "the built-in registry is not running on this server")
    })
}

/// The tenant's repositories in the built-in registry, by name, each with its tags (newest first),
/// digests, sizes and push times. This is the tenant's catalog: the registry's own `/v2/_catalog`
/// spans every tenant and is not granted to anyone.
#[utoipa::path(get, path = "/api/v1/images", tag = "images", params(PageParams),
    responses((status = 200, body = Page<ImageRepository>)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<ImageRepository>>> {
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
#[utoipa::path(delete, path = "/api/v1/images/{repository}", tag = "images", params(RepositoryPath),
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
    let digests = store::digests(&mut db, tenant, &p.repository, None).await?;
    if digests.is_empty() {
        return Err(ApiError::not_found("repository"));
    }
    let reg = registry(&state)?;
    let slug = store::slug_of(&state.system, tenant).await?.unwrap_or_default();
    let full = format!("{slug}/{}", p.repository);
    for digest in digests {
        reg.client.delete_manifest(&full, &digest).await?;
        store::forget_digest(&state.system, tenant, &p.repository, &digest).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes one tag. The registry (distribution 2.8) deletes manifests, not tags, and a manifest's
/// deletion takes every tag pointing at it; so when other tags share the image, Berth deletes the
/// manifest and puts it back under those other tags.
#[utoipa::path(delete, path = "/api/v1/images/{repository}/tags/{tag}", tag = "images", params(TagPath),
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
    let digest = store::digests(&mut db, tenant, &p.repository, Some(&p.tag)).await?.pop().ok_or_else(|| ApiError::not_found("tag"))?;
    let reg = registry(&state)?;
    let siblings: Vec<String> = sqlx::query_scalar(
        "SELECT tag FROM image_tags WHERE tenant_id = $1 AND repository = $2 AND digest = $3 AND tag <> $4",
    )
    .bind(tenant)
    .bind(&p.repository)
    .bind(&digest)
    .bind(&p.tag)
    .fetch_all(&mut *db)
    .await?;
    let slug = store::slug_of(&state.system, tenant).await?.unwrap_or_default();
    let full = format!("{slug}/{}", p.repository);
    let manifest = if siblings.is_empty() { None } else { reg.client.get_manifest(&full, &digest).await? };
    reg.client.delete_manifest(&full, &digest).await?;
    store::forget_digest(&state.system, tenant, &p.repository, &digest).await?;
    if let Some((bytes, media_type)) = manifest {
        let size = manifest_size(&bytes);
        for tag in siblings {
            reg.client.put_manifest(&full, &tag, &media_type, bytes.clone()).await?;
            store::record_tag(&state.system, tenant, &p.repository, &tag, &digest, size).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// An image's size from manifest bytes already at hand: config plus layers (an index lists no layers
/// of its own; the notification that follows the re-put records its full size).
fn manifest_size(bytes: &[u8]) -> i64 {
    serde_json::from_slice::<super::client::ManifestDoc>(bytes)
        .map(|d| d.config.map_or(0, |c| c.size) + d.layers.iter().map(|l| l.size).sum::<i64>())
        .unwrap_or(0)
}

/// Imports a `docker save` tarball (`Content-Type: application/x-tar`) into the caller's namespace:
/// every image in it, under every name it was saved with (a name's registry host and the caller's own
/// namespace are dropped: `web:1` and `<address>/<slug>/web:1` both become `<address>/<slug>/web:1`).
/// Checked whole before anything is tagged; a corrupt or truncated archive changes nothing.
#[utoipa::path(post, path = "/api/v1/images/import", tag = "images",
    request_body(content = Vec<u8>, content_type = "application/x-tar", description = "A `docker save` tarball"),
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
    let is_manifest = t.media_type.as_deref().is_some_and(|m| [MANIFEST_V2, MANIFEST_LIST_V2, OCI_MANIFEST, OCI_INDEX].contains(&m));
    let Some((slug, repository)) = t.repository.split_once('/') else { return Ok(()) };
    let Some(tenant) = store::tenant_by_slug(&state.system, slug).await? else { return Ok(()) };
    match event.action.as_str() {
        "push" if is_manifest => {
            let (Some(tag), Some(digest)) = (&t.tag, &t.digest) else { return Ok(()) };
            let size = reg.client.image_size(&t.repository, digest).await?;
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
