//! How a routed service's tasks are replaced when its spec changes: `start-first` unless the Compose
//! file says otherwise (documented in README's routing section, beside the host-mode ports).
//!
//! Why: the router drains an outgoing task once the observer sees its replacement scheduled, so the
//! task's in-flight requests finish before Swarm stops it. Under Swarm's own default, `stop-first`,
//! there is no replacement to see first: Swarm cuts the old task's connections as it decides to stop
//! it, and a request no proxy may retry (a POST) is lost. `start-first` also keeps every replica
//! serving during the update instead of running one short.
//!
//! It is only the default where starting a second copy beside the first is safe: replicated services
//! with no volume, bind or cluster mount (two copies of a database on one data directory would fight
//! over it), no fixed host port (the copy could not bind it on the same node) and no per-node replica
//! limit (the copy might have nowhere to go). Everything else keeps Swarm's default.

use bollard::models::{
    EndpointPortConfigPublishModeEnum, MountType, ServiceSpec, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
};

/// Swarm's monitor period after each task is updated, which a spec without `update_config` gets.
const MONITOR_NS: i64 = 5_000_000_000;

/// Makes a routed service update and roll back `start-first` where its Compose file left the order
/// unset and a second copy can safely run beside the first. `routed` says whether any route may reach
/// the service.
pub fn start_first_by_default(spec: &mut ServiceSpec, routed: bool) {
    if !routed || !copies_can_overlap(spec) {
        return;
    }
    // Swarm's defaults for an absent config, spelled out: a config sent without them would mean
    // "every task at once" (parallelism 0) rather than one at a time.
    let update = spec.update_config.get_or_insert(ServiceSpecUpdateConfig {
        parallelism: Some(1),
        delay: Some(0),
        failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
        monitor: Some(MONITOR_NS),
        max_failure_ratio: Some(0.0),
        order: None,
    });
    if matches!(update.order, None | Some(ServiceSpecUpdateConfigOrderEnum::EMPTY)) {
        update.order = Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST);
    }
    let rollback = spec.rollback_config.get_or_insert(ServiceSpecRollbackConfig {
        parallelism: Some(1),
        delay: Some(0),
        failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
        monitor: Some(MONITOR_NS),
        max_failure_ratio: Some(0.0),
        order: None,
    });
    if matches!(rollback.order, None | Some(ServiceSpecRollbackConfigOrderEnum::EMPTY)) {
        rollback.order = Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST);
    }
}

/// Whether a task's replacement may run beside it for a moment.
fn copies_can_overlap(spec: &ServiceSpec) -> bool {
    let replicated = spec.mode.as_ref().is_some_and(|m| m.replicated.is_some());
    let task = spec.task_template.as_ref();
    let shares_storage = task.and_then(|t| t.container_spec.as_ref()).and_then(|c| c.mounts.as_ref()).is_some_and(|mounts| {
        mounts.iter().any(|m| matches!(m.typ, Some(MountType::VOLUME | MountType::BIND | MountType::CLUSTER) | None))
    });
    let limited_per_node = task.and_then(|t| t.placement.as_ref()).and_then(|p| p.max_replicas).is_some_and(|n| n > 0);
    let fixed_host_port = spec.endpoint_spec.as_ref().and_then(|e| e.ports.as_ref()).is_some_and(|ports| {
        ports
            .iter()
            .any(|p| p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST) && p.published_port.is_some_and(|n| n > 0))
    });
    replicated && !shares_storage && !limited_per_node && !fixed_host_port
}

#[cfg(test)]
mod tests {
    use bollard::models::{
        EndpointPortConfig, EndpointSpec, Mount, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
        TaskSpecPlacement,
    };

    use super::*;

    fn replicated() -> ServiceSpec {
        ServiceSpec {
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(2) }),
                ..Default::default()
            }),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec { mounts: Some(vec![]), ..Default::default() }),
                placement: Some(TaskSpecPlacement { max_replicas: Some(0), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_mount(typ: MountType) -> ServiceSpec {
        let mut spec = replicated();
        spec.task_template.as_mut().unwrap().container_spec.as_mut().unwrap().mounts =
            Some(vec![Mount { typ: Some(typ), ..Default::default() }]);
        spec
    }

    /// Published in host mode on `published` (0: a port the engine picks per task).
    fn with_host_port(published: i64) -> ServiceSpec {
        let mut spec = replicated();
        spec.endpoint_spec = Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(80),
                published_port: Some(published),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
            ..Default::default()
        });
        spec
    }

    fn orders(spec: &ServiceSpec) -> (Option<ServiceSpecUpdateConfigOrderEnum>, Option<ServiceSpecRollbackConfigOrderEnum>) {
        (spec.update_config.as_ref().and_then(|u| u.order), spec.rollback_config.as_ref().and_then(|r| r.order))
    }

    #[test]
    fn a_routed_stateless_service_starts_first_with_swarms_other_defaults() {
        let mut spec = replicated();
        start_first_by_default(&mut spec, true);
        let update = spec.update_config.clone().unwrap();
        assert_eq!(update.order, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
        assert_eq!((update.parallelism, update.delay, update.monitor), (Some(1), Some(0), Some(MONITOR_NS)));
        assert_eq!(update.failure_action, Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE));
        assert_eq!(orders(&spec).1, Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST));
    }

    #[test]
    fn a_declared_order_and_the_rest_of_a_declared_config_are_kept() {
        let mut spec = replicated();
        spec.update_config = Some(ServiceSpecUpdateConfig {
            parallelism: Some(2),
            order: Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
            ..Default::default()
        });
        spec.rollback_config = Some(ServiceSpecRollbackConfig {
            parallelism: Some(3),
            order: Some(ServiceSpecRollbackConfigOrderEnum::EMPTY),
            ..Default::default()
        });
        start_first_by_default(&mut spec, true);
        assert_eq!(
            orders(&spec),
            (Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST), Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST))
        );
        assert_eq!(spec.update_config.unwrap().parallelism, Some(2));
        assert_eq!(spec.rollback_config.unwrap().parallelism, Some(3), "only an unset order is filled in");
    }

    #[test]
    fn services_whose_copies_could_not_overlap_keep_swarms_default() {
        let unrouted = replicated();
        let mut global = replicated();
        global.mode = Some(ServiceSpecMode { global: Some(Default::default()), ..Default::default() });
        let volume = with_mount(MountType::VOLUME);
        let bind = with_mount(MountType::BIND);
        let mut limited = replicated();
        limited.task_template.as_mut().unwrap().placement.as_mut().unwrap().max_replicas = Some(1);
        let fixed_port = with_host_port(8080);
        for (what, mut spec, routed) in [
            ("unrouted", unrouted, false),
            ("global", global, true),
            ("volume", volume, true),
            ("bind mount", bind, true),
            ("one per node", limited, true),
            ("fixed host port", fixed_port, true),
        ] {
            start_first_by_default(&mut spec, routed);
            assert_eq!(orders(&spec), (None, None), "{what}");
        }

        let mut tmpfs_and_ephemeral_port = with_host_port(0);
        tmpfs_and_ephemeral_port.task_template = with_mount(MountType::TMPFS).task_template;
        start_first_by_default(&mut tmpfs_and_ephemeral_port, true);
        assert_eq!(orders(&tmpfs_and_ephemeral_port).0, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
    }
}
