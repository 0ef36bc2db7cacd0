//! Automatic abort: every few seconds, each running release with an `auto_abort` rule is checked
//! against what the routers saw its copies answer over the rule's window, and against its copies'
//! health: a copy service with no running task, or copies that failed the routers' health checks for
//! the whole window (they then get no request, so their error rate alone would never tell). A release that breaks its rule is aborted as `POST /releases/{id}/abort` would, with the
//! reason as its message and on the event stream.

use std::time::Duration;

use berth_types::AutoAbort;
use sqlx::PgPool;
use tokio::sync::watch;

use super::store::{RELEASE_COLUMNS, ReleaseRow};

/// How often releases are checked.
const INTERVAL: Duration = Duration::from_secs(2);

/// What the routers' health checks said of a release's copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyHealth {
    /// Whether every sample over the window had no copy up and some down.
    pub down_throughout: bool,
    /// Whether the samples cover the whole window (the first is older than the window).
    pub window_covered: bool,
}

/// Why a release with this rule should abort, given its copies' answers over the window, a copy
/// service with no running task (and the engine's error), if any, and its copies' health.
pub fn verdict(rule: &AutoAbort, requests: i64, errors: i64, down: Option<(&str, &str)>, health: CopyHealth) -> Option<String> {
    if let Some((service, error)) = down {
        let error = if error.is_empty() { String::new() } else { format!(": {error}") };
        return Some(format!("aborted on its own: the new revision's {service} has no running task{error}"));
    }
    if health.down_throughout && health.window_covered {
        return Some(format!(
            "aborted on its own: the new revision's tasks failed the routers' health checks for the last {} s",
            rule.window_secs
        ));
    }
    if requests >= rule.min_requests && requests > 0 {
        let rate = errors as f64 / requests as f64;
        if rate > rule.max_error_rate {
            return Some(format!(
                "aborted on its own: {errors} of {requests} answers ({:.0}%) of the new revision in the last {} s were 5xx; the limit is {:.0}%",
                rate * 100.0,
                rule.window_secs,
                rule.max_error_rate * 100.0
            ));
        }
    }
    None
}

/// Checks releases until `shutdown` turns true.
pub async fn run(db: PgPool, mut shutdown: watch::Receiver<bool>) {
    crate::supervise::every("checking releases for automatic abort", INTERVAL, &mut shutdown, || async {
        check(&db).await?;
        compact_traffic(&db).await?;
        Ok(())
    })
    .await;
}

/// Routers write a row of copy traffic per reading (every few seconds while copies get requests).
/// Rows older than any rule's window (an hour at most) and the console's last minute only feed the
/// release's totals: they are summed into one row per release and router, so a canary left running
/// for weeks keeps a few hundred rows, not hundreds of thousands. Returns the rows removed.
pub async fn compact_traffic(db: &PgPool) -> sqlx::Result<u64> {
    let removed: i64 = sqlx::query_scalar(
        "WITH crowded AS (
             SELECT release_id, router FROM release_traffic WHERE at < now() - interval '2 hours'
              GROUP BY release_id, router HAVING count(*) > 1),
         old AS (
             DELETE FROM release_traffic t USING crowded c
              WHERE t.release_id = c.release_id AND t.router = c.router AND t.at < now() - interval '2 hours'
          RETURNING t.release_id, t.tenant_id, t.router, t.at, t.requests, t.responses_5xx),
         summed AS (
             INSERT INTO release_traffic (release_id, tenant_id, router, at, requests, responses_5xx)
             SELECT release_id, tenant_id, router, max(at), sum(requests), sum(responses_5xx) FROM old
              GROUP BY release_id, tenant_id, router
          RETURNING 1)
         SELECT (SELECT count(*) FROM old) - (SELECT count(*) FROM summed)",
    )
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(removed).unwrap_or(0))
}

async fn check(db: &PgPool) -> anyhow::Result<()> {
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM releases WHERE state = 'running' AND auto_abort IS NOT NULL").fetch_all(db).await?;
    for id in ids {
        let mut tx = db.begin().await?;
        // Locked and read again: another Berth may be checking, or the release may have moved on.
        let row: Option<ReleaseRow> = sqlx::query_as(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1 AND state = 'running' FOR UPDATE SKIP LOCKED"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { continue };
        let Some(rule) = row.auto_abort.as_ref().map(|a| a.0) else { continue };
        let (requests, errors): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(requests), 0)::int8, coalesce(sum(responses_5xx), 0)::int8 FROM release_traffic
              WHERE release_id = $1 AND at > now() - make_interval(secs => $2)",
        )
        .bind(id)
        .bind(f64::from(rule.window_secs))
        .fetch_one(&mut *tx)
        .await?;
        let down: Option<(String, String)> = sqlx::query_as(
            "SELECT name, message FROM services WHERE release_id = $1 AND status = 'failed' ORDER BY name LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        // Samples older than twice the window serve no rule.
        sqlx::query("DELETE FROM release_health WHERE release_id = $1 AND at < now() - make_interval(secs => $2)")
            .bind(id)
            .bind(f64::from(rule.window_secs) * 2.0 + 60.0)
            .execute(&mut *tx)
            .await?;
        let (samples, up, healthy_samples, covered): (i64, i64, i64, bool) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE at > now() - make_interval(secs => $2)),
                    coalesce(sum(up) FILTER (WHERE at > now() - make_interval(secs => $2)), 0)::int8,
                    count(*) FILTER (WHERE at > now() - make_interval(secs => $2) AND down = 0),
                    coalesce(min(at) < now() - make_interval(secs => $2), false)
               FROM release_health WHERE release_id = $1",
        )
        .bind(id)
        .bind(f64::from(rule.window_secs))
        .fetch_one(&mut *tx)
        .await?;
        let health = CopyHealth { down_throughout: samples > 0 && up == 0 && healthy_samples == 0, window_covered: covered };
        let down = down.as_ref().map(|(s, e)| (s.as_str(), e.as_str()));
        let Some(why) = verdict(&rule, requests, errors, down, health) else {
            continue;
        };
        tracing::info!(release = %id, why, "aborting a release");
        super::api::begin_abort(&mut tx, &row, &why).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: AutoAbort = AutoAbort { max_error_rate: 0.1, window_secs: 30, min_requests: 20 };
    const FINE: CopyHealth = CopyHealth { down_throughout: false, window_covered: true };

    #[test]
    fn aborts_on_errors_over_the_rate_once_enough_requests_were_seen() {
        assert_eq!(verdict(&RULE, 10, 10, None, FINE), None, "too few requests to judge");
        assert_eq!(verdict(&RULE, 100, 10, None, FINE), None, "at the limit");
        let why = verdict(&RULE, 100, 11, None, FINE).unwrap();
        assert!(why.contains("11 of 100") && why.contains("10%"), "{why}");
    }

    #[test]
    fn aborts_when_a_copy_has_no_running_task() {
        let why = verdict(&RULE, 0, 0, Some(("web", "exec format error")), FINE).unwrap();
        assert!(why.contains("web has no running task: exec format error"), "{why}");
    }

    #[test]
    fn aborts_when_the_copies_failed_their_health_checks_for_the_whole_window() {
        let down = CopyHealth { down_throughout: true, window_covered: true };
        let why = verdict(&RULE, 0, 0, None, down).unwrap();
        assert!(why.contains("failed the routers' health checks for the last 30 s"), "{why}");
        let young = CopyHealth { down_throughout: true, window_covered: false };
        assert_eq!(verdict(&RULE, 0, 0, None, young), None, "down for less than the window");
    }
}
