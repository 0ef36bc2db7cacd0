//! Load balancers, the second routing scheme: a tenant's balancer has listeners (a port and a
//! protocol on the balancer's address), each forwarding to one target port of a service; Berth keeps
//! each listener's backends in step with the service's running tasks. One home for the capability:
//!
//! - [`driver`]: where a balancer is realized (`local`: Berth's routers);
//! - [`store`]: every query on balancers and listeners, and the listeners' checks;
//! - [`api`]: the `/api/v1/load-balancers` handlers.
//!
//! The routers' part is `routing::table` (listeners and their servers) and
//! `routing::haproxy_config` (a frontend and a backend per listener).

pub mod api;
pub mod driver;
pub mod store;
