//! The embedded default database: a private PostgreSQL run from the machine's own server binaries.
//!
//! With `BERTH_DATABASE_URL` unset, `berth serve` keeps a cluster in `<data_dir>/postgres`, listens only
//! on a unix socket in `<data_dir>/run` (no TCP port to collide with or to expose), and stops the server
//! when Berth exits. PostgreSQL refuses to run as root, so when Berth is root the server runs as the
//! `postgres` system user that Debian's package creates.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid, User, chown};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::data_dir::DataDirLock;
use crate::supervise::{self, stopped};

const DATABASE: &str = "berth";
const SUPERUSER: &str = "berth";

/// What to tell a user whose machine has no PostgreSQL server binaries.
const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, postgres) not found: install them \
     (`apt-get install postgresql`) or set BERTH_DATABASE_URL to an existing server";

/// A private PostgreSQL server under supervision: if it dies while Berth runs, it is started again, so
/// requests recover on their own. Call [`EmbeddedPostgres::stop`] to shut it down cleanly.
pub struct EmbeddedPostgres {
    socket_dir: PathBuf,
    stop: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
    /// Held for as long as the server may run: no other Berth may start or stop a server in this data
    /// directory meanwhile.
    _lock: DataDirLock,
}

/// How to start the server, kept for restarts.
struct Launch {
    bin: PathBuf,
    run_as: RunAs,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
}

impl EmbeddedPostgres {
    /// Takes the data directory's lock, initialises the cluster on first use, starts the server and
    /// waits until it accepts connections.
    pub async fn start(data_dir: &Path, bin_dir: Option<&Path>) -> anyhow::Result<Self> {
        let bin = match bin_dir {
            Some(dir) => dir.to_path_buf(),
            None => find_bin_dir().context(INSTALL_HINT)?,
        };
        for tool in ["initdb", "postgres"] {
            if !bin.join(tool).is_file() {
                bail!("{INSTALL_HINT} (looked in {})", bin.display());
            }
        }
        // Before anything else: a live Berth on this directory owns its server, and we must not touch it.
        let lock = DataDirLock::acquire(data_dir)?;
        let run_as = RunAs::detect()?;
        let data_dir = run_as.reachable_home(&data_dir.canonicalize()?)?;
        let pgdata = data_dir.join("postgres");
        let socket_dir = data_dir.join("run");

        std::fs::create_dir_all(&socket_dir)?;
        run_as.own(&socket_dir)?;

        if !pgdata.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&pgdata)?;
            run_as.own(&pgdata)?;
            let out = run_as
                .command(bin.join("initdb"))
                .arg("-D")
                .arg(&pgdata)
                .args(["-U", SUPERUSER, "-E", "UTF8", "--no-locale", "--auth=trust"])
                .stdin(Stdio::null())
                .output()
                .await
                .context("running initdb")?;
            if !out.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }

        // We hold the data directory's lock, so a server still running on it belongs to a Berth that
        // died without stopping it. Only one postmaster may own a data directory: stop that one first.
        stop_stale_postmaster(&pgdata).await;

        let log_path = data_dir.join("postgres.log");
        std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        run_as.own(&log_path)?;
        let launch = Launch { bin, run_as, pgdata, socket_dir: socket_dir.clone(), log_path };
        let mut child = launch.spawn()?;
        if let Err(e) = launch.wait_ready(&mut child).await {
            shut_down(&mut child).await;
            return Err(e);
        }
        let (stop, stopping) = watch::channel(false);
        let supervisor = tokio::spawn(supervise(launch, child, stopping));
        Ok(EmbeddedPostgres { socket_dir, stop, supervisor, _lock: lock })
    }

    /// Connection options for the `berth` database of this server.
    pub fn connect_options(&self) -> PgConnectOptions {
        options_for(&self.socket_dir, DATABASE)
    }

    /// Fast shutdown: disconnects clients, checkpoints, exits. Waits for the server to be gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.supervisor.await;
    }
}

fn options_for(socket_dir: &Path, database: &str) -> PgConnectOptions {
    PgConnectOptions::new().socket(socket_dir).username(SUPERUSER).database(database).disable_statement_logging()
}

/// Watches the server until Berth stops it. A server that exits on its own (crashed, killed, OOM) is
/// started again with a growing pause between attempts; meanwhile requests fail with 503/500 and the
/// pool reconnects once it is back.
async fn supervise(launch: Launch, mut child: Child, mut stopping: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::error!(%status, log = %launch.log_path.display(), "the embedded postgres exited; starting it again");
            }
            () = stopped(&mut stopping) => {
                shut_down(&mut child).await;
                return;
            }
        }
        let start = || async {
            let mut child = launch.spawn()?;
            match launch.wait_ready(&mut child).await {
                Ok(()) => Ok(child),
                Err(e) => {
                    shut_down(&mut child).await;
                    Err(e)
                }
            }
        };
        match supervise::restart("the embedded postgres", start, &mut stopping).await {
            Some(restarted) => child = restarted,
            None => return,
        }
    }
}

/// Asks the server for a fast shutdown and waits for it; kills it if it takes longer than 30 s.
async fn shut_down(child: &mut Child) {
    supervise::shut_down(child, Signal::SIGINT, Duration::from_secs(30)).await;
}

impl Launch {
    fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        self.run_as
            .command(self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=", "-c", "unix_socket_permissions=0700"])
            .args(["-c", "max_connections=200", "-c", "fsync=on"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting postgres")
    }

    /// Waits until the server accepts connections (creating Berth's database on first start).
    async fn wait_ready(&self, child: &mut Child) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!("embedded postgres exited ({status}): {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
            }
            if let Ok(mut conn) = sqlx::PgConnection::connect_with(&options_for(&self.socket_dir, "postgres")).await {
                let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(DATABASE)
                    .fetch_one(&mut conn)
                    .await?;
                if !exists {
                    // Identifiers cannot be bound; DATABASE is a constant.
                    sqlx::query("CREATE DATABASE berth").execute(&mut conn).await?;
                }
                conn.close().await.ok();
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("embedded postgres did not accept connections within 60 s (see {})", self.log_path.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Finds the newest `/usr/lib/postgresql/<version>/bin`, or the directory of `postgres` on PATH.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("postgres").is_file() && dir.join("initdb").is_file())
        .context("no postgres on PATH")
}

async fn stop_stale_postmaster(pgdata: &Path) {
    let Ok(pidfile) = std::fs::read_to_string(pgdata.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = pidfile.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else {
        return;
    };
    // Only a live postgres whose command line names this data directory is ours to stop.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    if !cmdline.contains("postgres") || !cmdline.contains(&*pgdata.to_string_lossy()) {
        return;
    }
    tracing::warn!(pid, "stopping a postgres left running by an earlier Berth that is gone");
    let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
    for _ in 0..300 {
        if kill(Pid::from_raw(pid), None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The OS user the server runs as: ourselves, or `postgres` when we are root.
struct RunAs(Option<User>);

impl RunAs {
    fn detect() -> anyhow::Result<Self> {
        if !Uid::effective().is_root() {
            return Ok(RunAs(None));
        }
        let user = User::from_name("postgres")?
            .with_context(|| format!("{INSTALL_HINT}; as root the embedded server needs the `postgres` system user"))?;
        Ok(RunAs(Some(user)))
    }

    /// Where the database can live. When the server runs as `postgres` but `dir` sits below a directory
    /// that user cannot enter (a checkout under /root, say), it lives in /var/lib/berth instead, in a
    /// directory named after `dir` so that each data directory keeps its own database.
    fn reachable_home(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let Some(user) = &self.0 else {
            return Ok(dir.to_path_buf());
        };
        let blocked = dir.ancestors().skip(1).any(|a| {
            std::fs::metadata(a).is_ok_and(|m| {
                use std::os::unix::fs::{MetadataExt, PermissionsExt};
                m.uid() != user.uid.as_raw() && m.permissions().mode() & 0o001 == 0
            })
        });
        if !blocked {
            return Ok(dir.to_path_buf());
        }
        use sha2::Digest;
        let tag = hex::encode(&sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes())[..6]);
        let home = PathBuf::from("/var/lib/berth").join(format!("embedded-{tag}"));
        std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
        tracing::info!(
            data_dir = %dir.display(),
            database = %home.display(),
            "user postgres cannot reach the data directory; keeping the embedded database elsewhere"
        );
        Ok(home)
    }

    fn own(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(user) = &self.0 {
            chown(path, Some(user.uid), Some(user.gid)).with_context(|| format!("giving {} to user postgres", path.display()))?;
        }
        Ok(())
    }

    fn command(&self, program: PathBuf) -> Command {
        let mut cmd = Command::new(program);
        if let Some(user) = &self.0 {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("HOME", &user.dir);
            // Run from a directory the unprivileged user can read.
            cmd.current_dir("/");
        }
        cmd
    }
}
