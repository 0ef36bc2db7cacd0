//! What the engine says about a cluster's applications, written to Postgres: per service the running
//! and desired tasks, the pinned image, published ports, the update in progress and the engine's last
//! task error; per task its node, state, container, exit code and host ports; and from those, each
//! service's and application's status. Part of the cluster reconciler's pass (one reconciler per
//! cluster across all Berth processes), which calls [`pass`] every half second.
//!
//! Rows are written only when something changed, each change with an event on the tenant's feed, so an
//! idle cluster costs the database a few reads per pass.
//!
//! Desired replicas are Berth's (the API writes them) until the engine's differ while no change of
//! Berth's can be on its way: then someone scaled the service outside Berth (the Docker CLI), and the
//! engine's count is adopted, as Swarm itself has it.

use std::collections::{HashMap, HashSet};

use berth_types::PublishedPort;
use bollard::models::{EndpointPortConfig, ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatusStateEnum, Task, TaskState};
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::compose::convert::NAMESPACE_LABEL;
use crate::jobs::{Target, emit};
use crate::swarm::Engine;

#[derive(sqlx::FromRow)]
struct AppState {
    id: Uuid,
    name: String,
    status: String,
    current_revision: i32,
    deployed_revision: Option<i32>,
    message: String,
}

#[derive(sqlx::FromRow)]
struct ServiceState {
    id: Uuid,
    application_id: Uuid,
    name: String,
    mode: String,
    replicas: i32,
    /// A release's copy runs in a stack of its own, and does not make the application's status.
    stack: Option<String>,
}

/// One service as observed.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    swarm_id: String,
    desired: i32,
    running: i32,
    image: Option<String>,
    ports: Vec<PublishedPort>,
    update_state: Option<String>,
    /// The update order the engine follows (`start-first` or `stop-first`, its default).
    update_order: String,
    /// The newest error of a task that failed or was rejected while the service is short of tasks.
    error: String,
}

/// Published ports, each once: the engine reports a task's host port once per address family it
/// binds (IPv4 and IPv6), which is one port to whoever reaches it.
fn ports(list: Option<Vec<EndpointPortConfig>>) -> Vec<PublishedPort> {
    let mut out: Vec<PublishedPort> = Vec::new();
    for p in list.unwrap_or_default() {
        let port = PublishedPort {
            target: p.target_port.unwrap_or(0),
            published: p.published_port.unwrap_or(0),
            protocol: p.protocol.map(|x| x.to_string()).unwrap_or_default(),
            mode: p.publish_mode.map(|x| x.to_string()).unwrap_or_default(),
        };
        if !out.contains(&port) {
            out.push(port);
        }
    }
    out
}

fn state_name(state: Option<TaskState>) -> String {
    state.map(|s| s.to_string()).unwrap_or_default()
}

fn timestamp(s: Option<&String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|d| d.with_timezone(&Utc))
}

/// The status a service's observations mean.
fn service_status(seen: Option<&Seen>) -> &'static str {
    let Some(s) = seen else { return "pending" };
    match s.update_state.as_deref() {
        Some("updating" | "rollback_started") => return "updating",
        Some("paused" | "rollback_paused") => return "degraded",
        _ => {}
    }
    if s.running >= s.desired {
        "running"
    } else if !s.error.is_empty() {
        if s.running == 0 { "failed" } else { "degraded" }
    } else {
        "updating"
    }
}

/// The status an application's services mean, given what it was and how far its deploys got.
fn application_status(app: &AppState, services: &[&str]) -> &'static str {
    if app.status == "failed" && app.deployed_revision != Some(app.current_revision) {
        return "failed";
    }
    let settling = if app.status == "deploying" { "deploying" } else { "updating" };
    match app.deployed_revision {
        None => return "deploying",
        Some(r) if r < app.current_revision => return settling,
        _ => {}
    }
    if services.iter().any(|s| matches!(*s, "failed" | "degraded")) {
        "degraded"
    } else if services.iter().all(|s| *s == "running") {
        "running"
    } else {
        settling
    }
}

/// One observation of the cluster's applications. True while the engine rolls a service's tasks (an
/// update or its rollback): the reconciler looks again sooner then, since each replacement task it
/// sees early drains the task it replaces from the routers for longer (`routing::table::LEAVING`).
pub async fn pass(db: &PgPool, tenant: Uuid, cluster: Uuid, engine: &Engine) -> anyhow::Result<bool> {
    let apps: Vec<AppState> = sqlx::query_as(
        "SELECT id, name, status, current_revision, deployed_revision, message FROM applications
          WHERE cluster_id = $1 AND status <> 'deleting'",
    )
    .bind(cluster)
    .fetch_all(db)
    .await?;
    if apps.is_empty() {
        return Ok(false);
    }
    let app_ids: Vec<Uuid> = apps.iter().map(|a| a.id).collect();
    // Taken before the engine is read: a job finished after this may have changed the engine after the
    // read (see `settled` below).
    let read_at: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(db).await?;

    let filters = HashMap::from([("label".to_owned(), vec![NAMESPACE_LABEL.to_owned()])]);
    let services = engine.docker.list_services(Some(ListServicesOptions { filters: Some(filters), status: Some(true) })).await?;
    let tasks = engine.docker.list_tasks(None::<ListTasksOptions>).await?;
    let mut by_service: HashMap<String, Vec<&Task>> = HashMap::new();
    for t in &tasks {
        if let Some(s) = &t.service_id {
            by_service.entry(s.clone()).or_default().push(t);
        }
    }

    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut rolling = false;
    for s in services {
        let (Some(id), Some(spec)) = (s.id, s.spec) else { continue };
        let Some(name) = spec.name.clone() else { continue };
        let status = s.service_status.unwrap_or_default();
        let own = by_service.get(&id).map(Vec::as_slice).unwrap_or_default();
        let running = own
            .iter()
            .filter(|t| {
                t.desired_state == Some(TaskState::RUNNING) && t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
            })
            .count() as i32;
        let desired = status.desired_tasks.map(|d| d as i32).unwrap_or_else(|| {
            spec.mode.as_ref().and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas).unwrap_or(1) as i32
        });
        let mut failures: Vec<(&String, String)> = own
            .iter()
            .filter_map(|t| {
                let st = t.status.as_ref()?;
                if !matches!(st.state, Some(TaskState::FAILED | TaskState::REJECTED)) {
                    return None;
                }
                let text = st.err.clone().filter(|e| !e.is_empty()).or_else(|| st.message.clone())?;
                Some((st.timestamp.as_ref()?, text))
            })
            .collect();
        failures.sort();
        let error = if running < desired { failures.last().map(|(_, e)| e.clone()).unwrap_or_default() } else { String::new() };
        let update = s.update_status.and_then(|u| u.state);
        rolling |=
            matches!(update, Some(ServiceUpdateStatusStateEnum::UPDATING | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED));
        let update_state = update.filter(|s| *s != ServiceUpdateStatusStateEnum::EMPTY).map(|s| s.to_string());
        let update_order = match spec.update_config.as_ref().and_then(|u| u.order) {
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST) => "start-first",
            _ => "stop-first",
        };
        seen.insert(
            name,
            Seen {
                swarm_id: id,
                desired,
                running,
                image: spec.task_template.and_then(|t| t.container_spec).and_then(|c| c.image),
                ports: ports(s.endpoint.and_then(|e| e.ports)),
                update_state,
                update_order: update_order.to_owned(),
                error,
            },
        );
    }

    let nodes: HashMap<String, Uuid> = sqlx::query_as::<_, (String, Uuid)>(
        "SELECT swarm_node_id, id FROM nodes WHERE cluster_id = $1 AND swarm_node_id IS NOT NULL",
    )
    .bind(cluster)
    .fetch_all(db)
    .await?
    .into_iter()
    .collect();

    let mut tx = db.begin().await?;
    // The rows are read (and locked) only now, after the engine: a scale committed by the API before this
    // is seen here, and none can commit until this pass has written its observations.
    let rows: Vec<ServiceState> = sqlx::query_as(
        "SELECT id, application_id, name, mode, replicas, stack FROM services
          WHERE application_id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&app_ids)
    .fetch_all(&mut *tx)
    .await?;
    // Applications whose changes may not have reached the engine when it was read: a job of theirs is
    // queued or running, or finished after the read began.
    let unsettled: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT target_id FROM jobs WHERE target_type = 'application' AND target_id = ANY($1)
            AND (state IN ('queued', 'running') OR finished_at >= $2)",
    )
    .bind(&app_ids)
    .bind(read_at)
    .fetch_all(&mut *tx)
    .await?;
    let mut statuses: HashMap<Uuid, Vec<&'static str>> = HashMap::new();
    let mut messages: HashMap<Uuid, String> = HashMap::new();
    for row in &rows {
        let Some(app) = apps.iter().find(|a| a.id == row.application_id) else { continue };
        let observed = seen.get(&super::store::engine_name(&app.name, row.stack.as_deref(), &row.name));
        let status = service_status(observed);
        if row.stack.is_none() {
            statuses.entry(app.id).or_default().push(status);
        }
        let Some(o) = observed else { continue };
        if !o.error.is_empty() && row.stack.is_none() {
            messages.entry(app.id).or_insert_with(|| format!("{}: {}", row.name, o.error));
        }
        // A global service's desired count is the engine's (one per eligible node). A replicated one's is
        // Berth's desired state; when the engine's differs and every change of Berth's has reached the
        // engine, someone scaled it outside Berth (`docker service scale`), and that becomes the desired
        // state — as the engine itself has it. While a change of Berth's may still be on its way, the
        // engine's count is the old one and Berth's stands.
        let settled = !unsettled.contains(&app.id);
        let desired = if row.mode == "global" || settled { o.desired } else { row.replicas };
        // The event carries the service as the API shows it: a console updates its row from the event
        // alone, without asking for it (with hundreds of services, a request per change costs frames).
        let changed: Option<super::store::ServiceRow> = sqlx::query_as(&format!(
            "UPDATE services SET replicas = $2, replicas_running = $3, image_digest = coalesce($4, image_digest), ports = $5,
                    update_state = $6, message = $7, status = $8, swarm_service_id = $9, update_order = $10,
                    observed_at = now(), updated_at = now()
              WHERE id = $1
                AND (replicas, replicas_running, image_digest, ports, update_state, message, status, swarm_service_id, update_order)
                    IS DISTINCT FROM ($2, $3, coalesce($4, image_digest), $5, $6, $7, $8, $9, $10)
              RETURNING {}",
            super::store::SERVICE_COLUMNS
        ))
        .bind(row.id)
        .bind(desired)
        .bind(o.running)
        .bind(&o.image)
        .bind(Json(&o.ports))
        .bind(&o.update_state)
        .bind(&o.error)
        .bind(status)
        .bind(&o.swarm_id)
        .bind(&o.update_order)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(service) = changed {
            let target = Target { tenant_id: Some(tenant), kind: "service", id: row.id };
            emit(&mut tx, &target, "service.observed", serde_json::to_value(service.into_dto(None))?).await?;
        }
        write_tasks(&mut tx, tenant, row.id, by_service.get(&o.swarm_id).map(Vec::as_slice).unwrap_or_default(), &nodes).await?;
    }
    for app in &apps {
        let services = statuses.get(&app.id).cloned().unwrap_or_default();
        let status = application_status(app, &services);
        let message = if status == "degraded" {
            messages.get(&app.id).cloned().unwrap_or_default()
        } else if status == "failed" {
            app.message.clone()
        } else {
            String::new()
        };
        if status != app.status || message != app.message {
            sqlx::query(
                "UPDATE applications SET status = $2, message = $3, updated_at = now() WHERE id = $1 AND status <> 'deleting'",
            )
            .bind(app.id)
            .bind(status)
            .bind(&message)
            .execute(&mut *tx)
            .await?;
            if status != app.status {
                let target = Target { tenant_id: Some(tenant), kind: "application", id: app.id };
                emit(&mut tx, &target, "application.status", json!({ "from": app.status, "to": status, "message": message }))
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(rolling)
}

/// Upserts the service's tasks as container rows (written only when changed) and drops the rows of
/// tasks the engine no longer has.
async fn write_tasks(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    service: Uuid,
    tasks: &[&Task],
    nodes: &HashMap<String, Uuid>,
) -> anyhow::Result<()> {
    let mut ids = HashSet::new();
    for t in tasks {
        let Some(task_id) = &t.id else { continue };
        ids.insert(task_id.clone());
        let status = t.status.clone().unwrap_or_default();
        let container = status.container_status.clone().unwrap_or_default();
        let running = status.state == Some(TaskState::RUNNING);
        sqlx::query(
            "INSERT INTO containers (id, tenant_id, service_id, node_id, swarm_task_id, container_id, slot, state, desired_state,
                                     message, error, exit_code, host_ports, started_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, coalesce($15, now()))
             ON CONFLICT (swarm_task_id) DO UPDATE
                SET node_id = excluded.node_id, container_id = excluded.container_id, state = excluded.state,
                    desired_state = excluded.desired_state, message = excluded.message, error = excluded.error,
                    exit_code = excluded.exit_code, host_ports = excluded.host_ports,
                    started_at = coalesce(containers.started_at, excluded.started_at), updated_at = now()
              WHERE (containers.node_id, containers.container_id, containers.state, containers.desired_state, containers.message,
                     containers.error, containers.exit_code, containers.host_ports)
                    IS DISTINCT FROM (excluded.node_id, excluded.container_id, excluded.state, excluded.desired_state,
                                      excluded.message, excluded.error, excluded.exit_code, excluded.host_ports)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(service)
        .bind(t.node_id.as_ref().and_then(|n| nodes.get(n)))
        .bind(task_id)
        .bind(container.container_id.filter(|c| !c.is_empty()))
        .bind(t.slot.map(|s| s as i32))
        .bind(state_name(status.state))
        .bind(state_name(t.desired_state))
        .bind(status.message.clone().unwrap_or_default())
        .bind(status.err.clone().unwrap_or_default())
        .bind(container.exit_code.map(|c| c as i32))
        .bind(Json(ports(status.port_status.and_then(|p| p.ports))))
        .bind(if running { timestamp(status.timestamp.as_ref()) } else { None })
        .bind(timestamp(t.created_at.as_ref()))
        .execute(&mut *tx)
        .await?;
    }
    let ids: Vec<String> = ids.into_iter().collect();
    sqlx::query("DELETE FROM containers WHERE service_id = $1 AND NOT (swarm_task_id = ANY($2))")
        .bind(service)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Gives running tasks of a Berth-provisioned cluster their container's IP addresses, read once per
/// task from the engine of the node it runs on (the manager's task list does not carry them). Tasks of
/// adopted clusters keep none: Berth reaches only their manager.
pub async fn fill_addresses(db: &PgPool, env: &crate::clusters::WorkerEnv, cluster: Uuid) -> anyhow::Result<()> {
    let pending: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT c.id, c.container_id, n.address FROM containers c
           JOIN services s ON s.id = c.service_id JOIN applications a ON a.id = s.application_id
           JOIN clusters k ON k.id = a.cluster_id
           JOIN nodes n ON n.id = c.node_id
          WHERE a.cluster_id = $1 AND k.provider = 'local' AND c.state = 'running' AND c.addresses = '{}'
            AND c.container_id IS NOT NULL AND n.address IS NOT NULL
          LIMIT 50",
    )
    .bind(cluster)
    .fetch_all(db)
    .await?;
    if pending.is_empty() {
        return Ok(());
    }
    let access = crate::clusters::access::ClusterAccess::ensure(db, env, cluster).await?;
    let mut engines: HashMap<String, Engine> = HashMap::new();
    for (row, container, node) in pending {
        let Ok(ip) = node.parse() else { continue };
        if !engines.contains_key(&node) {
            engines.insert(node.clone(), access.engine(ip).await?);
        }
        let engine = &engines[&node];
        let Ok(inspected) = engine.docker.inspect_container(&container, None).await else { continue };
        let addresses: Vec<String> = inspected
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_values()
            .filter_map(|n| n.ip_address.filter(|ip| !ip.is_empty()))
            .collect();
        if !addresses.is_empty() {
            sqlx::query("UPDATE containers SET addresses = $2, updated_at = now() WHERE id = $1")
                .bind(row)
                .bind(&addresses)
                .execute(db)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(desired: i32, running: i32, update: Option<&str>, error: &str) -> Seen {
        Seen { desired, running, update_state: update.map(str::to_owned), error: error.to_owned(), ..Default::default() }
    }

    #[test]
    fn a_host_port_bound_for_two_address_families_is_one_port() {
        let bound = || EndpointPortConfig { target_port: Some(8080), published_port: Some(32768), ..Default::default() };
        let other = EndpointPortConfig { target_port: Some(9090), published_port: Some(32769), ..Default::default() };
        let got = ports(Some(vec![bound(), bound(), other]));
        assert_eq!(got.iter().map(|p| (p.target, p.published)).collect::<Vec<_>>(), [(8080, 32768), (9090, 32769)]);
    }

    #[test]
    fn service_statuses() {
        assert_eq!(service_status(None), "pending");
        assert_eq!(service_status(Some(&seen(2, 2, None, ""))), "running");
        assert_eq!(service_status(Some(&seen(2, 2, Some("updating"), ""))), "updating");
        assert_eq!(service_status(Some(&seen(2, 1, None, ""))), "updating");
        assert_eq!(service_status(Some(&seen(2, 1, None, "exit 1"))), "degraded");
        assert_eq!(service_status(Some(&seen(2, 0, None, "no such image"))), "failed");
        assert_eq!(service_status(Some(&seen(2, 2, Some("paused"), ""))), "degraded");
    }

    #[test]
    fn application_statuses() {
        let app = |status: &str, current, deployed| AppState {
            id: Uuid::nil(),
            name: String::new(),
            status: status.to_owned(),
            current_revision: current,
            deployed_revision: deployed,
            message: String::new(),
        };
        assert_eq!(application_status(&app("deploying", 1, None), &["pending"]), "deploying");
        assert_eq!(application_status(&app("deploying", 1, Some(1)), &["updating", "running"]), "deploying");
        assert_eq!(application_status(&app("deploying", 1, Some(1)), &["running", "running"]), "running");
        assert_eq!(application_status(&app("running", 2, Some(1)), &["running"]), "updating");
        assert_eq!(application_status(&app("updating", 2, Some(2)), &["updating"]), "updating");
        assert_eq!(application_status(&app("running", 1, Some(1)), &["running", "failed"]), "degraded");
        assert_eq!(application_status(&app("failed", 2, Some(1)), &["running"]), "failed");
    }
}
