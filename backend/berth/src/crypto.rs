//! Keys derived from the master secret, at-rest encryption, and opaque tokens.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of API tokens, so that a leaked one is recognisable (and so the auth extractor can tell an
/// API token from a JWT without trying to parse it).
pub const API_TOKEN_PREFIX: &str = "berth_";

/// Keys derived from the master secret, one per purpose, so that no key is used for two things.
#[derive(Clone)]
pub struct Keys {
    pub jwt: Vec<u8>,
    at_rest: Aes256Gcm,
}

impl Keys {
    pub fn from_secret(secret: &str) -> anyhow::Result<Self> {
        if secret.len() < 16 {
            bail!("BERTH_SECRET must be at least 16 characters");
        }
        let jwt = derive(secret, "berth jwt signing v1").to_vec();
        let at_rest = Aes256Gcm::new(&derive(secret, "berth at-rest encryption v1").into());
        Ok(Keys { jwt, at_rest })
    }

    /// Encrypts with AES-256-GCM; the output is the 12-byte random nonce followed by the ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(self.at_rest.encrypt(&Nonce::from(nonce), plaintext).expect("AES-GCM encryption cannot fail"));
        out
    }

    pub fn open(&self, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < 12 {
            bail!("sealed value too short");
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
        self.at_rest
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| anyhow::anyhow!("cannot decrypt: wrong master secret or corrupted value"))
    }
}

fn derive(secret: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(purpose.as_bytes());
    h.update([0u8]);
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// The configured secret, or the one kept in `<data_dir>/secret`, generated on first use.
pub fn load_or_create_secret(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(s) = configured {
        return Ok(s.to_owned());
    }
    let path = data_dir.join("secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_owned());
    }
    std::fs::create_dir_all(data_dir)?;
    let secret = random_token(32);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    Ok(secret)
}

/// `bytes` random bytes, base64url-encoded.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Opaque tokens are stored only as their SHA-256: a database leak does not leak usable tokens. A fast
/// hash is right here (unlike passwords) because the tokens are long and random.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_detects_tampering() {
        let keys = Keys::from_secret("0123456789abcdef0123").unwrap();
        let sealed = keys.seal(b"hunter2");
        assert_eq!(keys.open(&sealed).unwrap(), b"hunter2");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(keys.open(&tampered).is_err());
        let other = Keys::from_secret("another secret of enough length").unwrap();
        assert!(other.open(&sealed).is_err());
    }

    #[test]
    fn short_secret_is_refused() {
        assert!(Keys::from_secret("short").is_err());
    }
}
