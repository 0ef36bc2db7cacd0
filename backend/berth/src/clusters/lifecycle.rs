//! The cluster jobs.
//!
//! `converge` (for `cluster.create` and `cluster.scale`) makes the Swarm match the node rows: it plans
//! and starts every wanted node, initialises the swarm on the first manager, joins the others, removes
//! nodes marked `removing` (drained, demoted, left, destroyed), and waits until the swarm reports every
//! node ready. `delete` destroys every node and the cluster's network, then the records.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_types::{ClusterStatus, Provider};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::WorkerEnv;
use super::access::{ClusterAccess, connect_manager};
use super::observe;
use crate::jobs::runner::JobCtx;
use crate::jobs::{Target, emit};
use crate::providers::{NodeProvider, NodeSpec, NodeState};

#[derive(sqlx::FromRow, Clone)]
struct NodeRow {
    id: Uuid,
    name: String,
    role: String,
    state: String,
    provider_state: sqlx::types::Json<NodeState>,
    swarm_node_id: Option<String>,
}

/// Managers first, then workers, each in name order: the first row is the swarm's first manager.
async fn load_nodes(db: &PgPool, cluster: Uuid) -> anyhow::Result<Vec<NodeRow>> {
    Ok(sqlx::query_as(
        "SELECT id, name, role, state, provider_state, swarm_node_id FROM nodes WHERE cluster_id = $1
          ORDER BY role = 'worker', length(name), name",
    )
    .bind(cluster)
    .fetch_all(db)
    .await?)
}

/// Gives the cluster a local network number: the lowest that no cluster of this Berth uses and no
/// bridge on the host already has (another Berth may share the host). A number whose bridge turns out
/// to belong to another cluster (two Berths choosing at once) is given up and another one chosen.
async fn ensure_network_number(db: &PgPool, cluster: Uuid, current: Option<i32>) -> anyhow::Result<i32> {
    let mut current = current;
    for _ in 0..10 {
        if let Some(n) = current {
            match crate::providers::local::network_owner(n).await {
                Some(owner) if owner != cluster.to_string() => {
                    sqlx::query("UPDATE clusters SET local_network = NULL WHERE id = $1").bind(cluster).execute(db).await?;
                }
                _ => return Ok(n),
            }
        }
        let busy = crate::providers::local::networks_in_use().await?;
        current = sqlx::query_scalar(
            "UPDATE clusters SET local_network = (
                    SELECT min(n) FROM generate_series(1, 255) AS n
                     WHERE n NOT IN (SELECT local_network FROM clusters WHERE local_network IS NOT NULL)
                       AND n <> ALL($2))
              WHERE id = $1 AND local_network IS NULL
          RETURNING local_network",
        )
        .bind(cluster)
        .bind(&busy)
        .fetch_optional(db)
        .await
        .or_else(|e| match &e {
            // Another cluster of this Berth took the same number at the same moment: choose again.
            sqlx::Error::Database(d) if d.is_unique_violation() => Ok(None),
            _ => Err(e),
        })?
        .flatten();
        if current.is_none() {
            current = sqlx::query_scalar("SELECT local_network FROM clusters WHERE id = $1").bind(cluster).fetch_one(db).await?;
        }
    }
    bail!("no free local network for the cluster")
}

fn spec(cluster: Uuid, network: i32, node: &NodeRow) -> NodeSpec {
    NodeSpec { cluster_id: cluster, network, node_id: node.id, name: node.name.clone(), state: node.provider_state.0.clone() }
}

fn address(node: &NodeRow) -> anyhow::Result<IpAddr> {
    node.provider_state.0.address.with_context(|| format!("node {} has no address", node.name))
}

pub async fn converge(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let id = ctx.job.target_id;
    let Some(cluster) = super::store::by_id(&ctx.db, id).await? else {
        return ctx.log("the cluster no longer exists; nothing to do").await;
    };
    if cluster.status == ClusterStatus::Deleting {
        return ctx.log("the cluster is being deleted; nothing to do").await;
    }
    if cluster.status == ClusterStatus::Failed {
        // A new job on a failed cluster is another try at making it: it is provisioning again.
        sqlx::query("UPDATE clusters SET status = 'provisioning', updated_at = now() WHERE id = $1 AND status = 'failed'")
            .bind(id)
            .execute(&ctx.db)
            .await?;
    }
    if cluster.provider == Provider::Existing {
        return adopt(&ctx, &env, id, cluster.tenant_id).await;
    }
    let provider = &env.local;
    ctx.progress("preparing the cluster's certificates and network", 5).await?;
    let access = ClusterAccess::ensure(&ctx.db, &env, id).await?;
    let network = ensure_network_number(&ctx.db, id, cluster.local_network).await?;
    provider.ensure_network(id, network).await?;

    let mut nodes = load_nodes(&ctx.db, id).await?;
    // Plan addresses for new nodes, recording each before anything is made for it, so that a re-run
    // finds (and reuses or destroys) exactly what an interrupted run made.
    let mut taken: Vec<IpAddr> = nodes.iter().filter_map(|n| n.provider_state.0.address).collect();
    for node in nodes.iter_mut() {
        if node.provider_state.0.address.is_some() {
            continue;
        }
        let planned = provider.plan_node(&spec(id, network, node), &taken).await?;
        taken.extend(planned.address);
        sqlx::query("UPDATE nodes SET provider_state = $2, provider_ref = $3, address = $4, updated_at = now() WHERE id = $1")
            .bind(node.id)
            .bind(sqlx::types::Json(&planned))
            .bind(&planned.handle)
            .bind(planned.address.map(|a| a.to_string()))
            .execute(&ctx.db)
            .await?;
        node.provider_state = sqlx::types::Json(planned);
    }

    let (wanted, leaving): (Vec<NodeRow>, Vec<NodeRow>) = nodes.into_iter().partition(|n| n.state != "removing");
    // Nodes are independent machines: start them all at once, as a person would start three VMs.
    let names: Vec<&str> = wanted.iter().map(|n| n.name.as_str()).collect();
    ctx.progress(&format!("starting nodes {}", names.join(", ")), 10).await?;
    let starts = wanted.iter().map(|node| {
        let access = &access;
        async move {
            let tls = access.engine_tls(&node.name, address(node)?)?;
            provider.start_node(&spec(id, network, node), &tls).await
        }
    });
    futures_util::future::try_join_all(starts).await?;

    let first = wanted.iter().find(|n| n.role == "manager").context("the cluster has no manager")?;
    let first_addr = address(first)?;
    let manager = access.engine(first_addr).await?;
    if !manager.membership().await?.active {
        ctx.progress(&format!("initialising the swarm on {}", first.name), 55).await?;
        manager.init_swarm().await?;
        ctx.log("swarm initialised").await?;
    }
    let (manager_token, worker_token) = manager.join_tokens().await?;
    access.store_tokens(&ctx.db, &env, &manager_token, &worker_token).await?;
    let others = wanted.iter().filter(|n| n.id != first.id).map(|node| {
        let access = &access;
        async move {
            let engine = access.engine(address(node)?).await?;
            let active = engine.membership().await?.active;
            anyhow::Ok((node, engine, active))
        }
    });
    let joining: Vec<_> = futures_util::future::try_join_all(others)
        .await?
        .into_iter()
        .filter(|(_, _, active)| !active)
        .map(|(node, engine, _)| (node, engine))
        .collect();
    if !joining.is_empty() {
        let names: Vec<&str> = joining.iter().map(|(n, _)| n.name.as_str()).collect();
        ctx.progress(&format!("joining {}", names.join(", ")), 65).await?;
        // Managers join one at a time (each changes the Raft membership); workers all at once.
        for (node, engine) in joining.iter().filter(|(n, _)| n.role == "manager") {
            engine.join_swarm(first_addr, &manager_token).await.with_context(|| format!("joining {}", node.name))?;
        }
        let workers = joining.iter().filter(|(n, _)| n.role != "manager").map(|(node, engine)| {
            let token = &worker_token;
            async move { engine.join_swarm(first_addr, token).await.with_context(|| format!("joining {}", node.name)) }
        });
        futures_util::future::try_join_all(workers).await?;
    }

    for node in &leaving {
        ctx.progress(&format!("removing node {}", node.name), 75).await?;
        remove_node(&ctx, provider, &access, &manager, id, network, node).await?;
    }

    ctx.progress("waiting for every node to be ready", 85).await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let observed = observe::list(&manager).await?;
        let status = observe::record(&ctx.db, cluster.tenant_id, id, &observed).await?;
        if status == "ready" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the swarm did not report every node ready within 90 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.log("the cluster is ready").await
}

/// Adopts a swarm the user already runs: checks that the endpoint is a manager, records its nodes
/// (within the tenant's node quota) and their state. Berth never provisions or destroys its machines.
async fn adopt(ctx: &JobCtx, env: &WorkerEnv, cluster: Uuid, tenant: Uuid) -> anyhow::Result<()> {
    ctx.progress("connecting to the registered manager", 20).await?;
    let manager = connect_manager(&ctx.db, env, cluster).await?;
    let membership = manager.membership().await?;
    if !membership.active || !membership.manager {
        bail!("the endpoint is not a manager of an active swarm (run `docker swarm init` there, or give a manager's endpoint)");
    }
    let observed = observe::list(&manager).await?;
    ctx.progress(&format!("adopting {} node(s)", observed.len()), 60).await?;
    let mut tx = ctx.db.begin().await?;
    let known: i64 =
        sqlx::query_scalar("SELECT count(*) FROM nodes WHERE cluster_id = $1").bind(cluster).fetch_one(&mut *tx).await?;
    let delta = crate::domain::quota::Delta { nodes: observed.len() as i64 - known, ..Default::default() };
    crate::domain::quota::reserve(&mut tx, tenant, delta).await.map_err(|e| anyhow::anyhow!("{}", e.detail))?;
    tx.commit().await?;
    observe::adopt(&ctx.db, tenant, cluster, &observed).await?;
    let status = observe::record(&ctx.db, tenant, cluster, &observed).await?;
    ctx.log(&format!("adopted the swarm; the cluster is {status}")).await
}

/// Drains, demotes and removes a node from the swarm, destroys it, and deletes its row.
async fn remove_node(
    ctx: &JobCtx,
    provider: &impl NodeProvider,
    access: &ClusterAccess,
    manager: &crate::swarm::Engine,
    cluster: Uuid,
    network: i32,
    node: &NodeRow,
) -> anyhow::Result<()> {
    if let Some(swarm_id) = &node.swarm_node_id {
        let in_swarm = manager.nodes().await?.iter().any(|n| n.id.as_deref() == Some(swarm_id));
        if in_swarm {
            if node.role == "manager" {
                // Quorum: the managers that stay, and are reachable, must still be a majority of those that stay.
                let managers = manager.managers().await?;
                let staying: Vec<&(String, bool)> = managers.iter().filter(|(id, _)| id != swarm_id).collect();
                let reachable = staying.iter().filter(|(_, r)| *r).count();
                if staying.is_empty() || reachable * 2 <= staying.len() {
                    bail!("removing manager {} now would leave the swarm without a quorum of managers", node.name);
                }
            }
            // Drain first, so the node's tasks are rescheduled before it goes.
            manager.update_node(swarm_id, Some("drain"), None).await?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while manager.running_tasks_on(swarm_id).await? > 0 {
                if Instant::now() > deadline {
                    bail!("node {} still runs tasks 60 s after being drained", node.name);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if node.role == "manager" {
                manager.demote(swarm_id).await?;
            }
            if let Some(addr) = node.provider_state.0.address
                && let Ok(engine) = access.engine(addr).await
            {
                engine.leave_swarm(true).await.ok();
            }
            manager.remove_node(swarm_id).await?;
        }
    }
    provider.destroy_node(&spec(cluster, network, node)).await?;
    sqlx::query("DELETE FROM nodes WHERE id = $1").bind(node.id).execute(&ctx.db).await?;
    Ok(())
}

pub async fn delete(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let id = ctx.job.target_id;
    let Some(cluster) = super::store::by_id(&ctx.db, id).await? else {
        return ctx.log("the cluster is already gone").await;
    };
    let nodes = load_nodes(&ctx.db, id).await?;
    // An adopted cluster's machines are the user's: deleting it in Berth only forgets it.
    if cluster.provider == Provider::Local {
        let provider = &env.local;
        let network = cluster.local_network;
        let total = nodes.len().max(1) as i32;
        for (i, node) in nodes.iter().enumerate() {
            ctx.progress(&format!("destroying node {}", node.name), 10 + 70 * i as i32 / total).await?;
            if let Some(n) = network {
                provider.destroy_node(&spec(id, n, node)).await?;
            }
        }
        if let Some(n) = network {
            ctx.progress("removing the cluster network", 85).await?;
            provider.destroy_network(id, n).await?;
        }
    }
    let dir = env.data_dir.join("clusters").join(id.to_string());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let mut tx = ctx.db.begin().await?;
    // The cluster's applications went with its machines (their services and containers cascade).
    sqlx::query("DELETE FROM applications WHERE cluster_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM clusters WHERE id = $1").bind(id).execute(&mut *tx).await?;
    let target = Target { tenant_id: Some(cluster.tenant_id), kind: "cluster", id };
    emit(&mut tx, &target, "cluster.deleted", json!({})).await?;
    tx.commit().await?;
    ctx.log("the cluster is deleted").await
}

pub async fn update_node(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let node_id = ctx.job.target_id;
    type Labels = sqlx::types::Json<std::collections::HashMap<String, String>>;
    let row: Option<(Uuid, Option<String>, String, Labels)> =
        sqlx::query_as("SELECT cluster_id, swarm_node_id, availability, labels FROM nodes WHERE id = $1")
            .bind(node_id)
            .fetch_optional(&ctx.db)
            .await?;
    let Some((cluster, Some(swarm_id), availability, labels)) = row else {
        return ctx.log("the node is not in a swarm (yet); the cluster job applies its settings when it joins").await;
    };
    let manager = connect_manager(&ctx.db, &env, cluster).await?;
    ctx.progress(&format!("setting availability {availability} and {} label(s)", labels.0.len()), 50).await?;
    manager.update_node(&swarm_id, Some(&availability), Some(labels.0)).await
}

/// Starts a node's engine again (after a crash, or after it was killed), like rebooting a machine.
pub async fn restart_node(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let row: Option<(Uuid, i32)> = sqlx::query_as(
        "SELECT n.cluster_id, c.local_network FROM nodes n JOIN clusters c ON c.id = n.cluster_id
          WHERE n.id = $1 AND c.provider = 'local' AND c.local_network IS NOT NULL",
    )
    .bind(ctx.job.target_id)
    .fetch_optional(&ctx.db)
    .await?;
    let Some((cluster, network)) = row else { return ctx.log("the node is not a provisioned local node").await };
    let node = load_nodes(&ctx.db, cluster).await?.into_iter().find(|n| n.id == ctx.job.target_id).context("node gone")?;
    let access = ClusterAccess::ensure(&ctx.db, &env, cluster).await?;
    ctx.progress(&format!("starting the engine of {}", node.name), 30).await?;
    let tls = access.engine_tls(&node.name, address(&node)?)?;
    env.local.start_node(&spec(cluster, network, &node), &tls).await?;
    ctx.log("the engine is running; the reconciler reports the node ready once the swarm sees it").await
}

/// A cluster job failed for good: the cluster is `failed` (unless it is being deleted).
pub async fn mark_failed(ctx: JobCtx, error: String) -> anyhow::Result<()> {
    let tenant: Option<Uuid> = sqlx::query_scalar(
        "UPDATE clusters SET status = 'failed', updated_at = now() WHERE id = $1 AND status <> 'deleting' RETURNING tenant_id",
    )
    .bind(ctx.job.target_id)
    .fetch_optional(&ctx.db)
    .await?;
    if let Some(tenant) = tenant {
        let mut conn = ctx.db.acquire().await?;
        let target = Target { tenant_id: Some(tenant), kind: "cluster", id: ctx.job.target_id };
        emit(&mut conn, &target, "cluster.failed", json!({ "error": error })).await?;
    }
    Ok(())
}
