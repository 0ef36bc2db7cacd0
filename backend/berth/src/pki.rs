//! Each cluster's own certificate authority. It signs one server certificate per engine (so every
//! dockerd serves its API only over TLS and only to holders of a client certificate from the same CA)
//! and Berth's client certificate. CA and client keys are stored sealed with the master key.

use std::net::IpAddr;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use uuid::Uuid;

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A CA's parameters are fixed apart from its name, so the issuer of later certificates can be rebuilt
/// from the stored key and the name alone.
pub fn ca_params(common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Berth");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

fn cluster_ca(cluster: Uuid) -> String {
    format!("Berth cluster {cluster} CA")
}

/// A new self-signed CA called `common_name`.
pub fn new_ca_named(common_name: &str) -> anyhow::Result<Pem> {
    let key = KeyPair::generate()?;
    let cert = ca_params(common_name)?.self_signed(&key)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// A new CA for `cluster`.
pub fn new_ca(cluster: Uuid) -> anyhow::Result<Pem> {
    new_ca_named(&cluster_ca(cluster))
}

/// A certificate signed by the CA called `ca_name` (whose key is `ca_key_pem`).
pub fn leaf(
    ca_name: &str,
    ca_key_pem: &str,
    common_name: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<Pem> {
    let ca_key = KeyPair::from_pem(ca_key_pem).with_context(|| format!("parsing the key of {ca_name}"))?;
    let issuer = Issuer::new(ca_params(ca_name)?, ca_key);
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Berth");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![usage];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// A server certificate for an engine reachable at `addresses` and called `hostname`.
pub fn server_cert(cluster: Uuid, ca_key_pem: &str, hostname: &str, addresses: &[IpAddr]) -> anyhow::Result<Pem> {
    let mut sans = vec![SanType::DnsName(hostname.try_into()?)];
    sans.extend(addresses.iter().map(|a| SanType::IpAddress(*a)));
    leaf(&cluster_ca(cluster), ca_key_pem, hostname, sans, ExtendedKeyUsagePurpose::ServerAuth)
}

/// The client certificate Berth (and the cluster's users, through the credentials endpoint) connect with.
pub fn client_cert(cluster: Uuid, ca_key_pem: &str) -> anyhow::Result<Pem> {
    leaf(&cluster_ca(cluster), ca_key_pem, "berth", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_certificates() {
        let id = Uuid::now_v7();
        let ca = new_ca(id).unwrap();
        assert!(ca.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        let server = server_cert(id, &ca.key, "node-1", &["10.0.0.2".parse().unwrap()]).unwrap();
        let client = client_cert(id, &ca.key).unwrap();
        assert_ne!(server.cert, client.cert);
        assert!(client.key.contains("PRIVATE KEY"));
    }
}
