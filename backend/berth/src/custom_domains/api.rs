//! `/api/v1/domains`: a tenant's custom domains, proved by the tenant itself (a TXT record) — and
//! `/api/v1/admin/tenants/{id}/domains`: a platform admin's grants. Either way the tenant then holds
//! the domain and every name under it, and its routes there are routed.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{CreateDomain, CreateDomainGrant, Domain, DomainGrant, DomainProof, Problem, Role};
use uuid::Uuid;

use super::proof::{self, DnsResolver};
use super::store::{self, CLAIM_COLUMNS, ClaimRow, GRANT_COLUMNS, GrantRow};
use super::verify::{self, Outcome};
use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::routing::declare;
use crate::state::AppState;

/// How many domains a tenant may wait to prove at once.
const MAX_PENDING: i64 = 50;

/// The tenant's custom domains: verified ones (granted or proved) and pending claims, by name.
#[utoipa::path(get, path = "/api/v1/domains", tag = "domains",
    responses((status = 200, body = Vec<Domain>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_domains(mut db: TenantDb, me: Principal) -> ApiResult<Json<Vec<Domain>>> {
    let tenant = me.tenant()?;
    let grants: Vec<GrantRow> = sqlx::query_as(&format!("SELECT {GRANT_COLUMNS} FROM domain_grants WHERE tenant_id = $1"))
        .bind(tenant)
        .fetch_all(&mut *db)
        .await?;
    let claims: Vec<ClaimRow> = sqlx::query_as(&format!("SELECT {CLAIM_COLUMNS} FROM domain_claims WHERE tenant_id = $1"))
        .bind(tenant)
        .fetch_all(&mut *db)
        .await?;
    let mut all: Vec<Domain> = grants.into_iter().map(Domain::from).chain(claims.into_iter().map(Domain::from)).collect();
    all.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(Json(all))
}

/// Claims a custom domain. The answer names the TXT record to publish in the domain's DNS; then
/// `POST /domains/{domain}/verify` looks it up. Claiming again returns the same record. A domain
/// another tenant holds (or one above or under it) is refused.
#[utoipa::path(post, path = "/api/v1/domains", tag = "domains", request_body = CreateDomain,
    responses((status = 201, body = Domain), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn claim_domain(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateDomain>,
) -> ApiResult<(StatusCode, Json<Domain>)> {
    let tenant = me.tenant_with(Role::Admin)?;
    let domain =
        declare::custom_domain(&req.domain, &state.routing.apps_domain).map_err(|why| ApiError::invalid_field("domain", why))?;
    if let Some(held) = store::covering_grant(&mut db, tenant, &domain).await? {
        return Err(ApiError::conflict("domain-verified", format!("`{held}` is already verified for this tenant")));
    }
    // Other tenants' grants are invisible on the tenant's connection.
    store::refuse_if_held_by_other(&mut *state.system.acquire().await?, tenant, &domain).await?;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM domain_claims WHERE tenant_id = $1 AND domain <> $2")
        .bind(tenant)
        .bind(&domain)
        .fetch_one(&mut *db)
        .await?;
    if pending >= MAX_PENDING {
        return Err(ApiError::conflict(
            "too-many-claims",
            format!("{pending} domains wait for their proof; verify or delete some first"),
        ));
    }
    let row: ClaimRow = sqlx::query_as(&format!(
        "INSERT INTO domain_claims (tenant_id, domain, token) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, domain) DO UPDATE SET domain = excluded.domain RETURNING {CLAIM_COLUMNS}"
    ))
    .bind(tenant)
    .bind(&domain)
    .bind(proof::new_token())
    .fetch_one(&mut *db)
    .await?;
    audit.record("domain.claim", "domain", &domain);
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Looks up the claim's TXT record now (Berth also checks recent claims every few minutes by itself).
/// Found: the domain is the tenant's and its routes there are routed (200). Not found: 422 saying what
/// was found, kept on the claim as `last_error`.
#[utoipa::path(post, path = "/api/v1/domains/{domain}/verify", tag = "domains", params(("domain" = String, Path)),
    responses((status = 200, body = Domain), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
              (status = 503, body = Problem)),
    security(("bearer" = [])))]
pub async fn verify_domain(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(domain): ApiPath<String>,
) -> ApiResult<Json<Domain>> {
    let tenant = me.tenant_with(Role::Admin)?;
    let domain = domain.to_ascii_lowercase();
    let claim: Option<ClaimRow> =
        sqlx::query_as(&format!("SELECT {CLAIM_COLUMNS} FROM domain_claims WHERE tenant_id = $1 AND domain = $2"))
            .bind(tenant)
            .bind(&domain)
            .fetch_optional(&mut *db)
            .await?;
    let Some(claim) = claim else {
        let grant: Option<GrantRow> =
            sqlx::query_as(&format!("SELECT {GRANT_COLUMNS} FROM domain_grants WHERE tenant_id = $1 AND domain = $2"))
                .bind(tenant)
                .bind(&domain)
                .fetch_optional(&mut *db)
                .await?;
        return grant.map(|g| Json(g.into())).ok_or_else(|| ApiError::not_found("domain"));
    };
    if state.routing.dns == DnsResolver::Off {
        return Err(ApiError::forbidden(
            "domain proofs by DNS are turned off on this Berth (BERTH_DNS_RESOLVER=off); ask a platform admin to grant the domain",
        ));
    }
    // The lookup holds no connection: the tenant's goes back to the pool first.
    drop(db);
    match verify::check(&state.system, &state.routing.dns, tenant, &domain, &claim.token).await? {
        Outcome::Proved(row) => {
            audit.record("domain.verify", "domain", &domain);
            Ok(Json(row.into()))
        }
        Outcome::Unproved(why) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "domain-unproved", why)),
        Outcome::LookupFailed(why) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "dns-unavailable", why).with_retry_after(60))
        }
    }
}

/// Removes a pending claim, or gives up a domain the tenant proved itself (its routes there stop
/// being routed). A platform admin's grant is taken back by a platform admin only (409).
#[utoipa::path(delete, path = "/api/v1/domains/{domain}", tag = "domains", params(("domain" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete_domain(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(domain): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Admin)?;
    let domain = domain.to_ascii_lowercase();
    let mut tx = db.begin().await?;
    let claim = sqlx::query("DELETE FROM domain_claims WHERE tenant_id = $1 AND domain = $2")
        .bind(tenant)
        .bind(&domain)
        .execute(&mut *tx)
        .await?;
    if claim.rows_affected() == 0 {
        let proved_by: Option<String> =
            sqlx::query_scalar("SELECT proved_by FROM domain_grants WHERE tenant_id = $1 AND domain = $2 FOR UPDATE")
                .bind(tenant)
                .bind(&domain)
                .fetch_optional(&mut *tx)
                .await?;
        match proved_by.as_deref() {
            None => return Err(ApiError::not_found("domain")),
            Some("admin") => {
                return Err(ApiError::conflict(
                    "domain-granted-by-admin",
                    "a platform admin granted this domain; a platform admin takes it back",
                ));
            }
            Some(_) => {}
        }
        sqlx::query("DELETE FROM domain_grants WHERE tenant_id = $1 AND domain = $2")
            .bind(tenant)
            .bind(&domain)
            .execute(&mut *tx)
            .await?;
        crate::routing::store::reverify(&mut tx, tenant).await?;
    }
    tx.commit().await?;
    audit.record("domain.delete", "domain", &domain);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}/domains", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<DomainGrant>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn tenant_domains(
    State(state): State<AppState>,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Vec<DomainGrant>>> {
    me.require_platform_admin()?;
    crate::api::tenants::load_tenant(&state.system, id).await?;
    let rows: Vec<GrantRow> =
        sqlx::query_as(&format!("SELECT {GRANT_COLUMNS} FROM domain_grants WHERE tenant_id = $1 ORDER BY domain"))
            .bind(id)
            .fetch_all(&state.system)
            .await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// Grants a tenant a custom domain and every name under it: its routes there are routed from now on.
/// A domain belongs to one tenant (409 when another has it; a name under another tenant's domain is
/// refused too).
#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/domains", tag = "admin", params(("id" = Uuid, Path)), request_body = CreateDomainGrant,
    responses((status = 201, body = DomainGrant), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn grant_domain(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CreateDomainGrant>,
) -> ApiResult<(StatusCode, Json<DomainGrant>)> {
    me.require_platform_admin()?;
    let domain =
        declare::custom_domain(&req.domain, &state.routing.apps_domain).map_err(|why| ApiError::invalid_field("domain", why))?;
    let mut tx = state.system.begin().await?;
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *tx).await?;
    exists.ok_or_else(|| ApiError::not_found("tenant"))?;
    let row = store::grant(&mut tx, id, &domain, DomainProof::Admin).await?;
    tx.commit().await?;
    audit.record("domain.grant", "tenant", id);
    audit.tenant(id);
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Takes a custom domain back: the tenant's routes under it stop being routed.
#[utoipa::path(delete, path = "/api/v1/admin/tenants/{id}/domains/{domain}", tag = "admin", params(("id" = Uuid, Path), ("domain" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn revoke_domain(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiPath((id, domain)): ApiPath<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    me.require_platform_admin()?;
    let mut tx = state.system.begin().await?;
    let gone = sqlx::query("DELETE FROM domain_grants WHERE tenant_id = $1 AND domain = $2")
        .bind(id)
        .bind(domain.to_ascii_lowercase())
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(ApiError::not_found("domain grant"));
    }
    crate::routing::store::reverify(&mut tx, id).await?;
    tx.commit().await?;
    audit.record("domain.revoke", "tenant", id);
    audit.tenant(id);
    Ok(StatusCode::NO_CONTENT)
}
