//! Where application, revision, service and container rows are read and written. Handlers, the deploy
//! jobs and the observer all come here; nothing else in Berth touches these tables.

use std::collections::BTreeMap;

use berth_types::{
    Application, ApplicationRevision, ApplicationStatus, ComposeWarning, Container, PublishedPort, Service, ServiceStatus,
};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::compose::model::{Mode, Project};
use super::compose::{Diagnostic, policy::Policy};
use crate::error::{ApiError, ApiResult};

#[derive(sqlx::FromRow)]
pub struct AppRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub cluster_id: Uuid,
    pub template_id: Option<Uuid>,
    #[sqlx(try_from = "String")]
    pub status: ApplicationStatus,
    pub current_revision: i32,
    pub deployed_revision: Option<i32>,
    pub message: String,
    pub warnings: Json<Vec<ComposeWarning>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl AppRow {
    pub fn into_dto(self, job_id: Option<Uuid>) -> Application {
        Application {
            id: self.id,
            name: self.name,
            cluster_id: self.cluster_id,
            template_id: self.template_id,
            status: self.status,
            revision: self.current_revision,
            deployed_revision: self.deployed_revision,
            message: self.message,
            warnings: self.warnings.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
            job_id,
        }
    }
}

/// The application columns, with the current revision's warnings.
pub const APP_SELECT: &str = "SELECT a.id, a.tenant_id, a.name, a.cluster_id, a.template_id, a.status, a.current_revision,
        a.deployed_revision, a.message, coalesce(r.warnings, '[]'::jsonb) AS warnings, a.created_at, a.updated_at
   FROM applications a LEFT JOIN application_revisions r ON r.application_id = a.id AND r.revision = a.current_revision";

pub async fn load_app(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<AppRow> {
    let sql = format!("{APP_SELECT} WHERE a.tenant_id = $1 AND a.id = $2{}", if lock { " FOR UPDATE OF a" } else { "" });
    let row: Option<AppRow> = sqlx::query_as(&sql).bind(tenant).bind(id).fetch_optional(conn).await?;
    row.ok_or_else(|| ApiError::not_found("application"))
}

/// Loads an application for a job (no tenant scope: jobs act for the platform).
pub async fn app_by_id(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<AppRow>> {
    sqlx::query_as(&format!("{APP_SELECT} WHERE a.id = $1")).bind(id).fetch_optional(conn).await
}

/// Everything a deploy of one revision needs.
#[derive(sqlx::FromRow, Clone)]
pub struct RevisionRow {
    pub revision: i32,
    pub template_id: Option<Uuid>,
    pub template_version: Option<i32>,
    pub compose: String,
    pub files: Json<BTreeMap<String, String>>,
    pub variables: Json<BTreeMap<String, String>>,
    pub images: Json<BTreeMap<String, String>>,
    pub warnings: Json<Vec<ComposeWarning>>,
    pub created_at: DateTime<Utc>,
}

impl From<RevisionRow> for ApplicationRevision {
    fn from(r: RevisionRow) -> Self {
        ApplicationRevision {
            revision: r.revision,
            template_id: r.template_id,
            template_version: r.template_version,
            compose: r.compose,
            files: r.files.0,
            variables: r.variables.0,
            images: r.images.0,
            warnings: r.warnings.0,
            created_at: r.created_at,
        }
    }
}

pub const REVISION_COLUMNS: &str =
    "revision, template_id, template_version, compose, files, variables, images, warnings, created_at";

pub async fn revision(conn: &mut PgConnection, app: Uuid, revision: i32) -> sqlx::Result<Option<RevisionRow>> {
    sqlx::query_as(&format!("SELECT {REVISION_COLUMNS} FROM application_revisions WHERE application_id = $1 AND revision = $2"))
        .bind(app)
        .bind(revision)
        .fetch_optional(conn)
        .await
}

/// The number the application's next revision gets (a release may have made revisions after the
/// current one).
pub async fn next_revision(conn: &mut PgConnection, app: Uuid) -> sqlx::Result<i32> {
    sqlx::query_scalar("SELECT coalesce(max(revision), 0) + 1 FROM application_revisions WHERE application_id = $1")
        .bind(app)
        .fetch_one(conn)
        .await
}

/// What a new revision records.
pub struct NewRevision<'a> {
    pub template_id: Option<Uuid>,
    pub template_version: Option<i32>,
    pub compose: &'a str,
    pub files: &'a BTreeMap<String, String>,
    pub variables: &'a BTreeMap<String, String>,
    /// Images already pinned (a rollback reuses the earlier revision's digests).
    pub images: BTreeMap<String, String>,
    pub warnings: &'a [Diagnostic],
}

pub fn warnings(diags: &[Diagnostic]) -> Vec<ComposeWarning> {
    diags
        .iter()
        .map(|d| ComposeWarning {
            path: d.path.clone(),
            message: d.message.clone(),
            line: d.line.into(),
            column: d.column.into(),
        })
        .collect()
}

pub async fn insert_revision(
    tx: &mut PgConnection,
    tenant: Uuid,
    app: Uuid,
    revision: i32,
    new: &NewRevision<'_>,
    by: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO application_revisions
                (tenant_id, application_id, revision, template_id, template_version, compose, files, variables, images, warnings, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(tenant)
    .bind(app)
    .bind(revision)
    .bind(new.template_id)
    .bind(new.template_version)
    .bind(new.compose)
    .bind(Json(new.files))
    .bind(Json(new.variables))
    .bind(Json(&new.images))
    .bind(Json(warnings(new.warnings)))
    .bind(by)
    .execute(tx)
    .await?;
    Ok(())
}

/// Variables Berth gives every deploy: where its registry is and the tenant's namespace there, so a
/// Compose file can name `${BERTH_REGISTRY}/${BERTH_TENANT}/web:1`. They are not stored with the
/// revision (they are Berth's, not the caller's) and override any the caller gives.
pub const BUILTIN_VARIABLES: [&str; 2] = ["BERTH_REGISTRY", "BERTH_TENANT"];

pub async fn with_builtins(
    conn: &mut PgConnection,
    tenant: Uuid,
    registry: Option<&str>,
    variables: &BTreeMap<String, String>,
) -> sqlx::Result<BTreeMap<String, String>> {
    let mut all = variables.clone();
    if let Some(address) = registry {
        all.insert("BERTH_REGISTRY".to_owned(), address.to_owned());
    }
    if let Some(slug) = crate::registry::store::slug_of(conn, tenant).await? {
        all.insert("BERTH_TENANT".to_owned(), slug);
    }
    Ok(all)
}

/// The tenant's admission policy ('{}' in the row means the defaults).
pub async fn policy(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<Policy> {
    let value: Option<Json<Policy>> =
        sqlx::query_scalar("SELECT admission_policy FROM tenants WHERE id = $1").bind(tenant).fetch_optional(conn).await?;
    Ok(value.map(|v| v.0).unwrap_or_default())
}

/// A service as a revision asks for it, with what quotas count.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePlan {
    pub name: String,
    pub image: String,
    pub mode: &'static str,
    pub replicas: i32,
    pub cpu_reservation: f64,
    pub memory_reservation_mb: i64,
    /// Target ports routes may reach ([`crate::routing::declare::exposed_ports`]).
    pub exposed_ports: Vec<i32>,
}

/// The services of a project; a global service counts one task per node of the cluster.
pub fn plan(project: &Project, nodes: i32) -> Vec<ServicePlan> {
    project
        .services
        .iter()
        .map(|(name, svc)| {
            let (mode, replicas) = match svc.deploy.mode {
                Mode::Global => ("global", nodes),
                Mode::Replicated(n) => ("replicated", n.map_or(1, |n| i32::try_from(n).unwrap_or(i32::MAX))),
            };
            let reservations = svc.deploy.reservations.as_ref();
            ServicePlan {
                name: name.clone(),
                image: svc.image.clone(),
                mode,
                replicas,
                cpu_reservation: reservations.map_or(0.0, |r| r.nano_cpus as f64 / 1e9),
                memory_reservation_mb: reservations.map_or(0, |r| (r.memory + (1 << 20) - 1) >> 20),
                exposed_ports: crate::routing::declare::exposed_ports(svc).into_iter().map(i32::from).collect(),
            }
        })
        .collect()
}

/// What the services reserve in all: (CPUs, memory MiB).
pub fn totals<'a>(plans: impl IntoIterator<Item = &'a ServicePlan>) -> (f64, i64) {
    plans.into_iter().fold((0.0, 0), |(c, m), p| {
        (c + p.cpu_reservation * f64::from(p.replicas), m + p.memory_reservation_mb * i64::from(p.replicas))
    })
}

/// What an application's services reserve today: (services, cpus, memory MiB).
pub async fn reserved(conn: &mut PgConnection, app: Uuid) -> sqlx::Result<(i64, f64, i64)> {
    sqlx::query_as(
        "SELECT count(*), coalesce(sum(cpu_reservation * replicas), 0)::float8, coalesce(sum(memory_reservation_mb * replicas), 0)::int8
           FROM services WHERE application_id = $1",
    )
    .bind(app)
    .fetch_one(conn)
    .await
}

/// Writes the services of a revision as desired state: updates the ones that stay, adds new ones, drops
/// the ones the revision no longer has (the deploy job removes them from Swarm, like `--prune`).
pub async fn write_services(tx: &mut PgConnection, tenant: Uuid, app: Uuid, plans: &[ServicePlan]) -> sqlx::Result<()> {
    let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    sqlx::query("DELETE FROM services WHERE application_id = $1 AND release_id IS NULL AND NOT (name = ANY($2))")
        .bind(app)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    for p in plans {
        sqlx::query(
            "INSERT INTO services (id, tenant_id, application_id, name, image, mode, replicas, cpu_reservation, memory_reservation_mb,
                                   exposed_ports, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending')
             ON CONFLICT (application_id, name) WHERE release_id IS NULL DO UPDATE
                SET image = excluded.image, mode = excluded.mode, replicas = excluded.replicas,
                    cpu_reservation = excluded.cpu_reservation, memory_reservation_mb = excluded.memory_reservation_mb,
                    exposed_ports = excluded.exposed_ports, status = 'updating', updated_at = now()",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(app)
        .bind(&p.name)
        .bind(&p.image)
        .bind(p.mode)
        .bind(p.replicas)
        .bind(p.cpu_reservation)
        .bind(p.memory_reservation_mb)
        .bind(&p.exposed_ports)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
pub struct ServiceRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub application_id: Uuid,
    pub name: String,
    pub image: String,
    pub image_digest: Option<String>,
    pub mode: String,
    pub replicas: i32,
    pub replicas_running: i32,
    pub cpu_reservation: f64,
    pub memory_reservation_mb: i64,
    #[sqlx(try_from = "String")]
    pub status: ServiceStatus,
    pub ports: Json<Vec<PublishedPort>>,
    pub update_state: Option<String>,
    pub update_order: Option<String>,
    pub message: String,
    pub swarm_service_id: Option<String>,
    pub release_id: Option<Uuid>,
    /// The engine stack of a release's copy (`<application>_r<revision>`); `None` for the application's own.
    pub stack: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ServiceRow {
    /// The service's name on the engine.
    pub fn engine_name(&self, application: &str) -> String {
        engine_name(application, self.stack.as_deref(), &self.name)
    }

    pub fn into_dto(self, job_id: Option<Uuid>) -> Service {
        Service {
            id: self.id,
            application_id: self.application_id,
            name: self.name,
            image: self.image,
            image_digest: self.image_digest,
            mode: self.mode,
            replicas_desired: self.replicas,
            replicas_running: self.replicas_running,
            cpu_reservation: self.cpu_reservation,
            memory_reservation_mb: self.memory_reservation_mb,
            status: self.status,
            ports: self.ports.0,
            update_state: self.update_state,
            update_order: self.update_order,
            message: self.message,
            swarm_service_id: self.swarm_service_id,
            release_id: self.release_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            job_id,
        }
    }
}

pub const SERVICE_COLUMNS: &str =
    "id, tenant_id, application_id, name, image, image_digest, mode, replicas, replicas_running, cpu_reservation,
    memory_reservation_mb, status, ports, update_state, update_order, message, swarm_service_id, release_id, stack, created_at, updated_at";

/// A service's name on the engine: `<stack>_<name>`, where the stack is the application's name, or a
/// release's own stack for its copies (as `docker stack deploy` names a stack's services).
pub fn engine_name(application: &str, stack: Option<&str>, name: &str) -> String {
    format!("{}_{name}", stack.unwrap_or(application))
}

pub async fn load_service(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<ServiceRow> {
    let sql = format!(
        "SELECT {SERVICE_COLUMNS} FROM services WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<ServiceRow> = sqlx::query_as(&sql).bind(tenant).bind(id).fetch_optional(conn).await?;
    row.ok_or_else(|| ApiError::not_found("service"))
}

pub async fn services_of(conn: &mut PgConnection, app: Uuid) -> sqlx::Result<Vec<ServiceRow>> {
    sqlx::query_as(&format!("SELECT {SERVICE_COLUMNS} FROM services WHERE application_id = $1 ORDER BY name"))
        .bind(app)
        .fetch_all(conn)
        .await
}

#[derive(sqlx::FromRow)]
pub struct ContainerRow {
    pub id: Uuid,
    pub service_id: Uuid,
    pub node_id: Option<Uuid>,
    pub swarm_task_id: String,
    pub container_id: Option<String>,
    pub slot: Option<i32>,
    pub state: String,
    pub desired_state: String,
    pub message: String,
    pub error: String,
    pub exit_code: Option<i32>,
    pub addresses: Vec<String>,
    pub host_ports: Json<Vec<PublishedPort>>,
    pub started_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ContainerRow> for Container {
    fn from(r: ContainerRow) -> Self {
        Container {
            id: r.id,
            service_id: r.service_id,
            node_id: r.node_id,
            swarm_task_id: r.swarm_task_id,
            container_id: r.container_id,
            slot: r.slot,
            state: r.state,
            desired_state: r.desired_state,
            message: r.message,
            error: r.error,
            exit_code: r.exit_code,
            addresses: r.addresses,
            host_ports: r.host_ports.0,
            started_at: r.started_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A task whose log is read: its ids and where it runs.
#[derive(sqlx::FromRow, Clone)]
pub struct TaskRef {
    pub swarm_task_id: String,
    pub container_id: Option<String>,
    pub node_id: Option<Uuid>,
    pub slot: Option<i32>,
}

/// The service's tasks that have a container, by slot.
pub async fn task_refs(conn: &mut PgConnection, service: Uuid) -> sqlx::Result<Vec<TaskRef>> {
    sqlx::query_as(
        "SELECT swarm_task_id, container_id, node_id, slot FROM containers
          WHERE service_id = $1 AND container_id IS NOT NULL ORDER BY slot, id",
    )
    .bind(service)
    .fetch_all(conn)
    .await
}

/// One of the tenant's tasks, with the cluster it runs on.
pub async fn task_ref(conn: &mut PgConnection, tenant: Uuid, container: Uuid) -> sqlx::Result<Option<(Uuid, TaskRef)>> {
    #[derive(sqlx::FromRow)]
    struct Located {
        cluster_id: Uuid,
        #[sqlx(flatten)]
        task: TaskRef,
    }
    let row: Option<Located> = sqlx::query_as(
        "SELECT a.cluster_id, c.swarm_task_id, c.container_id, c.node_id, c.slot
           FROM containers c JOIN services s ON s.id = c.service_id JOIN applications a ON a.id = s.application_id
          WHERE c.tenant_id = $1 AND c.id = $2",
    )
    .bind(tenant)
    .bind(container)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.cluster_id, r.task)))
}

pub const CONTAINER_COLUMNS: &str =
    "id, service_id, node_id, swarm_task_id, container_id, slot, state, desired_state, message, error,
    exit_code, addresses, host_ports, started_at, created_at, updated_at";

// ------------------------------------------------------------------------- pages, keyset by id

pub async fn apps_page(conn: &mut PgConnection, tenant: Uuid, after: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<AppRow>> {
    sqlx::query_as(&format!("{APP_SELECT} WHERE a.tenant_id = $1 AND ($2::uuid IS NULL OR a.id > $2) ORDER BY a.id LIMIT $3"))
        .bind(tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await
}

pub async fn revisions_page(
    conn: &mut PgConnection,
    tenant: Uuid,
    app: Uuid,
    after: Option<i32>,
    limit: i64,
) -> sqlx::Result<Vec<RevisionRow>> {
    sqlx::query_as(&format!(
        "SELECT {REVISION_COLUMNS} FROM application_revisions
          WHERE tenant_id = $1 AND application_id = $2 AND ($3::int IS NULL OR revision > $3) ORDER BY revision LIMIT $4"
    ))
    .bind(tenant)
    .bind(app)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn services_page(
    conn: &mut PgConnection,
    tenant: Uuid,
    app: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<ServiceRow>> {
    sqlx::query_as(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services
          WHERE tenant_id = $1 AND application_id = $2 AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4"
    ))
    .bind(tenant)
    .bind(app)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn containers_page(
    conn: &mut PgConnection,
    tenant: Uuid,
    service: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<ContainerRow>> {
    sqlx::query_as(&format!(
        "SELECT {CONTAINER_COLUMNS} FROM containers
          WHERE tenant_id = $1 AND service_id = $2 AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4"
    ))
    .bind(tenant)
    .bind(service)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A service and its application, both locked, for a change: refused while the application is being
/// deleted.
pub async fn service_for_change(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> ApiResult<(ServiceRow, AppRow)> {
    let svc = load_service(conn, tenant, id, true).await?;
    let app = load_app(conn, tenant, svc.application_id, true).await?;
    if app.status == ApplicationStatus::Deleting {
        return Err(ApiError::conflict("application-deleting", "the application is being deleted"));
    }
    Ok((svc, app))
}
