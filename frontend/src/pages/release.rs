//! The application page's release card: the open canary or blue/green release (its revisions, state,
//! copies, what they answered) with the weight slider, promote and abort; a form to start one from
//! a changed Compose file and variables; and the releases before.

use std::collections::BTreeMap;

use berth_types::{
    ApplicationRevision, AutoAbort, CreateRelease, Page, Release, ReleaseState, ReleaseStrategy, Role, UpdateRelease,
};
use leptos::prelude::*;
use uuid::Uuid;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{Badge, Empty, MaybeError, act, every, loaded};
use crate::format;

/// The releases of application `id` (newest first) and its current revision, reloaded when `changed`
/// moves and every few seconds (the copies' traffic moves without events).
#[component]
pub fn Releases(id: Uuid, changed: RwSignal<u64>) -> impl IntoView {
    let tick = every(std::time::Duration::from_secs(5));
    let acted = RwSignal::new(0u64);
    let releases = LocalResource::new(move || {
        changed.get();
        acted.get();
        tick.get();
        async move {
            let mut all = api::get::<Page<Release>>(&format!("/applications/{id}/releases?limit=500")).await?.items;
            all.reverse();
            Ok::<_, ApiError>(all)
        }
    });
    view! {
        <section class="card" id="release">
            <h2>"Release"</h2>
            {loaded(releases, move |all: Vec<Release>| {
                let open = all.iter().find(|r| r.finished_at.is_none()).cloned();
                let past: Vec<Release> = all.into_iter().filter(|r| r.finished_at.is_some()).collect();
                view! {
                    {match open {
                        Some(r) => view! { <OpenRelease release=r acted=acted /> }.into_any(),
                        None => view! { <StartRelease id=id acted=acted /> }.into_any(),
                    }}
                    {(!past.is_empty()).then(|| view! { <PastReleases releases=past /> })}
                }
            })}
        </section>
    }
}

fn strategy_name(s: ReleaseStrategy) -> &'static str {
    match s {
        ReleaseStrategy::Canary => "canary",
        ReleaseStrategy::BlueGreen => "blue/green",
    }
}

#[component]
fn OpenRelease(release: Release, acted: RwSignal<u64>) -> impl IntoView {
    let s = session();
    let error = RwSignal::new(None::<ApiError>);
    let id = release.id;
    let weight = RwSignal::new(release.weight);
    let blue_green = release.strategy == ReleaseStrategy::BlueGreen;
    let running = release.state == ReleaseState::Running;
    let changeable = matches!(release.state, ReleaseState::Starting | ReleaseState::Running | ReleaseState::Failed);
    let finish = move |path: &'static str| {
        act(
            error,
            async move { api::post::<Release>(&format!("/releases/{id}/{path}"), &serde_json::json!({})).await },
            move |_| acted.update(|n| *n += 1),
        );
    };
    let set_weight = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = UpdateRelease { weight: Some(weight.get_untracked()), auto_abort: None };
        act(error, async move { api::patch::<Release>(&format!("/releases/{id}"), &body).await }, move |_| {
            acted.update(|n| *n += 1);
        });
    };
    let t = &release.traffic;
    let traffic = format!(
        "{} requests, {} 5xx in the last minute ({} and {} in all)",
        t.requests_last_minute, t.responses_5xx_last_minute, t.requests_total, t.responses_5xx_total
    );
    let rule = release.auto_abort.map(|a| {
        format!(
            "above {:.0}% 5xx over {} s (once {} requests), or a service with no running task",
            a.max_error_rate * 100.0,
            a.window_secs,
            a.min_requests
        )
    });
    view! {
        <MaybeError error=error />
        <dl class="facts">
            <dt>"Strategy"</dt><dd id="release-strategy-shown">{strategy_name(release.strategy)}</dd>
            <dt>"Revisions"</dt><dd>{format!("{} → {}", release.from_revision, release.to_revision)}</dd>
            <dt>"State"</dt><dd id="release-state"><Badge status=release.state.as_str() /></dd>
            <dt>"New revision's share"</dt><dd id="release-weight-shown">{format!("{}%", release.weight)}</dd>
            <dt>"Its answers"</dt><dd class="traffic">{traffic}</dd>
            {rule.map(|r| view! { <dt>"Aborts on its own"</dt><dd>{r}</dd> })}
            {(!release.message.is_empty()).then(|| view! { <dt>"Message"</dt><dd>{release.message.clone()}</dd> })}
        </dl>
        <table class="table" id="release-services">
            <thead><tr><th scope="col">"Service"</th><th scope="col">"Replicas"</th><th scope="col">"Image"</th></tr></thead>
            <tbody>
                {release.services.iter().map(|c| view! {
                    <tr data-copy=c.name.clone()>
                        <td><a href=format!("/services/{}", c.id)>{c.name.clone()}</a></td>
                        <td>{format!("{}/{}", c.replicas_running, c.replicas_desired)}</td>
                        <td><code>{format::short_digest(&c.image)}</code></td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
        {(s.can(Role::Developer) && changeable).then(|| view! {
            <form class="form inline-form" id="release-weight-form" on:submit=set_weight>
                <label>"Share of requests for the new revision "
                    <input type="range" id="release-weight" min="0" max="100" step=if blue_green { "100" } else { "1" }
                        prop:value=move || weight.get().to_string()
                        on:input=move |ev| weight.set(event_target_value(&ev).parse().unwrap_or(0)) />
                </label>
                <output for="release-weight" id="release-weight-value">{move || format!("{}%", weight.get())}</output>
                <button type="submit" id="release-set-weight">"Set share"</button>
            </form>
            <div class="actions">
                {running.then(|| view! {
                    <button class="primary" id="release-promote" on:click=move |_| finish("promote")>"Promote"</button>
                })}
                <button class="danger" id="release-abort" on:click=move |_| finish("abort")>"Abort"</button>
            </div>
        })}
    }
}

/// Variables as `NAME=value` lines, and back.
fn variables_text(v: &BTreeMap<String, String>) -> String {
    v.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn parse_variables(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| format!("line {} of the variables is not NAME=value", i + 1))?;
        out.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(out)
}

#[component]
fn StartRelease(id: Uuid, acted: RwSignal<u64>) -> impl IntoView {
    let s = session();
    if !s.can(Role::Developer) {
        return view! { <Empty>"No release is open. A canary or blue/green release runs a new revision beside this one."</Empty> }
            .into_any();
    }
    let current = LocalResource::new(move || async move {
        let app = api::get::<berth_types::Application>(&format!("/applications/{id}")).await?;
        let revs = api::get::<Page<ApplicationRevision>>(&format!("/applications/{id}/revisions?limit=500")).await?;
        Ok::<_, ApiError>(revs.items.into_iter().find(|r| r.revision == app.revision))
    });
    view! {
        {loaded(current, move |rev: Option<ApplicationRevision>| {
            let Some(rev) = rev else { return ().into_any() };
            view! { <StartForm id=id rev=rev acted=acted /> }.into_any()
        })}
    }
    .into_any()
}

#[component]
fn StartForm(id: Uuid, rev: ApplicationRevision, acted: RwSignal<u64>) -> impl IntoView {
    let error = RwSignal::new(None::<ApiError>);
    let strategy = RwSignal::new("canary".to_owned());
    let weight = RwSignal::new("10".to_owned());
    let compose = RwSignal::new(rev.compose.clone());
    let variables = RwSignal::new(variables_text(&rev.variables));
    let max_errors = RwSignal::new(String::new());
    let (old_compose, old_variables) = (rev.compose.clone(), rev.variables.clone());
    let start = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let vars = match parse_variables(&variables.get_untracked()) {
            Ok(v) => v,
            Err(e) => return error.set(Some(ApiError::input(e))),
        };
        let Ok(weight) = weight.get_untracked().trim().parse::<i32>() else {
            return error.set(Some(ApiError::input("The share is a number from 0 to 100.")));
        };
        let auto_abort = match max_errors.get_untracked().trim() {
            "" => None,
            text => match text.parse::<f64>() {
                Ok(p) => Some(AutoAbort { max_error_rate: p / 100.0, window_secs: 60, min_requests: 20 }),
                Err(_) => return error.set(Some(ApiError::input("The error limit is a percentage."))),
            },
        };
        let text = compose.get_untracked();
        let body = CreateRelease {
            strategy: Some(if strategy.get_untracked() == "blue_green" {
                ReleaseStrategy::BlueGreen
            } else {
                ReleaseStrategy::Canary
            }),
            weight: Some(weight),
            compose: (text != old_compose).then_some(text),
            variables: (vars != old_variables).then_some(vars),
            auto_abort,
            ..Default::default()
        };
        act(error, async move { api::post::<Release>(&format!("/applications/{id}/releases"), &body).await }, move |_| {
            acted.update(|n| *n += 1)
        });
    };
    view! {
        <p class="muted">"Run a new revision beside this one and send it a share of each route's requests: a canary at any \
            share, blue/green at none or all. Change the Compose file or the variables below; only the services that \
            change run twice."</p>
        <MaybeError error=error />
        <form class="form" id="start-release" on:submit=start>
            <div class="inline-form">
                <label>"Strategy "
                    <select id="release-strategy" on:change=move |ev| {
                        let v = event_target_value(&ev);
                        weight.set(if v == "blue_green" { "0".into() } else { "10".into() });
                        strategy.set(v);
                    }>
                        <option value="canary" selected=true>"Canary"</option>
                        <option value="blue_green">"Blue/green"</option>
                    </select>
                </label>
                <label>"Share (%) "<input type="number" min="0" max="100" id="release-start-weight" prop:value=move || weight.get()
                    on:input=move |ev| weight.set(event_target_value(&ev)) /></label>
                <label>"Abort above this % of 5xx "<input type="number" min="0" max="100" id="release-max-errors" placeholder="off"
                    prop:value=move || max_errors.get() on:input=move |ev| max_errors.set(event_target_value(&ev)) /></label>
            </div>
            <label>"Variables (NAME=value per line)"
                <textarea id="release-variables" rows="3" class="mono" prop:value=move || variables.get()
                    on:input=move |ev| variables.set(event_target_value(&ev))></textarea></label>
            <label>"Compose file"
                <textarea id="release-compose" rows="8" class="mono" prop:value=move || compose.get()
                    on:input=move |ev| compose.set(event_target_value(&ev))></textarea></label>
            <button type="submit" class="primary" id="release-start">"Start release"</button>
        </form>
    }
}

#[component]
fn PastReleases(releases: Vec<Release>) -> impl IntoView {
    view! {
        <h3>"Earlier releases"</h3>
        <table class="table" id="past-releases">
            <thead><tr><th scope="col">"Revisions"</th><th scope="col">"Strategy"</th><th scope="col">"Outcome"</th>
                <th scope="col">"Finished"</th><th scope="col">"Message"</th></tr></thead>
            <tbody>
                {releases.into_iter().map(|r| view! {
                    <tr>
                        <td>{format!("{} → {}", r.from_revision, r.to_revision)}</td>
                        <td>{strategy_name(r.strategy)}</td>
                        <td><Badge status=r.state.as_str() /></td>
                        <td>{r.finished_at.map(format::time).unwrap_or_default()}</td>
                        <td>{r.message.clone()}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}
