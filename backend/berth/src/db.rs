//! Connecting to Postgres (configured or embedded), the two pools and their tenant scoping, and
//! running migrations.

use std::collections::HashSet;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres};

use crate::config::DbConfig;
use uuid::Uuid;

use crate::embedded_pg::EmbeddedPostgres;

/// The schema, embedded at build time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

tokio::task_local! {
    /// The tenant whose rows the tenant pool may show in this task; see [`scoped`].
    static TENANT: Option<Uuid>;
}

/// Runs `work` with the tenant pool scoped to `tenant`: every connection it takes from
/// [`Pools::tenant`] sees and writes only that tenant's rows (row-level security, see the migration
/// `row_level_security`). With `None`, or outside any scope, the tenant pool shows no tenant rows at all.
pub async fn scoped<F: Future>(tenant: Option<Uuid>, work: F) -> F::Output {
    TENANT.scope(tenant, work).await
}

fn current_tenant() -> Option<Uuid> {
    TENANT.try_with(|t| *t).ok().flatten()
}

/// Connections older than this idle are checked before use; busier ones are trusted (a failed query on
/// a dead connection drops it). Checking every time cost a round trip per query.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// Berth's two connection pools.
///
/// Architecture invariant: request handlers working on a tenant's objects use `tenant`, whose
/// connections are scoped to the caller's tenant each time one is taken, so the database itself
/// refuses to show or write another tenant's rows. Only paths that work across tenants use `system`,
/// whose connections bypass row-level security: authentication, platform administration, audit, jobs,
/// reconcilers and the event hub. Using `system` is the visible exception.
#[derive(Clone)]
pub struct Pools {
    pub tenant: PgPool,
    pub system: PgPool,
}

impl Pools {
    /// Creates both pools without connecting yet.
    pub fn lazy(options: PgConnectOptions, size: u32) -> Pools {
        // Requests hold their tenant connection for the whole handler, so this pool is the larger.
        let tenant = PgPoolOptions::new()
            .max_connections(size * 2)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Superusers ignore row-level security: act as the unprivileged role instead.
                    let superuser: bool = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                        .fetch_one(&mut *conn)
                        .await?;
                    if superuser {
                        sqlx::query("SET ROLE berth_tenant").execute(&mut *conn).await?;
                    }
                    set_tenant(conn).await
                })
            })
            // Every time a connection is taken: scope it to the taking task's tenant. The statement also
            // proves the connection alive, in place of sqlx's ping.
            .before_acquire(|conn, _| Box::pin(async move { set_tenant(conn).await.map(|()| true) }))
            .connect_lazy_with(options.clone());
        let system = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SELECT set_config('berth.rls_bypass', 'on', false)").execute(conn).await?;
                    Ok(())
                })
            })
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        Pools { tenant, system }
    }

    pub async fn close(&self) {
        self.tenant.close().await;
        self.system.close().await;
    }
}

async fn set_tenant(conn: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    let tenant = current_tenant().map(|t| t.to_string()).unwrap_or_default();
    sqlx::query("SELECT set_config('berth.tenant_id', $1, false)").bind(tenant).execute(conn).await?;
    Ok(())
}

/// A database connection plus, in the embedded default, the server process behind it.
pub struct Database {
    pub pools: Pools,
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
        let pools = Pools::lazy(options, cfg.pool_size());
        // Fail now, with one clear line, rather than on the first request.
        if let Err(e) = pools.system.acquire().await.context("connecting to Postgres") {
            if let Some(pg) = embedded {
                pg.stop().await;
            }
            return Err(e);
        }
        Ok(Database { pools, embedded })
    }

    /// Closes the pools and stops the embedded server, if any.
    pub async fn close(self) {
        self.pools.close().await;
        if let Some(pg) = self.embedded {
            pg.stop().await;
        }
    }
}

/// Applies pending migrations. sqlx takes a Postgres advisory lock around this, so several Berth
/// processes starting at once apply each migration exactly once.
/// A `LISTEN` connection of its own, outside `pool` but made with its settings. A listener holds its
/// connection for as long as it lives; taken from the pool (`PgListener::connect_with`), Berth's
/// three (job runner, router, event hub) left one connection of the default four on a two-core
/// machine for authentication, jobs, reconcilers and the router's table reads, and requests waited
/// for it until they timed out.
pub async fn listener(pool: &PgPool) -> sqlx::Result<sqlx::postgres::PgListener> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with((*pool.connect_options()).clone())
        .await?;
    sqlx::postgres::PgListener::connect_with(&own).await
}

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

/// A handler's connection to the tenant pool, scoped to the caller's tenant when it is taken. Handlers
/// run all their tenant queries on it, one after another: the scope is set once per request rather
/// than once per query, and a request never waits for a second connection while holding one.
pub struct TenantDb(PoolConnection<Postgres>);

impl axum::extract::FromRequestParts<crate::state::AppState> for TenantDb {
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        TenantDb::acquire(state).await
    }
}

impl TenantDb {
    /// Takes a connection again, for a handler that gave its first one back during a slow call
    /// outside the database.
    pub async fn acquire(state: &crate::state::AppState) -> Result<TenantDb, crate::error::ApiError> {
        Ok(TenantDb(state.db.acquire().await?))
    }

    /// Starts a transaction on this connection (the tenant scope holds inside it).
    pub async fn begin(&mut self) -> sqlx::Result<sqlx::Transaction<'_, Postgres>> {
        Connection::begin(&mut *self.0).await
    }
}

impl std::ops::Deref for TenantDb {
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &sqlx::PgConnection {
        &self.0
    }
}

impl std::ops::DerefMut for TenantDb {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        &mut self.0
    }
}
