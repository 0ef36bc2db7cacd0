//! Node providers: where a cluster's machines come from. Every provider answers the same questions —
//! make the cluster's network, make a node, destroy a node, describe a node — so cluster jobs do not
//! care whether a node is a network namespace on this host or (later) a cloud instance.
//!
//! Every operation is idempotent: creating a node that exists returns it, destroying one that is gone
//! succeeds. Jobs rely on that to converge after being interrupted at any point.

pub mod local;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::pki::Pem;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// What a provider needs to make one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub cluster_id: Uuid,
    /// The cluster's provider network number (the local provider's /24).
    pub network: i32,
    pub node_id: Uuid,
    /// The node's stable name, also its hostname.
    pub name: String,
    /// What the provider recorded about this node before (empty for a new one).
    pub state: NodeState,
}

/// What a provider records about a node: enough to find, reach and destroy it again. Cloud providers
/// will add instance ids, regions and instance types here.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeState {
    /// The node's address on the cluster network.
    pub address: Option<IpAddr>,
    /// The provider's handle (the local provider's network namespace).
    pub handle: Option<String>,
}

/// The TLS material an engine serves its API with.
#[derive(Debug, Clone)]
pub struct EngineTls {
    pub ca_cert: String,
    pub server: Pem,
}

/// A node as the provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// The machine exists and its engine process runs.
    Running,
    /// The machine exists but its engine is not running (crashed or killed).
    Stopped,
    /// Nothing is left of it.
    Absent,
}

pub trait NodeProvider: Send + Sync {
    /// Prepares the cluster's network (idempotent).
    fn ensure_network<'a>(&'a self, cluster: Uuid, network: i32) -> BoxFut<'a, ()>;
    /// Removes the cluster's network once its nodes are gone (idempotent).
    fn destroy_network<'a>(&'a self, cluster: Uuid, network: i32) -> BoxFut<'a, ()>;
    /// Chooses the node's address and handle, before any certificate is issued for it.
    fn plan_node<'a>(&'a self, spec: &'a NodeSpec, taken: &'a [IpAddr]) -> BoxFut<'a, NodeState>;
    /// Makes the node exist with its engine running and serving TLS (idempotent; restarts a stopped one).
    fn start_node<'a>(&'a self, spec: &'a NodeSpec, tls: &'a EngineTls) -> BoxFut<'a, ()>;
    /// Destroys the node and everything in it (idempotent).
    fn destroy_node<'a>(&'a self, spec: &'a NodeSpec) -> BoxFut<'a, ()>;
    fn describe<'a>(&'a self, spec: &'a NodeSpec) -> BoxFut<'a, Presence>;
}
