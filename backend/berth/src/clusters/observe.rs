//! Writing what a cluster's managers report back to Postgres: each node's state, availability,
//! leadership, engine version, address and resources, and the cluster's status.

use bollard::models::{NodeSpecAvailabilityEnum, NodeState};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::jobs::{Target, emit};
use crate::swarm::Engine;

/// One node as the Swarm reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub hostname: String,
    pub role: &'static str,
    pub swarm_node_id: String,
    pub state: &'static str,
    pub availability: &'static str,
    pub leader: bool,
    pub engine_version: Option<String>,
    pub address: Option<String>,
    pub cpus: Option<f64>,
    pub memory_bytes: Option<i64>,
}

/// Lists the swarm's nodes through `manager`.
pub async fn list(manager: &Engine) -> anyhow::Result<Vec<Observed>> {
    let nodes = manager.nodes().await?;
    Ok(nodes
        .into_iter()
        .filter_map(|n| {
            let description = n.description.unwrap_or_default();
            let status = n.status.unwrap_or_default();
            let spec = n.spec.unwrap_or_default();
            let resources = description.resources.unwrap_or_default();
            Some(Observed {
                hostname: description.hostname?,
                role: if spec.role == Some(bollard::models::NodeSpecRoleEnum::MANAGER) { "manager" } else { "worker" },
                swarm_node_id: n.id?,
                state: match status.state {
                    Some(NodeState::READY) => "ready",
                    Some(NodeState::DOWN) | Some(NodeState::DISCONNECTED) => "down",
                    _ => "unknown",
                },
                availability: match spec.availability {
                    Some(NodeSpecAvailabilityEnum::PAUSE) => "pause",
                    Some(NodeSpecAvailabilityEnum::DRAIN) => "drain",
                    _ => "active",
                },
                leader: n.manager_status.and_then(|m| m.leader).unwrap_or(false),
                engine_version: description.engine.and_then(|e| e.engine_version),
                address: status.addr,
                cpus: resources.nano_cpus.map(|n| n as f64 / 1e9),
                memory_bytes: resources.memory_bytes,
            })
        })
        .collect())
}

/// Writes observed node state and derives the cluster's status: `ready` when every wanted node is in
/// the swarm and ready, `degraded` when any is down or missing. Returns the status written.
pub async fn record(db: &PgPool, tenant: Uuid, cluster: Uuid, observed: &[Observed]) -> anyhow::Result<&'static str> {
    let rows: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, name, state FROM nodes WHERE cluster_id = $1 AND state <> 'removing'")
            .bind(cluster)
            .fetch_all(db)
            .await?;
    let mut all_ready = !rows.is_empty();
    let mut tx = db.begin().await?;
    for (id, name, old_state) in &rows {
        let Some(o) = observed.iter().find(|o| &o.hostname == name) else {
            all_ready = false;
            continue;
        };
        if o.state != "ready" {
            all_ready = false;
        }
        // Written only when something changed: an idle cluster costs the database nothing per pass.
        sqlx::query(
            "UPDATE nodes SET state = $2, availability = $3, leader = $4, engine_version = $5, cpus = $6, memory_bytes = $7,
                    swarm_node_id = $8, updated_at = now()
              WHERE id = $1
                AND (state, availability, leader, engine_version, cpus, memory_bytes, swarm_node_id)
                    IS DISTINCT FROM ($2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(o.state)
        .bind(o.availability)
        .bind(o.leader)
        .bind(&o.engine_version)
        .bind(o.cpus)
        .bind(o.memory_bytes)
        .bind(&o.swarm_node_id)
        .execute(&mut *tx)
        .await?;
        if old_state != o.state {
            let target = Target { tenant_id: Some(tenant), kind: "node", id: *id };
            emit(&mut tx, &target, "node.state", json!({ "name": name, "from": old_state, "to": o.state })).await?;
        }
    }
    let status = if all_ready { "ready" } else { "degraded" };
    let changed: Option<String> = sqlx::query_scalar(
        "UPDATE clusters c SET status = $2, observed_at = now(), updated_at = now()
          WHERE id = $1 AND status IN ('provisioning', 'ready', 'degraded') AND status <> $2
      RETURNING (SELECT status FROM clusters WHERE id = $1)",
    )
    .bind(cluster)
    .bind(status)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(before) = changed
        && before != status
    {
        let target = Target { tenant_id: Some(tenant), kind: "cluster", id: cluster };
        emit(&mut tx, &target, "cluster.status", json!({ "from": before, "to": status })).await?;
    }
    tx.commit().await?;
    Ok(status)
}

/// For an adopted (`existing`) cluster, the swarm is the source of truth for which nodes exist: adds a
/// row for every node Berth has not seen, removes rows of nodes that left, and keeps the cluster's
/// manager and worker counts. Returns how many rows were added.
pub async fn adopt(db: &PgPool, tenant: Uuid, cluster: Uuid, observed: &[Observed]) -> anyhow::Result<usize> {
    let mut tx = db.begin().await?;
    let known: Vec<String> =
        sqlx::query_scalar("SELECT name FROM nodes WHERE cluster_id = $1").bind(cluster).fetch_all(&mut *tx).await?;
    let names: Vec<&str> = observed.iter().map(|o| o.hostname.as_str()).collect();
    sqlx::query("DELETE FROM nodes WHERE cluster_id = $1 AND NOT (name = ANY($2))")
        .bind(cluster)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    let mut added = 0;
    for o in observed.iter().filter(|o| !known.contains(&o.hostname)) {
        sqlx::query(
            "INSERT INTO nodes (id, tenant_id, cluster_id, name, role, address, swarm_node_id) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (cluster_id, name) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(cluster)
        .bind(&o.hostname)
        .bind(o.role)
        .bind(&o.address)
        .bind(&o.swarm_node_id)
        .execute(&mut *tx)
        .await?;
        added += 1;
    }
    let managers = observed.iter().filter(|o| o.role == "manager").count().max(1) as i32;
    let workers = observed.iter().filter(|o| o.role == "worker").count() as i32;
    sqlx::query("UPDATE clusters SET desired_managers = $2, desired_workers = $3 WHERE id = $1")
        .bind(cluster)
        .bind(managers)
        .bind(workers)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE nodes n SET role = o.role FROM unnest($2::text[], $3::text[]) AS o(name, role) WHERE n.cluster_id = $1 AND n.name = o.name")
        .bind(cluster)
        .bind(&names)
        .bind(observed.iter().map(|o| o.role).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(added)
}
