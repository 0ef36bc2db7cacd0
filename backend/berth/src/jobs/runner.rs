//! Running queued jobs.
//!
//! A runner claims one runnable job at a time with `FOR UPDATE SKIP LOCKED` (so several runners, in any
//! number of processes, never take the same job), marks it `running` under a lease, and commits at
//! once: no transaction stays open while the job makes slow calls. A heartbeat renews the lease; a
//! runner that dies stops renewing, and once the lease expires another runner claims the job again.
//! Handlers are therefore written to be safe to re-run from the start at any point.
//!
//! Jobs on the same target run in order, one at a time: a job is runnable only when no earlier job on
//! its target is still queued or running. Failures are retried with exponential backoff until
//! `max_attempts`, then the job is `failed` with the last error.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::jobs::{Target, emit};

/// How long jobs in hand may run on after shutdown begins before they are stopped and handed back.
pub const HANDBACK_GRACE: Duration = Duration::from_secs(3);

/// A job as claimed by a runner.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub kind: String,
    pub target_type: String,
    pub target_id: Uuid,
    pub payload: Value,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// What a handler gets: the job, the database, and a way to report progress.
#[derive(Clone)]
pub struct JobCtx {
    pub db: PgPool,
    pub job: Claimed,
    pub runner: String,
}

impl JobCtx {
    /// Records the current step and percentage, logs the step, and tells the tenant's change feed
    /// (`job.progress`: what the console's progress bars follow).
    pub async fn progress(&self, step: &str, percent: i32) -> anyhow::Result<()> {
        let percent = percent.clamp(0, 100);
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE jobs SET step = $2, percent = $3, updated_at = now() WHERE id = $1")
            .bind(self.job.id)
            .bind(step)
            .bind(percent)
            .execute(&mut *tx)
            .await?;
        let target = Target { tenant_id: self.job.tenant_id, kind: &self.job.target_type, id: self.job.target_id };
        let data = serde_json::json!({ "job_id": self.job.id, "kind": self.job.kind, "step": step, "percent": percent });
        emit(&mut tx, &target, "job.progress", data).await?;
        tx.commit().await?;
        self.log(step).await
    }

    pub async fn log(&self, line: &str) -> anyhow::Result<()> {
        tracing::info!(job = %self.job.id, kind = %self.job.kind, "{line}");
        sqlx::query("INSERT INTO job_logs (job_id, line) VALUES ($1, $2)").bind(self.job.id).bind(line).execute(&self.db).await?;
        Ok(())
    }
}

pub type BoxFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// How one kind of job is carried out, and what happens when it has failed for good.
pub struct Handler {
    pub run: Box<dyn Fn(JobCtx) -> BoxFuture + Send + Sync>,
    pub failed: Box<dyn Fn(JobCtx, String) -> BoxFuture + Send + Sync>,
}

#[derive(Default)]
pub struct Handlers(HashMap<&'static str, Handler>);

impl Handlers {
    pub fn add(&mut self, kind: &'static str, handler: Handler) {
        self.0.insert(kind, handler);
    }

    fn kinds(&self) -> Vec<String> {
        self.0.keys().map(|k| (*k).to_owned()).collect()
    }
}

pub struct Runner {
    pub db: PgPool,
    /// Identifies this runner in leases: host, process and a random suffix.
    pub id: String,
    pub handlers: Arc<Handlers>,
    pub lease: Duration,
    pub concurrency: usize,
}

impl Runner {
    pub fn new(db: PgPool, handlers: Handlers) -> Self {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let id = format!("{}:{}:{}", host.trim(), std::process::id(), &Uuid::new_v4().simple().to_string()[..8]);
        Runner { db, id, handlers: Arc::new(handlers), lease: Duration::from_secs(30), concurrency: 4 }
    }

    /// Claims and runs jobs until `shutdown` turns true. Jobs in hand then get [`HANDBACK_GRACE`] to
    /// finish; the rest are stopped and handed back (queued again, their attempt not counted) so that
    /// another runner takes them at once instead of waiting for the lease to run out. Stopping a job
    /// half-way is safe: every job step converges when run again.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let kinds = self.handlers.kinds();
        let mut listener = crate::db::listener(&self.db).await?;
        listener.listen("berth_jobs").await?;
        let mut running = JoinSet::new();
        tracing::info!(runner = %self.id, ?kinds, "job runner started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            while let Some(done) = running.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "job task panicked");
                }
            }
            if running.len() < self.concurrency {
                match self.claim(&kinds).await {
                    Ok(Some(job)) => {
                        let ctx = JobCtx { db: self.db.clone(), job, runner: self.id.clone() };
                        running.spawn(execute(ctx, self.handlers.clone(), self.lease));
                        continue;
                    }
                    Ok(None) => {}
                    // The database may be restarting: keep the runner alive and try again shortly.
                    Err(e) => tracing::warn!(error = %e, "could not claim a job"),
                }
            }
            // Idle (or full): wait for a notification, a finished job, a tick, or shutdown.
            tokio::select! {
                notified = listener.recv() => if notified.is_err() {
                    // The listener reconnects on its next use; do not spin while the database is away.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                },
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
        let grace = tokio::time::sleep(HANDBACK_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                () = &mut grace => {
                    running.abort_all();
                    while running.join_next().await.is_some() {}
                    break;
                }
            }
        }
        self.hand_back().await;
        Ok(())
    }

    /// Queues this runner's unfinished jobs again and wakes the other runners.
    async fn hand_back(&self) {
        let handed: Result<Vec<Uuid>, _> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL, run_after = now(),
                    attempts = greatest(attempts - 1, 0), updated_at = now()
              WHERE lease_owner = $1 AND state = 'running'
          RETURNING id",
        )
        .bind(&self.id)
        .fetch_all(&self.db)
        .await;
        match handed {
            Ok(ids) if !ids.is_empty() => {
                for id in &ids {
                    let line = format!("handed back by {} on shutdown; another runner takes it over", self.id);
                    let _ = sqlx::query("INSERT INTO job_logs (job_id, line) VALUES ($1, $2)")
                        .bind(id)
                        .bind(line)
                        .execute(&self.db)
                        .await;
                }
                let _ = sqlx::query("SELECT pg_notify('berth_jobs', '')").execute(&self.db).await;
                tracing::info!(jobs = ids.len(), "handed unfinished jobs back");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not hand jobs back; they resume when their leases run out"),
        }
    }

    async fn claim(&self, kinds: &[String]) -> anyhow::Result<Option<Claimed>> {
        // The `job.running` event is written by the same statement: whoever sees the job running sees
        // the event too (a stream that ends at shutdown still sends it).
        let job: Option<Claimed> = sqlx::query_as(
            "WITH claimed AS (
             UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2),
                    attempts = attempts + 1, updated_at = now()
              WHERE id = (
                    SELECT j.id FROM jobs j
                     WHERE j.kind = ANY($3)
                       AND ((j.state = 'queued' AND j.run_after <= now())
                            OR (j.state = 'running' AND j.lease_expires_at < now()))
                       AND NOT EXISTS (SELECT 1 FROM jobs e
                                        WHERE e.target_id = j.target_id AND e.id < j.id AND e.state IN ('queued', 'running'))
                     ORDER BY j.id
                     LIMIT 1
                       FOR UPDATE SKIP LOCKED)
          RETURNING id, tenant_id, kind, target_type, target_id, payload, attempts, max_attempts),
             running AS (
             INSERT INTO events (tenant_id, kind, target_type, target_id, data)
             SELECT tenant_id, 'job.running', target_type, target_id, jsonb_build_object('job_id', id, 'kind', kind) FROM claimed)
             SELECT * FROM claimed",
        )
        .bind(&self.id)
        .bind(self.lease.as_secs_f64())
        .bind(kinds)
        .fetch_optional(&self.db)
        .await?;
        Ok(job)
    }
}

/// Runs one claimed job under a heartbeat, then records the outcome.
async fn execute(ctx: JobCtx, handlers: Arc<Handlers>, lease: Duration) {
    let Some(handler) = handlers.0.get(ctx.job.kind.as_str()) else { return };
    let target = Target { tenant_id: ctx.job.tenant_id, kind: &ctx.job.target_type, id: ctx.job.target_id };
    let _ = ctx.log(&format!("attempt {} of {} by {}", ctx.job.attempts, ctx.job.max_attempts, ctx.runner)).await;

    let work = (handler.run)(ctx.clone());
    let outcome = tokio::select! {
        r = work => Some(r),
        () = heartbeat(&ctx, lease) => None,
    };
    let Some(result) = outcome else {
        tracing::warn!(job = %ctx.job.id, "lost the lease; another runner will take the job over");
        return;
    };
    match result {
        Ok(()) => {
            let done = sqlx::query(
                "UPDATE jobs SET state = 'succeeded', step = 'done', percent = 100, finished_at = now(), updated_at = now(),
                        lease_owner = NULL, lease_expires_at = NULL, last_error = NULL
                  WHERE id = $1 AND lease_owner = $2",
            )
            .bind(ctx.job.id)
            .bind(&ctx.runner)
            .execute(&ctx.db)
            .await;
            if let Err(e) = done {
                tracing::error!(job = %ctx.job.id, error = %e, "could not record success");
            }
            let _ = log_event(&ctx, &target, "job.succeeded").await;
        }
        Err(e) => {
            let error = format!("{e:#}");
            let _ = ctx.log(&format!("error: {error}")).await;
            let state: Result<Option<String>, _> = sqlx::query_scalar(
                "UPDATE jobs
                    SET state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                        finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
                        run_after = now() + make_interval(secs => least(60, 2 ^ attempts)),
                        last_error = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                  WHERE id = $1 AND lease_owner = $2
              RETURNING state",
            )
            .bind(ctx.job.id)
            .bind(&ctx.runner)
            .bind(&error)
            .fetch_optional(&ctx.db)
            .await;
            match state {
                Ok(Some(s)) if s == "failed" => {
                    let _ = log_event(&ctx, &target, "job.failed").await;
                    if let Err(e) = (handler.failed)(ctx.clone(), error).await {
                        tracing::error!(job = %ctx.job.id, error = %e, "failure hook failed");
                    }
                }
                Ok(_) => tracing::warn!(job = %ctx.job.id, %error, "job failed; will retry"),
                Err(e) => tracing::error!(job = %ctx.job.id, error = %e, "could not record failure"),
            }
        }
    }
}

/// Renews the lease every third of its length; returns only when the lease is lost.
async fn heartbeat(ctx: &JobCtx, lease: Duration) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let renewed = sqlx::query(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3) WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(ctx.job.id)
        .bind(&ctx.runner)
        .bind(lease.as_secs_f64())
        .execute(&ctx.db)
        .await;
        match renewed {
            Ok(r) if r.rows_affected() == 1 => {}
            Ok(_) => return,
            // A database hiccup is not a lost lease: try again at the next beat.
            Err(e) => tracing::warn!(job = %ctx.job.id, error = %e, "heartbeat failed"),
        }
    }
}

async fn log_event(ctx: &JobCtx, target: &Target<'_>, kind: &str) -> anyhow::Result<()> {
    let mut conn = ctx.db.acquire().await?;
    emit(&mut conn, target, kind, serde_json::json!({ "job_id": ctx.job.id, "kind": ctx.job.kind })).await?;
    Ok(())
}
