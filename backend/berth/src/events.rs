//! The change feed's fan-out: one `LISTEN berth_events` per process feeds every open event stream.
//!
//! A trigger announces each new event (`<tenant>:<id>`, see the migration `event_notify`). The hub's
//! listener reads the announced row once and broadcasts it to the streams of that tenant, so a change
//! costs one query per process however many consoles are open, and reaches them as soon as it commits.
//! Streams read the table themselves only to catch up: when they open (from `Last-Event-ID`), when
//! they fell behind the broadcast buffer, after the listener reconnected (announcements sent while it
//! was away are lost), and on a slow timer as a safety net.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_types::Event;
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

pub const CHANNEL: &str = "berth_events";

/// Events buffered per tenant for streams that are momentarily behind; a stream further behind reads
/// the table instead.
const BUFFER: usize = 256;

/// How streams learn of new events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Delivery {
    /// One LISTEN per process, fanned out to every stream.
    #[default]
    Listen,
    /// Each stream polls the table every 500 ms: the design before the hub, kept for the benchmark
    /// that compares the two (`make bench-events`).
    Poll,
}

#[derive(sqlx::FromRow)]
pub struct EventRow {
    id: i64,
    kind: String,
    target_type: String,
    target_id: Option<Uuid>,
    data: serde_json::Value,
    at: DateTime<Utc>,
}

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Self {
        Event { id: r.id, kind: r.kind, target_type: r.target_type, target_id: r.target_id, data: r.data, at: r.at }
    }
}

/// Up to `limit` of the tenant's events after `after`, oldest first.
pub async fn after(db: &PgPool, tenant: Uuid, after: i64, limit: i64) -> sqlx::Result<Vec<Event>> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, kind, target_type, target_id, data, at FROM events WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The tenant's latest `limit` events, newest first.
pub async fn latest(conn: &mut sqlx::PgConnection, tenant: Uuid, limit: i64) -> sqlx::Result<Vec<Event>> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, kind, target_type, target_id, data, at FROM events WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(tenant)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub struct EventHub {
    pub delivery: Delivery,
    tenants: Mutex<HashMap<Uuid, broadcast::Sender<Arc<Event>>>>,
    /// Bumped whenever announcements may have been missed (the listener reconnected).
    resync: watch::Sender<u64>,
}

/// What a stream listens to.
pub struct Subscription {
    pub events: broadcast::Receiver<Arc<Event>>,
    pub resync: watch::Receiver<u64>,
}

impl EventHub {
    /// Creates the hub and, with [`Delivery::Listen`], starts its listener on the current runtime.
    pub fn start(db: PgPool, delivery: Delivery) -> Arc<Self> {
        let hub = Arc::new(EventHub { delivery, tenants: Mutex::new(HashMap::new()), resync: watch::Sender::new(0) });
        if delivery == Delivery::Listen {
            tokio::spawn(listen(db, Arc::downgrade(&hub)));
        }
        hub
    }

    /// Subscribes to a tenant's new events. Subscribe *before* reading the table to catch up, so that
    /// nothing committed in between is missed (duplicates are dropped by id).
    pub fn subscribe(&self, tenant: Uuid) -> Subscription {
        let mut tenants = self.tenants.lock().expect("event hub");
        // Tenants whose streams have all closed need no channel.
        tenants.retain(|_, tx| tx.receiver_count() > 0);
        let events = tenants.entry(tenant).or_insert_with(|| broadcast::channel(BUFFER).0).subscribe();
        Subscription { events, resync: self.resync.subscribe() }
    }

    fn sender(&self, tenant: Uuid) -> Option<broadcast::Sender<Arc<Event>>> {
        let tenants = self.tenants.lock().expect("event hub");
        tenants.get(&tenant).filter(|tx| tx.receiver_count() > 0).cloned()
    }

    /// Open streams, for `/metrics` and the benchmark.
    pub fn streams(&self) -> usize {
        self.tenants.lock().expect("event hub").values().map(|tx| tx.receiver_count()).sum()
    }
}

/// The listener: runs until the hub is dropped, reconnecting when the database connection is lost.
async fn listen(db: PgPool, hub: std::sync::Weak<EventHub>) {
    loop {
        // Berth is shutting down: nothing to reconnect for.
        if db.is_closed() {
            return;
        }
        let mut listener = match crate::db::listener(&db).await {
            Ok(l) => l,
            Err(_) if db.is_closed() => return,
            Err(e) => {
                tracing::warn!(error = %e, "event listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if hub.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "event listener cannot LISTEN; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Whatever was announced while we were not listening is lost: streams read the table instead.
        match hub.upgrade() {
            Some(h) => h.resync.send_modify(|n| *n += 1),
            None => return,
        }
        loop {
            let notification = match listener.try_recv().await {
                Ok(Some(n)) => n,
                // `None`: the connection was lost (sqlx reconnects on the next call, but announcements
                // in between are gone). Start over, which also tells streams to catch up.
                Ok(None) => break,
                Err(_) if db.is_closed() => return,
                Err(e) => {
                    tracing::warn!(error = %e, "event listener lost its connection");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            };
            let Some(hub) = hub.upgrade() else { return };
            let Some((tenant, id)) = parse(notification.payload()) else { continue };
            let Some(tx) = hub.sender(tenant) else { continue };
            let row: sqlx::Result<Option<EventRow>> =
                sqlx::query_as("SELECT id, kind, target_type, target_id, data, at FROM events WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&db)
                    .await;
            match row {
                Ok(Some(row)) => {
                    let _ = tx.send(Arc::new(row.into()));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading an announced event failed; streams will catch up");
                    hub.resync.send_modify(|n| *n += 1);
                }
            }
        }
    }
}

fn parse(payload: &str) -> Option<(Uuid, i64)> {
    let (tenant, id) = payload.split_once(':')?;
    Some((tenant.parse().ok()?, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_a_tenant_and_an_event() {
        let t = Uuid::now_v7();
        assert_eq!(parse(&format!("{t}:42")), Some((t, 42)));
        assert_eq!(parse(":42"), None, "platform events have no tenant stream");
        assert_eq!(parse("garbage"), None);
    }
}
