//! A cluster's PKI and join tokens, created once and kept sealed in `cluster_secrets`, and the client
//! certificate files Berth connects to the cluster's engines with.

use std::net::IpAddr;

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

use super::WorkerEnv;
use crate::pki::{self, Pem};
use crate::providers::EngineTls;
use crate::swarm::{ClientCerts, Engine};

pub struct ClusterAccess {
    pub cluster_id: Uuid,
    pub ca_cert: String,
    /// The CA's key: Berth's own clusters only (an adopted cluster's CA is the user's).
    ca_key: Option<String>,
    pub client: Pem,
    pub certs: ClientCerts,
}

#[derive(sqlx::FromRow)]
struct SecretsRow {
    ca_cert_pem: String,
    ca_key_sealed: Option<Vec<u8>>,
    client_cert_pem: String,
    client_key_sealed: Vec<u8>,
}

impl ClusterAccess {
    /// Loads the TLS material a user gave for an adopted cluster, if any.
    pub async fn load(db: &PgPool, env: &WorkerEnv, cluster_id: Uuid) -> anyhow::Result<Option<Self>> {
        let row: Option<SecretsRow> = sqlx::query_as(
            "SELECT ca_cert_pem, ca_key_sealed, client_cert_pem, client_key_sealed FROM cluster_secrets WHERE cluster_id = $1",
        )
        .bind(cluster_id)
        .fetch_optional(db)
        .await?;
        row.map(|r| Self::open(env, cluster_id, r)).transpose()
    }

    fn open(env: &WorkerEnv, cluster_id: Uuid, row: SecretsRow) -> anyhow::Result<Self> {
        let ca_key = row.ca_key_sealed.map(|k| env.keys.open(&k).and_then(|k| Ok(String::from_utf8(k)?))).transpose()?;
        let client = Pem { cert: row.client_cert_pem, key: String::from_utf8(env.keys.open(&row.client_key_sealed)?)? };
        let dir = env.data_dir.join("clusters").join(cluster_id.to_string()).join("client");
        let certs = ClientCerts::write(&dir, &row.ca_cert_pem, &client.cert, &client.key)?;
        Ok(ClusterAccess { cluster_id, ca_cert: row.ca_cert_pem, ca_key, client, certs })
    }

    /// Loads the cluster's CA and client certificate, creating them on first use. Concurrent first uses
    /// agree: the first insert wins and everyone reads what it wrote.
    pub async fn ensure(db: &PgPool, env: &WorkerEnv, cluster_id: Uuid) -> anyhow::Result<Self> {
        let existing: Option<SecretsRow> = sqlx::query_as(
            "SELECT ca_cert_pem, ca_key_sealed, client_cert_pem, client_key_sealed FROM cluster_secrets WHERE cluster_id = $1",
        )
        .bind(cluster_id)
        .fetch_optional(db)
        .await?;
        let row = match existing {
            Some(r) => r,
            None => {
                let ca = pki::new_ca(cluster_id)?;
                let client = pki::client_cert(cluster_id, &ca.key)?;
                sqlx::query(
                    "INSERT INTO cluster_secrets (cluster_id, ca_cert_pem, ca_key_sealed, client_cert_pem, client_key_sealed)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (cluster_id) DO NOTHING",
                )
                .bind(cluster_id)
                .bind(&ca.cert)
                .bind(env.keys.seal(ca.key.as_bytes()))
                .bind(&client.cert)
                .bind(env.keys.seal(client.key.as_bytes()))
                .execute(db)
                .await?;
                sqlx::query_as(
                    "SELECT ca_cert_pem, ca_key_sealed, client_cert_pem, client_key_sealed FROM cluster_secrets WHERE cluster_id = $1",
                )
                .bind(cluster_id)
                .fetch_one(db)
                .await?
            }
        };
        Self::open(env, cluster_id, row)
    }

    /// TLS material for the engine of a node called `name` at `address`.
    pub fn engine_tls(&self, name: &str, address: IpAddr) -> anyhow::Result<EngineTls> {
        let ca_key = self.ca_key.as_deref().context("this cluster's CA is not Berth's; it cannot issue engine certificates")?;
        Ok(EngineTls { ca_cert: self.ca_cert.clone(), server: pki::server_cert(self.cluster_id, ca_key, name, &[address])? })
    }

    pub async fn engine(&self, address: IpAddr) -> anyhow::Result<Engine> {
        Engine::connect(&self.certs, address).await
    }

    /// Stores the swarm's join tokens, sealed.
    pub async fn store_tokens(&self, db: &PgPool, env: &WorkerEnv, manager: &str, worker: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE cluster_secrets SET manager_token_sealed = $2, worker_token_sealed = $3 WHERE cluster_id = $1")
            .bind(self.cluster_id)
            .bind(env.keys.seal(manager.as_bytes()))
            .bind(env.keys.seal(worker.as_bytes()))
            .execute(db)
            .await
            .context("storing join tokens")?;
        Ok(())
    }
}

/// Connects to a manager of the cluster: one of its managers' engines for a cluster Berth provisioned
/// (leader first), the registered endpoint for an adopted one.
pub async fn connect_manager(db: &PgPool, env: &WorkerEnv, cluster: Uuid) -> anyhow::Result<Engine> {
    let (provider, endpoint): (String, Option<String>) =
        sqlx::query_as("SELECT provider, settings->>'endpoint' FROM clusters WHERE id = $1").bind(cluster).fetch_one(db).await?;
    if provider == "existing" {
        let endpoint = endpoint.context("an existing cluster without an endpoint")?;
        // The operator's rules may have narrowed since the cluster was registered: check them again here,
        // right before connecting.
        env.existing.check(&endpoint).map_err(|rule| anyhow::anyhow!("refusing to connect to {endpoint}: {rule}"))?;
        return match ClusterAccess::load(db, env, cluster).await? {
            Some(access) => Engine::connect_tls(&access.certs, &endpoint).await,
            None => Engine::connect_unix(&endpoint).await,
        };
    }
    let access = ClusterAccess::ensure(db, env, cluster).await?;
    let managers: Vec<String> = sqlx::query_scalar(
        "SELECT address FROM nodes WHERE cluster_id = $1 AND role = 'manager' AND address IS NOT NULL AND state <> 'removing'
          ORDER BY leader DESC, name",
    )
    .bind(cluster)
    .fetch_all(db)
    .await?;
    let mut last_error = anyhow::anyhow!("the cluster has no manager with an address");
    for address in managers {
        let Ok(addr) = address.parse::<IpAddr>() else { continue };
        match tokio::time::timeout(std::time::Duration::from_secs(3), access.engine(addr)).await {
            Ok(Ok(engine)) => return Ok(engine),
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = anyhow::anyhow!("manager {addr} did not answer"),
        }
    }
    Err(last_error)
}
