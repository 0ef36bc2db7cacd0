//! Following queued work: a job's state, step, percent and log.

use axum::Json;
use berth_types::{Job, JobLogLine, JobState, Page, Problem};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::api::extract::{ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    kind: String,
    target_type: String,
    target_id: Uuid,
    #[sqlx(try_from = "String")]
    state: JobState,
    step: String,
    percent: i32,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        Job {
            id: r.id,
            kind: r.kind,
            target_type: r.target_type,
            target_id: r.target_id,
            state: r.state,
            step: r.step,
            percent: r.percent,
            attempts: r.attempts,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            logs: Vec::new(),
        }
    }
}

const JOB_COLUMNS: &str =
    "id, kind, target_type, target_id, state, step, percent, attempts, last_error, created_at, updated_at, finished_at";

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(PageParams),
    responses((status = 200, body = Page<Job>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<Job>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let rows: Vec<JobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, Into::into)))
}

/// A job with its whole log.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(mut db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Job>> {
    let tenant = me.tenant()?;
    let row: Option<JobRow> = sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *db)
        .await?;
    let mut job: Job = row.ok_or_else(|| ApiError::not_found("job"))?.into();
    let logs: Vec<(DateTime<Utc>, String)> =
        sqlx::query_as("SELECT at, line FROM job_logs WHERE job_id = $1 ORDER BY id").bind(id).fetch_all(&mut *db).await?;
    job.logs = logs.into_iter().map(|(at, line)| JobLogLine { at, line }).collect();
    Ok(Json(job))
}
