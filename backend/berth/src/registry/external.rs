//! External registries a tenant adds (`/api/v1/registries`): checking their credentials, listing their
//! repositories and tags, and resolving tags to digests, through the Registry HTTP API v2 with the
//! authentication it asks for (Basic, or a Bearer token from the realm it names).
//!
//! Talking to a registry a tenant named makes Berth open connections from inside the operator's
//! network, so every address — the registry's and its token realm's — is resolved once and checked
//! first: public addresses are fine, private, loopback and link-local ones only inside networks the
//! operator lists (`BERTH_EXTERNAL_REGISTRY_ALLOWED_NETWORKS`). The connection then goes to exactly
//! the address that was checked (no second DNS answer can redirect it).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

#[derive(Debug, Clone, Args)]
pub struct ExternalRegistryPolicy {
    /// Private networks (comma-separated CIDRs) in which external registries may be; public addresses
    /// are always allowed. Empty by default: a tenant could otherwise make Berth probe your network.
    #[arg(long, env = "BERTH_EXTERNAL_REGISTRY_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub external_registry_allowed_networks: Vec<IpNet>,

    /// Whether external registries may be named by host name (looked up in DNS). `false`: by IP
    /// address only.
    #[arg(long, env = "BERTH_EXTERNAL_REGISTRY_NAMES", default_value_t = true, action = clap::ArgAction::Set)]
    pub external_registry_names: bool,
}

impl Default for ExternalRegistryPolicy {
    fn default() -> Self {
        ExternalRegistryPolicy { external_registry_allowed_networks: Vec::new(), external_registry_names: true }
    }
}

/// Addresses that are not on the public internet.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

impl ExternalRegistryPolicy {
    /// Resolves `host:port` and checks every address it resolves to; returns the one to connect to.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        if host.parse::<IpAddr>().is_err() && !self.external_registry_names {
            return Err(format!(
                "`{host}` is a host name; this Berth accepts external registries by IP address only \
                 (BERTH_EXTERNAL_REGISTRY_NAMES=false)"
            ));
        }
        let addrs: Vec<SocketAddr> = tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| format!("resolving `{host}` timed out"))?
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .collect();
        let first = *addrs.first().ok_or_else(|| format!("`{host}` resolves to no address"))?;
        for a in &addrs {
            if is_internal(a.ip()) && !self.external_registry_allowed_networks.iter().any(|n| n.contains(&a.ip())) {
                return Err(format!(
                    "`{host}` is at {}, a private address outside the networks this Berth's operator allows \
                     (BERTH_EXTERNAL_REGISTRY_ALLOWED_NETWORKS)",
                    a.ip()
                ));
            }
        }
        Ok(first)
    }
}

/// Why talking to an external registry failed.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("{0}")]
    Refused(String),
    #[error("the registry refused the credentials: {0}")]
    Credentials(String),
    #[error("the registry does not grant this account `{0}`")]
    Denied(String),
    #[error("cannot reach the registry: {0}")]
    Unreachable(String),
    #[error("the registry answered HTTP {0}")]
    Status(StatusCode),
}

pub struct ExternalRegistry {
    policy: ExternalRegistryPolicy,
    ca_pem: Option<String>,
    base: String,
    http: reqwest::Client,
    credentials: Option<(String, String)>,
}

/// `host[:port]` split, with Docker's default port for registries (443).
fn split_address(address: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse().unwrap_or(443)),
        _ => (address.to_owned(), 443),
    }
}

/// A client whose every connection to `host` goes to `addr`, trusting `ca_pem` alone when given, and
/// otherwise the machine's CA store.
fn client(ca_pem: Option<&str>, host: &str, addr: SocketAddr) -> Result<reqwest::Client, ExternalError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .resolve(host, addr);
    if let Some(pem) = ca_pem {
        let ca = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| ExternalError::Refused(format!("ca_pem: {e}")))?;
        b = b.tls_built_in_root_certs(false).add_root_certificate(ca);
    }
    b.build().map_err(|e| ExternalError::Unreachable(e.to_string()))
}

impl ExternalRegistry {
    /// Checks the address against the policy and prepares a client pinned to the checked address.
    pub async fn connect(
        policy: &ExternalRegistryPolicy,
        address: &str,
        credentials: Option<(String, String)>,
        ca_pem: Option<String>,
    ) -> Result<Self, ExternalError> {
        let (host, port) = split_address(address);
        let addr = policy.resolve(&host, port).await.map_err(ExternalError::Refused)?;
        let http = client(ca_pem.as_deref(), &host, addr)?;
        Ok(ExternalRegistry { policy: policy.clone(), ca_pem, base: format!("https://{address}"), http, credentials })
    }

    /// Sends a request, answering the registry's authentication challenge once.
    async fn send(
        &self,
        method: Method,
        path: &str,
        scope: Option<&str>,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, ExternalError> {
        let build = |auth: Option<String>| {
            let mut r = self.http.request(method.clone(), format!("{}{path}", self.base));
            if let Some(a) = accept {
                r = r.header("Accept", a);
            }
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r
        };
        let unreachable = |e: reqwest::Error| ExternalError::Unreachable(e.without_url().to_string());
        let first = build(None).send().await.map_err(unreachable)?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let auth = if challenge.to_ascii_lowercase().starts_with("bearer") {
            format!("Bearer {}", self.token(&challenge, scope).await?)
        } else {
            let Some((user, password)) = &self.credentials else {
                return Err(ExternalError::Credentials("the registry needs a user name and password".into()));
            };
            use base64::Engine;
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        };
        let second = build(Some(auth)).send().await.map_err(unreachable)?;
        if second.status() == StatusCode::UNAUTHORIZED {
            // A token that was issued but grants too little: the account is known, the access is not.
            let again = second.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
            if again.contains("insufficient_scope") {
                return Err(ExternalError::Denied(scope.unwrap_or("this").to_owned()));
            }
            return Err(ExternalError::Credentials("HTTP 401".into()));
        }
        Ok(second)
    }

    /// A Bearer token from the realm the challenge names. The realm's address is checked like the
    /// registry's.
    async fn token(&self, challenge: &str, scope: Option<&str>) -> Result<String, ExternalError> {
        let params = parse_challenge(challenge);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| ExternalError::Refused("the registry asked for a token without naming where to get one".into()))?;
        let url = reqwest::Url::parse(&realm).map_err(|_| ExternalError::Refused(format!("bad token realm `{realm}`")))?;
        if url.scheme() != "https" {
            return Err(ExternalError::Refused(format!("the token realm `{realm}` is not HTTPS")));
        }
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addr = self.policy.resolve(&host, port).await.map_err(ExternalError::Refused)?;
        let http = client(self.ca_pem.as_deref(), &host, addr)?;
        let mut query: Vec<(String, String)> = Vec::new();
        if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
            query.push(("service".into(), service.clone()));
        }
        if let Some(s) = scope {
            query.push(("scope".into(), s.to_owned()));
        }
        let mut req = http.get(url).query(&query);
        if let Some((user, password)) = &self.credentials {
            req = req.basic_auth(user, Some(password));
        }
        let r = req.send().await.map_err(|e| ExternalError::Unreachable(e.without_url().to_string()))?;
        if matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let body = r.text().await.unwrap_or_default();
            return Err(ExternalError::Credentials(registry_message(&body).unwrap_or_else(|| "refused".into())));
        }
        if !r.status().is_success() {
            return Err(ExternalError::Status(r.status()));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = r.json().await.map_err(|e| ExternalError::Unreachable(e.to_string()))?;
        t.token.or(t.access_token).ok_or_else(|| ExternalError::Refused("the token realm returned no token".into()))
    }

    /// `GET /v2/` with the credentials: is this a registry, and does it take them?
    pub async fn check(&self) -> Result<(), ExternalError> {
        let r = self.send(Method::GET, "/v2/", None, None).await?;
        if r.status().is_success() { Ok(()) } else { Err(ExternalError::Status(r.status())) }
    }

    pub async fn catalog(&self) -> Result<Vec<String>, ExternalError> {
        #[derive(Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let r = self.send(Method::GET, "/v2/_catalog?n=1000", Some("registry:catalog:*"), None).await?;
        if !r.status().is_success() {
            return Err(ExternalError::Status(r.status()));
        }
        Ok(r.json::<Catalog>().await.map_err(|e| ExternalError::Unreachable(e.to_string()))?.repositories)
    }

    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, ExternalError> {
        #[derive(Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let scope = format!("repository:{repo}:pull");
        let r = self.send(Method::GET, &format!("/v2/{repo}/tags/list"), Some(&scope), None).await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !r.status().is_success() {
            return Err(ExternalError::Status(r.status()));
        }
        Ok(r.json::<Tags>().await.map_err(|e| ExternalError::Unreachable(e.to_string()))?.tags.unwrap_or_default())
    }

    /// The digest `repo:tag` points at, or `None` when there is no such tag.
    pub async fn digest(&self, repo: &str, tag: &str) -> Result<Option<String>, ExternalError> {
        let scope = format!("repository:{repo}:pull");
        let accept = "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
        let r = self.send(Method::HEAD, &format!("/v2/{repo}/manifests/{tag}"), Some(&scope), Some(accept)).await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(ExternalError::Status(r.status()));
        }
        Ok(r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned))
    }
}

/// One of a tenant's registries as stored: the one place its row is read for use.
#[derive(sqlx::FromRow)]
pub struct StoredRegistry {
    pub address: String,
    pub username: Option<String>,
    password_encrypted: Option<Vec<u8>>,
    pub ca_pem: Option<String>,
}

impl StoredRegistry {
    const COLUMNS: &str = "address, username, password_encrypted, ca_pem";

    pub async fn by_id(conn: &mut sqlx::PgConnection, tenant: uuid::Uuid, id: uuid::Uuid) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(&format!("SELECT {} FROM registries WHERE tenant_id = $1 AND id = $2", Self::COLUMNS))
            .bind(tenant)
            .bind(id)
            .fetch_optional(conn)
            .await
    }

    /// The tenant's registry at `address` (the oldest, if it added the same address twice).
    pub async fn by_address(conn: &mut sqlx::PgConnection, tenant: uuid::Uuid, address: &str) -> sqlx::Result<Option<Self>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM registries WHERE tenant_id = $1 AND address = $2 ORDER BY id LIMIT 1",
            Self::COLUMNS
        ))
        .bind(tenant)
        .bind(address)
        .fetch_optional(conn)
        .await
    }

    /// The user name and (opened) password, when the registry has a user name.
    pub fn credentials(&self, keys: &crate::crypto::Keys) -> anyhow::Result<Option<(String, String)>> {
        let Some(user) = &self.username else { return Ok(None) };
        let password = match &self.password_encrypted {
            Some(sealed) => String::from_utf8(keys.open(sealed)?)?,
            None => String::new(),
        };
        Ok(Some((user.clone(), password)))
    }

    pub async fn connect(
        &self,
        keys: &crate::crypto::Keys,
        policy: &ExternalRegistryPolicy,
    ) -> Result<ExternalRegistry, ExternalError> {
        let credentials = self.credentials(keys).map_err(|e| ExternalError::Refused(format!("{e:#}")))?;
        ExternalRegistry::connect(policy, &self.address, credentials, self.ca_pem.clone()).await
    }
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn parse_challenge(challenge: &str) -> Vec<(String, String)> {
    let rest = challenge.split_once(' ').map(|(_, r)| r).unwrap_or("");
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().skip_while(|c| *c == ',' || c.is_whitespace()).take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let v: String = chars.by_ref().take_while(|c| *c != '"').collect();
            v
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        out.push((key.trim().to_ascii_lowercase(), value));
    }
}

/// The message of a Docker-registry-style error body.
fn registry_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["errors"][0]["message"].as_str().map(str::to_owned).or_else(|| v["details"].as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for a in [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.1.1",
            "192.168.0.1",
            "172.16.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }
}
