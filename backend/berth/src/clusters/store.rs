//! Where cluster rows are read: one row type for the API and the jobs.

use berth_types::{Cluster, ClusterStatus, Provider};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

#[derive(sqlx::FromRow)]
pub struct ClusterRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub provider: Provider,
    #[sqlx(try_from = "String")]
    pub status: ClusterStatus,
    pub desired_managers: i32,
    pub desired_workers: i32,
    pub settings: serde_json::Value,
    /// The local provider's network number (its bridge and subnet), once given.
    pub local_network: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ClusterRow {
    pub fn into_dto(self, job_id: Option<Uuid>) -> Cluster {
        Cluster {
            id: self.id,
            name: self.name,
            provider: self.provider,
            status: self.status,
            managers: self.desired_managers,
            workers: self.desired_workers,
            endpoint: self.settings.get("endpoint").and_then(|v| v.as_str()).map(str::to_owned),
            created_at: self.created_at,
            updated_at: self.updated_at,
            job_id,
        }
    }
}

pub const CLUSTER_COLUMNS: &str =
    "id, tenant_id, name, provider, status, desired_managers, desired_workers, settings, local_network, created_at, updated_at";

/// A cluster of the caller's tenant (404 otherwise), locked for update when asked.
pub async fn load(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<ClusterRow> {
    let sql = format!(
        "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE tenant_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<ClusterRow> = sqlx::query_as(&sql).bind(tenant).bind(id).fetch_optional(conn).await?;
    row.ok_or_else(|| ApiError::not_found("cluster"))
}

/// A cluster by id, for jobs (which act for the platform, across tenants).
pub async fn by_id(db: &PgPool, id: Uuid) -> sqlx::Result<Option<ClusterRow>> {
    sqlx::query_as(&format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE id = $1")).bind(id).fetch_optional(db).await
}
