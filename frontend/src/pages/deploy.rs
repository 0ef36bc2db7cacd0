//! Deploy: pick a template (the built-in gallery or the tenant's own, at a version), fill the form its
//! variables make (defaults filled in, required ones marked), pick a cluster, see what it would deploy
//! (services, reservations, routes, quota impact: `POST /applications/preview`), and deploy.

use std::collections::BTreeMap;

use berth_types::{
    Application, ApplicationPreview, Cluster, ClusterStatus, CreateApplication, GalleryTemplate, Page, Template,
    TemplateVariable, TemplateVersion,
};
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};
use uuid::Uuid;

use crate::api::{self, ApiError};
use crate::components::{Empty, MaybeError, PageHeader, loaded};

/// What the form deploys.
#[derive(Clone, PartialEq)]
enum Source {
    Gallery(String),
    Template(Uuid),
}

#[derive(Clone, PartialEq)]
struct Choices {
    gallery: Vec<GalleryTemplate>,
    templates: Vec<Template>,
    clusters: Vec<Cluster>,
}

async fn choices() -> Result<Choices, ApiError> {
    let (gallery, templates, clusters) = futures_util::join!(
        api::get::<Page<GalleryTemplate>>("/gallery"),
        api::get::<Page<Template>>("/templates?limit=500"),
        api::get::<Page<Cluster>>("/clusters?limit=500"),
    );
    Ok(Choices { gallery: gallery?.items, templates: templates?.items, clusters: clusters?.items })
}

#[component]
pub fn Deploy() -> impl IntoView {
    let data = LocalResource::new(choices);
    view! {
        <PageHeader title="Deploy an application" />
        {loaded(data, |c: Choices| view! { <DeployForm choices=c /> })}
    }
}

#[component]
fn DeployForm(choices: Choices) -> impl IntoView {
    let query = use_query_map();
    let initial = query.with_untracked(|q| {
        q.get("gallery").map(Source::Gallery).or_else(|| q.get("template").and_then(|t| t.parse().ok()).map(Source::Template))
    });
    let choices = StoredValue::new(choices);
    let source =
        RwSignal::new(initial.or_else(|| choices.with_value(|c| c.gallery.first().map(|g| Source::Gallery(g.name.clone())))));
    let version = RwSignal::new(None::<i32>);
    let name = RwSignal::new(String::new());
    let cluster =
        RwSignal::new(choices.with_value(|c| c.clusters.iter().find(|c| c.status == ClusterStatus::Ready).map(|c| c.id)));
    let values = RwSignal::new(BTreeMap::<String, String>::new());
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();

    // The chosen template's variables at the chosen version (and its latest version).
    let spec = LocalResource::new(move || {
        let (source, version) = (source.get(), version.get());
        async move {
            match source {
                Some(Source::Gallery(g)) => {
                    let g = api::get::<GalleryTemplate>(&format!("/gallery/{g}")).await?;
                    Ok::<_, ApiError>(Some((g.variables, None)))
                }
                Some(Source::Template(id)) => {
                    let t = api::get::<Template>(&format!("/templates/{id}")).await?;
                    match version {
                        Some(v) if v != t.version => {
                            let tv = api::get::<TemplateVersion>(&format!("/templates/{id}/versions/{v}")).await?;
                            Ok(Some((tv.variables, Some(t.version))))
                        }
                        _ => Ok(Some((t.variables, Some(t.version)))),
                    }
                }
                None => Ok(None),
            }
        }
    });
    // Defaults fill the form whenever the template changes.
    Effect::new(move |_| {
        if let Some(Ok(Some((vars, _)))) = spec.get() {
            values.set(vars.iter().map(|(k, v)| (k.clone(), v.default.clone().unwrap_or_default())).collect());
        }
    });

    // The request the form stands for (tracked: the preview follows it), `None` without a cluster.
    let request = move || {
        let cluster_id = cluster.get()?;
        let (gallery, template_id) = match source.get() {
            Some(Source::Gallery(g)) => (Some(g), None),
            Some(Source::Template(t)) => (None, Some(t)),
            None => (None, None),
        };
        Some(CreateApplication {
            name: name.get(),
            cluster_id,
            template_id,
            gallery,
            template_version: if template_id.is_some() { version.get() } else { None },
            compose: None,
            files: BTreeMap::new(),
            variables: values.get().into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        })
    };
    let preview = debounced_preview(request);

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let Some(body) = untrack(request) else {
            error.set(Some(ApiError::input("Pick a cluster to deploy to.")));
            return;
        };
        busy.set(true);
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match api::post::<Application>("/applications", &body).await {
                Ok(app) => navigate(&format!("/applications/{}", app.id), Default::default()),
                Err(e) => {
                    error.set(Some(e));
                    busy.set(false);
                }
            }
        });
    };

    let ready_clusters =
        choices.with_value(|c| c.clusters.iter().filter(|c| c.status == ClusterStatus::Ready).cloned().collect::<Vec<_>>());
    if ready_clusters.is_empty() {
        return view! { <Empty>"No ready cluster to deploy to. Create a cluster first (or wait for one to become ready)."</Empty> }.into_any();
    }
    let source_key = move || match source.get() {
        Some(Source::Gallery(g)) => format!("gallery:{g}"),
        Some(Source::Template(t)) => format!("template:{t}"),
        None => String::new(),
    };
    view! {
        <form class="form" on:submit=submit>
            <MaybeError error=error />
            <label for="template">"Template"</label>
            <select id="template" prop:value=source_key on:change=move |ev| {
                let v = event_target_value(&ev);
                version.set(None);
                source.set(match v.split_once(':') {
                    Some(("gallery", g)) => Some(Source::Gallery(g.to_owned())),
                    Some(("template", t)) => t.parse().ok().map(Source::Template),
                    _ => None,
                });
            }>
                <optgroup label="Gallery">
                    {choices.with_value(|c| c.gallery.iter().map(|g| view! {
                        <option value=format!("gallery:{}", g.name)>{format!("{} — {}", g.name, g.description)}</option>
                    }).collect_view())}
                </optgroup>
                <optgroup label="Your templates">
                    {choices.with_value(|c| c.templates.iter().map(|t| view! {
                        <option value=format!("template:{}", t.id)>{format!("{} (version {})", t.name, t.version)}</option>
                    }).collect_view())}
                </optgroup>
            </select>
            {move || match (source.get(), spec.get()) {
                (Some(Source::Template(_)), Some(Ok(Some((_, Some(latest)))))) => Some(view! {
                    <label for="version">"Version"</label>
                    <select id="version" on:change=move |ev| version.set(event_target_value(&ev).parse().ok())>
                        {(1..=latest).rev().map(|v| view! { <option value=v.to_string() selected=version.get_untracked().unwrap_or(latest) == v>{format!("version {v}")}</option> }).collect_view()}
                    </select>
                }),
                _ => None,
            }}
            <label for="app-name">"Application name"</label>
            <input id="app-name" required placeholder="my-app" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
            {move || error.get().and_then(|e| e.field("name")).map(|m| view! { <p class="field-error">{m}</p> })}
            <label for="cluster">"Cluster"</label>
            <select id="cluster" on:change=move |ev| cluster.set(event_target_value(&ev).parse().ok())>
                {ready_clusters.into_iter().map(|c| view! { <option value=c.id.to_string() selected=cluster.get_untracked() == Some(c.id)>{c.name}</option> }).collect_view()}
            </select>
            <Transition fallback=|| ()>
                {move || spec.get().map(|r| match r {
                    Ok(Some((vars, _))) => view! { <Variables vars=vars values=values /> }.into_any(),
                    Ok(None) => ().into_any(),
                    Err(e) => view! { <crate::components::ErrorBox error=e /> }.into_any(),
                })}
            </Transition>
            <Impact preview=preview />
            <button type="submit" class="primary" id="deploy-submit" disabled=move || busy.get()>"Deploy"</button>
        </form>
    }.into_any()
}

/// The template's variables as fields: defaults filled in, required ones marked and required.
#[component]
fn Variables(vars: BTreeMap<String, TemplateVariable>, values: RwSignal<BTreeMap<String, String>>) -> impl IntoView {
    if vars.is_empty() {
        return view! { <p class="hint">"This template has no variables."</p> }.into_any();
    }
    view! {
        <fieldset id="variables">
            <legend>"Variables"</legend>
            {vars.into_iter().map(|(key, var)| {
                let id = format!("var-{key}");
                let k1 = key.clone();
                let k2 = key.clone();
                let label = if var.required { format!("{key} (required)") } else { key.clone() };
                view! {
                    <label for=id.clone()>{label}</label>
                    <input id=id name=key.clone() required=var.required placeholder=var.default.clone().unwrap_or_default()
                        prop:value=move || values.with(|v| v.get(&k1).cloned().unwrap_or_default())
                        on:input=move |ev| { let val = event_target_value(&ev); values.update(|v| { v.insert(k2.clone(), val); }); } />
                }
            }).collect_view()}
        </fieldset>
    }.into_any()
}

/// What the server says the form would deploy, asked a moment after the form stops changing (and not
/// before it names the application): `None` while there is nothing to ask about.
type Preview = RwSignal<Option<Result<ApplicationPreview, ApiError>>>;

fn debounced_preview(request: impl Fn() -> Option<CreateApplication> + Copy + 'static) -> Preview {
    let preview: Preview = RwSignal::new(None);
    let asked = StoredValue::new(0u64);
    Effect::new(move |_| {
        let body = request().filter(|b| !b.name.trim().is_empty());
        asked.update_value(|n| *n += 1);
        let mine = asked.get_value();
        set_timeout(
            move || {
                // A later change asked again meanwhile, or the page has gone.
                if asked.try_get_value() != Some(mine) {
                    return;
                }
                let Some(body) = body else {
                    let _ = preview.try_set(None);
                    return;
                };
                leptos::task::spawn_local(async move {
                    let answer = api::post::<ApplicationPreview>("/applications/preview", &body).await;
                    if asked.try_get_value() == Some(mine) {
                        let _ = preview.try_set(Some(answer));
                    }
                });
            },
            std::time::Duration::from_millis(300),
        );
    });
    preview
}

/// What deploying would run, reserve and route, and what it adds to the tenant's usage against its
/// quotas; or why it would be refused.
#[component]
fn Impact(preview: Preview) -> impl IntoView {
    move || match preview.get() {
        None => view! {
            <div class="card" id="quota-impact">
                <h2>"What this deploys"</h2>
                <p class="hint">"Name the application to see its services, their reservations and the quota impact."</p>
            </div>
        }
        .into_any(),
        Some(Err(e)) => view! {
            <div class="card" id="quota-impact">
                <h2>"What this deploys"</h2>
                <crate::components::ErrorBox error=e />
            </div>
        }
        .into_any(),
        Some(Ok(p)) => view! { <PreviewCard preview=p /> }.into_any(),
    }
}

#[component]
fn PreviewCard(preview: ApplicationPreview) -> impl IntoView {
    let ApplicationPreview { services, routes, warnings, quota } = preview;
    let lines = quota.into_iter().map(|q| {
        let what = match q.quota.as_str() {
            "max_applications" => "Applications",
            "max_services" => "Services",
            "max_cpus" => "CPUs reserved",
            "max_memory_mb" => "Memory reserved (MiB)",
            other => other,
        };
        let (now, after) = (amount(q.in_use), amount(q.in_use + q.adds));
        let text = match q.limit {
            Some(max) if q.over => format!("{what}: {now} → {after}, over the quota of {}", amount(max)),
            Some(max) => format!("{what}: {now} → {after} of {}", amount(max)),
            None => format!("{what}: {now} → {after} (no limit)"),
        };
        view! { <li class:field-error=q.over data-quota=q.quota.clone()>{text}</li> }
    });
    view! {
        <div class="card" id="quota-impact">
            <h2>"What this deploys"</h2>
            <div class="table-wrap">
                <table id="preview-services">
                    <thead><tr><th>"Service"</th><th>"Image"</th><th>"Tasks"</th><th>"CPU each"</th><th>"Memory each"</th></tr></thead>
                    <tbody>
                        {services.into_iter().map(|s| view! {
                            <tr data-service=s.name.clone()>
                                <td>{s.name.clone()}</td>
                                <td class="mono">{s.image}</td>
                                <td>{if s.mode == "global" { format!("{} (one per node)", s.replicas) } else { s.replicas.to_string() }}</td>
                                <td>{if s.cpus > 0.0 { amount(s.cpus) } else { "—".to_owned() }}</td>
                                <td>{if s.memory_mb > 0 { format!("{} MiB", s.memory_mb) } else { "—".to_owned() }}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
            {(!routes.is_empty()).then(|| view! {
                <p>"Answers at: " {routes.join(", ")}</p>
            })}
            <h3>"Quota impact"</h3>
            <ul>{lines.collect_view()}</ul>
            {(!warnings.is_empty()).then(|| view! {
                <h3>"Warnings"</h3>
                <ul class="warnings">
                    {warnings.into_iter().map(|w| view! { <li>{format!("line {}: {} ({})", w.line, w.message, w.path)}</li> }).collect_view()}
                </ul>
            })}
        </div>
    }
}

/// A count or a reservation sum as people write it: no float noise (0.30000000000000004 → 0.3).
fn amount(v: f64) -> String {
    format!("{}", (v * 100.0).round() / 100.0)
}
