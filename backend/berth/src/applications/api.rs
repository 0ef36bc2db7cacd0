//! The applications API: thin handlers over [`super::store`] and the Compose pipeline. Every write
//! checks the Compose file, the admission policy and the quotas before anything is stored, stores the
//! desired state and the job that applies it in one transaction, and answers 202 with the job.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{
    AdmissionPolicy, Application, ApplicationPreview, ApplicationRevision, ApplicationStatus, ClusterStatus, Container,
    CreateApplication, Page, Problem, Provider, Role, RollbackApplication, Service, ServicePreview, UpdateApplication,
    UpdateService,
};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::compose::{self, Input, Loaded};
use super::store::{self, AppRow, NewRevision, ServicePlan};
use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::domain::quota::{self, Delta};
use crate::domain::validate;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, Target};
use crate::state::AppState;

/// The longest application name: `<application>_<service>` must fit Swarm's 63 characters.
const MAX_NAME: usize = 40;

/// A revision's Compose text and files, and the template version they come from, if any.
pub(crate) struct Text {
    pub template_id: Option<Uuid>,
    pub template_version: Option<i32>,
    pub compose: String,
    pub files: BTreeMap<String, String>,
}

/// Where a new application's Compose text comes from.
enum Source {
    Template(Uuid, Option<i32>),
    /// Inline text, or a gallery template's (whose base image must be in the registry to deploy it).
    Text {
        compose: String,
        files: BTreeMap<String, String>,
        gallery: bool,
    },
}

impl Source {
    /// The one source a create request names.
    fn of(req: &CreateApplication) -> ApiResult<Source> {
        if req.template_version.is_some() && req.template_id.is_none() {
            return Err(ApiError::invalid_field("template_version", "goes with template_id"));
        }
        match (req.template_id, &req.gallery, &req.compose) {
            (Some(t), None, None) => Ok(Source::Template(t, req.template_version)),
            (None, Some(name), None) => {
                let (compose, files) =
                    super::gallery::find(name).ok_or_else(|| ApiError::invalid_field("gallery", "no such gallery template"))?;
                Ok(Source::Text { compose, files, gallery: true })
            }
            (None, None, Some(compose)) => {
                Ok(Source::Text { compose: compose.clone(), files: req.files.clone(), gallery: false })
            }
            _ => Err(ApiError::invalid_field("compose", "give exactly one of template_id, gallery and compose")),
        }
    }

    async fn resolve(self, conn: &mut PgConnection, tenant: Uuid) -> ApiResult<Text> {
        match self {
            Source::Template(t, version) => template_source(conn, tenant, t, version).await,
            Source::Text { compose, files, .. } => Ok(Text { template_id: None, template_version: None, compose, files }),
        }
    }
}

async fn template_source(conn: &mut PgConnection, tenant: Uuid, template: Uuid, version: Option<i32>) -> ApiResult<Text> {
    type VersionRow = (i32, String, sqlx::types::Json<BTreeMap<String, String>>);
    let row: Option<VersionRow> = sqlx::query_as(
        "SELECT v.version, v.compose, v.files FROM templates t
           JOIN template_versions v ON v.template_id = t.id AND v.version = coalesce($3, t.latest_version)
          WHERE t.tenant_id = $1 AND t.id = $2",
    )
    .bind(tenant)
    .bind(template)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    let (version, compose, files) = row.ok_or_else(|| match version {
        Some(_) => ApiError::invalid_field("template_version", "no such template version"),
        None => ApiError::invalid_field("template_id", "no such template"),
    })?;
    Ok(Text { template_id: Some(template), template_version: Some(version), compose, files: files.0 })
}

/// A revision's Compose file loaded for a cluster, with its services planned.
pub(crate) struct Prepared {
    pub loaded: Loaded,
    pub plans: Vec<ServicePlan>,
    pub routes: Vec<crate::routing::declare::Declared>,
}

/// Loads the Compose file under the tenant's policy and plans its services on the cluster. Errors are
/// 422s naming each offending path.
pub(crate) async fn prepare(
    conn: &mut PgConnection,
    tenant: Uuid,
    cluster: Uuid,
    app_name: &str,
    source: &Text,
    variables: &BTreeMap<String, String>,
    state: &AppState,
) -> ApiResult<Prepared> {
    let registry = state.registry().map(|r| r.address.clone());
    let registry = registry.as_deref();
    let cluster = crate::clusters::store::load(conn, tenant, cluster, false).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND { ApiError::invalid_field("cluster_id", "no such cluster") } else { e }
    })?;
    if cluster.status == ClusterStatus::Deleting {
        return Err(ApiError::conflict("cluster-deleting", "the cluster is being deleted"));
    }
    let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes WHERE cluster_id = $1 AND state <> 'removing'")
        .bind(cluster.id)
        .fetch_one(&mut *conn)
        .await?;
    let policy = store::policy(conn, tenant).await?;
    let all = store::with_builtins(conn, tenant, registry, variables).await?;
    let input = Input { text: &source.compose, files: &source.files, variables: &all };
    let mut loaded = compose::load(&input, &policy).map_err(|errors| compose::invalid("compose", &errors))?;
    // Local nodes share this host's kernel; an adopted cluster's kernel is not known here.
    if cluster.provider == Provider::Local && !crate::providers::local::kernel_has_ipvs() {
        let mut diags = compose::Diagnostics { warnings: std::mem::take(&mut loaded.warnings), ..Default::default() };
        compose::mesh::warn_without_ipvs(&loaded.project, &mut diags);
        diags.sort();
        loaded.warnings = diags.warnings;
    }
    let too_long: Vec<_> = loaded.project.services.keys().filter(|s| app_name.len() + 1 + s.len() > 63).collect();
    if let Some(service) = too_long.first() {
        return Err(ApiError::invalid_field(
            &format!("compose.services.{service}"),
            format!("`{app_name}_{service}` is longer than Swarm's 63 characters: shorten the service or application name"),
        ));
    }
    let used = compose::variables(&source.compose);
    let unknown = variables
        .keys()
        .find(|k| !used.contains_key(*k) && !loaded.project.services.values().any(|s| s.environment.contains_key(*k)));
    if let Some(name) = unknown {
        return Err(ApiError::invalid_field(&format!("variables.{name}"), "the Compose file does not use this variable"));
    }
    let plans = store::plan(&loaded.project, i32::try_from(nodes).unwrap_or(i32::MAX).max(1));
    let slug: String = sqlx::query_scalar("SELECT slug FROM tenants WHERE id = $1").bind(tenant).fetch_one(&mut *conn).await?;
    let names =
        crate::routing::declare::Names { application: app_name, tenant_slug: &slug, apps_domain: &state.routing.apps_domain };
    let mut diags = compose::Diagnostics::default();
    let routes = crate::routing::declare::routes(&loaded.project, &names, &mut diags);
    if !diags.errors.is_empty() {
        diags.sort();
        return Err(compose::invalid("compose", &diags.errors));
    }
    Ok(Prepared { loaded, plans, routes })
}

fn check_name(name: &str) -> ApiResult<()> {
    validate::dns_name("name", name)?;
    if name.len() > MAX_NAME {
        return Err(ApiError::invalid_field("name", format!("must be at most {MAX_NAME} characters")));
    }
    Ok(())
}

/// Queues a job on an application.
pub(crate) async fn enqueue(
    tx: &mut PgConnection,
    tenant: Uuid,
    kind: &str,
    id: Uuid,
    payload: serde_json::Value,
) -> ApiResult<Uuid> {
    let target = Target { tenant_id: Some(tenant), kind: "application", id };
    Ok(jobs::enqueue(tx, target, kind, payload).await?)
}

/// Deploys a Compose stack onto a cluster as a new application (revision 1). The file, the admission
/// policy and the quotas on applications, services and summed reservations are checked first.
#[utoipa::path(post, path = "/api/v1/applications", tag = "applications", request_body = CreateApplication,
    responses((status = 202, body = Application), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateApplication>,
) -> ApiResult<(StatusCode, Json<Application>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    check_name(&req.name)?;
    let source = Source::of(&req)?;
    if matches!(source, Source::Text { gallery: true, .. }) {
        super::gallery::ensure_base_image(&state, tenant).await?;
    }
    let variables = req.variables;
    let mut tx = db.begin().await?;
    let source = source.resolve(&mut tx, tenant).await?;
    let prepared = prepare(&mut tx, tenant, req.cluster_id, &req.name, &source, &variables, &state).await?;
    let (cpus, memory_mb) = store::totals(&prepared.plans);
    let delta = Delta { applications: 1, services: prepared.plans.len() as i64, cpus, memory_mb, ..Default::default() };
    quota::reserve(&mut tx, tenant, delta).await?;
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO applications (id, tenant_id, cluster_id, template_id, name) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(tenant)
        .bind(req.cluster_id)
        .bind(source.template_id)
        .bind(&req.name)
        .execute(&mut *tx)
        .await
        .map_err(|e| ApiError::or_name_taken(e, "application"))?;
    let revision = NewRevision {
        template_id: source.template_id,
        template_version: source.template_version,
        compose: &source.compose,
        files: &source.files,
        variables: &variables,
        images: BTreeMap::new(),
        warnings: &prepared.loaded.warnings,
    };
    store::insert_revision(&mut tx, tenant, id, 1, &revision, me.user_id()).await?;
    store::write_services(&mut tx, tenant, id, &prepared.plans).await?;
    crate::routing::store::write_declared(&mut tx, tenant, id, &prepared.routes).await?;
    let job = enqueue(&mut tx, tenant, "application.deploy", id, json!({ "revision": 1 })).await?;
    let row = store::load_app(&mut tx, tenant, id, false).await?;
    tx.commit().await?;
    audit.record("application.create", "application", id);
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

/// What deploying would do, without doing it: the services the Compose file makes and what they
/// reserve, their routes, the file's warnings, and each counted quota before and after. The same
/// checks as `POST /applications` answer the same errors, except that a quota the deploy would exceed
/// is reported in `quota` rather than refused. Nothing is stored.
#[utoipa::path(post, path = "/api/v1/applications/preview", tag = "applications", request_body = CreateApplication,
    responses((status = 200, body = ApplicationPreview), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiJson(req): ApiJson<CreateApplication>,
) -> ApiResult<Json<ApplicationPreview>> {
    let tenant = me.tenant_with(Role::Developer)?;
    check_name(&req.name)?;
    let source = Source::of(&req)?;
    // One snapshot for usage and limits; nothing is written, so the transaction only ends.
    let mut tx = db.begin().await?;
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM applications WHERE tenant_id = $1 AND name = $2)")
        .bind(tenant)
        .bind(&req.name)
        .fetch_one(&mut *tx)
        .await?;
    if taken {
        return Err(ApiError::name_taken("application"));
    }
    let source = source.resolve(&mut tx, tenant).await?;
    let prepared = prepare(&mut tx, tenant, req.cluster_id, &req.name, &source, &req.variables, &state).await?;
    let (cpus, memory_mb) = store::totals(&prepared.plans);
    let delta = Delta { applications: 1, services: prepared.plans.len() as i64, cpus, memory_mb, ..Default::default() };
    let (limits, usage) = (quota::get(&mut tx, tenant).await?, quota::usage(&mut tx, tenant).await?);
    tx.rollback().await?;
    let quota = quota::impact(&limits, &usage, &delta)
        .into_iter()
        .filter(|line| !matches!(line.quota.as_str(), "max_clusters" | "max_nodes"))
        .collect();
    let services = prepared
        .plans
        .iter()
        .map(|p| ServicePreview {
            name: p.name.clone(),
            image: p.image.clone(),
            mode: p.mode.to_owned(),
            replicas: p.replicas,
            cpus: p.cpu_reservation,
            memory_mb: p.memory_reservation_mb,
        })
        .collect();
    let routes = prepared.routes.iter().map(|r| format!("{}{}", r.domain, r.path_prefix.trim_end_matches('/'))).collect();
    Ok(Json(ApplicationPreview { services, routes, warnings: store::warnings(&prepared.loaded.warnings), quota }))
}

#[utoipa::path(get, path = "/api/v1/applications", tag = "applications", params(PageParams),
    responses((status = 200, body = Page<Application>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<Application>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let rows = store::apps_page(&mut db, tenant, q.after::<Uuid>()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| r.into_dto(None))))
}

#[utoipa::path(get, path = "/api/v1/applications/{id}", tag = "applications", params(("id" = Uuid, Path)),
    responses((status = 200, body = Application), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(mut db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Application>> {
    let tenant = me.tenant()?;
    Ok(Json(store::load_app(&mut db, tenant, id, false).await?.into_dto(None)))
}

/// Stores a new revision of a locked application and queues its deploy. Quotas are charged for the
/// difference with what the application reserves now.
async fn redeploy(
    tx: &mut PgConnection,
    state: &AppState,
    me: &Principal,
    app: &AppRow,
    source: Text,
    variables: BTreeMap<String, String>,
    images: BTreeMap<String, String>,
) -> ApiResult<(AppRow, Uuid)> {
    let tenant = app.tenant_id;
    if app.status == ApplicationStatus::Deleting {
        return Err(ApiError::conflict("application-deleting", "the application is being deleted"));
    }
    refuse_while_released(tx, app.id).await?;
    let prepared = prepare(tx, tenant, app.cluster_id, &app.name, &source, &variables, state).await?;
    let (count, old_cpus, old_mem) = store::reserved(tx, app.id).await?;
    let (cpus, memory_mb) = store::totals(&prepared.plans);
    let delta = Delta {
        services: prepared.plans.len() as i64 - count,
        cpus: cpus - old_cpus,
        memory_mb: memory_mb - old_mem,
        ..Default::default()
    };
    quota::reserve(tx, tenant, delta).await?;
    let revision = store::next_revision(tx, app.id).await?;
    let new = NewRevision {
        template_id: source.template_id,
        template_version: source.template_version,
        compose: &source.compose,
        files: &source.files,
        variables: &variables,
        images,
        warnings: &prepared.loaded.warnings,
    };
    store::insert_revision(tx, tenant, app.id, revision, &new, me.user_id()).await?;
    store::write_services(tx, tenant, app.id, &prepared.plans).await?;
    crate::routing::store::write_declared(tx, tenant, app.id, &prepared.routes).await?;
    sqlx::query(
        "UPDATE applications SET current_revision = $2, template_id = $3, status = CASE WHEN deployed_revision IS NULL THEN 'deploying' ELSE 'updating' END,
                message = '', updated_at = now() WHERE id = $1",
    )
    .bind(app.id)
    .bind(revision)
    .bind(source.template_id)
    .execute(&mut *tx)
    .await?;
    let job = enqueue(tx, tenant, "application.deploy", app.id, json!({ "revision": revision })).await?;
    Ok((store::load_app(tx, tenant, app.id, false).await?, job))
}

/// A revision's source changed as `PATCH /applications/{id}` (and a release) describe it: another
/// version of its template, inline Compose text, or other files; what is not given stays.
pub(crate) async fn changed_source(
    tx: &mut PgConnection,
    tenant: Uuid,
    current: &store::RevisionRow,
    template_version: Option<i32>,
    compose: Option<String>,
    files: Option<BTreeMap<String, String>>,
) -> ApiResult<Text> {
    Ok(match (compose, template_version) {
        (Some(_), Some(_)) => return Err(ApiError::invalid_field("compose", "give compose or template_version, not both")),
        (Some(compose), None) => {
            Text { template_id: None, template_version: None, compose, files: files.unwrap_or(current.files.0.clone()) }
        }
        (None, version) => match current.template_id {
            Some(t) if version.is_some() || files.is_none() => {
                template_source(tx, tenant, t, version.or(current.template_version)).await?
            }
            Some(_) => return Err(ApiError::invalid_field("files", "a template's files change with a new template version")),
            None if version.is_some() => {
                return Err(ApiError::invalid_field("template_version", "the application runs inline Compose, not a template"));
            }
            None => Text {
                template_id: None,
                template_version: None,
                compose: current.compose.clone(),
                files: files.unwrap_or(current.files.0.clone()),
            },
        },
    })
}

/// A new revision cannot be deployed while a release is open: it would change the services the
/// release compares against.
pub(crate) async fn refuse_while_released(tx: &mut PgConnection, app: Uuid) -> ApiResult<()> {
    if let Some(open) = crate::releases::store::open_of(tx, app).await? {
        return Err(ApiError::conflict(
            "release-open",
            format!("release {} of this application is open: promote or abort it first", open.id),
        ));
    }
    Ok(())
}

/// Deploys a new revision: another template version, inline Compose text, files or variables (each
/// defaults to the current revision's). Only what changed changes on the engine, through each
/// service's `update_config`; services the file no longer has are removed.
#[utoipa::path(patch, path = "/api/v1/applications/{id}", tag = "applications", params(("id" = Uuid, Path)), request_body = UpdateApplication,
    responses((status = 202, body = Application), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateApplication>,
) -> ApiResult<(StatusCode, Json<Application>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("application.update", "application", id);
    let mut tx = db.begin().await?;
    let app = store::load_app(&mut tx, tenant, id, true).await?;
    let current = store::revision(&mut tx, id, app.current_revision).await?.ok_or_else(|| ApiError::not_found("revision"))?;
    let source = changed_source(&mut tx, tenant, &current, req.template_version, req.compose, req.files).await?;
    let variables = req.variables.unwrap_or(current.variables.0);
    let (row, job) = redeploy(&mut tx, &state, &me, &app, source, variables, BTreeMap::new()).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

/// Returns to an earlier revision (the previous one by default): a new revision with that one's
/// Compose text, files, variables and pinned images, so the engine runs the same bytes as then.
#[utoipa::path(post, path = "/api/v1/applications/{id}/rollback", tag = "applications", params(("id" = Uuid, Path)), request_body = RollbackApplication,
    responses((status = 202, body = Application), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn rollback(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RollbackApplication>,
) -> ApiResult<(StatusCode, Json<Application>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("application.rollback", "application", id);
    let mut tx = db.begin().await?;
    let app = store::load_app(&mut tx, tenant, id, true).await?;
    let target = req.revision.unwrap_or(app.current_revision - 1);
    if target < 1 || target >= app.current_revision {
        return Err(ApiError::invalid_field("revision", "must be an earlier revision of this application"));
    }
    let old =
        store::revision(&mut tx, id, target).await?.ok_or_else(|| ApiError::invalid_field("revision", "no such revision"))?;
    let source =
        Text { template_id: old.template_id, template_version: old.template_version, compose: old.compose, files: old.files.0 };
    let (row, job) = redeploy(&mut tx, &state, &me, &app, source, old.variables.0, old.images.0).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

/// Deletes an application: the job removes its services, secrets, configs and networks from the engine
/// (what `docker stack rm` removes; volumes stay, as there), then its records.
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
    store::load_app(&mut tx, tenant, id, true).await?;
    sqlx::query("UPDATE applications SET status = 'deleting', updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let job = enqueue(&mut tx, tenant, "application.delete", id, json!({})).await?;
    let row = store::load_app(&mut tx, tenant, id, false).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

#[utoipa::path(get, path = "/api/v1/applications/{id}/revisions", tag = "applications", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<ApplicationRevision>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn revisions(
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<ApplicationRevision>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    store::load_app(&mut db, tenant, id, false).await?;
    let rows = store::revisions_page(&mut db, tenant, id, q.after::<i32>()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.revision, Into::into)))
}

// ------------------------------------------------------------------------------------------ services

#[utoipa::path(get, path = "/api/v1/applications/{id}/services", tag = "applications", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Service>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn list_services(
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Service>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    store::load_app(&mut db, tenant, id, false).await?;
    let rows = store::services_page(&mut db, tenant, id, q.after::<Uuid>()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| r.into_dto(None))))
}

#[utoipa::path(get, path = "/api/v1/services/{id}", tag = "applications", params(("id" = Uuid, Path)),
    responses((status = 200, body = Service), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_service(mut db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Service>> {
    let tenant = me.tenant()?;
    Ok(Json(store::load_service(&mut db, tenant, id, false).await?.into_dto(None)))
}

/// Scales a service, or changes its image (a rolling update following its `update_config`). More
/// replicas reserve more CPU and memory, so quotas are checked.
#[utoipa::path(patch, path = "/api/v1/services/{id}", tag = "applications", params(("id" = Uuid, Path)), request_body = UpdateService,
    responses((status = 202, body = Service), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn update_service(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateService>,
) -> ApiResult<(StatusCode, Json<Service>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("service.update", "service", id);
    if req.replicas.is_none() && req.image.is_none() {
        return Err(ApiError::invalid_field("replicas", "give replicas, image or both"));
    }
    if let Some(r) = req.replicas
        && !(0..=1000).contains(&r)
    {
        return Err(ApiError::invalid_field("replicas", "must be between 0 and 1000"));
    }
    if let Some(image) = &req.image {
        crate::registry::pin::ImageRef::parse(image).map_err(|e| ApiError::invalid_field("image", e))?;
    }
    let mut tx = db.begin().await?;
    let (svc, app) = store::service_for_change(&mut tx, tenant, id).await?;
    if req.replicas.is_some() && svc.mode == "global" {
        return Err(ApiError::invalid_field("replicas", "a global service runs one task per node; it cannot be scaled"));
    }
    let replicas = req.replicas.unwrap_or(svc.replicas);
    let more = replicas - svc.replicas;
    let delta = Delta {
        cpus: svc.cpu_reservation * f64::from(more),
        memory_mb: svc.memory_reservation_mb * i64::from(more),
        ..Default::default()
    };
    quota::reserve(&mut tx, tenant, delta).await?;
    let row: store::ServiceRow = sqlx::query_as(&format!(
        "UPDATE services SET replicas = $2, image = coalesce($3, image), status = 'updating', updated_at = now() WHERE id = $1
         RETURNING {}",
        store::SERVICE_COLUMNS
    ))
    .bind(id)
    .bind(replicas)
    .bind(&req.image)
    .fetch_one(&mut *tx)
    .await?;
    let payload = json!({ "service": id, "replicas": req.replicas, "image": req.image });
    let job = enqueue(&mut tx, tenant, "service.update", app.id, payload).await?;
    // The desired state changed now (the engine follows with the job): the feed says so per service.
    // It carries the service as this answer shows it (as `service.observed` does).
    let target = Target { tenant_id: Some(tenant), kind: "service", id };
    let service = row.into_dto(Some(job));
    jobs::emit(&mut tx, &target, "service.updated", json!(service)).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(service)))
}

/// Restarts every task of a service (a forced rolling update, `docker service update --force`).
#[utoipa::path(post, path = "/api/v1/services/{id}/restart", tag = "applications", params(("id" = Uuid, Path)),
    responses((status = 202, body = Service), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn restart_service(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<Service>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("service.restart", "service", id);
    let mut tx = db.begin().await?;
    let (svc, app) = store::service_for_change(&mut tx, tenant, id).await?;
    let job = enqueue(&mut tx, tenant, "service.restart", app.id, json!({ "service": id })).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(svc.into_dto(Some(job)))))
}

/// The service's tasks and their containers, as last observed on the cluster.
#[utoipa::path(get, path = "/api/v1/services/{id}/containers", tag = "applications", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Container>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn list_containers(
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Container>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    store::load_service(&mut db, tenant, id, false).await?;
    let rows = store::containers_page(&mut db, tenant, id, q.after::<Uuid>()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.id, Into::into)))
}

// ------------------------------------------------------------------------------------ admission policy

/// A tenant's admission policy: what its Compose files may ask of the nodes (platform admins only).
#[utoipa::path(get, path = "/api/v1/admin/tenants/{id}/admission-policy", tag = "admin", params(("id" = Uuid, Path)),
    responses((status = 200, body = AdmissionPolicy), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_policy(
    State(state): State<AppState>,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<AdmissionPolicy>> {
    me.require_platform_admin()?;
    let mut conn = state.system.acquire().await?;
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM tenants WHERE id = $1").bind(id).fetch_optional(&mut *conn).await?;
    exists.ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(Json(store::policy(&mut conn, id).await?))
}

/// Replaces a tenant's admission policy. It applies to every later deploy, update, rollback and scale;
/// what runs now is not touched.
#[utoipa::path(put, path = "/api/v1/admin/tenants/{id}/admission-policy", tag = "admin", params(("id" = Uuid, Path)), request_body = AdmissionPolicy,
    responses((status = 200, body = AdmissionPolicy), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn set_policy(
    State(state): State<AppState>,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(policy): ApiJson<AdmissionPolicy>,
) -> ApiResult<Json<AdmissionPolicy>> {
    me.require_platform_admin()?;
    audit.record("tenant.admission_policy.set", "tenant", id);
    audit.tenant(id);
    if !(4..=1_048_576).contains(&policy.default_memory_limit_mb) {
        return Err(ApiError::invalid_field("default_memory_limit_mb", "must be between 4 and 1048576"));
    }
    for (i, cap) in policy.allowed_capabilities.iter().enumerate() {
        let name = cap.strip_prefix("CAP_").unwrap_or(cap);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            return Err(ApiError::invalid_field(
                &format!("allowed_capabilities[{i}]"),
                "must be a capability name such as CAP_NET_ADMIN",
            ));
        }
    }
    let updated: Option<Uuid> = sqlx::query_scalar("UPDATE tenants SET admission_policy = $2 WHERE id = $1 RETURNING id")
        .bind(id)
        .bind(sqlx::types::Json(&policy))
        .fetch_optional(&state.system)
        .await?;
    updated.ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(Json(policy))
}

/// The caller's tenant's admission policy (read-only: platform admins set it).
#[utoipa::path(get, path = "/api/v1/admission-policy", tag = "tenant",
    responses((status = 200, body = AdmissionPolicy), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn my_policy(mut db: TenantDb, me: Principal) -> ApiResult<Json<AdmissionPolicy>> {
    let tenant = me.tenant()?;
    Ok(Json(store::policy(&mut db, tenant).await?))
}
