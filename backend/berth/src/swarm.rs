//! Talking to a cluster's engines: the Docker Engine API over TLS with the cluster's client certificate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bollard::Docker;
use bollard::models::{
    LocalNodeState, Node, NodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, SwarmInitRequest, SwarmJoinRequest, SwarmSpec,
    SwarmSpecDispatcher,
};
use bollard::query_parameters::{DeleteNodeOptions, LeaveSwarmOptions, UpdateNodeOptions};

use crate::providers::local::ENGINE_PORT;

/// Swarm's port for joins and manager traffic.
pub const SWARM_PORT: u16 = 2377;

/// Overlay networks are carved from here, away from the local provider's `10.213.0.0/16` node networks.
pub const OVERLAY_POOL: &str = "10.96.0.0/12";

/// How often Swarm nodes report to managers. Swarm's default (5 s) lets a dead node look healthy for
/// about 15 s; 2 s brings that to a few seconds.
const HEARTBEAT_NANOS: i64 = 2_000_000_000;

/// Files holding the client certificate, key and CA, as bollard (and the docker CLI) read them.
#[derive(Clone, Debug)]
pub struct ClientCerts {
    pub dir: PathBuf,
}

impl ClientCerts {
    /// Writes the client material into `dir` (mode 0600 for the key).
    pub fn write(dir: &Path, ca: &str, cert: &str, key: &str) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        std::fs::write(dir.join("ca.pem"), ca)?;
        std::fs::write(dir.join("cert.pem"), cert)?;
        std::fs::write(dir.join("key.pem"), key)?;
        std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600))?;
        Ok(ClientCerts { dir: dir.to_path_buf() })
    }
}

/// One engine of a cluster. Cloning shares the connection pool.
#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    /// The engine's address on the cluster network, when Berth provisioned it (what it advertises).
    pub address: Option<IpAddr>,
}

/// What an engine says about its own Swarm membership.
#[derive(Debug, Clone)]
pub struct Membership {
    pub active: bool,
    pub node_id: Option<String>,
    pub manager: bool,
}

impl Engine {
    /// A Berth-provisioned engine at `address`.
    pub async fn connect(certs: &ClientCerts, address: IpAddr) -> anyhow::Result<Engine> {
        let mut engine = Self::connect_tls(certs, &format!("tcp://{address}:{ENGINE_PORT}")).await?;
        engine.address = Some(address);
        Ok(engine)
    }

    /// Any engine reachable over TLS at `endpoint` (`tcp://host:port`).
    pub async fn connect_tls(certs: &ClientCerts, endpoint: &str) -> anyhow::Result<Engine> {
        let docker = Docker::connect_with_ssl(
            endpoint,
            &certs.dir.join("key.pem"),
            &certs.dir.join("cert.pem"),
            &certs.dir.join("ca.pem"),
            30,
            bollard::API_DEFAULT_VERSION,
        )
        .with_context(|| format!("connecting to the engine at {endpoint}"))?;
        // Debian's dockerd speaks API 1.41: agree on a version both sides know.
        let docker = docker.negotiate_version().await.with_context(|| format!("reaching the engine at {endpoint}"))?;
        Ok(Engine { docker, address: None })
    }

    /// An engine on a unix socket of this host (`unix:///path`).
    pub async fn connect_unix(endpoint: &str) -> anyhow::Result<Engine> {
        let docker = Docker::connect_with_socket(endpoint, 30, bollard::API_DEFAULT_VERSION)
            .with_context(|| format!("connecting to the engine at {endpoint}"))?;
        let docker = docker.negotiate_version().await.with_context(|| format!("reaching the engine at {endpoint}"))?;
        Ok(Engine { docker, address: None })
    }

    fn advertise(&self) -> anyhow::Result<IpAddr> {
        self.address.context("this engine's cluster address is unknown (not provisioned by Berth)")
    }

    pub async fn membership(&self) -> anyhow::Result<Membership> {
        let info = self.docker.info().await?;
        let swarm = info.swarm.unwrap_or_default();
        Ok(Membership {
            active: swarm.local_node_state == Some(LocalNodeState::ACTIVE),
            node_id: swarm.node_id.filter(|s| !s.is_empty()),
            manager: swarm.control_available.unwrap_or(false),
        })
    }

    /// Makes this engine the first manager of a new swarm.
    pub async fn init_swarm(&self) -> anyhow::Result<()> {
        let request = SwarmInitRequest {
            listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
            advertise_addr: Some(self.advertise()?.to_string()),
            default_addr_pool: Some(vec![OVERLAY_POOL.to_owned()]),
            subnet_size: Some(24),
            spec: Some(SwarmSpec {
                dispatcher: Some(SwarmSpecDispatcher { heartbeat_period: Some(HEARTBEAT_NANOS) }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker.init_swarm(request).await.context("swarm init")?;
        Ok(())
    }

    /// The manager and worker join tokens (asked of a manager).
    pub async fn join_tokens(&self) -> anyhow::Result<(String, String)> {
        let swarm = self.docker.inspect_swarm().await?;
        let tokens = swarm.join_tokens.context("the swarm has no join tokens")?;
        Ok((tokens.manager.unwrap_or_default(), tokens.worker.unwrap_or_default()))
    }

    pub async fn join_swarm(&self, manager: IpAddr, token: &str) -> anyhow::Result<()> {
        let request = SwarmJoinRequest {
            listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
            advertise_addr: Some(self.advertise()?.to_string()),
            remote_addrs: Some(vec![format!("{manager}:{SWARM_PORT}")]),
            join_token: Some(token.to_owned()),
            ..Default::default()
        };
        self.docker.join_swarm(request).await.context("swarm join")?;
        Ok(())
    }

    pub async fn leave_swarm(&self, force: bool) -> anyhow::Result<()> {
        self.docker.leave_swarm(Some(LeaveSwarmOptions { force })).await?;
        Ok(())
    }

    pub async fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        Ok(self.docker.list_nodes(None::<bollard::query_parameters::ListNodesOptions>).await?)
    }

    /// Sets a node's availability and labels, keeping the rest of its spec (asked of a manager).
    pub async fn update_node(
        &self,
        node_id: &str,
        availability: Option<&str>,
        labels: Option<HashMap<String, String>>,
    ) -> anyhow::Result<()> {
        let node = self.docker.inspect_node(node_id).await?;
        let version = node.version.and_then(|v| v.index).context("node without version")? as i64;
        let mut spec: NodeSpec = node.spec.unwrap_or_default();
        if let Some(a) = availability {
            spec.availability = Some(match a {
                "pause" => NodeSpecAvailabilityEnum::PAUSE,
                "drain" => NodeSpecAvailabilityEnum::DRAIN,
                _ => NodeSpecAvailabilityEnum::ACTIVE,
            });
        }
        if let Some(l) = labels {
            spec.labels = Some(l);
        }
        self.docker.update_node(node_id, spec, UpdateNodeOptions { version }).await?;
        Ok(())
    }

    pub async fn demote(&self, node_id: &str) -> anyhow::Result<()> {
        let node = self.docker.inspect_node(node_id).await?;
        let version = node.version.and_then(|v| v.index).context("node without version")? as i64;
        let mut spec = node.spec.unwrap_or_default();
        spec.role = Some(NodeSpecRoleEnum::WORKER);
        self.docker.update_node(node_id, spec, UpdateNodeOptions { version }).await?;
        Ok(())
    }

    /// How many tasks the swarm still wants running on a node (asked of a manager).
    pub async fn running_tasks_on(&self, node_id: &str) -> anyhow::Result<usize> {
        let filters = HashMap::from([
            ("node".to_owned(), vec![node_id.to_owned()]),
            ("desired-state".to_owned(), vec!["running".to_owned()]),
        ]);
        let tasks = self.docker.list_tasks(Some(bollard::query_parameters::ListTasksOptions { filters: Some(filters) })).await?;
        Ok(tasks.len())
    }

    /// The swarm's managers: (node id, reachable).
    pub async fn managers(&self) -> anyhow::Result<Vec<(String, bool)>> {
        Ok(self
            .nodes()
            .await?
            .into_iter()
            .filter_map(|n| {
                let status = n.manager_status?;
                Some((n.id?, status.reachability == Some(bollard::models::Reachability::REACHABLE)))
            })
            .collect())
    }

    pub async fn remove_node(&self, node_id: &str) -> anyhow::Result<()> {
        self.docker.delete_node(node_id, Some(DeleteNodeOptions { force: true })).await?;
        Ok(())
    }
}
