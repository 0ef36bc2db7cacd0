//! `/api/v1/load-balancers`: a tenant's load balancers and their listeners. Listeners are set
//! whole (declaratively); the routers follow within milliseconds.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{ClusterStatus, CreateLoadBalancer, LoadBalancer, Page, Problem, Role, SetListeners};
use serde_json::json;
use uuid::Uuid;

use super::store;
use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, Target};
use crate::state::AppState;

/// Makes a load balancer on one of the tenant's clusters, with its listeners (if any): each a port
/// in the operator's range (`BERTH_LB_PORTS`) on the balancer's address, forwarding `http` requests
/// or `tcp` connections to a target port of a service on that cluster.
#[utoipa::path(post, path = "/api/v1/load-balancers", tag = "load_balancers", request_body = CreateLoadBalancer,
    responses((status = 201, body = LoadBalancer), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateLoadBalancer>,
) -> ApiResult<(StatusCode, Json<LoadBalancer>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    crate::domain::validate::dns_name("name", &req.name)?;
    let mut tx = db.begin().await?;
    let cluster = crate::clusters::store::load(&mut tx, tenant, req.cluster_id, false).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND { ApiError::invalid_field("cluster_id", "no such cluster") } else { e }
    })?;
    if cluster.status == ClusterStatus::Deleting {
        return Err(ApiError::conflict("cluster-deleting", "the cluster is being deleted"));
    }
    store::check(&mut tx, tenant, cluster.id, &req.listeners, &state.routing).await?;
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO load_balancers (id, tenant_id, cluster_id, name) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant)
        .bind(cluster.id)
        .bind(&req.name)
        .execute(&mut *tx)
        .await
        .map_err(|e| ApiError::or_name_taken(e, "load balancer"))?;
    store::set_listeners(&mut tx, tenant, id, &req.listeners).await?;
    let target = Target { tenant_id: Some(tenant), kind: "load_balancer", id };
    jobs::emit(&mut tx, &target, "load_balancer.created", json!({ "name": req.name, "listeners": req.listeners.len() })).await?;
    let row = store::load(&mut tx, tenant, id, false).await?;
    let dto = store::to_dto(&mut tx, row, &state.routing).await?;
    tx.commit().await?;
    audit.record("load_balancer.create", "load_balancer", id);
    Ok((StatusCode::CREATED, Json(dto)))
}

#[utoipa::path(get, path = "/api/v1/load-balancers", tag = "load_balancers", params(PageParams),
    responses((status = 200, body = Page<LoadBalancer>), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<LoadBalancer>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let rows = store::page(&mut db, tenant, q.after::<Uuid>()?, limit + 1).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(store::to_dto(&mut db, row, &state.routing).await?);
    }
    Ok(Json(page(items, limit, |b| b.id, |b| b)))
}

#[utoipa::path(get, path = "/api/v1/load-balancers/{id}", tag = "load_balancers", params(("id" = Uuid, Path)),
    responses((status = 200, body = LoadBalancer), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<LoadBalancer>> {
    let tenant = me.tenant()?;
    let row = store::load(&mut db, tenant, id, false).await?;
    Ok(Json(store::to_dto(&mut db, row, &state.routing).await?))
}

/// Sets the balancer's listeners, all of them: listeners not given are removed (their ports close),
/// new ones open, changed ones follow.
#[utoipa::path(put, path = "/api/v1/load-balancers/{id}/listeners", tag = "load_balancers", params(("id" = Uuid, Path)), request_body = SetListeners,
    responses((status = 200, body = LoadBalancer), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn set_listeners(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SetListeners>,
) -> ApiResult<Json<LoadBalancer>> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("load_balancer.update", "load_balancer", id);
    let mut tx = db.begin().await?;
    let row = store::load(&mut tx, tenant, id, true).await?;
    store::check(&mut tx, tenant, row.cluster_id, &req.listeners, &state.routing).await?;
    store::set_listeners(&mut tx, tenant, id, &req.listeners).await?;
    let target = Target { tenant_id: Some(tenant), kind: "load_balancer", id };
    jobs::emit(&mut tx, &target, "load_balancer.updated", json!({ "listeners": req.listeners.len() })).await?;
    let row = store::load(&mut tx, tenant, id, false).await?;
    let dto = store::to_dto(&mut tx, row, &state.routing).await?;
    tx.commit().await?;
    Ok(Json(dto))
}

/// Removes a load balancer: its ports close on every router.
#[utoipa::path(delete, path = "/api/v1/load-balancers/{id}", tag = "load_balancers", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(mut db: TenantDb, me: Principal, audit: Audit, ApiPath(id): ApiPath<Uuid>) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("load_balancer.delete", "load_balancer", id);
    let mut tx = db.begin().await?;
    let row = store::load(&mut tx, tenant, id, true).await?;
    sqlx::query("DELETE FROM load_balancers WHERE id = $1").bind(id).execute(&mut *tx).await?;
    let target = Target { tenant_id: Some(tenant), kind: "load_balancer", id };
    jobs::emit(&mut tx, &target, "load_balancer.deleted", json!({ "name": row.name })).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
