//! Keeping the registry tidy: removing tags (one home for it, used by the API's deletes and by
//! retention), retention policies per repository, the catalog pass that keeps `image_tags` true to the
//! registry, and the maintenance loop that runs them and garbage collection at a quiet moment.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_types::{RegistryMaintenance, RetentionPolicy};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::{Registry, store};
use crate::state::AppState;

/// When the maintenance loop first looks at the registry after it starts.
const FIRST_PASS: Duration = Duration::from_secs(60);
/// How often the maintenance loop looks at the registry.
const EVERY: Duration = Duration::from_secs(15 * 60);
/// A registry is quiet when no manifest was pushed for this long: then garbage collection may stop it.
const QUIET_FOR: Duration = Duration::from_secs(10 * 60);

/// Removes tags of one repository from the registry and from `image_tags`. The registry (distribution
/// 2.8) deletes manifests, not tags, and a manifest's deletion takes every tag pointing at it; so when
/// other tags share an image, the manifest is deleted and put back under those other tags.
pub async fn remove_tags(
    reg: &Registry,
    db: &PgPool,
    tenant: Uuid,
    slug: &str,
    repository: &str,
    tags: &[String],
) -> anyhow::Result<usize> {
    let full = format!("{slug}/{repository}");
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT tag, digest, size_bytes FROM image_tags WHERE tenant_id = $1 AND repository = $2")
            .bind(tenant)
            .bind(repository)
            .fetch_all(db)
            .await?;
    let mut digests: Vec<&str> = rows.iter().filter(|(t, _, _)| tags.contains(t)).map(|(_, d, _)| d.as_str()).collect();
    digests.sort();
    digests.dedup();
    let mut removed = 0;
    for digest in digests {
        let kept: Vec<&(String, String, i64)> = rows.iter().filter(|(t, d, _)| d == digest && !tags.contains(t)).collect();
        let manifest = if kept.is_empty() { None } else { reg.client.get_manifest(&full, digest).await? };
        reg.client.delete_manifest(&full, digest).await?;
        store::forget_digest(db, tenant, repository, digest).await?;
        removed += rows.iter().filter(|(t, d, _)| d == digest && tags.contains(t)).count();
        if let Some((bytes, media_type)) = manifest {
            for (tag, _, size) in kept {
                reg.client.put_manifest(&full, tag, &media_type, bytes.clone()).await?;
                store::record_tag(db, tenant, repository, tag, digest, *size).await?;
            }
        }
    }
    reg.needs_collection.store(true, Ordering::Relaxed);
    Ok(removed)
}

/// The tags of a repository that its policy does not keep.
async fn expired(db: &PgPool, tenant: Uuid, repository: &str, p: &RetentionPolicy) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT tag FROM (
             SELECT tag, pushed_at, row_number() OVER (ORDER BY pushed_at DESC, tag DESC) AS n
               FROM image_tags WHERE tenant_id = $1 AND repository = $2) t
          WHERE NOT coalesce(n <= $3, false)
            AND NOT coalesce(pushed_at > now() - make_interval(days => $4), false)",
    )
    .bind(tenant)
    .bind(repository)
    .bind(p.keep_last)
    .bind(p.keep_days)
    .fetch_all(db)
    .await
}

/// Applies every retention policy (of one tenant, or of all); returns how many tags it removed.
pub async fn apply_policies(reg: &Registry, db: &PgPool, only: Option<Uuid>) -> anyhow::Result<i64> {
    #[derive(sqlx::FromRow)]
    struct Row {
        tenant_id: Uuid,
        slug: String,
        repository: String,
        keep_last: Option<i32>,
        keep_days: Option<i32>,
    }
    let policies: Vec<Row> = sqlx::query_as(
        "SELECT r.tenant_id, t.slug, r.repository, r.keep_last, r.keep_days
           FROM image_retention r JOIN tenants t ON t.id = r.tenant_id
          WHERE $1::uuid IS NULL OR r.tenant_id = $1
          ORDER BY r.tenant_id, r.repository",
    )
    .bind(only)
    .fetch_all(db)
    .await?;
    let mut removed = 0;
    for Row { tenant_id: tenant, slug, repository, keep_last, keep_days } in policies {
        // One policy that fails (a registry error, say) does not stop the others.
        let applied = async {
            let tags = expired(db, tenant, &repository, &RetentionPolicy { keep_last, keep_days }).await?;
            if tags.is_empty() {
                return anyhow::Ok(0);
            }
            tracing::info!(%tenant, %repository, tags = ?tags, "retention removes tags");
            Ok(remove_tags(reg, db, tenant, &slug, &repository, &tags).await? as i64)
        };
        match applied.await {
            Ok(n) => removed += n,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), %tenant, %repository, "applying a retention policy failed"),
        }
    }
    Ok(removed)
}

/// Deletes every manifest in a namespace (`<slug>/…`), from the registry's own catalog: what a deleted
/// tenant leaves must not be inherited by a later tenant with the same slug. Returns how many
/// repositories it emptied; the blobs go at the next garbage collection.
pub async fn purge_namespace(reg: &Registry, slug: &str) -> anyhow::Result<usize> {
    let prefix = format!("{slug}/");
    let mut emptied = 0;
    for full in reg.client.catalog().await?.iter().filter(|r| r.starts_with(&prefix)) {
        for tag in reg.client.tags(full).await? {
            if let Some(digest) = reg.client.tag_digest(full, &tag).await? {
                reg.client.delete_manifest(full, &digest).await?;
            }
        }
        emptied += 1;
    }
    if emptied > 0 {
        reg.needs_collection.store(true, Ordering::Relaxed);
    }
    Ok(emptied)
}

/// Makes `image_tags` agree with the registry: tags Berth missed (a notification lost while Berth was
/// down) are added, tags gone from the registry are forgotten, and namespaces of tenants that no longer
/// exist are emptied.
pub async fn sync_catalog(reg: &Registry, db: &PgPool) -> anyhow::Result<()> {
    // Rows written after the catalog was read (pushes and imports during the pass) are not judged by it.
    let started = chrono::Utc::now();
    let repositories = reg.client.catalog().await?;
    let mut seen: Vec<(Uuid, String)> = Vec::new();
    let mut orphaned: Vec<&str> = Vec::new();
    for full in &repositories {
        let Some((slug, repository)) = full.split_once('/') else { continue };
        let Some(tenant) = store::tenant_by_slug(db, slug).await? else {
            if !orphaned.contains(&slug) {
                orphaned.push(slug);
            }
            continue;
        };
        seen.push((tenant, repository.to_owned()));
        // One repository that cannot be read does not stop the pass.
        if let Err(e) = sync_repository(reg, db, tenant, full, repository, started).await {
            tracing::warn!(error = %format!("{e:#}"), repository = %full, "the catalog pass skipped a repository");
        }
    }
    for slug in orphaned {
        let n = purge_namespace(reg, slug).await?;
        if n > 0 {
            tracing::info!(%slug, repositories = n, "emptied the namespace of a tenant that no longer exists");
        }
    }
    // Repositories Berth knows that the registry no longer has.
    let known: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT DISTINCT tenant_id, repository FROM image_tags").fetch_all(db).await?;
    for (tenant, repository) in known {
        if !seen.contains(&(tenant, repository.clone())) {
            sqlx::query("DELETE FROM image_tags WHERE tenant_id = $1 AND repository = $2 AND pushed_at < $3")
                .bind(tenant)
                .bind(&repository)
                .bind(started)
                .execute(db)
                .await?;
        }
    }
    Ok(())
}

/// Makes the rows of one repository agree with the registry's tags.
async fn sync_repository(
    reg: &Registry,
    db: &PgPool,
    tenant: Uuid,
    full: &str,
    repository: &str,
    started: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let tags = reg.client.tags(full).await?;
    let known: Vec<(String, String)> =
        sqlx::query_as("SELECT tag, digest FROM image_tags WHERE tenant_id = $1 AND repository = $2")
            .bind(tenant)
            .bind(repository)
            .fetch_all(db)
            .await?;
    for tag in &tags {
        let Some(digest) = reg.client.tag_digest(full, tag).await? else { continue };
        if !known.iter().any(|(t, d)| t == tag && *d == digest) {
            let size = reg.client.image_size(full, &digest).await.unwrap_or(0);
            store::record_tag(db, tenant, repository, tag, &digest, size).await?;
        }
    }
    let gone: Vec<String> = known.iter().filter(|(t, _)| !tags.contains(t)).map(|(t, _)| t.clone()).collect();
    if !gone.is_empty() {
        sqlx::query("DELETE FROM image_tags WHERE tenant_id = $1 AND repository = $2 AND tag = ANY($3) AND pushed_at < $4")
            .bind(tenant)
            .bind(repository)
            .bind(&gone)
            .bind(started)
            .execute(db)
            .await?;
    }
    Ok(())
}

/// Retention, then garbage collection: what the maintenance loop does at a quiet moment, and what a
/// platform admin can ask for at once.
pub async fn maintain(reg: &Registry, db: &PgPool) -> anyhow::Result<RegistryMaintenance> {
    let _one = reg.maintenance.lock().await;
    let tags_removed = apply_policies(reg, db, None).await?;
    reg.needs_collection.store(false, Ordering::Relaxed);
    let collected = reg.process.collect_garbage().await?;
    Ok(RegistryMaintenance {
        tags_removed,
        bytes_before: collected.bytes_before as i64,
        bytes_after: collected.bytes_after as i64,
    })
}

/// Every [`EVERY`]: the catalog pass and retention; and garbage collection when something was deleted
/// and no push happened for [`QUIET_FOR`].
pub async fn run_loop(state: AppState, reg: Arc<Registry>, mut stopping: watch::Receiver<bool>) {
    let mut first = true;
    loop {
        let wait = if first { FIRST_PASS } else { EVERY };
        first = false;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = crate::supervise::stopped(&mut stopping) => return,
        }
        let _one = reg.maintenance.lock().await;
        if let Err(e) = sync_catalog(&reg, &state.system).await {
            tracing::warn!(error = %format!("{e:#}"), "the registry catalog pass failed");
        }
        match apply_policies(&reg, &state.system, None).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tags = n, "retention removed tags"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "the retention pass failed"),
        }
        if reg.needs_collection.load(Ordering::Relaxed) && reg.quiet_for() >= QUIET_FOR {
            reg.needs_collection.store(false, Ordering::Relaxed);
            match reg.process.collect_garbage().await {
                Ok(c) => tracing::info!(freed = c.bytes_before.saturating_sub(c.bytes_after), "registry garbage collected"),
                Err(e) => {
                    reg.needs_collection.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %format!("{e:#}"), "registry garbage collection failed");
                }
            }
        }
    }
}
