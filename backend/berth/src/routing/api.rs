//! `/api/v1/routes`: the routes of the caller's tenant, each with the URL it answers at and how many
//! running tasks serve it. Routes come from deploys (default domains, Compose labels).

use axum::Json;
use axum::extract::State;
use berth_types::{Page, Problem, Route};
use uuid::Uuid;

use super::store::{self, Filter};
use crate::api::extract::{ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::ApiResult;
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
