//! The route table as a router needs it: one backend per route, each with the servers (running tasks
//! at their node's address and host-mode port) it balances over. Read whole from the database by every
//! router, so routers never depend on what they remembered: a restarted router, or a second one,
//! arrives at the same table.

use std::collections::BTreeMap;

use sqlx::PgPool;
use uuid::Uuid;

/// How a backend spreads requests over its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    /// Consistent hashing of the client address: a client keeps its task while the set changes little.
    Source,
    Random,
}

impl Balance {
    pub fn parse(s: &str) -> Option<Balance> {
        Some(match s {
            "roundrobin" => Balance::RoundRobin,
            "leastconn" => Balance::LeastConn,
            "source" => Balance::Source,
            "random" => Balance::Random,
            _ => return None,
        })
    }
}

/// One route: requests for `domain` (under `path_prefix`) go to `servers`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub route: Uuid,
    pub domain: String,
    pub path_prefix: String,
    pub balance: Balance,
    pub sticky: bool,
    pub timeout_secs: u32,
    pub max_body_bytes: Option<i64>,
    /// By server name.
    pub servers: BTreeMap<String, Server>,
}

/// A task serving a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub address: String,
    pub port: u16,
    pub weight: u8,
    /// Swarm is stopping the task: it takes no new requests, in-flight ones finish.
    pub draining: bool,
}

impl Backend {
    /// HAProxy's name for the backend (names are limited to letters, digits, `-_.:`).
    pub fn name(&self) -> String {
        format!("r_{}", self.route.simple())
    }

    /// Everything but the servers: what a reload is needed to change.
    pub fn same_shape(&self, other: &Backend) -> bool {
        Backend { servers: BTreeMap::new(), ..self.clone() } == Backend { servers: BTreeMap::new(), ..other.clone() }
    }
}

/// A server's name: the Swarm task id, which is unique and stable for the task's life.
pub fn server_name(task: &str) -> String {
    format!("t_{task}")
}

/// Every routed backend, by route id.
pub type Table = BTreeMap<Uuid, Backend>;

/// Which clusters a router serves.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Clusters whose nodes Berth runs on this host (`berth serve`'s router).
    Local,
    /// The named clusters (`berth router --cluster`), or every cluster when empty.
    Clusters(Vec<Uuid>),
}

type Row = (Uuid, String, String, String, bool, i32, Option<i64>, Option<String>, Option<String>, Option<i32>, Option<bool>);

/// Reads the table. A route is served once its domain is verified; a task is a server while it runs
/// (Swarm counts a task with a healthcheck as running only once it is healthy) at a host port for the
/// route's target on a node with an address.
pub async fn read(db: &PgPool, scope: &Scope) -> sqlx::Result<Table> {
    let (local, clusters) = match scope {
        Scope::Local => (true, Vec::new()),
        Scope::Clusters(ids) => (false, ids.clone()),
    };
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT r.id, r.domain, r.path_prefix, r.balance, r.sticky, r.timeout_secs, r.max_body_bytes,
                c.swarm_task_id, n.address, (hp.value->>'published')::int, c.desired_state <> 'running'
           FROM routes r
           JOIN services s ON s.id = r.service_id
           JOIN applications a ON a.id = s.application_id
           JOIN clusters k ON k.id = a.cluster_id
           LEFT JOIN containers c ON c.service_id = s.id AND c.state = 'running'
           LEFT JOIN nodes n ON n.id = c.node_id
           LEFT JOIN LATERAL jsonb_array_elements(c.host_ports) hp
                  ON (hp.value->>'target')::int = r.port AND coalesce(hp.value->>'protocol', 'tcp') IN ('tcp', '')
          WHERE r.verified AND a.status <> 'deleting'
            AND (($1 AND k.provider = 'local') OR (NOT $1 AND (cardinality($2::uuid[]) = 0 OR k.id = ANY($2))))",
    )
    .bind(local)
    .bind(&clusters)
    .fetch_all(db)
    .await?;
    let mut table = Table::new();
    for (route, domain, path_prefix, balance, sticky, timeout, max_body, task, address, published, leaving) in rows {
        let backend = table.entry(route).or_insert_with(|| Backend {
            route,
            domain,
            path_prefix,
            balance: Balance::parse(&balance).unwrap_or(Balance::RoundRobin),
            sticky,
            timeout_secs: u32::try_from(timeout).unwrap_or(60),
            max_body_bytes: max_body,
            servers: BTreeMap::new(),
        });
        let (Some(task), Some(address), Some(port)) = (task, address, published) else { continue };
        let Ok(port) = u16::try_from(port) else { continue };
        if port == 0 {
            continue;
        }
        let server = Server { address, port, weight: 1, draining: leaving.unwrap_or(false) };
        backend.servers.insert(server_name(&task), server);
    }
    Ok(table)
}
