//! Every query on the `routes` table that requests make: the routes a revision declares, and reading
//! routes for the API.

use std::collections::BTreeSet;

use berth_types::Route;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Routing;
use super::declare::Declared;
use crate::error::{ApiError, ApiResult};

/// Whether a custom domain is covered by one of the tenant's grants (the domain or one above it).
const GRANTED: &str = "EXISTS (SELECT 1 FROM domain_grants g WHERE g.tenant_id = r.tenant_id
                               AND (r.domain = g.domain OR right(r.domain, length(g.domain) + 1) = '.' || g.domain))";

/// Makes an application's `default` and `compose` routes those of its new revision: routes that stay
/// keep their ids and options, the others go, new ones are added (default domains verified, custom
/// ones when a grant covers them). Routes to ports the revision no longer exposes go too. A domain
/// and path another application already routes is a 422 at the service.
pub async fn write_declared(tx: &mut PgConnection, tenant: Uuid, app: Uuid, routes: &[Declared]) -> ApiResult<()> {
    type Key = (String, i32, String, String, String);
    sqlx::query(
        "DELETE FROM routes r USING services s
          WHERE r.service_id = s.id AND s.application_id = $1 AND NOT (r.port = ANY(s.exposed_ports))",
    )
    .bind(app)
    .execute(&mut *tx)
    .await?;
    let existing: Vec<(Uuid, String, i32, String, String, String)> = sqlx::query_as(
        "SELECT r.id, s.name, r.port, r.domain, r.path_prefix, r.source FROM routes r JOIN services s ON s.id = r.service_id
          WHERE s.application_id = $1 AND r.source IN ('default', 'compose')",
    )
    .bind(app)
    .fetch_all(&mut *tx)
    .await?;
    let source = |r: &Declared| if r.default { "default" } else { "compose" };
    let wanted: BTreeSet<Key> = routes
        .iter()
        .map(|r| (r.service.clone(), i32::from(r.port), r.domain.clone(), r.path_prefix.clone(), source(r).to_owned()))
        .collect();
    let mut kept = BTreeSet::new();
    for (id, service, port, domain, path, source) in existing {
        let key = (service, port, domain, path, source);
        if wanted.contains(&key) {
            kept.insert(key);
        } else {
            sqlx::query("DELETE FROM routes WHERE id = $1").bind(id).execute(&mut *tx).await?;
        }
    }
    for r in routes {
        let key = (r.service.clone(), i32::from(r.port), r.domain.clone(), r.path_prefix.clone(), source(r).to_owned());
        if kept.contains(&key) {
            continue;
        }
        if !r.default {
            held_by_other(tx, tenant, &r.domain, &format!("compose.services.{}", r.service)).await?;
        }
        sqlx::query(
            "INSERT INTO routes (id, tenant_id, service_id, port, domain, path_prefix, source, verified)
             SELECT $1, $2, s.id, $4, $5, $6, $7, $8 FROM services s
              WHERE s.application_id = $3 AND s.name = $9 AND s.release_id IS NULL",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(app)
        .bind(i32::from(r.port))
        .bind(&r.domain)
        .bind(&r.path_prefix)
        .bind(source(r))
        .bind(r.default)
        .bind(&r.service)
        .execute(&mut *tx)
        .await
        .map_err(|e| taken(e, &format!("compose.services.{}", r.service), &r.domain, &r.path_prefix))?;
    }
    reverify(tx, tenant).await?;
    Ok(())
}

/// Marks each custom-domain route of a tenant verified exactly when a grant covers it.
pub async fn reverify(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "UPDATE routes r SET verified = {GRANTED}, updated_at = now()
          WHERE r.tenant_id = $1 AND r.source <> 'default' AND r.verified IS DISTINCT FROM {GRANTED}"
    ))
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// A route through the API.
pub struct NewRoute<'a> {
    pub service: Uuid,
    pub port: i32,
    pub domain: &'a str,
    pub path_prefix: &'a str,
    pub options: &'a Options,
}

/// A route's options, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub balance: String,
    pub sticky: bool,
    pub timeout_secs: i32,
    pub max_body_bytes: Option<i64>,
    pub https_redirect: bool,
    pub probe_path: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            balance: "roundrobin".into(),
            sticky: false,
            timeout_secs: 60,
            max_body_bytes: None,
            https_redirect: false,
            probe_path: None,
        }
    }
}

impl Options {
    /// These options with the given changes, or a 422 naming the field.
    pub fn with(&self, changes: &berth_types::RouteOptions) -> ApiResult<Options> {
        let mut out = self.clone();
        if let Some(b) = &changes.balance {
            if super::table::Balance::parse(b).is_none() {
                return Err(ApiError::invalid_field("balance", "must be `roundrobin`, `leastconn`, `source` or `random`"));
            }
            out.balance = b.clone();
        }
        if let Some(s) = changes.sticky {
            out.sticky = s;
        }
        if let Some(t) = changes.timeout_secs {
            if !(1..=3600).contains(&t) {
                return Err(ApiError::invalid_field("timeout_secs", "must be 1–3600 seconds"));
            }
            out.timeout_secs = t;
        }
        match changes.max_body_bytes {
            Some(0) => out.max_body_bytes = None,
            Some(n) if n < 0 => return Err(ApiError::invalid_field("max_body_bytes", "must be positive (0: no limit)")),
            Some(n) => out.max_body_bytes = Some(n),
            None => {}
        }
        if let Some(r) = changes.https_redirect {
            out.https_redirect = r;
        }
        match changes.probe_path.as_deref() {
            Some("") => out.probe_path = None,
            Some(p) if p.starts_with('/') && p.len() <= 200 && p.bytes().all(|b| b.is_ascii_graphic()) => {
                out.probe_path = Some(p.to_owned());
            }
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "probe_path",
                    "must be a path starting with `/`, at most 200 printable characters without spaces (`\"\"`: a TCP check)",
                ));
            }
            None => {}
        }
        Ok(out)
    }
}

/// A 422 at `field` when another tenant holds a grant covering the domain.
async fn held_by_other(conn: &mut PgConnection, tenant: Uuid, domain: &str, field: &str) -> ApiResult<()> {
    let held: bool =
        sqlx::query_scalar("SELECT berth_domain_held_by_other($1, $2)").bind(domain).bind(tenant).fetch_one(conn).await?;
    if held {
        return Err(ApiError::invalid_field(field, format!("`{domain}` belongs to another tenant")));
    }
    Ok(())
}

/// Inserts a route made through the API; verified when a grant covers its domain.
pub async fn insert(tx: &mut PgConnection, tenant: Uuid, new: &NewRoute<'_>) -> ApiResult<Uuid> {
    held_by_other(tx, tenant, new.domain, "domain").await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO routes (id, tenant_id, service_id, port, domain, path_prefix, source, balance, sticky, timeout_secs, max_body_bytes,
                             https_redirect, probe_path)
         VALUES ($1, $2, $3, $4, $5, $6, 'api', $7, $8, $9, $10, $11, $12)",
    )
    .bind(id)
    .bind(tenant)
    .bind(new.service)
    .bind(new.port)
    .bind(new.domain)
    .bind(new.path_prefix)
    .bind(&new.options.balance)
    .bind(new.options.sticky)
    .bind(new.options.timeout_secs)
    .bind(new.options.max_body_bytes)
    .bind(new.options.https_redirect)
    .bind(&new.options.probe_path)
    .execute(&mut *tx)
    .await
    .map_err(|e| taken(e, "domain", new.domain, new.path_prefix))?;
    reverify(tx, tenant).await?;
    Ok(id)
}

pub async fn set_options(conn: &mut PgConnection, id: Uuid, options: &Options) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE routes SET balance = $2, sticky = $3, timeout_secs = $4, max_body_bytes = $5, https_redirect = $6, probe_path = $7,
                updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(&options.balance)
    .bind(options.sticky)
    .bind(options.timeout_secs)
    .bind(options.max_body_bytes)
    .bind(options.https_redirect)
    .bind(&options.probe_path)
    .execute(conn)
    .await?;
    Ok(())
}

/// A unique violation on the domain and path: someone routes it already (perhaps another tenant, which
/// is not said).
fn taken(e: sqlx::Error, field: &str, domain: &str, path: &str) -> ApiError {
    let at = if path == "/" { domain.to_owned() } else { format!("{domain}{path}") };
    ApiError::on_constraint(e, "routes_domain_path", field, format!("`{at}` is already routed to another service"))
}

#[derive(sqlx::FromRow)]
pub struct RouteRow {
    pub id: Uuid,
    pub domain: String,
    pub path_prefix: String,
    pub service_id: Uuid,
    pub application_id: Uuid,
    pub port: i32,
    pub source: String,
    pub verified: bool,
    pub balance: String,
    pub sticky: bool,
    pub timeout_secs: i32,
    pub max_body_bytes: Option<i64>,
    pub https_redirect: bool,
    pub probe_path: Option<String>,
    pub endpoints: i64,
    pub requests: i64,
    pub responses_5xx: i64,
    pub failed_connections: i64,
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    pub response_ms: i32,
    pub created_at: DateTime<Utc>,
}

impl RouteRow {
    pub fn options(&self) -> Options {
        Options {
            balance: self.balance.clone(),
            sticky: self.sticky,
            timeout_secs: self.timeout_secs,
            max_body_bytes: self.max_body_bytes,
            https_redirect: self.https_redirect,
            probe_path: self.probe_path.clone(),
        }
    }

    pub fn into_dto(self, routing: &Routing) -> Route {
        Route {
            url: routing.url(&self.domain, &self.path_prefix),
            id: self.id,
            domain: self.domain,
            path_prefix: self.path_prefix,
            service_id: self.service_id,
            application_id: self.application_id,
            port: self.port,
            source: self.source,
            verified: self.verified,
            balance: self.balance,
            sticky: self.sticky,
            timeout_secs: self.timeout_secs,
            max_body_bytes: self.max_body_bytes,
            https_redirect: self.https_redirect,
            probe_path: self.probe_path,
            endpoints: self.endpoints,
            traffic: berth_types::RouteTraffic {
                requests_total: self.requests,
                responses_5xx_total: self.responses_5xx,
                failed_connections_total: self.failed_connections,
                requests_per_sec: self.requests_per_sec,
                errors_per_sec: self.errors_per_sec,
                response_ms: self.response_ms,
            },
            created_at: self.created_at,
        }
    }
}

/// A route with its application, the running tasks that serve it (those at a host port for its
/// target) and its traffic summed over the routers (rates only from routers heard from lately).
const ROUTE_SELECT: &str = "
    SELECT r.id, r.domain, r.path_prefix, r.service_id, s.application_id, r.port, r.source, r.verified, r.balance,
           r.sticky, r.timeout_secs, r.max_body_bytes, r.https_redirect, r.probe_path, r.created_at,
           (SELECT count(*) FROM containers c
             WHERE c.service_id = r.service_id AND c.state = 'running' AND c.desired_state = 'running'
               AND EXISTS (SELECT 1 FROM jsonb_array_elements(c.host_ports) hp WHERE (hp->>'target')::int = r.port)) AS endpoints,
           tr.requests, tr.responses_5xx, tr.failed_connections, tr.requests_per_sec, tr.errors_per_sec, tr.response_ms
      FROM routes r JOIN services s ON s.id = r.service_id
      LEFT JOIN LATERAL (
           SELECT coalesce(sum(t.requests), 0)::int8 AS requests, coalesce(sum(t.responses_5xx), 0)::int8 AS responses_5xx,
                  coalesce(sum(t.failed_connections), 0)::int8 AS failed_connections,
                  coalesce(sum(t.requests_per_sec) FILTER (WHERE t.updated_at > now() - interval '30 seconds'), 0)::float8 AS requests_per_sec,
                  coalesce(sum(t.errors_per_sec) FILTER (WHERE t.updated_at > now() - interval '30 seconds'), 0)::float8 AS errors_per_sec,
                  coalesce(max(t.response_ms) FILTER (WHERE t.updated_at > now() - interval '30 seconds'), 0)::int4 AS response_ms
             FROM route_traffic t WHERE t.route_id = r.id) tr ON true";

/// Which routes a list shows.
#[derive(Debug, Default)]
pub struct Filter {
    pub application: Option<Uuid>,
    pub service: Option<Uuid>,
    pub domain: Option<String>,
}

pub async fn page(
    conn: &mut PgConnection,
    tenant: Uuid,
    filter: &Filter,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<RouteRow>> {
    sqlx::query_as(&format!(
        "{ROUTE_SELECT}
          WHERE r.tenant_id = $1 AND ($2::uuid IS NULL OR s.application_id = $2) AND ($3::uuid IS NULL OR r.service_id = $3)
            AND ($4::text IS NULL OR r.domain = $4) AND ($5::uuid IS NULL OR r.id > $5)
          ORDER BY r.id LIMIT $6"
    ))
    .bind(tenant)
    .bind(filter.application)
    .bind(filter.service)
    .bind(&filter.domain)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn load(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> ApiResult<RouteRow> {
    sqlx::query_as(&format!("{ROUTE_SELECT} WHERE r.tenant_id = $1 AND r.id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found("route"))
}
