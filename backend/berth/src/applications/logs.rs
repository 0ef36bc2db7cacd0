//! Logs of a service's tasks across nodes, or of one task, as Server-Sent Events. The manager serves
//! every task's log (Swarm forwards it from the task's node); Berth reads each task's log separately so
//! that every line names its task, container and node, and merges them into one stream.
//!
//! The tasks are those the observer knows when the request starts; in `follow` mode a task started
//! later (a scale-up, a restart) is not added: reconnect to include it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use berth_types::{LogLine, Problem};
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::store::{self, TaskRef};
use crate::api::extract::{ApiPath, ApiQuery};
use crate::auth::Principal;
use crate::clusters::access::connect_manager;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::swarm::Engine;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Keep the stream open and send new lines as they are written.
    #[serde(default)]
    pub follow: bool,
    /// Only lines written at or after this time: Unix seconds or RFC 3339.
    pub since: Option<String>,
    /// Only the last N lines of each task (default: all).
    pub tail: Option<u32>,
    /// Give each line the time the engine received it.
    #[serde(default)]
    pub timestamps: bool,
}

impl LogParams {
    fn options(&self) -> ApiResult<LogsOptions> {
        let since = match &self.since {
            None => 0,
            Some(s) => match s.parse::<i64>() {
                Ok(n) => n,
                Err(_) => chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|_| ApiError::invalid_field("since", "must be Unix seconds or an RFC 3339 time"))?
                    .timestamp(),
            },
        };
        Ok(LogsOptions {
            follow: self.follow,
            stdout: true,
            stderr: true,
            since: i32::try_from(since).map_err(|_| ApiError::invalid_field("since", "is out of range"))?,
            until: 0,
            // Always asked for: the line's time is parsed off and sent only when wanted.
            timestamps: true,
            tail: self.tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
        })
    }
}

/// The lines of one task's log, labelled.
fn task_lines(engine: &Engine, task: TaskRef, options: LogsOptions, timestamps: bool) -> impl Stream<Item = LogLine> + use<> {
    engine.docker.task_logs(&task.swarm_task_id, Some(options)).filter_map(move |item| {
        let task = task.clone();
        async move {
            let (stream, bytes) = match item.ok()? {
                LogOutput::StdOut { message } => ("stdout", message),
                LogOutput::StdErr { message } => ("stderr", message),
                LogOutput::Console { message } => ("stdout", message),
                LogOutput::StdIn { .. } => return None,
            };
            let text = String::from_utf8_lossy(&bytes);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let (time, line) = match text.split_once(' ') {
                Some((t, rest)) if chrono::DateTime::parse_from_rfc3339(t).is_ok() => (Some(t.to_owned()), rest.to_owned()),
                _ => (None, text.to_owned()),
            };
            Some(LogLine {
                task_id: task.swarm_task_id,
                container_id: task.container_id,
                node_id: task.node_id,
                slot: task.slot,
                stream: stream.to_owned(),
                timestamp: if timestamps { time } else { None },
                line,
            })
        }
    })
}

async fn stream_tasks(
    state: AppState,
    cluster: Uuid,
    tasks: Vec<TaskRef>,
    params: LogParams,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let options = params.options()?;
    let env = state.clusters().ok_or_else(|| {
        ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable", "this server does not reach clusters")
    })?;
    let engine = connect_manager(&state.system, &env, cluster).await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "cluster-unreachable",
            format!("no manager of the cluster answers: {e}"),
        )
    })?;
    let streams: Vec<_> = tasks.into_iter().map(|t| task_lines(&engine, t, options.clone(), params.timestamps).boxed()).collect();
    let stopping = {
        let state = state.clone();
        async move { state.shutting_down().await }
    };
    let lines = futures_util::stream::select_all(streams)
        .map(|line| Ok(SseEvent::default().event("log").json_data(&line).unwrap_or_default()))
        .take_until(stopping);
    Ok(Sse::new(lines).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Streams the logs of all the service's tasks, across nodes, as `text/event-stream`: each event is a
/// `log` whose data is a [`LogLine`] naming its task and node. Without `follow` the stream ends after
/// the lines written so far.
#[utoipa::path(get, path = "/api/v1/services/{id}/logs", tag = "applications", params(("id" = Uuid, Path), LogParams),
    responses((status = 200, description = "Server-Sent Events whose data are `LogLine` objects", content_type = "text/event-stream", body = LogLine),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 502, body = Problem)),
    security(("bearer" = [])))]
pub async fn service_logs(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<LogParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let tenant = me.tenant()?;
    let service = store::load_service(&mut db, tenant, id, false).await?;
    let app = store::load_app(&mut db, tenant, service.application_id, false).await?;
    let tasks = store::task_refs(&mut db, id).await?;
    drop(db);
    stream_tasks(state, app.cluster_id, tasks, params).await
}

/// Streams one task's (container's) log.
#[utoipa::path(get, path = "/api/v1/containers/{id}/logs", tag = "applications", params(("id" = Uuid, Path), LogParams),
    responses((status = 200, description = "Server-Sent Events whose data are `LogLine` objects", content_type = "text/event-stream", body = LogLine),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 502, body = Problem)),
    security(("bearer" = [])))]
pub async fn container_logs(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<LogParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let tenant = me.tenant()?;
    let row = store::task_ref(&mut db, tenant, id).await?;
    let (cluster, task) = row.ok_or_else(|| ApiError::not_found("container"))?;
    drop(db);
    stream_tasks(state, cluster, vec![task], params).await
}
