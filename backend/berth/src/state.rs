//! Everything a request handler needs, passed explicitly (no globals), so tests can build their own.

use std::sync::Arc;

use sqlx::PgPool;

use crate::api::metrics::Metrics;
use crate::config::{ExistingPolicy, SecurityConfig};
use crate::crypto::Keys;

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
}

impl AppState {
    pub fn new(db: PgPool, keys: Keys, security: SecurityConfig, max_body_bytes: usize, existing: ExistingPolicy) -> Self {
        AppState(Arc::new(Inner { db, keys, security, metrics: Metrics::default(), max_body_bytes, existing }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
