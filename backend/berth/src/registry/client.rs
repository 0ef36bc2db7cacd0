//! Berth's own client of the built-in registry (Registry HTTP API v2), over TLS with the platform CA as
//! the only root. Berth is the registry's token server, so it mints itself a short token for exactly the
//! repository and actions each call needs instead of logging in.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::token::{Access, Signer};

pub const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MANIFEST_LIST_V2: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every manifest type Berth reads, for `Accept`.
const ACCEPT_MANIFESTS: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json";

/// The registry refused a blob: its bytes do not hash to the digest it was sent under.
#[derive(Debug, thiserror::Error)]
#[error("the blob's content does not match its digest")]
pub struct DigestMismatch;

#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    signer: Signer,
}

/// The parts of a manifest (image manifest or index) Berth looks at.
#[derive(Debug, Deserialize)]
pub struct ManifestDoc {
    #[serde(rename = "mediaType")]
    pub media_type: Option<String>,
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// An index's (manifest list's) entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub struct Descriptor {
    pub digest: String,
    /// As the pusher wrote it: not trusted beyond counting (negative counts as 0).
    #[serde(default)]
    pub size: i64,
}

impl ManifestDoc {
    /// Config plus layers, as the manifest states them, never negative and never overflowing.
    pub fn stated_size(&self) -> i64 {
        let sizes = self.config.iter().chain(&self.layers).map(|d| d.size.max(0));
        sizes.fold(0i64, |a, b| a.saturating_add(b))
    }
}

impl RegistryClient {
    pub fn new(address: &str, ca_pem: &str, signer: Signer) -> anyhow::Result<Self> {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).context("reading the platform CA")?;
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(RegistryClient { http, base: format!("https://{address}"), signer })
    }

    fn request(&self, method: Method, url: &str, repo: &str, actions: &[&str]) -> anyhow::Result<reqwest::RequestBuilder> {
        let access = vec![Access::repository(repo, actions)];
        let token = self.signer.mint("berth", access, Duration::from_secs(600))?;
        Ok(self.http.request(method, url).bearer_auth(token))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the registry answers at all (`GET /v2/` answers 401 without a token: that is alive).
    pub async fn alive(&self) -> bool {
        self.http.get(self.url("/v2/")).timeout(Duration::from_secs(2)).send().await.is_ok()
    }

    pub async fn blob_exists(&self, repo: &str, digest: &str) -> anyhow::Result<bool> {
        let r = self.request(Method::HEAD, &self.url(&format!("/v2/{repo}/blobs/{digest}")), repo, &["pull"])?.send().await?;
        Ok(r.status().is_success())
    }

    /// Starts an upload session in `repo`; returns its location.
    pub async fn start_upload(&self, repo: &str) -> anyhow::Result<String> {
        let r =
            self.request(Method::POST, &self.url(&format!("/v2/{repo}/blobs/uploads/")), repo, &["pull", "push"])?.send().await?;
        if r.status() != StatusCode::ACCEPTED {
            bail!("starting an upload to {repo} failed: {}", error_text(r).await);
        }
        self.location(&r)
    }

    /// Sends a stream as the upload's data (one PATCH); returns the session's next location.
    pub async fn send_upload(&self, repo: &str, location: &str, body: reqwest::Body) -> anyhow::Result<String> {
        let r = self
            .request(Method::PATCH, location, repo, &["pull", "push"])?
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await?;
        if r.status() != StatusCode::ACCEPTED {
            bail!("uploading to {repo} failed: {}", error_text(r).await);
        }
        self.location(&r)
    }

    /// Commits the upload under `digest` (which the registry checks against what it received).
    pub async fn finish_upload(&self, repo: &str, location: &str, digest: &str) -> anyhow::Result<()> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .request(Method::PUT, &format!("{location}{sep}digest={digest}"), repo, &["pull", "push"])?
            .header("Content-Length", "0")
            .send()
            .await?;
        if r.status() != StatusCode::CREATED {
            bail!("committing blob {digest} to {repo} failed: {}", error_text(r).await);
        }
        Ok(())
    }

    /// Abandons an upload session (best effort: the registry also purges stale ones).
    pub async fn cancel_upload(&self, repo: &str, location: &str) {
        if let Ok(r) = self.request(Method::DELETE, location, repo, &["pull", "push"]) {
            let _ = r.send().await;
        }
    }

    /// Links a blob stored in `from` into `repo` too (a cross-repository mount: no data moves).
    pub async fn mount(&self, repo: &str, digest: &str, from: &str) -> anyhow::Result<()> {
        let access = vec![Access::repository(repo, &["pull", "push"]), Access::repository(from, &["pull"])];
        let token = self.signer.mint("berth", access, Duration::from_secs(600))?;
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"));
        let r = self.http.post(&url).bearer_auth(token).header("Content-Length", "0").send().await?;
        match r.status() {
            StatusCode::CREATED => Ok(()),
            StatusCode::ACCEPTED => {
                // The registry started an ordinary upload instead: the blob was not in `from`.
                let location = self.location(&r)?;
                self.cancel_upload(repo, &location).await;
                bail!("blob {digest} is not in {from}")
            }
            _ => bail!("linking blob {digest} into {repo} failed: {}", error_text(r).await),
        }
    }

    /// A (small) blob's bytes.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> anyhow::Result<Vec<u8>> {
        let r = self.request(Method::GET, &self.url(&format!("/v2/{repo}/blobs/{digest}")), repo, &["pull"])?.send().await?;
        if !r.status().is_success() {
            bail!("reading blob {digest} from {repo} failed: {}", error_text(r).await);
        }
        Ok(r.bytes().await?.to_vec())
    }

    /// Uploads a blob in one request (`POST` for a location, then `PUT ?digest=` with the body, which
    /// may be a stream). The registry hashes what it receives and refuses a digest that does not
    /// match: that is [`DigestMismatch`], and the upload is cancelled.
    pub async fn upload_blob(&self, repo: &str, digest: &str, body: reqwest::Body) -> anyhow::Result<()> {
        let actions = ["pull", "push"];
        let start = self.request(Method::POST, &self.url(&format!("/v2/{repo}/blobs/uploads/")), repo, &actions)?.send().await?;
        if start.status() != StatusCode::ACCEPTED {
            bail!("starting an upload to {repo} failed: {}", error_text(start).await);
        }
        let location = self.location(&start)?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = self
            .request(Method::PUT, &format!("{location}{sep}digest={digest}"), repo, &actions)?
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await?;
        if done.status() == StatusCode::CREATED {
            return Ok(());
        }
        let status = done.status();
        let text = error_text(done).await;
        let _ = self.request(Method::DELETE, &location, repo, &actions)?.send().await;
        if status == StatusCode::BAD_REQUEST && text.contains("DIGEST_INVALID") {
            return Err(anyhow::Error::new(DigestMismatch));
        }
        bail!("uploading blob {digest} to {repo} failed: {text}")
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let r = self
            .request(Method::PUT, &self.url(&format!("/v2/{repo}/manifests/{reference}")), repo, &["pull", "push"])?
            .header("Content-Type", media_type)
            .body(body)
            .send()
            .await?;
        if r.status() != StatusCode::CREATED {
            bail!("storing the manifest {repo}:{reference} failed: {}", error_text(r).await);
        }
        Ok(())
    }

    /// `GET` or `HEAD` of a manifest by tag or digest, accepting every manifest type Berth reads;
    /// `None` when there is no such manifest.
    async fn manifest(&self, method: Method, repo: &str, reference: &str) -> anyhow::Result<Option<reqwest::Response>> {
        let r = self
            .request(method, &self.url(&format!("/v2/{repo}/manifests/{reference}")), repo, &["pull"])?
            .header("Accept", ACCEPT_MANIFESTS)
            .send()
            .await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            bail!("reading the manifest {repo}:{reference} failed: {}", error_text(r).await);
        }
        Ok(Some(r))
    }

    /// A manifest's bytes and media type, or `None` when there is no such manifest.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> anyhow::Result<Option<(Vec<u8>, String)>> {
        let Some(r) = self.manifest(Method::GET, repo, reference).await? else { return Ok(None) };
        let media_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or(MANIFEST_V2).to_owned();
        Ok(Some((r.bytes().await?.to_vec(), media_type)))
    }

    /// The digest a tag points at (`Docker-Content-Digest` of a HEAD), or `None` when there is no such tag.
    pub async fn tag_digest(&self, repo: &str, tag: &str) -> anyhow::Result<Option<String>> {
        let Some(r) = self.manifest(Method::HEAD, repo, tag).await? else { return Ok(None) };
        Ok(r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned))
    }

    /// Deletes a manifest by digest, and with it every tag pointing at it. Gone already is fine.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> anyhow::Result<()> {
        let r =
            self.request(Method::DELETE, &self.url(&format!("/v2/{repo}/manifests/{digest}")), repo, &["delete"])?.send().await?;
        if !(r.status().is_success() || r.status() == StatusCode::NOT_FOUND) {
            bail!("deleting {repo}@{digest} failed: {}", error_text(r).await);
        }
        Ok(())
    }

    /// The image's size as its manifest states it: config plus layers; for an index, the sum over the
    /// images it lists.
    pub async fn image_size(&self, repo: &str, digest: &str) -> anyhow::Result<i64> {
        let Some((bytes, _)) = self.get_manifest(repo, digest).await? else { return Ok(0) };
        let doc: ManifestDoc = serde_json::from_slice(&bytes).context("parsing a manifest")?;
        let mut size = doc.stated_size();
        for child in doc.manifests.iter().take(32) {
            if let Some((bytes, _)) = self.get_manifest(repo, &child.digest).await? {
                let child: ManifestDoc = serde_json::from_slice(&bytes).context("parsing a manifest")?;
                size = size.saturating_add(child.stated_size());
            }
        }
        Ok(size)
    }

    /// Every repository in the registry (for the periodic catalog pass), following `Link` pages.
    pub async fn catalog(&self) -> anyhow::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let mut url = self.url("/v2/_catalog?n=1000");
            if let Some(l) = &last {
                url.push_str(&format!("&last={l}"));
            }
            let token = self.signer.mint("berth", vec![Access::catalog()], Duration::from_secs(600))?;
            let r = self.http.get(&url).bearer_auth(token).send().await?;
            if !r.status().is_success() {
                bail!("listing the registry's catalog failed: {}", error_text(r).await);
            }
            let page: Catalog = r.json().await?;
            let n = page.repositories.len();
            last = page.repositories.last().cloned();
            all.extend(page.repositories);
            if n < 1000 {
                return Ok(all);
            }
        }
    }

    /// A repository's tags (empty when the repository is gone).
    pub async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let r = self.request(Method::GET, &self.url(&format!("/v2/{repo}/tags/list")), repo, &["pull"])?.send().await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !r.status().is_success() {
            bail!("listing the tags of {repo} failed: {}", error_text(r).await);
        }
        Ok(r.json::<Tags>().await?.tags.unwrap_or_default())
    }

    /// An upload's next URL: the `Location` header, absolute or relative to the registry.
    fn location(&self, r: &reqwest::Response) -> anyhow::Result<String> {
        let loc = r.headers().get("location").and_then(|v| v.to_str().ok()).context("the registry sent no upload location")?;
        Ok(if loc.starts_with("http://") || loc.starts_with("https://") { loc.to_owned() } else { self.url(loc) })
    }
}

/// The registry's error message, for the log and for a user-facing error.
async fn error_text(r: reqwest::Response) -> String {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            e.errors.iter().map(|i| format!("{} ({})", i.message, i.code)).collect::<Vec<_>>().join("; ")
        }
        _ => format!("HTTP {status}"),
    }
}
