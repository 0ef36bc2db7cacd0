//! The first platform admin, from `BERTH_ADMIN_EMAIL` / `BERTH_ADMIN_PASSWORD`.

use anyhow::{Context, bail};
use berth_types::Role;
use sqlx::PgPool;
use uuid::Uuid;

/// Creates the platform admin when none exists yet. Later starts leave existing users alone, so changing
/// the variables never resets a password that was changed through the API.
pub async fn ensure_platform_admin(db: &PgPool, email: Option<&str>, password: Option<&str>) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    // Serialises concurrent first starts of several Berth processes.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('berth.bootstrap'))").execute(&mut *tx).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'platform_admin')").fetch_one(&mut *tx).await?;
    if exists {
        return Ok(());
    }
    let (Some(email), Some(password)) = (email, password) else {
        tracing::warn!("no platform admin exists: set BERTH_ADMIN_EMAIL and BERTH_ADMIN_PASSWORD and restart to create one");
        return Ok(());
    };
    if crate::domain::validate::email("BERTH_ADMIN_EMAIL", email).is_err() {
        bail!("BERTH_ADMIN_EMAIL is not an e-mail address");
    }
    if crate::domain::validate::password("BERTH_ADMIN_PASSWORD", password).is_err() {
        bail!("BERTH_ADMIN_PASSWORD must be 8–256 characters");
    }
    let hash = crate::auth::password::hash(password.to_owned()).await?;
    sqlx::query("INSERT INTO users (id, tenant_id, email, password_hash, role) VALUES ($1, NULL, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(email)
        .bind(hash)
        .bind(Role::PlatformAdmin.as_str())
        .execute(&mut *tx)
        .await
        .context("creating the platform admin (is the e-mail already a tenant user's?)")?;
    tx.commit().await?;
    tracing::info!(%email, "created the platform admin");
    Ok(())
}
