//! A router: keeps one HAProxy in step with the route table. It reads the whole table when the
//! database announces a change (`berth_routes`) and at least every two seconds, and applies the
//! difference with what HAProxy has: servers (tasks coming and going, weights, draining) through the
//! Runtime API, anything else (routes, their options) through a checked reload. It remembers nothing
//! the table cannot give back: a restarted router starts HAProxy on the table as it is.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use super::applied;
use super::haproxy::{Haproxy, Setup};
use super::haproxy_config::server_options;
use super::table::{self, Scope, Server, Table};
use super::traffic::{self, Meters};
use crate::crypto::Keys;

/// How often a router reads the table even when nothing was announced.
const RESYNC: Duration = Duration::from_secs(2);

/// What it takes to bring HAProxy from one table to another.
#[derive(Debug, PartialEq)]
pub enum Change {
    Nothing,
    /// Routes or their options changed: a new configuration and a reload.
    Reload,
    /// Only servers changed: these Runtime API commands, in order.
    Live(Vec<String>),
}

/// Compares what HAProxy has with what the table wants. `acme_map` is the ACME map's path as the
/// configuration names it (challenges change live in it).
pub fn plan(applied: &Table, desired: &Table, acme_map: &std::path::Path) -> Change {
    if applied == desired {
        return Change::Nothing;
    }
    // Certificates are files HAProxy reads at start: a new, renewed or removed one needs a reload.
    if applied.certificates != desired.certificates {
        return Change::Reload;
    }
    let (before, after) = (&applied.backends, &desired.backends);
    let same_routes =
        before.len() == after.len() && before.iter().zip(after).all(|((ka, a), (kb, b))| ka == kb && a.same_shape(b));
    // HAProxy 2.6 takes no `cookie` on a server added live, so a sticky route's servers change by
    // reload (which keeps connections; stickiness survives because cookies name tasks).
    let sticky_changed = before.values().zip(after.values()).any(|(a, b)| b.sticky && a.servers != b.servers);
    // A listener opened, closed or changed protocol: a new frontend.
    let same_listeners = applied.listeners.len() == desired.listeners.len()
        && applied.listeners.values().zip(desired.listeners.values()).all(|(a, b)| (a.port, a.protocol) == (b.port, b.protocol));
    if !same_routes || sticky_changed || !same_listeners {
        return Change::Reload;
    }
    let mut commands = Vec::new();
    let map = acme_map.display();
    for token in applied.challenges.keys() {
        if !desired.challenges.contains_key(token) {
            commands.push(format!("del map {map} {token}"));
        }
    }
    for (token, answer) in &desired.challenges {
        match applied.challenges.get(token) {
            Some(was) if was == answer => {}
            Some(_) => {
                commands.push(format!("del map {map} {token}"));
                commands.push(format!("add map {map} {token} {answer}"));
            }
            None => commands.push(format!("add map {map} {token} {answer}")),
        }
    }
    for (old, new) in before.values().zip(after.values()) {
        servers(&new.name(), &old.servers, &new.servers, &mut commands);
    }
    for (old, new) in applied.listeners.values().zip(desired.listeners.values()) {
        servers(&new.name(), &old.servers, &new.servers, &mut commands);
    }
    Change::Live(commands)
}

/// The Runtime API commands that bring backend `be`'s servers from `old` to `new`. Servers that gain
/// traffic come first (added, weight raised, back from drain), then those that lose it (weight
/// lowered, drained), then those that leave: between any two commands the backend has a server able
/// to answer whenever it has one before and after (a weight moving wholly from a release's copies to
/// the application's own tasks never passes through "every weight zero").
fn servers(be: &str, old: &BTreeMap<String, Server>, new: &BTreeMap<String, Server>, out: &mut Vec<String>) {
    let remove = |name: &str, out: &mut Vec<String>| {
        out.push(format!("set server {be}/{name} state maint"));
        out.push(format!("shutdown sessions server {be}/{name}"));
        out.push(format!("del server {be}/{name}"));
    };
    let add = |name: &str, s: &Server, out: &mut Vec<String>| {
        out.push(format!("add server {be}/{name} {}", server_options(name, s, false)));
        out.push(format!("enable health {be}/{name}"));
        out.push(format!("set server {be}/{name} state {}", if s.draining { "drain" } else { "ready" }));
    };
    let (mut gain, mut lose, mut leave) = (Vec::new(), Vec::new(), Vec::new());
    for name in old.keys() {
        if !new.contains_key(name) {
            remove(name, &mut leave);
        }
    }
    for (name, s) in new {
        match old.get(name) {
            None => add(name, s, &mut gain),
            Some(was) if (&was.address, was.port) != (&s.address, s.port) => {
                remove(name, &mut gain);
                add(name, s, &mut gain);
            }
            Some(was) => {
                if was.weight != s.weight {
                    let to = if s.weight > was.weight { &mut gain } else { &mut lose };
                    to.push(format!("set server {be}/{name} weight {}", s.weight));
                }
                if was.draining != s.draining {
                    let (to, state) = if s.draining { (&mut lose, "drain") } else { (&mut gain, "ready") };
                    to.push(format!("set server {be}/{name} state {state}"));
                }
            }
        }
    }
    out.extend(gain);
    out.extend(lose);
    out.extend(leave);
}

/// Whether a Runtime API answer means the command did what it said.
fn accepted(command: &str, answer: &str) -> bool {
    let answer = answer.trim();
    if command.starts_with("add server") {
        answer.contains("New server registered")
    } else if command.starts_with("del server") {
        answer.contains("Server deleted")
    } else if command.starts_with("del map") {
        // Gone already is as good.
        answer.is_empty() || answer.contains("not found")
    } else {
        answer.is_empty()
    }
}

/// Runs a router until `stopping` turns true, restarting HAProxy whenever it exits; then records that
/// it stopped, so operators see it stopped rather than gone and no job waits for it.
/// `keys` open the certificates' private keys (the master secret's, as `berth serve` has it).
pub async fn run(db: PgPool, setup: Setup, scope: Scope, keys: Keys, mut stopping: watch::Receiver<bool>) {
    let mut pause = Duration::from_millis(200);
    loop {
        match serve(&db, &setup, &scope, &keys, &mut stopping).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), retry_in = ?pause, "the router stopped; starting it again"),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = crate::supervise::stopped(&mut stopping) => break,
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
    if let Err(e) = applied::stopped(&db, &router_name(&setup)).await {
        tracing::warn!(error = %e, "router could not record that it stopped");
    }
}

/// One life of HAProxy: started on the table as it is, then kept in step. `Ok` when asked to stop.
async fn serve(
    db: &PgPool,
    setup: &Setup,
    scope: &Scope,
    keys: &Keys,
    stopping: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut listener = crate::db::listener(db).await?;
    listener.listen("berth_routes").await?;
    let read_at = applied::now(db).await?;
    let mut applied = table::read(db, scope, keys).await?;
    let mut proxy = Haproxy::start(setup, &applied).await?;
    tracing::info!(listen = %setup.listen, routes = applied.backends.len(), certificates = applied.certificates.len(), "router serving");
    let name = router_name(setup);
    report(db, &name, read_at).await;
    let mut meter = Meters::default();
    let mut tick = tokio::time::interval(traffic::INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = record_traffic(db, &proxy, &name, &mut meter).await {
                    tracing::warn!(error = %format!("{e:#}"), "router could not record traffic");
                }
                continue;
            }
            n = listener.try_recv() => {
                // `None`: the connection was lost and announcements with it; the read below catches up.
                if let Err(e) = n { tracing::warn!(error = %e, "router lost its database listener"); tokio::time::sleep(Duration::from_millis(500)).await; }
            }
            () = tokio::time::sleep(RESYNC) => {}
            status = proxy.child.wait() => anyhow::bail!("HAProxy exited ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
            () = crate::supervise::stopped(stopping) => {
                proxy.stop().await;
                return Ok(());
            }
        }
        let read = async { Ok::<_, sqlx::Error>((applied::now(db).await?, table::read(db, scope, keys).await?)) };
        let (read_at, desired) = match read.await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "router cannot read the route table");
                continue;
            }
        };
        if plan(&applied, &desired, &setup.acme_map()) == Change::Reload
            && let Err(e) = record_traffic(db, &proxy, &name, &mut meter).await
        {
            // The old worker's counters go with it: count them first.
            tracing::warn!(error = %format!("{e:#}"), "router could not record traffic before a reload");
        }
        match apply(&mut proxy, &applied, &desired).await {
            Ok(reloaded) => {
                applied = desired;
                if reloaded {
                    // The new worker's counters start at zero.
                    meter.reset();
                }
                report(db, &name, read_at).await;
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(%error, "router kept HAProxy's current configuration");
                if let Err(e) = applied::failed(db, &name, &error).await {
                    tracing::warn!(error = %e, "router could not report its failure");
                }
            }
        }
    }
}

/// Says this router serves the table read at `read_at` (a failure only delays work that waits for it).
async fn report(db: &PgPool, name: &str, read_at: chrono::DateTime<chrono::Utc>) {
    if let Err(e) = applied::report(db, name, read_at).await {
        tracing::warn!(error = %e, "router could not report what it serves");
    }
}

/// How this router names itself in `route_traffic` and `routers`: as configured, or the machine and
/// the address it listens on.
fn router_name(setup: &Setup) -> String {
    if let Some(name) = &setup.name {
        return name.clone();
    }
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "router".into());
    format!("{host}@{}", setup.listen)
}

/// Reads HAProxy's per-backend and per-server counters (`show stat` of every proxy, types backend
/// and server) and adds what is new to the routes' traffic and to open releases', with how their
/// copies fare in their health checks.
async fn record_traffic(db: &PgPool, proxy: &Haproxy, name: &str, meter: &mut Meters) -> anyhow::Result<()> {
    let csv = proxy.command("show stat -1 6 -1").await?;
    let reading = traffic::parse(&csv);
    let at = std::time::Instant::now();
    let routes = meter.routes.read(reading.routes, at);
    let copies = meter.copies.read(reading.copies, at);
    let listeners = meter.listeners.read(reading.listeners, at);
    traffic::write(db, name, &routes).await?;
    traffic::write_listeners(db, name, &listeners).await?;
    traffic::write_copies(db, name, &copies).await?;
    traffic::write_copy_health(db, name, &reading.copy_health).await?;
    Ok(())
}

/// Brings HAProxy from `applied` to `desired`: live when only servers changed (falling back to a
/// reload if HAProxy refuses a command), else a checked reload. `true` when HAProxy reloaded.
async fn apply(proxy: &mut Haproxy, applied: &Table, desired: &Table) -> anyhow::Result<bool> {
    match plan(applied, desired, &proxy.setup.acme_map()) {
        Change::Nothing => Ok(false),
        Change::Reload => proxy.reload(desired).await.map(|()| true),
        Change::Live(commands) => {
            for command in &commands {
                let answer = proxy.command(command).await?;
                if !accepted(command, &answer) {
                    tracing::info!(command, answer = answer.trim(), "HAProxy refused a live change; reloading instead");
                    return proxy.reload(desired).await.map(|()| true);
                }
            }
            proxy.setup.write(desired).await.map(|()| false)
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::routing::table::Backend;
    use crate::routing::table::Balance;

    fn backend(route: Uuid, servers: &[(&str, u16, bool)]) -> Backend {
        Backend {
            route,
            domain: "web.shop.acme.apps.localhost".into(),
            path_prefix: "/".into(),
            balance: Balance::RoundRobin,
            sticky: false,
            timeout_secs: 60,
            max_body_bytes: None,
            https_redirect: false,
            probe_path: None,
            servers: servers
                .iter()
                .map(|(n, port, draining)| {
                    ((*n).to_owned(), Server { address: "10.213.1.2".into(), port: *port, weight: 1, draining: *draining })
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn table(b: Backend) -> Table {
        Table { backends: [(b.route, b)].into_iter().collect(), ..Default::default() }
    }

    const MAP: &str = "/r/acme.map";

    fn plan(a: &Table, b: &Table) -> Change {
        super::plan(a, b, std::path::Path::new(MAP))
    }

    #[test]
    fn servers_change_live_and_routes_by_reload() {
        let r = Uuid::now_v7();
        let be = backend(r, &[]).name();
        let before = table(backend(r, &[("t_a", 30001, false), ("t_b", 30002, false)]));
        assert_eq!(plan(&before, &before), Change::Nothing);

        let after = table(backend(r, &[("t_b", 30002, true), ("t_c", 30003, false)]));
        let Change::Live(cmds) = plan(&before, &after) else { panic!("servers alone change live") };
        assert_eq!(
            cmds,
            [
                format!("add server {be}/t_c 10.213.1.2:30003 weight 1 {}", crate::routing::haproxy_config::SERVER_CHECK),
                format!("enable health {be}/t_c"),
                format!("set server {be}/t_c state ready"),
                format!("set server {be}/t_b state drain"),
                format!("set server {be}/t_a state maint"),
                format!("shutdown sessions server {be}/t_a"),
                format!("del server {be}/t_a"),
            ],
            "the newcomer serves before the others drain or leave"
        );

        // A release promoted: every weight moves from the copy to the application's own task. The
        // own task is raised before the copy is lowered, so no moment has every weight at zero.
        let mut split = backend(r, &[("t_own", 30001, false), ("c_new", 30002, false)]);
        split.servers.get_mut("t_own").unwrap().weight = 0;
        let mut back = split.clone();
        back.servers.get_mut("t_own").unwrap().weight = 100;
        back.servers.get_mut("c_new").unwrap().weight = 0;
        split.servers.get_mut("c_new").unwrap().weight = 100;
        assert_eq!(
            plan(&table(split), &table(back)),
            Change::Live(vec![format!("set server {be}/t_own weight 100"), format!("set server {be}/c_new weight 0")])
        );

        let mut sticky = backend(r, &[("t_b", 30002, false)]);
        sticky.sticky = true;
        assert_eq!(plan(&before, &table(sticky.clone())), Change::Reload, "an option of the route needs a reload");
        let mut sticky_more = sticky.clone();
        sticky_more
            .servers
            .insert("t_c".into(), Server { address: "10.213.1.3".into(), port: 30003, weight: 1, draining: false });
        assert_eq!(plan(&table(sticky), &table(sticky_more)), Change::Reload, "a sticky route's servers change by reload");
        let mut two = before.clone();
        let other = backend(Uuid::now_v7(), &[]);
        two.backends.insert(other.route, other);
        assert_eq!(plan(&before, &two), Change::Reload, "a new route needs a reload");
    }

    #[test]
    fn challenges_change_live_and_certificates_by_reload() {
        let r = Uuid::now_v7();
        let before = table(backend(r, &[("t_a", 30001, false)]));
        let mut asked = before.clone();
        asked.challenges.insert("tok".into(), "tok.print".into());
        assert_eq!(plan(&before, &asked), Change::Live(vec![format!("add map {MAP} tok tok.print")]));
        assert_eq!(plan(&asked, &before), Change::Live(vec![format!("del map {MAP} tok")]));
        let mut issued = before.clone();
        issued
            .certificates
            .insert(Uuid::now_v7(), crate::routing::table::Certificate { domain: "a.test".into(), pem: "x".into() });
        assert_eq!(plan(&before, &issued), Change::Reload);
        assert!(accepted("del map /r/acme.map tok", "Key not found.\n"));
        assert!(accepted("add map /r/acme.map tok v", "\n"));
    }

    #[test]
    fn answers_are_read_per_command() {
        assert!(accepted("add server r_x/t_a 1.2.3.4:5", "New server registered.\n"));
        assert!(!accepted("add server r_x/t_a 1.2.3.4:5", "Already exists a server with the same name in backend.\n"));
        assert!(accepted("del server r_x/t_a", "Server deleted.\n"));
        assert!(accepted("set server r_x/t_a state drain", "\n"));
        assert!(!accepted("set server r_x/t_a state drain", "No such server.\n"));
    }
}
