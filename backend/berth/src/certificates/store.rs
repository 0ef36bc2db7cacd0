//! Where `certificates` rows are read and written, and which names a tenant may hold one for.

use berth_types::Certificate;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

#[derive(sqlx::FromRow)]
pub struct CertRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub domain: String,
    pub source: String,
    pub state: String,
    pub not_before: Option<DateTime<Utc>>,
    pub not_after: Option<DateTime<Utc>>,
    pub serial: String,
    pub message: String,
    pub renewed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str =
    "id, tenant_id, domain, source, state, not_before, not_after, serial, message, renewed_at, created_at, updated_at";

impl CertRow {
    pub fn into_dto(self, job_id: Option<Uuid>) -> Certificate {
        Certificate {
            id: self.id,
            domain: self.domain,
            source: self.source,
            state: self.state,
            not_before: self.not_before,
            not_after: self.not_after,
            serial: self.serial,
            message: self.message,
            renewed_at: self.renewed_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            job_id,
        }
    }
}

pub async fn load(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> ApiResult<CertRow> {
    let row: Option<CertRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM certificates WHERE tenant_id = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.ok_or_else(|| ApiError::not_found("certificate"))
}

/// A certificate for a job (no tenant scope).
pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<CertRow>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM certificates WHERE id = $1")).bind(id).fetch_optional(conn).await
}

pub async fn page(conn: &mut PgConnection, tenant: Uuid, after: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<CertRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM certificates WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Refuses a name the tenant does not route: under the apps domain, one of its routes' own domains;
/// elsewhere, a name one of its grants covers (a wildcard `*.d` when `d` is covered).
pub async fn check_held(conn: &mut PgConnection, tenant: Uuid, domain: &str, apps_domain: &str) -> ApiResult<()> {
    let name = domain.strip_prefix("*.").unwrap_or(domain);
    let under_apps = name == apps_domain || name.ends_with(&format!(".{apps_domain}"));
    let held: bool = if under_apps {
        !domain.starts_with("*.")
            && sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM routes WHERE tenant_id = $1 AND domain = $2)")
                .bind(tenant)
                .bind(domain)
                .fetch_one(&mut *conn)
                .await?
    } else {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM domain_grants g
                             WHERE g.tenant_id = $1 AND ($2 = g.domain OR right($2, length(g.domain) + 1) = '.' || g.domain))",
        )
        .bind(tenant)
        .bind(name)
        .fetch_one(&mut *conn)
        .await?
    };
    if !held {
        let why = if under_apps {
            format!("`{domain}` is not the domain of one of your routes")
        } else {
            format!("`{domain}` is not under a domain granted to your tenant: a platform admin grants it first")
        };
        return Err(ApiError::invalid_field("domain", why));
    }
    Ok(())
}

/// A unique violation on the domain: the name has a certificate already (perhaps another tenant's,
/// which is not said).
pub fn taken(e: sqlx::Error, domain: &str) -> ApiError {
    ApiError::on_constraint(e, "certificates_domain_key", "domain", format!("`{domain}` has a certificate already"))
}
