//! The `image_tags` rows: what Berth knows of each tenant's images in the built-in registry, and the
//! storage they use. The one place these rows are read and written.

use berth_types::{ImageRepository, ImageTag, RetentionPolicy};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub async fn slug_of<'e>(db: impl sqlx::PgExecutor<'e>, tenant: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT slug FROM tenants WHERE id = $1").bind(tenant).fetch_optional(db).await
}

pub async fn tenant_by_slug(db: &PgPool, slug: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar("SELECT id FROM tenants WHERE slug = $1").bind(slug).fetch_optional(db).await
}

/// Bytes a tenant stores: each distinct image once, however many tags point at it. (Layers shared by
/// two different images count twice: an upper bound, never an undercount.)
pub async fn storage_used(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(size_bytes), 0)::int8
           FROM (SELECT DISTINCT ON (repository, digest) size_bytes FROM image_tags WHERE tenant_id = $1) d",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await
}

/// `Some((used bytes, limit MiB))` when storing `adding` more bytes would go past the tenant's image
/// storage quota (or it is already full).
pub async fn storage_over_quota(conn: &mut PgConnection, tenant: Uuid, adding: i64) -> sqlx::Result<Option<(i64, i64)>> {
    let limit: Option<i64> = sqlx::query_scalar("SELECT max_image_storage_mb FROM quotas WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?
        .flatten();
    let Some(limit) = limit else { return Ok(None) };
    let used = storage_used(conn, tenant).await?;
    let limit_bytes = limit.saturating_mul(1024 * 1024);
    Ok((used >= limit_bytes || used + adding > limit_bytes).then_some((used, limit)))
}

/// Records that `repository:tag` now points at `digest`, and tells the tenant's event stream when
/// that is news.
pub async fn record_tag(db: &PgPool, tenant: Uuid, repository: &str, tag: &str, digest: &str, size: i64) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    if !lock_tenant(&mut tx, tenant).await? {
        return Ok(());
    }
    let previous: Option<String> =
        sqlx::query_scalar("SELECT digest FROM image_tags WHERE tenant_id = $1 AND repository = $2 AND tag = $3 FOR UPDATE")
            .bind(tenant)
            .bind(repository)
            .bind(tag)
            .fetch_optional(&mut *tx)
            .await?;
    if previous.as_deref() == Some(digest) {
        return tx.commit().await;
    }
    sqlx::query(
        "INSERT INTO image_tags (tenant_id, repository, tag, digest, size_bytes) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, repository, tag) DO UPDATE SET digest = $4, size_bytes = $5, pushed_at = now()",
    )
    .bind(tenant)
    .bind(repository)
    .bind(tag)
    .bind(digest)
    .bind(size)
    .execute(&mut *tx)
    .await?;
    emit(&mut tx, tenant, "image.pushed", json!({"repository": repository, "tag": tag, "digest": digest, "size_bytes": size}))
        .await?;
    tx.commit().await
}

/// Forgets the tags of `repository` that point at `digest` (the manifest was deleted).
pub async fn forget_digest(db: &PgPool, tenant: Uuid, repository: &str, digest: &str) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    if !lock_tenant(&mut tx, tenant).await? {
        return Ok(());
    }
    let tags: Vec<String> =
        sqlx::query_scalar("DELETE FROM image_tags WHERE tenant_id = $1 AND repository = $2 AND digest = $3 RETURNING tag")
            .bind(tenant)
            .bind(repository)
            .bind(digest)
            .fetch_all(&mut *tx)
            .await?;
    if !tags.is_empty() {
        emit(&mut tx, tenant, "image.deleted", json!({"repository": repository, "tags": tags, "digest": digest})).await?;
    }
    tx.commit().await
}

/// Takes the tenant row's key-share lock first, as deleting the tenant takes its row lock before its
/// cascade reaches `image_tags` and `events`: the same order on both sides, so a notification arriving
/// while its tenant is deleted waits instead of deadlocking. `false`: the tenant is gone.
async fn lock_tenant(tx: &mut PgConnection, tenant: Uuid) -> sqlx::Result<bool> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1 FOR KEY SHARE").bind(tenant).fetch_optional(tx).await?;
    Ok(found.is_some())
}

async fn emit(tx: &mut PgConnection, tenant: Uuid, kind: &str, data: serde_json::Value) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO events (tenant_id, kind, target_type, target_id, data) VALUES ($1, $2, 'image', NULL, $3)")
        .bind(tenant)
        .bind(kind)
        .bind(data)
        .execute(tx)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct TagRow {
    repository: String,
    tag: String,
    digest: String,
    size_bytes: i64,
    pushed_at: DateTime<Utc>,
    keep_last: Option<i32>,
    keep_days: Option<i32>,
}

/// Up to `limit` repositories after `after` (by name), each with its tags (newest push first) and its
/// retention policy.
/// `prefix` is the repositories' full name before their own (`<address>/<slug>/`).
pub async fn repositories(
    conn: &mut PgConnection,
    tenant: Uuid,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<ImageRepository>> {
    let rows: Vec<TagRow> = sqlx::query_as(
        "WITH names AS (
             SELECT DISTINCT repository FROM image_tags
              WHERE tenant_id = $1 AND ($2::text IS NULL OR repository > $2)
              ORDER BY repository LIMIT $3)
         SELECT t.repository, t.tag, t.digest, t.size_bytes, t.pushed_at, r.keep_last, r.keep_days
           FROM image_tags t JOIN names n USING (repository)
           LEFT JOIN image_retention r ON r.tenant_id = t.tenant_id AND r.repository = t.repository
          WHERE t.tenant_id = $1
          ORDER BY t.repository, t.pushed_at DESC, t.tag",
    )
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let mut out: Vec<ImageRepository> = Vec::new();
    for r in rows {
        if out.last().is_none_or(|last| last.name != r.repository) {
            out.push(ImageRepository {
                reference: format!("{prefix}{}", r.repository),
                name: r.repository.clone(),
                size_bytes: 0,
                pushed_at: r.pushed_at,
                tags: Vec::new(),
                retention: (r.keep_last.is_some() || r.keep_days.is_some())
                    .then_some(RetentionPolicy { keep_last: r.keep_last, keep_days: r.keep_days }),
            });
        }
        let repo = out.last_mut().expect("just pushed");
        if !repo.tags.iter().any(|t| t.digest == r.digest) {
            repo.size_bytes += r.size_bytes;
        }
        repo.pushed_at = repo.pushed_at.max(r.pushed_at);
        repo.tags.push(ImageTag { tag: r.tag, digest: r.digest, size_bytes: r.size_bytes, pushed_at: r.pushed_at });
    }
    Ok(out)
}

/// The digests of a repository's tags (all tags when `tag` is `None`).
pub async fn digests(conn: &mut PgConnection, tenant: Uuid, repository: &str, tag: Option<&str>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT digest FROM image_tags WHERE tenant_id = $1 AND repository = $2 AND ($3::text IS NULL OR tag = $3)",
    )
    .bind(tenant)
    .bind(repository)
    .bind(tag)
    .fetch_all(conn)
    .await
}
