//! Running clusters for real: the jobs that provision nodes and form, scale and delete Swarms, and what
//! they share — the worker's environment and access to a cluster's engines.
//!
//! Every step is "make it so": it looks at what exists (node rows, the provider's view, each engine's
//! Swarm membership) and does only what is missing. A job killed at any point and run again converges.

pub mod access;
pub mod existing_policy;
pub mod lifecycle;
pub mod observe;
pub mod reconciler;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

use crate::clusters::existing_policy::ExistingPolicy;
use crate::crypto::Keys;
use crate::jobs::runner::{Handler, Handlers, JobCtx};
use crate::providers::local::LocalProvider;
use crate::registry::RegistryTrust;

/// What cluster jobs and reconcilers need besides the database.
pub struct WorkerEnv {
    pub keys: Keys,
    pub data_dir: PathBuf,
    pub local: LocalProvider,
    /// Checked again at every connection to an adopted swarm.
    pub existing: ExistingPolicy,
    /// The built-in registry, which nodes made by Berth trust.
    pub registry: Option<RegistryTrust>,
    /// Where certificates are obtained.
    pub acme: crate::certificates::AcmeConfig,
}

impl WorkerEnv {
    pub fn new(
        keys: Keys,
        data_dir: PathBuf,
        existing: ExistingPolicy,
        registry: Option<RegistryTrust>,
        acme: crate::certificates::AcmeConfig,
    ) -> Arc<Self> {
        // Node directories are handed to processes started elsewhere: make the path absolute.
        let _ = std::fs::create_dir_all(&data_dir);
        let data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
        Arc::new(WorkerEnv { local: LocalProvider::new(&data_dir, registry.clone()), keys, data_dir, existing, registry, acme })
    }
}

/// The job kinds this module carries out.
pub fn handlers(env: Arc<WorkerEnv>) -> Handlers {
    let mut h = Handlers::default();
    let converge = |env: Arc<WorkerEnv>| Handler {
        run: Box::new(move |ctx: JobCtx| Box::pin(lifecycle::converge(ctx, env.clone()))),
        failed: Box::new(|ctx: JobCtx, error: String| Box::pin(lifecycle::mark_failed(ctx, error))),
    };
    h.add("cluster.create", converge(env.clone()));
    h.add("cluster.scale", converge(env.clone()));
    let e = env.clone();
    h.add(
        "cluster.delete",
        Handler {
            run: Box::new(move |ctx: JobCtx| Box::pin(lifecycle::delete(ctx, e.clone()))),
            failed: Box::new(|ctx: JobCtx, error: String| Box::pin(lifecycle::mark_failed(ctx, error))),
        },
    );
    let e = env.clone();
    h.add(
        "node.restart",
        Handler {
            run: Box::new(move |ctx: JobCtx| Box::pin(lifecycle::restart_node(ctx, e.clone()))),
            failed: Box::new(|_, _| Box::pin(async { Ok(()) })),
        },
    );
    let e = env;
    h.add(
        "node.update",
        Handler {
            run: Box::new(move |ctx: JobCtx| Box::pin(lifecycle::update_node(ctx, e.clone()))),
            failed: Box::new(|_, _| Box::pin(async { Ok(()) })),
        },
    );
    h
}
