//! API tokens: the list, creating one (its secret is shown once, with a copy button), revoking.

use berth_types::{ApiToken, CreateApiToken, CreatedApiToken, Page, Role};
use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{CopyButton, Empty, MaybeError, PageHeader, act, loaded};
use crate::format;

#[component]
pub fn Tokens() -> impl IntoView {
    let s = session();
    let version = RwSignal::new(0u32);
    let tokens = LocalResource::new(move || {
        version.get();
        api::get::<Page<ApiToken>>("/tokens?limit=500")
    });
    let my_role = s.role().unwrap_or(Role::Viewer);
    // A token can have the creator's role or a lower one (the platform admin's tokens are platform admin).
    let roles: Vec<Role> = Role::ALL
        .iter()
        .copied()
        .filter(|r| {
            if my_role == Role::PlatformAdmin {
                *r == Role::PlatformAdmin
            } else {
                r.tenant_rank().is_some() && my_role.at_least(*r)
            }
        })
        .collect();
    let name = RwSignal::new(String::new());
    let role = RwSignal::new(roles.last().copied().unwrap_or(Role::Viewer));
    let created = RwSignal::new(None::<CreatedApiToken>);
    let error = RwSignal::new(None::<ApiError>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let body = CreateApiToken { name: name.get_untracked(), role: role.get_untracked(), expires_at: None };
        act(error, async move { api::post::<CreatedApiToken>("/tokens", &body).await }, move |t| {
            created.set(Some(t));
            name.set(String::new());
            version.update(|v| *v += 1);
        });
    };
    let revoke = move |id: uuid::Uuid| {
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/tokens/{id}")).await {
                Ok(()) => version.update(|v| *v += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <PageHeader title="API tokens" />
        <p class="hint">"Tokens let scripts and CI call the API as you would, with your role or a lower one: "
            <code>"curl -H 'authorization: Bearer <token>' "{move || format!("{}/api/v1/me", web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default())}</code></p>
        {move || created.get().map(|t| {
            let secret = t.token.clone();
            view! {
                <div class="secret" role="status">
                    <p><strong>{format!("Token {} created.", t.meta.name)}</strong>" Copy it now: Berth keeps only a hash and cannot show it again."</p>
                    <p><code id="token-secret">{t.token.clone()}</code>" "<CopyButton text=secret id="copy-token" /></p>
                </div>
            }
        })}
        <section class="card">
            <h2>"New token"</h2>
            <form class="form inline-form" on:submit=create>
                <MaybeError error=error />
                <label>"Name "<input type="text" id="token-name" required prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) /></label>
                <label>"Role "
                    <select id="token-role" on:change=move |ev| if let Ok(r) = event_target_value(&ev).parse() { role.set(r) }>
                        {roles.iter().map(|r| view! { <option value=r.as_str() selected=*r == role.get_untracked()>{r.as_str()}</option> }).collect_view()}
                    </select>
                </label>
                <button type="submit" class="primary" id="create-token">"Create token"</button>
            </form>
        </section>
        {loaded(tokens, move |page: Page<ApiToken>| {
            if page.items.is_empty() {
                return view! { <Empty>"No API tokens."</Empty> }.into_any();
            }
            view! {
                <table class="table" id="tokens">
                    <thead><tr><th scope="col">"Name"</th><th scope="col">"Role"</th><th scope="col">"Created"</th>
                        <th scope="col">"Last used"</th><th scope="col">"Expires"</th><th scope="col">"Actions"</th></tr></thead>
                    <tbody>
                        {page.items.into_iter().map(|t| {
                            let id = t.id;
                            let label = format!("Revoke {}", t.name);
                            view! {
                                <tr>
                                    <td>{t.name.clone()}</td>
                                    <td>{t.role.as_str()}</td>
                                    <td>{format::time(t.created_at)}</td>
                                    <td>{t.last_used_at.map(format::time).unwrap_or_else(|| "never".into())}</td>
                                    <td>{t.expires_at.map(format::time).unwrap_or_else(|| "never".into())}</td>
                                    <td><button aria-label=label on:click=move |_| revoke(id)>"Revoke"</button></td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        })}
    }
}
