//! What a cluster without IPVS in its kernel cannot do, said as warnings: Swarm's routing mesh (every
//! ingress-mode published port) and virtual-IP balancing (a service reached by name with the default
//! `endpoint_mode: vip`) both need it. The specs stay exactly what `docker stack deploy` would make;
//! the user learns what will not answer and what to write instead.

use super::Diagnostics;
use super::model::Project;

pub fn warn_without_ipvs(project: &Project, diags: &mut Diagnostics) {
    let several = project.services.len() > 1;
    for svc in project.services.values() {
        for port in &svc.ports {
            if port.mode != "host" {
                diags.warn(
                    &port.spot.path,
                    port.spot.line,
                    port.spot.column,
                    "published through Swarm's routing mesh, which this cluster cannot serve (its kernel has no IPVS): \
                     the port will not answer (Berth's router still reaches the service at its routes); \
                     to publish it on the nodes, write it in the long syntax with `mode: host`",
                );
            }
        }
        if several && svc.deploy.endpoint_mode.as_deref() != Some("dnsrr") {
            diags.warn(
                &format!("{}.deploy.endpoint_mode", svc.spot.path),
                svc.spot.line,
                svc.spot.column,
                "other services reach this one by name through a virtual IP, which needs IPVS (absent on this cluster): \
                 set `endpoint_mode: dnsrr`",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::applications::compose::{Input, load, policy::Policy};

    #[test]
    fn ingress_ports_and_vips_are_warned_about() {
        let text = "version: '3.8'\nservices:\n  a:\n    image: x\n    ports: ['80:80', {target: 81, published: 81, mode: host}]\n  b:\n    image: x\n    deploy: {endpoint_mode: dnsrr}\n";
        let empty = BTreeMap::new();
        let loaded = load(&Input { text, files: &empty, variables: &empty }, &Policy::default()).unwrap();
        let mut diags = Diagnostics::default();
        warn_without_ipvs(&loaded.project, &mut diags);
        let paths: Vec<&str> = diags.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(paths, ["services.a.ports[0]", "services.a.deploy.endpoint_mode"]);
    }
}
