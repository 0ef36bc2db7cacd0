//! Credentials for pulling: each cluster's pull-only robot for its tenant's namespace of the built-in
//! registry, and what an engine is handed as registry auth when Berth deploys an image (the
//! `X-Registry-Auth` that `docker stack deploy --with-registry-auth` sends).

use berth_types::RegistryCredential;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::crypto::{Keys, random_token, token_hash};

/// Robot user names are `robot-<cluster id>`; their secrets start with this.
pub const ROBOT_PREFIX: &str = "robot-";
const SECRET_PREFIX: &str = "berth_robot_";

/// The cluster's robot credential, created on first use.
pub async fn robot(
    conn: &mut PgConnection,
    keys: &Keys,
    tenant: Uuid,
    cluster: Uuid,
    address: &str,
) -> anyhow::Result<RegistryCredential> {
    // A concurrent first use may win the insert; then this reads what it wrote.
    store_new_secret(conn, keys, tenant, cluster, false).await?;
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT secret_sealed FROM registry_robots WHERE cluster_id = $1 AND tenant_id = $2")
            .bind(cluster)
            .bind(tenant)
            .fetch_one(&mut *conn)
            .await?;
    Ok(credential(cluster, String::from_utf8(keys.open(&sealed)?)?, address))
}

/// Replaces the cluster's robot secret: the old one stops working at once.
pub async fn rotate(
    conn: &mut PgConnection,
    keys: &Keys,
    tenant: Uuid,
    cluster: Uuid,
    address: &str,
) -> anyhow::Result<RegistryCredential> {
    let secret = store_new_secret(conn, keys, tenant, cluster, true).await?;
    Ok(credential(cluster, secret, address))
}

/// Stores a fresh secret for the cluster's robot — replacing the current one, or only when there is
/// none — and returns it.
async fn store_new_secret(
    conn: &mut PgConnection,
    keys: &Keys,
    tenant: Uuid,
    cluster: Uuid,
    replace: bool,
) -> sqlx::Result<String> {
    let secret = format!("{SECRET_PREFIX}{}", random_token(32));
    let on_conflict =
        if replace { "DO UPDATE SET secret_hash = $3, secret_sealed = $4, rotated_at = now()" } else { "DO NOTHING" };
    sqlx::query(&format!(
        "INSERT INTO registry_robots (cluster_id, tenant_id, secret_hash, secret_sealed) VALUES ($1, $2, $3, $4)
         ON CONFLICT (cluster_id) {on_conflict}"
    ))
    .bind(cluster)
    .bind(tenant)
    .bind(token_hash(&secret))
    .bind(keys.seal(secret.as_bytes()))
    .execute(conn)
    .await?;
    Ok(secret)
}

fn credential(cluster: Uuid, password: String, address: &str) -> RegistryCredential {
    RegistryCredential { username: format!("{ROBOT_PREFIX}{cluster}"), password, address: address.to_owned() }
}

/// The tenant whose namespace a robot may pull from, if `user`/`secret` are a live robot's and its
/// tenant is active.
pub async fn check_robot(db: &PgPool, user: &str, secret: &str) -> sqlx::Result<Option<RobotCheck>> {
    let Some(cluster) = user.strip_prefix(ROBOT_PREFIX).and_then(|c| c.parse::<Uuid>().ok()) else { return Ok(None) };
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT r.tenant_id, t.status FROM registry_robots r JOIN tenants t ON t.id = r.tenant_id
          WHERE r.cluster_id = $1 AND r.secret_hash = $2",
    )
    .bind(cluster)
    .bind(token_hash(secret))
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(tenant, status)| RobotCheck { tenant, suspended: status == "suspended" }))
}

pub struct RobotCheck {
    pub tenant: Uuid,
    pub suspended: bool,
}

/// What to hand the engine as registry auth for pulling `image` onto `cluster`: the cluster's robot
/// for the built-in registry, the tenant's stored credentials for an external one, nothing otherwise.
pub async fn for_deploy(
    db: &PgPool,
    keys: &Keys,
    builtin: Option<&str>,
    tenant: Uuid,
    cluster: Uuid,
    image: &str,
) -> anyhow::Result<Option<RegistryCredential>> {
    let reference = super::pin::ImageRef::parse(image).map_err(anyhow::Error::msg)?;
    let Some(host) = reference.host.as_deref() else { return Ok(None) };
    let mut conn = db.acquire().await?;
    if Some(host) == builtin {
        return Ok(Some(robot(&mut conn, keys, tenant, cluster, host).await?));
    }
    let Some(stored) = super::external::StoredRegistry::by_address(&mut conn, tenant, host).await? else { return Ok(None) };
    Ok(stored.credentials(keys)?.map(|(username, password)| RegistryCredential { username, password, address: host.to_owned() }))
}
