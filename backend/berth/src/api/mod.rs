//! The REST API: every route in one place, the OpenAPI document generated from the handlers, and the
//! middleware stack that every request passes through.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::applications::api as applications;
use crate::applications::{gallery, templates};
use crate::console::Console;
use crate::error::ApiError;
use crate::state::AppState;

pub mod audit;
pub mod auth;
pub mod clusters;
pub mod events;
pub mod extract;
pub mod headers;
pub mod idempotency;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod registries;
pub mod session;
pub mod tenants;
pub mod tokens;
pub mod users;

/// Every documented route. Handlers that share a path must share a `routes!` call.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(session::start_session, session::end_session))
        .routes(routes!(session::renew_session))
        .routes(routes!(tenants::create, tenants::list))
        .routes(routes!(tenants::get, tenants::delete))
        .routes(routes!(tenants::suspend))
        .routes(routes!(tenants::resume))
        .routes(routes!(tenants::set_quotas, tenants::get_quotas))
        .routes(routes!(tenants::my_quotas))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(clusters::create, clusters::list))
        .routes(routes!(clusters::get, clusters::update, clusters::delete))
        .routes(routes!(clusters::list_nodes))
        .routes(routes!(clusters::get_node, clusters::update_node))
        .routes(routes!(clusters::restart_node))
        .routes(routes!(clusters::credentials))
        .routes(routes!(templates::create, templates::list))
        .routes(routes!(templates::get, templates::update, templates::delete))
        .routes(routes!(templates::versions))
        .routes(routes!(templates::version))
        .routes(routes!(templates::diff))
        .routes(routes!(templates::import_dab))
        .routes(routes!(templates::check_compose))
        .routes(routes!(gallery::list_gallery))
        .routes(routes!(gallery::get_gallery))
        .routes(routes!(registries::create, registries::list))
        .routes(routes!(registries::get, registries::delete))
        .routes(routes!(registries::repositories))
        .routes(routes!(registries::tags))
        .routes(routes!(crate::registry::api::list))
        .routes(routes!(crate::registry::api::import))
        .routes(routes!(crate::registry::api::delete_repository))
        .routes(routes!(crate::registry::api::delete_tag))
        .routes(routes!(crate::registry::api::set_retention, crate::registry::api::delete_retention))
        .routes(routes!(crate::registry::api::maintain))
        .routes(routes!(crate::registry::api::resolve))
        .routes(routes!(crate::registry::api::cluster_credential))
        .routes(routes!(crate::registry::api::rotate_cluster_credential))
        .routes(routes!(applications::create, applications::list))
        .routes(routes!(applications::preview))
        .routes(routes!(applications::get, applications::update, applications::delete))
        .routes(routes!(applications::rollback))
        .routes(routes!(applications::revisions))
        .routes(routes!(applications::list_services))
        .routes(routes!(applications::get_service, applications::update_service))
        .routes(routes!(applications::restart_service))
        .routes(routes!(applications::list_containers))
        .routes(routes!(crate::applications::logs::service_logs))
        .routes(routes!(crate::applications::logs::container_logs))
        .routes(routes!(applications::get_policy, applications::set_policy))
        .routes(routes!(applications::my_policy))
        .routes(routes!(crate::routing::api::list, crate::routing::api::create))
        .routes(routes!(crate::routing::api::get, crate::routing::api::update, crate::routing::api::delete))
        .routes(routes!(crate::routing::api::list_routers))
        .routes(routes!(crate::custom_domains::api::list_domains, crate::custom_domains::api::claim_domain))
        .routes(routes!(crate::custom_domains::api::verify_domain))
        .routes(routes!(crate::custom_domains::api::delete_domain))
        .routes(routes!(crate::custom_domains::api::tenant_domains, crate::custom_domains::api::grant_domain))
        .routes(routes!(crate::custom_domains::api::revoke_domain))
        .routes(routes!(crate::releases::api::list, crate::releases::api::create))
        .routes(routes!(crate::releases::api::get, crate::releases::api::update))
        .routes(routes!(crate::releases::api::promote))
        .routes(routes!(crate::releases::api::abort))
        .routes(routes!(crate::certificates::api::list, crate::certificates::api::create))
        .routes(routes!(crate::certificates::api::get, crate::certificates::api::delete))
        .routes(routes!(crate::certificates::api::renew))
        .routes(routes!(crate::balancers::api::list, crate::balancers::api::create))
        .routes(routes!(crate::balancers::api::get, crate::balancers::api::delete))
        .routes(routes!(crate::balancers::api::set_listeners))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(events::stream))
        .routes(routes!(events::recent))
        .routes(routes!(audit::list))
}

/// The OpenAPI document, as `berth openapi` prints it and `/api/openapi.json` serves it.
pub fn openapi() -> serde_json::Value {
    openapi::complete(routes().split_for_parts().1)
}

/// The whole HTTP application.
///
/// With a built `console`, every path outside `/api/` is the console's (see [`Console::serve`]);
/// without one, `/` leads to the API docs.
pub fn router(state: AppState, console: Option<Console>) -> Router {
    let (api_routes, spec) = routes().split_for_parts();
    let spec = openapi::complete(spec);
    let request_id = HeaderName::from_static("x-request-id");
    let api_routes = match &console {
        Some(_) => api_routes,
        None => api_routes.route("/", get(|| async { Redirect::temporary("/api/docs/") })),
    };

    api_routes
        .fallback(move |req: Request<axum::body::Body>| async move { Console::serve(console.as_ref(), req).await })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "this route does not accept that method")
                .into_response()
        })
        // Layers run outside-in in reverse order of these calls: the idempotency check sits innermost,
        // around the handler; outside it the caller is authenticated once and the rest of the request is
        // scoped to the caller's tenant; the audit entry is written after all of it (replays included).
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::middleware))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::principal::middleware))
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::middleware))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::middleware))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
        .merge(SwaggerUi::new("/api/docs").external_urls_from_iter_unchecked([("/api/openapi.json", spec)]))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request<_>| {
                            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                        })
                        .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(axum::middleware::from_fn(headers::middleware))
                .layer(CatchPanicLayer::custom(|_| panic_response())),
        )
        .layer(axum::middleware::from_fn(run_to_completion))
}

/// Runs each request to its end in a task of its own, even when the client goes away meanwhile.
///
/// The server drops a request's future when its connection closes. Dropped in the middle of a
/// database transaction (between `BEGIN` and the answer to `COMMIT`), it could hand its pooled
/// connection back still inside that transaction, holding row locks that then stall every other user
/// of those rows — seen when a load generator cut 16 logins off at once. A request that has started
/// therefore finishes: its writes commit or roll back, its audit entry is written, and only the
/// response is lost. (A streaming body, such as the event stream, is not part of this: it ends with
/// its connection.)
pub async fn run_to_completion(req: Request<axum::body::Body>, next: Next) -> Response {
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(_) => panic_response(),
    }
}

fn panic_response() -> Response {
    ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
}

/// How long graceful shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
