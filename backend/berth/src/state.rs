//! Everything a request handler needs, passed explicitly (no globals), so tests can build their own.

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::watch;

use crate::api::metrics::Metrics;
use crate::config::{ExistingPolicy, SecurityConfig};
use crate::crypto::Keys;
use crate::db::Pools;
use crate::events::{Delivery, EventHub};
use crate::registry::Registry;
use crate::registry::external::ExternalRegistryPolicy;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    /// The tenant pool: scoped to the caller's tenant in every request (see [`crate::db::Pools`]).
    pub db: PgPool,
    /// The system pool, which bypasses row-level security: only for work across tenants.
    pub system: PgPool,
    pub keys: Keys,
    pub security: SecurityConfig,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// Which `existing` swarms tenants may register.
    pub existing: ExistingPolicy,
    /// Where tenants' external registries may be.
    pub external: ExternalRegistryPolicy,
    /// New events for the open event streams.
    pub events: Arc<EventHub>,
    /// Turns true when the server begins to shut down: long-lived responses (event streams) end.
    shutdown: watch::Sender<bool>,
    /// Default domains and route URLs.
    pub routing: crate::routing::Routing,
    /// The built-in registry, once this process runs it (see [`crate::registry::start`]).
    registry: OnceLock<Arc<Registry>>,
    /// How this process reaches clusters' engines (for requests answered by an engine, such as logs).
    clusters: OnceLock<Arc<crate::clusters::WorkerEnv>>,
}

impl AppState {
    /// Builds the state; starts the event hub's listener on the current runtime.
    #[allow(clippy::too_many_arguments)] // each is one setting of `berth serve`; two callers
    pub fn new(
        pools: Pools,
        keys: Keys,
        security: SecurityConfig,
        max_body_bytes: usize,
        existing: ExistingPolicy,
        external: ExternalRegistryPolicy,
        delivery: Delivery,
        routing: crate::routing::Routing,
    ) -> Self {
        let events = EventHub::start(pools.system.clone(), delivery);
        AppState(Arc::new(Inner {
            db: pools.tenant,
            system: pools.system,
            keys,
            security,
            metrics: Metrics::default(),
            max_body_bytes,
            existing,
            external,
            events,
            routing,
            shutdown: watch::Sender::new(false),
            registry: OnceLock::new(),
            clusters: OnceLock::new(),
        }))
    }

    /// The pool for a caller's own objects: the tenant pool for a tenant's users, the system pool for
    /// platform admins, who belong to no tenant and work across tenants.
    pub fn pool_for(&self, me: &crate::auth::Principal) -> &PgPool {
        if me.tenant_id.is_some() { &self.db } else { &self.system }
    }

    /// The built-in registry, when this process runs it.
    pub fn registry(&self) -> Option<Arc<Registry>> {
        self.registry.get().cloned()
    }

    pub fn set_registry(&self, registry: Arc<Registry>) {
        let _ = self.registry.set(registry);
    }

    /// How this process reaches clusters' engines, once set.
    pub fn clusters(&self) -> Option<Arc<crate::clusters::WorkerEnv>> {
        self.clusters.get().cloned()
    }

    pub fn set_clusters(&self, env: Arc<crate::clusters::WorkerEnv>) {
        let _ = self.clusters.set(env);
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
