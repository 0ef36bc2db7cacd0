//! Clusters and their nodes. The API writes the desired shape — the cluster row and one node row per
//! wanted node — and queues the job that makes a real Swarm match it.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_types::{
    Availability, Cluster, ClusterCredentials, ClusterStatus, CreateCluster, Node, NodeRole, NodeState, Page, Problem, Provider,
    Role, UpdateCluster, UpdateNode,
};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::clusters::existing_policy::Endpoint;
use crate::clusters::store::{self as cluster_store, CLUSTER_COLUMNS, ClusterRow};
use crate::db::TenantDb;
use crate::domain::quota::{self, Delta};
use crate::domain::validate;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, Target};
use crate::state::AppState;

pub const MAX_MANAGERS: i32 = 7;
pub const MAX_WORKERS: i32 = 100;

async fn load_cluster(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<ClusterRow> {
    cluster_store::load(conn, tenant, id, lock).await
}

fn check_shape(managers: Option<i32>, workers: Option<i32>) -> ApiResult<()> {
    if let Some(m) = managers
        && !(1..=MAX_MANAGERS).contains(&m)
    {
        return Err(ApiError::invalid_field("managers", format!("must be between 1 and {MAX_MANAGERS}")));
    }
    if let Some(w) = workers
        && !(0..=MAX_WORKERS).contains(&w)
    {
        return Err(ApiError::invalid_field("workers", format!("must be between 0 and {MAX_WORKERS}")));
    }
    Ok(())
}

/// What an `existing` cluster is reached through, checked.
enum Registration {
    Tls { endpoint: String, ca_pem: String, cert_pem: String, key_pem: String },
    Unix { endpoint: String },
}

fn check_existing(state: &AppState, req: &CreateCluster) -> ApiResult<Registration> {
    if req.managers.is_some() || req.workers.is_some() {
        let field = if req.managers.is_some() { "managers" } else { "workers" };
        return Err(ApiError::invalid_field(field, "an `existing` cluster's nodes are adopted from its swarm, not provisioned"));
    }
    let Some(endpoint) = req.endpoint.clone() else {
        return Err(ApiError::invalid_field("endpoint", "an `existing` cluster needs a manager's endpoint"));
    };
    let checked = state.existing.check(&endpoint).map_err(|rule| ApiError::invalid_field("endpoint", rule))?;
    if let Endpoint::Unix(_) = checked {
        if req.ca_pem.is_some() || req.cert_pem.is_some() || req.key_pem.is_some() {
            return Err(ApiError::invalid_field("ca_pem", "a unix socket endpoint takes no TLS material"));
        }
        return Ok(Registration::Unix { endpoint });
    }
    let pem = |field: &str, value: &Option<String>, marker: &str| -> ApiResult<String> {
        match value {
            Some(v) if v.contains(marker) => Ok(v.clone()),
            Some(_) => Err(ApiError::invalid_field(field, format!("must be PEM ({marker})"))),
            None => {
                Err(ApiError::invalid_field(field, "a tcp endpoint is reached over TLS: give the CA, client certificate and key"))
            }
        }
    };
    Ok(Registration::Tls {
        endpoint,
        ca_pem: pem("ca_pem", &req.ca_pem, "BEGIN CERTIFICATE")?,
        cert_pem: pem("cert_pem", &req.cert_pem, "BEGIN CERTIFICATE")?,
        key_pem: pem("key_pem", &req.key_pem, "PRIVATE KEY")?,
    })
}

/// Node names are stable and predictable (`<cluster>-manager-1`, `<cluster>-worker-3`), which is what lets
/// a re-run provisioning job find the nodes an earlier, interrupted run already made.
async fn add_nodes(
    tx: &mut PgConnection,
    tenant: Uuid,
    cluster: &ClusterRow,
    role: NodeRole,
    from: i32,
    to: i32,
) -> sqlx::Result<()> {
    for n in from..=to {
        sqlx::query("INSERT INTO nodes (id, tenant_id, cluster_id, name, role) VALUES ($1, $2, $3, $4, $5)")
            .bind(Uuid::now_v7())
            .bind(tenant)
            .bind(cluster.id)
            .bind(format!("{}-{}-{n}", cluster.name, role.as_str()))
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Creates a cluster. The nodes are provisioned by the queued job; follow it at `/api/v1/jobs/{job_id}`.
#[utoipa::path(post, path = "/api/v1/clusters", tag = "clusters", request_body = CreateCluster,
    responses((status = 202, body = Cluster), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateCluster>,
) -> ApiResult<(StatusCode, Json<Cluster>)> {
    let tenant = me.tenant_with(Role::Admin)?;
    validate::dns_name("name", &req.name)?;
    let (managers, workers, registration) = match req.provider {
        Provider::Local => {
            if req.endpoint.is_some() || req.ca_pem.is_some() || req.cert_pem.is_some() || req.key_pem.is_some() {
                return Err(ApiError::invalid_field("endpoint", "only `existing` clusters take an endpoint"));
            }
            let managers = req.managers.ok_or_else(|| ApiError::invalid_field("managers", "required for a `local` cluster"))?;
            let workers = req.workers.ok_or_else(|| ApiError::invalid_field("workers", "required for a `local` cluster"))?;
            check_shape(Some(managers), Some(workers))?;
            (managers, workers, None)
        }
        // Adopted nodes are counted against the node quota when the job finds them.
        Provider::Existing => (1, 0, Some(check_existing(&state, &req)?)),
    };

    let mut tx = db.begin().await?;
    let new_nodes = if registration.is_some() { 0 } else { i64::from(managers + workers) };
    quota::reserve(&mut tx, tenant, Delta { clusters: 1, nodes: new_nodes, ..Default::default() }).await?;
    let settings = match &registration {
        Some(Registration::Tls { endpoint, .. } | Registration::Unix { endpoint }) => json!({ "endpoint": endpoint }),
        None => json!({}),
    };
    let row: Result<ClusterRow, sqlx::Error> = sqlx::query_as(&format!(
        "INSERT INTO clusters (id, tenant_id, name, provider, desired_managers, desired_workers, settings)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {CLUSTER_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(&req.name)
    .bind(req.provider.as_str())
    .bind(managers)
    .bind(workers)
    .bind(settings)
    .fetch_one(&mut *tx)
    .await;
    let row = row.map_err(|e| ApiError::or_name_taken(e, "cluster"))?;
    match &registration {
        None => {
            add_nodes(&mut tx, tenant, &row, NodeRole::Manager, 1, managers).await?;
            add_nodes(&mut tx, tenant, &row, NodeRole::Worker, 1, workers).await?;
        }
        Some(Registration::Tls { ca_pem, cert_pem, key_pem, .. }) => {
            sqlx::query(
                "INSERT INTO cluster_secrets (cluster_id, ca_cert_pem, client_cert_pem, client_key_sealed) VALUES ($1, $2, $3, $4)",
            )
            .bind(row.id)
            .bind(ca_pem)
            .bind(cert_pem)
            .bind(state.keys.seal(key_pem.as_bytes()))
            .execute(&mut *tx)
            .await?;
        }
        Some(Registration::Unix { .. }) => {}
    }
    let target = Target { tenant_id: Some(tenant), kind: "cluster", id: row.id };
    let job = jobs::enqueue(&mut tx, target, "cluster.create", json!({})).await?;
    tx.commit().await?;
    audit.record("cluster.create", "cluster", row.id);
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters", params(PageParams),
    responses((status = 200, body = Page<Cluster>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<Cluster>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let rows: Vec<ClusterRow> = sqlx::query_as(&format!(
        "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| r.into_dto(None))))
}

#[utoipa::path(get, path = "/api/v1/clusters/{id}", tag = "clusters", params(("id" = Uuid, Path)),
    responses((status = 200, body = Cluster), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Cluster>> {
    let tenant = me.tenant()?;
    let mut conn = db;
    Ok(Json(load_cluster(&mut conn, tenant, id, false).await?.into_dto(None)))
}

/// Scales a cluster's managers or workers. Added nodes are provisioned by the job; removed ones (the
/// highest-numbered first) are drained before they leave, and managers never drop below quorum.
#[utoipa::path(patch, path = "/api/v1/clusters/{id}", tag = "clusters", params(("id" = Uuid, Path)), request_body = UpdateCluster,
    responses((status = 202, body = Cluster), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn update(
    State(_state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateCluster>,
) -> ApiResult<(StatusCode, Json<Cluster>)> {
    let tenant = me.tenant_with(Role::Admin)?;
    audit.record("cluster.scale", "cluster", id);
    check_shape(req.managers, req.workers)?;
    let mut tx = db.begin().await?;
    let row = load_cluster(&mut tx, tenant, id, true).await?;
    if row.status == ClusterStatus::Deleting {
        return Err(ApiError::conflict("cluster-deleting", "the cluster is being deleted"));
    }
    if row.provider == Provider::Existing {
        return Err(ApiError::conflict("not-provisioned-by-berth", "an `existing` cluster's nodes are not provisioned by Berth"));
    }
    let managers = req.managers.unwrap_or(row.desired_managers);
    let workers = req.workers.unwrap_or(row.desired_workers);
    let delta = i64::from(managers + workers) - i64::from(row.desired_managers + row.desired_workers);
    quota::reserve(&mut tx, tenant, Delta { nodes: delta, ..Default::default() }).await?;
    for (role, from, to) in
        [(NodeRole::Manager, row.desired_managers, managers), (NodeRole::Worker, row.desired_workers, workers)]
    {
        if to > from {
            add_nodes(&mut tx, tenant, &row, role, from + 1, to).await?;
        } else if to < from {
            // Marked, not deleted: the job drains and removes the machine, then the row.
            sqlx::query(
                "UPDATE nodes SET state = 'removing', updated_at = now()
                  WHERE cluster_id = $1 AND role = $2 AND id IN (
                        SELECT id FROM nodes WHERE cluster_id = $1 AND role = $2 AND state <> 'removing'
                         ORDER BY id DESC LIMIT $3)",
            )
            .bind(row.id)
            .bind(role.as_str())
            .bind(i64::from(from - to))
            .execute(&mut *tx)
            .await?;
        }
    }
    let updated: ClusterRow = sqlx::query_as(&format!(
        "UPDATE clusters SET desired_managers = $2, desired_workers = $3, updated_at = now() WHERE id = $1 RETURNING {CLUSTER_COLUMNS}"
    ))
    .bind(row.id)
    .bind(managers)
    .bind(workers)
    .fetch_one(&mut *tx)
    .await?;
    let target = Target { tenant_id: Some(tenant), kind: "cluster", id: row.id };
    let job = jobs::enqueue(&mut tx, target, "cluster.scale", json!({ "managers": managers, "workers": workers })).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(updated.into_dto(Some(job)))))
}

/// Deletes a cluster: the job removes every service, destroys every node, then the records.
#[utoipa::path(delete, path = "/api/v1/clusters/{id}", tag = "clusters", params(("id" = Uuid, Path)),
    responses((status = 202, body = Cluster), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn delete(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<Cluster>)> {
    let tenant = me.tenant_with(Role::Admin)?;
    audit.record("cluster.delete", "cluster", id);
    let mut tx = db.begin().await?;
    load_cluster(&mut tx, tenant, id, true).await?;
    let row: ClusterRow = sqlx::query_as(&format!(
        "UPDATE clusters SET status = 'deleting', updated_at = now() WHERE id = $1 RETURNING {CLUSTER_COLUMNS}"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let target = Target { tenant_id: Some(tenant), kind: "cluster", id };
    let job = jobs::enqueue(&mut tx, target, "cluster.delete", json!({})).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

// ------------------------------------------------------------------------------------------- nodes

#[derive(sqlx::FromRow)]
struct NodeRow {
    id: Uuid,
    cluster_id: Uuid,
    name: String,
    #[sqlx(try_from = "String")]
    role: NodeRole,
    #[sqlx(try_from = "String")]
    availability: Availability,
    labels: sqlx::types::Json<BTreeMap<String, String>>,
    #[sqlx(try_from = "String")]
    state: NodeState,
    leader: bool,
    engine_version: Option<String>,
    address: Option<String>,
    cpus: Option<f64>,
    memory_bytes: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl NodeRow {
    fn into_dto(self, job_id: Option<Uuid>) -> Node {
        Node {
            id: self.id,
            cluster_id: self.cluster_id,
            name: self.name,
            role: self.role,
            availability: self.availability,
            labels: self.labels.0,
            state: self.state,
            leader: self.leader,
            engine_version: self.engine_version,
            address: self.address,
            cpus: self.cpus,
            memory_bytes: self.memory_bytes,
            created_at: self.created_at,
            updated_at: self.updated_at,
            job_id,
        }
    }
}

const NODE_COLUMNS: &str = "id, cluster_id, name, role, availability, labels, state, leader, engine_version, address, cpus, memory_bytes, created_at, updated_at";

#[utoipa::path(get, path = "/api/v1/clusters/{id}/nodes", tag = "clusters", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<Node>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn list_nodes(
    db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<Node>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let mut conn = db;
    load_cluster(&mut conn, tenant, id, false).await?;
    let rows: Vec<NodeRow> = sqlx::query_as(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 AND cluster_id = $2 AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4"
    ))
    .bind(tenant)
    .bind(id)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, |r| r.into_dto(None))))
}

async fn load_node(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<NodeRow> {
    let sql =
        format!("SELECT {NODE_COLUMNS} FROM nodes WHERE tenant_id = $1 AND id = $2{}", if lock { " FOR UPDATE" } else { "" });
    let row: Option<NodeRow> = sqlx::query_as(&sql).bind(tenant).bind(id).fetch_optional(conn).await?;
    row.ok_or_else(|| ApiError::not_found("node"))
}

#[utoipa::path(get, path = "/api/v1/nodes/{id}", tag = "clusters", params(("id" = Uuid, Path)),
    responses((status = 200, body = Node), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get_node(db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Node>> {
    let tenant = me.tenant()?;
    let mut conn = db;
    Ok(Json(load_node(&mut conn, tenant, id, false).await?.into_dto(None)))
}

/// Sets a node's availability (`active`, `pause`, `drain`) or replaces its labels; the job applies it.
#[utoipa::path(patch, path = "/api/v1/nodes/{id}", tag = "clusters", params(("id" = Uuid, Path)), request_body = UpdateNode,
    responses((status = 202, body = Node), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn update_node(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateNode>,
) -> ApiResult<(StatusCode, Json<Node>)> {
    let tenant = me.tenant_with(Role::Admin)?;
    audit.record("node.update", "node", id);
    if let Some(labels) = &req.labels {
        for key in labels.keys() {
            let ok = !key.is_empty()
                && key.len() <= 128
                && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
            if !ok {
                return Err(ApiError::invalid_field(
                    &format!("labels.{key}"),
                    "label keys are letters, digits, `.`, `-`, `_`, `/`, at most 128",
                ));
            }
        }
    }
    let mut tx = db.begin().await?;
    let node = load_node(&mut tx, tenant, id, true).await?;
    let row: NodeRow = sqlx::query_as(&format!(
        "UPDATE nodes SET availability = $2, labels = $3, updated_at = now() WHERE id = $1 RETURNING {NODE_COLUMNS}"
    ))
    .bind(id)
    .bind(req.availability.unwrap_or(node.availability).as_str())
    .bind(sqlx::types::Json(req.labels.unwrap_or(node.labels.0)))
    .fetch_one(&mut *tx)
    .await?;
    let target = Target { tenant_id: Some(tenant), kind: "node", id };
    let job = jobs::enqueue(&mut tx, target, "node.update", json!({})).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into_dto(Some(job)))))
}

/// Starts a node's engine again after it stopped (crashed or was killed), like rebooting a machine.
#[utoipa::path(post, path = "/api/v1/nodes/{id}/restart", tag = "clusters", params(("id" = Uuid, Path)),
    responses((status = 202, body = Node), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn restart_node(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<Node>)> {
    let tenant = me.tenant_with(Role::Admin)?;
    audit.record("node.restart", "node", id);
    let mut tx = db.begin().await?;
    let node = load_node(&mut tx, tenant, id, true).await?;
    let provider: String =
        sqlx::query_scalar("SELECT provider FROM clusters WHERE id = $1").bind(node.cluster_id).fetch_one(&mut *tx).await?;
    if provider != Provider::Local.as_str() {
        return Err(ApiError::conflict(
            "not-provisioned-by-berth",
            "an `existing` cluster's machines are not Berth's to restart",
        ));
    }
    let target = Target { tenant_id: Some(tenant), kind: "node", id };
    let job = jobs::enqueue(&mut tx, target, "node.restart", json!({})).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(node.into_dto(Some(job)))))
}

/// TLS client credentials for the cluster's engines, for the Docker CLI. Owners and admins only; every
/// fetch is audited.
#[utoipa::path(get, path = "/api/v1/clusters/{id}/credentials", tag = "clusters", params(("id" = Uuid, Path)),
    responses((status = 200, body = ClusterCredentials), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn credentials(
    State(state): State<AppState>,
    db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ClusterCredentials>> {
    let tenant = me.tenant_with(Role::Admin)?;
    audit.record("cluster.credentials", "cluster", id);
    let mut conn = db;
    let cluster = load_cluster(&mut conn, tenant, id, false).await?;
    let secrets: Option<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT ca_cert_pem, client_cert_pem, client_key_sealed FROM cluster_secrets WHERE cluster_id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let manager: Option<String> = sqlx::query_scalar(
        "SELECT address FROM nodes WHERE cluster_id = $1 AND role = 'manager' AND address IS NOT NULL AND state <> 'removing'
          ORDER BY leader DESC, name LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let registered = cluster.settings.get("endpoint").and_then(|e| e.as_str()).map(str::to_owned);
    let endpoint = match (cluster.provider, registered, manager) {
        (Provider::Existing, Some(e), _) => e,
        (Provider::Local, _, Some(m)) => format!("tcp://{m}:{}", crate::providers::local::ENGINE_PORT),
        _ => return Err(ApiError::conflict("cluster-not-provisioned", "the cluster has no engines yet; wait until it is ready")),
    };
    let Some((ca_pem, cert_pem, key_sealed)) = secrets else {
        return Err(ApiError::conflict(
            "no-tls-credentials",
            "this cluster is reached without TLS credentials (a unix socket), or is not provisioned yet",
        ));
    };
    let key_pem = String::from_utf8(state.keys.open(&key_sealed)?).map_err(anyhow::Error::from)?;
    Ok(Json(ClusterCredentials { endpoint, ca_pem, cert_pem, key_pem }))
}
