//! Berth's one extension of the stack's service spec (documented in README's routing section): every
//! target port a route may reach gets a host-mode port with no fixed published port, so each task is
//! given its own ephemeral port on its node (read back from the task's status) and replicas on one
//! node never collide. The router reaches tasks there: no routing mesh, no virtual IP, no DNS.

use std::collections::BTreeSet;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec, ServiceSpec,
};

/// Adds a host-mode TCP port for each routed target the spec does not already publish in host mode.
pub fn publish_routed(spec: &mut ServiceSpec, targets: &BTreeSet<u16>) {
    if targets.is_empty() {
        return;
    }
    let endpoint = spec.endpoint_spec.get_or_insert_with(EndpointSpec::default);
    let ports = endpoint.ports.get_or_insert_with(Vec::new);
    for target in targets {
        let published_in_host_mode = ports.iter().any(|p| {
            p.target_port == Some(i64::from(*target))
                && p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST)
                && matches!(p.protocol, Some(EndpointPortConfigProtocolEnum::TCP | EndpointPortConfigProtocolEnum::EMPTY) | None)
        });
        if !published_in_host_mode {
            ports.push(EndpointPortConfig {
                name: None,
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(*target)),
                published_port: Some(0),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_targets_get_a_host_port_once() {
        let host = |target: i64, published: i64| EndpointPortConfig {
            name: None,
            protocol: Some(EndpointPortConfigProtocolEnum::TCP),
            target_port: Some(target),
            published_port: Some(published),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
        };
        let ingress = EndpointPortConfig { publish_mode: Some(EndpointPortConfigPublishModeEnum::INGRESS), ..host(80, 8080) };
        let mut spec = ServiceSpec {
            endpoint_spec: Some(EndpointSpec { ports: Some(vec![ingress.clone(), host(90, 9090)]), ..Default::default() }),
            ..Default::default()
        };
        publish_routed(&mut spec, &[80, 90].into_iter().collect());
        let ports = spec.endpoint_spec.unwrap().ports.unwrap();
        assert_eq!(ports, [ingress, host(90, 9090), host(80, 0)]);

        let mut bare = ServiceSpec::default();
        publish_routed(&mut bare, &BTreeSet::new());
        assert!(bare.endpoint_spec.is_none(), "a service without routes keeps the stack's spec");
    }
}
