//! Applications (a stack deployed from a template version onto a cluster), their revisions, services
//! and containers. The API computes the services a revision asks for — enforcing quotas on their counts
//! and summed reservations — stores them as desired state, and queues the deploy job.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{
    Application, ApplicationRevision, ApplicationStatus, ClusterStatus, Container, CreateApplication, Page, Problem, Role,
    Service, ServiceStatus, UpdateApplication, UpdateService,
};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::clusters::name_taken;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::api::templates::load_version;
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::domain::compose::{self, ServicePlan};
use crate::domain::quota::{self, Delta};
use crate::domain::validate;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, Target};
use crate::state::AppState;

#[derive(sqlx::FromRow)]
struct AppRow {
    id: Uuid,
    name: String,
    cluster_id: Uuid,
    template_id: Uuid,
    #[sqlx(try_from = "String")]
    status: ApplicationStatus,
    current_revision: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl AppRow {
    fn into_dto(self, job_id: Option<Uuid>) -> Application {
        Application {
            id: self.id,
            name: self.name,
            cluster_id: self.cluster_id,
            template_id: self.template_id,
            status: self.status,
            revision: self.current_revision,
            created_at: self.created_at,
            updated_at: self.updated_at,
            job_id,
        }
    }
}

const APP_COLUMNS: &str = "id, name, cluster_id, template_id, status, current_revision, created_at, updated_at";

async fn load_app(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<AppRow> {
    let sql = format!(
        "SELECT {APP_COLUMNS} FROM applications WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<AppRow> = sqlx::query_as(&sql).bind(tenant).bind(id).fetch_optional(conn).await?;
    row.ok_or_else(|| ApiError::not_found("application"))
}

/// Resolves a revision's services: the template version's text with the variables filled in.
async fn plan_revision(
    conn: &mut PgConnection,
    tenant: Uuid,
    cluster_id: Uuid,
    template_id: Uuid,
    version: i32,
    variables: &BTreeMap<String, String>,
) -> ApiResult<Vec<ServicePlan>> {
    let cluster: Option<(String, i32)> = sqlx::query_as(
        "SELECT status, (SELECT count(*)::int4 FROM nodes WHERE cluster_id = c.id AND state <> 'removing')
           FROM clusters c WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(cluster_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (status, nodes) = cluster.ok_or_else(|| ApiError::invalid_field("cluster_id", "no such cluster"))?;
    if status == ClusterStatus::Deleting.as_str() {
        return Err(ApiError::conflict("cluster-deleting", "the cluster is being deleted"));
    }
    let template = load_version(conn, tenant, template_id, version).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            ApiError::invalid_field("template_version", "no such template version")
        } else {
            e
        }
    })?;
    if let Some(unknown) = variables.keys().find(|k| !template.variables.contains_key(*k)) {
        return Err(ApiError::invalid_field(&format!("variables.{unknown}"), "the template does not use this variable"));
    }
    let text = compose::interpolate(&template.compose, variables)?;
    compose::plan(&text, nodes)
}

fn totals(plans: &[ServicePlan]) -> (f64, i64) {
    plans.iter().fold((0.0, 0), |(c, m), p| {
        (c + p.cpu_reservation * f64::from(p.replicas), m + p.memory_reservation_mb * i64::from(p.replicas))
    })
}

/// Writes the services of a revision as desired state: updates the ones that stay, adds new ones, drops
/// the ones the revision no longer has (the deploy job removes them from Swarm, like `--prune`).
async fn write_services(tx: &mut PgConnection, tenant: Uuid, app: Uuid, plans: &[ServicePlan]) -> sqlx::Result<()> {
    let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    sqlx::query("DELETE FROM services WHERE application_id = $1 AND NOT (name = ANY($2))")
        .bind(app)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    for p in plans {
        sqlx::query(
            "INSERT INTO services (id, tenant_id, application_id, name, image, replicas, cpu_reservation, memory_reservation_mb)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (application_id, name) DO UPDATE
                SET image = excluded.image, replicas = excluded.replicas, cpu_reservation = excluded.cpu_reservation,
                    memory_reservation_mb = excluded.memory_reservation_mb, status = 'updating', updated_at = now()",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(app)
        .bind(&p.name)
        .bind(&p.image)
        .bind(p.replicas)
        .bind(p.cpu_reservation)
        .bind(p.memory_reservation_mb)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn insert_revision(
    tx: &mut PgConnection,
    tenant: Uuid,
    app: Uuid,
    revision: i32,
    version: i32,
    vars: &BTreeMap<String, String>,
    by: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO application_revisions (tenant_id, application_id, revision, template_version, variables, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant)
    .bind(app)
    .bind(revision)
    .bind(version)
    .bind(sqlx::types::Json(vars))
    .bind(by)
    .execute(tx)
    .await?;
    Ok(())
}

/// Deploys a template onto a cluster as a new application (revision 1). Quotas on applications,
/// services and summed reservations are checked before anything is written.
#[utoipa::path(post, path = "/api/v1/applications", tag = "applications", request_body = CreateApplication,
    responses((status = 202, body = Application), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateApplication>,
) -> ApiResult<(StatusCode, Json<Application>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    validate::dns_name("name", &req.name)?;
    let mut tx = db.begin().await?;
    let latest: Option<i32> = sqlx::query_scalar("SELECT latest_version FROM templates WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(req.template_id)
        .fetch_optional(&mut *tx)
        .await?;
    let latest = latest.ok_or_else(|| ApiError::invalid_field("template_id", "no such template"))?;
    let version = req.template_version.unwrap_or(latest);
    let plans = plan_revision(&mut tx, tenant, req.cluster_id, req.template_id, version, &req.variables).await?;
    let (cpus, memory_mb) = totals(&plans);
    quota::reserve(
        &mut tx,
        tenant,
        Delta { applications: 1, services: plans.len() as i64, cpus, memory_mb, ..Default::default() },
    )
    .await?;
    let row: AppRow = sqlx::query_as(&format!(
        "INSERT INTO applications (id, tenant_id, cluster_id, template_id, name) VALUES ($1, $2, $3, $4, $5) RETURNING {APP_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(req.cluster_id)
    .bind(req.template_id)
    .bind(&req.name)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| name_taken(e, "application"))?;
    insert_revision(&mut tx, tenant, row.id, 1, version, &req.variables, me.user_id()).await?;
    write_services(&mut tx, tenant, row.id, &plans).await?;
    let target = Target { tenant_id: Some(tenant), kind: "application", id: row.id };
    let job = jobs::enqueue(&mut tx, target, "application.deploy", json!({ "revision": 1 })).await?;
    tx.commit().await?;
    audit.record("application.create", "application", row.id);
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

#[utoipa::path(get, path = "/api/v1/applications", tag = "applications", params(PageParams),
    responses((status = 200, body = Page<Application>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<Application>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let rows: Vec<AppRow> = sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM applications WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| r.into_dto(None))))
}

#[utoipa::path(get, path = "/api/v1/applications/{id}", tag = "applications", params(("id" = Uuid, Path)),
    responses((status = 200, body = Application), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Application>> {
    let tenant = me.tenant()?;
    let mut conn = db;
    Ok(Json(load_app(&mut conn, tenant, id, false).await?.into_dto(None)))
}

/// Redeploys an application as a new revision: another template version, other variables, or both
/// (each defaults to the current revision's). Roll back by naming an earlier version and its variables.
#[utoipa::path(patch, path = "/api/v1/applications/{id}", tag = "applications", params(("id" = Uuid, Path)), request_body = UpdateApplication,
    responses((status = 202, body = Application), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn update(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateApplication>,
) -> ApiResult<(StatusCode, Json<Application>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("application.update", "application", id);
    let mut tx = db.begin().await?;
    let app = load_app(&mut tx, tenant, id, true).await?;
    if app.status == ApplicationStatus::Deleting {
        return Err(ApiError::conflict("application-deleting", "the application is being deleted"));
    }
    let (cur_version, cur_vars): (i32, sqlx::types::Json<BTreeMap<String, String>>) = sqlx::query_as(
        "SELECT template_version, variables FROM application_revisions WHERE application_id = $1 AND revision = $2",
    )
    .bind(id)
    .bind(app.current_revision)
    .fetch_one(&mut *tx)
    .await?;
    let version = req.template_version.unwrap_or(cur_version);
    let vars = req.variables.unwrap_or(cur_vars.0);
    let plans = plan_revision(&mut tx, tenant, app.cluster_id, app.template_id, version, &vars).await?;
    let (old_count, old_cpus, old_mem): (i64, f64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(cpu_reservation * replicas), 0)::float8, coalesce(sum(memory_reservation_mb * replicas), 0)::int8
           FROM services WHERE application_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let (cpus, memory_mb) = totals(&plans);
    let delta = Delta {
        services: plans.len() as i64 - old_count,
        cpus: cpus - old_cpus,
        memory_mb: memory_mb - old_mem,
        ..Default::default()
    };
    quota::reserve(&mut tx, tenant, delta).await?;
    let revision = app.current_revision + 1;
    insert_revision(&mut tx, tenant, id, revision, version, &vars, me.user_id()).await?;
    write_services(&mut tx, tenant, id, &plans).await?;
    let row: AppRow = sqlx::query_as(&format!(
        "UPDATE applications SET current_revision = $2, status = 'updating', updated_at = now() WHERE id = $1 RETURNING {APP_COLUMNS}"
    ))
    .bind(id)
    .bind(revision)
    .fetch_one(&mut *tx)
    .await?;
    let target = Target { tenant_id: Some(tenant), kind: "application", id };
    let job = jobs::enqueue(&mut tx, target, "application.deploy", json!({ "revision": revision })).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

/// Deletes an application: the job removes its services from Swarm, then its records.
#[utoipa::path(delete, path = "/api/v1/applications/{id}", tag = "applications", params(("id" = Uuid, Path)),
    responses((status = 202, body = Application), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<Application>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("application.delete", "application", id);
    let mut tx = db.begin().await?;
    load_app(&mut tx, tenant, id, true).await?;
    let row: AppRow = sqlx::query_as(&format!(
        "UPDATE applications SET status = 'deleting', updated_at = now() WHERE id = $1 RETURNING {APP_COLUMNS}"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let target = Target { tenant_id: Some(tenant), kind: "application", id };
    let job = jobs::enqueue(&mut tx, target, "application.delete", json!({})).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

#[derive(sqlx::FromRow)]
struct RevisionRow {
    revision: i32,
    template_version: i32,
    variables: sqlx::types::Json<BTreeMap<String, String>>,
    created_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/api/v1/applications/{id}/revisions", tag = "applications", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<ApplicationRevision>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn revisions(
    db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ApplicationRevision>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let mut conn = db;
    load_app(&mut conn, tenant, id, false).await?;
    let rows: Vec<RevisionRow> = sqlx::query_as(
        "SELECT revision, template_version, variables, created_at FROM application_revisions
          WHERE tenant_id = $1 AND application_id = $2 AND ($3::int IS NULL OR revision > $3) ORDER BY revision LIMIT $4",
    )
    .bind(tenant)
    .bind(id)
    .bind(q.after::<i32>()?)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.revision,
        |r| ApplicationRevision {
            revision: r.revision,
            template_version: r.template_version,
            variables: r.variables.0,
            created_at: r.created_at,
        },
    )))
}

// ------------------------------------------------------------------------------------------ services

#[derive(sqlx::FromRow)]
struct ServiceRow {
    id: Uuid,
    application_id: Uuid,
    name: String,
    image: String,
    replicas: i32,
    cpu_reservation: f64,
    memory_reservation_mb: i64,
    #[sqlx(try_from = "String")]
    status: ServiceStatus,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ServiceRow {
    fn into_dto(self, job_id: Option<Uuid>) -> Service {
        Service {
            id: self.id,
            application_id: self.application_id,
            name: self.name,
            image: self.image,
            replicas: self.replicas,
            cpu_reservation: self.cpu_reservation,
            memory_reservation_mb: self.memory_reservation_mb,
            status: self.status,
            created_at: self.created_at,
            updated_at: self.updated_at,
            job_id,
        }
    }
}

const SERVICE_COLUMNS: &str =
    "id, application_id, name, image, replicas, cpu_reservation, memory_reservation_mb, status, created_at, updated_at";

async fn load_service(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<ServiceRow> {
    let sql = format!(
        "SELECT {SERVICE_COLUMNS} FROM services WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<ServiceRow> = sqlx::query_as(&sql).bind(tenant).bind(id).fetch_optional(conn).await?;
    row.ok_or_else(|| ApiError::not_found("service"))
}

#[utoipa::path(get, path = "/api/v1/applications/{id}/services", tag = "applications", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Service>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn list_services(
    db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Service>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let mut conn = db;
    load_app(&mut conn, tenant, id, false).await?;
    let rows: Vec<ServiceRow> = sqlx::query_as(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services WHERE tenant_id = $1 AND application_id = $2 AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4"
    ))
    .bind(tenant)
    .bind(id)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| r.into_dto(None))))
}

#[utoipa::path(get, path = "/api/v1/services/{id}", tag = "applications", params(("id" = Uuid, Path)),
    responses((status = 200, body = Service), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_service(db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Service>> {
    let tenant = me.tenant()?;
    let mut conn = db;
    Ok(Json(load_service(&mut conn, tenant, id, false).await?.into_dto(None)))
}

/// Scales a service. More replicas reserve more CPU and memory, so quotas are checked.
#[utoipa::path(patch, path = "/api/v1/services/{id}", tag = "applications", params(("id" = Uuid, Path)), request_body = UpdateService,
    responses((status = 202, body = Service), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn update_service(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateService>,
) -> ApiResult<(StatusCode, Json<Service>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("service.scale", "service", id);
    if !(0..=1000).contains(&req.replicas) {
        return Err(ApiError::invalid_field("replicas", "must be between 0 and 1000"));
    }
    let mut tx = db.begin().await?;
    let svc = load_service(&mut tx, tenant, id, true).await?;
    let more = f64::from(req.replicas - svc.replicas);
    let delta = Delta {
        cpus: svc.cpu_reservation * more,
        memory_mb: svc.memory_reservation_mb * i64::from(req.replicas - svc.replicas),
        ..Default::default()
    };
    quota::reserve(&mut tx, tenant, delta).await?;
    let row: ServiceRow = sqlx::query_as(&format!(
        "UPDATE services SET replicas = $2, status = 'updating', updated_at = now() WHERE id = $1 RETURNING {SERVICE_COLUMNS}"
    ))
    .bind(id)
    .bind(req.replicas)
    .fetch_one(&mut *tx)
    .await?;
    let target = Target { tenant_id: Some(tenant), kind: "service", id };
    let job = jobs::enqueue(&mut tx, target, "service.scale", json!({ "replicas": req.replicas })).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

#[derive(sqlx::FromRow)]
struct ContainerRow {
    id: Uuid,
    service_id: Uuid,
    node_id: Option<Uuid>,
    swarm_task_id: String,
    container_id: Option<String>,
    slot: Option<i32>,
    state: String,
    desired_state: String,
    message: String,
    updated_at: DateTime<Utc>,
}

/// The service's tasks and their containers, as last observed on the cluster.
#[utoipa::path(get, path = "/api/v1/services/{id}/containers", tag = "applications", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Container>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn list_containers(
    State(_state): State<AppState>,
    db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Container>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let mut conn = db;
    load_service(&mut conn, tenant, id, false).await?;
    let rows: Vec<ContainerRow> = sqlx::query_as(
        "SELECT id, service_id, node_id, swarm_task_id, container_id, slot, state, desired_state, message, updated_at
           FROM containers WHERE tenant_id = $1 AND service_id = $2 AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4",
    )
    .bind(tenant)
    .bind(id)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id,
        |r| Container {
            id: r.id,
            service_id: r.service_id,
            node_id: r.node_id,
            swarm_task_id: r.swarm_task_id,
            container_id: r.container_id,
            slot: r.slot,
            state: r.state,
            desired_state: r.desired_state,
            message: r.message,
            updated_at: r.updated_at,
        },
    )))
}
