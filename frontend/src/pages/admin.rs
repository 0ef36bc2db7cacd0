//! Platform administration: tenants (create, suspend and resume, quotas, admission policy) and the
//! routers at work.

use berth_types::{AdmissionPolicy, CreateTenant, CreatedTenant, Page, QuotaReport, Quotas, Router, Tenant, TenantStatus};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use uuid::Uuid;

use crate::pages::dashboard::QuotaUsage;

use crate::api::{self, ApiError};
use crate::components::{Badge, Empty, MaybeError, PageHeader, act, every, loaded};
use crate::format;

#[component]
pub fn Tenants() -> impl IntoView {
    let version = RwSignal::new(0u32);
    let tenants = LocalResource::new(move || {
        version.get();
        api::get::<Page<Tenant>>("/admin/tenants?limit=500")
    });
    let error = RwSignal::new(None::<ApiError>);
    let (name, email, password) = (RwSignal::new(String::new()), RwSignal::new(String::new()), RwSignal::new(String::new()));
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let body = CreateTenant {
            name: name.get_untracked(),
            owner_email: email.get_untracked(),
            owner_password: password.get_untracked(),
        };
        act(error, async move { api::post::<CreatedTenant>("/admin/tenants", &body).await }, move |_| {
            for s in [name, email, password] {
                s.set(String::new());
            }
            version.update(|v| *v += 1);
        });
    };
    let toggle = move |id: Uuid, suspend: bool| {
        act(
            error,
            async move {
                let path = format!("/admin/tenants/{id}/{}", if suspend { "suspend" } else { "resume" });
                api::post::<Tenant>(&path, &serde_json::json!({})).await
            },
            move |_| version.update(|v| *v += 1),
        );
    };
    view! {
        <PageHeader title="Tenants" />
        <MaybeError error=error />
        <section class="card">
            <h2>"New tenant"</h2>
            <form class="form" on:submit=create>
                <label for="tenant-name">"Name"</label>
                <input id="tenant-name" required prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                <label for="owner-email">"Owner's e-mail"</label>
                <input id="owner-email" type="email" required prop:value=move || email.get() on:input=move |ev| email.set(event_target_value(&ev)) />
                <label for="owner-password">"Owner's first password"</label>
                <input id="owner-password" type="password" autocomplete="new-password" required prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev)) />
                <button type="submit" class="primary" id="create-tenant">"Create tenant"</button>
            </form>
        </section>
        {loaded(tenants, move |page: Page<Tenant>| {
            if page.items.is_empty() {
                return view! { <Empty>"No tenants yet."</Empty> }.into_any();
            }
            view! {
                <table class="table" id="tenants">
                    <thead><tr><th scope="col">"Name"</th><th scope="col">"Slug"</th><th scope="col">"Status"</th>
                        <th scope="col">"Created"</th><th scope="col">"Actions"</th></tr></thead>
                    <tbody>
                        {page.items.into_iter().map(|t| {
                            let id = t.id;
                            let active = t.status == TenantStatus::Active;
                            view! {
                                <tr data-tenant=t.slug.clone()>
                                    <td><A href=format!("/admin/tenants/{id}")>{t.name.clone()}</A></td>
                                    <td><code>{t.slug.clone()}</code></td>
                                    <td><Badge status=t.status.as_str() /></td>
                                    <td>{format::time(t.created_at)}</td>
                                    <td class="row-actions">
                                        <button on:click=move |_| toggle(id, active)>{if active { "Suspend" } else { "Resume" }}</button>
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        })}
    }
}

/// One tenant: its state, quota usage and quotas, and its admission policy.
#[component]
pub fn TenantPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|s| s.parse::<Uuid>().ok()));
    let data = LocalResource::new(move || {
        let id = id();
        async move {
            let id = id.ok_or_else(crate::pages::applications::not_found)?;
            let (t, q, p) = (
                format!("/admin/tenants/{id}"),
                format!("/admin/tenants/{id}/quotas"),
                format!("/admin/tenants/{id}/admission-policy"),
            );
            let (tenant, report, policy) =
                futures_util::join!(api::get::<Tenant>(&t), api::get::<QuotaReport>(&q), api::get::<AdmissionPolicy>(&p));
            Ok::<_, ApiError>((tenant?, report?, policy?))
        }
    });
    view! {
        {loaded(data, |(tenant, report, policy): (Tenant, QuotaReport, AdmissionPolicy)| view! {
            <PageHeader title=tenant.name.clone() />
            <dl class="facts">
                <dt>"Slug"</dt><dd><code>{tenant.slug.clone()}</code></dd>
                <dt>"Status"</dt><dd><Badge status=tenant.status.as_str() /></dd>
                <dt>"Created"</dt><dd>{format::time(tenant.created_at)}</dd>
            </dl>
            <QuotaUsage report=report.clone() />
            <QuotaForm id=tenant.id quotas=report.quotas />
            <PolicyForm id=tenant.id policy=policy />
        })}
    }
}

/// The tenant's admission policy: what its Compose files may ask of the nodes.
#[component]
fn PolicyForm(id: Uuid, policy: AdmissionPolicy) -> impl IntoView {
    let flags = [
        ("allow_bind_mounts", "Bind mounts of node paths", RwSignal::new(policy.allow_bind_mounts)),
        ("allow_docker_socket", "The Docker socket", RwSignal::new(policy.allow_docker_socket)),
        (
            "allow_host_access",
            "Host network, PID and IPC namespaces, devices, privileged",
            RwSignal::new(policy.allow_host_access),
        ),
        ("allow_manager_placement", "Placement on manager nodes", RwSignal::new(policy.allow_manager_placement)),
    ];
    let caps = RwSignal::new(policy.allowed_capabilities.join(", "));
    let memory = RwSignal::new(policy.default_memory_limit_mb.to_string());
    let error = RwSignal::new(None::<ApiError>);
    let saved = RwSignal::new(false);
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        saved.set(false);
        let get = |i: usize| flags[i].2.get_untracked();
        let body = AdmissionPolicy {
            allow_bind_mounts: get(0),
            allow_docker_socket: get(1),
            allow_host_access: get(2),
            allow_manager_placement: get(3),
            allowed_capabilities: caps
                .get_untracked()
                .split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect(),
            default_memory_limit_mb: memory.get_untracked().trim().parse().unwrap_or(-1),
        };
        act(
            error,
            async move { api::put::<AdmissionPolicy>(&format!("/admin/tenants/{id}/admission-policy"), &body).await },
            move |_| saved.set(true),
        );
    };
    view! {
        <section class="card" id="admission-policy">
            <h2>"Admission policy"</h2>
            <p class="hint">"What this tenant's applications may ask of the nodes. Everything is refused by default."</p>
            <form class="form" on:submit=save>
                <MaybeError error=error />
                <fieldset>
                    <legend>"Allow"</legend>
                    {flags.into_iter().map(|(key, label, value)| view! {
                        <label class="inline"><input type="checkbox" id=key prop:checked=move || value.get()
                            on:change=move |ev| value.set(event_target_checked(&ev)) />" "{label}</label>
                    }).collect_view()}
                </fieldset>
                <label for="allowed-capabilities">"Capabilities services may add (comma-separated)"</label>
                <input id="allowed-capabilities" placeholder="NET_ADMIN, SYS_TIME" prop:value=move || caps.get() on:input=move |ev| caps.set(event_target_value(&ev)) />
                <label for="default-memory">"Memory limit when a service sets none (MiB)"</label>
                <input id="default-memory" inputmode="numeric" prop:value=move || memory.get() on:input=move |ev| memory.set(event_target_value(&ev)) />
                <button type="submit" class="primary" id="save-policy">"Save policy"</button>
                {move || saved.get().then(|| view! { <p class="notice" role="status">"Saved."</p> })}
            </form>
        </section>
    }
}

#[component]
fn QuotaForm(id: Uuid, quotas: Quotas) -> impl IntoView {
    let num = |v: Option<String>| RwSignal::new(v.unwrap_or_default());
    let fields = [
        ("max_clusters", "Clusters", num(quotas.max_clusters.map(|v| v.to_string()))),
        ("max_nodes", "Nodes", num(quotas.max_nodes.map(|v| v.to_string()))),
        ("max_applications", "Applications", num(quotas.max_applications.map(|v| v.to_string()))),
        ("max_services", "Services", num(quotas.max_services.map(|v| v.to_string()))),
        ("max_cpus", "CPUs", num(quotas.max_cpus.map(|v| v.to_string()))),
        ("max_memory_mb", "Memory (MiB)", num(quotas.max_memory_mb.map(|v| v.to_string()))),
        ("max_image_storage_mb", "Image storage (MiB)", num(quotas.max_image_storage_mb.map(|v| v.to_string()))),
    ];
    let error = RwSignal::new(None::<ApiError>);
    let saved = RwSignal::new(false);
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let mut body = serde_json::Map::new();
        for (key, _, value) in fields {
            let v = value.get_untracked();
            let v = v.trim();
            body.insert(
                key.into(),
                if v.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::from_str(v).unwrap_or(serde_json::Value::String(v.into()))
                },
            );
        }
        act(
            error,
            async move { api::put::<serde_json::Value>(&format!("/admin/tenants/{id}/quotas"), &body).await },
            move |_| saved.set(true),
        );
    };
    view! {
        <section class="card" id="quota-editor">
            <h2>"Quotas"</h2>
            <p class="hint">"Leave a field empty for no limit."</p>
            <form class="form" on:submit=save>
                <MaybeError error=error />
                {fields.into_iter().map(|(key, label, value)| view! {
                    <label for=key>{label}</label>
                    <input id=key inputmode="decimal" prop:value=move || value.get() on:input=move |ev| value.set(event_target_value(&ev)) />
                }).collect_view()}
                <button type="submit" class="primary" id="save-quotas">"Save quotas"</button>
                {move || saved.get().then(|| view! { <p class="notice" role="status">"Saved."</p> })}
            </form>
        </section>
    }
}

/// The routers Berth keeps in step with the route table: which serve the newest table, which keep an
/// older one because the newest could not be applied (and why), which were stopped and which are
/// gone. Reloaded every few seconds (routers report every two; nothing announces them on the event
/// stream).
#[component]
pub fn Routers() -> impl IntoView {
    let tick = every(std::time::Duration::from_secs(5));
    let routers = LocalResource::new(move || {
        tick.get();
        api::get::<Vec<Router>>("/admin/routers")
    });
    view! {
        <PageHeader title="Routers" />
        <p class="muted">"Each router is an HAProxy that Berth keeps in step with the route table: "
            <code>"berth router"</code>" on a machine of its own, or the one "<code>"berth serve"</code>" runs."</p>
        {loaded(routers, move |list: Vec<Router>| {
            if list.is_empty() {
                return view! { <Empty>"No router has reported in the last day. Start one with "<code>"berth router"</code>"."</Empty> }.into_any();
            }
            let now = chrono::Utc::now();
            view! {
                <div class="table-wrap"><table class="table" id="routers">
                    <thead><tr><th scope="col">"Router"</th><th scope="col">"State"</th><th scope="col">"Last seen"</th>
                        <th scope="col">"Route table read at"</th><th scope="col">"Problem"</th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|r| view! {
                            <tr data-router=r.name.clone()>
                                <td><code>{r.name.clone()}</code></td>
                                <td><Badge status=r.state.as_str() /></td>
                                <td>{format::ago(r.seen_at, now)}</td>
                                <td>{format::time(r.applied_at)}</td>
                                <td class="error-finding">{r.error.clone().unwrap_or_default()}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table></div>
            }.into_any()
        })}
    }
}
