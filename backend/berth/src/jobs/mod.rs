//! The job queue's producer side. The API writes desired state and the job that carries it out in the
//! same transaction (so a job exists if and only if the change committed), together with an event for
//! the tenant's change feed.
//!
//! The consumer side — claiming with `FOR UPDATE SKIP LOCKED`, leases and heartbeats, retries with
//! backoff — is [`runner`]; it runs in `berth worker` and in `berth serve`.

pub mod runner;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// What a job acts on.
pub struct Target<'a> {
    pub tenant_id: Option<Uuid>,
    pub kind: &'a str,
    pub id: Uuid,
}

/// Queues a job of `kind` (e.g. `cluster.create`) and records the matching event. Returns the job id.
pub async fn enqueue(tx: &mut PgConnection, target: Target<'_>, kind: &str, payload: Value) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO jobs (id, tenant_id, kind, target_type, target_id, payload) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(target.tenant_id)
        .bind(kind)
        .bind(target.kind)
        .bind(target.id)
        .bind(&payload)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO job_logs (job_id, line) VALUES ($1, $2)")
        .bind(id)
        .bind(format!("queued {kind} for {} {}", target.kind, target.id))
        .execute(&mut *tx)
        .await?;
    emit(tx, &target, "job.queued", serde_json::json!({ "job_id": id, "kind": kind })).await?;
    // Wakes idle runners as soon as the transaction commits (and not before).
    sqlx::query("SELECT pg_notify('berth_jobs', $1)").bind(id.to_string()).execute(&mut *tx).await?;
    Ok(id)
}

/// Appends an event to the tenant's change feed.
pub async fn emit(tx: &mut PgConnection, target: &Target<'_>, kind: &str, data: Value) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO events (tenant_id, kind, target_type, target_id, data) VALUES ($1, $2, $3, $4, $5)")
        .bind(target.tenant_id)
        .bind(kind)
        .bind(target.kind)
        .bind(target.id)
        .bind(data)
        .execute(tx)
        .await?;
    Ok(())
}
