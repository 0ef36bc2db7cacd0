//! Per-route and per-listener traffic from HAProxy's statistics (`show stat` on the Runtime API):
//! requests, 5xx responses, failed connections to tasks and the average response time of each route's
//! (and load balancer listener's) backend, turned into totals and rates and written to
//! `route_traffic` (`balancer_traffic`) for the API, the console and `/metrics`. Parsing and
//! accounting are pure; HAProxy's counters start again at zero on every reload, so the router forgets
//! its last reading then and counts from zero.

use std::collections::HashMap;
use std::time::Instant;

use sqlx::PgPool;
use uuid::Uuid;

/// How often a router reads and writes traffic.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// One backend's counters as HAProxy reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub requests: u64,
    pub responses_5xx: u64,
    pub failed_connections: u64,
    pub response_ms: u64,
}

/// A `show stat` answer (CSV with a `# `-prefixed header): each route's backend by route id, and each
/// server that is a release's copy by route id and server name (counted per server, as servers come
/// and go with their counters).
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    pub routes: HashMap<Uuid, Counters>,
    /// Load balancers' listeners' backends, by port.
    pub listeners: HashMap<u16, Counters>,
    pub copies: HashMap<(Uuid, String), Counters>,
    /// Per route with copies: how many copy servers pass their health checks, and how many fail them.
    pub copy_health: HashMap<Uuid, Health>,
}

/// Servers up and down in their health checks (servers in maintenance count as neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub up: u32,
    pub down: u32,
}

pub fn parse(csv: &str) -> Reading {
    let mut out = Reading::default();
    let mut lines = csv.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else { return out };
    let names: Vec<&str> = header.split(',').collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let (Some(px), Some(sv)) = (col("pxname"), col("svname")) else { return out };
    let (req_tot, stot, hrsp_5xx, econ, rtime) = (col("req_tot"), col("stot"), col("hrsp_5xx"), col("econ"), col("rtime"));
    let status = col("status");
    // A server has no request count; its answers by class add up to one.
    let answers: Vec<Option<usize>> =
        ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"].iter().map(|n| col(n)).collect();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let num = |i: Option<usize>| i.and_then(|i| fields.get(i)).and_then(|v| v.parse::<u64>().ok());
        let server = fields.get(sv).copied().unwrap_or_default();
        let backend_counters = || Counters {
            requests: num(req_tot).or(num(stot)).unwrap_or(0),
            responses_5xx: num(hrsp_5xx).unwrap_or(0),
            failed_connections: num(econ).unwrap_or(0),
            response_ms: num(rtime).unwrap_or(0),
        };
        if let Some(port) = fields.get(px).and_then(|p| p.strip_prefix("lb_")).and_then(|p| p.parse::<u16>().ok()) {
            if server == "BACKEND" {
                out.listeners.insert(port, backend_counters());
            }
            continue;
        }
        let Some(route) = fields.get(px).and_then(|p| p.strip_prefix("r_")).and_then(|id| Uuid::parse_str(id).ok()) else {
            continue;
        };
        if server == "BACKEND" {
            out.routes.insert(route, backend_counters());
        } else if crate::routing::table::is_copy(server) {
            let counters = Counters {
                requests: num(req_tot).unwrap_or_else(|| answers.iter().map(|c| num(*c).unwrap_or(0)).sum::<u64>()),
                responses_5xx: num(hrsp_5xx).unwrap_or(0),
                failed_connections: num(econ).unwrap_or(0),
                response_ms: num(rtime).unwrap_or(0),
            };
            out.copies.insert((route, server.to_owned()), counters);
            // `UP`, `UP 1/2` (failing, not yet down), `no check`, `DRAIN` serve; `DOWN`, `DOWN 1/2`
            // (passing, not yet up) do not.
            let state = status.and_then(|i| fields.get(i)).copied().unwrap_or_default();
            let health = out.copy_health.entry(route).or_default();
            if state.starts_with("UP") || state == "no check" || state == "DRAIN" {
                health.up += 1;
            } else if state.starts_with("DOWN") {
                health.down += 1;
            }
        }
    }
    out
}

/// What a route did since the last reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Delta {
    pub requests: u64,
    pub responses_5xx: u64,
    pub failed_connections: u64,
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    pub response_ms: u64,
}

/// The last reading, to turn HAProxy's counters into differences, by route (or by route and server).
#[derive(Debug)]
pub struct Meter<K = Uuid> {
    last: HashMap<K, Counters>,
    at: Option<Instant>,
    /// Keys whose last written rate was not zero (written once more when traffic stops).
    busy: std::collections::HashSet<K>,
}

impl<K> Default for Meter<K> {
    fn default() -> Self {
        Meter { last: HashMap::new(), at: None, busy: std::collections::HashSet::new() }
    }
}

impl<K: Eq + std::hash::Hash + Clone> Meter<K> {
    /// HAProxy started again (a reload or a restart): its counters are back at zero.
    pub fn reset(&mut self) {
        self.last.clear();
        self.at = None;
    }

    /// The changes since the last reading, for the routes worth writing (traffic now, or a rate to
    /// bring back to zero).
    pub fn read(&mut self, now: HashMap<K, Counters>, at: Instant) -> Vec<(K, Delta)> {
        let secs = self.at.map_or(0.0, |then| at.duration_since(then).as_secs_f64());
        let mut out = Vec::new();
        for (route, c) in &now {
            let before = self.last.get(route).copied().unwrap_or_default();
            let diff = |a: u64, b: u64| a.saturating_sub(b);
            let d = Delta {
                requests: diff(c.requests, before.requests),
                responses_5xx: diff(c.responses_5xx, before.responses_5xx),
                failed_connections: diff(c.failed_connections, before.failed_connections),
                requests_per_sec: if secs > 0.0 { diff(c.requests, before.requests) as f64 / secs } else { 0.0 },
                errors_per_sec: if secs > 0.0 { diff(c.responses_5xx, before.responses_5xx) as f64 / secs } else { 0.0 },
                response_ms: c.response_ms,
            };
            let active = d.requests > 0 || d.responses_5xx > 0 || d.failed_connections > 0;
            if active || self.busy.contains(route) {
                out.push((route.clone(), d));
            }
            if active {
                self.busy.insert(route.clone());
            } else {
                self.busy.remove(route);
            }
        }
        self.last = now;
        self.at = Some(at);
        out
    }
}

/// A meter for the routes and one for releases' copies on them.
#[derive(Debug, Default)]
pub struct Meters {
    pub routes: Meter,
    pub copies: Meter<(Uuid, String)>,
    pub listeners: Meter<u16>,
}

impl Meters {
    pub fn reset(&mut self) {
        self.routes.reset();
        self.copies.reset();
        self.listeners.reset();
    }
}

/// Adds a reading to the routes' rows for this router.
pub async fn write(db: &PgPool, router: &str, deltas: &[(Uuid, Delta)]) -> sqlx::Result<()> {
    let insert = "INSERT INTO route_traffic (route_id, tenant_id, router, requests, responses_5xx, failed_connections,
                                             requests_per_sec, errors_per_sec, response_ms)
                  SELECT r.id, r.tenant_id, $2, $3, $4, $5, $6, $7, $8 FROM routes r WHERE r.id = $1";
    let sql = format!("{insert} ON CONFLICT (route_id, router) DO UPDATE SET {}", accumulate("route_traffic"));
    for (route, d) in deltas {
        bind_reading(sqlx::query(&sql).bind(route).bind(router), d).execute(db).await?;
    }
    Ok(())
}

/// Adds a reading to the load balancers' listeners' rows for this router (a port no listener holds
/// any more is skipped).
pub async fn write_listeners(db: &PgPool, router: &str, deltas: &[(u16, Delta)]) -> sqlx::Result<()> {
    let insert = "INSERT INTO balancer_traffic (load_balancer_id, port, tenant_id, router, requests, responses_5xx,
                                                failed_connections, requests_per_sec, errors_per_sec, response_ms)
                  SELECT l.load_balancer_id, l.port, l.tenant_id, $2, $3, $4, $5, $6, $7, $8
                    FROM load_balancer_listeners l WHERE l.port = $1";
    let sql = format!("{insert} ON CONFLICT (load_balancer_id, port, router) DO UPDATE SET {}", accumulate("balancer_traffic"));
    for (port, d) in deltas {
        bind_reading(sqlx::query(&sql).bind(i32::from(*port)).bind(router), d).execute(db).await?;
    }
    Ok(())
}

/// How a traffic row takes a new reading: counters added, rates and the response time replaced.
fn accumulate(table: &str) -> String {
    format!(
        "requests = {table}.requests + excluded.requests, responses_5xx = {table}.responses_5xx + excluded.responses_5xx,
         failed_connections = {table}.failed_connections + excluded.failed_connections,
         requests_per_sec = excluded.requests_per_sec, errors_per_sec = excluded.errors_per_sec,
         response_ms = excluded.response_ms, updated_at = now()"
    )
}

/// Binds a reading as `$3`…`$8` of a traffic row's insert.
fn bind_reading<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    d: &Delta,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(i64::try_from(d.requests).unwrap_or(i64::MAX))
        .bind(i64::try_from(d.responses_5xx).unwrap_or(i64::MAX))
        .bind(i64::try_from(d.failed_connections).unwrap_or(i64::MAX))
        .bind(d.requests_per_sec)
        .bind(d.errors_per_sec)
        .bind(i32::try_from(d.response_ms).unwrap_or(i32::MAX))
}

/// A traffic row summed over the routers, as six columns named by the caller's alias `t` (rates and
/// the response time only from routers heard from in the last 30 s).
pub const SUMS: &str = "coalesce(sum(t.requests), 0)::int8, coalesce(sum(t.responses_5xx), 0)::int8,
    coalesce(sum(t.failed_connections), 0)::int8,
    coalesce(sum(t.requests_per_sec) FILTER (WHERE t.updated_at > now() - interval '30 seconds'), 0)::float8,
    coalesce(sum(t.errors_per_sec) FILTER (WHERE t.updated_at > now() - interval '30 seconds'), 0)::float8,
    coalesce(max(t.response_ms) FILTER (WHERE t.updated_at > now() - interval '30 seconds'), 0)::int4";

/// The columns of [`SUMS`].
pub type Sums = (i64, i64, i64, f64, f64, i32);

/// [`SUMS`] as the API shows them.
pub fn totals(
    (requests_total, responses_5xx_total, failed_connections_total, requests_per_sec, errors_per_sec, response_ms): Sums,
) -> berth_types::RouteTraffic {
    berth_types::RouteTraffic {
        requests_total,
        responses_5xx_total,
        failed_connections_total,
        requests_per_sec,
        errors_per_sec,
        response_ms,
    }
}

/// The open release (`rel`) of route `$1`'s application: what copies' readings are written to.
const OPEN_RELEASE_OF_ROUTE: &str = "FROM routes r JOIN services s ON s.id = r.service_id
    JOIN releases rel ON rel.application_id = s.application_id AND rel.finished_at IS NULL
    WHERE r.id = $1";

/// Records how the copies on each route fare in their health checks, for the open release of the
/// route's application when it has an automatic-abort rule (the only reader).
pub async fn write_copy_health(db: &PgPool, router: &str, health: &HashMap<Uuid, Health>) -> sqlx::Result<()> {
    for (route, h) in health {
        sqlx::query(&format!(
            "INSERT INTO release_health (release_id, tenant_id, router, up, down)
             SELECT rel.id, rel.tenant_id, $2, $3, $4 {OPEN_RELEASE_OF_ROUTE} AND rel.auto_abort IS NOT NULL"
        ))
        .bind(route)
        .bind(router)
        .bind(i32::try_from(h.up).unwrap_or(i32::MAX))
        .bind(i32::try_from(h.down).unwrap_or(i32::MAX))
        .execute(db)
        .await?;
    }
    Ok(())
}

/// Adds what a release's copies answered on each route since the last reading to the open release of
/// the route's application.
pub async fn write_copies(db: &PgPool, router: &str, deltas: &[((Uuid, String), Delta)]) -> sqlx::Result<()> {
    let mut by_route: HashMap<Uuid, Delta> = HashMap::new();
    for ((route, _), d) in deltas {
        let sum = by_route.entry(*route).or_default();
        sum.requests += d.requests;
        sum.responses_5xx += d.responses_5xx;
    }
    for (route, d) in &by_route {
        if d.requests == 0 && d.responses_5xx == 0 {
            continue;
        }
        sqlx::query(&format!(
            "INSERT INTO release_traffic (release_id, tenant_id, router, requests, responses_5xx)
             SELECT rel.id, rel.tenant_id, $2, $3, $4 {OPEN_RELEASE_OF_ROUTE}"
        ))
        .bind(route)
        .bind(router)
        .bind(i64::try_from(d.requests).unwrap_or(i64::MAX))
        .bind(i64::try_from(d.responses_5xx).unwrap_or(i64::MAX))
        .execute(db)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(rows: &[(&str, &str, u64, u64, u64, u64)]) -> String {
        let mut s = String::from("# pxname,svname,stot,econ,hrsp_5xx,req_tot,rtime,\n");
        for (px, sv, stot, econ, h5, req) in rows {
            s.push_str(&format!("{px},{sv},{stot},{econ},{h5},{req},12,\n"));
        }
        s
    }

    #[test]
    fn backends_of_routes_are_read_and_turned_into_differences() {
        let a = Uuid::now_v7();
        let name = format!("r_{}", a.simple());
        let first = parse(&csv(&[
            ("routes", "FRONTEND", 9, 0, 0, 9),
            (&name, "t_x", 5, 0, 0, 5),
            (&name, "BACKEND", 10, 1, 2, 10),
            ("no_route", "BACKEND", 3, 0, 0, 3),
        ]))
        .routes;
        assert_eq!(first.len(), 1, "only routes' backends: {first:?}");
        assert_eq!(first[&a], Counters { requests: 10, responses_5xx: 2, failed_connections: 1, response_ms: 12 });

        let mut meter = Meter::default();
        let t0 = Instant::now();
        let d = meter.read(first, t0);
        assert_eq!(d[0].1.requests, 10, "the first reading counts everything so far");
        let second = parse(&csv(&[(&name, "BACKEND", 30, 1, 2, 30)])).routes;
        let d = meter.read(second.clone(), t0 + std::time::Duration::from_secs(2));
        assert_eq!((d[0].1.requests, d[0].1.responses_5xx, d[0].1.requests_per_sec), (20, 0, 10.0));
        // Quiet: written once more with zero rates, then not at all.
        assert_eq!(meter.read(second.clone(), t0 + std::time::Duration::from_secs(4))[0].1.requests_per_sec, 0.0);
        assert!(meter.read(second, t0 + std::time::Duration::from_secs(6)).is_empty());
        // A reload: HAProxy counts from zero again, and so does the meter.
        meter.reset();
        let d = meter.read(parse(&csv(&[(&name, "BACKEND", 4, 0, 0, 4)])).routes, t0 + std::time::Duration::from_secs(8));
        assert_eq!(d[0].1.requests, 4);
    }

    #[test]
    fn listeners_are_read_by_port_with_connections_for_tcp() {
        let s = "# pxname,svname,stot,econ,hrsp_5xx,req_tot,rtime,\n\
                 lb_20001,FRONTEND,7,,,,,\n\
                 lb_20001,t_a,7,0,,,3,\n\
                 lb_20001,BACKEND,7,1,,,3,\n\
                 lb_20002,BACKEND,5,0,1,5,9,\n\
                 lb_x,BACKEND,5,0,1,5,9,\n";
        let reading = parse(s);
        assert!(reading.routes.is_empty());
        assert_eq!(reading.listeners.len(), 2, "{:?}", reading.listeners);
        assert_eq!(reading.listeners[&20001], Counters { requests: 7, responses_5xx: 0, failed_connections: 1, response_ms: 3 });
        assert_eq!(reading.listeners[&20002], Counters { requests: 5, responses_5xx: 1, failed_connections: 0, response_ms: 9 });
    }

    #[test]
    fn copies_health_is_counted_per_route() {
        let a = Uuid::now_v7();
        let name = format!("r_{}", a.simple());
        let text = format!(
            "# pxname,svname,stot,status,\n{name},t_own,1,DOWN,\n{name},c_one,1,UP,\n{name},c_two,1,UP 1/2,\n\
             {name},c_three,1,DOWN 1/2,\n{name},c_four,1,DOWN,\n{name},c_five,1,MAINT,\n{name},BACKEND,5,UP,\n"
        );
        assert_eq!(
            parse(&text).copy_health,
            HashMap::from([(a, Health { up: 2, down: 2 })]),
            "own tasks and maintenance are not counted"
        );
    }

    #[test]
    fn a_release_s_copies_are_summed_from_their_servers_answers() {
        let a = Uuid::now_v7();
        let name = format!("r_{}", a.simple());
        let text = format!(
            "# pxname,svname,stot,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,econ,req_tot,\n\
             {name},t_own,90,0,90,0,0,0,0,0,,\n\
             {name},c_one,9,0,6,0,1,2,0,1,,\n\
             {name},c_two,3,0,3,0,0,0,0,0,,\n\
             {name},BACKEND,102,0,99,0,1,2,0,1,102,\n"
        );
        let reading = parse(&text);
        assert_eq!(reading.routes[&a].requests, 102);
        assert_eq!(reading.copies.len(), 2, "only copies: {:?}", reading.copies);
        assert_eq!(
            reading.copies[&(a, "c_one".to_owned())],
            Counters { requests: 9, responses_5xx: 2, failed_connections: 1, response_ms: 0 }
        );
        // A copy that goes away takes its counters with it; the one that stays counts on.
        let mut meter: Meter<(Uuid, String)> = Meter::default();
        let t0 = Instant::now();
        assert_eq!(meter.read(reading.copies, t0).len(), 2);
        let later = format!(
            "# pxname,svname,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,\n{name},c_two,0,3,0,0,5,0,\n{name},c_new,0,1,0,0,1,0,\n"
        );
        let d: HashMap<_, _> = meter.read(parse(&later).copies, t0 + std::time::Duration::from_secs(5)).into_iter().collect();
        assert_eq!((d[&(a, "c_two".to_owned())].requests, d[&(a, "c_two".to_owned())].responses_5xx), (5, 5));
        assert_eq!((d[&(a, "c_new".to_owned())].requests, d[&(a, "c_new".to_owned())].responses_5xx), (2, 1));
    }
}
