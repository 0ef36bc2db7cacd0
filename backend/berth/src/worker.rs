//! `berth worker`: the process role that runs queued jobs.
//!
//! This is the foundation's shape of it: the process connects, waits for migrations, and stays up until
//! told to stop. Claiming jobs (`FOR UPDATE SKIP LOCKED`, leases, heartbeats, retries) and the job
//! handlers that drive real Swarm clusters arrive with the clusters issue; until then queued jobs stay
//! `queued`, visible at `/api/v1/jobs/{id}`.

use sqlx::PgPool;

pub async fn run(
    db: &PgPool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    crate::db::wait_for_migrations(db).await?;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'queued'")
        .fetch_one(db)
        .await?;
    tracing::info!(
        queued,
        "worker ready; no job kinds are handled by this version yet"
    );
    shutdown.await;
    Ok(())
}
