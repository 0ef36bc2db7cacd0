//! The `local` provider: every node is a network namespace on this host with its own dockerd.
//!
//! A cluster gets a bridge (`berth-br<N>`) with the /24 `10.213.<N>.0`, the host at `.1`. A node is:
//! - a network namespace `berth-<cluster>-<host>` joined to the bridge by a veth pair, at `10.213.<N>.<host>`;
//! - a dockerd started inside it with its own mount, UTS (hostname) and PID namespaces, its own data and
//!   exec roots, a resolv.conf that fails fast (there is no DNS in the namespace), and its API served
//!   only on `tcp://<address>:2376` with TLS client-certificate verification, and its own `/etc/docker`
//!   that trusts the built-in registry's CA (`certs.d/<registry address>/ca.crt`).
//!
//! The dockerd is the first process of its PID namespace, so killing it ends every process of the node
//! (containerd, shims, containers) and, with them, the private mount namespace and its overlay mounts.
//! Nodes are started detached (`setsid -f`), so they outlive a Berth process that crashes, as machines
//! would; Berth finds them again through `/proc`, never through PID files (a PID file written inside
//! the node holds the PID as the node sees it).

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use uuid::Uuid;

use super::{BoxFut, EngineTls, NodeProvider, NodeSpec, NodeState, Presence};
use crate::registry::RegistryTrust;

/// The TCP port every engine serves its TLS API on.
pub const ENGINE_PORT: u16 = 2376;

pub struct LocalProvider {
    /// Where node directories live (`<data_dir>/nodes`).
    nodes_root: PathBuf,
    /// One marker file per bridge this Berth made (`<data_dir>/networks/<bridge>`), so everything it
    /// made on the host can be found again.
    networks_root: PathBuf,
    /// Runtime state (exec roots), kept short because unix socket paths are limited to 107 bytes.
    run_root: PathBuf,
    /// The built-in registry every node trusts (its address and the platform CA).
    registry: Option<RegistryTrust>,
}

impl LocalProvider {
    pub fn new(data_dir: &Path, registry: Option<RegistryTrust>) -> Self {
        LocalProvider {
            nodes_root: data_dir.join("nodes"),
            networks_root: data_dir.join("networks"),
            run_root: PathBuf::from("/run/berth"),
            registry,
        }
    }

    pub fn bridge(network: i32) -> String {
        format!("berth-br{network}")
    }

    pub fn gateway(network: i32) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, network as u8, 1)
    }

    fn netns(cluster: Uuid, host: u8) -> String {
        let id = cluster.simple().to_string();
        format!("berth-{}-{host}", &id[id.len() - 8..])
    }

    fn veth(network: i32, host: u8) -> String {
        format!("bv{network}x{host}")
    }

    fn node_dir(&self, netns: &str) -> PathBuf {
        self.nodes_root.join(netns)
    }

    fn host_of(spec: &NodeSpec) -> anyhow::Result<(Ipv4Addr, u8, String)> {
        let Some(IpAddr::V4(addr)) = spec.state.address else { bail!("node {} has no address planned", spec.name) };
        let host = addr.octets()[3];
        let netns = spec.state.handle.clone().unwrap_or_else(|| Self::netns(spec.cluster_id, host));
        Ok((addr, host, netns))
    }
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out =
        Command::new(program).args(args).stdin(Stdio::null()).output().await.with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Processes whose network namespace is `netns`, with whether each is the first process of its own
/// PID namespace (the node's init: dockerd).
fn processes_in(netns: &str) -> Vec<(i32, bool, String)> {
    let Ok(ns) = std::fs::metadata(format!("/run/netns/{netns}")) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(net) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else { continue };
        if net.ino() != ns.ino() || net.dev() != ns.dev() {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ns_init = status.lines().find_map(|l| l.strip_prefix("NSpid:")).is_some_and(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() > 1 && ids.last() == Some(&"1")
        });
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned();
        found.push((pid, ns_init, comm));
    }
    found
}

/// The cluster id in a bridge's alias, or `None` when there is no such bridge.
async fn bridge_owner(bridge: &str) -> Option<String> {
    let out = run("ip", &["-o", "link", "show", bridge]).await.ok()?;
    Some(out.split(" alias ").nth(1).map(|a| a.trim().to_owned()).unwrap_or_default())
}

/// The cluster that owns network `n`'s bridge on this host, if the bridge exists.
pub async fn network_owner(n: i32) -> Option<String> {
    bridge_owner(&LocalProvider::bridge(n)).await
}

/// Network numbers whose bridge already exists on this host (made by any Berth).
pub async fn networks_in_use() -> anyhow::Result<Vec<i32>> {
    let out = run("ip", &["-o", "link", "show", "type", "bridge"]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter_map(|name| name.split('@').next()?.strip_prefix("berth-br")?.parse().ok())
        .collect())
}

impl LocalProvider {
    /// Destroys every node and network this Berth made under its data directory, without a database
    /// or an async runtime: for tests cleaning up after a failure, and for operators starting over.
    pub fn destroy_all_blocking(&self) {
        use std::process::Command as StdCommand;
        for entry in std::fs::read_dir(&self.nodes_root).into_iter().flatten().flatten() {
            let netns = entry.file_name().to_string_lossy().into_owned();
            kill_node_processes(&netns);
            let _ = StdCommand::new("ip").args(["netns", "del", &netns]).status();
            let _ = std::fs::remove_dir_all(entry.path());
            let _ = std::fs::remove_dir_all(self.run_root.join(&netns));
        }
        for entry in std::fs::read_dir(&self.networks_root).into_iter().flatten().flatten() {
            let bridge = entry.file_name().to_string_lossy().into_owned();
            let _ = StdCommand::new("ip").args(["link", "del", &bridge]).status();
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether the node's dockerd — the first process of its PID namespace — is running.
fn engine_running(netns: &str) -> bool {
    processes_in(netns).iter().any(|(_, init, comm)| *init && comm == "dockerd")
}

/// Ends every process of a node and waits (at most 10 s) until none is left. Killing the PID
/// namespace's first process ends the rest of the node at once; anything still in the network
/// namespace after a second (a stray `nsenter`) is killed too. Blocking; returns whether none remain.
fn kill_node_processes(netns: &str) -> bool {
    for attempt in 0..100 {
        let procs = processes_in(netns);
        if procs.is_empty() {
            return true;
        }
        for (pid, init, _) in &procs {
            if *init || attempt > 10 {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    processes_in(netns).is_empty()
}

fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

impl NodeProvider for LocalProvider {
    fn ensure_network<'a>(&'a self, cluster: Uuid, network: i32) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let br = Self::bridge(network);
            // The bridge's alias names its cluster: a bridge of the same name made for another cluster (by
            // another Berth on this host) is never taken over.
            match bridge_owner(&br).await {
                Some(owner) if owner != cluster.to_string() => {
                    bail!("{br} belongs to another cluster ({owner}) on this host");
                }
                Some(_) => {}
                None => {
                    std::fs::create_dir_all(&self.networks_root)?;
                    std::fs::write(self.networks_root.join(&br), cluster.to_string())?;
                    run("ip", &["link", "add", &br, "type", "bridge"]).await?;
                    run("ip", &["link", "set", &br, "alias", &cluster.to_string()]).await?;
                }
            }
            let cidr = format!("{}/24", Self::gateway(network));
            let addrs = run("ip", &["-4", "addr", "show", "dev", &br]).await?;
            if !addrs.contains(&cidr) {
                run("ip", &["addr", "add", &cidr, "dev", &br]).await?;
            }
            run("ip", &["link", "set", &br, "up"]).await?;
            // A host dockerd sets the FORWARD policy to DROP and sends bridged traffic through DOCKER-USER:
            // let the cluster's nodes talk to each other (Swarm joins time out otherwise).
            if succeeds("iptables", &["-n", "-L", "DOCKER-USER"]).await
                && !succeeds("iptables", &["-C", "DOCKER-USER", "-i", &br, "-o", &br, "-j", "ACCEPT"]).await
            {
                run("iptables", &["-I", "DOCKER-USER", "-i", &br, "-o", &br, "-j", "ACCEPT"]).await?;
            }
            Ok(())
        })
    }

    fn destroy_network<'a>(&'a self, cluster: Uuid, network: i32) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let br = Self::bridge(network);
            while succeeds("iptables", &["-C", "DOCKER-USER", "-i", &br, "-o", &br, "-j", "ACCEPT"]).await {
                run("iptables", &["-D", "DOCKER-USER", "-i", &br, "-o", &br, "-j", "ACCEPT"]).await?;
            }
            if bridge_owner(&br).await.is_some_and(|o| o == cluster.to_string()) {
                run("ip", &["link", "del", &br]).await?;
            }
            let _ = std::fs::remove_file(self.networks_root.join(&br));
            Ok(())
        })
    }

    fn plan_node<'a>(&'a self, spec: &'a NodeSpec, taken: &'a [IpAddr]) -> BoxFut<'a, NodeState> {
        Box::pin(async move {
            if spec.state.address.is_some() && spec.state.handle.is_some() {
                return Ok(spec.state.clone());
            }
            let host = (10u8..=250)
                .find(|h| !taken.contains(&IpAddr::V4(Ipv4Addr::new(10, 213, spec.network as u8, *h))))
                .context("the cluster network has no free address")?;
            Ok(NodeState {
                address: Some(IpAddr::V4(Ipv4Addr::new(10, 213, spec.network as u8, host))),
                handle: Some(Self::netns(spec.cluster_id, host)),
            })
        })
    }

    fn start_node<'a>(&'a self, spec: &'a NodeSpec, tls: &'a EngineTls) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let (addr, host, netns) = Self::host_of(spec)?;
            let br = Self::bridge(spec.network);
            let veth = Self::veth(spec.network, host);
            if !Path::new(&format!("/run/netns/{netns}")).exists() {
                run("ip", &["netns", "add", &netns]).await?;
            }
            if !succeeds("ip", &["-n", &netns, "link", "show", "eth0"]).await {
                // A half-made pair from an interrupted run would block the name.
                let _ = run("ip", &["link", "del", &veth]).await;
                run("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns]).await?;
            }
            run("ip", &["link", "set", &veth, "master", &br, "up"]).await?;
            let cidr = format!("{addr}/24");
            if !run("ip", &["-n", &netns, "-4", "addr", "show", "dev", "eth0"]).await?.contains(&cidr) {
                run("ip", &["-n", &netns, "addr", "add", &cidr, "dev", "eth0"]).await?;
            }
            run("ip", &["-n", &netns, "link", "set", "eth0", "up"]).await?;
            run("ip", &["-n", &netns, "link", "set", "lo", "up"]).await?;
            let gw = Self::gateway(spec.network).to_string();
            if !run("ip", &["-n", &netns, "route", "show", "default"]).await?.contains(&gw) {
                run("ip", &["-n", &netns, "route", "replace", "default", "via", &gw]).await?;
            }

            let dir = self.node_dir(&netns);
            let certs = dir.join("certs");
            let exec = self.run_root.join(&netns);
            for d in [dir.join("data"), certs.clone(), exec.clone()] {
                std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            }
            std::fs::write(certs.join("ca.pem"), &tls.ca_cert)?;
            std::fs::write(certs.join("server.pem"), &tls.server.cert)?;
            write_secret(&certs.join("server-key.pem"), &tls.server.key)?;
            // Nothing resolves inside a node: answer "no" at once instead of after a 20 s timeout.
            std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")?;
            // The node's own /etc/docker (mounted over the host's in its mount namespace): its own engine
            // key, and the platform CA as the built-in registry's CA, which is how Docker trusts a
            // registry without `insecure-registries`.
            let etc_docker = dir.join("etc-docker");
            std::fs::create_dir_all(&etc_docker)?;
            if let Some(trust) = &self.registry {
                let certs_d = etc_docker.join("certs.d").join(&trust.address);
                std::fs::create_dir_all(&certs_d)?;
                std::fs::write(certs_d.join("ca.crt"), &trust.ca_pem)?;
            }

            if engine_running(&netns) {
                return Ok(());
            }
            // The exec root is runtime state; after a crash its PID file and sockets only stop dockerd
            // from starting again.
            std::fs::remove_dir_all(&exec).ok();
            std::fs::create_dir_all(&exec)?;
            let d = dir.display();
            let script = format!(
                "hostname {name} && mount --bind {d}/resolv.conf /etc/resolv.conf && mkdir -p /etc/docker && \
                 mount --bind {d}/etc-docker /etc/docker && exec dockerd \
                 --data-root {d}/data --exec-root {exec} --pidfile {exec}/docker.pid \
                 -H tcp://{addr}:{ENGINE_PORT} --tlsverify --tlscacert {d}/certs/ca.pem \
                 --tlscert {d}/certs/server.pem --tlskey {d}/certs/server-key.pem",
                name = spec.name,
                exec = exec.display(),
            );
            let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dockerd.log"))?;
            let status = Command::new("setsid")
                .args([
                    "-f",
                    "nsenter",
                    &format!("--net=/run/netns/{netns}"),
                    "unshare",
                    "--mount",
                    "--uts",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                ])
                .args(["sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .status()
                .await
                .context("starting the node's dockerd")?;
            if !status.success() {
                bail!("could not start dockerd for node {}", spec.name);
            }
            // The engine is up when its TLS port accepts connections.
            let started = Instant::now();
            let deadline = started + Duration::from_secs(60);
            let target = std::net::SocketAddr::new(IpAddr::V4(addr), ENGINE_PORT);
            loop {
                if tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(target))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    return Ok(());
                }
                // A dockerd that exited (bad flags, a stale lock) will not come up: say why now, not in 60 s.
                let exited = started.elapsed() > Duration::from_secs(3) && !engine_running(&netns);
                if exited || Instant::now() > deadline {
                    let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    bail!("dockerd of node {} did not come up: {}", spec.name, tail.join(" | "));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    fn destroy_node<'a>(&'a self, spec: &'a NodeSpec) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let Ok((_, host, netns)) = Self::host_of(spec) else { return Ok(()) };
            let ns = netns.clone();
            if !tokio::task::spawn_blocking(move || kill_node_processes(&ns)).await? {
                bail!("processes of node {} would not exit", spec.name);
            }
            if Path::new(&format!("/run/netns/{netns}")).exists() {
                run("ip", &["netns", "del", &netns]).await?;
            }
            let veth = Self::veth(spec.network, host);
            if succeeds("ip", &["link", "show", &veth]).await {
                run("ip", &["link", "del", &veth]).await?;
            }
            for dir in [self.node_dir(&netns), self.run_root.join(&netns)] {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
                }
            }
            Ok(())
        })
    }

    fn describe<'a>(&'a self, spec: &'a NodeSpec) -> BoxFut<'a, Presence> {
        Box::pin(async move {
            let Ok((_, _, netns)) = Self::host_of(spec) else { return Ok(Presence::Absent) };
            if !Path::new(&format!("/run/netns/{netns}")).exists() {
                return Ok(Presence::Absent);
            }
            Ok(if engine_running(&netns) { Presence::Running } else { Presence::Stopped })
        })
    }
}

/// Whether this host's kernel has IPVS, which Swarm's routing mesh and virtual IPs need (local nodes
/// share the host's kernel): loaded, built in, or available as a module.
pub fn kernel_has_ipvs() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let module_dir = format!("/lib/modules/{}/kernel/net/netfilter/ipvs", release.trim());
    std::path::Path::new("/proc/net/ip_vs").exists()
        || std::path::Path::new("/sys/module/ip_vs").exists()
        || std::fs::read_dir(module_dir)
            .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("ip_vs."))))
}
