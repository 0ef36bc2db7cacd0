//! Everything a request handler needs, passed explicitly (no globals), so tests can build their own.

use std::sync::Arc;

use sqlx::PgPool;

use crate::api::metrics::Metrics;
use crate::config::SecurityConfig;
use crate::crypto::Keys;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub db: PgPool,
    pub keys: Keys,
    pub security: SecurityConfig,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// Where `existing` clusters may be registered by unix socket (see `BERTH_EXISTING_SOCKET_DIRS`).
    pub existing_socket_dirs: Vec<std::path::PathBuf>,
}

impl AppState {
    pub fn new(
        db: PgPool,
        keys: Keys,
        security: SecurityConfig,
        max_body_bytes: usize,
        existing_socket_dirs: Vec<std::path::PathBuf>,
    ) -> Self {
        AppState(Arc::new(Inner { db, keys, security, metrics: Metrics::default(), max_body_bytes, existing_socket_dirs }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
