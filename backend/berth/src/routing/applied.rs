//! How far each router has followed the route table (`routers`), for work that must know a change
//! is served before going on (an ACME authority checks an HTTP-01 challenge once, so the challenge
//! must be on every router first), and for operators: which routers serve, fail, were stopped or are
//! gone.

use std::time::Duration;

use berth_types::{Router, RouterState};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A router not seen for this long is gone (it reports every resync, two seconds).
const GONE_AFTER_SECS: f64 = 10.0;

/// The database's time now: taken before reading the table, it is what [`report`] records.
pub async fn now(db: &PgPool) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT now()").fetch_one(db).await
}

/// Records that router `name` serves the table as it was when a read began at `read_at`; rows of
/// routers gone for a day are removed on the way.
pub async fn report(db: &PgPool, name: &str, read_at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "WITH gone AS (DELETE FROM routers WHERE seen_at < now() - interval '1 day')
         INSERT INTO routers (name, applied_at, seen_at) VALUES ($1, $2, now())
         ON CONFLICT (name) DO UPDATE
            SET applied_at = greatest(routers.applied_at, excluded.applied_at), seen_at = now(), error = NULL,
                stopped_at = NULL",
    )
    .bind(name)
    .bind(read_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Records that router `name` is alive but could not apply the newest table, and why: it keeps
/// serving the one it had, so work waiting for the newest one keeps waiting for it. A router that
/// never served has nothing to record.
pub async fn failed(db: &PgPool, name: &str, error: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE routers SET seen_at = now(), error = $2, stopped_at = NULL WHERE name = $1")
        .bind(name)
        .bind(error)
        .execute(db)
        .await?;
    Ok(())
}

/// Records that router `name` stopped because it was asked to: listed as stopped rather than gone,
/// and no longer waited for.
pub async fn stopped(db: &PgPool, name: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE routers SET stopped_at = now() WHERE name = $1").bind(name).execute(db).await?;
    Ok(())
}

/// Every router seen in the last day, by name.
pub async fn list(db: &PgPool) -> sqlx::Result<Vec<Router>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        name: String,
        applied_at: DateTime<Utc>,
        seen_at: DateTime<Utc>,
        error: Option<String>,
        stopped: bool,
        at_work: bool,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT name, applied_at, seen_at, error, stopped_at IS NOT NULL AS stopped,
                seen_at > now() - make_interval(secs => $1) AS at_work
           FROM routers ORDER BY name",
    )
    .bind(GONE_AFTER_SECS)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Router {
            state: match (r.at_work, &r.error) {
                _ if r.stopped => RouterState::Stopped,
                (false, _) => RouterState::Gone,
                (true, Some(_)) => RouterState::Failing,
                (true, None) => RouterState::Serving,
            },
            name: r.name,
            applied_at: r.applied_at,
            seen_at: r.seen_at,
            error: r.error,
        })
        .collect())
}

/// The routers at work (seen lately and not stopped) that do not serve yet what was written before
/// `since`.
pub async fn behind(db: &PgPool, since: DateTime<Utc>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT name FROM routers
          WHERE seen_at > now() - make_interval(secs => $2) AND stopped_at IS NULL AND applied_at < $1 ORDER BY name",
    )
    .bind(since)
    .bind(GONE_AFTER_SECS)
    .fetch_all(db)
    .await
}

/// Waits (at most `patience`) until every router at work serves what was written before `since`;
/// returns those still behind then (none when all caught up).
pub async fn wait_served(db: &PgPool, since: DateTime<Utc>, patience: Duration) -> sqlx::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let behind = behind(db, since).await?;
        if behind.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(behind);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
