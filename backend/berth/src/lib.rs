//! Berth's control plane. `main.rs` is a thin command-line shell over this library, so tests can start
//! the same server in-process (see `tests/harness`).

pub mod api;
pub mod applications;
pub mod auth;
pub mod balancers;
pub mod bootstrap;
pub mod certificates;
pub mod clusters;
pub mod config;
pub mod console;
pub mod crypto;
pub mod custom_domains;
pub mod data_dir;
pub mod db;
pub mod domain;
pub mod embedded_pg;
pub mod error;
pub mod events;
pub mod jobs;
pub mod pki;
pub mod providers;
pub mod registry;
pub mod releases;
pub mod routing;
pub mod serve;
pub mod state;
pub mod supervise;
pub mod swarm;
pub mod telemetry;
pub mod worker;
