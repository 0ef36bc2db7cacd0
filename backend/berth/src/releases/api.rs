//! `/api/v1/applications/{id}/releases` and `/api/v1/releases/{id}`: start a canary or blue/green
//! release, change its weight, promote or abort it. Thin over [`super::store`]; the engine work is
//! [`super::jobs`]'.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{
    ApplicationStatus, AutoAbort, CreateRelease, Page, Problem, Release, ReleaseState, ReleaseStrategy, Role, UpdateRelease,
};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::copies;
use super::store::{self, ReleaseRow};
use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::applications::api::{Text, changed_source, prepare, refuse_while_released};
use crate::applications::store as apps;
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::domain::quota::{self, Delta};
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, Target};
use crate::state::AppState;

/// The weight a release starts at when none is given.
fn default_weight(strategy: ReleaseStrategy) -> i32 {
    match strategy {
        ReleaseStrategy::Canary => 10,
        ReleaseStrategy::BlueGreen => 0,
    }
}

fn check_weight(strategy: ReleaseStrategy, weight: i32) -> ApiResult<()> {
    if !(0..=100).contains(&weight) {
        return Err(ApiError::invalid_field("weight", "must be a percentage, 0 to 100"));
    }
    if strategy == ReleaseStrategy::BlueGreen && weight != 0 && weight != 100 {
        return Err(ApiError::invalid_field("weight", "a blue/green release sends all traffic or none: 0 or 100"));
    }
    Ok(())
}

fn check_auto_abort(a: &AutoAbort) -> ApiResult<()> {
    if !(0.0..=1.0).contains(&a.max_error_rate) || a.max_error_rate.is_nan() {
        return Err(ApiError::invalid_field("auto_abort.max_error_rate", "must be a fraction, 0 to 1 (0.05 is 5%)"));
    }
    if !(5..=3600).contains(&a.window_secs) {
        return Err(ApiError::invalid_field("auto_abort.window_secs", "must be 5 to 3600 seconds"));
    }
    if !(1..=1_000_000).contains(&a.min_requests) {
        return Err(ApiError::invalid_field("auto_abort.min_requests", "must be 1 to 1000000"));
    }
    Ok(())
}

/// Queues a release job on its application (so it runs in order with the application's other jobs).
async fn enqueue(tx: &mut PgConnection, row: &ReleaseRow, kind: &str) -> ApiResult<Uuid> {
    crate::applications::api::enqueue(tx, row.tenant_id, kind, row.application_id, json!({ "release": row.id })).await
}

/// Records a release's change on the tenant's event stream.
pub async fn emit(tx: &mut PgConnection, row: &ReleaseRow, kind: &str, data: serde_json::Value) -> sqlx::Result<()> {
    let target = Target { tenant_id: Some(row.tenant_id), kind: "release", id: row.id };
    let mut data = data;
    data["application_id"] = json!(row.application_id);
    jobs::emit(tx, &target, kind, data).await
}

/// Starts a release: the services the new revision changes run beside the application's (copies, in
/// the engine stack `<application>_r<revision>`), and every route of those services sends them
/// `weight` percent of its requests. The application must have deployed its current revision, and
/// have no other open release; the copies' reservations count against the tenant's quotas.
#[utoipa::path(post, path = "/api/v1/applications/{id}/releases", tag = "releases", params(("id" = Uuid, Path)),
    request_body = CreateRelease,
    responses((status = 202, body = Release), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<CreateRelease>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("release.create", "application", id);
    let strategy = req.strategy.unwrap_or(ReleaseStrategy::Canary);
    let weight = req.weight.unwrap_or(default_weight(strategy));
    check_weight(strategy, weight)?;
    if let Some(a) = &req.auto_abort {
        check_auto_abort(a)?;
    }
    let new_source = req.template_version.is_some() || req.compose.is_some() || req.files.is_some() || req.variables.is_some();
    if req.revision.is_some() && new_source {
        return Err(ApiError::invalid_field("revision", "give the revision to release or what changes, not both"));
    }
    if req.revision.is_none() && !new_source {
        return Err(ApiError::invalid_field(
            "revision",
            "give the revision to release, or what changes (template_version, compose, files or variables)",
        ));
    }

    let mut tx = db.begin().await?;
    let app = apps::load_app(&mut tx, tenant, id, true).await?;
    if app.status == ApplicationStatus::Deleting {
        return Err(ApiError::conflict("application-deleting", "the application is being deleted"));
    }
    if app.deployed_revision != Some(app.current_revision) {
        return Err(ApiError::conflict(
            "application-deploying",
            format!("revision {} is still being deployed: release once it is", app.current_revision),
        ));
    }
    refuse_while_released(&mut tx, app.id).await?;
    let current = apps::revision(&mut tx, app.id, app.current_revision).await?.ok_or_else(|| ApiError::not_found("revision"))?;
    let current_text = Text {
        template_id: current.template_id,
        template_version: current.template_version,
        compose: current.compose.clone(),
        files: current.files.0.clone(),
    };
    // The revision released: an existing one (its pinned images with it), or a new one.
    let (existing, text, variables, images) = match req.revision {
        Some(n) => {
            if n == app.current_revision {
                return Err(ApiError::invalid_field("revision", "is the revision the application runs"));
            }
            let old = apps::revision(&mut tx, app.id, n)
                .await?
                .ok_or_else(|| ApiError::invalid_field("revision", "no such revision"))?;
            let text = Text {
                template_id: old.template_id,
                template_version: old.template_version,
                compose: old.compose,
                files: old.files.0,
            };
            (Some(n), text, old.variables.0, old.images.0)
        }
        None => {
            let text = changed_source(&mut tx, tenant, &current, req.template_version, req.compose, req.files).await?;
            (None, text, req.variables.unwrap_or(current.variables.0.clone()), BTreeMap::new())
        }
    };
    let from = prepare(&mut tx, tenant, app.cluster_id, &app.name, &current_text, &current.variables.0, &state).await?;
    let to = prepare(&mut tx, tenant, app.cluster_id, &app.name, &text, &variables, &state).await?;
    let changed = copies::changed(&app.name, &from.loaded.project, &to.loaded.project);
    if changed.is_empty() {
        return Err(ApiError::invalid_field("revision", "the revision changes no service: there is nothing to release"));
    }
    let to_revision = match existing {
        Some(n) => n,
        None => apps::next_revision(&mut tx, app.id).await?,
    };
    let stack = copies::stack_name(&app.name, to_revision);
    let prefix = format!("{}_", stack.strip_prefix(&format!("{}_", app.name)).unwrap_or_default());
    let own_names = from.loaded.project.services.keys().chain(to.loaded.project.services.keys());
    if let Some(clash) =
        own_names.into_iter().find(|s| s.strip_prefix(&prefix).is_some_and(|rest| changed.iter().any(|c| c == rest)))
    {
        return Err(ApiError::invalid_field(
            &format!("compose.services.{clash}"),
            format!(
                "on the engine this service is named like the release's copy `{stack}_{}`: rename it",
                &clash[prefix.len()..]
            ),
        ));
    }
    if let Some(long) = changed.iter().find(|s| stack.len() + 1 + s.len() > 63) {
        return Err(ApiError::invalid_field(
            &format!("compose.services.{long}"),
            format!(
                "the release's copy `{stack}_{long}` is longer than Swarm's 63 characters: shorten the service or application name"
            ),
        ));
    }
    let plans: Vec<&apps::ServicePlan> = to.plans.iter().filter(|p| changed.contains(&p.name)).collect();
    let (cpus, memory_mb) = apps::totals(plans.iter().copied());
    let delta = Delta { services: plans.len() as i64, cpus, memory_mb, ..Default::default() };
    quota::reserve(&mut tx, tenant, delta).await?;
    if existing.is_none() {
        let new = apps::NewRevision {
            template_id: text.template_id,
            template_version: text.template_version,
            compose: &text.compose,
            files: &text.files,
            variables: &variables,
            images,
            warnings: &to.loaded.warnings,
        };
        apps::insert_revision(&mut tx, tenant, app.id, to_revision, &new, me.user_id()).await?;
    }
    let release_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO releases (id, tenant_id, application_id, from_revision, to_revision, strategy, weight, auto_abort, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(release_id)
    .bind(tenant)
    .bind(app.id)
    .bind(app.current_revision)
    .bind(to_revision)
    .bind(strategy.as_str())
    .bind(weight)
    .bind(req.auto_abort.map(sqlx::types::Json))
    .bind(me.user_id())
    .execute(&mut *tx)
    .await?;
    let row = store::load(&mut tx, tenant, release_id, false).await?;
    store::write_copies(&mut tx, &row, &stack, &plans).await?;
    let job = enqueue(&mut tx, &row, "release.start").await?;
    emit(
        &mut tx,
        &row,
        "release.created",
        json!({ "strategy": strategy, "weight": weight, "to_revision": to_revision, "services": changed }),
    )
    .await?;
    let dto = store::to_dto(&mut tx, row, Some(job)).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(dto)))
}

/// The application's releases, oldest first.
#[utoipa::path(get, path = "/api/v1/applications/{id}/releases", tag = "releases", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Release>), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Release>>> {
    let tenant = me.tenant()?;
    apps::load_app(&mut db, tenant, id, false).await?;
    let limit = q.limit()?;
    let rows = store::page(&mut db, tenant, id, q.after::<Uuid>()?, limit + 1).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(store::to_dto(&mut db, row, None).await?);
    }
    Ok(Json(page(items, limit, |r| r.id, |r| r)))
}

#[utoipa::path(get, path = "/api/v1/releases/{id}", tag = "releases", params(("id" = Uuid, Path)),
    responses((status = 200, body = Release), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(mut db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Release>> {
    let tenant = me.tenant()?;
    let row = store::load(&mut db, tenant, id, false).await?;
    Ok(Json(store::to_dto(&mut db, row, None).await?))
}

/// Refuses a change to a release that is finishing or finished.
fn changeable(row: &ReleaseRow) -> ApiResult<()> {
    match row.state {
        ReleaseState::Starting | ReleaseState::Running | ReleaseState::Failed => Ok(()),
        ReleaseState::Promoting | ReleaseState::Aborting => {
            Err(ApiError::conflict("release-finishing", format!("the release is {}", row.state.as_str())))
        }
        ReleaseState::Promoted | ReleaseState::Aborted => {
            Err(ApiError::conflict("release-finished", format!("the release was {}", row.state.as_str())))
        }
    }
}

/// Changes the share of requests the new revision gets (live: routers change their servers'
/// weights, no connection is dropped), and the automatic abort.
#[utoipa::path(patch, path = "/api/v1/releases/{id}", tag = "releases", params(("id" = Uuid, Path)), request_body = UpdateRelease,
    responses((status = 200, body = Release), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn update(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateRelease>,
) -> ApiResult<Json<Release>> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("release.update", "release", id);
    let mut tx = db.begin().await?;
    let row = store::load(&mut tx, tenant, id, true).await?;
    if let Some(weight) = req.weight {
        check_weight(row.strategy, weight)?;
    }
    if let Some(Some(a)) = &req.auto_abort {
        check_auto_abort(a)?;
    }
    changeable(&row)?;
    if let Some(weight) = req.weight
        && weight != row.weight
    {
        store::set_weight(&mut tx, id, weight).await?;
        emit(&mut tx, &row, "release.weight", json!({ "from": row.weight, "to": weight })).await?;
    }
    if let Some(auto) = req.auto_abort {
        sqlx::query("UPDATE releases SET auto_abort = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(auto.map(sqlx::types::Json))
            .execute(&mut *tx)
            .await?;
    }
    let row = store::load(&mut tx, tenant, id, false).await?;
    let dto = store::to_dto(&mut tx, row, None).await?;
    tx.commit().await?;
    Ok(Json(dto))
}

/// Makes the new revision the application's: all requests go to the copies while the application's
/// own services are updated to the new revision in place (each following its `update_config`); once
/// they run it, requests return to them and the copies are removed.
#[utoipa::path(post, path = "/api/v1/releases/{id}/promote", tag = "releases", params(("id" = Uuid, Path)),
    responses((status = 202, body = Release), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn promote(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("release.promote", "release", id);
    let mut tx = db.begin().await?;
    // The application first, as every change to it locks it first.
    let application: Uuid = sqlx::query_scalar("SELECT application_id FROM releases WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("release"))?;
    let app = apps::load_app(&mut tx, tenant, application, true).await?;
    let row = store::load(&mut tx, tenant, id, true).await?;
    changeable(&row)?;
    if row.state != ReleaseState::Running {
        return Err(ApiError::conflict(
            "release-not-running",
            match row.state {
                ReleaseState::Failed => format!("the release failed ({}): abort it", row.message),
                _ => "the release's services are still starting".to_owned(),
            },
        ));
    }
    if app.status == ApplicationStatus::Deleting {
        return Err(ApiError::conflict("application-deleting", "the application is being deleted"));
    }
    let rev = apps::revision(&mut tx, app.id, row.to_revision).await?.ok_or_else(|| ApiError::not_found("revision"))?;
    let text =
        Text { template_id: rev.template_id, template_version: rev.template_version, compose: rev.compose, files: rev.files.0 };
    let prepared = prepare(&mut tx, tenant, app.cluster_id, &app.name, &text, &rev.variables.0, &state).await?;
    // Charged as it will be once the copies are gone (the two run side by side for the promotion).
    let (count, cpus_now, memory_now) = apps::reserved(&mut tx, app.id).await?;
    let copies: (i64, f64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(cpu_reservation * replicas), 0)::float8, coalesce(sum(memory_reservation_mb * replicas), 0)::int8
           FROM services WHERE release_id = $1",
    )
    .bind(row.id)
    .fetch_one(&mut *tx)
    .await?;
    let (cpus, memory_mb) = apps::totals(&prepared.plans);
    let delta = Delta {
        services: prepared.plans.len() as i64 - (count - copies.0),
        cpus: cpus - (cpus_now - copies.1),
        memory_mb: memory_mb - (memory_now - copies.2),
        ..Default::default()
    };
    quota::reserve(&mut tx, tenant, delta).await?;
    apps::write_services(&mut tx, tenant, app.id, &prepared.plans).await?;
    crate::routing::store::write_declared(&mut tx, tenant, app.id, &prepared.routes).await?;
    sqlx::query(
        "UPDATE applications SET current_revision = $2, template_id = $3, status = 'updating', message = '', updated_at = now() WHERE id = $1",
    )
    .bind(app.id)
    .bind(row.to_revision)
    .bind(text.template_id)
    .execute(&mut *tx)
    .await?;
    store::set_weight(&mut tx, id, 100).await?;
    store::set_state(&mut tx, id, ReleaseState::Promoting, "").await?;
    let job = enqueue(&mut tx, &row, "release.promote").await?;
    emit(&mut tx, &row, "release.promoting", json!({ "to_revision": row.to_revision })).await?;
    let row = store::load(&mut tx, tenant, id, false).await?;
    let dto = store::to_dto(&mut tx, row, Some(job)).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(dto)))
}

/// Returns all requests to the application's own services and removes the copies. The application
/// stays at the revision it ran; the released revision stays in its history.
#[utoipa::path(post, path = "/api/v1/releases/{id}/abort", tag = "releases", params(("id" = Uuid, Path)),
    responses((status = 202, body = Release), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn abort(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("release.abort", "release", id);
    let mut tx = db.begin().await?;
    let row = store::load(&mut tx, tenant, id, true).await?;
    changeable(&row)?;
    let job = begin_abort(&mut tx, &row, "").await?;
    let row = store::load(&mut tx, tenant, id, false).await?;
    let dto = store::to_dto(&mut tx, row, Some(job)).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(dto)))
}

/// Sends no more requests to the copies and queues their removal (the API's abort and the automatic
/// one).
pub async fn begin_abort(tx: &mut PgConnection, row: &ReleaseRow, why: &str) -> ApiResult<Uuid> {
    store::set_weight(tx, row.id, 0).await?;
    store::set_state(tx, row.id, ReleaseState::Aborting, why).await?;
    let job = enqueue(tx, row, "release.abort").await?;
    emit(tx, row, "release.aborting", json!({ "message": why })).await?;
    Ok(job)
}
