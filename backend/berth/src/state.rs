//! Everything a request handler needs, passed explicitly (no globals), so tests can build their own.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::api::metrics::Metrics;
use crate::config::{ExistingPolicy, SecurityConfig};
use crate::crypto::Keys;
use crate::events::{Delivery, EventHub};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub db: PgPool,
    pub keys: Keys,
    pub security: SecurityConfig,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// Which `existing` swarms tenants may register.
    pub existing: ExistingPolicy,
    /// New events for the open event streams.
    pub events: Arc<EventHub>,
    /// Turns true when the server begins to shut down: long-lived responses (event streams) end.
    shutdown: watch::Sender<bool>,
}

impl AppState {
    /// Builds the state; starts the event hub's listener on the current runtime.
    pub fn new(
        db: PgPool,
        keys: Keys,
        security: SecurityConfig,
        max_body_bytes: usize,
        existing: ExistingPolicy,
        delivery: Delivery,
    ) -> Self {
        let events = EventHub::start(db.clone(), delivery);
        AppState(Arc::new(Inner {
            db,
            keys,
            security,
            metrics: Metrics::default(),
            max_body_bytes,
            existing,
            events,
            shutdown: watch::Sender::new(false),
        }))
    }

    /// Tells long-lived responses that the server is stopping.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves when the server begins to shut down.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
