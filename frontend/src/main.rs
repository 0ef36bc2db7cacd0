//! Berth's web console: a client-side-rendered Leptos app in the browser, and a typed client of the same
//! REST API integrators use (nothing it does is hidden from the API). Its request and response types
//! come from `berth-types`, so it never re-declares a DTO.
//!
//! - `api`: the only place that knows URLs and tokens (the session: access token in memory, refresh
//!   token in an HttpOnly cookie the browser keeps).
//! - `sse` and `live`: Server-Sent Events read over `fetch` (so they carry the access token), the
//!   tenant's change feed that keeps pages current.
//! - `app`: the shell (navigation, session gate) and the routes; `pages/`: one module per page;
//!   `components`: what pages share (tables' states, badges, progress, confirmations).
//! - `editor`, `highlight`, `diffview`: the Compose editor (server-checked, findings at their line) and
//!   the side-by-side diff of template versions.
//! - `format`: pure formatting, unit-tested on the host.

mod api;
mod app;
mod components;
mod diffview;
mod editor;
mod format;
mod highlight;
mod live;
mod pages;
mod sse;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
