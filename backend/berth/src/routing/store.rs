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

/// Makes an application's `default` and `compose` routes those of its new revision: routes that stay
/// keep their ids, the others go, new ones are added (default domains verified, custom ones not yet).
/// A domain and path another application already routes is a 422 at the service.
pub async fn write_declared(tx: &mut PgConnection, tenant: Uuid, app: Uuid, routes: &[Declared]) -> ApiResult<()> {
    type Key = (String, i32, String, String, String);
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
        sqlx::query(
            "INSERT INTO routes (id, tenant_id, service_id, port, domain, path_prefix, source, verified)
             SELECT $1, $2, s.id, $4, $5, $6, $7, $8 FROM services s WHERE s.application_id = $3 AND s.name = $9",
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
    Ok(())
}

/// A unique violation on the domain and path: someone routes it already (perhaps another tenant, which
/// is not said).
fn taken(e: sqlx::Error, field: &str, domain: &str, path: &str) -> ApiError {
    if let sqlx::Error::Database(db) = &e
        && db.constraint() == Some("routes_domain_path")
    {
        let at = if path == "/" { domain.to_owned() } else { format!("{domain}{path}") };
        return ApiError::invalid_field(field, format!("`{at}` is already routed to another service"));
    }
    e.into()
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
    pub endpoints: i64,
    pub created_at: DateTime<Utc>,
}

impl RouteRow {
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
            endpoints: self.endpoints,
            created_at: self.created_at,
        }
    }
}

/// A route with its application and the running tasks that serve it (those at a host port for its
/// target).
const ROUTE_SELECT: &str = "
    SELECT r.id, r.domain, r.path_prefix, r.service_id, s.application_id, r.port, r.source, r.verified, r.balance,
           r.sticky, r.timeout_secs, r.max_body_bytes, r.created_at,
           (SELECT count(*) FROM containers c
             WHERE c.service_id = r.service_id AND c.state = 'running' AND c.desired_state = 'running'
               AND EXISTS (SELECT 1 FROM jsonb_array_elements(c.host_ports) hp WHERE (hp->>'target')::int = r.port)) AS endpoints
      FROM routes r JOIN services s ON s.id = r.service_id";

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
