//! Where a load balancer is realized. The `local` driver provisions nothing: every router serves
//! the listeners of the clusters it routes as HAProxy frontends on its own address, following the
//! same table as routes (so a listener is live as soon as it is stored, and its servers change with
//! the tasks). A cloud driver would implement [`Driver`] by creating the provider's balancer and
//! keeping its targets in step (Berth would then call it from a reconciler, as it does node
//! providers).

use std::net::IpAddr;

/// A kind of load balancer.
pub trait Driver: Send + Sync {
    /// Its name in the API (`driver`).
    fn name(&self) -> &'static str;
    /// Where clients reach the balancer's listeners.
    fn address(&self) -> String;
}

/// Berth's routers.
pub struct Local {
    /// The routers' address (`BERTH_ROUTER_LISTEN`'s).
    pub host: IpAddr,
}

impl Driver for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn address(&self) -> String {
        self.host.to_string()
    }
}

/// The driver a balancer row names (only `local` exists today; the column's check keeps it so).
pub fn for_row(_name: &str, routing: &crate::routing::Routing) -> Box<dyn Driver> {
    Box::new(Local { host: routing.host })
}
