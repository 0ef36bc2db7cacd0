//! Load balancers: the list with a create form, and a balancer's page (its address, its listeners with
//! where each answers and what went through them, adding and removing listeners, deleting the
//! balancer). Listeners are set whole
//! through `PUT /load-balancers/{id}/listeners`: the page sends the list as it should become.

use berth_types::{Application, Cluster, CreateLoadBalancer, Listener, LoadBalancer, Page, Role, Service, SetListeners};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};
use uuid::Uuid;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{Empty, MaybeError, PageHeader, TypedConfirm, act, loaded};
use crate::format;

#[component]
pub fn BalancerList() -> impl IntoView {
    let s = session();
    let dev = s.can(Role::Developer);
    let version = RwSignal::new(0u32);
    let balancers = LocalResource::new(move || {
        version.get();
        api::get::<Page<LoadBalancer>>("/load-balancers?limit=500")
    });
    let clusters = LocalResource::new(|| api::get::<Page<Cluster>>("/clusters?limit=500"));
    let name = RwSignal::new(String::new());
    let cluster = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let navigate = use_navigate();
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let Ok(cluster_id) = cluster.get_untracked().parse::<Uuid>() else { return };
        let body = CreateLoadBalancer { name: name.get_untracked(), cluster_id, listeners: Vec::new() };
        let navigate = navigate.clone();
        act(error, async move { api::post::<LoadBalancer>("/load-balancers", &body).await }, move |lb| {
            navigate(&format!("/load-balancers/{}", lb.id), Default::default())
        });
    };
    view! {
        <PageHeader title="Load balancers" />
        <p class="hint">"A load balancer takes connections on its own ports and forwards them to a service's tasks, "
            "following them as they scale and move: HTTP requests balanced one by one, or TCP connections."</p>
        {dev.then(|| view! {
            <section class="card">
                <h2>"New load balancer"</h2>
                <form class="form inline-form" on:submit=create>
                    <MaybeError error=error />
                    <label>"Name "<input type="text" id="balancer-name" required
                        prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) /></label>
                    <label>"Cluster "
                        <select id="balancer-cluster" required on:change=move |ev| cluster.set(event_target_value(&ev))>
                            <option value="">"Choose…"</option>
                            {move || clusters.get().and_then(Result::ok).map(|p| p.items.into_iter().map(|c| {
                                view! { <option value=c.id.to_string()>{c.name}</option> }
                            }).collect_view())}
                        </select>
                    </label>
                    <button type="submit" class="primary" id="create-balancer">"Create"</button>
                </form>
            </section>
        })}
        {loaded(balancers, |page: Page<LoadBalancer>| {
            if page.items.is_empty() {
                return view! { <Empty>"No load balancers."</Empty> }.into_any();
            }
            view! {
                <div class="table-wrap"><table class="table" id="balancers">
                    <thead><tr><th scope="col">"Name"</th><th scope="col">"Address"</th><th scope="col">"Listeners"</th>
                        <th scope="col">"Created"</th></tr></thead>
                    <tbody>
                        {page.items.into_iter().map(|lb| view! {
                            <tr>
                                <td><A href=format!("/load-balancers/{}", lb.id)>{lb.name}</A></td>
                                <td><code>{lb.address}</code></td>
                                <td>{if lb.listeners.is_empty() { "none".to_owned() } else {
                                    lb.listeners.iter().map(|l| format!("{}/{}", l.port, l.protocol)).collect::<Vec<_>>().join(", ")
                                }}</td>
                                <td>{format::time(lb.created_at)}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table></div>
            }.into_any()
        })}
    }
}

/// The services of the balancer's cluster, by id, with the ports they expose.
async fn cluster_services(cluster: Uuid) -> Result<Vec<(Service, String)>, ApiError> {
    let apps = api::get::<Page<Application>>("/applications?limit=500").await?;
    let mut out = Vec::new();
    for app in apps.items.into_iter().filter(|a| a.cluster_id == cluster) {
        let services = api::get::<Page<Service>>(&format!("/applications/{}/services?limit=500", app.id)).await?;
        out.extend(services.items.into_iter().filter(|s| s.release_id.is_none()).map(|s| (s, app.name.clone())));
    }
    Ok(out)
}

#[component]
pub fn BalancerPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|v| v.parse::<Uuid>().ok()));
    let version = RwSignal::new(0u32);
    let balancer = LocalResource::new(move || {
        version.get();
        let id = id();
        async move {
            match id {
                Some(id) => api::get::<LoadBalancer>(&format!("/load-balancers/{id}")).await,
                None => Err(crate::pages::applications::not_found()),
            }
        }
    });
    view! { {loaded(balancer, move |lb: LoadBalancer| view! { <Balancer lb=lb version=version /> })} }
}

#[component]
fn Balancer(lb: LoadBalancer, version: RwSignal<u32>) -> impl IntoView {
    let s = session();
    let dev = s.can(Role::Developer);
    let error = RwSignal::new(None::<ApiError>);
    let services = LocalResource::new(move || cluster_services(lb.cluster_id));
    let cluster = LocalResource::new(move || async move { api::get::<Cluster>(&format!("/clusters/{}", lb.cluster_id)).await });
    let cluster_name =
        Signal::derive(move || cluster.get().and_then(Result::ok).map(|c| c.name).unwrap_or_else(|| lb.cluster_id.to_string()));
    let listeners = StoredValue::new(lb.listeners.clone());
    let set = move |next: Vec<Listener>| {
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::put::<LoadBalancer>(&format!("/load-balancers/{}/listeners", lb.id), &SetListeners { listeners: next })
                .await
            {
                Ok(_) => version.update(|v| *v += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let (port, protocol, service, target) = (
        RwSignal::new(String::new()),
        RwSignal::new("http".to_owned()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
    );
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (Ok(port), Ok(service_id), Ok(target_port)) =
            (port.get_untracked().trim().parse(), service.get_untracked().parse(), target.get_untracked().trim().parse())
        else {
            error.set(Some(ApiError::input("Give a port, a service and its target port.")));
            return;
        };
        let mut next = listeners.get_value();
        next.push(Listener { port, protocol: protocol.get_untracked(), service_id, target_port });
        set(next);
    };
    let navigate = use_navigate();
    let delete = Callback::new(move |()| {
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/load-balancers/{}", lb.id)).await {
                Ok(()) => navigate("/load-balancers", Default::default()),
                Err(e) => error.set(Some(e)),
            }
        });
    });
    let address = lb.address.clone();
    view! {
        <PageHeader title=lb.name.clone() />
        <MaybeError error=error />
        <dl class="facts">
            <dt>"Address"</dt><dd><code id="balancer-address">{lb.address.clone()}</code></dd>
            <dt>"Driver"</dt><dd>{lb.driver.clone()}</dd>
            <dt>"Cluster"</dt><dd><A href=format!("/clusters/{}", lb.cluster_id)>{move || cluster_name.get()}</A></dd>
            <dt>"Created"</dt><dd>{format::time(lb.created_at)}</dd>
        </dl>
        <section class="card">
            <h2>"Listeners"</h2>
            {if lb.listeners.is_empty() {
                view! { <Empty>"No listeners: the balancer takes no connections yet."</Empty> }.into_any()
            } else {
                let rows = lb.listeners.clone();
                let traffic = lb.traffic.clone();
                view! {
                    <div class="table-wrap"><table class="table" id="listeners">
                        <thead><tr><th scope="col">"Port"</th><th scope="col">"Protocol"</th><th scope="col">"Service"</th>
                            <th scope="col">"Target port"</th><th scope="col">"Reach it at"</th><th scope="col">"Traffic"</th>
                            {dev.then(|| view! { <th scope="col">"Actions"</th> })}</tr></thead>
                        <tbody>
                            {rows.into_iter().map(|l| {
                                let name = move || services.get().and_then(Result::ok).and_then(|all| {
                                    all.iter().find(|(s, _)| s.id == l.service_id).map(|(s, app)| format!("{app} / {}", s.name))
                                }).unwrap_or_else(|| l.service_id.to_string());
                                let at = if l.protocol == "http" { format!("http://{address}:{}/", l.port) } else { format!("{address}:{}", l.port) };
                                let label = format!("Remove listener {}", l.port);
                                let keep = listeners.get_value().into_iter().filter(|o| o.port != l.port).collect::<Vec<_>>();
                                // A TCP listener counts connections; only HTTP has answers and their times.
                                let t = traffic.iter().find(|t| t.port == l.port).map(|t| t.traffic.clone()).unwrap_or_default();
                                let seen = if l.protocol == "http" {
                                    format!("{:.1} req/s, {:.1} 5xx/s, {} ms; {} requests in all", t.requests_per_sec,
                                        t.errors_per_sec, t.response_ms, t.requests_total)
                                } else {
                                    format!("{:.1} connections/s; {} in all, {} failed", t.requests_per_sec, t.requests_total,
                                        t.failed_connections_total)
                                };
                                view! {
                                    <tr data-port=l.port.to_string()>
                                        <td>{l.port}</td>
                                        <td>{l.protocol.clone()}</td>
                                        <td><A href=format!("/services/{}", l.service_id)>{name}</A></td>
                                        <td>{l.target_port}</td>
                                        <td><code>{at}</code></td>
                                        <td class="traffic">{seen}</td>
                                        {dev.then(|| view! {
                                            <td><button class="remove" aria-label=label on:click=move |_| set(keep.clone())>"Remove"</button></td>
                                        })}
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table></div>
                }.into_any()
            }}
            {dev.then(|| view! {
                <form class="form inline-form" id="add-listener" on:submit=add>
                    <label>"Port "<input type="number" id="listener-port" required min="1" max="65535"
                        prop:value=move || port.get() on:input=move |ev| port.set(event_target_value(&ev)) /></label>
                    <label>"Protocol "
                        <select id="listener-protocol" prop:value=move || protocol.get()
                            on:change=move |ev| protocol.set(event_target_value(&ev))>
                            <option value="http">"http"</option>
                            <option value="tcp">"tcp"</option>
                        </select>
                    </label>
                    <label>"Service "
                        <select id="listener-service" required on:change=move |ev| {
                            let id = event_target_value(&ev);
                            // The target defaults to the service's first exposed port.
                            let first = services.get().and_then(Result::ok).and_then(|all| {
                                all.iter().find(|(s, _)| s.id.to_string() == id).and_then(|(s, _)| s.ports.first().map(|p| p.target))
                            });
                            if let Some(p) = first { target.set(p.to_string()) }
                            service.set(id);
                        }>
                            <option value="">"Choose…"</option>
                            {move || services.get().and_then(Result::ok).map(|all| all.into_iter().map(|(s, app)| {
                                view! { <option value=s.id.to_string()>{format!("{app} / {}", s.name)}</option> }
                            }).collect_view())}
                        </select>
                    </label>
                    <label>"Target port "<input type="number" id="listener-target" required min="1" max="65535"
                        prop:value=move || target.get() on:input=move |ev| target.set(event_target_value(&ev)) /></label>
                    <button type="submit" class="primary" id="add-listener-submit">"Add listener"</button>
                </form>
            })}
        </section>
        {dev.then(|| view! {
            <section class="card">
                <h2>"Delete"</h2>
                <p>"Deleting the balancer closes its ports."</p>
                <TypedConfirm name=lb.name.clone() action="Delete load balancer" on_confirm=delete id="delete-balancer" />
            </section>
        })}
    }
}
