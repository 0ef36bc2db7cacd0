//! Templates: the built-in gallery and the tenant's own; a Compose editor whose errors and warnings
//! appear at their line; versions with a side-by-side diff; importing a Distributed Application Bundle.

use std::collections::BTreeMap;

use berth_types::{
    CreateTemplate, GalleryTemplate, ImportDab, Page, Role, Template, TemplateDiff, TemplateVersion, UpdateTemplate,
};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};
use uuid::Uuid;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{Empty, MaybeError, PageHeader, TypedConfirm, act, loaded};
use crate::diffview::{self, Row};
use crate::editor::{Checked, ComposeEditor};
use crate::format;
use crate::pages::applications::not_found;

#[component]
pub fn TemplateList() -> impl IntoView {
    let s = session();
    let dev = s.can(Role::Developer);
    let reload = RwSignal::new(0u32);
    let data = LocalResource::new(move || {
        reload.get();
        async move {
            let (mine, gallery) = futures_util::join!(
                api::get::<Page<Template>>("/templates?limit=500"),
                api::get::<Page<GalleryTemplate>>("/gallery")
            );
            Ok::<_, ApiError>((mine?.items, gallery?.items))
        }
    });
    let error = RwSignal::new(None::<ApiError>);
    let navigate = use_navigate();
    let copy = move |g: GalleryTemplate| {
        let navigate = navigate.clone();
        act(
            error,
            async move {
                let body =
                    CreateTemplate { name: g.name.clone(), compose: g.compose, files: g.files, description: g.description };
                api::post::<Template>("/templates", &body).await
            },
            move |t| navigate(&format!("/templates/{}", t.id), Default::default()),
        );
    };
    view! {
        <PageHeader title="Templates">
            {dev.then(|| view! { <A href="/templates/new" attr:class="button primary" attr:id="new-template">"New template"</A> })}
        </PageHeader>
        <MaybeError error=error />
        {loaded(data, move |(mine, gallery): (Vec<Template>, Vec<GalleryTemplate>)| {
            let copy = copy.clone();
            view! {
                <section class="card">
                    <h2>"Your templates"</h2>
                    {if mine.is_empty() {
                        view! { <Empty>"No templates of your own yet. Write one, copy one from the gallery, or import a bundle."</Empty> }.into_any()
                    } else {
                        view! {
                            <table class="table" id="templates">
                                <thead><tr><th scope="col">"Name"</th><th scope="col">"Version"</th><th scope="col">"Services"</th>
                                    <th scope="col">"Updated"</th><th scope="col">"Description"</th></tr></thead>
                                <tbody>
                                    {mine.into_iter().map(|t| {
                                        let name = t.name.clone();
                                        view! {
                                            <tr>
                                                <td><A href=format!("/templates/{}", t.id)>{name}</A></td>
                                                <td>{t.version}</td>
                                                <td>{t.services.join(", ")}</td>
                                                <td>{format::time(t.updated_at)}</td>
                                                <td>{t.description.clone()}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any()
                    }}
                </section>
                <section class="card">
                    <h2>"Gallery"</h2>
                    <table class="table" id="gallery">
                        <thead><tr><th scope="col">"Name"</th><th scope="col">"What it is"</th><th scope="col">"Services"</th>
                            {dev.then(|| view! { <th scope="col">"Actions"</th> })}</tr></thead>
                        <tbody>
                            {gallery.into_iter().map(|g| {
                                let copy = copy.clone();
                                let deploy = format!("/deploy?gallery={}", g.name);
                                let label = format!("Deploy {}", g.name);
                                let copy_label = format!("Copy {} into your templates", g.name);
                                let kept = g.clone();
                                view! {
                                    <tr>
                                        <td><code>{g.name.clone()}</code></td>
                                        <td>{g.description.clone()}</td>
                                        <td>{g.services.join(", ")}</td>
                                        {dev.then(move || view! {
                                            <td class="row-actions">
                                                <A href=deploy attr:class="button" attr:aria-label=label>"Deploy"</A>
                                                <button aria-label=copy_label on:click=move |_| copy(kept.clone())>"Copy"</button>
                                            </td>
                                        })}
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                </section>
                {dev.then(|| view! { <ImportBundle /> })}
            }
        })}
    }
}

#[component]
fn ImportBundle() -> impl IntoView {
    let name = RwSignal::new(String::new());
    let bundle = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let navigate = use_navigate();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let parsed = match serde_json::from_str::<serde_json::Value>(&bundle.get_untracked()) {
            Ok(v) => v,
            Err(e) => {
                error.set(Some(ApiError::input(format!("The bundle is not JSON: {e}"))));
                return;
            }
        };
        let body = ImportDab { name: name.get_untracked(), description: String::new(), bundle: parsed };
        let navigate = navigate.clone();
        act(error, async move { api::post::<Template>("/templates/import-dab", &body).await }, move |t| {
            navigate(&format!("/templates/{}", t.id), Default::default())
        });
    };
    view! {
        <section class="card">
            <h2>"Import a bundle"</h2>
            <p class="hint">"A Distributed Application Bundle (" <code>".dab"</code> ", the JSON " <code>"docker-compose bundle"</code> " wrote) becomes a Compose template."</p>
            <form class="form" on:submit=submit>
                <MaybeError error=error />
                <label for="dab-name">"Template name"</label>
                <input id="dab-name" required prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                <label for="dab-bundle">"Bundle (JSON)"</label>
                <textarea id="dab-bundle" rows="6" required prop:value=move || bundle.get() on:input=move |ev| bundle.set(event_target_value(&ev))></textarea>
                <button type="submit" id="import-dab">"Import"</button>
            </form>
        </section>
    }
}

const STARTER: &str = "version: \"3.8\"\nservices:\n  web:\n    image: ${BERTH_REGISTRY}/${BERTH_TENANT}/busybox:debian\n    command: [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\"]\n    deploy:\n      replicas: 2\n";

#[component]
pub fn NewTemplate() -> impl IntoView {
    let name = RwSignal::new(String::new());
    let description = RwSignal::new(String::new());
    let text = RwSignal::new(STARTER.to_owned());
    let checked = RwSignal::new(Checked::default());
    let error = RwSignal::new(None::<ApiError>);
    let navigate = use_navigate();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let body = CreateTemplate {
            name: name.get_untracked(),
            compose: text.get_untracked(),
            files: BTreeMap::new(),
            description: description.get_untracked(),
        };
        let navigate = navigate.clone();
        act(error, async move { api::post::<Template>("/templates", &body).await }, move |t| {
            navigate(&format!("/templates/{}", t.id), Default::default())
        });
    };
    view! {
        <PageHeader title="New template" />
        <form class="form wide-form" on:submit=submit>
            <MaybeError error=error />
            <label for="template-name">"Name"</label>
            <input id="template-name" required prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
            <label for="template-description">"Description"</label>
            <input id="template-description" prop:value=move || description.get() on:input=move |ev| description.set(event_target_value(&ev)) />
            <span class="label">"Compose file"</span>
            <ComposeEditor text=text files=Signal::derive(BTreeMap::new) checked=checked />
            <button type="submit" class="primary" id="create-template">"Create template"</button>
        </form>
    }
}

#[component]
pub fn TemplatePage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|s| s.parse::<Uuid>().ok()));
    let reload = RwSignal::new(0u32);
    // Kept here: saving rebuilds the page below with the new version.
    let saved = RwSignal::new(None::<i32>);
    let data = LocalResource::new(move || {
        reload.get();
        let id = id();
        async move {
            let id = id.ok_or_else(not_found)?;
            let (one, all) = (format!("/templates/{id}"), format!("/templates/{id}/versions?limit=500"));
            let (t, v) = futures_util::join!(api::get::<Template>(&one), api::get::<Page<TemplateVersion>>(&all));
            Ok::<_, ApiError>((t?, v?.items))
        }
    });
    view! {
        {move || saved.get().map(|v| view! { <p class="notice" role="status">{format!("Saved as version {v}.")}</p> })}
        {loaded(data, move |(t, versions): (Template, Vec<TemplateVersion>)| view! { <TemplateBody template=t versions=versions reload=reload saved=saved /> })}
    }
}

#[component]
fn TemplateBody(
    template: Template,
    versions: Vec<TemplateVersion>,
    reload: RwSignal<u32>,
    saved: RwSignal<Option<i32>>,
) -> impl IntoView {
    let s = session();
    let dev = s.can(Role::Developer);
    let id = template.id;
    let text = RwSignal::new(template.compose.clone());
    let files = template.files.clone();
    let checked = RwSignal::new(Checked::default());
    let error = RwSignal::new(None::<ApiError>);
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let body = UpdateTemplate { compose: Some(text.get_untracked()), files: None, description: None };
        act(error, async move { api::patch::<Template>(&format!("/templates/{id}"), &body).await }, move |t| {
            saved.set(Some(t.version));
            reload.update(|v| *v += 1);
        });
    };
    let navigate = use_navigate();
    let delete = Callback::new(move |_| {
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/templates/{id}")).await {
                Ok(()) => navigate("/templates", Default::default()),
                Err(e) => error.set(Some(e)),
            }
        });
    });
    let latest = template.version;
    let compare = RwSignal::new((latest > 1).then_some((latest - 1, latest)));
    let file_names: Vec<String> = files.keys().cloned().collect();
    let files_signal = Signal::derive(move || files.clone());
    view! {
        <PageHeader title=template.name.clone()>
            {dev.then(|| view! { <A href=format!("/deploy?template={id}") attr:class="button primary" attr:id="deploy-template">"Deploy"</A> })}
        </PageHeader>
        <p class="hint">{format!("Version {latest}. {}", template.description)}
            {(!file_names.is_empty()).then(|| format!(" Files: {}.", file_names.join(", ")))}</p>
        <MaybeError error=error />
        <form class="form wide-form" on:submit=save>
            <ComposeEditor text=text files=files_signal checked=checked readonly=!dev />
            {dev.then(|| view! { <button type="submit" class="primary" id="save-template">"Save as a new version"</button> })}
        </form>
        <section class="card">
            <h2>"Versions"</h2>
            <table class="table" id="versions">
                <thead><tr><th scope="col">"Version"</th><th scope="col">"Created"</th><th scope="col">"Services"</th><th scope="col">"Compare"</th></tr></thead>
                <tbody>
                    {versions.into_iter().rev().map(|v| {
                        let n = v.version;
                        view! {
                            <tr>
                                <td>{n}</td>
                                <td>{format::time(v.created_at)}</td>
                                <td>{v.services.join(", ")}</td>
                                <td>{(n > 1).then(|| view! { <button on:click=move |_| compare.set(Some((n - 1, n)))>{format!("{} → {n}", n - 1)}</button> })}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            {move || compare.get().map(|(from, to)| view! { <Diff id=id from=from to=to /> })}
        </section>
        {dev.then(|| view! {
            <section class="card">
                <h2>"Delete"</h2>
                <TypedConfirm name=template.name.clone() action="Delete template" on_confirm=delete id="delete-template" />
            </section>
        })}
    }
}

#[component]
fn Diff(id: Uuid, from: i32, to: i32) -> impl IntoView {
    let diff = LocalResource::new(move || async move {
        api::get::<TemplateDiff>(&format!("/templates/{id}/versions/{to}/diff?against={from}")).await
    });
    view! {
        <h3>{format!("Version {from} → {to}")}</h3>
        {loaded(diff, |d: TemplateDiff| {
            let rows = diffview::rows(&d.diff);
            if rows.is_empty() {
                return view! { <Empty>"No differences."</Empty> }.into_any();
            }
            view! {
                <div class="table-wrap">
                <table class="diff" id="diff">
                    <thead><tr><th scope="col" colspan="2">{format!("version {}", d.from)}</th><th scope="col" colspan="2">{format!("version {}", d.to)}</th></tr></thead>
                    <tbody>
                        {rows.into_iter().map(|r| match r {
                            Row::File(name) => view! { <tr class="diff-file"><th scope="rowgroup" colspan="4">{name}</th></tr> }.into_any(),
                            Row::Hunk(h) => view! { <tr class="diff-hunk"><td colspan="4">{h}</td></tr> }.into_any(),
                            Row::Line { left, right } => {
                                let changed = left.as_ref().map(|l| &l.1) != right.as_ref().map(|r| &r.1);
                                let (lc, rc) = match (&left, &right, changed) {
                                    (_, _, false) => ("same", "same"),
                                    (Some(_), Some(_), true) => ("removed", "added"),
                                    (Some(_), None, _) => ("removed", "empty"),
                                    (None, Some(_), _) => ("empty", "added"),
                                    (None, None, _) => ("empty", "empty"),
                                };
                                let (ln, lt) = left.map(|(n, t)| (n.to_string(), t)).unwrap_or_default();
                                let (rn, rt) = right.map(|(n, t)| (n.to_string(), t)).unwrap_or_default();
                                view! {
                                    <tr>
                                        <td class="num">{ln}</td><td class=lc>{lt}</td>
                                        <td class="num">{rn}</td><td class=rc>{rt}</td>
                                    </tr>
                                }.into_any()
                            }
                        }).collect_view()}
                    </tbody>
                </table>
                </div>
            }.into_any()
        })}
    }
}
