//! The built-in registry's keys: the platform CA its TLS certificate comes from (and which every node
//! trusts), and the key that signs its tokens. Both are created once, kept in `platform_keys` with the
//! private key sealed, and shared by every Berth process.

use std::net::IpAddr;

use anyhow::Context;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::crypto::Keys;
use crate::pki::Pem;

const CA: &str = "registry-ca";
const TOKEN: &str = "registry-token";

/// The platform CA's name; with its key, all that is needed to issue certificates from it.
const CA_NAME: &str = "Berth platform CA";

fn token_params() -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Berth");
    dn.push(DnType::CommonName, "Berth registry token signer");
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

/// Reads a platform key, creating it with `make` on first use. Concurrent first uses agree: the first
/// insert wins and everyone reads what it wrote.
async fn get_or_create(db: &PgPool, keys: &Keys, name: &str, make: fn() -> anyhow::Result<Pem>) -> anyhow::Result<Pem> {
    let read = || async {
        let row: Option<(String, Vec<u8>)> = sqlx::query_as("SELECT cert_pem, key_sealed FROM platform_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(db)
            .await?;
        row.map(|(cert, sealed)| -> anyhow::Result<Pem> {
            let key = String::from_utf8(keys.open(&sealed).with_context(|| format!("opening the platform key `{name}`"))?)?;
            Ok(Pem { cert, key })
        })
        .transpose()
    };
    if let Some(pem) = read().await? {
        return Ok(pem);
    }
    let fresh = make()?;
    sqlx::query("INSERT INTO platform_keys (name, cert_pem, key_sealed) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(&fresh.cert)
        .bind(keys.seal(fresh.key.as_bytes()))
        .execute(db)
        .await?;
    read().await?.context("the platform key vanished after being written")
}

/// The platform CA: nodes trust it for the registry's address.
pub async fn platform_ca(db: &PgPool, keys: &Keys) -> anyhow::Result<Pem> {
    get_or_create(db, keys, CA, || crate::pki::new_ca_named(CA_NAME)).await
}

/// The token-signing key (ECDSA P-256) and its self-signed certificate, which goes into the registry's
/// `rootcertbundle`.
pub async fn token_signer(db: &PgPool, keys: &Keys) -> anyhow::Result<Pem> {
    get_or_create(db, keys, TOKEN, || {
        let key = KeyPair::generate()?;
        let cert = token_params()?.self_signed(&key)?;
        Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
    })
    .await
}

/// A TLS server certificate from the platform CA for the registry's (and its token service's) addresses.
pub fn server_cert(ca: &Pem, addresses: &[IpAddr]) -> anyhow::Result<Pem> {
    let sans = addresses.iter().map(|a| SanType::IpAddress(*a)).collect();
    crate::pki::leaf(CA_NAME, &ca.key, "Berth registry", sans, ExtendedKeyUsagePurpose::ServerAuth)
}

/// The key id distribution 2.8 (libtrust) derives from a public key, which a token's `kid` header must
/// carry: the SHA-256 of the DER SubjectPublicKeyInfo, its first 240 bits in unpadded base32, in twelve
/// groups of four joined by `:`. (It is not RFC 7638's thumbprint.)
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let encoded = base32(&digest[..30]);
    let groups: Vec<&str> = (0..encoded.len()).step_by(4).map(|i| &encoded[i..i + 4]).collect();
    groups.join(":")
}

/// RFC 4648 base32 without padding (30 bytes give exactly 48 characters).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The DER SubjectPublicKeyInfo of a PEM private key's public half.
pub fn public_key_der(key_pem: &str) -> anyhow::Result<Vec<u8>> {
    Ok(KeyPair::from_pem(key_pem)?.subject_public_key_info())
}

/// A PEM private key as PKCS#8 DER.
pub fn private_key_der(key_pem: &str) -> anyhow::Result<Vec<u8>> {
    Ok(KeyPair::from_pem(key_pem)?.serialize_der())
}

/// A PEM certificate's body as base64 DER (what an `x5c` header or a fingerprint needs).
pub fn cert_der_base64(cert_pem: &str) -> String {
    cert_pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn key_ids_are_twelve_groups_of_four() {
        let id = libtrust_key_id(b"any der bytes");
        let groups: Vec<&str> = id.split(':').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))));
    }
}
