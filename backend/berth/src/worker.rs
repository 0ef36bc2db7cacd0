//! Job workers and cluster reconcilers: the job runner with every job kind this version handles, the
//! supervisor that keeps one reconciler per running cluster, and the periodic checks. `berth worker`
//! runs only these; `berth serve` runs them beside the API.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::clusters::{self, WorkerEnv};
use crate::jobs::runner::Runner;

/// Runs jobs, reconcilers and the background checks (automatic aborts, certificate renewals, pending
/// domain claims looked up through `dns`) until `shutdown` turns true.
pub async fn run(
    db: PgPool,
    env: Arc<WorkerEnv>,
    dns: crate::custom_domains::proof::DnsResolver,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    crate::db::wait_for_migrations(&db).await?;
    let mut handlers = clusters::handlers(env.clone());
    crate::applications::deploy::add_handlers(&mut handlers, env.clone());
    crate::releases::jobs::add_handlers(&mut handlers, env.clone());
    crate::certificates::acme::add_handlers(&mut handlers, env.clone());
    let mut runner = Runner::new(db.clone(), handlers);
    // Shorter leases make a crashed worker's jobs resume sooner (tests use a few seconds).
    if let Some(secs) = std::env::var("BERTH_JOB_LEASE_SECS").ok().and_then(|s| s.parse::<u64>().ok()) {
        runner.lease = Duration::from_secs(secs.max(1));
    }
    let releases = tokio::spawn(crate::releases::watch::run(db.clone(), shutdown.clone()));
    let renewals = tokio::spawn(crate::certificates::acme::renew_loop(db.clone(), env.acme.acme_renew_days, shutdown.clone()));
    let claims = tokio::spawn(crate::custom_domains::verify::recheck_loop(db.clone(), dns, shutdown.clone()));
    let reconcilers = tokio::spawn(clusters::reconciler::supervise(db, env, runner.id.clone(), shutdown.clone()));
    let result = runner.run(shutdown).await;
    match reconcilers.await {
        Ok(Err(e)) => tracing::error!(error = %e, "reconcilers stopped with an error"),
        Err(e) => tracing::error!(error = %e, "reconcilers panicked"),
        Ok(Ok(())) => {}
    }
    let _ = releases.await;
    let _ = renewals.await;
    let _ = claims.await;
    result
}
