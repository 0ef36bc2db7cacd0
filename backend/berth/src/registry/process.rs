//! The registry process: its configuration, written by Berth, and its supervision, the way the
//! embedded PostgreSQL is run — started with Berth, restarted (with backoff) if it dies, stopped with
//! Berth.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::token::{ISSUER, SERVICE};
use crate::pki::Pem;

/// The files the registry reads, under `<data_dir>/registry`.
pub struct Files {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub token_bundle: PathBuf,
    pub storage: PathBuf,
    pub log: PathBuf,
}

impl Files {
    /// Writes the TLS certificate and key and the token certificate bundle (the config itself is
    /// written by [`Handle::start`], which knows the rest of the settings).
    pub fn write(dir: &Path, tls: &Pem, token_cert: &str) -> anyhow::Result<Files> {
        let files = Files {
            dir: dir.to_path_buf(),
            config: dir.join("config.yml"),
            cert: dir.join("tls/server.pem"),
            key: dir.join("tls/server-key.pem"),
            token_bundle: dir.join("tls/token-signer.pem"),
            storage: dir.join("storage"),
            log: dir.join("registry.log"),
        };
        std::fs::write(&files.cert, &tls.cert)?;
        write_private(&files.key, &tls.key)?;
        std::fs::write(&files.token_bundle, token_cert)?;
        Ok(files)
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

pub struct Settings {
    pub bin: PathBuf,
    pub address: SocketAddr,
    pub realm: String,
    pub notify_url: String,
    pub notify_secret: String,
    pub files: Files,
}

impl Settings {
    /// distribution's configuration. JSON is valid YAML, and serde builds it without string pasting.
    fn config(&self) -> serde_json::Value {
        let f = &self.files;
        json!({
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": true}},
            "storage": {
                "filesystem": {"rootdirectory": f.storage},
                // Deleting manifests is how tags and repositories are removed (and then collected).
                "delete": {"enabled": true},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": true, "age": "168h", "interval": "24h", "dryrun": false}}
            },
            "http": {
                "addr": self.address.to_string(),
                // Signs upload state between requests; random per start (uploads in flight restart).
                "secret": crate::crypto::random_token(32),
                "tls": {"certificate": f.cert, "key": f.key},
                "headers": {"X-Content-Type-Options": ["nosniff"]}
            },
            "auth": {"token": {
                "realm": self.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": f.token_bundle
            }},
            "notifications": {"endpoints": [{
                "name": "berth",
                "url": self.notify_url,
                "headers": {"Authorization": [format!("Bearer {}", self.notify_secret)]},
                "timeout": "5s",
                "threshold": 3,
                "backoff": "1s",
                // Pulls and individual blobs are noise: Berth wants manifests pushed and deleted.
                "ignore": {"actions": ["pull"], "mediatypes": ["application/octet-stream"]}
            }]}
        })
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.files.log)?;
        Command::new(&self.bin)
            .arg("serve")
            .arg(&self.files.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (install Debian's docker-registry package)", self.bin.display()))
    }

    /// Waits until the registry accepts connections on its address.
    async fn wait_ready(&self, child: &mut Child) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&self.files.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                bail!("the registry exited ({status}): {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
            }
            if tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(self.address))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the registry did not listen on {} within 30 s (see {})", self.address, self.files.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The supervised registry process.
pub struct Handle {
    stop: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// The current process id (0 while it is being restarted), for tests and operators.
    pid: Arc<AtomicU32>,
    /// Asks the supervisor to stop the registry for maintenance (see [`Handle::collect_garbage`]).
    pause: mpsc::Sender<Pause>,
    bin: PathBuf,
    config: PathBuf,
    storage: PathBuf,
    collecting: Mutex<()>,
}

/// A maintenance window: the supervisor stops the registry, says so on `stopped`, and starts it again
/// once `resume` fires (or is dropped).
struct Pause {
    stopped: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
}

/// What a garbage collection did.
#[derive(Debug, Clone, Copy)]
pub struct Collected {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Handle {
    /// Writes the configuration, starts the registry and waits until it listens.
    pub async fn start(settings: Settings) -> anyhow::Result<Handle> {
        std::fs::write(&settings.files.config, serde_json::to_string_pretty(&settings.config())?)?;
        std::fs::set_permissions(&settings.files.config, std::fs::Permissions::from_mode(0o600))?;
        let mut child = settings.spawn()?;
        if let Err(e) = settings.wait_ready(&mut child).await {
            shut_down(&mut child).await;
            return Err(e);
        }
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        let (stop, stopping) = watch::channel(false);
        let (pause, pauses) = mpsc::channel(1);
        let (bin, config, storage) = (settings.bin.clone(), settings.files.config.clone(), settings.files.storage.clone());
        let supervisor = tokio::spawn(supervise(settings, child, stopping, pauses, pid.clone()));
        Ok(Handle {
            stop,
            supervisor: Mutex::new(Some(supervisor)),
            pid,
            pause,
            bin,
            config,
            storage,
            collecting: Mutex::new(()),
        })
    }

    /// Runs the registry's own garbage collector, which frees the blobs no manifest refers to any more.
    /// It must not run while the registry serves (a push in flight could lose blobs), so the registry
    /// is stopped for it — a few seconds in which pushes and pulls are refused and the engines retry —
    /// and started again afterwards, whatever happened. Untagged manifests are kept (`--delete-untagged`
    /// would also remove the per-platform manifests of multi-platform images): Berth deletes the
    /// manifests it means to delete itself.
    pub async fn collect_garbage(&self) -> anyhow::Result<Collected> {
        // One collection at a time; and none on a registry that has never stored anything (the
        // collector fails there: it finds no repositories directory).
        let _one = self.collecting.lock().await;
        if !self.storage.join("docker/registry/v2/repositories").is_dir() {
            let storage = self.storage.clone();
            let bytes = tokio::task::spawn_blocking(move || disk_usage(&storage)).await?;
            return Ok(Collected { bytes_before: bytes, bytes_after: bytes });
        }
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let (resume_tx, resume_rx) = oneshot::channel();
        self.pause.send(Pause { stopped: stopped_tx, resume: resume_rx }).await.context("the registry supervisor is gone")?;
        stopped_rx.await.context("the registry supervisor is gone")?;
        let storage = self.storage.clone();
        let bytes_before = tokio::task::spawn_blocking(move || disk_usage(&storage)).await?;
        let out = Command::new(&self.bin).arg("garbage-collect").arg(&self.config).stdin(Stdio::null()).output().await;
        let _ = resume_tx.send(());
        // Back in service before saying done: the supervisor publishes the new pid once it listens.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pid() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = out.context("running the registry's garbage-collect")?;
        if !out.status.success() {
            bail!("garbage-collect failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let storage = self.storage.clone();
        let bytes_after = tokio::task::spawn_blocking(move || disk_usage(&storage)).await?;
        Ok(Collected { bytes_before, bytes_after })
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Tells the supervisor to stop the registry (and not to restart it), without waiting.
    pub fn begin_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the registry and waits for it to exit.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(s) = self.supervisor.lock().await.take() {
            let _ = s.await;
        }
    }
}

/// Bytes stored under `dir`, as files (blocking).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// Restarts the registry whenever it exits, until asked to stop; stops it for maintenance on request.
async fn supervise(
    settings: Settings,
    mut child: Child,
    mut stopping: watch::Receiver<bool>,
    mut pauses: mpsc::Receiver<Pause>,
    pid: Arc<AtomicU32>,
) {
    loop {
        tokio::select! {
            status = child.wait() => {
                pid.store(0, Ordering::Relaxed);
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::error!(%status, log = %settings.files.log.display(), "the registry exited; starting it again");
            }
            Some(request) = pauses.recv() => {
                tracing::info!("stopping the registry for maintenance");
                shut_down(&mut child).await;
                pid.store(0, Ordering::Relaxed);
                let _ = request.stopped.send(());
                tokio::select! {
                    _ = request.resume => {}
                    () = crate::supervise::stopped(&mut stopping) => return,
                }
            }
            () = crate::supervise::stopped(&mut stopping) => {
                shut_down(&mut child).await;
                return;
            }
        }
        let start = || async {
            let mut c = settings.spawn()?;
            match settings.wait_ready(&mut c).await {
                Ok(()) => Ok(c),
                Err(e) => {
                    shut_down(&mut c).await;
                    Err(e)
                }
            }
        };
        match crate::supervise::restart("the registry", start, &mut stopping).await {
            Some(restarted) => {
                pid.store(restarted.id().unwrap_or(0), Ordering::Relaxed);
                child = restarted;
            }
            None => return,
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s.
async fn shut_down(child: &mut Child) {
    crate::supervise::shut_down(child, Signal::SIGTERM, Duration::from_secs(10)).await;
}
