//! `berth serve`: database (configured or embedded), migrations, first admin, then the HTTP API until
//! SIGINT/SIGTERM; on the way out it drains requests and stops the embedded database.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clusters::WorkerEnv;
use crate::config::ServeConfig;
use crate::crypto::{Keys, load_or_create_secret};
use crate::db::{self, Database};
use crate::state::AppState;

/// Builds the request state over an open pool: migrations applied, first admin ensured.
pub async fn prepare(pool: sqlx::PgPool, cfg: &ServeConfig) -> anyhow::Result<AppState> {
    db::migrate(&pool).await?;
    crate::bootstrap::ensure_platform_admin(&pool, cfg.admin_email.as_deref(), cfg.admin_password.as_deref()).await?;
    let secret = load_or_create_secret(cfg.security.secret.as_deref(), &cfg.db.data_dir)?;
    let keys = Keys::from_secret(&secret)?;
    Ok(AppState::new(pool, keys, cfg.security.clone(), cfg.max_body_bytes, cfg.existing.clone()))
}

pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    let database = Database::open(&cfg.db).await?;
    let result = serve(&database, &cfg).await;
    database.close().await;
    result
}

async fn serve(database: &Database, cfg: &ServeConfig) -> anyhow::Result<()> {
    let state = prepare(database.pool.clone(), cfg).await?;
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    // One stop signal for the API and the job workers beside it.
    let (stop, stopped) = watch::channel(false);
    let env = WorkerEnv::new(state.keys.clone(), cfg.db.data_dir.clone(), cfg.existing.clone());
    let workers = tokio::spawn(crate::worker::run(database.pool.clone(), env, stopped.clone()));
    tracing::info!(%addr, "Berth is serving: API at http://{addr}/api/v1, docs at http://{addr}/api/docs/");
    println!("Berth is up: http://{addr}/  (API docs: http://{addr}/api/docs/)");
    // The peer address is the client's address for throttling (see `auth::throttle`).
    let app = crate::api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let mut on_stop = stopped;
    let served = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = on_stop.wait_for(|s| *s).await;
    });
    let signal = async {
        shutdown_signal().await;
        let _ = stop.send(true);
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = served => r?,
        () = signal => {}
    }
    tracing::info!("shutting down");
    match tokio::time::timeout(crate::api::SHUTDOWN_GRACE, workers).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "workers stopped with an error"),
        Err(_) => tracing::warn!("workers did not stop in time"),
        _ => {}
    }
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
