//! One Berth per data directory.
//!
//! The embedded database, its socket and the master secret live in the data directory, and only one
//! process may own them: a second `berth serve` on the same directory used to take the first one's
//! running PostgreSQL for a stale leftover and stop it. [`DataDirLock`] is an exclusive `flock` on
//! `<data_dir>/berth.lock`, held for the life of the process. The kernel drops it when the process dies
//! however it dies, so "is the owner alive?" is never a guess from a PID file. The PID written into the
//! file is only there to name the owner in the error message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = "berth.lock";

/// Holds the data directory for this process until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock, or fails at once with one line naming the process that holds it. Touches nothing
    /// else in the directory when it fails.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        // Opened without truncation: the holder's PID must survive a failed attempt to take the lock.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() { "another Berth".to_owned() } else { format!("another Berth (pid {holder})") };
                bail!(
                    "the data directory {} is in use by {who}; stop it first, or give this one its own BERTH_DATA_DIR",
                    data_dir.display()
                );
            }
            Err((_, errno)) => bail!("locking {}: {errno}", path.display()),
        };
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_and_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("berth-lock-{}", uuid::Uuid::new_v4().simple()));
        let first = DataDirLock::acquire(&dir).unwrap();
        // flock locks belong to open file descriptions, so a second open in this process conflicts too.
        let err = DataDirLock::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("in use by another Berth") && err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        let again = DataDirLock::acquire(&dir).unwrap();
        assert!(again.path().exists());
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
