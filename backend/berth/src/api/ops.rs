//! Probes and metrics for operators: liveness, readiness, Prometheus exposition.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Liveness: the process serves requests. Touches nothing else, so it is also the ceiling the
/// benchmark compares the API against.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers and every migration this binary knows is applied.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Ready", body = String), (status = 503, description = "Not ready", body = String)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match crate::db::migrations_done(&state.system).await {
        Ok(true) => (StatusCode::OK, "ready").into_response(),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// Prometheus text exposition: request counts and latency histograms, job queue depth by state.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    state.metrics.render(&mut out);
    out.push_str("# HELP berth_jobs Jobs in the queue, by state.\n# TYPE berth_jobs gauge\n");
    let counts: Result<Vec<(String, i64)>, _> = sqlx::query_as(
        "SELECT s.state, count(j.id) FROM unnest(ARRAY['queued','running','failed']) AS s(state)
           LEFT JOIN jobs j ON j.state = s.state GROUP BY s.state ORDER BY s.state",
    )
    .fetch_all(&state.system)
    .await;
    match counts {
        Ok(rows) => {
            for (s, n) in rows {
                let _ = writeln!(out, "berth_jobs{{state=\"{s}\"}} {n}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not count jobs for /metrics"),
    }
    routes_traffic(&state, &mut out).await;
    balancers_traffic(&state, &mut out).await;
    routers(&state, &mut out).await;
    let pool = &state.system;
    let _ = writeln!(out, "# HELP berth_db_connections Database pool connections.\n# TYPE berth_db_connections gauge");
    let _ = writeln!(out, "berth_db_connections{{state=\"open\"}} {}", pool.size());
    let _ = writeln!(out, "berth_db_connections{{state=\"idle\"}} {}", pool.num_idle());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// How many routers serve, fail to apply the newest route table, or are gone (seen in the last day).
async fn routers(state: &AppState, out: &mut String) {
    let routers = match crate::routing::applied::list(&state.system).await {
        Ok(routers) => routers,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the routers for /metrics");
            return;
        }
    };
    let _ = writeln!(out, "# HELP berth_routers Routers seen in the last day, by state.\n# TYPE berth_routers gauge");
    for s in berth_types::RouterState::ALL {
        let _ = writeln!(out, "berth_routers{{state=\"{s}\"}} {}", routers.iter().filter(|r| r.state == *s).count());
    }
}

/// Per-route traffic through every router (`route_traffic`), as counters and gauges.
async fn routes_traffic(state: &AppState, out: &mut String) {
    type Row = (uuid::Uuid, String, String, i64, i64, i64, f64, i32);
    let rows: Result<Vec<Row>, _> = sqlx::query_as(
        "SELECT r.id, r.domain, r.path_prefix, sum(t.requests)::int8, sum(t.responses_5xx)::int8, sum(t.failed_connections)::int8,
                coalesce(sum(t.requests_per_sec) FILTER (WHERE t.updated_at > now() - interval '30 seconds'), 0)::float8,
                coalesce(max(t.response_ms) FILTER (WHERE t.updated_at > now() - interval '30 seconds'), 0)::int4
           FROM route_traffic t JOIN routes r ON r.id = t.route_id
          GROUP BY r.id, r.domain, r.path_prefix ORDER BY r.id",
    )
    .fetch_all(&state.system)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "could not read route traffic for /metrics");
            return;
        }
    };
    let families = [
        ("berth_route_requests_total", "counter", "Requests through the routers, per route."),
        ("berth_route_responses_5xx_total", "counter", "5xx answers, per route."),
        (
            "berth_route_failed_connections_total",
            "counter",
            "Failed connections to tasks (retried elsewhere where possible), per route.",
        ),
        ("berth_route_requests_per_second", "gauge", "Requests per second over the routers' last interval, per route."),
        ("berth_route_response_milliseconds", "gauge", "Average response time over the route's last 1024 requests."),
    ];
    write_families(
        out,
        &families,
        &rows,
        |(id, domain, path, ..)| format!("route=\"{id}\",domain=\"{}\",path=\"{}\"", label(domain), label(path)),
        |i, (_, _, _, requests, errors, failed, rate, ms)| match i {
            0 => requests.to_string(),
            1 => errors.to_string(),
            2 => failed.to_string(),
            3 => format!("{rate:.3}"),
            _ => ms.to_string(),
        },
    );
}

/// Writes metric families (name, type, help): a line per row in each, with the row's labels and the
/// family's value (by the family's index).
/// A label value as the Prometheus text format needs it: backslash, double quote and newline escaped.
/// (Domains, paths and names are validated on the way in; a scrape must parse whatever they become.)
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn write_families<R>(
    out: &mut String,
    families: &[(&str, &str, &str)],
    rows: &[R],
    labels: impl Fn(&R) -> String,
    value: impl Fn(usize, &R) -> String,
) {
    for (i, (name, kind, help)) in families.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for row in rows {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(row), value(i, row));
        }
    }
}

/// Per-listener traffic of the load balancers through every router (`balancer_traffic`).
async fn balancers_traffic(state: &AppState, out: &mut String) {
    type Row = (uuid::Uuid, String, i32, i64, i64, i64, f64);
    let rows: Result<Vec<Row>, _> = sqlx::query_as(
        "SELECT b.id, b.name, t.port, sum(t.requests)::int8, sum(t.responses_5xx)::int8, sum(t.failed_connections)::int8,
                coalesce(sum(t.requests_per_sec) FILTER (WHERE t.updated_at > now() - interval '30 seconds'), 0)::float8
           FROM balancer_traffic t JOIN load_balancers b ON b.id = t.load_balancer_id
          GROUP BY b.id, b.name, t.port ORDER BY b.id, t.port",
    )
    .fetch_all(&state.system)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "could not read load balancer traffic for /metrics");
            return;
        }
    };
    let families = [
        (
            "berth_balancer_requests_total",
            "counter",
            "Requests (connections on tcp listeners) through the routers, per load balancer listener.",
        ),
        ("berth_balancer_responses_5xx_total", "counter", "5xx answers, per http load balancer listener."),
        ("berth_balancer_failed_connections_total", "counter", "Failed connections to tasks, per load balancer listener."),
        (
            "berth_balancer_requests_per_second",
            "gauge",
            "Requests (connections) per second over the routers' last interval, per listener.",
        ),
    ];
    write_families(
        out,
        &families,
        &rows,
        |(id, balancer, port, ..)| format!("load_balancer=\"{id}\",name=\"{}\",port=\"{port}\"", label(balancer)),
        |i, (_, _, _, requests, errors, failed, rate)| match i {
            0 => requests.to_string(),
            1 => errors.to_string(),
            2 => failed.to_string(),
            _ => format!("{rate:.3}"),
        },
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped_as_the_text_format_requires() {
        assert_eq!(super::label("shop.example"), "shop.example");
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
