//! Checking a claim: its TXT record looked up, and then either the domain granted to the tenant or
//! what was found kept on the claim. Asked for through the API (`POST /domains/{domain}/verify`), and
//! done in the background for recent claims, so that a tenant who published its record sees the
//! domain verified without coming back for it.

use std::time::Duration;

use berth_types::DomainProof;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::proof::{self, DnsResolver};
use super::store::{self, GrantRow};
use crate::error::ApiResult;

/// What a check found.
pub enum Outcome {
    /// The record holds the claim's token: the domain is the tenant's now.
    Proved(GrantRow),
    /// The lookup worked and the record is missing or different: why.
    Unproved(String),
    /// The lookup itself failed: why.
    LookupFailed(String),
}

/// Looks up the claim's record and settles the claim: grants the domain (on the system pool: grants
/// of other tenants must be seen), or records what was found. A domain another tenant holds meanwhile
/// is the grant's 409.
pub async fn check(system: &PgPool, dns: &DnsResolver, tenant: Uuid, domain: &str, token: &str) -> ApiResult<Outcome> {
    let name = proof::record_name(domain);
    let (why, lookup_failed) = match dns.txt(&name).await {
        Err(why) => (why, true),
        Ok(records) => match proof::check(&records, &name, token) {
            Err(why) => (why, false),
            Ok(()) => {
                let mut tx = system.begin().await?;
                let row = store::grant(&mut tx, tenant, domain, DomainProof::Dns).await?;
                tx.commit().await?;
                return Ok(Outcome::Proved(row));
            }
        },
    };
    record(system, tenant, domain, &why).await?;
    Ok(if lookup_failed { Outcome::LookupFailed(why) } else { Outcome::Unproved(why) })
}

async fn record(system: &PgPool, tenant: Uuid, domain: &str, why: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE domain_claims SET checked_at = now(), last_error = $3 WHERE tenant_id = $1 AND domain = $2")
        .bind(tenant)
        .bind(domain)
        .bind(why)
        .execute(system)
        .await?;
    Ok(())
}

/// How often the background pass runs, and how long a claim waits between its checks.
const PASS: Duration = Duration::from_secs(60);

/// Checks recent claims again in the background until `stopping` turns true (see [`recheck_due`]): each claim younger
/// than three days, at most every five minutes, twenty per pass.
pub async fn recheck_loop(system: PgPool, dns: DnsResolver, mut stopping: watch::Receiver<bool>) {
    if dns == DnsResolver::Off {
        return;
    }
    crate::supervise::every("checking pending domain claims", PASS, &mut stopping, || recheck_due(&system, &dns)).await;
}

pub async fn recheck_due(system: &PgPool, dns: &DnsResolver) -> anyhow::Result<()> {
    let due: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT tenant_id, domain, token FROM domain_claims
          WHERE created_at > now() - interval '3 days' AND (checked_at IS NULL OR checked_at < now() - interval '5 minutes')
          ORDER BY checked_at NULLS FIRST LIMIT 20",
    )
    .fetch_all(system)
    .await?;
    for (tenant, domain, token) in due {
        match check(system, dns, tenant, &domain, &token).await {
            Ok(Outcome::Proved(_)) => tracing::info!(%tenant, %domain, "a custom domain was proved by its TXT record"),
            Ok(_) => {}
            // Another tenant holds it: the claim says so until its owner deletes it.
            Err(e) if e.status.is_client_error() => record(system, tenant, &domain, &e.detail).await?,
            Err(e) => return Err(anyhow::anyhow!("checking the claim of {domain}: {}", e.detail)),
        }
    }
    Ok(())
}
