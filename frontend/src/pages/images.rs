//! Images: the tenant's repositories and tags in the built-in registry (sizes, digests), how to
//! `docker login` and push into the tenant's namespace, tarball import with an upload progress bar,
//! retention policies, and external registries.

use berth_types::{CreateRegistry, ImageRepository, ImportResult, Page, Registry, RetentionPolicy, Role};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{Empty, MaybeError, PageHeader, Progress, act, loaded};
use crate::format;
use crate::live;

#[component]
pub fn Images() -> impl IntoView {
    let changed = live::changes(|e| e.kind.starts_with("image."));
    let local = RwSignal::new(0u32);
    let repos = LocalResource::new(move || {
        changed.get();
        local.get();
        api::get::<Page<ImageRepository>>("/images?limit=500")
    });
    let registries = LocalResource::new(move || {
        local.get();
        api::get::<Page<Registry>>("/registries?limit=500")
    });
    let s = session();
    view! {
        <PageHeader title="Images" />
        {loaded(registries, move |p: Page<Registry>| view! { <PushHelp registries=p.items.clone() /> })}
        <Show when=move || s.can(Role::Developer)>
            <Import done=local />
        </Show>
        <section class="card">
            <h2>"Repositories"</h2>
            {loaded(repos, move |p: Page<ImageRepository>| view! { <Repositories repos=p.items reload=local /> })}
        </section>
        <section class="card">
            <h2>"Registries"</h2>
            {loaded(registries, move |p: Page<Registry>| view! { <Registries registries=p.items reload=local /> })}
        </section>
    }
}

#[component]
fn PushHelp(registries: Vec<Registry>) -> impl IntoView {
    let s = session();
    let Some(builtin) = registries.into_iter().find(|r| r.builtin) else {
        return view! { <p class="hint">"This Berth runs without its built-in registry."</p> }.into_any();
    };
    let (email, slug) = s.me.with_untracked(|m| {
        m.as_ref().map(|m| (m.email.clone(), m.tenant.as_ref().map(|t| t.slug.clone()).unwrap_or_default())).unwrap_or_default()
    });
    let address = builtin.address.clone();
    let commands = format!(
        "# once per machine: trust the registry's CA (saved from this page)\nsudo mkdir -p /etc/docker/certs.d/{address}\nsudo cp berth-ca.crt /etc/docker/certs.d/{address}/ca.crt\n\n\
         docker login {address} -u {email}\ndocker tag myimage:1 {address}/{slug}/myimage:1\ndocker push {address}/{slug}/myimage:1"
    );
    let ca = builtin.ca_pem.clone().unwrap_or_default();
    view! {
        <section class="card">
            <h2>"Push with the Docker CLI"</h2>
            <p>"Your tenant's namespace in the built-in registry is "<code id="namespace">{format!("{address}/{slug}/")}</code>". Log in with your Berth e-mail and password, or an API token:"</p>
            <pre class="commands" id="push-commands">{commands}</pre>
            <button on:click=move |_| crate::components::download("berth-ca.crt", "application/x-pem-file", &ca)>"Download the registry's CA (berth-ca.crt)"</button>
        </section>
    }.into_any()
}

/// Uploads a `docker save` tarball with `XMLHttpRequest`, whose upload events drive the progress bar
/// (`fetch` reports no upload progress).
#[component]
fn Import(done: RwSignal<u32>) -> impl IntoView {
    let percent = RwSignal::new(0i32);
    let state = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let input = NodeRef::<leptos::html::Input>::new();
    let upload = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let Some(file) = input.get().and_then(|i| i.files()).and_then(|f| f.get(0)) else {
            error.set(Some(ApiError::input("Choose a tarball first.")));
            return;
        };
        leptos::task::spawn_local(async move {
            // A token that expires during a long upload would fail it: start with a fresh one.
            let _ = api::refresh().await;
            send(file, percent, state, error, done);
        });
    };
    view! {
        <section class="card">
            <h2>"Import a tarball"</h2>
            <p class="hint">"The output of "<code>"docker save"</code>" (optionally gzip-compressed): every image in it is pushed into your namespace."</p>
            <form class="form inline-form" on:submit=upload>
                <label>"Tarball "<input type="file" id="import-file" node_ref=input accept=".tar,.tar.gz,.tgz,application/x-tar,application/gzip" /></label>
                <button type="submit" id="import">"Import"</button>
            </form>
            <MaybeError error=error />
            <Show when=move || !state.get().is_empty()>
                <div id="import-progress"><Progress label=Signal::derive(move || state.get()) percent=Signal::derive(move || percent.get()) /></div>
            </Show>
        </section>
    }
}

fn send(
    file: web_sys::File,
    percent: RwSignal<i32>,
    state: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
    done: RwSignal<u32>,
) {
    let Ok(xhr) = web_sys::XmlHttpRequest::new() else { return };
    let _ = xhr.open("POST", &format!("{}/images/import", api::BASE));
    if let Some(token) = api::access_token() {
        let _ = xhr.set_request_header("authorization", &format!("Bearer {token}"));
    }
    let _ = xhr.set_request_header("content-type", "application/x-tar");
    state.set(format!("Uploading {} ({})", file.name(), format::bytes(file.size() as i64)));
    percent.set(0);
    let on_progress = Closure::<dyn FnMut(web_sys::ProgressEvent)>::new(move |e: web_sys::ProgressEvent| {
        if e.length_computable() && e.total() > 0.0 {
            let p = (e.loaded() / e.total() * 100.0).round() as i32;
            percent.set(p);
            if p >= 100 {
                state.set("Uploaded; Berth is pushing the layers into the registry…".into());
            }
        }
    });
    if let Ok(upload) = xhr.upload() {
        upload.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
    }
    on_progress.forget();
    let reply = xhr.clone();
    let on_load = Closure::<dyn FnMut()>::new(move || {
        let status = reply.status().unwrap_or(0);
        let text = reply.response_text().ok().flatten().unwrap_or_default();
        if (200..300).contains(&status) {
            let names = serde_json::from_str::<ImportResult>(&text)
                .map(|r| r.images.iter().map(|i| format!("{}:{}", i.repository, i.tag)).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            percent.set(100);
            state.set(format!("Imported {names}"));
            done.update(|v| *v += 1);
        } else {
            state.set(String::new());
            error.set(Some(match serde_json::from_str::<berth_types::Problem>(&text) {
                Ok(p) => ApiError { status, kind: p.type_, detail: p.detail, errors: p.errors },
                Err(_) => {
                    ApiError { status, kind: "http".into(), detail: format!("the import failed ({status})"), errors: vec![] }
                }
            }));
        }
    });
    xhr.set_onload(Some(on_load.as_ref().unchecked_ref()));
    on_load.forget();
    let _ = xhr.send_with_opt_blob(Some(&file));
}

#[component]
fn Repositories(repos: Vec<ImageRepository>, reload: RwSignal<u32>) -> impl IntoView {
    let s = session();
    let dev = s.can(Role::Developer);
    let error = RwSignal::new(None::<ApiError>);
    if repos.is_empty() {
        return view! { <Empty>"No images yet. Push with the Docker CLI, or import a tarball."</Empty> }.into_any();
    }
    let delete_tag = move |repo: String, tag: String| {
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/images/repositories/{repo}/tags/{tag}")).await {
                Ok(()) => reload.update(|v| *v += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <MaybeError error=error />
        {repos.into_iter().map(|r| {
            let name = r.name.clone();
            view! {
                <details class="repository" open=true>
                    <summary><code>{r.reference.clone()}</code>{format!(" — {} tag(s), {}", r.tags.len(), format::bytes(r.size_bytes))}</summary>
                    <table class="table">
                        <thead><tr><th scope="col">"Tag"</th><th scope="col">"Digest"</th><th scope="col">"Size"</th><th scope="col">"Pushed"</th>
                            {dev.then(|| view! { <th scope="col">"Actions"</th> })}</tr></thead>
                        <tbody>
                            {r.tags.into_iter().map(|t| {
                                let (repo, tag) = (name.clone(), t.tag.clone());
                                let label = format!("Delete tag {}", t.tag);
                                view! {
                                    <tr>
                                        <td><code>{t.tag.clone()}</code></td>
                                        <td class="mono">{format::short_digest(&t.digest)}</td>
                                        <td>{format::bytes(t.size_bytes)}</td>
                                        <td>{format::time(t.pushed_at)}</td>
                                        {dev.then(|| view! { <td><button aria-label=label on:click=move |_| delete_tag(repo.clone(), tag.clone())>"Delete"</button></td> })}
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                    {dev.then(|| view! { <Retention repo=name.clone() policy=r.retention.clone() /> })}
                </details>
            }
        }).collect_view()}
    }.into_any()
}

#[component]
fn Retention(repo: String, policy: Option<RetentionPolicy>) -> impl IntoView {
    let keep_last = RwSignal::new(policy.as_ref().and_then(|p| p.keep_last).map(|v| v.to_string()).unwrap_or_default());
    let keep_days = RwSignal::new(policy.as_ref().and_then(|p| p.keep_days).map(|v| v.to_string()).unwrap_or_default());
    let error = RwSignal::new(None::<ApiError>);
    let saved = RwSignal::new(false);
    let id_last = format!("keep-last-{repo}");
    let id_days = format!("keep-days-{repo}");
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let policy = RetentionPolicy {
            keep_last: keep_last.get_untracked().trim().parse().ok(),
            keep_days: keep_days.get_untracked().trim().parse().ok(),
        };
        let repo = repo.clone();
        leptos::task::spawn_local(async move {
            let path = format!("/images/repositories/{repo}/retention");
            let result = if policy.keep_last.is_none() && policy.keep_days.is_none() {
                api::delete(&path).await
            } else {
                api::put::<RetentionPolicy>(&path, &policy).await.map(|_| ())
            };
            match result {
                Ok(()) => saved.set(true),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <form class="form inline-form" on:submit=save>
            <label for=id_last.clone()>"Keep the last "</label>
            <input id=id_last type="number" min="1" prop:value=move || keep_last.get() on:input=move |ev| keep_last.set(event_target_value(&ev)) />
            <label for=id_days.clone()>" tags, and tags younger than (days) "</label>
            <input id=id_days type="number" min="1" prop:value=move || keep_days.get() on:input=move |ev| keep_days.set(event_target_value(&ev)) />
            <button type="submit">"Save retention"</button>
            {move || saved.get().then_some(" Saved.")}
            <MaybeError error=error />
        </form>
    }
}

#[component]
fn Registries(registries: Vec<Registry>, reload: RwSignal<u32>) -> impl IntoView {
    let s = session();
    let admin = s.can(Role::Admin);
    let error = RwSignal::new(None::<ApiError>);
    let (name, address, username, password) =
        (RwSignal::new(String::new()), RwSignal::new(String::new()), RwSignal::new(String::new()), RwSignal::new(String::new()));
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let opt = |s: RwSignal<String>| Some(s.get_untracked()).filter(|v| !v.is_empty());
        let body = CreateRegistry {
            name: name.get_untracked(),
            address: address.get_untracked(),
            username: opt(username),
            password: opt(password),
            ca_pem: None,
        };
        act(error, async move { api::post::<Registry>("/registries", &body).await }, move |_| reload.update(|v| *v += 1));
    };
    let remove = move |id: uuid::Uuid| {
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/registries/{id}")).await {
                Ok(()) => reload.update(|v| *v += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <MaybeError error=error />
        <table class="table" id="registries">
            <thead><tr><th scope="col">"Name"</th><th scope="col">"Address"</th><th scope="col">"Credentials"</th>
                {admin.then(|| view! { <th scope="col">"Actions"</th> })}</tr></thead>
            <tbody>
                {registries.into_iter().map(|r| {
                    let id = r.id;
                    let creds = if r.builtin { "your Berth login".to_owned() } else { r.username.clone().map(|u| format!("{u} (password kept sealed)")).unwrap_or_else(|| "anonymous".into()) };
                    view! {
                        <tr>
                            <td>{r.name.clone()}{r.builtin.then_some(" (built-in)")}</td>
                            <td><code>{r.address.clone()}</code></td>
                            <td>{creds}</td>
                            {admin.then(|| view! { <td>{(!r.builtin).then(|| view! { <button on:click=move |_| remove(id)>"Remove"</button> })}</td> })}
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        {admin.then(|| view! {
            <form class="form inline-form" on:submit=add>
                <label>"Name "<input required prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) /></label>
                <label>"Address "<input required placeholder="registry.example.com" prop:value=move || address.get() on:input=move |ev| address.set(event_target_value(&ev)) /></label>
                <label>"User "<input prop:value=move || username.get() on:input=move |ev| username.set(event_target_value(&ev)) /></label>
                <label>"Password "<input type="password" autocomplete="off" prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev)) /></label>
                <button type="submit">"Add registry"</button>
            </form>
        })}
    }
}
