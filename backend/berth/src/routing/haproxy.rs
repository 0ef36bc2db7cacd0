//! The HAProxy process a router drives: started in master-worker mode from a validated configuration,
//! reloaded without dropping connections (the master hands the listeners to a new worker and the old
//! one finishes its requests), and changed live through the worker's Runtime API socket.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use super::haproxy_config::{Files, Rendered, render};
use super::table::Table;

/// Where a router's HAProxy runs from: the program, its directory, its listening address.
#[derive(Debug, Clone)]
pub struct Setup {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub listen: std::net::SocketAddr,
    /// Where it serves HTTPS (`None`: plain HTTP only).
    pub tls_listen: Option<std::net::SocketAddr>,
    /// The name it reports under (`BERTH_ROUTER_NAME`); `None`: host name and listen address.
    pub name: Option<String>,
}

impl Setup {
    fn files(&self) -> Files<'_> {
        Files { dir: &self.dir, listen: self.listen, tls_listen: self.tls_listen }
    }

    /// The ACME map's path, as the configuration names it.
    pub fn acme_map(&self) -> PathBuf {
        self.files().acme_map()
    }

    /// Renders the table into a scratch directory, has HAProxy check it there, and only then writes
    /// it where the running HAProxy reads it: a configuration HAProxy would refuse never replaces a
    /// working one.
    pub async fn write_checked(&self, table: &Table) -> anyhow::Result<()> {
        let scratch = self.dir.join("check");
        tokio::fs::create_dir_all(&scratch).await.with_context(|| format!("creating {}", scratch.display()))?;
        let files = Files { dir: &scratch, listen: self.listen, tls_listen: self.tls_listen };
        write_files(&files, &render(table, &files))?;
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg("-f")
            .arg(scratch.join("haproxy.cfg"))
            .output()
            .await
            .with_context(|| format!("running {} -c", self.bin.display()))?;
        if !out.status.success() {
            // Its alerts say why (`-q` would silence them too).
            let stderr = String::from_utf8_lossy(&out.stderr);
            let alerts: Vec<&str> = stderr.lines().filter(|l| l.contains("[ALERT]")).map(str::trim).collect();
            bail!(
                "HAProxy refuses the configuration: {}",
                if alerts.is_empty() { stderr.trim().to_owned() } else { alerts.join("; ") }
            );
        }
        self.write(table).await
    }

    /// Writes the table's configuration without checking it: for tables that differ from a checked
    /// one only in servers, so that a later reload keeps what the Runtime API changed.
    pub async fn write(&self, table: &Table) -> anyhow::Result<()> {
        let files = self.files();
        write_files(&files, &render(table, &files))
    }
}

/// Writes everything HAProxy reads into the files' directory: the certificates first (each file
/// replaced whole; those no longer in the table removed, so a revoked or deleted certificate is no
/// longer served after the next reload), then the maps, then the configuration that names them. Private
/// keys are written readable by the owner only.
pub fn write_files(files: &Files<'_>, rendered: &Rendered) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let certs = files.certificates_dir();
    std::fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
    std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o700))?;
    let default = files.default_certificate();
    if !default.exists() {
        let made = rcgen::generate_simple_self_signed(vec!["berth-router.invalid".to_owned()])
            .context("making the router's default certificate")?;
        write_atomically(&default, &format!("{}{}", made.cert.pem(), made.signing_key.serialize_pem()), 0o600)?;
    }
    let wanted: std::collections::BTreeSet<&str> = rendered.certificates.iter().map(|(n, _)| n.as_str()).collect();
    for entry in std::fs::read_dir(&certs)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted.contains(name.as_str()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (name, pem) in &rendered.certificates {
        let path = certs.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(pem.as_str()) {
            write_atomically(&path, pem, 0o600)?;
        }
    }
    write_atomically(&files.hosts_map(), &rendered.hosts_map, 0o644)?;
    write_atomically(&files.acme_map(), &rendered.acme_map, 0o644)?;
    write_atomically(&files.redirect_map(), &rendered.redirect_map, 0o644)?;
    write_atomically(&files.dir.join("haproxy.cfg"), &rendered.cfg, 0o644)
}

/// A running HAProxy master.
pub struct Haproxy {
    pub setup: Setup,
    pub child: Child,
}

impl Haproxy {
    /// Writes the table's configuration (checked first), starts HAProxy on it and waits until its
    /// worker answers on the Runtime API socket.
    pub async fn start(setup: &Setup, table: &Table) -> anyhow::Result<Haproxy> {
        setup.write_checked(table).await?;
        let _ = tokio::fs::remove_file(setup.files().admin_socket()).await;
        let mut child = Command::new(&setup.bin)
            .arg("-W")
            .arg("-db")
            .arg("-f")
            .arg(setup.dir.join("haproxy.cfg"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", setup.bin.display()))?;
        let stderr = child.stderr.take();
        let mut me = Haproxy { setup: setup.clone(), child };
        if let Err(e) = me.wait_for_worker(None).await {
            let _ = me.child.kill().await;
            let mut why = String::new();
            if let Some(mut err) = stderr {
                let _ = tokio::time::timeout(Duration::from_secs(1), err.read_to_string(&mut why)).await;
            }
            bail!("{e:#}: {}", why.trim());
        }
        if let Some(err) = stderr {
            tokio::spawn(log_stderr(err));
        }
        Ok(me)
    }

    /// Checks and writes the table's configuration, then has the master start a new worker on it.
    pub async fn reload(&mut self, table: &Table) -> anyhow::Result<()> {
        self.setup.write_checked(table).await?;
        let old = self.worker_pid().await.ok();
        let pid = self.child.id().context("HAProxy has exited")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGUSR2).context("signalling HAProxy to reload")?;
        self.wait_for_worker(old).await
    }

    /// Waits until a worker other than `old` answers on the Runtime API socket.
    async fn wait_for_worker(&mut self, old: Option<u32>) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("HAProxy exited ({status})");
            }
            if let Ok(pid) = self.worker_pid().await
                && Some(pid) != old
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("HAProxy's worker did not answer within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn worker_pid(&self) -> anyhow::Result<u32> {
        let info = self.command("show info").await?;
        info.lines().find_map(|l| l.strip_prefix("Pid: ")).and_then(|p| p.trim().parse().ok()).context("`show info` names no Pid")
    }

    /// Sends one Runtime API command to the current worker and returns its answer.
    pub async fn command(&self, command: &str) -> anyhow::Result<String> {
        runtime_command(&self.setup.files().admin_socket(), command).await
    }

    /// Stops HAProxy: the master stops its workers.
    pub async fn stop(&mut self) {
        crate::supervise::shut_down(&mut self.child, Signal::SIGTERM, Duration::from_secs(5)).await;
    }
}

/// A Runtime API exchange: one command, the socket closes after the answer.
pub async fn runtime_command(socket: &Path, command: &str) -> anyhow::Result<String> {
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await?;
        stream.write_all(command.as_bytes()).await?;
        stream.write_all(b"\n").await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        anyhow::Ok(answer)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("HAProxy's Runtime API did not answer within 5 s")?
        .with_context(|| format!("HAProxy's Runtime API at {}", socket.display()))
}

/// Writes a file whole under a temporary name (outside the certificates' naming), then renames it.
fn write_atomically(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

async fn log_stderr(err: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(err).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "berth::routing::haproxy", "{line}");
    }
}
