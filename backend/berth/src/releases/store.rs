//! Where release rows, their copies' service rows and their traffic are read and written.

use berth_types::{AutoAbort, Release, ReleaseService, ReleaseState, ReleaseStrategy, ReleaseTraffic};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::applications::store::ServicePlan;
use crate::error::{ApiError, ApiResult};

#[derive(sqlx::FromRow, Clone)]
pub struct ReleaseRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub application_id: Uuid,
    pub from_revision: i32,
    pub to_revision: i32,
    #[sqlx(try_from = "String")]
    pub strategy: ReleaseStrategy,
    pub weight: i32,
    #[sqlx(try_from = "String")]
    pub state: ReleaseState,
    pub auto_abort: Option<Json<AutoAbort>>,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub const RELEASE_COLUMNS: &str =
    "id, tenant_id, application_id, from_revision, to_revision, strategy, weight, state, auto_abort,
    message, created_at, updated_at, finished_at";

impl ReleaseRow {
    pub fn is_open(&self) -> bool {
        self.finished_at.is_none()
    }
}

/// A release of the tenant's; locked for a change when `lock`.
pub async fn load(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<ReleaseRow> {
    let sql = format!(
        "SELECT {RELEASE_COLUMNS} FROM releases WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<ReleaseRow> = sqlx::query_as(&sql).bind(tenant).bind(id).fetch_optional(conn).await?;
    row.ok_or_else(|| ApiError::not_found("release"))
}

/// A release for a job (no tenant scope).
pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<ReleaseRow>> {
    sqlx::query_as(&format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1")).bind(id).fetch_optional(conn).await
}

/// The application's release that is not finished, if any.
pub async fn open_of(conn: &mut PgConnection, application: Uuid) -> sqlx::Result<Option<ReleaseRow>> {
    sqlx::query_as(&format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE application_id = $1 AND finished_at IS NULL"))
        .bind(application)
        .fetch_optional(conn)
        .await
}

pub async fn page(
    conn: &mut PgConnection,
    tenant: Uuid,
    application: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<ReleaseRow>> {
    sqlx::query_as(&format!(
        "SELECT {RELEASE_COLUMNS} FROM releases
          WHERE tenant_id = $1 AND application_id = $2 AND ($3::uuid IS NULL OR id > $3) ORDER BY id LIMIT $4"
    ))
    .bind(tenant)
    .bind(application)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The release as the API shows it: with its copies and what they answered.
pub async fn to_dto(conn: &mut PgConnection, row: ReleaseRow, job_id: Option<Uuid>) -> sqlx::Result<Release> {
    let services: Vec<(Uuid, String, String, i32, i32)> = sqlx::query_as(
        "SELECT id, name, coalesce(image_digest, image), replicas, replicas_running FROM services WHERE release_id = $1 ORDER BY name",
    )
    .bind(row.id)
    .fetch_all(&mut *conn)
    .await?;
    let (requests_total, responses_5xx_total, requests_last_minute, responses_5xx_last_minute): (i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT coalesce(sum(requests), 0)::int8, coalesce(sum(responses_5xx), 0)::int8,
                    coalesce(sum(requests) FILTER (WHERE at > now() - interval '1 minute'), 0)::int8,
                    coalesce(sum(responses_5xx) FILTER (WHERE at > now() - interval '1 minute'), 0)::int8
               FROM release_traffic WHERE release_id = $1",
        )
        .bind(row.id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Release {
        id: row.id,
        application_id: row.application_id,
        from_revision: row.from_revision,
        to_revision: row.to_revision,
        strategy: row.strategy,
        weight: row.weight,
        state: row.state,
        auto_abort: row.auto_abort.map(|a| a.0),
        message: row.message,
        services: services
            .into_iter()
            .map(|(id, name, image, replicas_desired, replicas_running)| ReleaseService {
                id,
                name,
                image,
                replicas_desired,
                replicas_running,
            })
            .collect(),
        traffic: ReleaseTraffic { requests_total, responses_5xx_total, requests_last_minute, responses_5xx_last_minute },
        created_at: row.created_at,
        updated_at: row.updated_at,
        finished_at: row.finished_at,
        job_id,
    })
}

/// Writes the release's copies as service rows (their tasks are observed like any service's).
pub async fn write_copies(tx: &mut PgConnection, release: &ReleaseRow, stack: &str, plans: &[&ServicePlan]) -> sqlx::Result<()> {
    for p in plans {
        sqlx::query(
            "INSERT INTO services (id, tenant_id, application_id, name, image, mode, replicas, cpu_reservation, memory_reservation_mb,
                                   exposed_ports, status, release_id, stack)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $12)",
        )
        .bind(Uuid::now_v7())
        .bind(release.tenant_id)
        .bind(release.application_id)
        .bind(&p.name)
        .bind(&p.image)
        .bind(p.mode)
        .bind(p.replicas)
        .bind(p.cpu_reservation)
        .bind(p.memory_reservation_mb)
        .bind(&p.exposed_ports)
        .bind(release.id)
        .bind(stack)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Moves a release to `state` (finishing it when promoted or aborted), with why.
pub async fn set_state(tx: &mut PgConnection, id: Uuid, state: ReleaseState, message: &str) -> sqlx::Result<()> {
    let finished = matches!(state, ReleaseState::Promoted | ReleaseState::Aborted);
    sqlx::query(
        "UPDATE releases SET state = $2, message = $3, updated_at = now(),
                finished_at = CASE WHEN $4 THEN now() ELSE finished_at END WHERE id = $1",
    )
    .bind(id)
    .bind(state.as_str())
    .bind(message)
    .bind(finished)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn set_weight(tx: &mut PgConnection, id: Uuid, weight: i32) -> sqlx::Result<()> {
    sqlx::query("UPDATE releases SET weight = $2, updated_at = now() WHERE id = $1").bind(id).bind(weight).execute(tx).await?;
    Ok(())
}
