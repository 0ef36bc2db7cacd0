//! The console benchmark (`make bench-console`): Berth in-process with the release console, Debian's
//! Chromium, and in the same run the baseline each figure is compared with.
//!
//! 1. Transferred size of the first load (cold cache: HTML, JS, wasm, CSS, compressed as sent).
//! 2. Navigation to the dashboard's data on screen (warm cache, `performance.mark` set by the console
//!    once its data is painted), p50 over RUNS reloads; and first contentful paint with a cold cache.
//!    Baseline: the same server's API docs page (Swagger UI, vendored), its first paint, warm.
//! 3. An application of 200 services on a real cluster: the page scrolled by script for SCROLL_FRAMES
//!    animation frames, quiet and then while ten services are scaled through the API (live updates);
//!    frame intervals and frames dropped (an interval over 1.5 × the quiet median).

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = env_usize("RUNS", 20);
    let frames = env_usize("SCROLL_FRAMES", 600);
    let app = TestApp::spawn_with_registry_and(berth_tests::console_config(900), 1 << 30).await.with_workers();
    let t = app.tenant("Bench").await;

    // 1 and 2: a cold first load, then warm navigations to the dashboard's data.
    let b = Browser::start(&app.base).await;
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
    b.goto(&format!("/applications/{id}")).await;
    b.wait_until("200 service rows", Duration::from_secs(30), || async {
        (b.eval("return document.querySelectorAll('#services tbody tr').length").await == json!(200)).then_some(())
    })
    .await;
    let quiet = scroll_frames(&b, frames).await;
    let services = app.get(&format!("/api/v1/applications/{id}/services?limit=200"), &t.owner).await.body;
    let ids: Vec<String> =
        services["items"].as_array().unwrap().iter().take(10).map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    let scaler = {
        let (base, token, http) = (app.base.clone(), t.owner.clone(), app.http.clone());
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
    };
    let live = scroll_frames(&b, frames).await;
    scaler.await.unwrap();
    let budget = percentile(quiet.clone(), 0.5) * 1.5;
    let dropped = |v: &[f64]| v.iter().filter(|d| **d > budget).count();
    println!(
        "200 services, {frames} frames scrolled: quiet p50 {:.1} ms p95 {:.1} ms, {} dropped; during live updates p50 {:.1} ms p95 {:.1} ms, {} dropped (over {budget:.1} ms)",
        percentile(quiet.clone(), 0.5),
        percentile(quiet.clone(), 0.95),
        dropped(&quiet),
        percentile(live.clone(), 0.5),
        percentile(live.clone(), 0.95),
        dropped(&live)
    );
    let updated = b.eval("return document.querySelectorAll('#services tbody tr').length").await;
    assert_eq!(updated, json!(200));
    real.delete(&app, &t.owner).await;
}
