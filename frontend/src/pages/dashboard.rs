//! The first page: for a tenant's people, their clusters, nodes, applications and services at a
//! glance with health, quota usage and the latest events; for the platform admin, the tenants.

use berth_types::{Application, Cluster, Node, Page, QuotaReport, Service};
use leptos::prelude::*;
use leptos_router::components::A;

use crate::api::{self, ApiResult};
use crate::app::session;
use crate::components::{Badge, Empty, loaded};
use crate::format;
use crate::live;

#[component]
pub fn Home() -> impl IntoView {
    if session().platform_admin() { view! { <super::admin::Tenants /> }.into_any() } else { view! { <Dashboard /> }.into_any() }
}

#[derive(Clone, PartialEq)]
struct Overview {
    clusters: Vec<Cluster>,
    nodes: Vec<Node>,
    applications: Vec<Application>,
    services: Vec<Service>,
    quotas: QuotaReport,
}

async fn overview() -> ApiResult<Overview> {
    let (clusters, applications, quotas) = futures_util::join!(
        api::get::<Page<Cluster>>("/clusters?limit=500"),
        api::get::<Page<Application>>("/applications?limit=500"),
        api::get::<QuotaReport>("/quotas"),
    );
    let (clusters, applications) = (clusters?.items, applications?.items);
    let nodes = futures_util::future::join_all(clusters.iter().map(|c| {
        let path = format!("/clusters/{}/nodes?limit=500", c.id);
        async move { api::get::<Page<Node>>(&path).await }
    }));
    let services = futures_util::future::join_all(applications.iter().map(|a| {
        let path = format!("/applications/{}/services?limit=500", a.id);
        async move { api::get::<Page<Service>>(&path).await }
    }));
    let (nodes, services) = futures_util::join!(nodes, services);
    // A cluster or application deleted meanwhile is simply left out.
    let nodes = nodes.into_iter().filter_map(Result::ok).flat_map(|p| p.items).collect();
    let services = services.into_iter().filter_map(Result::ok).flat_map(|p| p.items).collect();
    Ok(Overview { clusters, nodes, applications, services, quotas: quotas? })
}

/// `n ready of m` style counts by status word.
fn tally<'a>(statuses: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for s in statuses {
        *counts.entry(s.to_owned()).or_default() += 1;
    }
    counts.into_iter().collect()
}

#[component]
fn Tally(title: &'static str, href: &'static str, total: usize, counts: Vec<(String, usize)>) -> impl IntoView {
    view! {
        <section class="card tally">
            <h2><A href=href>{title}</A></h2>
            <p class="big">{total}</p>
            <ul class="counts">
                {counts.into_iter().map(|(s, n)| view! { <li><Badge status=s />" "{n}</li> }).collect_view()}
            </ul>
        </section>
    }
}

#[component]
fn Dashboard() -> impl IntoView {
    let changed = live::changes(|_| true);
    let data = LocalResource::new(move || {
        changed.get();
        overview()
    });
    view! {
        <h1>"Dashboard"</h1>
        {loaded(data, |o: Overview| {
            // A user-timing mark once the data is on screen (the console benchmark reads it).
            request_animation_frame(|| {
                if let Some(p) = web_sys::window().and_then(|w| w.performance()) {
                    let _ = p.mark("berth:dashboard-data");
                }
            });
            let nodes_down = o.nodes.iter().filter(|n| n.state.as_str() != "ready").count();
            let services_short = o.services.iter().filter(|s| s.replicas_running < s.replicas_desired).count();
            view! {
                <div class="grid">
                    <Tally title="Clusters" href="/clusters" total=o.clusters.len() counts=tally(o.clusters.iter().map(|c| c.status.as_str())) />
                    <Tally title="Nodes" href="/clusters" total=o.nodes.len() counts=tally(o.nodes.iter().map(|n| n.state.as_str())) />
                    <Tally title="Applications" href="/applications" total=o.applications.len() counts=tally(o.applications.iter().map(|a| a.status.as_str())) />
                    <Tally title="Services" href="/applications" total=o.services.len() counts=tally(o.services.iter().map(|s| s.status.as_str())) />
                </div>
                {(nodes_down > 0 || services_short > 0).then(|| view! {
                    <p class="warning" role="status">
                        {format!("{nodes_down} node(s) not ready, {services_short} service(s) below their desired replicas.")}
                    </p>
                })}
                <QuotaUsage report=o.quotas />
            }
        })}
        <RecentEvents changed=changed />
    }
}

#[component]
pub fn QuotaUsage(report: QuotaReport) -> impl IntoView {
    let (q, u) = (report.quotas, report.usage);
    let rows = vec![
        ("Clusters", format::usage(u.clusters as f64, q.max_clusters.map(f64::from), "")),
        ("Nodes", format::usage(u.nodes as f64, q.max_nodes.map(f64::from), "")),
        ("Applications", format::usage(u.applications as f64, q.max_applications.map(f64::from), "")),
        ("Services", format::usage(u.services as f64, q.max_services.map(f64::from), "")),
        ("CPUs reserved", format::usage(u.cpus, q.max_cpus, "")),
        ("Memory reserved (MiB)", format::usage(u.memory_mb as f64, q.max_memory_mb.map(|m| m as f64), "")),
        (
            "Image storage (MiB)",
            format::usage(u.image_storage_bytes as f64 / 1_048_576.0, q.max_image_storage_mb.map(|m| m as f64), ""),
        ),
    ];
    view! {
        <section class="card">
            <h2>"Quota usage"</h2>
            <dl class="quotas">
                {rows.into_iter().map(|(name, (text, fraction))| view! {
                    <dt>{name}</dt>
                    <dd>
                        {fraction.map(|f| view! { <meter min="0" max="1" low="0.7" high="0.9" optimum="0" prop:value=f aria-label=name></meter> })}
                        " "{text.trim_end().to_owned()}
                    </dd>
                }).collect_view()}
            </dl>
        </section>
    }
}

#[component]
fn RecentEvents(changed: RwSignal<u64>) -> impl IntoView {
    // What happened before this page opened, then whatever the stream brings.
    let earlier = LocalResource::new(|| api::get::<Vec<berth_types::Event>>("/events/recent?limit=15"));
    let now = move || {
        changed.get();
        chrono::Utc::now()
    };
    view! {
        <section class="card">
            <h2>"Recent events"</h2>
            {move || {
                let mut events = { changed.get(); live::recent() };
                let seen: std::collections::HashSet<i64> = events.iter().map(|e| e.id).collect();
                let before = earlier.get().and_then(Result::ok).unwrap_or_default();
                events.extend(before.into_iter().filter(|e| !seen.contains(&e.id)));
                events.sort_by_key(|e| std::cmp::Reverse(e.id));
                if events.is_empty() {
                    return view! { <Empty>"No events yet. Changes to clusters, nodes, applications and jobs appear here as they happen."</Empty> }.into_any();
                }
                let now = now();
                view! {
                    <ul class="events" id="recent-events">
                        {events.into_iter().take(15).map(|e| view! {
                            <li><code>{e.kind.clone()}</code>" "{e.target_type.clone()}" "
                                <span class="muted">{format::ago(e.at, now)}</span></li>
                        }).collect_view()}
                    </ul>
                }.into_any()
            }}
        </section>
    }
}
