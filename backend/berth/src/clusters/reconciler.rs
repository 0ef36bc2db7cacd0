//! Reconcilers: one per cluster across all Berth processes, keeping each node row's observed state
//! (ready/down, availability, leader, engine, resources) and the cluster's status true to what its
//! managers report.
//!
//! Every process runs a supervisor that tries, every couple of seconds, to take the lease of each
//! cluster that has no live reconciler (`clusters.reconciler_owner` / `reconciler_lease_until`). The
//! holder renews the lease on every pass; if it dies, the lease runs out within seconds and another
//! process's supervisor takes the cluster over. A pass runs on a timer and at once when the engine's
//! event stream reports a node or service event; it reads the whole node list, never reacting to one
//! event alone. Between passes, every half second, the cluster's applications are observed
//! (`applications::observe`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::WorkerEnv;
use super::access::connect_manager;
use super::observe;
use crate::swarm::Engine;

/// How long a lease lasts without renewal: the takeover time when a holder dies.
const LEASE: Duration = Duration::from_secs(6);
/// The timer between full passes (lease renewal and nodes).
const PASS_EVERY: Duration = Duration::from_secs(2);
/// The timer between observations of the cluster's applications: a task that dies shows in the API
/// within about this long (the manager reports no task events to wait on).
const APPLICATIONS_EVERY: Duration = Duration::from_millis(500);
/// The same while a service's tasks are being replaced (see `applications::observe::pass`).
const APPLICATIONS_ROLLING_EVERY: Duration = Duration::from_millis(100);

/// Takes and runs reconcilers for every running cluster until `shutdown`.
pub async fn supervise(
    db: PgPool,
    env: Arc<WorkerEnv>,
    owner: String,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut held: HashMap<Uuid, JoinHandle<()>> = HashMap::new();
    loop {
        held.retain(|_, task| !task.is_finished());
        let claimable: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE clusters SET reconciler_owner = $1, reconciler_lease_until = now() + make_interval(secs => $2)
              WHERE status IN ('ready', 'degraded')
                AND (reconciler_owner IS NULL OR reconciler_owner = $1 OR reconciler_lease_until < now())
                AND NOT (id = ANY($3))
          RETURNING id",
        )
        .bind(&owner)
        .bind(LEASE.as_secs_f64())
        .bind(held.keys().copied().collect::<Vec<_>>())
        .fetch_all(&db)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not look for clusters to reconcile");
            Vec::new()
        });
        for cluster in claimable {
            tracing::info!(%cluster, %owner, "reconciling cluster");
            let task = tokio::spawn(reconcile(db.clone(), env.clone(), owner.clone(), cluster, shutdown.clone()));
            held.insert(cluster, task);
        }
        tokio::select! {
            _ = tokio::time::sleep(PASS_EVERY) => {}
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
        }
    }
    for (_, task) in held {
        let _ = task.await;
    }
    // Hand the clusters over at once rather than after the lease runs out.
    sqlx::query("UPDATE clusters SET reconciler_owner = NULL, reconciler_lease_until = NULL WHERE reconciler_owner = $1")
        .bind(&owner)
        .execute(&db)
        .await?;
    Ok(())
}

/// Keeps one cluster reconciled while this process holds its lease.
async fn reconcile(db: PgPool, env: Arc<WorkerEnv>, owner: String, cluster: Uuid, mut shutdown: watch::Receiver<bool>) {
    let wake = Arc::new(Notify::new());
    let mut events: Option<JoinHandle<()>> = None;
    // The connection to a manager is kept between passes and made again only after a failure.
    let mut manager: Option<Engine> = None;
    let tenant: Option<Uuid> =
        sqlx::query_scalar("SELECT tenant_id FROM clusters WHERE id = $1").bind(cluster).fetch_optional(&db).await.ok().flatten();
    let mut last_full: Option<tokio::time::Instant> = None;
    let mut woken = false;
    loop {
        if woken || last_full.is_none_or(|t| t.elapsed() >= PASS_EVERY) {
            woken = false;
            last_full = Some(tokio::time::Instant::now());
            let renewed = sqlx::query(
                "UPDATE clusters SET reconciler_lease_until = now() + make_interval(secs => $3)
                  WHERE id = $1 AND reconciler_owner = $2 AND status IN ('ready', 'degraded')",
            )
            .bind(cluster)
            .bind(&owner)
            .bind(LEASE.as_secs_f64())
            .execute(&db)
            .await;
            match renewed {
                Ok(r) if r.rows_affected() == 1 => {}
                Ok(_) => break, // lost the lease, or the cluster is being deleted or reprovisioned
                Err(e) => tracing::warn!(%cluster, error = %e, "could not renew the reconciler lease"),
            }
            match pass(&db, &env, cluster, &mut manager).await {
                Ok(()) => {
                    if events.as_ref().is_none_or(|t| t.is_finished())
                        && let Some(m) = &manager
                    {
                        events = Some(tokio::spawn(watch_events(m.clone(), wake.clone())));
                    }
                }
                Err(e) => {
                    manager = None;
                    tracing::debug!(%cluster, error = %e, "reconcile pass failed");
                }
            }
        }
        let mut rolling = false;
        if let (Some(m), Some(tenant)) = (&manager, tenant) {
            match crate::applications::observe::pass(&db, tenant, cluster, m).await {
                Ok(r) => rolling = r,
                Err(e) => tracing::debug!(%cluster, error = %e, "observing applications failed"),
            }
            if let Err(e) = crate::applications::observe::fill_addresses(&db, &env, cluster).await {
                tracing::debug!(%cluster, error = %e, "reading task addresses failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(if rolling { APPLICATIONS_ROLLING_EVERY } else { APPLICATIONS_EVERY }) => {}
            _ = wake.notified() => woken = true,
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
        }
    }
    if let Some(t) = events {
        t.abort();
    }
}

/// One full pass: ask a reachable manager (the one from the last pass, or a newly connected one) for
/// every node, and write what it says.
async fn pass(db: &PgPool, env: &WorkerEnv, cluster: Uuid, manager: &mut Option<Engine>) -> anyhow::Result<()> {
    let (tenant, provider): (Uuid, String) =
        sqlx::query_as("SELECT tenant_id, provider FROM clusters WHERE id = $1").bind(cluster).fetch_one(db).await?;
    if manager.is_none() {
        match connect_manager(db, env, cluster).await {
            Ok(m) => *manager = Some(m),
            Err(e) => {
                // No manager answers: every node is unreachable as far as Berth can tell.
                sqlx::query("UPDATE nodes SET state = 'down', leader = false, updated_at = now() WHERE cluster_id = $1 AND state = 'ready'")
                    .bind(cluster)
                    .execute(db)
                    .await?;
                sqlx::query("UPDATE clusters SET status = 'degraded', observed_at = now() WHERE id = $1 AND status = 'ready'")
                    .bind(cluster)
                    .execute(db)
                    .await?;
                return Err(e);
            }
        }
    }
    let engine = manager.as_ref().expect("connected above");
    let observed = observe::list(engine).await?;
    if provider == "existing" {
        observe::adopt(db, tenant, cluster, &observed).await?;
    }
    observe::record(db, tenant, cluster, &observed).await?;
    Ok(())
}

/// Wakes the reconciler on every node and service event the manager reports; ends when the stream does.
async fn watch_events(manager: Engine, wake: Arc<Notify>) {
    let filters = HashMap::from([("type".to_owned(), vec!["node".to_owned(), "service".to_owned()])]);
    let options = bollard::query_parameters::EventsOptions { filters: Some(filters), ..Default::default() };
    let mut stream = manager.docker.events(Some(options));
    while let Some(event) = stream.next().await {
        if event.is_err() {
            break;
        }
        wake.notify_one();
    }
}
