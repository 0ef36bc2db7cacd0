//! Custom domains: the tenant's verified domains and pending claims, with the TXT record each claim
//! needs in the domain's DNS, a Verify button, and (for admins) claiming and giving up domains.

use berth_types::{CreateDomain, Domain, DomainProof, DomainStatus, Role};
use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{CopyButton, Empty, MaybeError, PageHeader, act, loaded};
use crate::format;

#[component]
pub fn Domains() -> impl IntoView {
    let s = session();
    let admin = s.can(Role::Admin);
    let version = RwSignal::new(0u32);
    let domains = LocalResource::new(move || {
        version.get();
        api::get::<Vec<Domain>>("/domains")
    });
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let notice = RwSignal::new(None::<String>);
    let reload = move || version.update(|v| *v += 1);
    let claim = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        notice.set(None);
        let body = CreateDomain { domain: name.get_untracked() };
        act(error, async move { api::post::<Domain>("/domains", &body).await }, move |d| {
            notice.set(Some(format!("Publish the TXT record below in the DNS of {}, then verify.", d.domain)));
            name.set(String::new());
            reload();
        });
    };
    let verify = move |domain: String| {
        error.set(None);
        notice.set(None);
        leptos::task::spawn_local(async move {
            match api::post_empty::<Domain>(&format!("/domains/{domain}/verify")).await {
                Ok(d) => notice.set(Some(format!("{} is verified: its routes are served.", d.domain))),
                Err(e) => error.set(Some(e)),
            }
            reload();
        });
    };
    let remove = move |domain: String| {
        error.set(None);
        notice.set(None);
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/domains/{domain}")).await {
                Ok(()) => notice.set(Some(format!("{domain} removed."))),
                Err(e) => error.set(Some(e)),
            }
            reload();
        });
    };
    view! {
        <PageHeader title="Domains" />
        <p class="hint">"A route to a custom domain is served once your tenant holds the domain (and with it every name under it). "
            "Prove it by publishing a TXT record in the domain's DNS, or ask a platform admin to grant it."</p>
        {admin.then(|| view! {
            <section class="card">
                <h2>"Add a domain"</h2>
                <form class="form inline-form" on:submit=claim>
                    <label>"Domain "<input type="text" id="domain-name" required placeholder="example.com"
                        prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) /></label>
                    <button type="submit" class="primary" id="claim-domain">"Add domain"</button>
                </form>
            </section>
        })}
        <MaybeError error=error />
        {move || notice.get().map(|n| view! { <p class="notice" role="status">{n}</p> })}
        {loaded(domains, move |list: Vec<Domain>| {
            if list.is_empty() {
                return view! { <Empty>"No custom domains yet."</Empty> }.into_any();
            }
            view! {
                <div class="table-wrap"><table class="table" id="domains">
                    <thead><tr><th scope="col">"Domain"</th><th scope="col">"Status"</th><th scope="col">"Proof"</th>
                        {admin.then(|| view! { <th scope="col">"Actions"</th> })}</tr></thead>
                    <tbody>
                        {list.into_iter().map(|d| domain_row(d, admin, verify, remove)).collect_view()}
                    </tbody>
                </table></div>
            }.into_any()
        })}
    }
}

fn domain_row(
    d: Domain,
    admin: bool,
    verify: impl Fn(String) + Copy + Send + Sync + 'static,
    remove: impl Fn(String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let domain = d.domain.clone();
    let pending = d.status == DomainStatus::Pending;
    let proof = match (&d.verification, d.proved_by) {
        (Some(v), _) => {
            let value = v.value.clone();
            view! {
                <dl class="facts record">
                    <dt>"Record"</dt><dd>{v.record_type.clone()}</dd>
                    <dt>"Name"</dt><dd><code class="name">{v.name.clone()}</code></dd>
                    <dt>"Value"</dt><dd><code class="value">{v.value.clone()}</code>" "<CopyButton text=value /></dd>
                    {d.checked_at.map(|t| view! {
                        <dt>"Last check"</dt>
                        <dd>{format!("{}: {}", format::time(t), d.last_error.clone().unwrap_or_default())}</dd>
                    })}
                </dl>
            }
            .into_any()
        }
        (None, Some(DomainProof::Dns)) => view! { "TXT record in its DNS" }.into_any(),
        (None, _) => view! { "granted by a platform admin" }.into_any(),
    };
    let granted = d.proved_by == Some(DomainProof::Admin);
    let (verify_label, remove_label) = (format!("Verify {domain}"), format!("Remove {domain}"));
    let (for_verify, for_remove) = (domain.clone(), domain.clone());
    view! {
        <tr data-domain=domain.clone()>
            <td>{domain.clone()}</td>
            <td class="status">{if pending { "pending" } else { "verified" }}</td>
            <td>{proof}</td>
            {admin.then(|| view! {
                <td><div class="row-actions">
                    {pending.then(|| view! {
                        <button class="verify primary" aria-label=verify_label on:click=move |_| verify(for_verify.clone())>"Verify"</button>
                    })}
                    {(!granted).then(|| view! {
                        <button class="remove" aria-label=remove_label on:click=move |_| remove(for_remove.clone())>"Remove"</button>
                    })}
                </div></td>
            })}
        </tr>
    }
}
