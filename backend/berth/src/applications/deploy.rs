//! The application jobs: applying a revision to the engine as `docker stack deploy --prune
//! --with-registry-auth --resolve-image always` would (docs/compose-translation.md §9), removing a stack
//! as `docker stack rm` does, and the per-service operations (scale, image, restart).
//!
//! Every step looks at what the engine has and does only what is missing or different, so a job killed
//! anywhere and run again converges: no duplicate services, nothing left behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bollard::auth::DockerCredentials;
use bollard::models::{Platform, ServiceSpec};
use bollard::query_parameters::{
    ListConfigsOptions, ListNetworksOptions, ListSecretsOptions, ListServicesOptions, UpdateConfigOptions, UpdateSecretOptions,
    UpdateServiceOptions,
};
use futures_util::StreamExt;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::compose::convert::{IMAGE_LABEL, NAMESPACE_LABEL, ObjectIds, Stack, with_default_tag};
use super::compose::{self, Input};
use super::store::{self, AppRow, RevisionRow};
use crate::clusters::WorkerEnv;
use crate::clusters::access::connect_manager;
use crate::jobs::runner::{Handler, Handlers, JobCtx};
use crate::registry::credentials;
use crate::swarm::Engine;

pub fn add_handlers(h: &mut Handlers, env: Arc<WorkerEnv>) {
    let handler = |env: Arc<WorkerEnv>, run: fn(JobCtx, Arc<WorkerEnv>) -> crate::jobs::runner::BoxFuture| Handler {
        run: Box::new(move |ctx: JobCtx| run(ctx, env.clone())),
        failed: Box::new(|ctx: JobCtx, error: String| Box::pin(mark_failed(ctx, error))),
    };
    h.add("application.deploy", handler(env.clone(), |ctx, env| Box::pin(deploy(ctx, env))));
    h.add("application.delete", handler(env.clone(), |ctx, env| Box::pin(delete(ctx, env))));
    h.add("service.update", handler(env.clone(), |ctx, env| Box::pin(update_service(ctx, env))));
    h.add("service.restart", handler(env, |ctx, env| Box::pin(restart_service(ctx, env))));
}

/// A deploy that failed for good leaves the application `failed`, with the reason.
async fn mark_failed(ctx: JobCtx, error: String) -> anyhow::Result<()> {
    let status = if ctx.job.kind == "application.delete" { "deleting" } else { "failed" };
    sqlx::query("UPDATE applications SET status = $2, message = $3, updated_at = now() WHERE id = $1")
        .bind(ctx.job.target_id)
        .bind(status)
        .bind(&error)
        .execute(&ctx.db)
        .await?;
    Ok(())
}

fn label_filter(stack: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{NAMESPACE_LABEL}={stack}")])])
}

/// What the engine needs to pull a service's image: the cluster's robot for the built-in registry, the
/// tenant's stored login for an external one.
async fn registry_auth(db: &PgPool, env: &WorkerEnv, app: &AppRow, image: &str) -> anyhow::Result<Option<DockerCredentials>> {
    let builtin = env.registry.as_ref().map(|r| r.address.as_str());
    let credential = credentials::for_deploy(db, &env.keys, builtin, app.tenant_id, app.cluster_id, image).await?;
    Ok(credential.map(|c| DockerCredentials {
        username: Some(c.username),
        password: Some(c.password),
        serveraddress: Some(c.address),
        ..Default::default()
    }))
}

/// `nginx:1` → `nginx:1@sha256:…` and the platforms the registry has it for, as the CLI's API client
/// asks the engine (`GET /distribution/…/json`). An image the registry does not answer for stays
/// unpinned, with a warning in the job log, as with the CLI.
async fn resolve(
    ctx: &JobCtx,
    engine: &Engine,
    image: &str,
    auth: Option<DockerCredentials>,
) -> anyhow::Result<(String, Option<Vec<Platform>>)> {
    let tagged = with_default_tag(image);
    if tagged.contains('@') {
        return Ok((tagged, None));
    }
    match engine.docker.inspect_registry_image(&tagged, auth).await {
        Ok(found) => {
            let digest = found.descriptor.digest.context("the registry gave no digest")?;
            let platforms = found
                .platforms
                .into_iter()
                .map(|p| Platform { architecture: p.architecture.filter(|a| a != "arm"), os: p.os })
                .collect();
            Ok((format!("{tagged}@{digest}"), Some(platforms)))
        }
        Err(e) => {
            ctx.log(&format!("image {image} could not be resolved to a digest ({e}); each node pulls it on its own")).await?;
            Ok((tagged, None))
        }
    }
}

/// Applies the job's revision of the application to its cluster.
async fn deploy(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let db = &ctx.db;
    let mut conn = db.acquire().await?;
    let Some(app) = store::app_by_id(&mut conn, ctx.job.target_id).await? else { return Ok(()) };
    let revision = ctx.job.payload.get("revision").and_then(Value::as_i64).context("no revision in the job")? as i32;
    if app.status == berth_types::ApplicationStatus::Deleting || revision != app.current_revision {
        ctx.log(&format!("revision {revision} is no longer current; nothing to do")).await?;
        return Ok(());
    }
    let rev = store::revision(&mut conn, app.id, revision).await?.context("the revision is missing")?;
    drop(conn);
    apply_revision(&ctx, &env, &app, &rev).await?;
    sqlx::query("UPDATE applications SET deployed_revision = $2, message = '', updated_at = now() WHERE id = $1 AND current_revision = $2")
        .bind(app.id)
        .bind(revision)
        .execute(db)
        .await?;
    Ok(())
}

/// Loads a revision's Compose file as the deploy sees it: the tenant's admission policy and Berth's
/// built-in variables applied.
pub(crate) async fn load_revision(
    db: &PgPool,
    env: &WorkerEnv,
    app: &AppRow,
    rev: &RevisionRow,
) -> anyhow::Result<compose::Loaded> {
    let mut conn = db.acquire().await?;
    let policy = store::policy(&mut conn, app.tenant_id).await?;
    let registry = env.registry.as_ref().map(|r| r.address.as_str());
    let variables = store::with_builtins(&mut conn, app.tenant_id, registry, &rev.variables.0).await?;
    drop(conn);
    let input = Input { text: &rev.compose, files: &rev.files.0, variables: &variables };
    compose::load(&input, &policy).map_err(|errors| {
        let text = errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("; ");
        anyhow::anyhow!("the Compose file no longer loads: {text}")
    })
}

/// Applies a revision to the application's own services as `docker stack deploy --prune` would, and
/// records the images it pinned on the revision.
pub(crate) async fn apply_revision(ctx: &JobCtx, env: &WorkerEnv, app: &AppRow, rev: &RevisionRow) -> anyhow::Result<()> {
    let db = &ctx.db;
    let loaded = load_revision(db, env, app, rev).await?;
    let stack = Stack { name: &app.name, project: &loaded.project };
    ctx.progress("connecting to a manager", 5).await?;
    let engine = connect_manager(db, env, app.cluster_id).await?;
    if !engine.membership().await?.manager {
        bail!("the engine Berth reached is not a swarm manager");
    }
    ctx.progress("removing services the file no longer has", 10).await?;
    prune_services(ctx, &engine, &stack).await?;
    ctx.progress("networks", 20).await?;
    ensure_networks(ctx, &engine, &stack).await?;
    ctx.progress("secrets and configs", 30).await?;
    let ids = ensure_objects(ctx, &engine, &stack).await?;
    ctx.progress("services", 40).await?;
    let existing = existing_services(&engine, stack.name).await?;
    // Services are independent once their networks, secrets and configs exist: they are applied a few
    // at a time (each its own calls to the manager), which is where a deploy spends its time.
    let pinned_before = &rev.images.0;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = loaded.project.services.len().max(1);
    let keys: Vec<String> = loaded.project.services.keys().cloned().collect();
    let (engine_ref, stack_ref, ids_ref, existing_ref, done_ref) = (&engine, &stack, &ids, &existing, &done);
    let applied: Vec<anyhow::Result<(String, String)>> = futures_util::stream::iter(keys)
        .map(move |key: String| async move {
            let before = pinned_before.get(&key);
            let target = Applied::Own(existing_ref);
            let pinned = apply_service(ctx, env, app, engine_ref, stack_ref, ids_ref, target, &key, before).await?;
            let n = done_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            ctx.progress(&format!("service {} applied", stack_ref.scoped(&key)), 40 + (60 * n / total) as i32).await?;
            Ok((key, pinned))
        })
        .buffer_unordered(SERVICES_AT_ONCE)
        .collect()
        .await;
    let mut images = rev.images.0.clone();
    for result in applied {
        let (key, pinned) = result?;
        images.insert(key, pinned);
    }
    record_pins(db, app.id, rev.revision, &images).await
}

/// Records the images a revision's services were pinned to, so a later apply (a promote, a rollback)
/// runs the same bytes.
pub(crate) async fn record_pins(db: &PgPool, app: Uuid, revision: i32, images: &BTreeMap<String, String>) -> anyhow::Result<()> {
    sqlx::query("UPDATE application_revisions SET images = $3 WHERE application_id = $1 AND revision = $2")
        .bind(app)
        .bind(revision)
        .bind(Json(images))
        .execute(db)
        .await?;
    Ok(())
}

/// How many services a deploy creates or updates at once.
const SERVICES_AT_ONCE: usize = 8;

/// Which service [`apply_service`] applies: one of the application's own (given those the engine has),
/// or a release's copy of it.
#[derive(Clone, Copy)]
pub(crate) enum Applied<'a> {
    Own(&'a HashMap<String, Current>),
    Copy { release: Uuid, stack: &'a str, existing: &'a HashMap<String, Current> },
}

/// Creates or updates one service of the stack with its image pinned (or the pin the revision already
/// has), and records its engine id. Returns the pinned image.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_service(
    ctx: &JobCtx,
    env: &WorkerEnv,
    app: &AppRow,
    engine: &Engine,
    stack: &Stack<'_>,
    ids: &ObjectIds,
    target: Applied<'_>,
    key: &str,
    pinned_before: Option<&String>,
) -> anyhow::Result<String> {
    let image = &stack.project.services[key].image;
    let auth = registry_auth(&ctx.db, env, app, image).await?;
    let mut spec = stack.service(key, ids);
    let routed = crate::routing::declare::exposed_ports(&stack.project.services[key]);
    crate::routing::ports::publish_routed(&mut spec, &routed);
    crate::routing::rollout::start_first_by_default(&mut spec, !routed.is_empty());
    let existing = match target {
        Applied::Own(existing) => existing,
        Applied::Copy { release, stack: copy_stack, existing } => {
            crate::releases::copies::as_copy(&mut spec, copy_stack, release, &app.name);
            existing
        }
    };
    let (pinned, platforms) = match pinned_before {
        Some(p) => (p.clone(), None),
        None => resolve(ctx, engine, image, auth.clone()).await?,
    };
    let task = spec.task_template.as_mut().expect("convert sets a task template");
    task.container_spec.as_mut().expect("convert sets a container spec").image = Some(pinned.clone());
    if let Some(placement) = task.placement.as_mut() {
        placement.platforms = platforms;
    }
    let name = spec.name.clone().unwrap_or_else(|| stack.scoped(key));
    let swarm_id = match existing.get(&name) {
        Some(current) => {
            ctx.log(&format!("updating service {name}")).await?;
            update(engine, current, spec, auth).await?;
            current.id.clone()
        }
        None => {
            ctx.log(&format!("creating service {name}")).await?;
            let created = engine.docker.create_service(spec, auth).await.with_context(|| format!("creating service {name}"))?;
            created.id.context("the engine gave no service id")?
        }
    };
    let release = match target {
        Applied::Own(_) => None,
        Applied::Copy { release, .. } => Some(release),
    };
    sqlx::query(
        "UPDATE services SET swarm_service_id = $3, image_digest = $4, updated_at = now()
          WHERE application_id = $1 AND name = $2 AND release_id IS NOT DISTINCT FROM $5",
    )
    .bind(app.id)
    .bind(key)
    .bind(&swarm_id)
    .bind(&pinned)
    .bind(release)
    .execute(&ctx.db)
    .await?;
    Ok(pinned)
}

/// A service of the stack as the engine has it.
pub(crate) struct Current {
    pub id: String,
    pub version: u64,
    pub force_update: Option<u64>,
}

pub(crate) async fn existing_services(engine: &Engine, stack: &str) -> anyhow::Result<HashMap<String, Current>> {
    services_labelled(engine, NAMESPACE_LABEL, stack).await
}

/// The engine's services carrying `label=value`, by name.
pub(crate) async fn services_labelled(engine: &Engine, label: &str, value: &str) -> anyhow::Result<HashMap<String, Current>> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{label}={value}")])]);
    let options = ListServicesOptions { filters: Some(filters), ..Default::default() };
    let mut out = HashMap::new();
    for s in engine.docker.list_services(Some(options)).await? {
        let (Some(id), Some(spec)) = (s.id, s.spec) else { continue };
        let Some(name) = spec.name else { continue };
        let force_update = spec.task_template.as_ref().and_then(|t| t.force_update);
        out.insert(name, Current { id, version: s.version.and_then(|v| v.index).unwrap_or(0), force_update });
    }
    Ok(out)
}

/// An update of a service at `version` (the engine refuses a stale one), with registry auth from the
/// new spec.
fn update_options(version: u64) -> anyhow::Result<UpdateServiceOptions> {
    Ok(UpdateServiceOptions {
        version: i32::try_from(version).context("service version out of range")?,
        registry_auth_from: "spec".to_owned(),
        rollback: None,
    })
}

/// Sends the complete new spec at the service's current version, keeping its force-update counter, as
/// the CLI does: anything changed on the engine outside the stack is reset.
async fn update(
    engine: &Engine,
    current: &Current,
    mut spec: ServiceSpec,
    auth: Option<DockerCredentials>,
) -> anyhow::Result<()> {
    if let Some(task) = spec.task_template.as_mut() {
        task.force_update = current.force_update;
    }
    let options = update_options(current.version)?;
    let name = spec.name.clone().unwrap_or_default();
    engine.docker.update_service(&current.id, spec, options, auth).await.with_context(|| format!("updating service {name}"))?;
    Ok(())
}

/// `--prune`: removes the stack's services whose key the file no longer has.
async fn prune_services(ctx: &JobCtx, engine: &Engine, stack: &Stack<'_>) -> anyhow::Result<()> {
    let names: Vec<(String, String)> = existing_services(engine, stack.name)
        .await?
        .into_iter()
        .filter(|(name, _)| {
            let key = name.strip_prefix(&format!("{}_", stack.name)).unwrap_or(name);
            !stack.project.services.contains_key(key)
        })
        .map(|(name, current)| (name, current.id))
        .collect();
    remove_services(ctx, engine, names).await
}

/// Removes services (name, engine id), in name order, as `docker stack rm` does; one already gone is
/// fine.
pub(crate) async fn remove_services(ctx: &JobCtx, engine: &Engine, mut services: Vec<(String, String)>) -> anyhow::Result<()> {
    services.sort();
    for (name, id) in services {
        ctx.log(&format!("removing service {name}")).await?;
        ignore_missing(engine.docker.delete_service(&id).await).with_context(|| format!("removing service {name}"))?;
    }
    Ok(())
}

pub(crate) async fn ensure_networks(ctx: &JobCtx, engine: &Engine, stack: &Stack<'_>) -> anyhow::Result<()> {
    let (create, external) = stack.networks();
    for name in external {
        if matches!(name.as_str(), "host" | "bridge" | "none" | "default") {
            continue;
        }
        let net = engine.docker.inspect_network(&name, None).await.map_err(|_| {
            anyhow::anyhow!(
                "network {name:?} is declared as external, but could not be found: create a swarm-scoped network first"
            )
        })?;
        if net.scope.as_deref() != Some("swarm") {
            bail!("network {name:?} is declared as external, but its scope is {:?}, not swarm", net.scope.unwrap_or_default());
        }
    }
    let options = ListNetworksOptions { filters: Some(label_filter(stack.name)) };
    let have: Vec<String> = engine.docker.list_networks(Some(options)).await?.into_iter().filter_map(|n| n.name).collect();
    for request in create {
        if have.contains(&request.name) {
            continue;
        }
        ctx.log(&format!("creating network {}", request.name)).await?;
        let name = request.name.clone();
        engine.docker.create_network(request).await.with_context(|| format!("creating network {name}"))?;
    }
    Ok(())
}

/// A secret or config of the engine found by exact name: (id, version).
async fn find_secret(engine: &Engine, name: &str) -> anyhow::Result<Option<(String, i64)>> {
    let options = ListSecretsOptions { filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])) };
    let found = engine
        .docker
        .list_secrets(Some(options))
        .await?
        .into_iter()
        .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name));
    Ok(found.map(|s| (s.id.unwrap_or_default(), s.version.and_then(|v| v.index).unwrap_or(0) as i64)))
}

async fn find_config(engine: &Engine, name: &str) -> anyhow::Result<Option<(String, i64)>> {
    let options = ListConfigsOptions { filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])) };
    let found = engine
        .docker
        .list_configs(Some(options))
        .await?
        .into_iter()
        .find(|c| c.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name));
    Ok(found.map(|c| (c.id.unwrap_or_default(), c.version.and_then(|v| v.index).unwrap_or(0) as i64)))
}

/// Creates or updates the stack's secrets and configs (the engine allows only label changes on an
/// existing one, and says so), and finds the ids of every one its services use, external ones included.
pub(crate) async fn ensure_objects(ctx: &JobCtx, engine: &Engine, stack: &Stack<'_>) -> anyhow::Result<ObjectIds> {
    let mut ids = ObjectIds::default();
    for spec in stack.secrets() {
        let name = spec.name.clone().unwrap_or_default();
        let id = match find_secret(engine, &name).await? {
            Some((id, version)) => {
                engine
                    .docker
                    .update_secret(&id, spec, UpdateSecretOptions { version })
                    .await
                    .with_context(|| format!("updating secret {name}"))?;
                id
            }
            None => {
                ctx.log(&format!("creating secret {name}")).await?;
                engine.docker.create_secret(spec).await.with_context(|| format!("creating secret {name}"))?.id
            }
        };
        ids.secrets.insert(name, id);
    }
    for spec in stack.configs() {
        let name = spec.name.clone().unwrap_or_default();
        let id = match find_config(engine, &name).await? {
            Some((id, version)) => {
                engine
                    .docker
                    .update_config(&id, spec, UpdateConfigOptions { version })
                    .await
                    .with_context(|| format!("updating config {name}"))?;
                id
            }
            None => {
                ctx.log(&format!("creating config {name}")).await?;
                engine.docker.create_config(spec).await.with_context(|| format!("creating config {name}"))?.id
            }
        };
        ids.configs.insert(name, id);
    }
    for svc in stack.project.services.values() {
        for r in &svc.secrets {
            let name = stack.secret_name(&r.source);
            if let std::collections::hash_map::Entry::Vacant(slot) = ids.secrets.entry(name.clone()) {
                slot.insert(find_secret(engine, &name).await?.with_context(|| format!("secret not found: {name}"))?.0);
            }
        }
        let credential_config = match &svc.credential_spec {
            Some(compose::model::CredentialSpec::Config(c)) => Some(c.clone()),
            _ => None,
        };
        for source in svc.configs.iter().map(|r| r.source.clone()).chain(credential_config) {
            let name = stack.config_name(&source);
            if let std::collections::hash_map::Entry::Vacant(slot) = ids.configs.entry(name.clone()) {
                slot.insert(find_config(engine, &name).await?.with_context(|| format!("config not found: {name}"))?.0);
            }
        }
    }
    Ok(ids)
}

/// Removes what `docker stack rm` removes — services, secrets, configs, networks, found by the stack
/// label — then the application's rows. Networks are retried while tasks are still leaving them.
async fn delete(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let db = &ctx.db;
    let mut conn = db.acquire().await?;
    let Some(app) = store::app_by_id(&mut conn, ctx.job.target_id).await? else { return Ok(()) };
    drop(conn);
    let cluster_gone: bool = sqlx::query_scalar("SELECT status = 'deleting' FROM clusters WHERE id = $1")
        .bind(app.cluster_id)
        .fetch_optional(db)
        .await?
        .unwrap_or(true);
    if !cluster_gone {
        ctx.progress("connecting to a manager", 5).await?;
        let engine = connect_manager(db, &env, app.cluster_id).await?;
        // A release's copies run in stacks of their own.
        crate::releases::copies::remove(&ctx, &engine, crate::releases::copies::APPLICATION_LABEL, &app.name).await?;
        remove_stack(&ctx, &engine, &app.name).await?;
    }
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM applications WHERE id = $1").bind(app.id).execute(&mut *tx).await?;
    let target = crate::jobs::Target { tenant_id: Some(app.tenant_id), kind: "application", id: app.id };
    crate::jobs::emit(&mut tx, &target, "application.deleted", serde_json::json!({ "name": app.name })).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn remove_stack(ctx: &JobCtx, engine: &Engine, stack: &str) -> anyhow::Result<()> {
    let filters = label_filter(stack);
    ctx.progress("removing services", 20).await?;
    let services = existing_services(engine, stack).await?.into_iter().map(|(name, current)| (name, current.id)).collect();
    remove_services(ctx, engine, services).await?;
    ctx.progress("removing secrets and configs", 50).await?;
    for s in engine.docker.list_secrets(Some(ListSecretsOptions { filters: Some(filters.clone()) })).await? {
        if let Some(id) = s.id {
            ignore_missing(engine.docker.delete_secret(&id).await).context("removing a secret")?;
        }
    }
    for c in engine.docker.list_configs(Some(ListConfigsOptions { filters: Some(filters.clone()) })).await? {
        if let Some(id) = c.id {
            ignore_missing(engine.docker.delete_config(&id).await).context("removing a config")?;
        }
    }
    ctx.progress("removing networks", 70).await?;
    // A removed swarm network stays listed on a node until that node's tasks on it have stopped; the
    // job waits for that, so that "deleted" means gone from the engine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let networks = engine.docker.list_networks(Some(ListNetworksOptions { filters: Some(filters.clone()) })).await?;
        if networks.is_empty() {
            return Ok(());
        }
        let mut last_error = None;
        for n in networks {
            let Some(id) = n.id else { continue };
            if let Err(e) = ignore_missing(engine.docker.remove_network(&id).await) {
                last_error = Some(e);
            }
        }
        if tokio::time::Instant::now() > deadline {
            return match last_error {
                Some(e) => Err(e).context("removing a network (tasks may still be attached)"),
                None => bail!("the stack's networks are still listed a minute after their removal"),
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn ignore_missing(r: Result<(), bollard::errors::Error>) -> Result<(), bollard::errors::Error> {
    match r {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        other => other,
    }
}

/// The engine's service for a row, with the application it belongs to.
async fn service_target(
    ctx: &JobCtx,
    env: &WorkerEnv,
) -> anyhow::Result<Option<(AppRow, store::ServiceRow, Engine, bollard::models::Service)>> {
    let service: Uuid =
        ctx.job.payload.get("service").and_then(Value::as_str).and_then(|s| s.parse().ok()).context("no service in the job")?;
    let mut conn = ctx.db.acquire().await?;
    let Some(app) = store::app_by_id(&mut conn, ctx.job.target_id).await? else { return Ok(None) };
    let Ok(row) = store::load_service(&mut conn, app.tenant_id, service, false).await else { return Ok(None) };
    drop(conn);
    let engine = connect_manager(&ctx.db, env, app.cluster_id).await?;
    let name = row.engine_name(&app.name);
    let current = match engine.docker.inspect_service(&name, None).await {
        Ok(s) => s,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            bail!("service {name} is not on the engine yet (its application has not been deployed)")
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Some((app, row, engine, current)))
}

/// `PATCH /services/{id}`: replicas and/or image, as `docker service update` would change them.
async fn update_service(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let Some((app, row, engine, current)) = service_target(&ctx, &env).await? else { return Ok(()) };
    let mut spec = current.spec.clone().context("the service has no spec")?;
    let image = ctx.job.payload.get("image").and_then(Value::as_str).map(str::to_owned);
    let replicas = ctx.job.payload.get("replicas").and_then(Value::as_i64);
    let stored_image =
        spec.task_template.as_ref().and_then(|t| t.container_spec.as_ref()).and_then(|c| c.image.clone()).unwrap_or_default();
    let auth = registry_auth(&ctx.db, &env, &app, image.as_deref().unwrap_or(&stored_image)).await?;
    if let Some(n) = replicas {
        spec.mode.get_or_insert_with(Default::default).replicated.get_or_insert_with(Default::default).replicas = Some(n);
    }
    let mut pinned = None;
    if let Some(image) = &image {
        let (p, platforms) = resolve(&ctx, &engine, image, auth.clone()).await?;
        let task = spec.task_template.get_or_insert_with(Default::default);
        task.container_spec.get_or_insert_with(Default::default).image = Some(p.clone());
        task.placement.get_or_insert_with(Default::default).platforms = platforms;
        spec.labels.get_or_insert_with(Default::default).insert(IMAGE_LABEL.to_owned(), image.clone());
        pinned = Some(p);
    }
    let options = update_options(current.version.and_then(|v| v.index).unwrap_or(0))?;
    engine.docker.update_service(&current.id.unwrap_or_default(), spec, options, auth).await.context("updating the service")?;
    if let Some(p) = pinned {
        sqlx::query("UPDATE services SET image_digest = $2 WHERE id = $1").bind(row.id).bind(p).execute(&ctx.db).await?;
    }
    Ok(())
}

/// `POST /services/{id}/restart`: a forced update replaces every task.
async fn restart_service(ctx: JobCtx, env: Arc<WorkerEnv>) -> anyhow::Result<()> {
    let Some((app, _, engine, current)) = service_target(&ctx, &env).await? else { return Ok(()) };
    let mut spec = current.spec.clone().context("the service has no spec")?;
    let task = spec.task_template.get_or_insert_with(Default::default);
    task.force_update = Some(task.force_update.unwrap_or(0) + 1);
    let image = task.container_spec.as_ref().and_then(|c| c.image.clone()).unwrap_or_default();
    let auth = registry_auth(&ctx.db, &env, &app, &image).await?;
    let options = update_options(current.version.and_then(|v| v.index).unwrap_or(0))?;
    engine.docker.update_service(&current.id.unwrap_or_default(), spec, options, auth).await.context("restarting the service")?;
    Ok(())
}
