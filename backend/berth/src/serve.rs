//! `berth serve`: database (configured or embedded), migrations, first admin, the built-in registry,
//! then the HTTP API and the job workers until SIGINT/SIGTERM; on the way out it drains requests, then
//! stops the registry and the embedded database.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clusters::WorkerEnv;
use crate::config::{RegistryMode, ServeConfig};
use crate::crypto::{Keys, load_or_create_secret};
use crate::db::{self, Database, Pools};
use crate::registry::RegistryTrust;
use crate::routing::RouterMode;
use crate::routing::table::Scope;
use crate::state::AppState;

/// Builds the request state over an open pool: migrations applied, first admin ensured.
pub async fn prepare(pools: Pools, cfg: &ServeConfig) -> anyhow::Result<AppState> {
    db::migrate(&pools.system).await?;
    crate::bootstrap::ensure_platform_admin(&pools.system, cfg.admin_email.as_deref(), cfg.admin_password.as_deref()).await?;
    let secret = load_or_create_secret(cfg.security.secret.as_deref(), &cfg.db.data_dir)?;
    let keys = Keys::from_secret(&secret)?;
    Ok(AppState::new(
        pools,
        keys,
        cfg.security.clone(),
        cfg.max_body_bytes,
        cfg.existing.clone(),
        cfg.external.clone(),
        cfg.event_delivery,
        crate::routing::Routing::from_config(&cfg.routing)?,
    ))
}

pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    let database = Database::open(&cfg.db).await?;
    let result = serve(&database, &cfg).await;
    database.close().await;
    result
}

async fn serve(database: &Database, cfg: &ServeConfig) -> anyhow::Result<()> {
    let state = prepare(database.pools.clone(), cfg).await?;
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    let registry = match cfg.registry.mode {
        RegistryMode::Builtin => Some(
            crate::registry::start(&state, &cfg.registry, &cfg.db.data_dir)
                .await
                .context("starting the built-in registry (BERTH_REGISTRY=off runs Berth without it)")?,
        ),
        RegistryMode::Off => None,
    };
    let result = serve_with(state, listener, addr, database, cfg, registry.is_some()).await;
    if let Some(r) = registry {
        r.stop().await;
    }
    result
}

async fn serve_with(
    state: AppState,
    listener: TcpListener,
    addr: SocketAddr,
    database: &Database,
    cfg: &ServeConfig,
    with_registry: bool,
) -> anyhow::Result<()> {
    // One stop signal for the API and the job workers beside it.
    let (stop, stopped) = watch::channel(false);
    let trust = match with_registry {
        true => Some(RegistryTrust::load(&database.pools.system, &state.keys, &cfg.registry).await?),
        false => None,
    };
    let env = WorkerEnv::new(state.keys.clone(), cfg.db.data_dir.clone(), cfg.existing.clone(), trust, cfg.acme.clone());
    state.set_clusters(env.clone());
    let workers =
        tokio::spawn(crate::worker::run(database.pools.system.clone(), env, state.routing.dns.clone(), stopped.clone()));
    let router = match cfg.routing.router {
        RouterMode::On => {
            let setup = crate::routing::preflight(&cfg.routing, &cfg.db.data_dir)
                .await
                .context("starting the router (BERTH_ROUTER=off runs Berth without it)")?;
            println!(
                "Router: http://{}/  (services answer at http://<service>.<application>.<tenant>.{}:{})",
                setup.listen,
                cfg.routing.apps_domain,
                setup.listen.port()
            );
            if let Some(tls) = setup.tls_listen {
                println!("Router (HTTPS): https://{tls}/");
            }
            let db = database.pools.system.clone();
            let keys = state.keys.clone();
            Some(tokio::spawn(crate::routing::router::run(db, setup, Scope::Local, keys, stopped.clone())))
        }
        RouterMode::Off => None,
    };
    tracing::info!(%addr, "Berth is serving: API at http://{addr}/api/v1, docs at http://{addr}/api/docs/");
    println!("Berth is up: http://{addr}/  (API docs: http://{addr}/api/docs/)");
    if let Some(reg) = state.registry() {
        println!("Registry: {}  (docker login {} with your Berth e-mail and password)", reg.address, reg.address);
    }
    // The peer address is the client's address for throttling (see `auth::throttle`).
    let console = crate::console::Console::open(&cfg.console_dir);
    if console.is_none() {
        tracing::warn!(dir = %cfg.console_dir.display(), "no console built there (scripts/build-console.sh); serving the API only");
    }
    let app = crate::api::router(state.clone(), console).into_make_service_with_connect_info::<SocketAddr>();
    let mut on_stop = stopped;
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = on_stop.wait_for(|s| *s).await;
            })
            .await
    });
    tokio::select! {
        served = &mut server => {
            // The server ended on its own: that is a failure. Stop the workers before reporting it.
            let _ = stop.send(true);
            let _ = tokio::time::timeout(crate::api::SHUTDOWN_GRACE, workers).await;
            return served?.map_err(Into::into);
        }
        () = shutdown_signal() => {}
    }
    // Stop accepting, end event streams (with a retry hint), let requests in flight finish, and hand
    // running jobs and reconcilers over to other processes; then `run` stops the embedded database.
    tracing::info!("shutting down: finishing requests in flight and handing work over");
    state.begin_shutdown();
    let _ = stop.send(true);
    match tokio::time::timeout(crate::api::SHUTDOWN_GRACE, &mut server).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "the server stopped with an error"),
        Err(_) => {
            tracing::warn!("requests still in flight after {:?}; closing them", crate::api::SHUTDOWN_GRACE);
            server.abort();
        }
        _ => {}
    }
    match tokio::time::timeout(crate::api::SHUTDOWN_GRACE, workers).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "workers stopped with an error"),
        Err(_) => tracing::warn!("workers did not stop in time"),
        _ => {}
    }
    if let Some(router) = router
        && tokio::time::timeout(crate::api::SHUTDOWN_GRACE, router).await.is_err()
    {
        tracing::warn!("the router did not stop in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
