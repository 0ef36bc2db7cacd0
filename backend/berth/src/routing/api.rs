//! `/api/v1/routes`: the routes of the caller's tenant, each with the URL it answers at and how many
//! running tasks serve it. Routes come from deploys (default domains, Compose labels) and from
//! integrators (custom domains, routed once the tenant holds the domain: see `custom_domains`). And
//! `/api/v1/admin/routers`: the routers at work, for platform admins.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{CreateRoute, Page, Problem, Role, Route, RouteOptions, Router};
use uuid::Uuid;

use super::declare;
use super::store::{self, Filter, NewRoute, Options};
use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Which routes to list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RouteParams {
    /// Items per page, 1–500 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (of the same filters).
    pub cursor: Option<String>,
    /// Only the routes of this application's services.
    pub application_id: Option<Uuid>,
    /// Only the routes of this service.
    pub service_id: Option<Uuid>,
    /// Only the routes of this domain.
    pub domain: Option<String>,
}

/// The tenant's routes, oldest first.
#[utoipa::path(get, path = "/api/v1/routes", tag = "routes", params(RouteParams),
    responses((status = 200, body = Page<Route>), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiQuery(q): ApiQuery<RouteParams>,
) -> ApiResult<Json<Page<Route>>> {
    let tenant = me.tenant()?;
    let paging = PageParams { limit: q.limit, cursor: q.cursor };
    let limit = paging.limit()?;
    let filter =
        Filter { application: q.application_id, service: q.service_id, domain: q.domain.map(|d| d.to_ascii_lowercase()) };
    let rows = store::page(&mut db, tenant, &filter, paging.after::<Uuid>()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| r.into_dto(&state.routing))))
}

#[utoipa::path(get, path = "/api/v1/routes/{id}", tag = "routes", params(("id" = Uuid, Path)),
    responses((status = 200, body = Route), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Route>> {
    let tenant = me.tenant()?;
    Ok(Json(store::load(&mut db, tenant, id).await?.into_dto(&state.routing)))
}

/// Routes a custom domain (and path) to one of the ports a service exposes. The route is stored at
/// once and routed once a grant covers its domain (`verified`).
#[utoipa::path(post, path = "/api/v1/routes", tag = "routes", request_body = CreateRoute,
    responses((status = 201, body = Route), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateRoute>,
) -> ApiResult<(StatusCode, Json<Route>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    let domain =
        declare::custom_domain(&req.domain, &state.routing.apps_domain).map_err(|why| ApiError::invalid_field("domain", why))?;
    let path_prefix = declare::check_path(req.path_prefix.as_deref().unwrap_or("/"))
        .map_err(|why| ApiError::invalid_field("path_prefix", why))?;
    let options = Options::default().with(&req.options())?;
    let mut tx = db.begin().await?;
    let service: Option<(Vec<i32>, String, String, bool)> = sqlx::query_as(
        "SELECT s.exposed_ports, s.name, a.status, s.release_id IS NOT NULL FROM services s JOIN applications a ON a.id = s.application_id
          WHERE s.tenant_id = $1 AND s.id = $2 FOR UPDATE OF a",
    )
    .bind(tenant)
    .bind(req.service_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (exposed, name, status, copy) = service.ok_or_else(|| ApiError::invalid_field("service_id", "no such service"))?;
    if copy {
        return Err(ApiError::invalid_field(
            "service_id",
            "this is a release's copy of a service: route the service itself, and the release shares its routes",
        ));
    }
    if status == "deleting" {
        return Err(ApiError::conflict("application-deleting", "the application is being deleted"));
    }
    if !exposed.contains(&req.port) {
        let ports = if exposed.is_empty() {
            "none: add `ports` or a `berth.routing.port_<N>` label to its Compose file".to_owned()
        } else {
            exposed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        return Err(ApiError::invalid_field(
            "port",
            format!("service `{name}` does not expose port {} (it exposes: {ports})", req.port),
        ));
    }
    let new = NewRoute { service: req.service_id, port: req.port, domain: &domain, path_prefix: &path_prefix, options: &options };
    let id = store::insert(&mut tx, tenant, &new).await?;
    let row = store::load(&mut tx, tenant, id).await?;
    tx.commit().await?;
    audit.record("route.create", "route", id);
    Ok((StatusCode::CREATED, Json(row.into_dto(&state.routing))))
}

/// Changes how a route balances and limits requests (any route, including default and declared ones;
/// a redeploy keeps them).
#[utoipa::path(patch, path = "/api/v1/routes/{id}", tag = "routes", params(("id" = Uuid, Path)), request_body = RouteOptions,
    responses((status = 200, body = Route), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<RouteOptions>,
) -> ApiResult<Json<Route>> {
    let tenant = me.tenant_with(Role::Developer)?;
    let mut tx = db.begin().await?;
    let row = store::load(&mut tx, tenant, id).await?;
    let options = row.options().with(&req)?;
    store::set_options(&mut tx, id, &options).await?;
    let row = store::load(&mut tx, tenant, id).await?;
    tx.commit().await?;
    audit.record("route.update", "route", id);
    Ok(Json(row.into_dto(&state.routing)))
}

/// Removes a route made through the API. Default and declared routes belong to the Compose file (409).
#[utoipa::path(delete, path = "/api/v1/routes/{id}", tag = "routes", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(mut db: TenantDb, me: Principal, audit: Audit, ApiPath(id): ApiPath<Uuid>) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Developer)?;
    let mut tx = db.begin().await?;
    let row = store::load(&mut tx, tenant, id).await?;
    if row.source != "api" {
        return Err(ApiError::conflict(
            "route-declared",
            format!("this route comes from the application's Compose file ({}): change the file to remove it", row.source),
        ));
    }
    sqlx::query("DELETE FROM routes WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    audit.record("route.delete", "route", id);
    Ok(StatusCode::NO_CONTENT)
}

/// Every router seen in the last day, by name: whether each serves the newest route table, keeps an
/// older one because the newest could not be applied (and why), or is gone.
#[utoipa::path(get, path = "/api/v1/admin/routers", tag = "admin",
    responses((status = 200, body = Vec<Router>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_routers(State(state): State<AppState>, me: Principal) -> ApiResult<Json<Vec<Router>>> {
    me.require_platform_admin()?;
    Ok(Json(super::applied::list(&state.system).await?))
}
