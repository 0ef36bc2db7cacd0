//! The Docker CLI (docker.io) as a customer uses it against a cluster's engines, for the e2e tests.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::temp_data_dir;
use serde_json::Value;

/// (The tests run on a multi-threaded runtime: the CLI blocks its thread while Berth's token service,
/// in this process, answers the engine.)
///
/// The Docker CLI against one engine of a cluster: TLS client files from the credentials endpoint, and
/// a private CLI config directory (where `docker login` keeps its credentials).
pub struct Docker {
    pub certs: PathBuf,
    pub config: PathBuf,
}

impl Docker {
    pub fn new(creds: &Value) -> Docker {
        let certs = temp_data_dir("berth-cli-certs");
        for (file, field) in [("ca.pem", "ca_pem"), ("cert.pem", "cert_pem"), ("key.pem", "key_pem")] {
            std::fs::write(certs.join(file), creds[field].as_str().unwrap()).unwrap();
        }
        Docker { certs, config: temp_data_dir("berth-cli-config") }
    }

    pub fn run(&self, engine: &str, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .env("DOCKER_CERT_PATH", &self.certs)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CONFIG", &self.config)
            .env("DOCKER_BUILDKIT", "0")
            .args(["-H", &format!("tcp://{engine}:2376")])
            .args(args)
            .output()
            .expect("the docker CLI (docker.io) is needed: run `make test`")
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, engine: &str, args: &[&str]) -> String {
        let out = self.run(engine, args);
        assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs and insists on failure; returns stderr.
    pub fn fails(&self, engine: &str, args: &[&str]) -> String {
        let out = self.run(engine, args);
        assert!(!out.status.success(), "docker {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn login(&self, engine: &str, registry: &str, user: &str, password: &str) -> Output {
        let mut child = Command::new("/usr/bin/docker")
            .env("DOCKER_CERT_PATH", &self.certs)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CONFIG", &self.config)
            .args(["-H", &format!("tcp://{engine}:2376"), "login", registry, "-u", user, "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certs);
        let _ = std::fs::remove_dir_all(&self.config);
    }
}

/// Directories a test made, removed however it ends.
pub struct RemoveOnDrop(pub Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `docker login` to the built-in registry as `email`, then builds and pushes
/// `<registry>/<slug>/<repo>:<version>` for each version (each with its marker `v<version>` at
/// `/marker`) through the engine at `engine`. The build contexts go when the guard drops.
pub fn push_versions(
    cli: &Docker,
    engine: &str,
    registry: &str,
    (email, password): (&str, &str),
    (slug, repo): (&str, &str),
    versions: &[&str],
) -> (Vec<String>, RemoveOnDrop) {
    let login = cli.login(engine, registry, email, password);
    assert!(login.status.success(), "docker login: {}", String::from_utf8_lossy(&login.stderr));
    let (mut images, mut dirs) = (Vec::new(), Vec::new());
    for version in versions {
        let ctx = build_context(&format!("v{version}"));
        let image = format!("{registry}/{slug}/{repo}:{version}");
        cli.ok(engine, &["build", "-q", "-t", &image, ctx.to_str().unwrap()]);
        cli.ok(engine, &["push", &image]);
        dirs.push(ctx);
        images.push(image);
    }
    (images, RemoveOnDrop(dirs))
}

/// A build context for an image `FROM scratch` holding Debian's static busybox and a marker file, so
/// that every test's image is its own.
pub fn build_context(marker: &str) -> PathBuf {
    let dir = temp_data_dir("berth-build");
    std::fs::copy("/bin/busybox", dir.join("busybox")).expect("Debian's busybox-static is needed: run `make test`");
    std::fs::write(dir.join("marker"), marker).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY marker /marker\nCMD [\"/bin/busybox\", \"sh\"]\n",
    )
    .unwrap();
    dir
}

impl Docker {
    /// `docker stack deploy --with-registry-auth -c <file> <stack>`, run in `dir` (where the file and
    /// the files it names are) with `env` set, as a customer would run it.
    pub fn stack_deploy(&self, engine: &str, dir: &std::path::Path, file: &str, env: &[(&str, &str)], stack: &str) {
        let out = Command::new("/usr/bin/docker")
            .env("DOCKER_CERT_PATH", &self.certs)
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CONFIG", &self.config)
            .envs(env.iter().copied())
            .current_dir(dir)
            .args(["-H", &format!("tcp://{engine}:2376"), "stack", "deploy", "--with-registry-auth", "-c", file, stack])
            .output()
            .expect("the docker CLI (docker.io) is needed: run `make test`");
        assert!(out.status.success(), "docker stack deploy -c {file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A real local cluster of a tenant, made through the API, and the Docker CLI on its first manager.
pub struct RealCluster {
    pub id: uuid::Uuid,
    /// The first manager's engine address.
    pub manager: String,
    pub cli: Docker,
}

impl RealCluster {
    pub async fn create(app: &crate::TestApp, token: &str, name: &str, managers: u32, workers: u32) -> RealCluster {
        let created = app
            .post("/api/v1/clusters", token, serde_json::json!({"name": name, "managers": managers, "workers": workers}))
            .await;
        assert_eq!(created.status, reqwest::StatusCode::ACCEPTED, "{}", created.body);
        let id = created.id();
        let job = app.wait_job(token, created.body["job_id"].as_str().unwrap(), std::time::Duration::from_secs(180)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let creds = app.get(&format!("/api/v1/clusters/{id}/credentials"), token).await.body;
        let manager = creds["endpoint"].as_str().unwrap().trim_start_matches("tcp://").split(':').next().unwrap().to_owned();
        RealCluster { id, manager, cli: Docker::new(&creds) }
    }

    /// Deletes the cluster through the API and waits until its nodes are gone.
    pub async fn delete(self, app: &crate::TestApp, token: &str) {
        let gone = app.delete(&format!("/api/v1/clusters/{}", self.id), token).await;
        let job = app.wait_job(token, gone.body["job_id"].as_str().unwrap(), std::time::Duration::from_secs(120)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
}
