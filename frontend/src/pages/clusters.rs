//! Clusters: the list, the create form with its live progress bar, and a cluster's page (nodes, drain
//! and activate, scale, restart a down node, Docker CLI credentials, delete).

use berth_types::{
    Availability, Cluster, ClusterCredentials, CreateCluster, Job, JobState, Node, NodeState, Page, Provider, Role,
    UpdateCluster, UpdateNode,
};
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};
use uuid::Uuid;

use crate::api::{self, ApiError};
use crate::app::session;
use crate::components::{Badge, Empty, MaybeError, PageHeader, Progress, TypedConfirm, act, download, loaded};
use crate::format;
use crate::live;

fn about_clusters(e: &berth_types::Event) -> bool {
    matches!(e.target_type.as_str(), "cluster" | "node")
}

#[component]
pub fn ClusterList() -> impl IntoView {
    let s = session();
    let changed = live::changes(about_clusters);
    let clusters = LocalResource::new(move || {
        changed.get();
        api::get::<Page<Cluster>>("/clusters?limit=500")
    });
    view! {
        <PageHeader title="Clusters">
            <Show when=move || s.can(Role::Admin)>
                <A href="/clusters/new" attr:class="button primary" attr:id="new-cluster">"Create cluster"</A>
            </Show>
        </PageHeader>
        {loaded(clusters, |page: Page<Cluster>| {
            if page.items.is_empty() {
                return view! { <Empty>"No clusters yet. A cluster is a Docker Swarm whose nodes Berth provisions; create one to deploy applications."</Empty> }.into_any();
            }
            view! {
                <table class="table" id="clusters">
                    <thead><tr><th scope="col">"Name"</th><th scope="col">"Status"</th><th scope="col">"Provider"</th>
                        <th scope="col">"Managers"</th><th scope="col">"Workers"</th><th scope="col">"Endpoint"</th></tr></thead>
                    <tbody>
                        {page.items.into_iter().map(|c| view! {
                            <tr>
                                <td><A href=format!("/clusters/{}", c.id)>{c.name}</A></td>
                                <td><Badge status=c.status.as_str() /></td>
                                <td>{c.provider.as_str()}</td>
                                <td>{c.managers}</td>
                                <td>{c.workers}</td>
                                <td><code>{c.endpoint.unwrap_or_default()}</code></td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        })}
    }
}

/// Follows a job through the change feed: its step and percent, until it finishes.
pub fn follow_job(job: RwSignal<Option<Uuid>>) -> RwSignal<Option<Job>> {
    let state = RwSignal::new(None::<Job>);
    let changed = live::changes(move |e| {
        e.kind.starts_with("job.")
            && e.data.get("job_id").and_then(|v| v.as_str()) == job.get_untracked().map(|j| j.to_string()).as_deref()
    });
    Effect::new(move |_| {
        changed.get();
        if let Some(id) = job.get() {
            leptos::task::spawn_local(async move {
                if let Ok(j) = api::get::<Job>(&format!("/jobs/{id}")).await {
                    state.set(Some(j));
                }
            });
        }
    });
    state
}

#[component]
pub fn JobProgress(job: RwSignal<Option<Job>>) -> impl IntoView {
    move || {
        job.get().map(|j| {
            let label = match j.state {
                JobState::Succeeded => "Done".to_owned(),
                JobState::Failed => format!("Failed: {}", j.last_error.clone().unwrap_or_default()),
                _ => format!("{} ({}%)", j.step, j.percent),
            };
            view! { <div id="job-progress" data-state=j.state.as_str()><Progress label=label percent=j.percent /></div> }
        })
    }
}

#[component]
pub fn NewCluster() -> impl IntoView {
    let name = RwSignal::new(String::new());
    let provider = RwSignal::new("local".to_owned());
    let managers = RwSignal::new("1".to_owned());
    let workers = RwSignal::new("2".to_owned());
    let endpoint = RwSignal::new(String::new());
    let ca = RwSignal::new(String::new());
    let cert = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let created = RwSignal::new(None::<Cluster>);
    let job_id = RwSignal::new(None::<Uuid>);
    let job = follow_job(job_id);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let existing = provider.get_untracked() == "existing";
        let opt = |s: RwSignal<String>| Some(s.get_untracked()).filter(|v| !v.trim().is_empty());
        let number = |s: RwSignal<String>| s.get_untracked().trim().parse::<i32>().ok();
        let body = CreateCluster {
            name: name.get_untracked(),
            provider: if existing { Provider::Existing } else { Provider::Local },
            managers: if existing { None } else { number(managers) },
            workers: if existing { None } else { number(workers) },
            endpoint: if existing { opt(endpoint) } else { None },
            ca_pem: if existing { opt(ca) } else { None },
            cert_pem: if existing { opt(cert) } else { None },
            key_pem: if existing { opt(key) } else { None },
        };
        act(error, async move { api::post::<Cluster>("/clusters", &body).await }, move |c| {
            job_id.set(c.job_id);
            created.set(Some(c));
        });
    };
    let field_error =
        move |f: &'static str| move || error.get().and_then(|e| e.field(f)).map(|m| view! { <p class="field-error">{m}</p> });
    view! {
        <PageHeader title="Create a cluster" />
        <Show when=move || created.with(Option::is_none) fallback=move || view! {
            <section class="card">
                <p>"Provisioning "<strong>{move || created.get().map(|c| c.name).unwrap_or_default()}</strong>"…"</p>
                <JobProgress job=job />
                {move || created.get().map(|c| view! { <p><A href=format!("/clusters/{}", c.id) attr:id="open-cluster">"Open the cluster"</A></p> })}
            </section>
        }>
            <form class="form" on:submit=submit>
                <MaybeError error=error />
                <label for="cluster-name">"Name"</label>
                <input id="cluster-name" required prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                {field_error("name")}
                <fieldset>
                    <legend>"Provider"</legend>
                    <label class="inline"><input type="radio" name="provider" value="local" checked=true
                        on:change=move |_| provider.set("local".into()) />" Local (nodes on this Berth's host)"</label>
                    <label class="inline"><input type="radio" name="provider" value="existing"
                        on:change=move |_| provider.set("existing".into()) />" Existing swarm (adopt its manager's engine)"</label>
                </fieldset>
                <Show when=move || provider.get() == "local" fallback=move || view! {
                    <label for="endpoint">"Engine endpoint"</label>
                    <input id="endpoint" placeholder="tcp://10.0.0.5:2376" prop:value=move || endpoint.get() on:input=move |ev| endpoint.set(event_target_value(&ev)) />
                    {field_error("endpoint")}
                    <label for="ca-pem">"CA certificate (PEM)"</label>
                    <textarea id="ca-pem" rows="3" prop:value=move || ca.get() on:input=move |ev| ca.set(event_target_value(&ev))></textarea>
                    <label for="cert-pem">"Client certificate (PEM)"</label>
                    <textarea id="cert-pem" rows="3" prop:value=move || cert.get() on:input=move |ev| cert.set(event_target_value(&ev))></textarea>
                    <label for="key-pem">"Client key (PEM)"</label>
                    <textarea id="key-pem" rows="3" prop:value=move || key.get() on:input=move |ev| key.set(event_target_value(&ev))></textarea>
                }>
                    <label for="managers">"Managers"</label>
                    <input id="managers" type="number" min="1" max="7" prop:value=move || managers.get() on:input=move |ev| managers.set(event_target_value(&ev)) />
                    {field_error("managers")}
                    <label for="workers">"Workers"</label>
                    <input id="workers" type="number" min="0" prop:value=move || workers.get() on:input=move |ev| workers.set(event_target_value(&ev)) />
                    {field_error("workers")}
                </Show>
                <button type="submit" class="primary" id="create-cluster">"Create cluster"</button>
            </form>
        </Show>
    }
}

#[component]
pub fn ClusterPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let changed = live::changes(about_clusters);
    let cluster = LocalResource::new(move || {
        changed.get();
        let id = id();
        async move { api::get::<Cluster>(&format!("/clusters/{id}")).await }
    });
    let nodes = LocalResource::new(move || {
        changed.get();
        let id = id();
        async move { api::get::<Page<Node>>(&format!("/clusters/{id}/nodes?limit=500")).await }
    });
    view! {
        {loaded(cluster, |c: Cluster| view! { <ClusterSummary cluster=c /> })}
        <section class="card">
            <h2>"Nodes"</h2>
            {loaded(nodes, |page: Page<Node>| view! { <Nodes nodes=page.items /> })}
        </section>
    }
}

#[component]
fn ClusterSummary(cluster: Cluster) -> impl IntoView {
    let s = session();
    let admin = s.can(Role::Admin);
    let error = RwSignal::new(None::<ApiError>);
    let navigate = use_navigate();
    let id = cluster.id;
    let delete = Callback::new(move |_| {
        let navigate = navigate.clone();
        act(error, async move { api::delete_accepted::<Cluster>(&format!("/clusters/{id}")).await }, move |_| {
            navigate("/clusters", Default::default())
        });
    });
    let local = cluster.provider == Provider::Local;
    let name = cluster.name.clone();
    view! {
        <PageHeader title=cluster.name.clone() />
        <MaybeError error=error />
        <dl class="facts">
            <dt>"Status"</dt><dd id="cluster-status"><Badge status=cluster.status.as_str() /></dd>
            <dt>"Provider"</dt><dd>{cluster.provider.as_str()}</dd>
            <dt>"Engine endpoint"</dt><dd><code>{cluster.endpoint.clone().unwrap_or_default()}</code></dd>
            <dt>"Created"</dt><dd>{format::time(cluster.created_at)}</dd>
        </dl>
        {(admin && local).then(|| view! { <Scale cluster=cluster.clone() /> })}
        {admin.then(|| view! { <Credentials cluster=cluster.clone() /> })}
        {admin.then(|| view! {
            <section class="card">
                <h2>"Delete"</h2>
                <p>"Deleting a cluster removes its nodes and everything running on them."</p>
                <TypedConfirm name=name.clone() action="Delete cluster" on_confirm=delete id="delete-cluster" />
            </section>
        })}
    }
}

#[component]
fn Scale(cluster: Cluster) -> impl IntoView {
    let managers = RwSignal::new(cluster.managers.to_string());
    let workers = RwSignal::new(cluster.workers.to_string());
    let error = RwSignal::new(None::<ApiError>);
    let job_id = RwSignal::new(None::<Uuid>);
    let job = follow_job(job_id);
    let id = cluster.id;
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let body = UpdateCluster {
            managers: managers.get_untracked().trim().parse().ok(),
            workers: workers.get_untracked().trim().parse().ok(),
        };
        act(error, async move { api::patch::<Cluster>(&format!("/clusters/{id}"), &body).await }, move |c| job_id.set(c.job_id));
    };
    view! {
        <section class="card">
            <h2>"Scale"</h2>
            <form class="form inline-form" on:submit=submit>
                <MaybeError error=error />
                <label>"Managers "<input type="number" min="1" max="7" id="scale-managers" prop:value=move || managers.get()
                    on:input=move |ev| managers.set(event_target_value(&ev)) /></label>
                <label>"Workers "<input type="number" min="0" id="scale-workers" prop:value=move || workers.get()
                    on:input=move |ev| workers.set(event_target_value(&ev)) /></label>
                <button type="submit" id="scale-cluster">"Apply"</button>
            </form>
            <JobProgress job=job />
        </section>
    }
}

/// The Docker CLI's TLS files for the cluster's manager, as one script that writes them and sets the
/// environment, and the commands to use it.
fn credentials_script(cluster: &str, c: &ClusterCredentials) -> String {
    format!(
        "# Docker CLI access to the Berth cluster `{cluster}`.\n# Use it with:  . ./{cluster}-docker-env.sh   then   docker node ls\n\
         dir=\"${{HOME}}/.berth/{cluster}\"\nmkdir -p \"$dir\" && chmod 700 \"$dir\"\n\
         cat > \"$dir/ca.pem\" <<'PEM'\n{}PEM\ncat > \"$dir/cert.pem\" <<'PEM'\n{}PEM\n(umask 077; cat > \"$dir/key.pem\" <<'PEM'\n{}PEM\n)\n\
         export DOCKER_HOST='{}' DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=\"$dir\"\n",
        ensure_newline(&c.ca_pem),
        ensure_newline(&c.cert_pem),
        ensure_newline(&c.key_pem),
        c.endpoint
    )
}

fn ensure_newline(s: &str) -> String {
    if s.ends_with('\n') { s.to_owned() } else { format!("{s}\n") }
}

#[component]
fn Credentials(cluster: Cluster) -> impl IntoView {
    let error = RwSignal::new(None::<ApiError>);
    let (id, name) = (cluster.id, cluster.name.clone());
    let file = format!("{name}-docker-env.sh");
    let commands = format!(". ./{file}\ndocker node ls\ndocker stack ls");
    let get = move |_| {
        let name = name.clone();
        act(error, async move { api::get::<ClusterCredentials>(&format!("/clusters/{id}/credentials")).await }, move |c| {
            download(&format!("{name}-docker-env.sh"), "text/x-shellscript", &credentials_script(&name, &c))
        });
    };
    view! {
        <section class="card">
            <h2>"Docker CLI"</h2>
            <p>"Download the cluster's client certificate as a script, then use the Docker CLI on the swarm:"</p>
            <pre class="commands">{commands}</pre>
            <button id="download-credentials" on:click=get>{format!("Download {file}")}</button>
            <MaybeError error=error />
        </section>
    }
}

#[component]
fn Nodes(nodes: Vec<Node>) -> impl IntoView {
    let s = session();
    let admin = s.can(Role::Admin);
    let error = RwSignal::new(None::<ApiError>);
    if nodes.is_empty() {
        return view! { <Empty>"No nodes yet."</Empty> }.into_any();
    }
    let set_availability = move |id: Uuid, a: Availability| {
        leptos::task::spawn_local(async move {
            let body = UpdateNode { availability: Some(a), labels: None };
            if let Err(e) = api::patch::<Node>(&format!("/nodes/{id}"), &body).await {
                error.set(Some(e));
            }
        });
    };
    let restart = move |id: Uuid| {
        leptos::task::spawn_local(async move {
            if let Err(e) = api::post_empty::<Node>(&format!("/nodes/{id}/restart")).await {
                error.set(Some(e));
            }
        });
    };
    view! {
        <MaybeError error=error />
        <table class="table" id="nodes">
            <thead><tr><th scope="col">"Name"</th><th scope="col">"Role"</th><th scope="col">"State"</th><th scope="col">"Availability"</th>
                <th scope="col">"Address"</th><th scope="col">"Engine"</th><th scope="col">"Resources"</th><th scope="col">"Labels"</th>
                {admin.then(|| view! { <th scope="col">"Actions"</th> })}</tr></thead>
            <tbody>
                {nodes.into_iter().map(|n| {
                    let id = n.id;
                    let role = if n.leader { format!("{} (leader)", n.role) } else { n.role.to_string() };
                    let resources = match (n.cpus, n.memory_bytes) {
                        (Some(c), Some(m)) => format!("{c} CPU, {}", format::bytes(m)),
                        _ => String::new(),
                    };
                    let labels = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
                    let drained = n.availability == Availability::Drain;
                    let down = n.state == NodeState::Down;
                    view! {
                        <tr data-node=n.name.clone()>
                            <td>{n.name.clone()}</td>
                            <td>{role}</td>
                            <td><Badge status=n.state.as_str() /></td>
                            <td>{n.availability.as_str()}</td>
                            <td><code>{n.address.clone().unwrap_or_default()}</code></td>
                            <td>{n.engine_version.clone().unwrap_or_default()}</td>
                            <td>{resources}</td>
                            <td>{labels}</td>
                            {admin.then(|| view! {
                                <td class="row-actions">
                                    {if drained {
                                        view! { <button on:click=move |_| set_availability(id, Availability::Active)>"Activate"</button> }.into_any()
                                    } else {
                                        view! { <button on:click=move |_| set_availability(id, Availability::Drain)>"Drain"</button> }.into_any()
                                    }}
                                    {down.then(|| view! { <button on:click=move |_| restart(id)>"Restart"</button> })}
                                </td>
                            })}
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }.into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credentials_script_writes_the_files_and_sets_the_environment() {
        let c = ClusterCredentials {
            endpoint: "tcp://10.213.1.2:2376".into(),
            ca_pem: "CA\n".into(),
            cert_pem: "CERT".into(),
            key_pem: "KEY\n".into(),
        };
        let s = credentials_script("prod", &c);
        assert!(s.contains("cat > \"$dir/ca.pem\" <<'PEM'\nCA\nPEM\n"));
        assert!(s.contains("<<'PEM'\nCERT\nPEM\n"));
        assert!(s.contains("(umask 077; cat > \"$dir/key.pem\""));
        assert!(s.ends_with("export DOCKER_HOST='tcp://10.213.1.2:2376' DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=\"$dir\"\n"));
    }
}
