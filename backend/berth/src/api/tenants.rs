//! Platform administration of tenants (`/api/v1/admin/tenants`) and a tenant's view of its own quotas.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{CreateTenant, CreatedTenant, Page, Problem, QuotaReport, Quotas, Role, Tenant, TenantStatus};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::api::users::insert_user;
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::domain::{quota, validate};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(sqlx::FromRow)]
pub struct TenantRow {
    id: Uuid,
    name: String,
    slug: String,
    #[sqlx(try_from = "String")]
    status: TenantStatus,
    created_at: DateTime<Utc>,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant { id: r.id, name: r.name, slug: r.slug, status: r.status, created_at: r.created_at }
    }
}

const TENANT_COLUMNS: &str = "id, name, slug, status, created_at";

pub async fn load_tenant(db: &PgPool, id: Uuid) -> ApiResult<Tenant> {
    let row: Option<TenantRow> =
        sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1")).bind(id).fetch_optional(db).await?;
    row.map(Into::into).ok_or_else(|| ApiError::not_found("tenant"))
}

/// Creates a tenant and its owner. The slug is derived from the name and made unique with a numeric
/// suffix (`acme`, `acme-2`, ...).
#[utoipa::path(post, path = "/api/v1/admin/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<CreatedTenant>)> {
    me.require_platform_admin()?;
    validate::display_name("name", &req.name)?;
    validate::email("owner_email", &req.owner_email)?;
    validate::password("owner_password", &req.owner_password)?;
    let hash = crate::auth::password::hash(req.owner_password.clone()).await?;
    let base = validate::slugify(&req.name);

    let mut tx = state.system.begin().await?;
    // Slugs of deleted tenants count as taken: they are never reused (see `retired_slugs`).
    let taken: Vec<String> = sqlx::query_scalar(
        "SELECT slug FROM tenants WHERE slug = $1 OR slug LIKE $1 || '-%'
         UNION SELECT slug FROM retired_slugs WHERE slug = $1 OR slug LIKE $1 || '-%'",
    )
    .bind(&base)
    .fetch_all(&mut *tx)
    .await?;
    let slug = (1..)
        .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
        .find(|s| !taken.contains(s))
        .expect("an unused suffix exists");
    let id = Uuid::now_v7();
    let row: TenantRow =
        sqlx::query_as(&format!("INSERT INTO tenants (id, name, slug) VALUES ($1, $2, $3) RETURNING {TENANT_COLUMNS}"))
            .bind(id)
            .bind(req.name.trim())
            .bind(&slug)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("INSERT INTO quotas (tenant_id) VALUES ($1)").bind(id).execute(&mut *tx).await?;
    let owner = insert_user(&mut tx, Some(id), &req.owner_email, &hash, Role::Owner).await?;
    tx.commit().await?;
    audit.record("tenant.create", "tenant", id);
    audit.tenant(id);
    Ok((StatusCode::CREATED, Json(CreatedTenant { tenant: row.into(), owner })))
}

#[utoipa::path(get, path = "/api/v1/admin/tenants", tag = "admin", params(PageParams),
    responses((status = 200, body = Page<Tenant>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    me: Principal,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Tenant>>> {
    me.require_platform_admin()?;
    let limit = q.limit()?;
    let rows: Vec<TenantRow> =
        sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"))
            .bind(q.after::<Uuid>()?)
            .bind(limit + 1)
            .fetch_all(&state.system)
            .await?;
    Ok(Json(page(rows, limit, |r| r.id, Into::into)))
}

#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = Tenant), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Tenant>> {
    me.require_platform_admin()?;
    Ok(Json(load_tenant(&state.system, id).await?))
}

async fn set_status(state: &AppState, id: Uuid, status: TenantStatus) -> ApiResult<Tenant> {
    let mut tx = state.system.begin().await?;
    let row: Option<TenantRow> =
        sqlx::query_as(&format!("UPDATE tenants SET status = $2, updated_at = now() WHERE id = $1 RETURNING {TENANT_COLUMNS}"))
            .bind(id)
            .bind(status.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let row = row.ok_or_else(|| ApiError::not_found("tenant"))?;
    if status == TenantStatus::Suspended {
        let users: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1").bind(id).fetch_all(&mut *tx).await?;
        crate::api::auth::revoke_sessions_of(&mut tx, &users).await?;
    }
    tx.commit().await?;
    Ok(row.into())
}

/// Suspends a tenant: its users and tokens are refused at once and its login sessions are revoked.
/// Its clusters and applications keep running.
#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/suspend", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = Tenant), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn suspend(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Tenant>> {
    me.require_platform_admin()?;
    let t = set_status(&state, id, TenantStatus::Suspended).await?;
    audit.record("tenant.suspend", "tenant", id);
    audit.tenant(id);
    Ok(Json(t))
}

#[utoipa::path(post, path = "/api/v1/admin/tenants/{id}/resume", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = Tenant), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Tenant>> {
    me.require_platform_admin()?;
    let t = set_status(&state, id, TenantStatus::Active).await?;
    audit.record("tenant.resume", "tenant", id);
    audit.tenant(id);
    Ok(Json(t))
}

/// Deletes a tenant with its users, tokens, templates and other records. A tenant that still has
/// clusters is refused (409): their machines must be torn down first, which deleting rows cannot do.
#[utoipa::path(delete, path = "/api/v1/admin/tenants/{id}", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    me.require_platform_admin()?;
    audit.record("tenant.delete", "tenant", id);
    audit.tenant(id);
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT slug, status FROM tenants WHERE id = $1").bind(id).fetch_optional(&state.system).await?;
    let (slug, status) = row.ok_or_else(|| ApiError::not_found("tenant"))?;
    let clusters: i64 =
        sqlx::query_scalar("SELECT count(*) FROM clusters WHERE tenant_id = $1").bind(id).fetch_one(&state.system).await?;
    if clusters > 0 {
        return Err(ApiError::conflict(
            "tenant-has-clusters",
            format!("the tenant still has {clusters} cluster(s); delete them first"),
        ));
    }
    // Its images go first, from the registry itself: a later tenant with the same slug must not find
    // them. Suspending the tenant meanwhile stops new pushes (the token service checks it).
    if let Some(reg) = state.registry() {
        sqlx::query("UPDATE tenants SET status = 'suspended' WHERE id = $1").bind(id).execute(&state.system).await?;
        if let Err(e) = crate::registry::retention::purge_namespace(&reg, &slug).await {
            sqlx::query("UPDATE tenants SET status = $2 WHERE id = $1").bind(id).bind(&status).execute(&state.system).await?;
            tracing::warn!(error = %format!("{e:#}"), %slug, "emptying a deleted tenant's registry namespace failed");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry-unavailable",
                "the tenant's images could not be removed from the registry; try again",
            ));
        }
    }
    let mut tx = state.system.begin().await?;
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *tx).await?;
    exists.ok_or_else(|| ApiError::not_found("tenant"))?;
    let clusters: i64 =
        sqlx::query_scalar("SELECT count(*) FROM clusters WHERE tenant_id = $1").bind(id).fetch_one(&mut *tx).await?;
    if clusters > 0 {
        // A cluster was created meanwhile: the tenant stays, as it was.
        sqlx::query("UPDATE tenants SET status = $2 WHERE id = $1").bind(id).bind(&status).execute(&mut *tx).await?;
        tx.commit().await?;
        return Err(ApiError::conflict(
            "tenant-has-clusters",
            format!("the tenant still has {clusters} cluster(s); delete them first"),
        ));
    }
    sqlx::query("DELETE FROM tenants WHERE id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO retired_slugs (slug) VALUES ($1) ON CONFLICT DO NOTHING").bind(&slug).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a tenant's quotas. A missing field means unlimited; 0 forbids the resource. Lowering a quota
/// below current usage is allowed: existing objects stay, new ones are refused.
#[utoipa::path(put, path = "/api/v1/admin/tenants/{id}/quotas", tag = "admin", params(("id" = Uuid, Path)), request_body = Quotas,
    responses((status = 200, body = Quotas), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn set_quotas(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(q): ApiJson<Quotas>,
) -> ApiResult<Json<Quotas>> {
    me.require_platform_admin()?;
    audit.record("tenant.quotas.set", "tenant", id);
    audit.tenant(id);
    let negative = [
        ("max_clusters", q.max_clusters.map(f64::from)),
        ("max_nodes", q.max_nodes.map(f64::from)),
        ("max_applications", q.max_applications.map(f64::from)),
        ("max_services", q.max_services.map(f64::from)),
        ("max_cpus", q.max_cpus),
        ("max_memory_mb", q.max_memory_mb.map(|m| m as f64)),
        ("max_image_storage_mb", q.max_image_storage_mb.map(|m| m as f64)),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_some_and(|v| !v.is_finite() || v < 0.0))
    .map(|(f, _)| berth_types::FieldError::new(f, "must be 0 or more (or absent for unlimited)"))
    .collect::<Vec<_>>();
    if !negative.is_empty() {
        return Err(ApiError::invalid_fields(negative));
    }
    let updated = sqlx::query(
        "UPDATE quotas SET max_clusters = $2, max_nodes = $3, max_applications = $4, max_services = $5,
                           max_cpus = $6, max_memory_mb = $7, max_image_storage_mb = $8, updated_at = now()
          WHERE tenant_id = $1",
    )
    .bind(id)
    .bind(q.max_clusters)
    .bind(q.max_nodes)
    .bind(q.max_applications)
    .bind(q.max_services)
    .bind(q.max_cpus)
    .bind(q.max_memory_mb)
    .bind(q.max_image_storage_mb)
    .execute(&state.system)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::not_found("tenant"));
    }
    Ok(Json(q))
}

#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}/quotas", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = QuotaReport), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_quotas(
    State(state): State<AppState>,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<QuotaReport>> {
    me.require_platform_admin()?;
    load_tenant(&state.system, id).await?;
    report(&mut *state.system.acquire().await?, id).await.map(Json)
}

/// The caller's own tenant's quotas and current usage.
#[utoipa::path(get, path = "/api/v1/quotas", tag = "tenant",
    responses((status = 200, body = QuotaReport), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn my_quotas(mut db: TenantDb, me: Principal) -> ApiResult<Json<QuotaReport>> {
    let tenant = me.tenant()?;
    report(&mut db, tenant).await.map(Json)
}

async fn report(conn: &mut PgConnection, tenant: Uuid) -> ApiResult<QuotaReport> {
    let quotas = quota::get(conn, tenant).await?;
    let usage = quota::usage(conn, tenant).await?;
    Ok(QuotaReport { quotas, usage })
}
