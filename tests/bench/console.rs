//! The console benchmark (`make bench-console`): Berth in-process with the release console, Debian's
//! Chromium, and in the same run the baseline each figure is compared with.
//!
//! 1. Transferred size of the first load (cold cache: HTML, JS, wasm, CSS, compressed as sent).
//! 2. Navigation to the dashboard's data on screen (warm cache, `performance.mark` set by the console
//!    once its data is painted), p50 over RUNS reloads; and first contentful paint with a cold cache.
//!    Baseline: the same server's API docs page (Swagger UI, vendored), its first paint, warm.
//! 3. An application of 200 services on a real cluster: the page scrolled by script for SCROLL_FRAMES
//!    animation frames, quiet and then while ten services are scaled through the API (live updates);
//!    frame intervals and frames dropped (an interval over 1.5 × the quiet median); alternated
//!    LIVE_ROUNDS times (default 3) with the same cluster changes under a static copy of the page (no
//!    console behind it): what the machine drops on its own.
//!
//! The browser runs on a core of its own (`BROWSER_CPU`, default 0) and everything else — Berth,
//! PostgreSQL, the registry, the cluster's engine and its containers — on the others, as a user's
//! browser and the platform it talks to run on different machines; `BROWSER_CPU=shared` lets them
//! share every core (the form of the runs before 2026-11-27).
//!
//! `BERTH_BROWSER_TRACE=1` prints where the main thread spent the first live scroll by Chromium's
//! timeline (saved as `trace.json` in `PROFILE_DIR` when that is set too). `PROFILE_DIR=<dir>` also
//! records Chromium's CPU profile of the quiet and the first live scroll there (`quiet.json`,
//! `live.json`, loadable in DevTools) and prints where the page spent its time; build the console
//! with `CONSOLE_KEEP_NAMES=1 scripts/build-console.sh` first so the wasm's functions have names.

use std::time::Duration;

use berth_tests::browser::Browser;
use berth_tests::docker_cli::RealCluster;
use berth_tests::{PASSWORD, TestApp};
use serde_json::{Value, json};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Bytes on the wire for the page's navigation and every resource it loaded so far.
async fn transferred(b: &Browser) -> (f64, Value) {
    let v = b
        .eval(
            "const n = performance.getEntriesByType('navigation')[0];
             const r = performance.getEntriesByType('resource').filter(e => !e.name.includes('/api/'));
             return { total: n.transferSize + r.reduce((s, e) => s + e.transferSize, 0),
                      files: [[n.name, n.transferSize]].concat(r.map(e => [e.name.split('/').pop(), e.transferSize])) };",
        )
        .await;
    (v["total"].as_f64().unwrap(), v["files"].clone())
}

async fn paint(b: &Browser) -> f64 {
    b.wait_until("a first contentful paint", Duration::from_secs(20), || async {
        b.eval("const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null")
            .await
            .as_f64()
    })
    .await
}

async fn dashboard_data(b: &Browser) -> f64 {
    b.wait_until("the dashboard's data", Duration::from_secs(20), || async {
        b.eval("const m = performance.getEntriesByName('berth:dashboard-data')[0]; return m ? m.startTime : null").await.as_f64()
    })
    .await
}

/// Scrolls the page one step per animation frame and returns the frame intervals in ms.
async fn scroll_frames(b: &Browser, frames: usize) -> Vec<f64> {
    b.eval("window.scrollTo(0, 0)").await;
    let v = b
        .client
        .execute_async(
            "const [frames, done] = [arguments[0], arguments[arguments.length - 1]];
             const times = []; let dir = 1;
             function step(t) {
               times.push(t);
               const max = document.documentElement.scrollHeight - innerHeight;
               if (scrollY >= max) dir = -1; else if (scrollY <= 0) dir = 1;
               scrollBy(0, 40 * dir);
               if (times.length <= frames) requestAnimationFrame(step);
               else done(times.slice(1).map((t, i) => t - times[i]));
             }
             requestAnimationFrame(step);",
            vec![json!(frames)],
        )
        .await
        .unwrap();
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The page's JavaScript heap in use (after a forced collection when `collect`) and its DOM counters:
/// what a live update leaves behind shows as growth from one scroll to the next.
async fn memory(b: &Browser, collect: bool) -> String {
    if collect {
        b.cdp("HeapProfiler.collectGarbage", json!({})).await;
    }
    let heap = b.cdp("Runtime.getHeapUsage", json!({})).await;
    let dom = b.cdp("Memory.getDOMCounters", json!({})).await;
    format!(
        "JS heap {:.1} MB used of {:.1} MB, {} DOM nodes, {} event listeners",
        heap["usedSize"].as_f64().unwrap_or(0.0) / 1e6,
        heap["totalSize"].as_f64().unwrap_or(0.0) / 1e6,
        dom["nodes"],
        dom["jsEventListeners"]
    )
}

/// How many service rows the application page shows.
async fn service_rows(b: &Browser) -> u64 {
    b.eval("return document.querySelectorAll('#services tbody tr').length").await.as_u64().unwrap_or(0)
}

/// Opens application `id`'s page and waits until its 200 services are on screen.
async fn open_application(b: &Browser, id: &str) {
    b.goto(&format!("/applications/{id}")).await;
    b.wait_until("200 service rows", Duration::from_secs(30), || async { (service_rows(b).await == 200).then_some(()) }).await;
}

/// Scales `ids` from 0 to 1 replica and back, twice, 1.5 s apart, through the API.
fn scale_back_and_forth(app: &TestApp, token: &str, ids: Vec<String>) -> tokio::task::JoinHandle<()> {
    let (base, token, http) = (app.base.clone(), token.to_owned(), app.http.clone());
    tokio::spawn(async move {
        for round in 0..4 {
            for sid in &ids {
                let _ = http
                    .patch(format!("{base}/api/v1/services/{sid}"))
                    .bearer_auth(&token)
                    .json(&json!({"replicas": (round + 1) % 2}))
                    .send()
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    })
}

/// Waits (at most a minute) until none of `ids` runs a task any more.
async fn settle(app: &TestApp, token: &str, ids: &[String]) {
    for _ in 0..120 {
        let mut running = 0;
        for sid in ids {
            running += app.get(&format!("/api/v1/services/{sid}"), token).await.body["replicas_running"].as_i64().unwrap_or(0);
        }
        if running == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs `work` under Chromium's CPU profiler when `path` is given (`PROFILE_DIR`), saving the profile
/// there (Chromium's `.cpuprofile` format) and printing where the page spent its time.
async fn profiled<T>(b: &Browser, path: Option<std::path::PathBuf>, work: impl std::future::Future<Output = T>) -> T {
    let Some(path) = path else { return work.await };
    b.cdp("Profiler.enable", json!({})).await;
    b.cdp("Profiler.setSamplingInterval", json!({"interval": 200})).await;
    b.cdp("Profiler.start", json!({})).await;
    let result = work.await;
    let profile = b.cdp("Profiler.stop", json!({})).await;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, profile["profile"].to_string()).unwrap();
    println!("{}:", path.display());
    print_profile(&profile["profile"]);
    result
}

/// Where the page's main thread spent the live scroll, by Chromium's timeline (`BERTH_BROWSER_TRACE`):
/// total and longest duration per kind of event, on the page's main thread between the two
/// `live-scroll` time stamps.
fn print_trace(events: &[Value]) {
    use std::collections::HashMap;
    let marks: Vec<&Value> =
        events.iter().filter(|e| e["name"] == "TimeStamp" && e["args"]["data"]["message"] == "live-scroll").collect();
    let [start, end] = marks[..] else {
        println!("timeline: the live scroll's time stamps are missing ({} events)", events.len());
        return;
    };
    let (from, to) = (start["ts"].as_f64().unwrap(), end["ts"].as_f64().unwrap());
    let mut kinds: HashMap<String, (f64, f64, usize)> = HashMap::new();
    let during = |e: &&Value| {
        e["ph"] == "X" && e["pid"] == start["pid"] && e["tid"] == start["tid"] && {
            let ts = e["ts"].as_f64().unwrap_or(0.0);
            ts >= from && ts <= to
        }
    };
    for e in events.iter().filter(during) {
        let ms = e["dur"].as_f64().unwrap_or(0.0) / 1000.0;
        let k = kinds.entry(e["name"].as_str().unwrap_or("").to_owned()).or_default();
        k.0 += ms;
        k.1 = k.1.max(ms);
        k.2 += 1;
    }
    let mut rows: Vec<_> = kinds.into_iter().collect();
    rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!("timeline of the live scroll ({} events):", events.len());
    for (name, (total, longest, n)) in rows.into_iter().take(20) {
        println!("  {total:8.1} ms in {n:5}, longest {longest:6.1} ms  {name}");
    }
    // Each dropped frame (two animation frames more than 25 ms apart) and what the page's thread did
    // in between: the events of a millisecond or more that started in the gap.
    let mut frames: Vec<f64> =
        events.iter().filter(during).filter(|e| e["name"] == "FireAnimationFrame").filter_map(|e| e["ts"].as_f64()).collect();
    frames.sort_by(f64::total_cmp);
    for w in frames.windows(2).filter(|w| w[1] - w[0] > 25_000.0) {
        println!("  a gap of {:.1} ms at {:.0} ms:", (w[1] - w[0]) / 1000.0, (w[0] - from) / 1000.0);
        let mut inside: Vec<&Value> = events
            .iter()
            .filter(during)
            .filter(|e| {
                let ts = e["ts"].as_f64().unwrap_or(0.0);
                ts > w[0] && ts < w[1] && e["dur"].as_f64().unwrap_or(0.0) >= 1000.0
            })
            .collect();
        inside.sort_by(|a, b| a["ts"].as_f64().unwrap_or(0.0).total_cmp(&b["ts"].as_f64().unwrap_or(0.0)));
        for e in inside {
            println!(
                "    +{:5.1} ms {:6.1} ms  {}",
                (e["ts"].as_f64().unwrap_or(0.0) - w[0]) / 1000.0,
                e["dur"].as_f64().unwrap_or(0.0) / 1000.0,
                e["name"].as_str().unwrap_or("")
            );
        }
    }
}

/// The functions the page spent its time in during a CPU profile, by self and by inclusive samples.
fn print_profile(profile: &Value) {
    use std::collections::{HashMap, HashSet};
    let nodes = profile["nodes"].as_array().unwrap();
    let name = |n: &Value| {
        let f = &n["callFrame"];
        let func = f["functionName"].as_str().unwrap_or("");
        let url = f["url"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("");
        if func.is_empty() { format!("(anonymous) {url}") } else { format!("{func} {url}") }
    };
    let mut parent = HashMap::new();
    let by_id: HashMap<i64, &Value> = nodes.iter().map(|n| (n["id"].as_i64().unwrap(), n)).collect();
    for n in nodes {
        for c in n["children"].as_array().into_iter().flatten() {
            parent.insert(c.as_i64().unwrap(), n["id"].as_i64().unwrap());
        }
    }
    let total: f64 = nodes.iter().map(|n| n["hitCount"].as_f64().unwrap_or(0.0)).sum();
    let (mut own, mut inclusive) = (HashMap::<String, f64>::new(), HashMap::<String, f64>::new());
    for n in nodes {
        let hits = n["hitCount"].as_f64().unwrap_or(0.0);
        if hits == 0.0 {
            continue;
        }
        *own.entry(name(n)).or_default() += hits;
        let (mut id, mut seen) = (n["id"].as_i64().unwrap(), HashSet::new());
        loop {
            let label = name(by_id[&id]);
            if seen.insert(label.clone()) {
                *inclusive.entry(label).or_default() += hits;
            }
            match parent.get(&id) {
                Some(p) => id = *p,
                None => break,
            }
        }
    }
    for (title, table) in [("self", own), ("inclusive", inclusive)] {
        let mut rows: Vec<_> = table.into_iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        println!("profile, {title} ({total} samples):");
        for (f, hits) in rows.into_iter().take(15) {
            println!("  {:5.1}%  {f}", 100.0 * hits / total);
        }
    }
}

/// Confines this process, and so every process it starts from now on (PostgreSQL, the registry, the
/// cluster's engines and containers), to the CPUs other than the browser's; returns the browser's
/// CPU, or `None` when it shares them all (`BROWSER_CPU=shared`, or a single CPU).
fn separate_cores() -> Option<String> {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let choice = std::env::var("BROWSER_CPU").unwrap_or_else(|_| "0".into());
    if choice == "shared" {
        return None;
    }
    let browser: usize = choice.parse().expect("BROWSER_CPU: a CPU number, or `shared`");
    let mine = sched_getaffinity(Pid::from_raw(0)).unwrap();
    let mut rest = CpuSet::new();
    for cpu in (0..CpuSet::count()).filter(|c| *c != browser && mine.is_set(*c).unwrap_or(false)) {
        rest.set(cpu).unwrap();
    }
    if !mine.is_set(browser).unwrap_or(false) || (0..CpuSet::count()).all(|c| !rest.is_set(c).unwrap_or(false)) {
        println!("BROWSER_CPU={browser}: no core to spare for the rest; the browser shares every core");
        return None;
    }
    // Only this thread is moved; the runtime's threads, started after this, inherit it.
    sched_setaffinity(Pid::from_raw(0), &rest).unwrap();
    Some(browser.to_string())
}

fn main() {
    let browser_cpu = separate_cores();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(run(browser_cpu));
}

async fn run(browser_cpu: Option<String>) {
    match &browser_cpu {
        Some(cpu) => println!("the browser runs on CPU {cpu}; Berth, PostgreSQL, the registry and the cluster on the others"),
        None => println!("the browser and the platform share every CPU"),
    }
    let runs = env_usize("RUNS", 20);
    let frames = env_usize("SCROLL_FRAMES", 600);
    let app = TestApp::spawn_with_registry_and(berth_tests::console_config(900), 1 << 30).await.with_workers();
    let t = app.tenant("Bench").await;

    // 1 and 2: a cold first load, then warm navigations to the dashboard's data.
    let b = Browser::start_on(&app.base, browser_cpu.as_deref()).await;
    b.goto("/").await;
    b.find("#email").await;
    let cold_paint = paint(&b).await;
    let (bytes, files) = transferred(&b).await;
    println!("first load (cold cache): {:.0} KB transferred; files: {files}", bytes / 1000.0);
    println!("  goal <= 500 KB: {}", if bytes <= 500_000.0 { "met" } else { "NOT met" });
    println!("first contentful paint, cold cache: {cold_paint:.0} ms");
    b.log_in(&t.owner_email, PASSWORD).await;
    b.find(".tally").await;
    let mut console = Vec::new();
    let mut docs = Vec::new();
    for _ in 0..runs {
        b.goto("/").await;
        console.push(dashboard_data(&b).await);
        b.goto("/api/docs/").await;
        docs.push(paint(&b).await);
    }
    let (c50, d50) = (percentile(console.clone(), 0.5), percentile(docs.clone(), 0.5));
    println!(
        "warm navigation ({runs} runs): dashboard data on screen p50 {c50:.0} ms (p95 {:.0}); API docs first paint p50 {d50:.0} ms -> ratio {:.2}; goal p50 <= 300 ms: {}",
        percentile(console, 0.95),
        c50 / d50,
        if c50 <= 300.0 { "met" } else { "NOT met" }
    );

    // 3. 200 services on a real cluster, scrolled quiet and during live updates.
    let real = RealCluster::create(&app, &t.owner, "bench", 1, 0).await;
    let cluster = real.id.to_string();
    // The gallery brings the base image into the tenant's namespace.
    let seed = app
        .post("/api/v1/applications", &t.owner, json!({"name": "seed", "cluster_id": cluster, "gallery": "scheduled-job"}))
        .await;
    app.wait_job(&t.owner, seed.body["job_id"].as_str().unwrap(), Duration::from_secs(300)).await;
    let mut text = String::from("version: '3.8'\nservices:\n");
    for i in 0..200 {
        text.push_str(&format!(
            "  s{i:03}:\n    image: ${{BERTH_REGISTRY}}/${{BERTH_TENANT}}/busybox:debian\n    command: ['/bin/busybox', 'sleep', '3600']\n    deploy:\n      replicas: 0\n      resources: {{limits: {{memory: 8M}}}}\n"
        ));
    }
    let wide = app.post("/api/v1/applications", &t.owner, json!({"name": "wide", "cluster_id": cluster, "compose": text})).await;
    app.wait_job(&t.owner, wide.body["job_id"].as_str().unwrap(), Duration::from_secs(900)).await;
    let id = wide.body["id"].as_str().unwrap().to_owned();
    // A browser of its own, signed in afresh: the pages of the runs above (the API docs' Swagger UI
    // among them, ~30 MB of JavaScript heap) would otherwise stay in the back/forward cache of the
    // same renderer, and every garbage collection during the scrolls would walk them too.
    drop(b);
    let b = Browser::start_on(&app.base, browser_cpu.as_deref()).await;
    b.goto("/").await;
    b.log_in(&t.owner_email, PASSWORD).await;
    open_application(&b, &id).await;
    let profiling = std::env::var("PROFILE_DIR").ok().map(std::path::PathBuf::from);
    let quiet = profiled(&b, profiling.as_ref().map(|d| d.join("quiet.json")), scroll_frames(&b, frames)).await;
    let services = app.get(&format!("/api/v1/applications/{id}/services?limit=200"), &t.owner).await.body;
    let ids: Vec<String> =
        services["items"].as_array().unwrap().iter().take(10).map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    let budget = percentile(quiet.clone(), 0.5) * 1.5;
    let dropped = |v: &[f64]| v.iter().filter(|d| **d > budget).count();
    let summary = |v: &[f64]| {
        format!("p50 {:.1} ms p95 {:.1} ms, {} dropped", percentile(v.to_vec(), 0.5), percentile(v.to_vec(), 0.95), dropped(v))
    };
    println!("200 services, {frames} frames scrolled: quiet {} (a frame over {budget:.1} ms is dropped)", summary(&quiet));
    // Live updates, then the machine's own share: the same cluster changes again with the same page
    // as a static copy (no console behind it), the frames this machine drops while its engine starts
    // and stops containers, whatever the page does. Alternated LIVE_ROUNDS times (the machine is noisy).
    let traced = std::env::var_os("BERTH_BROWSER_TRACE").is_some();
    let (mut live_total, mut still_total) = (0, 0);
    for round in 0..env_usize("LIVE_ROUNDS", 3) {
        if round > 0 {
            open_application(&b, &id).await;
        }
        let first = round == 0;
        println!("  before live scroll {}: {}", round + 1, memory(&b, true).await);
        let scaler = scale_back_and_forth(&app, &t.owner, ids.clone());
        b.eval("console.timeStamp('live-scroll')").await;
        let path = profiling.as_ref().filter(|_| first).map(|d| d.join("live.json"));
        let live = profiled(&b, path, scroll_frames(&b, frames)).await;
        b.eval("console.timeStamp('live-scroll')").await;
        scaler.await.unwrap();
        if traced && first {
            let events = b.trace_events().await;
            if let Some(dir) = &profiling {
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(dir.join("trace.json"), serde_json::to_string(&events).unwrap()).unwrap();
            }
            print_trace(&events);
        }
        assert_eq!(service_rows(&b).await, 200);
        println!("  after it: {}; after a collection: {}", memory(&b, false).await, memory(&b, true).await);
        settle(&app, &t.owner, &ids).await;
        let copy = b
            .eval(
                "const css = [...document.styleSheets].map(s => [...s.cssRules].map(r => r.cssText).join('\\n')).join('\\n');
                 const clone = document.documentElement.cloneNode(true);
                 clone.querySelectorAll('script, link').forEach(n => n.remove());
                 return '<!doctype html>' + clone.outerHTML.replace('</head>', '<style>' + css + '</style></head>');",
            )
            .await;
        b.client.goto("about:blank").await.unwrap();
        b.client.execute("document.open(); document.write(arguments[0]); document.close();", vec![copy]).await.unwrap();
        let scaler = scale_back_and_forth(&app, &t.owner, ids.clone());
        let still = scroll_frames(&b, frames).await;
        scaler.await.unwrap();
        settle(&app, &t.owner, &ids).await;
        println!(
            "  round {}: during live updates {}; the same page as a static copy during the same cluster changes (the machine's share) {}",
            round + 1,
            summary(&live),
            summary(&still)
        );
        live_total += dropped(&live);
        still_total += dropped(&still);
    }
    println!("  dropped in all rounds: {live_total} during live updates, {still_total} by the machine alone (static copy)");
    real.delete(&app, &t.owner).await;
}
