//! Keeping a child process running: what Berth's supervision of its embedded PostgreSQL and of its
//! registry share. Each caller watches its own process (and says why it is restarting it); this module
//! starts it again with a growing pause between failed attempts, and stops it.

use std::future::Future;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::watch;

/// Starts a process again until `start` (which spawns it and waits until it is ready, cleaning up
/// after itself when it is not) succeeds, pausing 200 ms, then twice as long each time up to 5 s,
/// between attempts. `None` when Berth asks to stop meanwhile.
pub async fn restart<F, Fut>(what: &str, mut start: F, stopping: &mut watch::Receiver<bool>) -> Option<Child>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Child>>,
{
    let mut pause = Duration::from_millis(200);
    loop {
        let outcome = tokio::select! {
            outcome = start() => outcome,
            () = stopped(stopping) => return None,
        };
        match outcome {
            Ok(child) => {
                tracing::info!("{what} is running again");
                return Some(child);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?pause, "restarting {what} failed");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stopped(stopping) => return None,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Resolves once `stopping` turns true. (The guard `wait_for` returns must not live across an await
/// in a spawned task, so it is dropped here.)
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// Runs `pass` now and then every `interval` until `stopping` turns true; a pass that fails is logged
/// (as `what`) and the next one runs on time.
pub async fn every<F, Fut>(what: &str, interval: Duration, stopping: &mut watch::Receiver<bool>, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    loop {
        if let Err(e) = pass().await {
            tracing::warn!(error = %format!("{e:#}"), "{what} failed");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stopped(stopping) => return,
        }
    }
}

/// Asks a child to stop with `signal`, waits up to `grace`, then kills it.
pub async fn shut_down(child: &mut Child, signal: Signal, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}
