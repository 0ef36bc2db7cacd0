//! `/api/v1/certificates`: the tenant's TLS certificates. Uploading checks the chain and its key
//! before anything is stored; asking for one over ACME queues the job that obtains it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{Certificate, CreateCertificate, Page, Problem, Role};
use serde_json::json;
use uuid::Uuid;

use super::{pem, store};
use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, Target};
use crate::state::AppState;

/// The largest PEM accepted (a chain of a few certificates, or a key).
const MAX_PEM: usize = 64 * 1024;

/// Adds a certificate for a domain the tenant routes. With `certificate_pem` and `private_key_pem`:
/// the chain must name the domain, be valid now, and the key must be its key (stored sealed). Without
/// them: Berth obtains one from its ACME authority (HTTP-01, answered by the routers) and renews it
/// before it expires.
#[utoipa::path(post, path = "/api/v1/certificates", tag = "certificates", request_body = CreateCertificate,
    responses((status = 201, body = Certificate), (status = 202, body = Certificate), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateCertificate>,
) -> ApiResult<(StatusCode, Json<Certificate>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    let domain = req.domain.trim().to_ascii_lowercase();
    let bare = domain.strip_prefix("*.").unwrap_or(&domain);
    crate::routing::declare::check_domain(bare).map_err(|why| ApiError::invalid_field("domain", why))?;
    let uploaded = match (req.certificate_pem, req.private_key_pem) {
        (None, None) => None,
        (Some(chain), Some(key)) => Some((chain, key)),
        (Some(_), None) => return Err(ApiError::invalid_field("private_key_pem", "an uploaded certificate needs its key")),
        (None, Some(_)) => return Err(ApiError::invalid_field("certificate_pem", "a key needs its certificate")),
    };
    if uploaded.is_none() && domain.starts_with("*.") {
        return Err(ApiError::invalid_field(
            "domain",
            "Berth obtains certificates over HTTP-01, which cannot prove a wildcard: upload one",
        ));
    }
    let checked = match &uploaded {
        Some((chain, key)) => {
            if chain.len() > MAX_PEM || key.len() > MAX_PEM {
                return Err(ApiError::invalid_field("certificate_pem", format!("at most {MAX_PEM} bytes each")));
            }
            let leaf = pem::leaf(chain).map_err(|why| ApiError::invalid_field("certificate_pem", why))?;
            if !pem::covers(&leaf.names, &domain) {
                return Err(ApiError::invalid_field(
                    "certificate_pem",
                    format!("the certificate is for {}, not `{domain}`", leaf.names.join(", ")),
                ));
            }
            let now = chrono::Utc::now();
            if leaf.not_after <= now || leaf.not_before > now {
                return Err(ApiError::invalid_field(
                    "certificate_pem",
                    format!("the certificate is valid from {} to {}, not now", leaf.not_before, leaf.not_after),
                ));
            }
            pem::key_matches(key, &leaf.spki).map_err(|why| ApiError::invalid_field("private_key_pem", why))?;
            Some(leaf)
        }
        None => None,
    };
    let mut tx = db.begin().await?;
    store::check_held(&mut tx, tenant, &domain, &state.routing.apps_domain).await?;
    let id = Uuid::now_v7();
    let (source, status) = if uploaded.is_some() { ("uploaded", StatusCode::CREATED) } else { ("acme", StatusCode::ACCEPTED) };
    sqlx::query("INSERT INTO certificates (id, tenant_id, domain, source) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant)
        .bind(&domain)
        .bind(source)
        .execute(&mut *tx)
        .await
        .map_err(|e| store::taken(e, &domain))?;
    let target = Target { tenant_id: Some(tenant), kind: "certificate", id };
    let job = match (uploaded, checked) {
        (Some((chain, key)), Some(leaf)) => {
            sqlx::query(
                "UPDATE certificates SET state = 'issued', certificate_pem = $2, key_sealed = $3, not_before = $4, not_after = $5,
                        serial = $6 WHERE id = $1",
            )
            .bind(id)
            .bind(chain.trim())
            .bind(state.keys.seal(key.trim().as_bytes()))
            .bind(leaf.not_before)
            .bind(leaf.not_after)
            .bind(&leaf.serial)
            .execute(&mut *tx)
            .await?;
            jobs::emit(&mut tx, &target, "certificate.issued", json!({ "domain": domain, "source": source })).await?;
            None
        }
        _ => Some(jobs::enqueue(&mut tx, target, "certificate.issue", json!({})).await?),
    };
    let row = store::load(&mut tx, tenant, id).await?;
    tx.commit().await?;
    audit.record("certificate.create", "certificate", id);
    Ok((status, Json(row.into_dto(job))))
}

/// The tenant's certificates, oldest first (keys are never shown).
#[utoipa::path(get, path = "/api/v1/certificates", tag = "certificates", params(PageParams),
    responses((status = 200, body = Page<Certificate>), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<Certificate>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let rows = store::page(&mut db, tenant, q.after::<Uuid>()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| r.into_dto(None))))
}

#[utoipa::path(get, path = "/api/v1/certificates/{id}", tag = "certificates", params(("id" = Uuid, Path)),
    responses((status = 200, body = Certificate), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(mut db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Certificate>> {
    let tenant = me.tenant()?;
    Ok(Json(store::load(&mut db, tenant, id).await?.into_dto(None)))
}

/// Obtains an ACME certificate again now (its renewal, ahead of time).
#[utoipa::path(post, path = "/api/v1/certificates/{id}/renew", tag = "certificates", params(("id" = Uuid, Path)),
    responses((status = 202, body = Certificate), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn renew(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<Certificate>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("certificate.renew", "certificate", id);
    let mut tx = db.begin().await?;
    let row = store::load(&mut tx, tenant, id).await?;
    if row.source != "acme" {
        return Err(ApiError::conflict("certificate-uploaded", "an uploaded certificate is renewed by uploading a new one"));
    }
    let job = super::acme::queue_issue(&mut tx, tenant, id).await?;
    let row = store::load(&mut tx, tenant, id).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(job))))
}

/// Removes a certificate: routers stop serving it at once (names it covered fall back to the
/// router's default certificate).
#[utoipa::path(delete, path = "/api/v1/certificates/{id}", tag = "certificates", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(mut db: TenantDb, me: Principal, audit: Audit, ApiPath(id): ApiPath<Uuid>) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("certificate.delete", "certificate", id);
    let mut tx = db.begin().await?;
    let row = store::load(&mut tx, tenant, id).await?;
    sqlx::query("DELETE FROM certificates WHERE id = $1").bind(id).execute(&mut *tx).await?;
    let target = Target { tenant_id: Some(tenant), kind: "certificate", id };
    jobs::emit(&mut tx, &target, "certificate.deleted", json!({ "domain": row.domain })).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
