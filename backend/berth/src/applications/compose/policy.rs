//! Admission policy: what a tenant's Compose file may ask of the nodes it runs on. Platform admins set
//! it per tenant; the defaults are safe for mutually untrusting tenants sharing a platform.
//!
//! A rejection is an error at the offending key's path, so nothing reaches the engine. Besides
//! refusing, the policy gives every service a memory limit (its reservation, else the platform default)
//! so that one tenant cannot starve a node.

use super::Diagnostics;
use super::model::{Project, Spot, VolumeKind};

/// Capabilities a container has by default under Docker: adding one of these changes nothing.
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

const DOCKER_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run"];

/// The policy's settings; the type lives with the API's types.
pub type Policy = berth_types::AdmissionPolicy;

/// Checks the project against `policy` and fills in memory limits. Errors name the key that breaks the
/// policy.
pub fn check(policy: &Policy, project: &mut Project, diags: &mut Diagnostics) {
    let refuse = |diags: &mut Diagnostics, spot: &Spot, what: &str| {
        diags.error(&spot.path, spot.line, spot.column, format!("{what} is not allowed by this tenant's admission policy"));
    };
    for svc in project.services.values_mut() {
        for (key, value, spot) in &svc.host_access {
            let harmful = match key.as_str() {
                "privileged" => value == "true",
                "network_mode" | "pid" | "ipc" | "userns_mode" => value == "host",
                "devices" => !value.is_empty(),
                "security_opt" => value.contains("unconfined") || value.contains("disable"),
                "cgroup_parent" => !value.is_empty(),
                _ => false,
            };
            if harmful && !policy.allow_host_access {
                refuse(diags, spot, &format!("`{key}: {value}`"));
            }
        }
        for v in &svc.volumes {
            if v.kind != VolumeKind::Bind {
                continue;
            }
            let source = v.source.as_deref().unwrap_or_default().trim_end_matches('/');
            if DOCKER_SOCKETS.contains(&source) && !policy.allow_docker_socket {
                refuse(diags, &v.spot, "mounting the Docker socket");
            } else if !policy.allow_bind_mounts {
                refuse(
                    diags,
                    &v.spot,
                    &format!("a bind mount of the host path `{}`", if source.is_empty() { "/" } else { source }),
                );
            }
        }
        for (cap, spot) in &svc.cap_add {
            let normal = super::convert::capabilities(std::iter::once(cap.as_str()), std::iter::empty()).0;
            for c in normal {
                let allowed = DEFAULT_CAPABILITIES.contains(&c.as_str())
                    || policy.allowed_capabilities.iter().any(|a| a.eq_ignore_ascii_case(&c));
                if !allowed {
                    refuse(diags, spot, &format!("adding the capability {c}"));
                }
            }
        }
        for (constraint, spot) in svc.deploy.constraints.iter().flatten() {
            let c: String = constraint.chars().filter(|c| !c.is_whitespace()).collect();
            if (c == "node.role==manager" || c == "node.role!=worker") && !policy.allow_manager_placement {
                refuse(diags, spot, "placing tasks on manager nodes");
            }
        }
        if let Some(nets) = &svc.networks {
            for key in nets.keys() {
                let Some(net) = project.networks.get(key) else { continue };
                let name = net.name.as_deref().unwrap_or(key);
                if net.external && name == "host" && !policy.allow_host_access {
                    refuse(diags, &svc.spot, &format!("joining the host network (`networks.{key}`)"));
                }
            }
        }
        // Every service gets a memory limit: its own, else its reservation, else the platform default.
        let limit = svc.deploy.limits.get_or_insert_with(Default::default);
        if limit.memory == 0 {
            let reserved = svc.deploy.reservations.as_ref().map_or(0, |r| r.memory);
            limit.memory = if reserved > 0 { reserved } else { policy.default_memory_limit_mb * 1024 * 1024 };
            diags.warn(
                &format!("{}.deploy.resources.limits.memory", svc.spot.path),
                svc.spot.line,
                svc.spot.column,
                format!("no memory limit: limited to {} MiB", limit.memory / (1024 * 1024)),
            );
        }
    }
    for (key, vol) in &project.volumes {
        // The local driver can mount a host path as a "volume" (`o: bind`, `device: /path`).
        let opts = vol.driver_opts.as_ref();
        let binds = opts.is_some_and(|o| {
            o.get("o").is_some_and(|v| v.split(',').any(|x| x == "bind")) || o.get("device").is_some_and(|d| d.starts_with('/'))
        });
        if binds && !policy.allow_bind_mounts {
            diags.error(
                &format!("volumes.{key}.driver_opts"),
                1,
                1,
                "a volume that mounts a host path is not allowed by this tenant's admission policy",
            );
        }
    }
}
