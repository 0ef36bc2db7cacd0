//! TLS certificates the routers serve: uploaded by a tenant (the key sealed at rest) or obtained by
//! Berth from an ACME certificate authority (HTTP-01, answered by the routers themselves) and renewed
//! before they expire. One home for the capability:
//!
//! - [`pem`]: reading and checking certificates and keys, pure;
//! - [`store`]: every query on `certificates`, and which names a tenant may have one for;
//! - [`api`]: the `/api/v1/certificates` handlers;
//! - [`acme`]: the `certificate.issue` job and the renewal loop.
//!
//! The routers' part is `routing::table` (issued certificates and challenges in the table) and
//! `routing::haproxy_config` (an SNI listener, the challenge answers, the HTTPS redirect).

use std::path::PathBuf;

use clap::Args;

pub mod acme;
pub mod api;
pub mod pem;
pub mod store;

/// Where Berth obtains certificates, and when it renews them.
#[derive(Debug, Clone, Args)]
pub struct AcmeConfig {
    /// The ACME directory (Let's Encrypt's by default).
    #[arg(long, env = "BERTH_ACME_DIRECTORY", default_value = "https://acme-v02.api.letsencrypt.org/directory")]
    pub acme_directory: String,

    /// A PEM root certificate to trust for the directory's HTTPS instead of the system's (a private
    /// or test authority, such as pebble).
    #[arg(long, env = "BERTH_ACME_CA_FILE")]
    pub acme_ca_file: Option<PathBuf>,

    /// A contact address given to the authority (`mailto:` is added).
    #[arg(long, env = "BERTH_ACME_CONTACT")]
    pub acme_contact: Option<String>,

    /// Renew a certificate this many days before it expires.
    #[arg(long, env = "BERTH_ACME_RENEW_DAYS", default_value_t = 30)]
    pub acme_renew_days: u32,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            acme_directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            acme_ca_file: None,
            acme_contact: None,
            acme_renew_days: 30,
        }
    }
}
