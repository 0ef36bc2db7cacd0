//! The release jobs: starting the copies, promoting (the application's services updated in place,
//! then the copies removed) and aborting (the copies removed). Each looks at what the engine has and
//! does only what is missing, so a job killed anywhere and run again converges.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use berth_types::ReleaseState;
use bollard::models::{ServiceUpdateStatusStateEnum, TaskState};
use bollard::query_parameters::ListTasksOptions;
use serde_json::{Value, json};
use uuid::Uuid;

use super::copies::{self, RELEASE_LABEL};
use super::store::{self, ReleaseRow};
use crate::applications::compose::convert::Stack;
use crate::applications::deploy::{self, Applied};
use crate::applications::store::{self as apps, AppRow};
use crate::clusters::WorkerEnv;
use crate::clusters::access::connect_manager;
use crate::jobs::runner::{Handler, Handlers, JobCtx};
use crate::swarm::Engine;

/// How long one side of a release keeps its in-flight requests after its weight went to zero, before
/// the engine stops or replaces its tasks: routers apply a weight within milliseconds of its change
/// (and re-read the table every 2 s), and requests already sent finish.
const DRAIN: Duration = Duration::from_secs(3);

/// How long a promotion waits for the application's services to run the new revision.
const CONVERGE: Duration = Duration::from_secs(300);

pub fn add_handlers(h: &mut Handlers, env: Arc<WorkerEnv>) {
    let handler = |env: Arc<WorkerEnv>, run: fn(JobCtx, Arc<WorkerEnv>) -> crate::jobs::runner::BoxFuture| Handler {
        run: Box::new(move |ctx: JobCtx| run(ctx, env.clone())),
        failed: Box::new(|ctx: JobCtx, error: String| Box::pin(mark_failed(ctx, error))),
    };
    h.add("release.start", handler(env.clone(), |ctx, env| Box::pin(start(ctx, env))));
    h.add("release.promote", handler(env.clone(), |ctx, env| Box::pin(promote(ctx, env))));
    h.add("release.abort", handler(env, |ctx, env| Box::pin(abort(ctx, env))));
}

/// A release job that failed for good leaves the release `failed`, with the reason; abort removes
/// whatever copies were made.
async fn mark_failed(ctx: JobCtx, error: String) -> anyhow::Result<()> {
    let Some(release) = release_of(&ctx).await? else { return Ok(()) };
    let mut tx = ctx.db.begin().await?;
    store::set_state(&mut tx, release.id, ReleaseState::Failed, &error).await?;
    super::api::emit(&mut tx, &release, "release.failed", json!({ "message": error, "step": ctx.job.kind })).await?;
    tx.commit().await?;
    Ok(())
}

async fn release_of(ctx: &JobCtx) -> anyhow::Result<Option<ReleaseRow>> {
    let id: Uuid =
        ctx.job.payload.get("release").and_then(Value::as_str).and_then(|s| s.parse().ok()).context("no release in the job")?;
    let mut conn = ctx.db.acquire().await?;
    Ok(store::by_id(&mut conn, id).await?)
}

/// The release, its application and the released revision, when the release is in `state`.
async fn load(ctx: &JobCtx, state: ReleaseState) -> anyhow::Result<Option<(ReleaseRow, AppRow, apps::RevisionRow)>> {
    let Some(release) = release_of(ctx).await? else { return Ok(None) };
    if release.state != state {
        ctx.log(&format!("the release is {}, not {}; nothing to do", release.state.as_str(), state.as_str())).await?;
        return Ok(None);
    }
    let mut conn = ctx.db.acquire().await?;
    let Some(app) = apps::app_by_id(&mut conn, release.application_id).await? else { return Ok(None) };
    let rev = apps::revision(&mut conn, app.id, release.to_revision).await?.context("the released revision is missing")?;
    Ok(Some((release, app, rev)))
}

/// Creates (or brings up to date) the copies of the services the released revision changes.
async fn start(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let Some((release, app, rev)) = load(&ctx, ReleaseState::Starting).await? else { return Ok(()) };
    let db = &ctx.db;
    let loaded = deploy::load_revision(db, &env, &app, &rev).await?;
    let stack = Stack { name: &app.name, project: &loaded.project };
    let copy_stack = copies::stack_name(&app.name, release.to_revision);
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM services WHERE release_id = $1 ORDER BY name")
        .bind(release.id)
        .fetch_all(db)
        .await?;
    ctx.progress("connecting to a manager", 5).await?;
    let engine = connect_manager(db, &env, app.cluster_id).await?;
    ctx.progress("networks", 15).await?;
    deploy::ensure_networks(&ctx, &engine, &stack).await?;
    ctx.progress("secrets and configs", 25).await?;
    let ids = deploy::ensure_objects(&ctx, &engine, &stack).await?;
    let existing = deploy::services_labelled(&engine, RELEASE_LABEL, &release.id.to_string()).await?;
    let mut images = rev.images.0.clone();
    for (i, key) in names.iter().enumerate() {
        if !loaded.project.services.contains_key(key) {
            bail!("the released revision has no service {key}");
        }
        let target = Applied::Copy { release: release.id, stack: &copy_stack, existing: &existing };
        let pinned = deploy::apply_service(&ctx, &env, &app, &engine, &stack, &ids, target, key, rev.images.0.get(key)).await?;
        images.insert(key.clone(), pinned);
        ctx.progress(&format!("copy of {key} started"), 30 + (60 * (i + 1) / names.len().max(1)) as i32).await?;
    }
    // The promotion deploys exactly what the copies ran.
    deploy::record_pins(db, app.id, rev.revision, &images).await?;
    let mut tx = db.begin().await?;
    let moved = sqlx::query(
        "UPDATE releases SET state = 'running', message = '', updated_at = now() WHERE id = $1 AND state = 'starting'",
    )
    .bind(release.id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved > 0 {
        super::api::emit(&mut tx, &release, "release.running", json!({ "weight": release.weight })).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Updates the application's services to the released revision (all requests go to the copies
/// meanwhile), waits until they run it, returns the requests to them, and removes the copies.
async fn promote(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let Some((release, app, rev)) = load(&ctx, ReleaseState::Promoting).await? else { return Ok(()) };
    let db = &ctx.db;
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM services WHERE release_id = $1 ORDER BY name")
        .bind(release.id)
        .fetch_all(db)
        .await?;
    // Every new request goes to the copies since the API set their weight to 100: the application's
    // own tasks finish what they serve before the engine replaces them, so none is cut off.
    ctx.progress("letting the application's own tasks finish their requests", 50).await?;
    tokio::time::sleep(DRAIN).await;
    deploy::apply_revision(&ctx, &env, &app, &rev).await?;
    sqlx::query("UPDATE applications SET deployed_revision = $2, message = '', updated_at = now() WHERE id = $1 AND current_revision = $2")
        .bind(app.id)
        .bind(rev.revision)
        .execute(db)
        .await?;
    let engine = connect_manager(db, &env, app.cluster_id).await?;
    ctx.progress("waiting for the application's services to run the new revision", 70).await?;
    let deadline = tokio::time::Instant::now() + CONVERGE;
    for key in &names {
        let name = apps::engine_name(&app.name, None, key);
        while !converged(&engine, &name).await? {
            if tokio::time::Instant::now() > deadline {
                bail!("service {name} did not run the new revision within {} s", CONVERGE.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    ctx.progress("returning requests to the application's services", 85).await?;
    let mut tx = db.begin().await?;
    store::set_weight(&mut tx, release.id, 0).await?;
    tx.commit().await?;
    finish(&ctx, &engine, &release, ReleaseState::Promoted).await
}

/// Removes the copies (their weight is already zero).
async fn abort(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let Some((release, app, _)) = load(&ctx, ReleaseState::Aborting).await? else { return Ok(()) };
    let engine = connect_manager(&ctx.db, &env, app.cluster_id).await?;
    finish(&ctx, &engine, &release, ReleaseState::Aborted).await
}

/// Lets the copies' in-flight requests finish, removes them from the engine and their rows, and
/// finishes the release.
async fn finish(ctx: &JobCtx, engine: &Engine, release: &ReleaseRow, state: ReleaseState) -> anyhow::Result<()> {
    ctx.progress("letting the copies finish their requests", 90).await?;
    tokio::time::sleep(DRAIN).await;
    ctx.progress("removing the copies", 95).await?;
    copies::remove(ctx, engine, RELEASE_LABEL, &release.id.to_string()).await?;
    let mut tx = ctx.db.begin().await?;
    sqlx::query("DELETE FROM services WHERE release_id = $1").bind(release.id).execute(&mut *tx).await?;
    // Health samples serve only the automatic abort of an open release.
    sqlx::query("DELETE FROM release_health WHERE release_id = $1").bind(release.id).execute(&mut *tx).await?;
    let message = sqlx::query_scalar::<_, String>("SELECT message FROM releases WHERE id = $1")
        .bind(release.id)
        .fetch_one(&mut *tx)
        .await?;
    store::set_state(&mut tx, release.id, state, &message).await?;
    super::api::emit(&mut tx, release, &format!("release.{}", state.as_str()), json!({ "to_revision": release.to_revision }))
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether every task the engine wants running for the service runs its current spec, and there are
/// as many as it wants.
async fn converged(engine: &Engine, name: &str) -> anyhow::Result<bool> {
    let service = engine.docker.inspect_service(name, None).await.with_context(|| format!("inspecting service {name}"))?;
    let updating =
        service.update_status.as_ref().and_then(|u| u.state).is_some_and(|s| {
            matches!(s, ServiceUpdateStatusStateEnum::UPDATING | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED)
        });
    if updating {
        return Ok(false);
    }
    let spec = service.spec.unwrap_or_default();
    let image = spec.task_template.as_ref().and_then(|t| t.container_spec.as_ref()).and_then(|c| c.image.clone());
    let wanted = spec.mode.as_ref().and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas);
    let filters =
        HashMap::from([("service".to_owned(), vec![name.to_owned()]), ("desired-state".to_owned(), vec!["running".to_owned()])]);
    let tasks = engine.docker.list_tasks(Some(ListTasksOptions { filters: Some(filters) })).await?;
    let current = tasks
        .iter()
        .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
        .filter(|t| t.spec.as_ref().and_then(|s| s.container_spec.as_ref()).and_then(|c| c.image.clone()) == image)
        .count();
    Ok(current == tasks.len() && wanted.is_none_or(|w| current as i64 >= w))
}
