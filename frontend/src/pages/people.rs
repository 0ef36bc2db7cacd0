//! The tenant's people and its record: users and their roles, and the audit log with filters. Admins
//! and owners only (the server checks the same).

use berth_types::{AuditEntry, CreateUser, Page, Role, UpdateUser, User};
use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{Badge, Empty, MaybeError, PageHeader, act, loaded};
use crate::format;

/// Roles an admin can give: tenant roles up to their own.
fn grantable(mine: Role) -> Vec<Role> {
    Role::ALL.iter().copied().filter(|r| r.tenant_rank().is_some() && mine.at_least(*r)).collect()
}

#[component]
pub fn Users() -> impl IntoView {
    let s = session();
    let mine = s.role().unwrap_or(Role::Viewer);
    let me_id = s.me.with_untracked(|m| m.as_ref().map(|m| m.id));
    let reload = RwSignal::new(0u32);
    let users = LocalResource::new(move || {
        reload.get();
        api::get::<Page<User>>("/users?limit=500")
    });
    let error = RwSignal::new(None::<ApiError>);
    let (email, password) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
    let role = RwSignal::new(Role::Developer);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let body = CreateUser { email: email.get_untracked(), password: password.get_untracked(), role: role.get_untracked() };
        act(error, async move { api::post::<User>("/users", &body).await }, move |_| {
            email.set(String::new());
            password.set(String::new());
            reload.update(|v| *v += 1);
        });
    };
    let set_role = move |id: uuid::Uuid, r: Role| {
        act(
            error,
            async move { api::patch::<User>(&format!("/users/{id}"), &UpdateUser { role: Some(r), password: None }).await },
            move |_| reload.update(|v| *v += 1),
        );
    };
    let remove = move |id: uuid::Uuid| {
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/users/{id}")).await {
                Ok(()) => reload.update(|v| *v += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let roles = grantable(mine);
    let roles2 = roles.clone();
    view! {
        <PageHeader title="Users" />
        <MaybeError error=error />
        <section class="card">
            <h2>"Add a user"</h2>
            <form class="form inline-form" on:submit=create>
                <label>"E-mail "<input type="email" id="user-email" required prop:value=move || email.get() on:input=move |ev| email.set(event_target_value(&ev)) /></label>
                <label>"First password "<input type="password" id="user-password" autocomplete="new-password" required
                    prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev)) /></label>
                <label>"Role "
                    <select id="user-role" on:change=move |ev| if let Ok(r) = event_target_value(&ev).parse() { role.set(r) }>
                        {roles.iter().map(|r| view! { <option value=r.as_str() selected=*r == Role::Developer>{r.as_str()}</option> }).collect_view()}
                    </select>
                </label>
                <button type="submit" class="primary" id="add-user">"Add user"</button>
            </form>
        </section>
        {loaded(users, move |page: Page<User>| {
            let roles = roles2.clone();
            view! {
                <table class="table" id="users">
                    <thead><tr><th scope="col">"E-mail"</th><th scope="col">"Role"</th><th scope="col">"Since"</th><th scope="col">"Actions"</th></tr></thead>
                    <tbody>
                        {page.items.into_iter().map(|u| {
                            let id = u.id;
                            let own = Some(id) == me_id;
                            // Nobody changes their own role here, nor a role above theirs.
                            let editable = !own && mine.at_least(u.role);
                            let label = format!("Role of {}", u.email);
                            let remove_label = format!("Remove {}", u.email);
                            view! {
                                <tr>
                                    <td>{u.email.clone()}{own.then_some(" (you)")}</td>
                                    <td>{if editable {
                                        view! {
                                            <select aria-label=label on:change=move |ev| if let Ok(r) = event_target_value(&ev).parse() { set_role(id, r) }>
                                                {roles.iter().map(|r| view! { <option value=r.as_str() selected=*r == u.role>{r.as_str()}</option> }).collect_view()}
                                            </select>
                                        }.into_any()
                                    } else {
                                        view! { <span>{u.role.as_str()}</span> }.into_any()
                                    }}</td>
                                    <td>{format::time(u.created_at)}</td>
                                    <td>{editable.then(|| view! { <button aria-label=remove_label on:click=move |_| remove(id)>"Remove"</button> })}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }
        })}
    }
}

#[component]
pub fn Audit() -> impl IntoView {
    let action = RwSignal::new(String::new());
    let actor = RwSignal::new(String::new());
    let outcome = RwSignal::new(String::new());
    let applied = RwSignal::new((String::new(), String::new(), String::new()));
    let entries = LocalResource::new(move || {
        let (action, actor, outcome) = applied.get();
        let mut query = String::from("/audit?newest_first=true&limit=200");
        for (key, value) in [("action", action), ("actor", actor), ("outcome", outcome)] {
            if !value.is_empty() {
                query.push_str(&format!("&{key}={}", String::from(js_sys::encode_uri_component(&value))));
            }
        }
        async move { api::get::<Page<AuditEntry>>(&query).await }
    });
    let apply = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        applied.set((action.get_untracked(), actor.get_untracked(), outcome.get_untracked()));
    };
    view! {
        <PageHeader title="Audit log" />
        <form class="form inline-form" on:submit=apply>
            <label>"Action starts with "<input type="text" id="audit-action" placeholder="cluster." prop:value=move || action.get()
                on:input=move |ev| action.set(event_target_value(&ev)) /></label>
            <label>"Actor "<input type="text" id="audit-actor" placeholder="e-mail or token" prop:value=move || actor.get()
                on:input=move |ev| actor.set(event_target_value(&ev)) /></label>
            <label>"Outcome "
                <select id="audit-outcome" on:change=move |ev| outcome.set(event_target_value(&ev))>
                    <option value="">"any"</option><option value="success">"success"</option><option value="failure">"failure"</option>
                </select>
            </label>
            <button type="submit" id="audit-filter">"Filter"</button>
        </form>
        {loaded(entries, |page: Page<AuditEntry>| {
            if page.items.is_empty() {
                return view! { <Empty>"No entries match."</Empty> }.into_any();
            }
            view! {
                <div class="table-wrap">
                <table class="table" id="audit">
                    <thead><tr><th scope="col">"When"</th><th scope="col">"Who"</th><th scope="col">"Action"</th><th scope="col">"Target"</th>
                        <th scope="col">"Outcome"</th><th scope="col">"Status"</th></tr></thead>
                    <tbody>
                        {page.items.into_iter().map(|e| view! {
                            <tr>
                                <td>{format::time(e.at)}</td>
                                <td>{e.actor_label.clone()}</td>
                                <td><code>{e.action.clone()}</code></td>
                                <td>{format!("{} {}", e.target_type, e.target_id.clone().unwrap_or_default())}</td>
                                <td><Badge status=e.outcome.clone() /></td>
                                <td>{e.status_code}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
                </div>
            }.into_any()
        })}
    }
}
