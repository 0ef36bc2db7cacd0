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

use super::haproxy_config::{Files, render};
use super::table::Table;

/// Where a router's HAProxy runs from: the program, its directory, its listening address.
#[derive(Debug, Clone)]
pub struct Setup {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub listen: std::net::SocketAddr,
}

impl Setup {
    fn files(&self) -> Files<'_> {
        Files { dir: &self.dir, listen: self.listen }
    }

    /// Renders the table into a scratch directory, has HAProxy check it there, and only then writes
    /// it where the running HAProxy reads it: a configuration HAProxy would refuse never replaces a
    /// working one.
    pub async fn write_checked(&self, table: &Table) -> anyhow::Result<()> {
        let scratch = self.dir.join("check");
        tokio::fs::create_dir_all(&scratch).await.with_context(|| format!("creating {}", scratch.display()))?;
        let (cfg, map) = render(table, &Files { dir: &scratch, listen: self.listen });
        write_atomically(&scratch.join("hosts.map"), &map).await?;
        write_atomically(&scratch.join("haproxy.cfg"), &cfg).await?;
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
        let (cfg, map) = render(table, &self.files());
        write_atomically(&self.files().hosts_map(), &map).await?;
        write_atomically(&self.dir.join("haproxy.cfg"), &cfg).await
    }
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

async fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, text).await.with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, path).await.with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

async fn log_stderr(err: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(err).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "berth::routing::haproxy", "{line}");
    }
}
