//! The app: the session gate, the shell (header and navigation) and every route.
//!
//! Links are real URLs (the server answers every page path with the console), so a reload, a bookmark
//! or a link sent to a colleague opens the same page; when there is no session yet, the login form
//! takes its place and the page follows once signed in.

use berth_types::{Me, Role, RouterState};
use leptos::prelude::*;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

use crate::api;
use crate::live;
use crate::pages;

/// Who is signed in, shared with every page.
#[derive(Clone, Copy)]
pub struct Session {
    pub me: RwSignal<Option<Me>>,
    /// True while a reload checks the session cookie.
    pub checking: RwSignal<bool>,
    /// Why the last session ended, told on the login page.
    pub notice: RwSignal<Option<String>>,
    /// Whether the change feed is connected (shown in the header).
    pub live: RwSignal<bool>,
}

impl Session {
    pub fn signed_in(&self, me: Me) {
        let tenant_user = me.tenant.is_some();
        self.notice.set(None);
        self.me.set(Some(me));
        if tenant_user {
            live::start_feed(self.live);
        }
    }

    /// The signed-in role. Not reactive: pages are rebuilt when someone else signs in.
    pub fn role(&self) -> Option<Role> {
        self.me.with_untracked(|m| m.as_ref().map(|m| m.role))
    }

    /// Whether the signed-in user has at least `min` in their tenant. The console shows a control only
    /// when this holds; the server checks the same role again (`Principal::tenant_with`).
    pub fn can(&self, min: Role) -> bool {
        self.role().is_some_and(|r| r.tenant_rank().is_some() && r.at_least(min))
    }

    pub fn platform_admin(&self) -> bool {
        self.role() == Some(Role::PlatformAdmin)
    }
}

pub fn session() -> Session {
    expect_context::<Session>()
}

#[component]
pub fn App() -> impl IntoView {
    let session = Session {
        me: RwSignal::new(None),
        checking: RwSignal::new(true),
        notice: RwSignal::new(None),
        live: RwSignal::new(false),
    };
    provide_context(session);
    api::on_session_lost(move |e| {
        live::stop_feed();
        session.me.set(None);
        session.notice.set(Some(match e.kind.as_str() {
            "tenant-suspended" => e.detail,
            _ => format!("Your session has ended: {}", e.detail),
        }));
    });
    leptos::task::spawn_local(async move {
        if let Ok(s) = api::resume().await {
            session.signed_in(s.me);
        }
        session.checking.set(false);
    });
    view! {
        <Router>
            <Show when=move || !session.checking.get() fallback=|| view! { <p class="boot" role="status">"Loading Berth…"</p> }>
                <Show when=move || session.me.with(Option::is_some) fallback=|| view! { <pages::login::Login /> }>
                    <Shell />
                </Show>
            </Show>
        </Router>
    }
}

#[component]
fn Shell() -> impl IntoView {
    let session = session();
    let me = move || session.me.get();
    let admin = session.platform_admin();
    let logout = move |everywhere: bool| {
        leptos::task::spawn_local(async move {
            let _ = api::logout(everywhere).await;
            live::stop_feed();
            session.notice.set(Some(if everywhere { "Signed out everywhere." } else { "Signed out." }.into()));
            session.me.set(None);
        });
    };
    view! {
        <a class="skip" href="#main">"Skip to content"</a>
        <header class="topbar">
            <a class="brand" href="/">"Berth"</a>
            <span class="tenant">
                {move || me().and_then(|m| m.tenant.map(|t| t.name)).unwrap_or_else(|| "Platform administration".into())}
            </span>
            <span class="spacer"></span>
            <Show when=move || session.me.with(|m| m.as_ref().is_some_and(|m| m.tenant.is_some()))>
                <span class="live" class:on=move || session.live.get() title="Live updates">
                    {move || if session.live.get() { "● live" } else { "○ reconnecting" }}
                </span>
            </Show>
            <span class="who" id="who">
                {move || me().map(|m| format!("{} ({})", m.email, m.role)).unwrap_or_default()}
            </span>
            <button class="link" id="logout" on:click=move |_| logout(false)>"Sign out"</button>
            <button class="link" id="logout-everywhere" on:click=move |_| logout(true)>"Sign out everywhere"</button>
        </header>
        <div class="layout">
            <nav class="sidebar" aria-label="Main">
                {if admin { admin_nav().into_any() } else { tenant_nav(session).into_any() }}
            </nav>
            <main id="main" tabindex="-1">
                <Routes fallback=|| view! { <pages::NotFound /> }>
                    <Route path=path!("/") view=pages::dashboard::Home />
                    <Route path=path!("/clusters") view=pages::clusters::ClusterList />
                    <Route path=path!("/clusters/new") view=pages::clusters::NewCluster />
                    <Route path=path!("/clusters/:id") view=pages::clusters::ClusterPage />
                    <Route path=path!("/applications") view=pages::applications::ApplicationList />
                    <Route path=path!("/applications/:id") view=pages::applications::ApplicationPage />
                    <Route path=path!("/services/:id") view=pages::service::ServicePage />
                    <Route path=path!("/deploy") view=pages::deploy::Deploy />
                    <Route path=path!("/templates") view=pages::templates::TemplateList />
                    <Route path=path!("/templates/new") view=pages::templates::NewTemplate />
                    <Route path=path!("/templates/:id") view=pages::templates::TemplatePage />
                    <Route path=path!("/images") view=pages::images::Images />
                    <Route path=path!("/load-balancers") view=pages::balancers::BalancerList />
                    <Route path=path!("/load-balancers/:id") view=pages::balancers::BalancerPage />
                    <Route path=path!("/domains") view=pages::domains::Domains />
                    <Route path=path!("/tokens") view=pages::tokens::Tokens />
                    <Route path=path!("/users") view=pages::people::Users />
                    <Route path=path!("/audit") view=pages::people::Audit />
                    <Route path=path!("/admin/tenants/:id") view=pages::admin::TenantPage />
                    <Route path=path!("/admin/routers") view=pages::admin::Routers />
                </Routes>
            </main>
        </div>
    }
}

fn tenant_nav(session: Session) -> impl IntoView {
    view! {
        <ul>
            <li><A href="/" exact=true>"Dashboard"</A></li>
            <li><A href="/clusters">"Clusters"</A></li>
            <li><A href="/applications">"Applications"</A></li>
            <Show when=move || session.can(Role::Developer)>
                <li><A href="/deploy">"Deploy"</A></li>
            </Show>
            <li><A href="/templates">"Templates"</A></li>
            <li><A href="/images">"Images"</A></li>
            <li><A href="/load-balancers">"Load balancers"</A></li>
            <li><A href="/domains">"Domains"</A></li>
            <li><A href="/tokens">"API tokens"</A></li>
            <Show when=move || session.can(Role::Admin)>
                <li><A href="/users">"Users"</A></li>
                <li><A href="/audit">"Audit log"</A></li>
            </Show>
        </ul>
    }
}

/// Beside the Routers link on every page: how many routers are failing (keeping an older route table)
/// or gone (no longer reporting), so an operator notices without opening the page. Read every 15 s
/// and on each navigation.
#[component]
fn RoutersAttention() -> impl IntoView {
    let tick = crate::components::every(std::time::Duration::from_secs(15));
    let location = leptos_router::hooks::use_location();
    let routers = LocalResource::new(move || {
        tick.track();
        location.pathname.track();
        api::get::<Vec<berth_types::Router>>("/admin/routers")
    });
    let counts = Memo::new(move |_| {
        routers.get().and_then(Result::ok).map(|list| {
            let count = |state: RouterState| list.iter().filter(|r| r.state == state).count();
            (count(RouterState::Failing), count(RouterState::Gone))
        })
    });
    move || {
        let (failing, gone) = counts.get().unwrap_or_default();
        (failing + gone > 0).then(|| {
            let said = match (failing, gone) {
                (f, 0) => format!("{f} failing"),
                (0, g) => format!("{g} gone"),
                (f, g) => format!("{f} failing, {g} gone"),
            };
            let class = if failing > 0 { "attention badge badge-failing" } else { "attention badge badge-gone" };
            view! { " " <span class=class>{said}</span> }
        })
    }
}

fn admin_nav() -> impl IntoView {
    view! {
        <ul>
            <li><A href="/" exact=true>"Tenants"</A></li>
            <li><A href="/admin/routers">"Routers"<RoutersAttention /></A></li>
            <li><A href="/audit">"Audit log"</A></li>
            <li><A href="/tokens">"API tokens"</A></li>
        </ul>
    }
}
