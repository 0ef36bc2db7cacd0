//! Obtaining certificates over ACME (RFC 8555, with `instant-acme`): the `certificate.issue` job and
//! the loop that renews certificates before they expire.
//!
//! The HTTP-01 challenge is answered by the routers: the job writes the token and its key
//! authorization to `acme_challenges`, whose trigger wakes every router, which adds it to HAProxy's
//! ACME map live; the authority then fetches `http://<domain>/.well-known/acme-challenge/<token>` from
//! whichever router the name points at. The account Berth uses is made once per directory and kept
//! sealed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use super::{pem, store};
use crate::clusters::WorkerEnv;
use crate::error::ApiResult;
use crate::jobs::runner::{Handler, Handlers, JobCtx};
use crate::jobs::{self, Target};
use crate::routing::applied;

/// How long the job waits for every router at work to serve a challenge before telling the authority
/// to check it anyway: routers apply it within milliseconds of the announcement, and within their
/// two-second resync if one was missed; one that is failing to apply changes does not hold issuance up
/// for longer.
const ROUTERS_PATIENCE: Duration = Duration::from_secs(10);

/// How long the job waits for the authority to validate and to issue.
const AUTHORITY_PATIENCE: Duration = Duration::from_secs(120);

/// How often the renewal loop looks for certificates to renew.
const RENEWAL_INTERVAL: Duration = Duration::from_secs(60);

pub fn add_handlers(h: &mut Handlers, env: Arc<WorkerEnv>) {
    h.add(
        "certificate.issue",
        Handler {
            run: Box::new(move |ctx: JobCtx| Box::pin(issue(ctx, env.clone()))),
            failed: Box::new(|ctx: JobCtx, error: String| Box::pin(mark_failed(ctx, error))),
        },
    );
}

/// Queues `certificate.issue` unless one is already queued or running for the certificate.
pub async fn queue_issue(tx: &mut PgConnection, tenant: Uuid, id: Uuid) -> ApiResult<Option<Uuid>> {
    let pending: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE kind = 'certificate.issue' AND target_id = $1 AND state IN ('queued', 'running'))",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if pending {
        return Ok(None);
    }
    sqlx::query("UPDATE certificates SET renew_requested = true, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let target = Target { tenant_id: Some(tenant), kind: "certificate", id };
    Ok(Some(jobs::enqueue(tx, target, "certificate.issue", json!({})).await?))
}

/// The account Berth uses with the configured directory: made on first use, then restored from its
/// sealed credentials.
async fn account(db: &PgPool, env: &WorkerEnv) -> anyhow::Result<Account> {
    let cfg = &env.acme;
    let builder = || match &cfg.acme_ca_file {
        Some(root) => Account::builder_with_root(root).with_context(|| format!("reading {}", root.display())),
        None => Account::builder().context("the system's root certificates"),
    };
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT credentials_sealed FROM acme_accounts WHERE directory_url = $1")
        .bind(&cfg.acme_directory)
        .fetch_optional(db)
        .await?;
    if let Some(sealed) = stored {
        let credentials: AccountCredentials = serde_json::from_slice(&env.keys.open(&sealed)?)?;
        return builder()?.from_credentials(credentials).await.context("restoring the ACME account");
    }
    let contact = cfg.acme_contact.as_ref().map(|c| format!("mailto:{c}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder()?
        .create(&new, cfg.acme_directory.clone(), None)
        .await
        .with_context(|| format!("creating an account at {}", cfg.acme_directory))?;
    // Two jobs may make one at once: the first stored is kept, and both accounts work.
    sqlx::query("INSERT INTO acme_accounts (directory_url, credentials_sealed) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(&cfg.acme_directory)
        .bind(env.keys.seal(&serde_json::to_vec(&credentials)?))
        .execute(db)
        .await?;
    Ok(account)
}

/// Obtains the job's certificate: an order for its domain, the HTTP-01 challenge answered by the
/// routers, a new key and CSR, the issued chain stored (the key sealed). The routers serve it as soon
/// as the row changes.
async fn issue(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let db = &ctx.db;
    let mut conn = db.acquire().await?;
    let Some(cert) = store::by_id(&mut conn, ctx.job.target_id).await? else { return Ok(()) };
    drop(conn);
    if cert.source != "acme" {
        return Ok(());
    }
    ctx.progress("reaching the ACME authority", 10).await?;
    let account = account(db, &env).await?;
    let identifiers = [Identifier::Dns(cert.domain.clone())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await.context("placing the order")?;
    ctx.progress("answering the authority's challenge", 25).await?;
    let answered = answer_challenges(&ctx, &mut order, cert.id).await;
    let validated = match answered {
        Ok(()) => {
            ctx.progress("waiting for the authority to validate", 40).await?;
            order.poll_ready(&RetryPolicy::new().timeout(AUTHORITY_PATIENCE)).await.context("waiting for validation")
        }
        Err(e) => Err(e),
    };
    // The routers stop answering once the authority has looked (or failed to).
    sqlx::query("DELETE FROM acme_challenges WHERE certificate_id = $1").bind(cert.id).execute(db).await?;
    let status = validated?;
    if status != OrderStatus::Ready {
        let why = order.state().error.as_ref().map(|p| p.to_string()).unwrap_or_else(|| format!("{status:?}"));
        bail!("the authority did not validate {}: {why}", cert.domain);
    }
    ctx.progress("obtaining the certificate", 70).await?;
    let key = order.finalize().await.context("finalizing the order")?;
    let chain =
        order.poll_certificate(&RetryPolicy::new().timeout(AUTHORITY_PATIENCE)).await.context("downloading the certificate")?;
    let leaf = pem::leaf(&chain).map_err(|why| anyhow::anyhow!("the issued certificate: {why}"))?;
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE certificates SET state = 'issued', certificate_pem = $2, key_sealed = $3, not_before = $4, not_after = $5, serial = $6,
                message = '', renewed_at = now(), renew_requested = false, updated_at = now() WHERE id = $1",
    )
    .bind(cert.id)
    .bind(chain.trim())
    .bind(env.keys.seal(key.as_bytes()))
    .bind(leaf.not_before)
    .bind(leaf.not_after)
    .bind(&leaf.serial)
    .execute(&mut *tx)
    .await?;
    let target = Target { tenant_id: Some(cert.tenant_id), kind: "certificate", id: cert.id };
    let data = json!({ "domain": cert.domain, "source": "acme", "not_after": leaf.not_after, "serial": leaf.serial });
    jobs::emit(&mut tx, &target, "certificate.issued", data).await?;
    tx.commit().await?;
    Ok(())
}

/// Writes the answer to each pending authorization's HTTP-01 challenge for the routers, waits until
/// they serve it, and tells the authority to check.
async fn answer_challenges(ctx: &JobCtx, order: &mut instant_acme::Order, certificate: Uuid) -> anyhow::Result<()> {
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.context("reading an authorization")?;
        match authorization.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => bail!("the authority's authorization is {other:?}"),
        }
        let mut challenge =
            authorization.challenge(ChallengeType::Http01).context("the authority offers no HTTP-01 challenge for this name")?;
        let answer = challenge.key_authorization().as_str().to_owned();
        sqlx::query(
            "INSERT INTO acme_challenges (token, key_authorization, certificate_id) VALUES ($1, $2, $3)
             ON CONFLICT (token) DO UPDATE SET key_authorization = excluded.key_authorization",
        )
        .bind(&challenge.token)
        .bind(&answer)
        .bind(certificate)
        .execute(&ctx.db)
        .await?;
        // The authority checks once: only once every router serves the answer is it asked to.
        let written = applied::now(&ctx.db).await?;
        let behind = applied::wait_served(&ctx.db, written, ROUTERS_PATIENCE).await?;
        if !behind.is_empty() {
            ctx.log(&format!("routers not serving the challenge after {ROUTERS_PATIENCE:?}: {}", behind.join(", "))).await?;
        }
        challenge.set_ready().await.context("telling the authority the challenge is ready")?;
    }
    Ok(())
}

/// A job that failed for good: a certificate never issued is `failed`; one already issued stays
/// served (until it expires) with why its renewal failed.
async fn mark_failed(ctx: JobCtx, error: String) -> anyhow::Result<()> {
    let mut tx = ctx.db.begin().await?;
    sqlx::query("DELETE FROM acme_challenges WHERE certificate_id = $1").bind(ctx.job.target_id).execute(&mut *tx).await?;
    sqlx::query(
        "UPDATE certificates SET state = CASE WHEN state = 'issued' THEN 'issued' ELSE 'failed' END,
                message = CASE WHEN state = 'issued' THEN 'renewal failed: ' || $2 ELSE $2 END,
                renew_requested = false, updated_at = now() WHERE id = $1",
    )
    .bind(ctx.job.target_id)
    .bind(&error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether an issued ACME certificate is due for renewal: it expires within `days` (or has expired).
pub fn due(not_after: Option<chrono::DateTime<chrono::Utc>>, now: chrono::DateTime<chrono::Utc>, days: u32) -> bool {
    not_after.is_some_and(|end| end - chrono::Duration::days(i64::from(days)) <= now)
}

/// Renews certificates before they expire, until `shutdown` turns true.
pub async fn renew_loop(db: PgPool, renew_days: u32, mut shutdown: watch::Receiver<bool>) {
    let what = "looking for certificates to renew";
    crate::supervise::every(what, RENEWAL_INTERVAL, &mut shutdown, || renew_due(&db, renew_days)).await;
}

async fn renew_due(db: &PgPool, renew_days: u32) -> anyhow::Result<()> {
    let rows: Vec<(Uuid, Uuid, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT id, tenant_id, not_after FROM certificates WHERE source = 'acme' AND state = 'issued' AND NOT renew_requested",
    )
    .fetch_all(db)
    .await?;
    let now = chrono::Utc::now();
    for (id, tenant, not_after) in rows {
        if due(not_after, now, renew_days) {
            let mut tx = db.begin().await?;
            queue_issue(&mut tx, tenant, id).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            tx.commit().await?;
            tracing::info!(certificate = %id, "renewing a certificate before it expires");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::due;

    #[test]
    fn renewal_is_due_within_the_window() {
        let now = Utc::now();
        assert!(!due(Some(now + Duration::days(60)), now, 30));
        assert!(due(Some(now + Duration::days(29)), now, 30));
        assert!(due(Some(now - Duration::days(1)), now, 30), "an expired one too");
        assert!(!due(None, now, 30), "one never issued is not renewed: it is obtained");
    }
}
