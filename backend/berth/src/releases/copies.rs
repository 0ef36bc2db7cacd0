//! A release's copies of services on the engine: which services a new revision changes, how a copy
//! differs from the service it copies, and finding and removing copies.
//!
//! A copy runs in a stack of its own, `<application>_r<revision>` (Swarm's names allow only letters,
//! digits, `-` and `_`; the release refuses a revision with a service whose own name would be the
//! copy's), so the application's deploys (`--prune`) never touch it and `docker stack ls` shows it.
//! It joins the application's networks without any alias — neither the service's name nor the
//! aliases its Compose file declares: other services keep reaching `web` (or its alias `www`) at the
//! application's own tasks; only the router splits requests between the two.

use std::collections::HashMap;

use bollard::models::{NetworkAttachmentConfig, ServiceSpec};
use uuid::Uuid;

use crate::applications::compose::convert::{NAMESPACE_LABEL, ObjectIds, Stack};
use crate::applications::compose::model::Project;
use crate::applications::deploy::{remove_services, services_labelled};
use crate::jobs::runner::JobCtx;
use crate::swarm::Engine;

/// The label naming the release a copy belongs to.
pub const RELEASE_LABEL: &str = "berth.release";
/// The label naming the application a copy belongs to (its stack is not the application's).
pub const APPLICATION_LABEL: &str = "berth.application";

/// The engine stack of a release's copies.
pub fn stack_name(application: &str, revision: i32) -> String {
    format!("{application}_r{revision}")
}

/// The services of `to` whose definition differs from `from`'s (or that `from` lacks): what a
/// release runs copies of. Compared as the engine would get them, before images are pinned, so the
/// same tag is the same service.
pub fn changed(application: &str, from: &Project, to: &Project) -> Vec<String> {
    let ids = ObjectIds::default();
    let spec = |project: &Project, key: &str| {
        serde_json::to_value(Stack { name: application, project }.service(key, &ids)).unwrap_or_default()
    };
    to.services.keys().filter(|key| !from.services.contains_key(*key) || spec(from, key) != spec(to, key)).cloned().collect()
}

/// Turns the spec of one of the application's services into its release copy's.
pub fn as_copy(spec: &mut ServiceSpec, stack: &str, release: Uuid, application: &str) {
    let key = spec.name.as_deref().and_then(|n| n.strip_prefix(&format!("{application}_"))).unwrap_or_default().to_owned();
    spec.name = Some(format!("{stack}_{key}"));
    let labels = spec.labels.get_or_insert_with(HashMap::new);
    labels.insert(NAMESPACE_LABEL.to_owned(), stack.to_owned());
    labels.insert(RELEASE_LABEL.to_owned(), release.to_string());
    labels.insert(APPLICATION_LABEL.to_owned(), application.to_owned());
    let without_alias = |networks: &mut Option<Vec<NetworkAttachmentConfig>>| {
        for n in networks.iter_mut().flatten() {
            n.aliases = None;
        }
    };
    without_alias(&mut spec.networks);
    if let Some(task) = spec.task_template.as_mut() {
        without_alias(&mut task.networks);
        if let Some(labels) = task.container_spec.as_mut().and_then(|c| c.labels.as_mut())
            && labels.contains_key(NAMESPACE_LABEL)
        {
            labels.insert(NAMESPACE_LABEL.to_owned(), stack.to_owned());
        }
    }
}

/// Removes the copies carrying `label=value` from the engine (a release's, or every release's of an
/// application); one already gone is fine.
pub async fn remove(ctx: &JobCtx, engine: &Engine, label: &str, value: &str) -> anyhow::Result<()> {
    let services = services_labelled(engine, label, value).await?.into_iter().map(|(name, c)| (name, c.id)).collect();
    remove_services(ctx, engine, services).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applications::compose::{self, Input, policy::Policy};

    fn project(text: &str) -> Project {
        let files = Default::default();
        let variables = Default::default();
        compose::load(&Input { text, files: &files, variables: &variables }, &Policy::default()).unwrap().project
    }

    const V1: &str = "services:\n  web:\n    image: shop/web:1\n    ports: [\"8080\"]\n    networks: {default: {aliases: [www]}}\n  db:\n    image: postgres:16\n";

    #[test]
    fn only_the_services_a_revision_changes_are_copied() {
        let from = project(V1);
        assert!(changed("shop", &from, &from).is_empty());
        let to = project(&V1.replace("shop/web:1", "shop/web:2"));
        assert_eq!(changed("shop", &from, &to), ["web"]);
        let added = project(&format!("{V1}  worker:\n    image: shop/worker:1\n"));
        assert_eq!(changed("shop", &from, &added), ["worker"]);
        let env = project(&V1.replace("  db:\n", "    environment: {MODE: new}\n  db:\n"));
        assert_eq!(changed("shop", &from, &env), ["web"]);
    }

    #[test]
    fn a_copy_runs_in_its_own_stack_without_the_service_s_aliases() {
        let p = project(V1);
        let mut spec = Stack { name: "shop", project: &p }.service("web", &ObjectIds::default());
        let release = Uuid::now_v7();
        as_copy(&mut spec, &stack_name("shop", 3), release, "shop");
        assert_eq!(spec.name.as_deref(), Some("shop_r3_web"));
        let labels = spec.labels.as_ref().unwrap();
        assert_eq!(labels[NAMESPACE_LABEL], "shop_r3");
        assert_eq!(labels[RELEASE_LABEL], release.to_string());
        assert_eq!(labels[APPLICATION_LABEL], "shop");
        let original = Stack { name: "shop", project: &p }.service("web", &ObjectIds::default());
        let aliases = &original.task_template.as_ref().unwrap().networks.as_ref().unwrap()[0].aliases;
        assert_eq!(aliases.as_deref(), Some(&["www".to_owned(), "web".to_owned()][..]), "the service's own");
        let networks = spec.task_template.as_ref().unwrap().networks.as_ref().unwrap();
        assert!(!networks.is_empty());
        for n in networks {
            assert_eq!(n.aliases, None, "{n:?}");
            assert_eq!(n.target.as_deref(), Some("shop_default"), "the copy joins the application's network");
        }
    }
}
