//! Canary and blue/green releases: a new revision's changed services run as copies beside the
//! application's own, every route of those services sends the copies a share of its requests (by
//! HAProxy server weights), and the release is promoted (the application's services updated in place,
//! then the copies removed) or aborted (the copies removed) — by hand, or on its own when the copies
//! fail. One home for the capability:
//!
//! - [`copies`]: which services a revision changes, and the copies on the engine;
//! - [`weights`]: a percentage as server weights, pure;
//! - [`store`]: every query on releases, their copies' rows and their traffic;
//! - [`api`]: the HTTP handlers;
//! - [`jobs`]: start, promote and abort on the engine;
//! - [`watch`]: automatic abort.
//!
//! The router's part is in `routing::table` (copies' tasks are servers `c_<task>` of the route's
//! backend, weighted) and `routing::traffic` (the copies' answers, counted for the release).

pub mod api;
pub mod copies;
pub mod jobs;
pub mod store;
pub mod watch;
pub mod weights;
