//! Event fan-out benchmark client (`make bench-events` runs it against both delivery modes).
//!
//! Opens `--streams` event streams to one Berth process, waits until all are open, then commits
//! `--events` events one at a time (`--gap-ms` apart) straight into the process's database and measures,
//! for every stream and event, the time from the commit returning to the event arriving. While the
//! streams sit idle it also counts the database's transactions per second (what idle consoles cost) and
//! reads the server's resident memory. Prints one Markdown table row. Everything goes to loopback and
//! is bounded: a fixed number of streams and events, and a deadline for each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::Mutex;

struct Args {
    base: String,
    token: String,
    tenant: String,
    socket_dir: String,
    server_pid: u32,
    label: String,
    streams: usize,
    events: usize,
    gap: Duration,
}

fn args() -> Args {
    let mut a = std::env::args().skip(1);
    let mut get = |name: &str| a.next().unwrap_or_else(|| panic!("missing argument: {name}"));
    Args {
        base: get("base url"),
        token: get("owner token"),
        tenant: get("tenant id"),
        socket_dir: get("postgres socket dir"),
        server_pid: get("server pid").parse().unwrap(),
        label: get("label"),
        streams: get("streams").parse().unwrap(),
        events: get("events").parse().unwrap(),
        gap: Duration::from_millis(get("gap ms").parse().unwrap()),
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn commits(db: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetch_one(db).await.unwrap()
}

#[tokio::main]
async fn main() {
    let a = args();
    let opts = PgConnectOptions::new().socket(&a.socket_dir).username("berth").database("berth").disable_statement_logging();
    let mut db = PgConnection::connect_with(&opts).await.expect("connecting to the server's database");
    let rss_before = rss_kib(a.server_pid);

    // Open the streams; each records (event id, arrival) for every event it receives.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let arrivals: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::new(Mutex::new(Vec::with_capacity(a.streams * a.events)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(a.streams);
    let mut tasks = Vec::new();
    for _ in 0..a.streams {
        let (http, url, token, arrivals, ready) =
            (http.clone(), format!("{}/api/v1/events", a.base), a.token.clone(), arrivals.clone(), ready_tx.clone());
        let expected = a.events;
        tasks.push(tokio::spawn(async move {
            let resp = http.get(url).bearer_auth(token).send().await.expect("opening a stream");
            assert_eq!(resp.status(), 200);
            let _ = ready.send(()).await;
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            let mut got = 0;
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                let now = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    // A frame with an id but no data is the stream's opening position, not an event.
                    let event = frame.lines().any(|l| l.starts_with("data:"));
                    let id = frame.lines().find_map(|l| l.strip_prefix("id:")).and_then(|v| v.trim().parse().ok());
                    if let (true, Some(id)) = (event, id) {
                        arrivals.lock().await.push((id, now));
                        got += 1;
                    }
                }
                if got >= expected {
                    break;
                }
            }
        }));
    }
    drop(ready_tx);
    let open_deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..a.streams {
        tokio::time::timeout_at(open_deadline.into(), ready_rx.recv()).await.expect("all streams open within 120 s");
    }
    // Give the server a moment to finish setting the streams up, then measure idle cost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_streams = rss_kib(a.server_pid);
    let idle = Duration::from_secs(5);
    let c0 = commits(&mut db).await;
    tokio::time::sleep(idle).await;
    let c1 = commits(&mut db).await;
    // Our own two reads count as transactions too.
    let idle_tps = (c1 - c0 - 1).max(0) as f64 / idle.as_secs_f64();

    // Commit events one by one and note when each commit returned.
    let mut committed: Vec<(i64, Instant)> = Vec::new();
    for n in 0..a.events {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (tenant_id, kind, target_type, data) VALUES ($1::uuid, 'bench.tick', 'bench', jsonb_build_object('n', $2::int)) RETURNING id",
        )
        .bind(&a.tenant)
        .bind(n as i32)
        .fetch_one(&mut db)
        .await
        .unwrap();
        committed.push((id, Instant::now()));
        tokio::time::sleep(a.gap).await;
    }
    let finish = tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(tasks)).await;
    let complete = finish.is_ok();

    let arrivals = arrivals.lock().await;
    let mut latencies: Vec<f64> = arrivals
        .iter()
        .filter_map(|(id, at)| {
            committed.iter().find(|(c, _)| c == id).map(|(_, t)| at.saturating_duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let expected = a.streams * a.events;
    let pct =
        |p: f64| latencies.get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN);
    println!(
        "| {:<8} | {:>6} | {:>7}/{:<7} | {:>7.1} | {:>7.1} | {:>7.1} | {:>9.1} | {:>8} | {:>8} | {:>10.1} |",
        a.label,
        a.streams,
        latencies.len(),
        expected,
        pct(0.50),
        pct(0.95),
        latencies.last().copied().unwrap_or(f64::NAN),
        idle_tps,
        rss_before / 1024,
        rss_streams / 1024,
        (rss_streams.saturating_sub(rss_before)) as f64 / a.streams as f64,
    );
    if !complete || latencies.len() < expected {
        eprintln!("warning: {} of {expected} deliveries arrived within the deadline", latencies.len());
    }
}
