//! Clusters on real Docker Swarm: every node is a network namespace with its own dockerd, provisioned by
//! Berth's job workers, served over TLS from the cluster's own CA.

use std::time::Duration;

use berth_tests::{TestApp, WorkerProcess, host_snapshot, node_dockerd, temp_data_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

fn nodes_of(body: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["role"].as_str().unwrap().to_owned(),
                n["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn expected(name: &str, state: &str) -> Vec<(String, String, String)> {
    ["manager-1", "worker-1", "worker-2"]
        .iter()
        .map(|n| (format!("{name}-{n}"), n.split('-').next().unwrap().to_owned(), state.to_owned()))
        .collect()
}

/// Runs the Docker CLI against the cluster with the credentials the API hands out.
fn docker_cli(creds: &Value, args: &[&str]) -> String {
    let dir = temp_data_dir("berth-creds");
    for (file, field) in [("ca.pem", "ca_pem"), ("cert.pem", "cert_pem"), ("key.pem", "key_pem")] {
        std::fs::write(dir.join(file), creds[field].as_str().unwrap()).unwrap();
    }
    let out = std::process::Command::new("/usr/bin/docker")
        .env("DOCKER_CERT_PATH", &dir)
        .env("DOCKER_TLS_VERIFY", "1")
        .args(["-H", creds["endpoint"].as_str().unwrap()])
        .args(args)
        .output()
        .expect("the docker CLI (docker.io) is needed: run `make test`");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_local_cluster_is_a_real_swarm_from_create_through_node_loss_to_delete() {
    let app = TestApp::spawn_with_workers().await;
    let t = app.tenant("Acme").await;
    let viewer = app.user(&t.owner, "viewer").await;

    let created = app.post("/api/v1/clusters", &t.owner, json!({"name": "prod", "managers": 1, "workers": 2})).await;
    created.expect(StatusCode::ACCEPTED);
    let id = created.id();
    let job = app.wait_job(&t.owner, created.body["job_id"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let cluster = app.get(&format!("/api/v1/clusters/{id}"), &t.owner).await;
    assert_eq!(cluster.body["status"], "ready");
    let nodes = app.get(&format!("/api/v1/clusters/{id}/nodes"), &t.owner).await;
    assert_eq!(nodes_of(&nodes.body), expected("prod", "ready"));
    for n in nodes.body["items"].as_array().unwrap() {
        assert!(n["address"].as_str().unwrap().starts_with("10.213."), "{n}");
        assert!(n["engine_version"].as_str().is_some());
        assert_eq!(n["leader"], n["role"] == "manager");
    }

    // The engine agrees, asked with the credentials the API gives owners (and not viewers).
    app.get(&format!("/api/v1/clusters/{id}/credentials"), &viewer).await.problem(StatusCode::FORBIDDEN, "forbidden");
    let creds = app.get(&format!("/api/v1/clusters/{id}/credentials"), &t.owner).await;
    creds.expect(StatusCode::OK);
    let listed = docker_cli(&creds.body, &["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
    let mut lines: Vec<&str> = listed.lines().map(str::trim_end).collect();
    lines.sort();
    assert_eq!(lines, ["prod-manager-1 Ready Leader", "prod-worker-1 Ready", "prod-worker-2 Ready"]);
    let audit = app.get("/api/v1/audit?limit=500", &t.owner).await;
    assert!(
        audit.body["items"].as_array().unwrap().iter().any(|e| e["action"] == "cluster.credentials" && e["outcome"] == "success")
    );
    // The engine answers only to a client certificate from the cluster's CA.
    let endpoint = creds.body["endpoint"].as_str().unwrap().replace("tcp://", "https://");
    let dir = temp_data_dir("berth-curl");
    for (file, field) in [("ca.pem", "ca_pem"), ("cert.pem", "cert_pem"), ("key.pem", "key_pem")] {
        std::fs::write(dir.join(file), creds.body[field].as_str().unwrap()).unwrap();
    }
    let curl = |with_cert: bool| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(dir.join("ca.pem"));
        if with_cert {
            cmd.arg("--cert").arg(dir.join("cert.pem")).arg("--key").arg(dir.join("key.pem"));
        }
        let out = cmd.arg(format!("{endpoint}/version")).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(true), "200");
    assert_ne!(curl(false), "200", "the engine answered without a client certificate");
    std::fs::remove_dir_all(&dir).unwrap();

    // Another tenant can adopt the same swarm as an `existing` cluster through its TLS endpoint: Berth
    // records its nodes without provisioning anything, and deleting the adopted cluster only forgets it.
    let other = app.tenant("Other").await;
    let adopted = app
        .post(
            "/api/v1/clusters",
            &other.owner,
            json!({"name": "adopted", "provider": "existing", "endpoint": creds.body["endpoint"],
                   "ca_pem": creds.body["ca_pem"], "cert_pem": creds.body["cert_pem"], "key_pem": creds.body["key_pem"]}),
        )
        .await;
    adopted.expect(StatusCode::ACCEPTED);
    let job = app.wait_job(&other.owner, adopted.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let adopted_nodes = app.get(&format!("/api/v1/clusters/{}/nodes", adopted.id()), &other.owner).await;
    assert_eq!(nodes_of(&adopted_nodes.body), expected("prod", "ready"));
    let adopted_cluster = app.get(&format!("/api/v1/clusters/{}", adopted.id()), &other.owner).await;
    assert_eq!(
        (
            adopted_cluster.body["status"].as_str(),
            adopted_cluster.body["managers"].as_i64(),
            adopted_cluster.body["workers"].as_i64()
        ),
        (Some("ready"), Some(1), Some(2))
    );
    let forget = app.delete(&format!("/api/v1/clusters/{}", adopted.id()), &other.owner).await;
    let job = app.wait_job(&other.owner, forget.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(host_snapshot(&[id]).dockerds.len(), 3, "forgetting an adopted cluster destroyed its machines");

    // Node loss: kill a worker's dockerd; the API reports it down within 15 s, then ready after a restart.
    let worker = nodes.body["items"].as_array().unwrap().iter().find(|n| n["name"] == "prod-worker-1").unwrap().clone();
    let netns =
        format!("berth-{}-{}", &id.simple().to_string()[24..], worker["address"].as_str().unwrap().rsplit('.').next().unwrap());
    let pid = node_dockerd(&netns).expect("the worker's dockerd runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let node_path = format!("/api/v1/nodes/{}", worker["id"].as_str().unwrap());
    app.wait_for(&t.owner, &node_path, Duration::from_secs(15), |n| n["state"] == "down").await;
    app.wait_for(&t.owner, &format!("/api/v1/clusters/{id}"), Duration::from_secs(5), |c| c["status"] == "degraded").await;
    let restart = app.post(&format!("{node_path}/restart"), &t.owner, json!({})).await;
    restart.expect(StatusCode::ACCEPTED);
    app.wait_for(&t.owner, &node_path, Duration::from_secs(30), |n| n["state"] == "ready").await;
    app.wait_for(&t.owner, &format!("/api/v1/clusters/{id}"), Duration::from_secs(10), |c| c["status"] == "ready").await;

    // Availability and labels go to the engine.
    let drain = app.patch(&node_path, &t.owner, json!({"availability": "drain", "labels": {"zone": "a"}})).await;
    let job = app.wait_job(&t.owner, drain.body["job_id"].as_str().unwrap(), Duration::from_secs(30)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let inspected = docker_cli(
        &creds.body,
        &["node", "inspect", "prod-worker-1", "--format", "{{.Spec.Availability}} {{.Spec.Labels.zone}}"],
    );
    assert_eq!(inspected.trim(), "drain a");

    // Scale up, then down: new workers join; the highest-numbered leave (drained first) and are destroyed.
    let up = app.patch(&format!("/api/v1/clusters/{id}"), &t.owner, json!({"workers": 3})).await;
    let job = app.wait_job(&t.owner, up.body["job_id"].as_str().unwrap(), Duration::from_secs(90)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let listed = docker_cli(&creds.body, &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
    assert_eq!(listed.lines().filter(|l| l.ends_with("Ready")).count(), 4, "{listed}");
    let down = app.patch(&format!("/api/v1/clusters/{id}"), &t.owner, json!({"workers": 1})).await;
    let job = app.wait_job(&t.owner, down.body["job_id"].as_str().unwrap(), Duration::from_secs(90)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let nodes = app.get(&format!("/api/v1/clusters/{id}/nodes"), &t.owner).await;
    let names: Vec<&str> = nodes.body["items"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["prod-manager-1", "prod-worker-1"]);
    let listed = docker_cli(&creds.body, &["node", "ls", "--format", "{{.Hostname}}"]);
    let mut hosts: Vec<&str> = listed.lines().collect();
    hosts.sort();
    assert_eq!(hosts, ["prod-manager-1", "prod-worker-1"]);

    // Delete: nothing of the cluster remains on the host.
    let during = host_snapshot(&[id]);
    assert_eq!((during.namespaces.len(), during.dockerds.len(), during.bridges.len()), (2, 2, 1), "{during:?}");
    let deleted = app.delete(&format!("/api/v1/clusters/{id}"), &t.owner).await;
    deleted.expect(StatusCode::ACCEPTED);
    let job = app.wait_job(&t.owner, deleted.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    app.get(&format!("/api/v1/clusters/{id}"), &t.owner).await.problem(StatusCode::NOT_FOUND, "not-found");
    let after = host_snapshot(&[id]);
    assert_eq!(after, berth_tests::HostSnapshot { namespaces: vec![], bridges: vec![], dockerds: vec![], run_dirs: vec![] });
    let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM cluster_secrets").fetch_one(&app.db).await.unwrap();
    assert_eq!(secrets, 0);
}

#[tokio::test]
async fn a_killed_worker_s_job_resumes_elsewhere_and_two_workers_share_the_queue() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let data_dir = temp_data_dir("berth-crash");
    let _cleanup = berth_tests::DestroyNodesOnDrop(data_dir.clone());

    // Worker A takes the job; it is killed with -9 once it has started provisioning.
    let mut a = WorkerProcess::start(&app.db_name, &data_dir, 3);
    let created = app.post("/api/v1/clusters", &t.owner, json!({"name": "crash", "managers": 1, "workers": 2})).await;
    let id = created.id();
    let job_id = created.body["job_id"].as_str().unwrap().to_owned();
    app.wait_for(&t.owner, &format!("/api/v1/jobs/{job_id}"), Duration::from_secs(60), |j| {
        j["logs"].as_array().is_some_and(|l| {
            l.iter().any(|x| x["line"].as_str().is_some_and(|s| s.starts_with("starting nodes crash-manager-1")))
        })
    })
    .await;
    a.kill9();

    // Workers B and C share the queue; one of them resumes the job once A's lease has run out.
    let mut b = WorkerProcess::start(&app.db_name, &data_dir, 3);
    let mut c = WorkerProcess::start(&app.db_name, &data_dir, 3);
    let job = app.wait_job(&t.owner, &job_id, Duration::from_secs(120)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "run once by A (killed), once more to completion");
    let nodes = app.get(&format!("/api/v1/clusters/{id}/nodes"), &t.owner).await;
    assert_eq!(nodes_of(&nodes.body), expected("crash", "ready"));
    let host = host_snapshot(&[id]);
    assert_eq!(
        (host.namespaces.len(), host.dockerds.len(), host.bridges.len()),
        (3, 3, 1),
        "exactly the requested nodes, no orphans: {host:?}"
    );

    // More clusters: each job runs exactly once, and each cluster gets exactly one reconciler.
    let mut more = Vec::new();
    for name in ["two", "three"] {
        let r = app.post("/api/v1/clusters", &t.owner, json!({"name": name, "managers": 1, "workers": 0})).await;
        more.push((r.id(), r.body["job_id"].as_str().unwrap().to_owned()));
    }
    for (_, job_id) in &more {
        let job = app.wait_job(&t.owner, job_id, Duration::from_secs(90)).await;
        assert_eq!((job["state"].as_str(), job["attempts"].as_i64()), (Some("succeeded"), Some(1)), "{job}");
        let attempts =
            job["logs"].as_array().unwrap().iter().filter(|l| l["line"].as_str().unwrap().starts_with("attempt ")).count();
        assert_eq!(attempts, 1, "{job}");
    }
    let all: Vec<Uuid> = std::iter::once(id).chain(more.iter().map(|(c, _)| *c)).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let owners_before: Vec<Option<String>> =
        sqlx::query_scalar("SELECT reconciler_owner FROM clusters ORDER BY id").fetch_all(&app.db).await.unwrap();
    assert!(owners_before.iter().all(Option::is_some), "every ready cluster has a reconciler: {owners_before:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let owners_after: Vec<Option<String>> =
        sqlx::query_scalar("SELECT reconciler_owner FROM clusters ORDER BY id").fetch_all(&app.db).await.unwrap();
    assert_eq!(owners_before, owners_after, "a live reconciler keeps its cluster");

    // The holder of a cluster's reconciler dies: another process takes the cluster over within seconds.
    let holder: u32 = owners_after[0].as_ref().unwrap().split(':').nth(1).unwrap().parse().unwrap();
    let (dead, alive) = if b.child.id() == holder { (&mut b, &c) } else { (&mut c, &b) };
    assert_eq!(dead.child.id(), holder, "the holder is one of the two workers");
    dead.kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let owners: Vec<Option<String>> =
            sqlx::query_scalar("SELECT reconciler_owner FROM clusters").fetch_all(&app.db).await.unwrap();
        let survivor = format!(":{}:", alive.child.id());
        if owners.iter().all(|o| o.as_deref().is_some_and(|o| o.contains(&survivor))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no takeover within 15 s: {owners:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    for c in &all {
        let d = app.delete(&format!("/api/v1/clusters/{c}"), &t.owner).await;
        let job = app.wait_job(&t.owner, d.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    assert_eq!(
        host_snapshot(&all),
        berth_tests::HostSnapshot { namespaces: vec![], bridges: vec![], dockerds: vec![], run_dirs: vec![] }
    );
}

/// A swarm someone runs outside Berth: one dockerd in its own network namespace, on a unix socket.
struct ExternalSwarm {
    netns: String,
    dir: std::path::PathBuf,
    exec: std::path::PathBuf,
}

impl ExternalSwarm {
    fn start() -> ExternalSwarm {
        let tag = &Uuid::new_v4().simple().to_string()[..8];
        let netns = format!("berth-ext-{tag}");
        let dir = temp_data_dir("berth-ext");
        let exec = std::path::PathBuf::from(format!("/run/berth-ext-{tag}"));
        let swarm = ExternalSwarm { netns: netns.clone(), dir: dir.clone(), exec: exec.clone() };
        let run = |args: &[&str]| {
            let s = std::process::Command::new(args[0]).args(&args[1..]).status().unwrap();
            assert!(s.success(), "{args:?}");
        };
        run(&["ip", "netns", "add", &netns]);
        run(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        std::fs::create_dir_all(&exec).unwrap();
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        let d = dir.display();
        let script = format!(
            "hostname ext-node && mount --bind {d}/resolv.conf /etc/resolv.conf && exec dockerd --data-root {d}/data \
             --exec-root {exec} --pidfile {exec}/docker.pid -H unix://{d}/docker.sock",
            exec = exec.display()
        );
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        run_detached(&netns, &script, log);
        let docker = |args: &[&str]| {
            std::process::Command::new("/usr/bin/docker")
                .arg("-H")
                .arg(format!("unix://{d}/docker.sock"))
                .args(args)
                .output()
                .unwrap()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !docker(&["info"]).status.success() {
            assert!(std::time::Instant::now() < deadline, "the external dockerd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let init = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
        swarm
    }

    fn socket(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.display())
    }

    fn running(&self) -> bool {
        node_dockerd(&self.netns).is_some()
    }
}

fn run_detached(netns: &str, script: &str, log: std::fs::File) {
    let status = std::process::Command::new("setsid")
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
        .args(["sh", "-c", script])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for ExternalSwarm {
    fn drop(&mut self) {
        for _ in 0..50 {
            match node_dockerd(&self.netns) {
                Some(pid) => {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    std::thread::sleep(Duration::from_millis(100));
                }
                None => break,
            }
        }
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.netns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.exec);
    }
}

#[tokio::test]
async fn an_existing_swarm_is_adopted_through_an_allowed_unix_socket_and_only_forgotten_on_delete() {
    let app = TestApp::spawn_with_workers().await;
    let t = app.tenant("Acme").await;
    let external = ExternalSwarm::start();
    let r = app
        .post("/api/v1/clusters", &t.owner, json!({"name": "theirs", "provider": "existing", "endpoint": external.socket()}))
        .await;
    r.expect(StatusCode::ACCEPTED);
    assert_eq!(r.body["endpoint"], external.socket());
    let job = app.wait_job(&t.owner, r.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let nodes = app.get(&format!("/api/v1/clusters/{}/nodes", r.id()), &t.owner).await;
    let items = nodes.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0]["name"].as_str(), items[0]["role"].as_str(), items[0]["state"].as_str()),
        (Some("ext-node"), Some("manager"), Some("ready"))
    );
    assert_eq!(items[0]["leader"], true);
    // No TLS material to hand out for a socket; scaling is not Berth's to do.
    app.get(&format!("/api/v1/clusters/{}/credentials", r.id()), &t.owner)
        .await
        .problem(StatusCode::CONFLICT, "no-tls-credentials");
    app.patch(&format!("/api/v1/clusters/{}", r.id()), &t.owner, json!({"workers": 2}))
        .await
        .problem(StatusCode::CONFLICT, "not-provisioned-by-berth");
    let d = app.delete(&format!("/api/v1/clusters/{}", r.id()), &t.owner).await;
    let job = app.wait_job(&t.owner, d.body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(external.running(), "deleting an adopted cluster must not touch its machines");
}

#[tokio::test]
async fn a_job_that_keeps_failing_is_retried_with_backoff_then_failed_with_its_error() {
    let app = TestApp::spawn_with_workers().await;
    let t = app.tenant("Acme").await;
    // A socket that does not exist (in an allowed directory): adoption fails on every attempt.
    let missing = std::env::temp_dir().join(format!("berth-missing-{}.sock", Uuid::new_v4().simple()));
    let r = app
        .post(
            "/api/v1/clusters",
            &t.owner,
            json!({"name": "nowhere", "provider": "existing", "endpoint": format!("unix://{}", missing.display())}),
        )
        .await;
    r.expect(StatusCode::ACCEPTED);
    let job_id = r.body["job_id"].as_str().unwrap();
    // Two attempts instead of five keep the test short; the backoff between them is 2 s.
    sqlx::query("UPDATE jobs SET max_attempts = 2 WHERE id = $1::uuid").bind(job_id).execute(&app.db).await.unwrap();
    let job = app.wait_job(&t.owner, job_id, Duration::from_secs(60)).await;
    assert_eq!((job["state"].as_str(), job["attempts"].as_i64()), (Some("failed"), Some(2)), "{job}");
    assert!(job["last_error"].as_str().unwrap().contains("berth-missing"), "{job}");
    let created = chrono::DateTime::parse_from_rfc3339(job["created_at"].as_str().unwrap()).unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(job["finished_at"].as_str().unwrap()).unwrap();
    assert!(finished - created >= chrono::Duration::seconds(2), "the retry waited for its backoff: {job}");
    let cluster = app.get(&format!("/api/v1/clusters/{}", r.id()), &t.owner).await;
    assert_eq!(cluster.body["status"], "failed");
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM events WHERE target_id = $1 ORDER BY id")
        .bind(r.id())
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert!(kinds.contains(&"job.failed".to_owned()) && kinds.contains(&"cluster.failed".to_owned()), "{kinds:?}");
}
