//! End-to-end tests of the Berth API: the real server, on a loopback port, over a real PostgreSQL.

mod applications;
mod auth;
mod bad_input;
mod balancers;
mod clusters;
mod conformance;
mod console;
mod cross_tenant;
mod domains;
mod embedded;
mod fixtures;
mod openapi;
mod quotas;
mod registry;
mod releases;
mod resources;
mod roles;
mod routing;
mod security;
mod tls;
