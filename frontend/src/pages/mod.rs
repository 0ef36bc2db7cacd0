//! One module per page (or per family of pages that share a route prefix).

pub mod admin;
pub mod applications;
pub mod balancers;
pub mod clusters;
pub mod dashboard;
pub mod deploy;
pub mod domains;
pub mod images;
pub mod login;
pub mod people;
pub mod release;
pub mod service;
pub mod templates;
pub mod tokens;

use leptos::prelude::*;
use leptos_router::components::A;

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <h1>"Not found"</h1>
        <p>"There is no such page. " <A href="/">"Back to the dashboard"</A></p>
    }
}
