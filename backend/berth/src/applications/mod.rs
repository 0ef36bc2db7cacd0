//! Applications: Compose stacks deployed onto a tenant's Swarm cluster exactly as `docker stack deploy`
//! would deploy them, with revisions, observed status and an admission policy. One home for the
//! capability:
//!
//! - [`compose`]: the Compose → Swarm translation, pure code;
//! - [`templates`]: versioned Compose templates, their diffs, and [`dab`] bundles imported as templates;
//! - [`gallery`]: the built-in templates and the base image they run on;
//! - [`store`]: every query on applications, revisions, services and containers;
//! - [`api`]: the HTTP handlers, thin over the two above;
//! - [`deploy`]: the jobs that apply revisions to the engine and remove stacks;
//! - [`logs`]: task logs across nodes as Server-Sent Events;
//! - [`observe`]: the cluster reconciler's part: services, tasks and statuses as the engine reports them.

pub mod api;
pub mod compose;
pub mod dab;
pub mod deploy;
pub mod gallery;
pub mod logs;
pub mod observe;
pub mod store;
pub mod templates;
