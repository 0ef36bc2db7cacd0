//! Certificates and keys in PEM: what a certificate names, when it is valid, whether a key is its
//! key. Pure; the API checks uploads with it and the ACME job reads what the authority issued.

use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// What Berth keeps from a certificate chain's leaf.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    /// Its DNS names (subject alternative names, else the common name), lowercased.
    pub names: Vec<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Hex.
    pub serial: String,
    /// The subject public key info, DER: what its private key must match.
    pub spki: Vec<u8>,
}

/// Reads a PEM chain (leaf first) and its leaf.
pub fn leaf(chain: &str) -> Result<Leaf, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    let first = certs.first().ok_or("no `-----BEGIN CERTIFICATE-----` block")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(first).map_err(|e| format!("the first certificate does not parse: {e}"))?;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase).collect();
    }
    let time = |t: x509_parser::time::ASN1Time| DateTime::from_timestamp(t.timestamp(), 0).unwrap_or_default();
    Ok(Leaf {
        names,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        serial: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
        spki: cert.public_key().raw.to_vec(),
    })
}

/// Whether a certificate naming `names` serves `domain` (a wildcard name covers one level below it;
/// a wildcard `domain` needs the same wildcard).
pub fn covers(names: &[String], domain: &str) -> bool {
    names.iter().any(|n| berth_types::certificate_covers(n, domain))
}

/// Checks that `key` (PKCS#8 PEM) is the private key of the certificate whose public key is `spki`.
pub fn key_matches(key: &str, spki: &[u8]) -> Result<(), String> {
    let pair = rcgen::KeyPair::from_pem(key)
        .map_err(|_| "not a private key Berth can read: give a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`)".to_owned())?;
    if rcgen::PublicKeyData::subject_public_key_info(&pair) != spki {
        return Err("this private key is not the certificate's".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_chain_is_read_and_its_key_checked() {
        let (cert, key) = made(&["www.example.com", "Example.com"]);
        let leaf = leaf(&cert).unwrap();
        assert_eq!(leaf.names, ["www.example.com", "example.com"]);
        assert!(leaf.not_after > leaf.not_before && !leaf.serial.is_empty());
        key_matches(&key, &leaf.spki).unwrap();
        let (_, other) = made(&["www.example.com"]);
        assert_eq!(key_matches(&other, &leaf.spki).unwrap_err(), "this private key is not the certificate's");
        assert!(key_matches("nonsense", &leaf.spki).unwrap_err().contains("PKCS#8"));
        assert!(super::leaf("nonsense").unwrap_err().contains("BEGIN CERTIFICATE"));
        assert!(super::leaf("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }

    #[test]
    fn wildcards_cover_one_level() {
        let names = vec!["*.example.com".to_owned(), "example.com".to_owned()];
        assert!(covers(&names, "www.example.com"));
        assert!(covers(&names, "example.com"));
        assert!(covers(&names, "*.example.com"));
        assert!(!covers(&names, "a.b.example.com"));
        assert!(!covers(&["www.example.com".to_owned()], "*.example.com"));
    }
}
