//! A real ACME authority for tests: Debian's `pebble`, on loopback, resolving every name to
//! 127.0.0.1 through `pebble-challtestsrv` ([`TestDns`]) (so HTTP-01 validation reaches the test's router), and a
//! TLS client that reads the certificate a router serves.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dns::TestDns;
use crate::{free_port_on, temp_data_dir};

/// A certificate for `names` issued by a CA made for the test.
pub struct TestCertificate {
    pub ca_pem: String,
    pub cert_pem: String,
    /// PKCS#8.
    pub key_pem: String,
}

impl TestCertificate {
    pub fn new(names: &[&str], ip: Option<std::net::IpAddr>) -> TestCertificate {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "berth test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        if let Some(ip) = ip {
            params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
        }
        let cert = params.signed_by(&key, &issuer).unwrap();
        TestCertificate { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// pebble and its DNS, ended (by their process ids) when dropped.
pub struct Pebble {
    pub dir: PathBuf,
    /// The ACME directory URL.
    pub directory: String,
    /// The root pebble's own HTTPS certificate chains to (for Berth's `BERTH_ACME_CA_FILE`).
    pub https_ca_file: PathBuf,
    management: String,
    pebble: Child,
    /// Ended after pebble (fields drop in order).
    _dns: TestDns,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of 127.0.0.1.
    pub fn start(http_port: u16, tls_port: u16) -> Pebble {
        let dir = temp_data_dir("berth-pebble");
        let lo = [127, 0, 0, 1].into();
        // pebble serves its API over HTTPS: a CA and a certificate for 127.0.0.1, made here.
        let made = TestCertificate::new(&["localhost"], Some(lo));
        std::fs::write(dir.join("ca.pem"), &made.ca_pem).unwrap();
        std::fs::write(dir.join("cert.pem"), &made.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &made.key_pem).unwrap();

        let (api, management) = (free_port_on(lo), free_port_on(lo));
        // Its DNS answers every name with 127.0.0.1, so validation reaches the test's router.
        let dns = TestDns::start();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let pebble = Command::new("pebble")
            .args(["-config", dir.join("pebble.json").to_str().unwrap(), "-dnsserver", &dns.addr.to_string()])
            // No random sleeps or refused nonces; every order validated afresh (renewals too).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's pebble is needed: run `make test`");
        let me = Pebble {
            directory: format!("https://127.0.0.1:{api}/dir"),
            https_ca_file: dir.join("ca.pem"),
            management: format!("127.0.0.1:{management}"),
            dir,
            pebble,
            _dns: dns,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
            assert!(Instant::now() < deadline, "pebble did not listen on {api}");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }

    /// The root that pebble's issued certificates chain to (a new one each run).
    pub async fn issuing_root(&self) -> String {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.https_ca_file).unwrap()).unwrap();
        let http = reqwest::Client::builder().tls_built_in_root_certs(false).add_root_certificate(ca).build().unwrap();
        let r = http.get(format!("https://{}/roots/0", self.management)).send().await.unwrap();
        assert!(r.status().is_success(), "pebble's management API: {}", r.status());
        r.text().await.unwrap()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What an HTTPS request through a router got: the status, the body and the serial number (hex) of
/// the certificate served — verified against `root_pem` for `host`, or an error saying why not.
pub async fn https_get(
    addr: std::net::SocketAddr,
    host: &str,
    root_pem: &str,
    path: &str,
) -> Result<(u16, String, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first().cloned()).ok_or("no certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).map_err(|e| e.to_string())?;
    let serial = parsed.tbs_certificate.raw_serial_as_string().replace(':', "");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_owned()).unwrap_or_default();
    Ok((status, body, serial))
}
