//! Recently verified e-mail and password pairs, for the token service only.
//!
//! A Docker engine sends the same stored login with every pull and push, and each check would cost an
//! Argon2 hash (tens of milliseconds of a core, on purpose). Once a pair has been verified, its keyed
//! fingerprint is remembered for a few minutes with the password hash it matched; a later request with
//! the same pair skips Argon2 only if the user's *current* row still has that password hash — so a
//! changed password, a deleted user, a new role or a suspended tenant still take effect at once.
//! Nothing here can recover a password: entries hold a keyed SHA-256 under a per-process random key.
//!
//! Checks of one account are also taken one at a time ([`LoginCache::one_at_a_time`]): when many
//! engines arrive at once with the same login (a cluster pulling after a restart, parallel CI jobs),
//! the first verifies it and the others find it remembered, instead of all paying for Argon2 and
//! together tripping the guessing throttle, which counts attempts before it knows they are right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(300);
const CAPACITY: usize = 10_000;

pub struct LoginCache {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    checking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct Entry {
    user: Uuid,
    password_hash: String,
    until: Instant,
}

impl Default for LoginCache {
    fn default() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        LoginCache { key, entries: Mutex::new(HashMap::new()), checking: Mutex::new(HashMap::new()) }
    }
}

impl LoginCache {
    fn fingerprint(&self, email: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(email.trim().to_lowercase().as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The user and the password hash a pair was verified against, if it was, recently.
    pub fn lookup(&self, email: &str, password: &str) -> Option<(Uuid, String)> {
        let fp = self.fingerprint(email, password);
        let entries = self.entries.lock().expect("login cache");
        entries.get(&fp).filter(|e| e.until > Instant::now()).map(|e| (e.user, e.password_hash.clone()))
    }

    /// Waits until no other check of this account runs in this process, and holds that until the
    /// guard is dropped.
    pub async fn one_at_a_time(&self, email: &str) -> AccountGuard<'_> {
        let email = email.trim().to_lowercase();
        let lock = self.checking.lock().expect("login locks").entry(email.clone()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        AccountGuard { cache: self, email, lock, _guard: Some(guard) }
    }

    pub fn remember(&self, email: &str, password: &str, user: Uuid, password_hash: String) {
        let fp = self.fingerprint(email, password);
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("login cache");
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(fp, Entry { user, password_hash, until: now + TTL });
    }
}

/// Held while one account's login is checked; forgets the account's lock when nobody else waits on it.
pub struct AccountGuard<'a> {
    cache: &'a LoginCache,
    email: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for AccountGuard<'_> {
    fn drop(&mut self) {
        self._guard.take();
        let mut locks = self.cache.checking.lock().expect("login locks");
        // Two references left: the map's and ours. Nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.email);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_the_exact_pair() {
        let c = LoginCache::default();
        let u = Uuid::now_v7();
        c.remember("Ann@X.test", "secret-1", u, "$argon2id$h".into());
        assert_eq!(c.lookup("ann@x.test", "secret-1"), Some((u, "$argon2id$h".into())));
        assert_eq!(c.lookup("ann@x.test", "secret-2"), None);
        assert_eq!(c.lookup("bob@x.test", "secret-1"), None);
        assert_ne!(LoginCache::default().fingerprint("a", "b"), c.fingerprint("a", "b"), "keys differ per process");
    }
}
