//! Routing: every service reachable by name through a router Berth keeps in step with the cluster.
//! One home for the capability:
//! - `declare` — the routes a Compose file declares (default domains, `berth.routing.port_<N>` labels);
//! - `ports` — the host-mode port each routed target gets on every task; `rollout` — routed services
//!   replace their tasks `start-first` unless declared otherwise;
//! - `store` — the `routes` rows a revision writes, and reading them for the API; `api` — `/routes`;
//! - `table` — the route table as a router reads it (backends and their servers);
//! - `haproxy_config` — HAProxy's configuration rendered from the table; `haproxy` — the process,
//!   its checked reloads and its Runtime API; `router` — the loop that keeps one HAProxy in step;
//! - `traffic` — per-route requests, errors and response times from HAProxy's statistics;
//! - `applied` — how far each router has followed the table (`routers`), for work that must know a
//!   change is served before going on (an ACME challenge).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

pub mod api;
pub mod applied;
pub mod declare;
pub mod haproxy;
pub mod haproxy_config;
pub mod ports;
pub mod rollout;
pub mod router;
pub mod store;
pub mod table;
pub mod traffic;

/// Whether `berth serve` runs a router for the clusters on this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum RouterMode {
    /// Run HAProxy as a supervised child (the default).
    #[default]
    On,
    /// No router in this process (another runs `berth router`, or none is wanted).
    Off,
}

#[derive(Debug, Clone, Args)]
pub struct RoutingConfig {
    /// The domain under which every service gets `<service>.<application>.<tenant>.<domain>`.
    /// `apps.localhost` (the default) works on one machine: browsers and curl send `*.localhost` to
    /// the loopback address.
    #[arg(long, env = "BERTH_APPS_DOMAIN", default_value = "apps.localhost")]
    pub apps_domain: String,

    /// Whether `berth serve` runs the router for local clusters itself.
    #[arg(long = "router", env = "BERTH_ROUTER", value_enum, default_value_t = RouterMode::On)]
    pub router: RouterMode,

    /// Where the router takes requests for services.
    #[arg(long, env = "BERTH_ROUTER_LISTEN", default_value = "127.0.0.1:8000")]
    pub router_listen: SocketAddr,

    /// How this router names itself to operators (`GET /admin/routers`) and in the traffic it reports.
    /// Default: the machine's host name and the listen address. Give each router its own name where
    /// two could share both (machines with the same host name behind address translation).
    #[arg(long, env = "BERTH_ROUTER_NAME")]
    pub router_name: Option<String>,

    /// The HAProxy program (Debian's `haproxy`, 2.6).
    #[arg(long, env = "BERTH_HAPROXY_BIN", default_value = "haproxy")]
    pub haproxy_bin: PathBuf,

    /// Where the router serves HTTPS (certificates chosen by SNI), or `off`.
    #[arg(long, env = "BERTH_ROUTER_TLS_LISTEN", default_value = "127.0.0.1:8443")]
    pub router_tls_listen: String,

    /// The ports load balancers' listeners may take on the routers' address (`first-last`).
    #[arg(long, env = "BERTH_LB_PORTS", default_value = "20000-20999")]
    pub lb_ports: String,

    /// Where tenants' domain proofs (TXT records) are looked up: `system` (the host's resolver),
    /// `ip:port[,ip:port…]`, or `off` (only platform admins' grants).
    #[arg(long, env = "BERTH_DNS_RESOLVER", default_value = "system")]
    pub dns_resolver: String,
}

impl RoutingConfig {
    /// The load balancers' port range.
    pub fn lb_port_range(&self) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
        let bad = || anyhow::anyhow!("BERTH_LB_PORTS `{}`: give `first-last`, e.g. 20000-20999", self.lb_ports);
        let (a, b) = self.lb_ports.trim().split_once('-').ok_or_else(bad)?;
        let (a, b): (u16, u16) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        anyhow::ensure!(a >= 1 && a <= b, bad());
        Ok(a..=b)
    }

    /// The HTTPS address, `None` when turned off.
    pub fn tls_listen(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.router_tls_listen.trim() {
            "off" | "" => Ok(None),
            text => text
                .parse()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("BERTH_ROUTER_TLS_LISTEN `{text}`: give an address and port, or `off`")),
        }
    }
}

/// What request handlers need to know about routing.
#[derive(Debug, Clone)]
pub struct Routing {
    pub apps_domain: String,
    /// The router's port in route URLs; `None` for 80.
    pub url_port: Option<u16>,
    /// The router's address: where load balancers' listeners (of the local driver) answer.
    pub host: std::net::IpAddr,
    /// The ports load balancers' listeners may take.
    pub lb_ports: std::ops::RangeInclusive<u16>,
    /// Where domain proofs are looked up.
    pub dns: crate::custom_domains::proof::DnsResolver,
}

impl Routing {
    /// Fails with one clear line on a setting it cannot read.
    pub fn from_config(cfg: &RoutingConfig) -> anyhow::Result<Routing> {
        let port = cfg.router_listen.port();
        Ok(Routing {
            apps_domain: cfg.apps_domain.to_ascii_lowercase(),
            url_port: (port != 80).then_some(port),
            host: cfg.router_listen.ip(),
            lb_ports: cfg.lb_port_range()?,
            dns: crate::custom_domains::proof::DnsResolver::parse(&cfg.dns_resolver)?,
        })
    }

    /// Where a route answers.
    pub fn url(&self, domain: &str, path_prefix: &str) -> String {
        match self.url_port {
            Some(port) => format!("http://{domain}:{port}{path_prefix}"),
            None => format!("http://{domain}{path_prefix}"),
        }
    }
}

impl Default for Routing {
    fn default() -> Routing {
        Routing {
            apps_domain: "apps.localhost".into(),
            url_port: Some(8000),
            host: [127, 0, 0, 1].into(),
            lb_ports: 20000..=20999,
            dns: crate::custom_domains::proof::DnsResolver::Off,
        }
    }
}

/// Checks what a router needs before it starts (HAProxy present, the apps domain a domain, the listen
/// address free), so a mistake stops Berth with one clear line instead of a router retrying forever.
pub async fn preflight(cfg: &RoutingConfig, data_dir: &std::path::Path) -> anyhow::Result<haproxy::Setup> {
    use anyhow::Context;
    declare::check_domain(&cfg.apps_domain.to_ascii_lowercase())
        .map_err(|why| anyhow::anyhow!("BERTH_APPS_DOMAIN `{}`: {why}", cfg.apps_domain))?;
    cfg.lb_port_range()?;
    let version = tokio::process::Command::new(&cfg.haproxy_bin)
        .arg("-v")
        .output()
        .await
        .with_context(|| format!("running {} (install Debian's haproxy)", cfg.haproxy_bin.display()))?;
    anyhow::ensure!(version.status.success(), "{} -v failed", cfg.haproxy_bin.display());
    anyhow::ensure!(cfg.router_listen.port() != 0, "BERTH_ROUTER_LISTEN needs a port");
    drop(
        std::net::TcpListener::bind(cfg.router_listen)
            .with_context(|| format!("the router's address {} (BERTH_ROUTER_LISTEN) is in use", cfg.router_listen))?,
    );
    // HAProxy reads a relative socket path as a host name: the directory must be absolute.
    let tls_listen = cfg.tls_listen()?;
    if let Some(tls) = tls_listen {
        anyhow::ensure!(tls.port() != 0, "BERTH_ROUTER_TLS_LISTEN needs a port");
        drop(
            std::net::TcpListener::bind(tls)
                .with_context(|| format!("the router's HTTPS address {tls} (BERTH_ROUTER_TLS_LISTEN) is in use"))?,
        );
    }
    let dir = std::path::absolute(data_dir.join("router")).context("the router's directory")?;
    let name = cfg.router_name.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned);
    if let Some(name) = &name {
        anyhow::ensure!(
            name.len() <= 200 && !name.chars().any(char::is_control),
            "BERTH_ROUTER_NAME: at most 200 characters, none of them control characters"
        );
    }
    Ok(haproxy::Setup { bin: cfg.haproxy_bin.clone(), dir, listen: cfg.router_listen, tls_listen, name })
}

/// `berth router`: a router on its own, against the shared database, until SIGINT/SIGTERM.
pub async fn run_role(cfg: crate::config::RouterRoleConfig) -> anyhow::Result<()> {
    let database = crate::db::Database::open(&cfg.db).await?;
    let result = async {
        crate::db::wait_for_migrations(&database.pools.system).await?;
        let setup = preflight(&cfg.routing, &cfg.db.data_dir).await?;
        // The certificates' keys are sealed with the master secret: a router on another host needs
        // the same BERTH_SECRET.
        let secret = crate::crypto::load_or_create_secret(cfg.secret.as_deref(), &cfg.db.data_dir)?;
        let keys = crate::crypto::Keys::from_secret(&secret)?;
        println!("Router is up: http://{}/", setup.listen);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let scope = table::Scope::Clusters(cfg.clusters);
        let router = tokio::spawn(router::run(database.pools.system.clone(), setup, scope, keys, stopped));
        crate::serve::shutdown_signal().await;
        let _ = stop.send(true);
        let _ = router.await;
        anyhow::Ok(())
    }
    .await;
    database.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HAProxy reads `./x/admin.sock` as an address: a relative data directory (`make run`'s
    /// `./.berth`) must give the router an absolute one.
    #[tokio::test]
    async fn the_router_directory_is_absolute_even_for_a_relative_data_dir() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = RoutingConfig {
            apps_domain: "apps.localhost".into(),
            router: RouterMode::On,
            router_listen: SocketAddr::from(([127, 0, 0, 1], port)),
            router_name: None,
            haproxy_bin: "haproxy".into(),
            router_tls_listen: "off".into(),
            lb_ports: "20000-20999".into(),
            dns_resolver: "system".into(),
        };
        let setup = preflight(&cfg, std::path::Path::new("./.berth")).await.unwrap();
        assert!(setup.dir.is_absolute(), "{}", setup.dir.display());
        assert!(setup.dir.ends_with(".berth/router"), "{}", setup.dir.display());
        assert_eq!(setup.name, None, "unnamed: host name and address");
        let named = RoutingConfig { router_name: Some(" edge-1 ".into()), ..cfg.clone() };
        assert_eq!(preflight(&named, std::path::Path::new("/tmp")).await.unwrap().name.as_deref(), Some("edge-1"));
        let control = RoutingConfig { router_name: Some("edge\n1".into()), ..cfg.clone() };
        let err = preflight(&control, std::path::Path::new("/tmp")).await.unwrap_err();
        assert!(format!("{err:#}").contains("BERTH_ROUTER_NAME"), "{err:#}");
        let bad = RoutingConfig { apps_domain: "localhost".into(), ..cfg };
        let err = preflight(&bad, std::path::Path::new("/tmp")).await.unwrap_err();
        assert!(format!("{err:#}").contains("BERTH_APPS_DOMAIN `localhost`"), "{err:#}");
    }
}
