//! Connecting to Postgres (configured or embedded) and running migrations.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::config::DbConfig;
use crate::embedded_pg::EmbeddedPostgres;

/// The schema, embedded at build time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// A database connection plus, in the embedded default, the server process behind it.
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `BERTH_DATABASE_URL`, or starts the embedded server when it is unset.
    pub async fn open(cfg: &DbConfig) -> anyhow::Result<Self> {
        let (options, embedded) = match &cfg.database_url {
            Some(url) => {
                let opts = PgConnectOptions::from_str(url).context("BERTH_DATABASE_URL is not a valid Postgres URL")?;
                (opts.disable_statement_logging(), None)
            }
            None => {
                let pg = EmbeddedPostgres::start(&cfg.data_dir, cfg.postgres_bin.as_deref()).await?;
                (pg.connect_options(), Some(pg))
            }
        };
        let pool = match connect(options, cfg.pool_size()).await {
            Ok(pool) => pool,
            Err(e) => {
                if let Some(pg) = embedded {
                    pg.stop().await;
                }
                return Err(e);
            }
        };
        Ok(Database { pool, embedded })
    }

    /// Closes the pool and stops the embedded server, if any.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop().await;
        }
    }
}

pub async fn connect(options: PgConnectOptions, size: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("connecting to Postgres")
}

/// Applies pending migrations. sqlx takes a Postgres advisory lock around this, so several Berth
/// processes starting at once apply each migration exactly once.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("running migrations")
}

/// Whether every migration this binary knows has been applied (and none failed half-way).
pub async fn migrations_done(pool: &PgPool) -> anyhow::Result<bool> {
    let table_exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    if !table_exists {
        return Ok(false);
    }
    let applied: HashSet<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await?.into_iter().collect();
    Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
}

/// Waits (polling) until another process has applied the migrations; used by `berth worker`.
pub async fn wait_for_migrations(pool: &PgPool) -> anyhow::Result<()> {
    let mut logged = false;
    loop {
        if migrations_done(pool).await? {
            return Ok(());
        }
        if !logged {
            tracing::info!("waiting for migrations (run `berth migrate` or `berth serve`)");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
