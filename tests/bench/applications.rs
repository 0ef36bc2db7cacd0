//! The applications benchmark (`make bench-applications`): Berth against the Docker tools on the same
//! real local cluster, in one run, so that the numbers are ratios on a shared, noisy machine.
//!
//! 1. Deploy latency: a 5-service, 10-task Compose file, from the request to every task running —
//!    Berth's `POST /applications` against `docker stack deploy`.
//! 2. Rolling update of a 10-replica service to another image, to converged — Berth's
//!    `PATCH /services/{id}` against `docker service update --image`.
//! 3. Read path: listing an application's 200 services — Berth's `GET /applications/{id}/services`
//!    against the engine's own `GET /services` for the same services, requests per second.
//! 4. Status freshness: from a task's container being killed on its node to the API showing the task
//!    no longer running (p50/p95 over `KILLS` kills).
//!
//! Convergence is judged the same way for both sides: by polling the engine with the Docker CLI.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_tests::docker_cli::{Docker, RealCluster, RemoveOnDrop, build_context};
use berth_tests::{PASSWORD, TestApp};
use serde_json::{Value, json};

const ROUNDS: usize = 3;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Waits until every service of `stack` runs all its tasks (`docker stack services` REPLICAS n/n) and
/// none is updating; gives up after two minutes.
fn converged(cli: &Docker, engine: &str, stack: &str, services: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = cli.ok(engine, &["stack", "services", "--format", "{{.Replicas}}", stack]);
        let lines: Vec<&str> = out.lines().collect();
        let all_up = lines.len() == services
            && lines.iter().all(|r| r.split_once('/').is_some_and(|(a, b)| a == b.split_whitespace().next().unwrap_or("")));
        if all_up {
            return;
        }
        assert!(Instant::now() < deadline, "{stack} did not converge: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until a service's update has completed and all its tasks run the new image.
fn updated(cli: &Docker, engine: &str, service: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let state =
            cli.ok(engine, &["service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", service]);
        if state == "completed" {
            return;
        }
        assert!(Instant::now() < deadline, "{service} did not finish updating: {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn compose(services: usize, replicas: usize) -> String {
    let mut text = String::from("version: '3.8'\nservices:\n");
    for i in 0..services {
        text.push_str(&format!(
            "  s{i}:\n    image: ${{IMAGE}}\n    command: ['/bin/busybox', 'sleep', '3600']\n    stop_grace_period: 1s\n    deploy:\n      replicas: {replicas}\n      endpoint_mode: dnsrr\n      update_config: {{parallelism: 1, monitor: 1s}}\n      resources: {{limits: {{memory: 16M}}}}\n"
        ));
    }
    text
}

async fn deploy_app(app: &TestApp, token: &str, cluster: &str, name: &str, text: &str, image: &str) -> Value {
    let r = app
        .post(
            "/api/v1/applications",
            token,
            json!({"name": name, "cluster_id": cluster, "compose": text, "variables": {"IMAGE": image}}),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::ACCEPTED, "{}", r.body);
    r.body
}

async fn delete_app(app: &TestApp, token: &str, id: &str) {
    let r = app.delete(&format!("/api/v1/applications/{id}"), token).await;
    app.wait_job(token, r.body["job_id"].as_str().unwrap(), Duration::from_secs(120)).await;
}

/// `docker stack rm`, then the networks it could not remove while tasks were still leaving them.
fn rm_stack(cli: &Docker, engine: &str, stack: &str) {
    let _ = cli.run(engine, &["stack", "rm", stack]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = cli.ok(engine, &["network", "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={stack}")]);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{stack}'s networks stayed: {left}");
        for id in left.lines() {
            let _ = cli.run(engine, &["network", "rm", id]);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let read_secs = env_usize("READ_SECS", 5) as u64;
    let concurrency = env_usize("CONCURRENCY", 8);
    let kills = env_usize("KILLS", 20);

    let app = TestApp::spawn_with_registry(1 << 30).await.with_workers();
    let address = app.registry.as_ref().unwrap().address.clone();
    let t = app.tenant("Bench").await;
    let email = app.get("/api/v1/me", &t.owner).await.body["email"].as_str().unwrap().to_owned();
    let real = RealCluster::create(&app, &t.owner, "bench", 1, 1).await;
    let cluster = real.id.to_string();
    let (manager, cli) = (real.manager.clone(), &real.cli);
    let dir = berth_tests::temp_data_dir("berth-bench-apps");
    let mut keep = vec![dir.clone()];
    let login = cli.login(&manager, &address, &email, PASSWORD);
    assert!(login.status.success(), "docker login: {}", String::from_utf8_lossy(&login.stderr));
    let mut images = Vec::new();
    for v in ["1", "2"] {
        let ctx = build_context(&format!("bench {v}"));
        let image = format!("{address}/{}/bench:{v}", t.slug);
        cli.ok(&manager, &["build", "-q", "-t", &image, ctx.to_str().unwrap()]);
        cli.ok(&manager, &["push", &image]);
        keep.push(ctx);
        images.push(image);
    }
    let _cleanup = RemoveOnDrop(keep);
    println!(
        "cluster: 1 manager + 1 worker (local nodes); {} cores shared by everything",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Deploy latency.
    let five = compose(5, 2);
    std::fs::write(dir.join("five.yml"), &five).unwrap();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let stack = format!("cli{round}");
        let start = Instant::now();
        cli.stack_deploy(&manager, &dir, "five.yml", &[("IMAGE", &images[0])], &stack);
        converged(cli, &manager, &stack, 5);
        theirs.push(start.elapsed().as_secs_f64());
        rm_stack(cli, &manager, &stack);

        let name = format!("berth{round}");
        let start = Instant::now();
        let body = deploy_app(&app, &t.owner, &cluster, &name, &five, &images[0]).await;
        converged(cli, &manager, &name, 5);
        ours.push(start.elapsed().as_secs_f64());
        delete_app(&app, &t.owner, body["id"].as_str().unwrap()).await;
    }
    let (b, c) = (median(ours.clone()), median(theirs.clone()));
    println!(
        "deploy 5 services / 10 tasks: berth {b:.2} s, docker stack deploy {c:.2} s (medians of {ROUNDS}) -> ratio {:.2} (goal <= 1.1)",
        b / c
    );

    // 2. Rolling update of 10 replicas.
    let roll = compose(1, 10);
    std::fs::write(dir.join("roll.yml"), &roll).unwrap();
    cli.stack_deploy(&manager, &dir, "roll.yml", &[("IMAGE", &images[0])], "clir");
    converged(cli, &manager, "clir", 1);
    let body = deploy_app(&app, &t.owner, &cluster, "roll", &roll, &images[0]).await;
    converged(cli, &manager, "roll", 1);
    let app_id = body["id"].as_str().unwrap().to_owned();
    let services = app.get(&format!("/api/v1/applications/{app_id}/services"), &t.owner).await.body;
    let service = services["items"][0]["id"].as_str().unwrap().to_owned();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let image = &images[(round + 1) % 2];
        let start = Instant::now();
        cli.ok(&manager, &["service", "update", "-d", "-q", "--with-registry-auth", "--image", image, "clir_s0"]);
        updated(cli, &manager, "clir_s0");
        theirs.push(start.elapsed().as_secs_f64());

        let start = Instant::now();
        let r = app.patch(&format!("/api/v1/services/{service}"), &t.owner, json!({"image": image})).await;
        assert_eq!(r.status, reqwest::StatusCode::ACCEPTED, "{}", r.body);
        // The job first has to apply the change; then the engine rolls.
        app.wait_job(&t.owner, r.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
        updated(cli, &manager, "roll_s0");
        ours.push(start.elapsed().as_secs_f64());
    }
    let (b, c) = (median(ours), median(theirs));
    println!(
        "rolling update of 10 replicas: berth {b:.2} s, docker service update {c:.2} s (medians of {ROUNDS}) -> ratio {:.2} (goal <= 1.1)",
        b / c
    );
    rm_stack(cli, &manager, "clir");

    // 4. Status freshness (on the 10-replica service, before the read path's 200 services).
    let ps = cli.ok(&manager, &["service", "ps", "-q", "--filter", "desired-state=running", "roll_s0"]);
    let mut tasks: Vec<String> = ps.lines().map(str::to_owned).collect();
    let mut delays = Vec::new();
    for i in 0..kills {
        // A running task of the service, its container and node.
        let task_id = &tasks[i % tasks.len()];
        let task: Value = serde_json::from_str(&cli.ok(&manager, &["inspect", "--type", "task", task_id])).unwrap();
        let task = &task[0];
        if task["Status"]["State"] != "running" {
            continue;
        }
        let container = task["Status"]["ContainerStatus"]["ContainerID"].as_str().unwrap().to_owned();
        let node: Value =
            serde_json::from_str(&cli.ok(&manager, &["node", "inspect", task["NodeID"].as_str().unwrap()])).unwrap();
        let node_addr = node[0]["Status"]["Addr"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/services/{service}/containers?limit=500");
        cli.ok(&node_addr, &["kill", &container]);
        let killed = Instant::now();
        loop {
            let rows = app.get(&path, &t.owner).await.body;
            let row = rows["items"].as_array().unwrap().iter().find(|c| c["swarm_task_id"] == task_id.as_str()).cloned();
            if row.is_some_and(|r| r["state"] != "running") {
                delays.push(killed.elapsed().as_secs_f64());
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(30), "the kill of {task_id} never showed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let Swarm replace it before the next kill.
        converged(cli, &manager, "roll", 1);
        let ps = cli.ok(&manager, &["service", "ps", "-q", "--filter", "desired-state=running", "roll_s0"]);
        tasks = ps.lines().map(str::to_owned).collect();
    }
    println!(
        "status freshness over {} kills: p50 {:.0} ms, p95 {:.0} ms (goal p95 <= 1000 ms)",
        delays.len(),
        percentile(delays.clone(), 0.5) * 1000.0,
        percentile(delays, 0.95) * 1000.0
    );
    delete_app(&app, &t.owner, &app_id).await;

    // 3. Read path: an application of 200 services (no tasks), listed whole.
    let big = app
        .post(
            "/api/v1/applications",
            &t.owner,
            json!({"name": "wide", "cluster_id": cluster, "compose": compose(200, 0), "variables": {"IMAGE": images[0]}}),
        )
        .await;
    assert_eq!(big.status, reqwest::StatusCode::ACCEPTED, "{}", big.body);
    app.wait_job(&t.owner, big.body["job_id"].as_str().unwrap(), Duration::from_secs(600)).await;
    let wide = big.body["id"].as_str().unwrap().to_owned();
    let listing = app.get(&format!("/api/v1/applications/{wide}/services?limit=200"), &t.owner).await.body;
    assert_eq!(listing["items"].as_array().unwrap().len(), 200);
    let url = app.url(&format!("/api/v1/applications/{wide}/services?limit=200"));
    let token = t.owner.clone();
    let berth_rps = load(concurrency, read_secs, {
        let http = app.http.clone();
        move || {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            async move {
                let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap();
            }
        }
    })
    .await;
    let engine = bollard::Docker::connect_with_ssl(
        &format!("tcp://{manager}:2376"),
        &cli.certs.join("key.pem"),
        &cli.certs.join("cert.pem"),
        &cli.certs.join("ca.pem"),
        30,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap()
    .negotiate_version()
    .await
    .unwrap();
    let filters = HashMap::from([("label".to_owned(), vec!["com.docker.stack.namespace=wide".to_owned()])]);
    let engine_count = engine
        .list_services(Some(bollard::query_parameters::ListServicesOptions { filters: Some(filters.clone()), status: None }))
        .await
        .unwrap()
        .len();
    assert_eq!(engine_count, 200);
    let engine_rps = load(concurrency, read_secs, move || {
        let (engine, filters) = (engine.clone(), filters.clone());
        async move {
            let options = bollard::query_parameters::ListServicesOptions { filters: Some(filters), status: None };
            engine.list_services(Some(options)).await.unwrap();
        }
    })
    .await;
    println!(
        "read 200 services ({concurrency} concurrent, {read_secs} s each): berth {berth_rps:.0} req/s, engine {engine_rps:.0} req/s -> ratio {:.1} (goal >= 3)",
        berth_rps / engine_rps
    );
    delete_app(&app, &t.owner, &wide).await;
    real.delete(&app, &t.owner).await;
}

/// Runs `call` from `concurrency` tasks for `secs` seconds; returns completed calls per second.
async fn load<F, Fut>(concurrency: usize, secs: u64, call: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let until = Instant::now() + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let call = call.clone();
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                call().await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total as f64 / secs as f64
}
