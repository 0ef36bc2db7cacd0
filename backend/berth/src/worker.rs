//! Job workers: the job runner with every job kind this version handles. `berth worker` runs only
//! this; `berth serve` runs it beside the API.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::clusters::{self, WorkerEnv};
use crate::jobs::runner::Runner;

/// Runs jobs until `shutdown` turns true.
pub async fn run(db: PgPool, env: Arc<WorkerEnv>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    crate::db::wait_for_migrations(&db).await?;
    let runner = Runner::new(db, clusters::handlers(env));
    runner.run(shutdown).await
}
