//! The login form. It replaces whatever page was asked for until someone signs in; that page then opens.

use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::ErrorBox;

#[component]
pub fn Login() -> impl IntoView {
    let session = session();
    let email = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::login(email.get_untracked(), password.get_untracked()).await {
                Ok(s) => session.signed_in(s.me),
                Err(e) => {
                    error.set(Some(e));
                    busy.set(false);
                }
            }
        });
    };
    view! {
        <main class="login" id="main">
            <form on:submit=submit aria-labelledby="login-title">
                <h1 id="login-title">"Sign in to Berth"</h1>
                {move || session.notice.get().map(|n| view! { <p class="notice" role="status">{n}</p> })}
                {move || error.get().map(|e| view! { <ErrorBox error=e /> })}
                <label for="email">"E-mail"</label>
                <input id="email" name="email" type="email" autocomplete="username" required
                    prop:value=move || email.get() on:input=move |ev| email.set(event_target_value(&ev)) />
                <label for="password">"Password"</label>
                <input id="password" name="password" type="password" autocomplete="current-password" required
                    prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev)) />
                <button type="submit" class="primary" id="sign-in" disabled=move || busy.get()>
                    {move || if busy.get() { "Signing in…" } else { "Sign in" }}
                </button>
            </form>
        </main>
    }
}
