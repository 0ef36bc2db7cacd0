//! Applications: the list, and an application's page — its services (replicas with +/−, image and
//! digest, ports, update status, errors), its routes (where each service answers, and how many tasks
//! serve it), its canary or blue/green release ([`super::release`]), revisions with rollback, and its
//! events as they happen.

use berth_types::{
    Application, ApplicationRevision, Cluster, Event, Page, Role, RollbackApplication, Route, Service, UpdateService,
};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};
use uuid::Uuid;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{Badge, Empty, ErrorBox, Loading, MaybeError, PageHeader, TypedConfirm, act, every, loaded};
use crate::format;
use crate::live;

fn about_applications(e: &Event) -> bool {
    matches!(e.target_type.as_str(), "application" | "service")
}

/// Whether an event concerns application `id` (itself, or one of its services).
fn about(id: Uuid, e: &Event) -> bool {
    e.target_id == Some(id) || e.data.get("application_id").and_then(|v| v.as_str()) == Some(id.to_string().as_str())
}

/// Whether an event is about one service only: its own events (`service.observed`, `service.updated`,
/// which carry the service) and the jobs that change only it (scale, image, restart) unless they fail.
fn about_one_service(e: &Event) -> bool {
    let service_job = e.kind.starts_with("job.")
        && e.kind != "job.failed"
        && e.data.get("kind").and_then(|k| k.as_str()).is_some_and(|k| k.starts_with("service."));
    service_job || e.target_type == "service"
}

#[component]
pub fn ApplicationList() -> impl IntoView {
    let s = session();
    let changed = live::changes(about_applications);
    let apps = LocalResource::new(move || {
        changed.get();
        async move {
            let (apps, clusters) = futures_util::join!(
                api::get::<Page<Application>>("/applications?limit=500"),
                api::get::<Page<Cluster>>("/clusters?limit=500")
            );
            Ok::<_, ApiError>((apps?.items, clusters?.items))
        }
    });
    view! {
        <PageHeader title="Applications">
            <Show when=move || s.can(Role::Developer)>
                <A href="/deploy" attr:class="button primary" attr:id="deploy">"Deploy an application"</A>
            </Show>
        </PageHeader>
        {loaded(apps, |(apps, clusters): (Vec<Application>, Vec<Cluster>)| {
            if apps.is_empty() {
                return view! { <Empty>"No applications yet. Deploy one from the gallery or from your own Compose templates."</Empty> }.into_any();
            }
            let cluster_name = |id: Uuid| clusters.iter().find(|c| c.id == id).map(|c| c.name.clone()).unwrap_or_default();
            view! {
                <table class="table" id="applications">
                    <thead><tr><th scope="col">"Name"</th><th scope="col">"Status"</th><th scope="col">"Cluster"</th>
                        <th scope="col">"Revision"</th><th scope="col">"Updated"</th></tr></thead>
                    <tbody>
                        {apps.into_iter().map(|a| {
                            let (name, cluster) = (a.name.clone(), cluster_name(a.cluster_id));
                            view! {
                            <tr>
                                <td><A href=format!("/applications/{}", a.id)>{name}</A></td>
                                <td><Badge status=a.status.as_str() /></td>
                                <td><A href=format!("/clusters/{}", a.cluster_id)>{cluster}</A></td>
                                <td>{a.revision}</td>
                                <td>{format::time(a.updated_at)}</td>
                            </tr>
                        }}).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        })}
    }
}

#[component]
pub fn ApplicationPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|s| s.parse::<Uuid>().ok()));
    let current = move || params.with_untracked(|p| p.get("id").and_then(|s| s.parse::<Uuid>().ok()));
    // A service's own events (`service.observed`, `service.updated`) carry the service: its row is
    // updated in place from the event, without a request. Anything else about the application (its
    // status, deploys, releases, failed jobs) reloads the page's data. (A job's `running` and
    // `progress` change nothing shown here.)
    let changed = live::changes(move |e| {
        !about_one_service(e)
            && !matches!(e.kind.as_str(), "job.running" | "job.progress")
            && current().is_some_and(|id| about(id, e))
    });
    let app = LocalResource::new(move || {
        changed.get();
        let id = id();
        async move { api::get::<Application>(&format!("/applications/{}", id.ok_or_else(not_found)?)).await }
    });
    // The services live in a signal that each reload updates in place: the table keeps the rows whose
    // service did not change (with 200 services, rebuilding them all on every event drops frames).
    let services = RwSignal::new(None::<Result<Vec<Service>, ApiError>>);
    let services_res = LocalResource::new(move || {
        changed.get();
        let id = id();
        async move {
            let id = id.ok_or_else(not_found)?;
            api::get::<Page<Service>>(&format!("/applications/{id}/services?limit=500")).await.map(|p| p.items)
        }
    });
    Effect::new(move |_| {
        if let Some(r) = services_res.get() {
            services.set(Some(r));
        }
    });
    live::each(move |e| {
        if !matches!(e.kind.as_str(), "service.observed" | "service.updated") || !current().is_some_and(|id| about(id, e)) {
            return;
        }
        let Some(sid) = e.target_id else { return };
        let replace = move |fresh: Service| {
            let mut found = false;
            let _ = services.try_update(|all| {
                if let Some(Ok(all)) = all
                    && let Some(row) = all.iter_mut().find(|s| s.id == fresh.id)
                {
                    found = true;
                    if row.updated_at <= fresh.updated_at {
                        *row = fresh;
                    }
                }
            });
            if !found {
                changed.update(|v| *v += 1); // a service this page has not loaded yet (a release's copy)
            }
        };
        match serde_json::from_value::<Service>(e.data.clone()) {
            Ok(fresh) => replace(fresh),
            // An event written before events carried the service (a feed resumed across an upgrade): ask.
            Err(_) => leptos::task::spawn_local(async move {
                if let Ok(fresh) = api::get::<Service>(&format!("/services/{sid}")).await {
                    replace(fresh);
                }
            }),
        }
    });
    // Routes show how many tasks serve them, which moves with the observations of their services.
    // With many services and few routes, the others' events leave them alone.
    let routed = StoredValue::new(None::<Vec<Uuid>>);
    let observed = live::changes(move |e| {
        let routed_service = e.target_type == "service"
            && routed.with_value(|r| r.as_ref().is_none_or(|r| e.target_id.is_some_and(|t| r.contains(&t))));
        current().is_some_and(|id| about(id, e)) && (!about_one_service(e) || routed_service)
    });
    // Traffic moves without events: the routers report it every few seconds.
    let tick = every(std::time::Duration::from_secs(5));
    let routes = LocalResource::new(move || {
        observed.get();
        tick.get();
        let id = id();
        async move {
            let id = id.ok_or_else(not_found)?;
            api::get::<Page<Route>>(&format!("/routes?application_id={id}&limit=500")).await.map(|p| p.items)
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(routes)) = routes.get() {
            routed.set_value(Some(routes.iter().map(|r| r.service_id).collect()));
        }
    });
    // Revisions are written by the application's own changes and its releases, never by a service's.
    let revisions = LocalResource::new(move || {
        changed.get();
        let id = id();
        async move {
            let id = id.ok_or_else(not_found)?;
            api::get::<Page<ApplicationRevision>>(&format!("/applications/{id}/revisions?limit=500")).await
        }
    });
    view! {
        {loaded(app, |app: Application| view! { <Summary app=app /> })}
        <section class="card">
            <h2>"Services"</h2>
            <Services services=services changed=changed />
        </section>
        <section class="card">
            <h2>"Routes"</h2>
            {loaded(routes, move |routes: Vec<Route>| {
                view! { <Routes routes=routes services=services /> }
            })}
        </section>
        {move || id().map(|id| view! { <crate::pages::release::Releases id=id changed=changed /> })}
        <section class="card">
            <h2>"Revisions"</h2>
            {loaded(revisions, move |page: Page<ApplicationRevision>| {
                let current = app.get().and_then(Result::ok).map(|a| (a.id, a.revision));
                current.map(|(id, revision)| view! { <Revisions id=id current=revision revisions=page.items /> })
            })}
        </section>
        <AppEvents id=Signal::derive(id) />
    }
}

pub fn not_found() -> ApiError {
    ApiError { status: 404, kind: "not-found".into(), detail: "There is no such page.".into(), errors: vec![] }
}

#[component]
fn Summary(app: Application) -> impl IntoView {
    let s = session();
    let error = RwSignal::new(None::<ApiError>);
    let navigate = use_navigate();
    let id = app.id;
    let delete = Callback::new(move |_| {
        let navigate = navigate.clone();
        act(error, async move { api::delete_accepted::<Application>(&format!("/applications/{id}")).await }, move |_| {
            navigate("/applications", Default::default())
        });
    });
    let warnings = app.warnings.clone();
    let deployed = app.deployed_revision.map(|r| r.to_string()).unwrap_or_else(|| "none yet".into());
    view! {
        <PageHeader title=app.name.clone() />
        <MaybeError error=error />
        <dl class="facts">
            <dt>"Status"</dt><dd id="app-status"><Badge status=app.status.as_str() /></dd>
            <dt>"Revision"</dt><dd>{format!("{} (deployed: {deployed})", app.revision)}</dd>
            <dt>"Cluster"</dt><dd><A href=format!("/clusters/{}", app.cluster_id)>"open"</A></dd>
            {(!app.message.is_empty()).then(|| view! { <dt>"Message"</dt><dd>{app.message.clone()}</dd> })}
        </dl>
        {(!warnings.is_empty()).then(|| view! {
            <div class="warning" role="status">
                <p>"Compose warnings:"</p>
                <ul>{warnings.into_iter().map(|w| view! { <li><code>{w.path}</code>{format!(" (line {}): ", w.line)}{w.message}</li> }).collect_view()}</ul>
            </div>
        })}
        {s.can(Role::Developer).then(|| view! {
            <TypedConfirm name=app.name.clone() action="Delete application" on_confirm=delete id="delete-application" />
        })}
    }
}

/// Changes a service's replicas (the +/− buttons and the service page's form); `changed` moves once
/// Berth has accepted it, so the page shows the new desired count at once.
pub fn scale(id: Uuid, replicas: i32, error: RwSignal<Option<ApiError>>, changed: RwSignal<u64>) {
    act(
        error,
        async move {
            let body = UpdateService { replicas: Some(replicas), image: None };
            api::patch::<Service>(&format!("/services/{id}"), &body).await
        },
        move |_| changed.update(|v| *v += 1),
    );
}

#[component]
fn Services(services: RwSignal<Option<Result<Vec<Service>, ApiError>>>, changed: RwSignal<u64>) -> impl IntoView {
    let s = session();
    let dev = s.can(Role::Developer);
    let error = RwSignal::new(None::<ApiError>);
    // Which of loading, failed, empty or a table to show: changes rarely, unlike the rows.
    let state = Memo::new(move |_| {
        services.with(|s| match s {
            None => 0,
            Some(Err(_)) => 1,
            Some(Ok(v)) if v.is_empty() => 2,
            Some(Ok(_)) => 3,
        })
    });
    let rows = move || services.with(|s| s.as_ref().and_then(|r| r.as_ref().ok()).cloned().unwrap_or_default());
    move || {
        match state.get() {
        0 => view! { <Loading /> }.into_any(),
        1 => services.with_untracked(|s| match s {
            Some(Err(e)) => view! { <ErrorBox error=e.clone() /> }.into_any(),
            _ => ().into_any(),
        }),
        2 => view! { <Empty>"No services yet."</Empty> }.into_any(),
        _ => view! {
            <MaybeError error=error />
            <div class="table-wrap">
            // Laid out as a grid per row (style.css: a live change lays out one row, rows out of view
            // none), so the table's roles are stated: browsers drop them from a table not displayed as one.
            <table class="table" id="services" role="table">
                <thead role="rowgroup"><tr role="row"><th scope="col" role="columnheader">"Service"</th>
                    <th scope="col" role="columnheader">"Status"</th><th scope="col" role="columnheader">"Replicas"</th>
                    <th scope="col" role="columnheader">"Image"</th><th scope="col" role="columnheader">"Ports"</th>
                    <th scope="col" role="columnheader">"Update"</th><th scope="col" role="columnheader">"Message"</th></tr></thead>
                <tbody role="rowgroup">
                    <For each=rows key=|svc: &Service| (svc.id, svc.updated_at) children=move |svc: Service| service_row(svc, dev, error, changed) />
                </tbody>
            </table>
            </div>
        }.into_any(),
    }
    }
}

fn service_row(svc: Service, dev: bool, error: RwSignal<Option<ApiError>>, changed: RwSignal<u64>) -> impl IntoView {
    let id = svc.id;
    let desired = svc.replicas_desired;
    let replicated = svc.mode == "replicated";
    let ports = svc
        .ports
        .iter()
        .map(|p| format!("{}:{}/{} ({})", p.published, p.target, p.protocol, p.mode))
        .collect::<Vec<_>>()
        .join(", ");
    // A release's copy of a service runs beside it until the release is promoted or aborted.
    let copy = svc.release_id.is_some();
    let row_name = if copy { format!("{}@release", svc.name) } else { svc.name.clone() };
    let link_name = svc.name.clone();
    let (less, more) = (format!("Remove a replica of {}", svc.name), format!("Add a replica of {}", svc.name));
    let digest = svc.image_digest.as_deref().map(format::short_digest).unwrap_or_default();
    view! {
        <tr data-service=row_name role="row">
            <td role="cell"><A href=format!("/services/{id}")>{link_name}</A>
                {copy.then(|| view! { <br /><span class="muted">"the release's new revision"</span> })}</td>
            <td role="cell"><Badge status=svc.status.as_str() /></td>
            <td role="cell">
                <span class="replicas">
                    {(dev && replicated).then(|| view! {
                        <button class="small" aria-label=less.clone()
                            disabled=desired == 0 on:click=move |_| scale(id, desired - 1, error, changed)>"−"</button>
                    })}
                    <span class="count">{format!("{}/{}", svc.replicas_running, desired)}</span>
                    {(dev && replicated).then(|| view! {
                        <button class="small" aria-label=more.clone()
                            on:click=move |_| scale(id, desired + 1, error, changed)>"+"</button>
                    })}
                </span>
            </td>
            <td role="cell"><code>{svc.image.clone()}</code>{(!digest.is_empty()).then(|| view! { <br /><span class="muted mono">{digest}</span> })}</td>
            <td role="cell">{ports}</td>
            <td role="cell">{svc.update_state.clone().unwrap_or_default()}</td>
            <td role="cell">{svc.message.clone()}</td>
        </tr>
    }
}

/// Where the application's services answer through the router.
#[component]
fn Routes(routes: Vec<Route>, services: RwSignal<Option<Result<Vec<Service>, ApiError>>>) -> impl IntoView {
    if routes.is_empty() {
        return view! {
            <Empty>"No routes. A service gets its own domain when its Compose file gives it a port."</Empty>
        }
        .into_any();
    }
    view! {
        <div class="table-wrap">
        <table class="table" id="routes">
            <thead><tr><th scope="col">"Address"</th><th scope="col">"Service"</th><th scope="col">"Port"</th>
                <th scope="col">"State"</th><th scope="col">"Serving"</th><th scope="col">"Traffic"</th><th scope="col">"Balance"</th></tr></thead>
            <tbody>
                {routes.into_iter().map(|r| {
                    let state = match (r.verified, r.endpoints) {
                        (false, _) => "unverified",
                        (true, 0) => "no tasks",
                        (true, _) => "routed",
                    };
                    // The services may load after the routes: the name follows them.
                    let service_id = r.service_id;
                    let service = move || {
                        services.with(|s| match s {
                            Some(Ok(all)) => all.iter().find(|s| s.id == service_id).map(|s| s.name.clone()),
                            _ => None,
                        })
                        .unwrap_or_else(|| "service".to_owned())
                    };
                    let serving = match r.endpoints { 1 => "1 task".to_owned(), n => format!("{n} tasks") };
                    let balance = if r.sticky { format!("{} (sticky)", r.balance) } else { r.balance.clone() };
                    let t = &r.traffic;
                    let traffic = format!("{:.1} req/s, {:.1} 5xx/s, {} ms", t.requests_per_sec, t.errors_per_sec, t.response_ms);
                    let totals = format!("{} requests, {} 5xx in all", t.requests_total, t.responses_5xx_total);
                    let shown = if r.path_prefix == "/" { r.domain.clone() } else { format!("{}{}", r.domain, r.path_prefix) };
                    view! {
                        <tr data-route=r.domain.clone()>
                            <td><a href=r.url.clone() target="_blank" rel="noopener noreferrer">{shown}</a>
                                {(r.source != "default").then(|| view! { <br /><span class="muted">{format!("from {}", r.source)}</span> })}</td>
                            <td><A href=format!("/services/{}", r.service_id)>{service}</A></td>
                            <td>{r.port}</td>
                            <td><Badge status=state />
                                {(!r.verified).then(|| view! { <br /><span class="muted">"routed once the domain is verified: "<a href="/domains">"Domains"</a></span> })}</td>
                            <td class="serving">{serving}</td>
                            <td class="traffic">{traffic}<br /><span class="muted">{totals}</span></td>
                            <td>{balance}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }
    .into_any()
}

#[component]
fn Revisions(id: Uuid, current: i32, revisions: Vec<ApplicationRevision>) -> impl IntoView {
    let s = session();
    let dev = s.can(Role::Developer);
    let error = RwSignal::new(None::<ApiError>);
    let rollback = move |revision: i32| {
        leptos::task::spawn_local(async move {
            let body = RollbackApplication { revision: Some(revision) };
            if let Err(e) = api::post::<Application>(&format!("/applications/{id}/rollback"), &body).await {
                error.set(Some(e));
            }
        });
    };
    let mut revisions = revisions;
    revisions.sort_by_key(|r| std::cmp::Reverse(r.revision));
    view! {
        <MaybeError error=error />
        <table class="table" id="revisions">
            <thead><tr><th scope="col">"Revision"</th><th scope="col">"Created"</th><th scope="col">"Template"</th>
                <th scope="col">"Images"</th>{dev.then(|| view! { <th scope="col">"Actions"</th> })}</tr></thead>
            <tbody>
                {revisions.into_iter().map(|r| {
                    let is_current = r.revision == current;
                    let images = r.images.iter().map(|(s, i)| format!("{s}: {}", format::short_digest(i))).collect::<Vec<_>>().join(", ");
                    let template = r.template_version.map(|v| format!("version {v}")).unwrap_or_else(|| "Compose".into());
                    let rev = r.revision;
                    view! {
                        <tr data-revision=rev>
                            <td>{rev}{is_current.then_some(" (current)")}</td>
                            <td>{format::time(r.created_at)}</td>
                            <td>{template}</td>
                            <td class="mono">{images}</td>
                            {dev.then(|| view! {
                                <td>{(rev < current).then(|| view! {
                                    <button on:click=move |_| rollback(rev)>{format!("Roll back to {rev}")}</button>
                                })}</td>
                            })}
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn AppEvents(id: Signal<Option<Uuid>>) -> impl IntoView {
    let changed = live::changes(move |e| id.with_untracked(|id| id.is_some_and(|id| about(id, e))));
    let events = Memo::new(move |_| {
        changed.get();
        id.get().map(|id| live::recent().into_iter().filter(|e| about(id, e)).take(20).collect::<Vec<_>>()).unwrap_or_default()
    });
    // Keyed by event: a new event adds its line and the others stay (only their age's text moves).
    let now = move || {
        changed.get();
        chrono::Utc::now()
    };
    view! {
        <section class="card">
            <h2>"Events"</h2>
            <Show when=move || events.with(|e| !e.is_empty())
                fallback=|| view! { <Empty>"No events since you opened Berth. Deploys, scaling and state changes appear here live."</Empty> }>
                <ul class="events" id="app-events">
                    <For each=move || events.get() key=|e: &Event| e.id children=move |e: Event| {
                        let what = e.data.get("name").and_then(|v| v.as_str()).map(|n| format!(" {n}")).unwrap_or_default();
                        let to = e.data.get("to").or(e.data.get("status")).and_then(|v| v.as_str()).map(|s| format!(" → {s}")).unwrap_or_default();
                        let at = e.at;
                        view! { <li><code>{e.kind.clone()}</code>{what}{to}" "<span class="muted">{move || format::ago(at, now())}</span></li> }
                    } />
                </ul>
            </Show>
        </section>
    }
}
