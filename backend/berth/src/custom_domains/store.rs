//! The rows behind custom domains: `domain_grants` (a domain a tenant holds, and every name under it)
//! and `domain_claims` (a domain a tenant waits to prove).

use berth_types::{Domain, DomainGrant, DomainProof, DomainStatus, DomainVerification};
use sqlx::PgConnection;
use uuid::Uuid;

use super::proof;
use crate::error::{ApiError, ApiResult};

#[derive(sqlx::FromRow)]
pub struct GrantRow {
    pub domain: String,
    pub tenant_id: Uuid,
    pub proved_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl GrantRow {
    fn proof(&self) -> DomainProof {
        self.proved_by.parse().unwrap_or(DomainProof::Admin)
    }
}

impl From<GrantRow> for DomainGrant {
    fn from(r: GrantRow) -> DomainGrant {
        DomainGrant { proved_by: r.proof(), domain: r.domain, tenant_id: r.tenant_id, created_at: r.created_at }
    }
}

impl From<GrantRow> for Domain {
    fn from(r: GrantRow) -> Domain {
        Domain {
            status: DomainStatus::Verified,
            proved_by: Some(r.proof()),
            verification: None,
            last_error: None,
            checked_at: None,
            domain: r.domain,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct ClaimRow {
    pub domain: String,
    pub token: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub checked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
}

impl From<ClaimRow> for Domain {
    fn from(r: ClaimRow) -> Domain {
        Domain {
            status: DomainStatus::Pending,
            proved_by: None,
            verification: Some(DomainVerification {
                record_type: "TXT".into(),
                name: proof::record_name(&r.domain),
                value: proof::record_value(&r.token),
            }),
            last_error: r.last_error,
            checked_at: r.checked_at,
            domain: r.domain,
            created_at: r.created_at,
        }
    }
}

pub const GRANT_COLUMNS: &str = "domain, tenant_id, proved_by, created_at";
pub const CLAIM_COLUMNS: &str = "domain, token, created_at, checked_at, last_error";

/// Refuses `domain` when another tenant holds it, a domain above it or a name under it: two tenants
/// would otherwise route one name. Runs on the system pool (grants are row-level protected).
pub async fn refuse_if_held_by_other(conn: &mut PgConnection, tenant: Uuid, domain: &str) -> ApiResult<()> {
    let clash: Option<String> = sqlx::query_scalar(
        "SELECT domain FROM domain_grants WHERE tenant_id <> $1
            AND (domain = $2 OR right($2, length(domain) + 1) = '.' || domain OR right(domain, length($2) + 1) = '.' || $2)
          LIMIT 1",
    )
    .bind(tenant)
    .bind(domain)
    .fetch_optional(conn)
    .await?;
    match clash {
        Some(other) => Err(ApiError::conflict("domain-granted", format!("`{other}` belongs to another tenant"))),
        None => Ok(()),
    }
}

/// Gives `tenant` the domain (and every name under it) and routes its routes there. Grants are
/// serialized, so two tenants proving overlapping names at once cannot both win. A platform admin's
/// grant also marks a domain the tenant proved itself as granted (the admin's word is the stronger).
pub async fn grant(conn: &mut PgConnection, tenant: Uuid, domain: &str, proof: DomainProof) -> ApiResult<GrantRow> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('berth.domain_grants'))").execute(&mut *conn).await?;
    refuse_if_held_by_other(conn, tenant, domain).await?;
    let row: GrantRow = sqlx::query_as(&format!(
        "INSERT INTO domain_grants (domain, tenant_id, proved_by) VALUES ($1, $2, $3)
         ON CONFLICT (domain) DO UPDATE SET proved_by = CASE WHEN excluded.proved_by = 'admin' THEN 'admin' ELSE domain_grants.proved_by END
         RETURNING {GRANT_COLUMNS}"
    ))
    .bind(domain)
    .bind(tenant)
    .bind(proof.as_str())
    .fetch_one(&mut *conn)
    .await?;
    // A claim the grant settles is done with.
    sqlx::query("DELETE FROM domain_claims WHERE tenant_id = $1 AND domain = $2")
        .bind(tenant)
        .bind(domain)
        .execute(&mut *conn)
        .await?;
    crate::routing::store::reverify(conn, tenant).await?;
    Ok(row)
}

/// The tenant's grant covering `domain` (the domain itself or one above it), if any.
pub async fn covering_grant(conn: &mut PgConnection, tenant: Uuid, domain: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT domain FROM domain_grants WHERE tenant_id = $1 AND (domain = $2 OR right($2, length(domain) + 1) = '.' || domain)
          ORDER BY length(domain) DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(domain)
    .fetch_optional(conn)
    .await
}
