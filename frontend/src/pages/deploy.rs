//! Deploy: pick a template (the built-in gallery or the tenant's own, at a version), fill the form its
//! variables make (defaults filled in, required ones marked), pick a cluster, see the quota impact,
//! and deploy.

use std::collections::BTreeMap;

use berth_types::{
    Application, Cluster, ClusterStatus, CreateApplication, GalleryTemplate, Page, QuotaReport, Template, TemplateVariable,
    TemplateVersion,
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

#[derive(Clone)]
struct Choices {
    gallery: Vec<GalleryTemplate>,
    templates: Vec<Template>,
    clusters: Vec<Cluster>,
    quotas: QuotaReport,
}

async fn choices() -> Result<Choices, ApiError> {
    let (gallery, templates, clusters, quotas) = futures_util::join!(
        api::get::<Page<GalleryTemplate>>("/gallery"),
        api::get::<Page<Template>>("/templates?limit=500"),
        api::get::<Page<Cluster>>("/clusters?limit=500"),
        api::get::<QuotaReport>("/quotas"),
    );
    Ok(Choices { gallery: gallery?.items, templates: templates?.items, clusters: clusters?.items, quotas: quotas? })
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

    // The chosen template's variables (and services) at the chosen version.
    let spec = LocalResource::new(move || {
        let (source, version) = (source.get(), version.get());
        async move {
            match source {
                Some(Source::Gallery(g)) => {
                    let g = api::get::<GalleryTemplate>(&format!("/gallery/{g}")).await?;
                    Ok::<_, ApiError>(Some((g.variables, g.services, None)))
                }
                Some(Source::Template(id)) => {
                    let t = api::get::<Template>(&format!("/templates/{id}")).await?;
                    match version {
                        Some(v) if v != t.version => {
                            let tv = api::get::<TemplateVersion>(&format!("/templates/{id}/versions/{v}")).await?;
                            Ok(Some((tv.variables, tv.services, Some(t.version))))
                        }
                        _ => Ok(Some((t.variables, t.services, Some(t.version)))),
                    }
                }
                None => Ok(None),
            }
        }
    });
    // Defaults fill the form whenever the template changes.
    Effect::new(move |_| {
        if let Some(Ok(Some((vars, _, _)))) = spec.get() {
            values.set(vars.iter().map(|(k, v)| (k.clone(), v.default.clone().unwrap_or_default())).collect());
        }
    });

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let Some(cluster_id) = cluster.get_untracked() else {
            error.set(Some(ApiError::input("Pick a cluster to deploy to.")));
            return;
        };
        let (gallery, template_id) = match source.get_untracked() {
            Some(Source::Gallery(g)) => (Some(g), None),
            Some(Source::Template(t)) => (None, Some(t)),
            None => (None, None),
        };
        let body = CreateApplication {
            name: name.get_untracked(),
            cluster_id,
            template_id,
            gallery,
            template_version: if template_id.is_some() { version.get_untracked() } else { None },
            compose: None,
            files: BTreeMap::new(),
            variables: values.get_untracked().into_iter().filter(|(_, v)| !v.is_empty()).collect(),
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
                (Some(Source::Template(_)), Some(Ok(Some((_, _, Some(latest)))))) => Some(view! {
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
                    Ok(Some((vars, services, _))) => view! {
                        <Variables vars=vars values=values />
                        <Impact services=services.len() quotas=choices.with_value(|c| c.quotas.clone()) />
                    }.into_any(),
                    Ok(None) => ().into_any(),
                    Err(e) => view! { <crate::components::ErrorBox error=e /> }.into_any(),
                })}
            </Transition>
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

/// What deploying adds to the tenant's usage, against its quotas.
#[component]
fn Impact(services: usize, quotas: QuotaReport) -> impl IntoView {
    let (q, u) = (quotas.quotas, quotas.usage);
    let line = |what: &str, now: i64, adds: i64, max: Option<i32>| {
        let after = now + adds;
        match max {
            Some(m) if after > i64::from(m) => (format!("{what}: {now} → {after}, over the quota of {m}"), true),
            Some(m) => (format!("{what}: {now} → {after} of {m}"), false),
            None => (format!("{what}: {now} → {after} (no limit)"), false),
        }
    };
    let rows = [
        line("Applications", u.applications, 1, q.max_applications),
        line("Services", u.services, services as i64, q.max_services),
    ];
    view! {
        <div class="card" id="quota-impact">
            <h2>"Quota impact"</h2>
            <ul>
                {rows.into_iter().map(|(text, over)| view! { <li class:field-error=over>{text}</li> }).collect_view()}
            </ul>
            <p class="hint">"CPU and memory reservations are checked against the quotas when Berth reads the Compose file."</p>
        </div>
    }
}
