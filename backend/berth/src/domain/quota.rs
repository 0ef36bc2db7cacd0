//! Quota enforcement. Every write that adds to a tenant's usage first locks the tenant's quota row
//! (`SELECT ... FOR UPDATE`), so two concurrent creates cannot both squeeze under the same limit.

use berth_types::{QuotaImpact, Quotas, Usage};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;

/// How much a write adds to (or, negative, takes from) each counted resource.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delta {
    pub clusters: i64,
    pub nodes: i64,
    pub applications: i64,
    pub services: i64,
    pub cpus: f64,
    pub memory_mb: i64,
}

#[derive(sqlx::FromRow)]
struct QuotaRow {
    max_clusters: Option<i32>,
    max_nodes: Option<i32>,
    max_applications: Option<i32>,
    max_services: Option<i32>,
    max_cpus: Option<f64>,
    max_memory_mb: Option<i64>,
    max_image_storage_mb: Option<i64>,
}

impl From<QuotaRow> for Quotas {
    fn from(r: QuotaRow) -> Self {
        Quotas {
            max_clusters: r.max_clusters,
            max_nodes: r.max_nodes,
            max_applications: r.max_applications,
            max_services: r.max_services,
            max_cpus: r.max_cpus,
            max_memory_mb: r.max_memory_mb,
            max_image_storage_mb: r.max_image_storage_mb,
        }
    }
}

const SELECT_QUOTAS: &str = "SELECT max_clusters, max_nodes, max_applications, max_services, max_cpus, max_memory_mb, max_image_storage_mb FROM quotas WHERE tenant_id = $1";

pub async fn get(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<Quotas> {
    let row: Option<QuotaRow> = sqlx::query_as(SELECT_QUOTAS).bind(tenant).fetch_optional(conn).await?;
    Ok(row.map(Into::into).unwrap_or_default())
}

pub async fn usage(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<Usage> {
    let (clusters, nodes, applications, services, cpus, memory_mb): (i64, i64, i64, i64, f64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM clusters WHERE tenant_id = $1),
                (SELECT count(*) FROM nodes WHERE tenant_id = $1 AND state <> 'removing'),
                (SELECT count(*) FROM applications WHERE tenant_id = $1),
                (SELECT count(*) FROM services WHERE tenant_id = $1),
                (SELECT coalesce(sum(cpu_reservation * replicas), 0)::float8 FROM services WHERE tenant_id = $1),
                (SELECT coalesce(sum(memory_reservation_mb * replicas), 0)::int8 FROM services WHERE tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(&mut *conn)
    .await?;
    let image_storage_bytes = crate::registry::store::storage_used(conn, tenant).await?;
    Ok(Usage { clusters, nodes, applications, services, cpus, memory_mb, image_storage_bytes })
}

/// Locks the tenant's quotas for the rest of the transaction and checks that `delta` fits. Only the
/// resources that grow are checked: shrinking is always allowed, even for a tenant already over a
/// quota lowered after the fact.
pub async fn reserve(tx: &mut PgConnection, tenant: Uuid, delta: Delta) -> Result<(), ApiError> {
    let row: Option<QuotaRow> =
        sqlx::query_as(&format!("{SELECT_QUOTAS} FOR UPDATE")).bind(tenant).fetch_optional(&mut *tx).await?;
    let quotas: Quotas = row.map(Into::into).unwrap_or_default();
    let used = usage(tx, tenant).await?;
    check(&quotas, &used, &delta)
}

/// The pure rule behind [`reserve`]: the first quota [`impact`] finds over, as a 422 naming it.
pub fn check(q: &Quotas, used: &Usage, d: &Delta) -> Result<(), ApiError> {
    match impact(q, used, d).into_iter().find(|line| line.over) {
        Some(QuotaImpact { quota, in_use, adds, limit: Some(max), .. }) => {
            let unit = match quota.as_str() {
                "max_cpus" => " CPUs",
                "max_memory_mb" => " MiB",
                _ => "",
            };
            let message = format!("quota {quota} is {max}{unit}: {in_use}{unit} in use, this would add {adds}{unit}");
            Err(ApiError::quota_exceeded(&quota, message))
        }
        _ => Ok(()),
    }
}

/// Each counted resource before and after `d`. A line is over when the resource grows past its limit:
/// shrinking is always allowed, even for a tenant already over a quota lowered after the fact.
pub fn impact(q: &Quotas, used: &Usage, d: &Delta) -> Vec<QuotaImpact> {
    let line = |quota: &str, limit: Option<f64>, in_use: f64, adds: f64| QuotaImpact {
        quota: quota.to_owned(),
        in_use,
        adds,
        limit,
        over: matches!(limit, Some(max) if adds > 0.0 && in_use + adds > max + 1e-9),
    };
    vec![
        line("max_clusters", q.max_clusters.map(f64::from), used.clusters as f64, d.clusters as f64),
        line("max_nodes", q.max_nodes.map(f64::from), used.nodes as f64, d.nodes as f64),
        line("max_applications", q.max_applications.map(f64::from), used.applications as f64, d.applications as f64),
        line("max_services", q.max_services.map(f64::from), used.services as f64, d.services as f64),
        line("max_cpus", q.max_cpus, used.cpus, d.cpus),
        line("max_memory_mb", q.max_memory_mb.map(|m| m as f64), used.memory_mb as f64, d.memory_mb as f64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used() -> Usage {
        Usage { clusters: 1, nodes: 3, applications: 0, services: 0, cpus: 1.5, memory_mb: 512, image_storage_bytes: 0 }
    }

    #[test]
    fn zero_forbids_and_none_is_unlimited() {
        let q = Quotas { max_applications: Some(0), ..Default::default() };
        let e = check(&q, &used(), &Delta { applications: 1, ..Default::default() }).unwrap_err();
        assert!(e.kind.ends_with("quota-exceeded"));
        assert_eq!(e.errors[0].field, "max_applications");
        assert!(check(&Quotas::default(), &used(), &Delta { clusters: 100, ..Default::default() }).is_ok());
    }

    #[test]
    fn limits_are_inclusive_and_shrinking_is_allowed() {
        let q = Quotas { max_nodes: Some(5), max_cpus: Some(2.0), ..Default::default() };
        assert!(check(&q, &used(), &Delta { nodes: 2, ..Default::default() }).is_ok());
        assert!(check(&q, &used(), &Delta { nodes: 3, ..Default::default() }).is_err());
        assert!(check(&q, &used(), &Delta { cpus: 0.5, ..Default::default() }).is_ok());
        assert!(check(&q, &used(), &Delta { cpus: 0.75, ..Default::default() }).is_err());
        let tight = Quotas { max_nodes: Some(1), ..Default::default() };
        assert!(check(&tight, &used(), &Delta { nodes: -1, ..Default::default() }).is_ok());
    }

    #[test]
    fn the_refusal_names_the_quota_in_its_unit() {
        let q = Quotas { max_memory_mb: Some(600), ..Default::default() };
        let e = check(&q, &used(), &Delta { memory_mb: 100, ..Default::default() }).unwrap_err();
        assert_eq!(e.errors[0].field, "max_memory_mb");
        assert_eq!(e.detail, "quota max_memory_mb is 600 MiB: 512 MiB in use, this would add 100 MiB");
        let lines = impact(&q, &used(), &Delta { memory_mb: 100, applications: 1, ..Default::default() });
        let over: Vec<&str> = lines.iter().filter(|l| l.over).map(|l| l.quota.as_str()).collect();
        assert_eq!(over, ["max_memory_mb"]);
        let apps = lines.iter().find(|l| l.quota == "max_applications").unwrap();
        assert_eq!((apps.in_use, apps.adds, apps.limit, apps.over), (0.0, 1.0, None, false));
    }
}
