//! A service's page: its tasks (node, state, IP, host port, exit code, error), its routes (how each
//! balances, stickiness, timeout, HTTPS redirect, the certificate serving it — or a button that
//! obtains one; a custom domain added), live logs (follow, pause, filter, download), scale, change
//! image, restart.

use std::collections::HashMap;

use berth_types::{
    Application, Certificate, Container, CreateCertificate, CreateRoute, LogLine, Node, Page, Role, Route, RouteOptions, Service,
    UpdateService,
};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use uuid::Uuid;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{Badge, Empty, MaybeError, PageHeader, act, download, loaded};
use crate::format;
use crate::live;
use crate::pages::applications::{not_found, scale};

#[derive(Clone, PartialEq)]
struct Loaded {
    service: Service,
    application: Application,
    tasks: Vec<Container>,
    nodes: HashMap<Uuid, String>,
    routes: Vec<Route>,
    certificates: Vec<Certificate>,
}

async fn load(id: Uuid) -> Result<Loaded, ApiError> {
    let service = api::get::<Service>(&format!("/services/{id}")).await?;
    let (app_path, tasks_path) =
        (format!("/applications/{}", service.application_id), format!("/services/{id}/containers?limit=500"));
    let routes_path = format!("/routes?service_id={id}&limit=500");
    let (application, tasks, routes, certificates) = futures_util::join!(
        api::get::<Application>(&app_path),
        api::get::<Page<Container>>(&tasks_path),
        api::get::<Page<Route>>(&routes_path),
        api::get::<Page<Certificate>>("/certificates?limit=500")
    );
    let application = application?;
    let nodes = api::get::<Page<Node>>(&format!("/clusters/{}/nodes?limit=500", application.cluster_id))
        .await
        .map(|p| p.items.into_iter().map(|n| (n.id, n.name)).collect())
        .unwrap_or_default();
    Ok(Loaded { service, application, tasks: tasks?.items, nodes, routes: routes?.items, certificates: certificates?.items })
}

#[component]
pub fn ServicePage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|s| s.parse::<Uuid>().ok()));
    let changed = live::changes(move |e| {
        let id = params.with_untracked(|p| p.get("id").and_then(|s| s.parse::<Uuid>().ok()));
        // Its own observations, the jobs and states of applications (one of them is its own), and
        // certificates (one may serve its routes).
        id.is_some_and(|id| e.target_id == Some(id) || matches!(e.target_type.as_str(), "application" | "certificate"))
    });
    let data = LocalResource::new(move || {
        changed.get();
        let id = id();
        async move { load(id.ok_or_else(not_found)?).await }
    });
    view! {
        {loaded(data, move |l: Loaded| view! { <Body loaded=l changed=changed /> })}
        {move || id().map(|id| view! { <Logs id=id /> })}
    }
}

#[component]
fn Body(loaded: Loaded, changed: RwSignal<u64>) -> impl IntoView {
    let s = session();
    let Loaded { service, application, tasks, nodes, routes, certificates } = loaded;
    let ports = service
        .ports
        .iter()
        .map(|p| format!("{}:{}/{} ({})", p.published, p.target, p.protocol, p.mode))
        .collect::<Vec<_>>()
        .join(", ");
    view! {
        <PageHeader title=service.name.clone() />
        <p><A href=format!("/applications/{}", application.id)>{format!("← {}", application.name)}</A></p>
        <dl class="facts">
            <dt>"Status"</dt><dd id="service-status"><Badge status=service.status.as_str() /></dd>
            <dt>"Replicas"</dt><dd id="service-replicas">{format!("{} running of {} desired", service.replicas_running, service.replicas_desired)}</dd>
            <dt>"Image"</dt><dd><code>{service.image.clone()}</code></dd>
            <dt>"Digest"</dt><dd class="mono">{service.image_digest.clone().unwrap_or_else(|| "not pinned yet".into())}</dd>
            <dt>"Mode"</dt><dd>{service.mode.clone()}</dd>
            <dt>"Ports"</dt><dd>{if ports.is_empty() { "none".to_owned() } else { ports }}</dd>
            <dt>"Update"</dt><dd>{service.update_state.clone().unwrap_or_else(|| "none".into())}</dd>
            <dt>"Update order"</dt><dd id="service-update-order">{update_order(service.update_order.as_deref())}</dd>
            {(!service.message.is_empty()).then(|| view! { <dt>"Message"</dt><dd class="field-error">{service.message.clone()}</dd> })}
        </dl>
        {s.can(Role::Developer).then(|| view! { <Actions service=service.clone() changed=changed /> })}
        <section class="card">
            <h2>"Tasks"</h2>
            <Tasks tasks=tasks nodes=nodes />
        </section>
        <section class="card">
            <h2>"Routes"</h2>
            <ServiceRoutes service=service.id routes=routes certificates=certificates changed=changed />
        </section>
    }
}

/// How the engine replaces the service's tasks in an update, in words.
fn update_order(order: Option<&str>) -> String {
    match order {
        Some("start-first") => "start-first: each new task starts before the one it replaces stops".into(),
        Some("stop-first") => "stop-first: each old task stops before its replacement starts".into(),
        Some(other) => other.to_owned(),
        None => "not observed yet".into(),
    }
}

/// The service's routes, each with its balancing settings (developers change them), and a form to
/// route a custom domain to it.
#[component]
fn ServiceRoutes(service: Uuid, routes: Vec<Route>, certificates: Vec<Certificate>, changed: RwSignal<u64>) -> impl IntoView {
    let dev = session().can(Role::Developer);
    let error = RwSignal::new(None::<ApiError>);
    let first_port = routes.first().map(|r| r.port.to_string()).unwrap_or_default();
    let list = if routes.is_empty() {
        view! { <Empty>"No routes. The service gets its own domain when its Compose file gives it a port."</Empty> }.into_any()
    } else {
        view! {
            <div class="table-wrap">
            <table class="table" id="service-routes">
                <thead><tr><th scope="col">"Address"</th><th scope="col">"Port"</th><th scope="col">"Serving"</th>
                    <th scope="col">"Traffic"</th><th scope="col">"HTTPS"</th><th scope="col">"Settings"</th></tr></thead>
                <tbody>
                    {routes.into_iter().map(|r| {
                        let cert = certificates.iter().find(|c| berth_types::certificate_covers(&c.domain, &r.domain)).cloned();
                        route_row(r, cert, dev, error, changed)
                    }).collect_view()}
                </tbody>
            </table>
            </div>
        }
        .into_any()
    };
    view! {
        <MaybeError error=error />
        {list}
        {dev.then(|| view! { <AddRoute service=service port=first_port error=error changed=changed /> })}
    }
}

/// The route's HTTPS: the certificate serving it (state, until when), or — for developers, on a
/// verified route — a button that has Berth obtain one.
fn https_cell(
    domain: &str,
    verified: bool,
    cert: Option<Certificate>,
    dev: bool,
    error: RwSignal<Option<ApiError>>,
    changed: RwSignal<u64>,
) -> AnyView {
    match cert {
        Some(c) => {
            let until = c.not_after.map(|t| format!("until {}", t.format("%Y-%m-%d"))).unwrap_or_default();
            let how = if c.source == "acme" { "ACME" } else { "uploaded" };
            view! {
                <span class="certificate"><Badge status=c.state.clone() />" "{until}<br /><span class="muted">{format!("{how}: {}", c.domain)}</span>
                {(!c.message.is_empty()).then(|| view! { <br /><span class="field-error">{c.message.clone()}</span> })}</span>
            }
            .into_any()
        }
        None if dev && verified => {
            let domain = domain.to_owned();
            let label = format!("Get a certificate for {domain}");
            let obtain = move |_| {
                let body = CreateCertificate { domain: domain.clone(), certificate_pem: None, private_key_pem: None };
                leptos::task::spawn_local(async move {
                    match api::post::<Certificate>("/certificates", &body).await {
                        Ok(_) => {
                            let _ = changed.try_update(|v| *v += 1);
                        }
                        Err(e) => {
                            let _ = error.try_set(Some(e));
                        }
                    }
                });
            };
            view! { <button class="small certify" aria-label=label on:click=obtain>"Get a certificate"</button> }.into_any()
        }
        None => view! { <span class="muted">"none"</span> }.into_any(),
    }
}

fn route_row(
    r: Route,
    cert: Option<Certificate>,
    dev: bool,
    error: RwSignal<Option<ApiError>>,
    changed: RwSignal<u64>,
) -> impl IntoView {
    let id = r.id;
    let balance = RwSignal::new(r.balance.clone());
    let sticky = RwSignal::new(r.sticky);
    let redirect = RwSignal::new(r.https_redirect);
    let probe = RwSignal::new(r.probe_path.clone().unwrap_or_default());
    let https = https_cell(&r.domain, r.verified, cert, dev, error, changed);
    let timeout = RwSignal::new(r.timeout_secs.to_string());
    let shown = if r.path_prefix == "/" { r.domain.clone() } else { format!("{}{}", r.domain, r.path_prefix) };
    let t = &r.traffic;
    let traffic = format!("{:.1} req/s, {:.1} 5xx/s, {} ms", t.requests_per_sec, t.errors_per_sec, t.response_ms);
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Ok(timeout_secs) = timeout.get_untracked().trim().parse::<i32>() else {
            error.set(Some(ApiError::input("The timeout is a whole number of seconds.")));
            return;
        };
        let body = RouteOptions {
            balance: Some(balance.get_untracked()),
            sticky: Some(sticky.get_untracked()),
            timeout_secs: Some(timeout_secs),
            max_body_bytes: None,
            https_redirect: Some(redirect.get_untracked()),
            probe_path: Some(probe.get_untracked().trim().to_owned()),
        };
        act(error, async move { api::patch::<Route>(&format!("/routes/{id}"), &body).await }, move |_| {
            let _ = changed.try_update(|v| *v += 1);
        });
    };
    let settings = if dev {
        let (b_id, s_id, t_id, h_id) =
            (format!("balance-{id}"), format!("sticky-{id}"), format!("timeout-{id}"), format!("https-{id}"));
        let p_id = format!("probe-{id}");
        view! {
            <form class="form inline-form" on:submit=save>
                <label>"Balance "
                <select id=b_id on:change=move |ev| balance.set(event_target_value(&ev))>
                    {["roundrobin", "leastconn", "source", "random"].into_iter().map(|b| view! {
                        <option value=b selected=balance.get_untracked() == b>{b}</option>
                    }).collect_view()}
                </select></label>
                <label class="inline"><input type="checkbox" id=s_id prop:checked=move || sticky.get()
                    on:change=move |ev| sticky.set(event_target_checked(&ev)) />" sticky"</label>
                <label>"Timeout (s) "
                <input type="number" min="1" max="3600" id=t_id prop:value=move || timeout.get()
                    on:input=move |ev| timeout.set(event_target_value(&ev)) /></label>
                <label>"Health check path "
                <input type="text" id=p_id placeholder="TCP connect" prop:value=move || probe.get()
                    on:input=move |ev| probe.set(event_target_value(&ev)) /></label>
                <label class="inline"><input type="checkbox" id=h_id prop:checked=move || redirect.get()
                    on:change=move |ev| redirect.set(event_target_checked(&ev)) />" HTTP → HTTPS"</label>
                <button type="submit" class="small">"Save"</button>
            </form>
        }
        .into_any()
    } else {
        let sticky = if r.sticky { ", sticky" } else { "" };
        let redirect = if r.https_redirect { ", HTTP → HTTPS" } else { "" };
        let probe = r.probe_path.as_deref().map(|p| format!(", checked at {p}")).unwrap_or_default();
        view! { <span>{format!("{}{sticky}, {} s{redirect}{probe}", r.balance, r.timeout_secs)}</span> }.into_any()
    };
    view! {
        <tr data-route=r.domain.clone()>
            <td><a href=r.url.clone() target="_blank" rel="noopener noreferrer">{shown}</a>
                {(!r.verified).then(|| view! { <br /><span class="muted">"routed once the domain is verified: "<a href="/domains">"Domains"</a></span> })}</td>
            <td>{r.port}</td>
            <td>{match r.endpoints { 1 => "1 task".to_owned(), n => format!("{n} tasks") }}</td>
            <td>{traffic}</td>
            <td class="https">{https}</td>
            <td>{settings}</td>
        </tr>
    }
}

/// Routes a custom domain (and path) to the service.
#[component]
fn AddRoute(service: Uuid, port: String, error: RwSignal<Option<ApiError>>, changed: RwSignal<u64>) -> impl IntoView {
    let domain = RwSignal::new(String::new());
    let path = RwSignal::new("/".to_owned());
    let port = RwSignal::new(port);
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Ok(port) = port.get_untracked().trim().parse::<i32>() else {
            error.set(Some(ApiError::input("The port is a number.")));
            return;
        };
        let body = CreateRoute {
            service_id: service,
            port,
            domain: domain.get_untracked(),
            path_prefix: Some(path.get_untracked()),
            balance: None,
            sticky: None,
            timeout_secs: None,
            max_body_bytes: None,
            https_redirect: None,
            probe_path: None,
        };
        leptos::task::spawn_local(async move {
            match api::post::<Route>("/routes", &body).await {
                Ok(_) => {
                    let _ = error.try_set(None);
                    let _ = domain.try_set(String::new());
                    let _ = changed.try_update(|v| *v += 1);
                }
                Err(e) => {
                    let _ = error.try_set(Some(e));
                }
            }
        });
    };
    view! {
        <form class="form inline-form" id="add-route" on:submit=add>
            <label>"Domain "<input type="text" id="route-domain" placeholder="www.example.com" prop:value=move || domain.get()
                on:input=move |ev| domain.set(event_target_value(&ev)) /></label>
            <label>"Path "<input type="text" id="route-path" prop:value=move || path.get()
                on:input=move |ev| path.set(event_target_value(&ev)) /></label>
            <label>"Port "<input type="number" min="1" max="65535" id="route-port" prop:value=move || port.get()
                on:input=move |ev| port.set(event_target_value(&ev)) /></label>
            <button type="submit" id="add-route-submit">"Add route"</button>
        </form>
    }
}

#[component]
fn Actions(service: Service, changed: RwSignal<u64>) -> impl IntoView {
    let id = service.id;
    let replicas = RwSignal::new(service.replicas_desired.to_string());
    let image = RwSignal::new(service.image.clone());
    let error = RwSignal::new(None::<ApiError>);
    let done = RwSignal::new(None::<String>);
    let replicated = service.mode == "replicated";
    let set_image = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = UpdateService { replicas: None, image: Some(image.get_untracked()) };
        act(error, async move { api::patch::<Service>(&format!("/services/{id}"), &body).await }, move |_| {
            done.set(Some("Image update started.".into()));
            changed.update(|v| *v += 1);
        });
    };
    let restart = move |_| {
        act(error, async move { api::post_empty::<Service>(&format!("/services/{id}/restart")).await }, move |_| {
            done.set(Some("Restart started: tasks are replaced one by one.".into()))
        });
    };
    view! {
        <section class="card">
            <h2>"Change"</h2>
            <MaybeError error=error />
            {move || done.get().map(|d| view! { <p class="notice" role="status">{d}</p> })}
            {replicated.then(|| view! {
                <form class="form inline-form" on:submit=move |ev: leptos::ev::SubmitEvent| {
                    ev.prevent_default();
                    match replicas.get_untracked().trim().parse::<i32>() {
                        Ok(n) => scale(id, n, error, changed),
                        Err(_) => error.set(Some(ApiError::input("Replicas must be a whole number."))),
                    }
                }>
                    <label>"Replicas "<input type="number" min="0" id="replicas" prop:value=move || replicas.get()
                        on:input=move |ev| replicas.set(event_target_value(&ev)) /></label>
                    <button type="submit" id="scale">"Scale"</button>
                </form>
            })}
            <form class="form inline-form" on:submit=set_image>
                <label>"Image "<input type="text" id="image" class="wide" prop:value=move || image.get()
                    on:input=move |ev| image.set(event_target_value(&ev)) /></label>
                <button type="submit" id="set-image">"Update image"</button>
            </form>
            <p><button id="restart" on:click=restart>"Restart (rolling)"</button></p>
        </section>
    }
}

#[component]
fn Tasks(tasks: Vec<Container>, nodes: HashMap<Uuid, String>) -> impl IntoView {
    if tasks.is_empty() {
        return view! { <Empty>"No tasks yet."</Empty> }.into_any();
    }
    let mut tasks = tasks;
    tasks.sort_by(|a, b| (a.slot, b.created_at).cmp(&(b.slot, a.created_at)));
    view! {
        <div class="table-wrap">
        <table class="table" id="tasks">
            <thead><tr><th scope="col">"Slot"</th><th scope="col">"Node"</th><th scope="col">"State"</th><th scope="col">"Desired"</th>
                <th scope="col">"IP"</th><th scope="col">"Host ports"</th><th scope="col">"Exit"</th><th scope="col">"Message"</th><th scope="col">"Started"</th></tr></thead>
            <tbody>
                {tasks.into_iter().map(|t| {
                    let node = t.node_id.and_then(|n| nodes.get(&n).cloned()).unwrap_or_default();
                    let ports = t.host_ports.iter().map(|p| format!("{}→{}", p.published, p.target)).collect::<Vec<_>>().join(", ");
                    view! {
                        <tr>
                            <td>{t.slot.map(|s| s.to_string()).unwrap_or_default()}</td>
                            <td>{node}</td>
                            <td><Badge status=t.state.clone() /></td>
                            <td>{t.desired_state.clone()}</td>
                            <td class="mono">{t.addresses.join(", ")}</td>
                            <td>{ports}</td>
                            <td>{t.exit_code.filter(|_| t.state != "running").map(|c| c.to_string()).unwrap_or_default()}</td>
                            <td class:field-error=!t.error.is_empty()>{if t.error.is_empty() { t.message.clone() } else { t.error.clone() }}</td>
                            <td>{t.started_at.map(format::time).unwrap_or_default()}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }.into_any()
}

/// Most lines the viewer keeps (older ones scroll away).
const KEPT_LINES: usize = 2000;

/// Live logs of every task of the service, streamed while "Follow" is on.
#[component]
fn Logs(id: Uuid) -> impl IntoView {
    let lines = RwSignal::new(Vec::<LogLine>::new());
    let following = RwSignal::new(true);
    let paused = RwSignal::new(false);
    let filter = RwSignal::new(String::new());
    let held = StoredValue::new(Vec::<LogLine>::new());
    let error = RwSignal::new(None::<ApiError>);
    let controller = StoredValue::new_local(None::<web_sys::AbortController>);
    let stop = move || {
        if let Some(c) = controller.get_value() {
            c.abort();
        }
    };
    // When the last line shown arrived: a stream resumed after the tab was hidden starts from there
    // (the API takes whole seconds) and skips what was already shown.
    let last_at = StoredValue::new(None::<chrono::DateTime<chrono::FixedOffset>>);
    let start = move || {
        stop();
        let c = live::stream_controller();
        let signal = c.signal();
        controller.set_value(Some(c));
        let resume_after = last_at.get_value();
        let path = match resume_after {
            Some(t) => format!("/services/{id}/logs?follow=true&since={}&timestamps=true", t.timestamp()),
            None => {
                lines.set(Vec::new());
                format!("/services/{id}/logs?follow=true&tail=200&timestamps=true")
            }
        };
        leptos::task::spawn_local(async move {
            let result = live::read(
                &path,
                &signal,
                || (),
                |m| {
                    let Ok(line) = serde_json::from_str::<LogLine>(&m.data) else { return };
                    let at = line.timestamp.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                    if let (Some(at), Some(after)) = (at, resume_after)
                        && at <= after
                    {
                        return; // shown before the tab was hidden
                    }
                    if at.is_some() {
                        let _ = last_at.try_set_value(at);
                    }
                    // (`try_`: the page may be gone while the last chunk is read.)
                    if paused.try_get_untracked().unwrap_or(false) {
                        held.try_update_value(|h| h.push(line));
                        return;
                    }
                    lines.try_update(|l| {
                        l.push(line);
                        let excess = l.len().saturating_sub(KEPT_LINES);
                        l.drain(..excess);
                    });
                },
            )
            .await;
            if let Err(e) = result {
                let _ = error.try_set(Some(e));
            }
        });
    };
    // A hidden tab gives its stream back (see `live::seen`) and resumes where it was when seen again;
    // turning Follow off and on starts afresh.
    let seen = live::seen();
    Effect::new(move |_| {
        let follow = following.get();
        if follow && seen.get() {
            start()
        } else {
            if !follow {
                last_at.set_value(None);
            }
            stop()
        }
    });
    on_cleanup(stop);
    let resume = move || {
        let mut h = Vec::new();
        held.update_value(|v| h = std::mem::take(v));
        lines.update(|l| l.extend(h));
    };
    let shown = move || {
        let f = filter.get().to_lowercase();
        lines.with(|l| {
            l.iter()
                .filter(|x| f.is_empty() || x.line.to_lowercase().contains(&f))
                .map(render_line)
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    let save = move |_| {
        let text = lines.with(|l| l.iter().map(render_line).collect::<Vec<_>>().join("\n"));
        download(&format!("service-{id}.log"), "text/plain", &text);
    };
    view! {
        <section class="card">
            <h2>"Logs"</h2>
            <div class="actions">
                <label class="inline"><input type="checkbox" id="follow" prop:checked=move || following.get()
                    on:change=move |ev| following.set(event_target_checked(&ev)) />" Follow"</label>
                <button id="pause" on:click=move |_| { if paused.get_untracked() { resume() } paused.update(|p| *p = !*p); }>
                    {move || if paused.get() { "Resume" } else { "Pause" }}
                </button>
                <label>"Filter "<input type="search" id="log-filter" prop:value=move || filter.get()
                    on:input=move |ev| filter.set(event_target_value(&ev)) /></label>
                <button id="download-logs" on:click=save>"Download"</button>
            </div>
            <MaybeError error=error />
            <pre class="logs" id="logs" role="log" tabindex="0" aria-label="Service logs" aria-live="off">{shown}</pre>
        </section>
    }
}

fn render_line(l: &LogLine) -> String {
    let task = l.slot.map(|s| format!(".{s}")).unwrap_or_default();
    let at = l.timestamp.as_deref().map(|t| t.get(..19).unwrap_or(t).replace('T', " ")).unwrap_or_default();
    format!("{at} {task}{} {}", if l.stream == "stderr" { " !" } else { "" }, l.line)
}
