//! Where `load_balancers` and `load_balancer_listeners` rows are read and written, and the checks a
//! listener passes before it is stored.

use std::collections::BTreeSet;

use berth_types::{Listener, ListenerTraffic, LoadBalancer};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::routing::Routing;
use crate::routing::traffic::{SUMS, totals};

#[derive(sqlx::FromRow)]
pub struct BalancerRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub cluster_id: Uuid,
    pub driver: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, name, cluster_id, driver, created_at, updated_at";

pub async fn load(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<BalancerRow> {
    let sql =
        format!("SELECT {COLUMNS} FROM load_balancers WHERE tenant_id = $1 AND id = $2{}", if lock { " FOR UPDATE" } else { "" });
    let row: Option<BalancerRow> = sqlx::query_as(&sql).bind(tenant).bind(id).fetch_optional(conn).await?;
    row.ok_or_else(|| ApiError::not_found("load balancer"))
}

pub async fn page(conn: &mut PgConnection, tenant: Uuid, after: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<BalancerRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM load_balancers WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn listeners(conn: &mut PgConnection, balancer: Uuid) -> sqlx::Result<Vec<Listener>> {
    let rows: Vec<(i32, String, Uuid, i32)> = sqlx::query_as(
        "SELECT port, protocol, service_id, target_port FROM load_balancer_listeners WHERE load_balancer_id = $1 ORDER BY port",
    )
    .bind(balancer)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(port, protocol, service_id, target_port)| Listener { port, protocol, service_id, target_port })
        .collect())
}

/// Each listener's traffic summed over the routers (rates only from routers heard from lately).
pub async fn traffic(conn: &mut PgConnection, balancer: Uuid) -> sqlx::Result<Vec<ListenerTraffic>> {
    let rows: Vec<(i32, i64, i64, i64, f64, f64, i32)> = sqlx::query_as(&format!(
        "SELECT l.port, {SUMS}
           FROM load_balancer_listeners l
           LEFT JOIN balancer_traffic t ON t.load_balancer_id = l.load_balancer_id AND t.port = l.port
          WHERE l.load_balancer_id = $1
          GROUP BY l.port ORDER BY l.port"
    ))
    .bind(balancer)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(port, a, b, c, d, e, f)| ListenerTraffic { port, traffic: totals((a, b, c, d, e, f)) }).collect())
}

pub async fn to_dto(conn: &mut PgConnection, row: BalancerRow, routing: &Routing) -> sqlx::Result<LoadBalancer> {
    let listeners = listeners(conn, row.id).await?;
    let traffic = traffic(conn, row.id).await?;
    Ok(LoadBalancer {
        traffic,
        address: super::driver::for_row(&row.driver, routing).address(),
        id: row.id,
        name: row.name,
        cluster_id: row.cluster_id,
        driver: row.driver,
        listeners,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Checks listeners (each a 422 at `listeners[i].<field>`): ports in the operator's range and not
/// repeated, a known protocol, a service of the tenant on the balancer's cluster (not a release's
/// copy) that exposes the target port.
pub async fn check(
    conn: &mut PgConnection,
    tenant: Uuid,
    cluster: Uuid,
    listeners: &[Listener],
    routing: &Routing,
) -> ApiResult<()> {
    let mut seen = BTreeSet::new();
    for (i, l) in listeners.iter().enumerate() {
        let at = |field: &str| format!("listeners[{i}].{field}");
        let (first, last) = (routing.lb_ports.start(), routing.lb_ports.end());
        if !u16::try_from(l.port).is_ok_and(|p| routing.lb_ports.contains(&p)) {
            return Err(ApiError::invalid_field(
                &at("port"),
                format!("must be in {first}–{last}, the ports reserved for load balancers"),
            ));
        }
        if !seen.insert(l.port) {
            return Err(ApiError::invalid_field(&at("port"), format!("port {} is given twice", l.port)));
        }
        if !matches!(l.protocol.as_str(), "http" | "tcp") {
            return Err(ApiError::invalid_field(&at("protocol"), "must be `http` or `tcp`"));
        }
        let service: Option<(Vec<i32>, String, Uuid, bool)> = sqlx::query_as(
            "SELECT s.exposed_ports, s.name, a.cluster_id, s.release_id IS NOT NULL FROM services s
               JOIN applications a ON a.id = s.application_id WHERE s.tenant_id = $1 AND s.id = $2",
        )
        .bind(tenant)
        .bind(l.service_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((exposed, name, on, copy)) = service else {
            return Err(ApiError::invalid_field(&at("service_id"), "no such service"));
        };
        if copy {
            return Err(ApiError::invalid_field(&at("service_id"), "this is a release's copy: attach the service itself"));
        }
        if on != cluster {
            return Err(ApiError::invalid_field(
                &at("service_id"),
                format!("service `{name}` runs on another cluster than the balancer"),
            ));
        }
        if !exposed.contains(&l.target_port) {
            let ports = if exposed.is_empty() {
                "none".to_owned()
            } else {
                exposed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            };
            return Err(ApiError::invalid_field(
                &at("target_port"),
                format!("service `{name}` does not expose port {} (it exposes: {ports})", l.target_port),
            ));
        }
    }
    Ok(())
}

/// Replaces the balancer's listeners: ports no longer listed go (with their traffic), the others are
/// written in place (keeping theirs). A port another balancer holds is a 422 (whose, is not said).
pub async fn set_listeners(tx: &mut PgConnection, tenant: Uuid, balancer: Uuid, listeners: &[Listener]) -> ApiResult<()> {
    let ports: Vec<i32> = listeners.iter().map(|l| l.port).collect();
    sqlx::query("DELETE FROM load_balancer_listeners WHERE load_balancer_id = $1 AND NOT (port = ANY($2))")
        .bind(balancer)
        .bind(&ports)
        .execute(&mut *tx)
        .await?;
    for (i, l) in listeners.iter().enumerate() {
        sqlx::query(
            "INSERT INTO load_balancer_listeners (load_balancer_id, tenant_id, port, protocol, service_id, target_port)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (load_balancer_id, port) DO UPDATE
                SET protocol = excluded.protocol, service_id = excluded.service_id, target_port = excluded.target_port",
        )
        .bind(balancer)
        .bind(tenant)
        .bind(l.port)
        .bind(&l.protocol)
        .bind(l.service_id)
        .bind(l.target_port)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            let (field, message) = (format!("listeners[{i}].port"), format!("port {} is taken by another load balancer", l.port));
            ApiError::on_constraint(e, "load_balancer_listeners_port_key", &field, message)
        })?;
    }
    sqlx::query("UPDATE load_balancers SET updated_at = now() WHERE id = $1").bind(balancer).execute(&mut *tx).await?;
    Ok(())
}
