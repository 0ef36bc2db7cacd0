//! Which `existing` swarms tenants may make Berth connect to.
//!
//! Adopting a swarm makes Berth open connections from inside the operator's network to an address a
//! tenant chose, so the operator decides where those may go: unix sockets only under listed directories
//! (a socket on the Berth host is root on the Berth host), TCP endpoints only inside listed networks.
//! Both lists are empty by default, which turns adoption off. The same rules are checked when a cluster
//! is registered (a 422 naming the rule) and again each time Berth connects, so narrowing a list takes
//! effect for clusters already registered.
//!
//! TCP endpoints must name the manager by IP address. A host name would be resolved when it is checked
//! and again when Berth connects, and whoever controls its DNS could answer differently the second time
//! (DNS rebinding); an address cannot change between the check and the connection.

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use clap::Args;
use ipnet::IpNet;

#[derive(Debug, Clone, Default, Args)]
pub struct ExistingPolicy {
    /// Directories (comma-separated) under which tenants may register `existing` clusters by unix
    /// socket. Empty by default: a socket on the Berth host is root on the Berth host, so only the
    /// operator can decide which sockets tenants may reach.
    #[arg(long, env = "BERTH_EXISTING_SOCKET_DIRS", value_delimiter = ',')]
    pub existing_socket_dirs: Vec<PathBuf>,

    /// Networks (comma-separated CIDRs, e.g. `10.20.0.0/16,fd00::/8`) inside which tenants may register
    /// `existing` clusters by `tcp://address:port`. Empty by default, which turns TCP adoption off: Berth
    /// would otherwise open connections to any address a tenant names, from inside your network.
    #[arg(long, env = "BERTH_EXISTING_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub existing_allowed_networks: Vec<IpNet>,
}

/// An endpoint that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ExistingPolicy {
    /// Parses `endpoint` and checks it against the operator's lists. The error says which rule refused it.
    pub fn check(&self, endpoint: &str) -> Result<Endpoint, String> {
        if let Some(path) = endpoint.strip_prefix("unix://") {
            let path = Path::new(path);
            let allowed = path.is_absolute()
                && !path.components().any(|c| c == Component::ParentDir)
                && self.existing_socket_dirs.iter().any(|dir| path.starts_with(dir));
            if !allowed {
                return Err("unix sockets are accepted only under the directories this Berth's operator allows \
                     (BERTH_EXISTING_SOCKET_DIRS)"
                    .to_owned());
            }
            return Ok(Endpoint::Unix(path.to_path_buf()));
        }
        let Some(host_port) = endpoint.strip_prefix("tcp://") else {
            return Err("must be `tcp://address:port` or `unix:///path`".to_owned());
        };
        let Some((host, port)) = host_port.rsplit_once(':') else {
            return Err("must be `tcp://address:port` or `unix:///path`".to_owned());
        };
        let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or("the port must be a number from 1 to 65535")?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let Ok(ip) = host.parse::<IpAddr>() else {
            return Err("name the manager by IP address (`tcp://10.20.0.5:2376`): a host name could resolve \
                 elsewhere between Berth's check and its connection"
                .to_owned());
        };
        if self.existing_allowed_networks.is_empty() {
            return Err(
                "adopting swarms over TCP is turned off on this Berth (BERTH_EXISTING_ALLOWED_NETWORKS is empty)".to_owned()
            );
        }
        if !self.existing_allowed_networks.iter().any(|net| net.contains(&ip)) {
            let nets = self.existing_allowed_networks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            return Err(format!(
                "{ip} is outside the networks this Berth's operator allows (BERTH_EXISTING_ALLOWED_NETWORKS: {nets})"
            ));
        }
        Ok(Endpoint::Tcp(SocketAddr::new(ip, port)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(nets: &[&str], dirs: &[&str]) -> ExistingPolicy {
        ExistingPolicy {
            existing_socket_dirs: dirs.iter().map(PathBuf::from).collect(),
            existing_allowed_networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn tcp_only_inside_allowed_networks_and_by_address() {
        let p = policy(&["10.213.0.0/16", "fd00::/8"], &[]);
        assert_eq!(p.check("tcp://10.213.4.2:2376"), Ok(Endpoint::Tcp("10.213.4.2:2376".parse().unwrap())));
        assert_eq!(p.check("tcp://[fd00::1]:2376"), Ok(Endpoint::Tcp("[fd00::1]:2376".parse().unwrap())));
        assert!(
            p.check("tcp://127.0.0.1:2376").unwrap_err().contains("BERTH_EXISTING_ALLOWED_NETWORKS: 10.213.0.0/16, fd00::/8")
        );
        assert!(p.check("tcp://manager.example:2376").unwrap_err().contains("by IP address"));
        assert!(p.check("tcp://10.213.4.2:0").unwrap_err().contains("port"));
        assert!(p.check("tcp://10.213.4.2").is_err());
        assert!(p.check("http://10.213.4.2:2376").is_err());
        let off = policy(&[], &[]);
        assert!(off.check("tcp://10.213.4.2:2376").unwrap_err().contains("turned off"));
    }

    #[test]
    fn sockets_only_under_allowed_directories() {
        let p = policy(&[], &["/run/allowed"]);
        assert_eq!(p.check("unix:///run/allowed/docker.sock"), Ok(Endpoint::Unix("/run/allowed/docker.sock".into())));
        assert!(p.check("unix:///run/allowed/../docker.sock").is_err());
        assert!(p.check("unix:///var/run/docker.sock").is_err());
        assert!(p.check("unix://relative.sock").is_err());
    }
}
