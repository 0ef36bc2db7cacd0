//! The route table as a router needs it: one backend per route, each with the servers (running tasks
//! at their node's address and host-mode port) it balances over. Read whole from the database by every
//! router, so routers never depend on what they remembered: a restarted router, or a second one,
//! arrives at the same table.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto::Keys;

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
    /// Plain-HTTP requests are redirected to HTTPS (when the router has a certificate for the domain).
    pub https_redirect: bool,
    /// Servers are checked with an HTTP GET of this path (else a TCP connect).
    pub probe_path: Option<String>,
    /// By server name.
    pub servers: BTreeMap<String, Server>,
}

/// A task serving a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub address: String,
    pub port: u16,
    pub weight: u8,
    /// Swarm is stopping the task, or replacing it: it takes no new requests, in-flight ones finish.
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

/// A server's name: the Swarm task id, which is unique and stable for the task's life, after `t_`
/// for the application's own tasks and `c_` for a release's copies (the traffic of those is counted
/// apart, for the release).
pub fn server_name(task: &str, copy: bool) -> String {
    format!("{}_{task}", if copy { "c" } else { "t" })
}

/// Whether a server is a release's copy.
pub fn is_copy(server: &str) -> bool {
    server.starts_with("c_")
}

/// Every routed backend, by route id.
pub type Backends = BTreeMap<Uuid, Backend>;

/// A certificate the router serves over TLS (chosen by SNI): its chain and private key, as one PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The name it is for (`*.example.com` for a wildcard).
    pub domain: String,
    pub pem: String,
}

impl Certificate {
    /// Whether it serves `host`.
    pub fn covers(&self, host: &str) -> bool {
        berth_types::certificate_covers(&self.domain, host)
    }
}

/// How a load balancer's listener forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Requests, balanced one by one (and retried on another task when safe).
    Http,
    /// Connections.
    Tcp,
}

/// A load balancer's listener: a port on the router's address and the tasks it forwards to.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub port: u16,
    pub protocol: Protocol,
    /// By server name.
    pub servers: BTreeMap<String, Server>,
}

impl Listener {
    /// HAProxy's name for the listener's frontend and backend.
    pub fn name(&self) -> String {
        format!("lb_{}", self.port)
    }
}

/// Everything a router serves: the backends, the load balancers' listeners, the certificates, and
/// the answers to ACME HTTP-01 challenges in progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub backends: Backends,
    /// By port.
    pub listeners: BTreeMap<u16, Listener>,
    /// By certificate id.
    pub certificates: BTreeMap<Uuid, Certificate>,
    /// ACME token → key authorization, answered at `/.well-known/acme-challenge/<token>`.
    pub challenges: BTreeMap<String, String>,
}

/// Which clusters a router serves.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Clusters whose nodes Berth runs on this host (`berth serve`'s router).
    Local,
    /// The named clusters (`berth router --cluster`), or every cluster when empty.
    Clusters(Vec<Uuid>),
}

#[derive(sqlx::FromRow)]
struct Row {
    route: Uuid,
    domain: String,
    path_prefix: String,
    balance: String,
    sticky: bool,
    timeout_secs: i32,
    max_body_bytes: Option<i64>,
    https_redirect: bool,
    probe_path: Option<String>,
    task: Option<String>,
    address: Option<String>,
    published: Option<i32>,
    /// See [`LEAVING`].
    leaving: Option<i32>,
    copy: Option<bool>,
    /// The open release's percentage, when the route's service has a copy in it.
    release_weight: Option<i32>,
}

/// Reads the table. A route is served once its domain is verified; a task is a server while it runs
/// (Swarm counts a task with a healthcheck as running only once it is healthy) at a host port for the
/// route's target on a node with an address. While a release of the application is open, the tasks of
/// its copy of the route's service serve the route too, weighted by the release's percentage.
/// Certificates are those of the names the router routes, read with their keys opened with `keys`; a
/// key that does not open is skipped (and logged), so one bad row never stops the router.
pub async fn read(db: &PgPool, scope: &Scope, keys: &Keys) -> sqlx::Result<Table> {
    let backends = read_backends(db, scope).await?;
    let listeners = read_listeners(db, scope).await?;
    let rows: Vec<(Uuid, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT id, domain, certificate_pem, key_sealed FROM certificates WHERE state = 'issued' AND key_sealed IS NOT NULL",
    )
    .fetch_all(db)
    .await?;
    let mut certificates = BTreeMap::new();
    // Only the certificates of names this router routes: a router on another host, scoped to other
    // clusters, never holds a key it has no use for.
    let routed = |cert: &str| backends.values().any(|b| berth_types::certificate_covers(cert, &b.domain));
    for (id, domain, chain, sealed) in rows.into_iter().filter(|r| routed(&r.1)) {
        match keys.open(&sealed).map(String::from_utf8) {
            Ok(Ok(key)) => {
                certificates.insert(id, Certificate { domain, pem: format!("{}\n{}", chain.trim_end(), key.trim_end()) + "\n" });
            }
            _ => tracing::warn!(certificate = %id, "a certificate's key does not open with this Berth's secret; not served"),
        }
    }
    let challenges = sqlx::query_as::<_, (String, String)>("SELECT token, key_authorization FROM acme_challenges")
        .fetch_all(db)
        .await?
        .into_iter()
        .collect();
    Ok(Table { backends, listeners, certificates, challenges })
}

/// Why a running task `c` would take no new requests: 2 when Swarm is stopping it (its desired state is
/// no longer running), 1 when a newer task of its slot (of its node, for a global service) is on its
/// way, else 0. An update replacing tasks `start-first` stops each old task the moment its replacement
/// runs, and Swarm cuts the task's connections at that decision, before any stop signal: draining it
/// from the moment the replacement is scheduled (the replacement's start, at least, earlier) lets the
/// requests it serves finish first. See [`keep_serving`] for when nothing else would serve.
const LEAVING: &str = "CASE WHEN c.desired_state <> 'running' THEN 2
            WHEN EXISTS (SELECT 1 FROM containers nx
                          WHERE nx.service_id = c.service_id AND nx.id <> c.id
                            AND (nx.slot = c.slot OR (c.slot IS NULL AND nx.slot IS NULL AND nx.node_id = c.node_id))
                            AND nx.created_at > c.created_at AND nx.desired_state = 'running'
                            AND nx.state IN ('new', 'pending', 'assigned', 'accepted', 'preparing', 'ready', 'starting', 'running'))
            THEN 1 ELSE 0 END";

/// Replacement drains are for updates that keep other tasks serving. When every server of a backend
/// would drain and some only because a replacement is on its way (an update of every task at once),
/// those keep serving: requests answered by a task about to stop beat requests no task takes.
fn keep_serving(servers: &mut BTreeMap<String, Server>, replaced: &BTreeSet<String>) {
    if servers.values().all(|s| s.draining) {
        for name in replaced {
            if let Some(server) = servers.get_mut(name) {
                server.draining = false;
            }
        }
    }
}

/// The condition every table query puts on its cluster `k`: `$1` local clusters only, else `$2` (all
/// clusters when empty) — see [`Scope::params`].
const IN_SCOPE: &str = "(($1 AND k.provider = 'local') OR (NOT $1 AND (cardinality($2::uuid[]) = 0 OR k.id = ANY($2))))";

impl Scope {
    /// The parameters of [`IN_SCOPE`].
    fn params(&self) -> (bool, Vec<Uuid>) {
        match self {
            Scope::Local => (true, Vec::new()),
            Scope::Clusters(ids) => (false, ids.clone()),
        }
    }
}

/// A running task as a server: its node's address and the host port it got for the target (a task
/// without either cannot be reached yet). With its task id.
fn task_server(
    task: Option<String>,
    address: Option<String>,
    published: Option<i32>,
    leaving: Option<i32>,
) -> Option<(String, Server)> {
    let (task, address, port) = (task?, address?, u16::try_from(published?).ok().filter(|p| *p != 0)?);
    Some((task, Server { address, port, weight: 1, draining: leaving.unwrap_or(0) > 0 }))
}

/// The load balancers' listeners of the router's clusters, each with the running tasks of its service
/// at their host port for the listener's target.
async fn read_listeners(db: &PgPool, scope: &Scope) -> sqlx::Result<BTreeMap<u16, Listener>> {
    let (local, clusters) = scope.params();
    type ListenerRow = (i32, String, Option<String>, Option<String>, Option<i32>, Option<i32>);
    let rows: Vec<ListenerRow> = sqlx::query_as(&format!(
        "SELECT l.port, l.protocol, c.swarm_task_id, n.address, (hp.value->>'published')::int, {LEAVING}
           FROM load_balancer_listeners l
           JOIN load_balancers b ON b.id = l.load_balancer_id
           JOIN clusters k ON k.id = b.cluster_id
           JOIN services s ON s.id = l.service_id
           JOIN applications a ON a.id = s.application_id
           LEFT JOIN containers c ON c.service_id = s.id AND c.state = 'running'
           LEFT JOIN nodes n ON n.id = c.node_id
           LEFT JOIN LATERAL jsonb_array_elements(c.host_ports) hp
                  ON (hp.value->>'target')::int = l.target_port AND coalesce(hp.value->>'protocol', 'tcp') IN ('tcp', '')
          WHERE a.status <> 'deleting'
            AND {IN_SCOPE}"
    ))
    .bind(local)
    .bind(&clusters)
    .fetch_all(db)
    .await?;
    let mut out = BTreeMap::new();
    let mut replaced: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for (port, protocol, task, address, published, leaving) in rows {
        let Ok(port) = u16::try_from(port) else { continue };
        let listener = out.entry(port).or_insert_with(|| Listener {
            port,
            protocol: if protocol == "tcp" { Protocol::Tcp } else { Protocol::Http },
            servers: BTreeMap::new(),
        });
        if let Some((task, server)) = task_server(task, address, published, leaving) {
            let name = server_name(&task, false);
            if leaving == Some(1) {
                replaced.entry(port).or_default().insert(name.clone());
            }
            listener.servers.insert(name, server);
        }
    }
    for (port, names) in &replaced {
        if let Some(listener) = out.get_mut(port) {
            keep_serving(&mut listener.servers, names);
        }
    }
    Ok(out)
}

async fn read_backends(db: &PgPool, scope: &Scope) -> sqlx::Result<Backends> {
    let (local, clusters) = scope.params();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT r.id AS route, r.domain, r.path_prefix, r.balance, r.sticky, r.timeout_secs, r.max_body_bytes, r.https_redirect, r.probe_path,
                c.swarm_task_id AS task, n.address, (hp.value->>'published')::int AS published,
                {LEAVING} AS leaving, c.service_id <> s.id AS copy,
                CASE WHEN cp.id IS NOT NULL THEN rel.weight END AS release_weight
           FROM routes r
           JOIN services s ON s.id = r.service_id
           JOIN applications a ON a.id = s.application_id
           JOIN clusters k ON k.id = a.cluster_id
           LEFT JOIN releases rel ON rel.application_id = a.id AND rel.finished_at IS NULL
           LEFT JOIN services cp ON cp.release_id = rel.id AND cp.name = s.name
           LEFT JOIN containers c ON (c.service_id = s.id OR c.service_id = cp.id) AND c.state = 'running'
           LEFT JOIN nodes n ON n.id = c.node_id
           LEFT JOIN LATERAL jsonb_array_elements(c.host_ports) hp
                  ON (hp.value->>'target')::int = r.port AND coalesce(hp.value->>'protocol', 'tcp') IN ('tcp', '')
          WHERE r.verified AND a.status <> 'deleting'
            AND {IN_SCOPE}"
    ))
    .bind(local)
    .bind(&clusters)
    .fetch_all(db)
    .await?;
    let mut table = Backends::new();
    let mut replaced: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
    let mut releases: BTreeMap<Uuid, u8> = BTreeMap::new();
    for row in rows {
        if let Some(w) = row.release_weight {
            releases.insert(row.route, u8::try_from(w.clamp(0, 100)).unwrap_or(0));
        }
        let backend = table.entry(row.route).or_insert_with(|| Backend {
            route: row.route,
            domain: row.domain,
            path_prefix: row.path_prefix,
            balance: Balance::parse(&row.balance).unwrap_or(Balance::RoundRobin),
            sticky: row.sticky,
            timeout_secs: u32::try_from(row.timeout_secs).unwrap_or(60),
            max_body_bytes: row.max_body_bytes,
            https_redirect: row.https_redirect,
            probe_path: row.probe_path,
            servers: BTreeMap::new(),
        });
        if let Some((task, server)) = task_server(row.task, row.address, row.published, row.leaving) {
            let name = server_name(&task, row.copy.unwrap_or(false));
            if row.leaving == Some(1) {
                replaced.entry(row.route).or_default().insert(name.clone());
            }
            backend.servers.insert(name, server);
        }
    }
    for (route, names) in &replaced {
        if let Some(backend) = table.get_mut(route) {
            keep_serving(&mut backend.servers, names);
        }
    }
    for (route, percent) in releases {
        let Some(backend) = table.get_mut(&route) else { continue };
        weigh(backend, percent);
    }
    Ok(table)
}

/// Gives a backend's servers the weights that send `percent` of its requests to a release's copies.
/// Only servers that take new requests are counted, so a draining task does not dilute the split.
pub fn weigh(backend: &mut Backend, percent: u8) {
    let serving = |copy: bool| backend.servers.iter().filter(|(n, s)| is_copy(n) == copy && !s.draining).count();
    let (own, copies) = crate::releases::weights::split(percent, serving(false), serving(true));
    for (name, server) in &mut backend.servers {
        server.weight = if is_copy(name) { copies } else { own };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(draining: &[(&str, bool)]) -> BTreeMap<String, Server> {
        draining
            .iter()
            .map(|(name, d)| ((*name).to_owned(), Server { address: "10.0.0.1".into(), port: 30000, weight: 1, draining: *d }))
            .collect()
    }

    #[test]
    fn a_replaced_task_drains_while_others_serve_but_not_when_none_would() {
        let replaced = BTreeSet::from(["t_a".to_owned()]);
        // One task of three replaced: it drains.
        let mut some = servers(&[("t_a", true), ("t_b", false), ("t_c", false)]);
        keep_serving(&mut some, &replaced);
        assert!(some["t_a"].draining);
        // Every task replaced at once (or the rest stopping): the replaced ones keep serving, the
        // stopping ones still drain.
        let mut all = servers(&[("t_a", true), ("t_b", true)]);
        keep_serving(&mut all, &replaced);
        assert!(!all["t_a"].draining);
        assert!(all["t_b"].draining);
    }
}
