//! Importing `docker save` tarballs into a tenant's namespace, for air-gapped users and for tests.
//!
//! The upload is streamed to a spool file (refused past `BERTH_IMPORT_MAX_BYTES`), indexed without
//! extracting it, and checked as a whole before anything is tagged: every layer's bytes must hash to
//! the diff id its image config names (the registry checks that as it receives each layer, under that
//! digest), every config to its own name. Blobs are pushed first (layers streamed from the spool file,
//! a few at a time), then the manifests. A corrupt or truncated
//! tarball therefore fails before any tag exists; blobs it left behind belong to no manifest and are
//! removed by the next garbage collection.

use std::collections::HashMap;
use std::io::{Read, SeekFrom};
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::StatusCode;
use berth_types::ImportedImage;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use super::Registry;
use super::client::{DigestMismatch, MANIFEST_V2};
use super::token::valid_repository;
use crate::error::{ApiError, ApiResult};

const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
/// `docker save` writes layers uncompressed; the engine detects compression when it pulls.
const LAYER_MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Layers uploaded at once: enough to keep the registry and the network busy while one layer is read.
const PARALLEL_UPLOADS: usize = 3;
/// Image configs are small JSON documents; anything larger is not one.
const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

/// Removes the spool file however the import ends.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-archive", detail)
}

/// One entry of `manifest.json` in a `docker save` tarball.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// Where each regular file's bytes sit in the archive.
type Index = HashMap<String, (u64, u64)>;

/// Imports every image of the tarball in `body` into the tenant's namespace.
pub async fn import(reg: &Registry, db: &PgPool, tenant: Uuid, slug: &str, body: Body) -> ApiResult<Vec<ImportedImage>> {
    let spool = Spool(reg.spool.join(format!("{}.tar", Uuid::now_v7())));
    let started = std::time::Instant::now();
    let size = receive(body, &spool.0, reg.import_max_bytes).await?;
    let received = started.elapsed();
    let path = spool.0.clone();
    let (index, manifest) = tokio::task::spawn_blocking(move || index_archive(&path, size))
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))??;
    let saved: Vec<SavedImage> =
        serde_json::from_slice(&manifest).map_err(|e| invalid(format!("manifest.json is not a `docker save` manifest: {e}")))?;
    if saved.is_empty() {
        return Err(invalid("the archive holds no images"));
    }

    // Check the whole archive before pushing anything.
    struct Plan {
        config: Vec<u8>,
        config_digest: String,
        layers: Vec<(String, u64, u64, String)>, // path, offset, size, expected digest
        targets: Vec<(String, String)>,          // repository (in the namespace), tag
    }
    let mut plans = Vec::new();
    for image in &saved {
        let (offset, len) = *index.get(&image.config).ok_or_else(|| invalid(format!("the archive lacks {}", image.config)))?;
        if len > MAX_CONFIG_BYTES {
            return Err(invalid(format!("{} is too large to be an image config", image.config)));
        }
        let config = read_range(&spool.0, offset, len).await?;
        let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
        let named = Path::new(&image.config).file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if named.len() == 64 && !config_digest.ends_with(named) {
            return Err(invalid(format!("{} is corrupt: its content does not match its name", image.config)));
        }
        let parsed: ImageConfig =
            serde_json::from_slice(&config).map_err(|e| invalid(format!("{} is not an image config: {e}", image.config)))?;
        if parsed.rootfs.diff_ids.len() != image.layers.len() {
            return Err(invalid(format!(
                "{} names {} layers but the manifest lists {}",
                image.config,
                parsed.rootfs.diff_ids.len(),
                image.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in image.layers.iter().zip(&parsed.rootfs.diff_ids) {
            let (offset, len) = *index.get(path).ok_or_else(|| invalid(format!("the archive lacks layer {path}")))?;
            layers.push((path.clone(), offset, len, diff_id.clone()));
        }
        let tags = image.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            return Err(invalid(format!("image {} has no name: tag it (`docker tag`) before `docker save`", image.config)));
        }
        let mut targets = Vec::new();
        for t in &tags {
            targets.push(namespace_target(t, &reg.address, slug)?);
        }
        plans.push(Plan { config, config_digest, layers, targets });
    }

    let adding: i64 = plans.iter().map(|p| p.config.len() as i64 + p.layers.iter().map(|l| l.2 as i64).sum::<i64>()).sum();
    {
        let mut conn = db.acquire().await?;
        if let Some((used, limit)) = super::store::storage_over_quota(&mut conn, tenant, adding).await? {
            return Err(ApiError::quota_exceeded(
                "max_image_storage_mb",
                format!(
                    "importing {} MiB would pass the image storage quota ({} of {limit} MiB used)",
                    adding / (1024 * 1024),
                    used / (1024 * 1024)
                ),
            ));
        }
    }

    // Blobs first, into every repository they will be in: layers (a few at a time, streamed from the
    // spool file; the registry checks each against its digest), then configs.
    let client = &reg.client;
    let mut uploads: Vec<(String, String, u64, u64, String)> = Vec::new(); // repository, path, offset, size, digest
    for plan in &plans {
        for (repo, _) in &plan.targets {
            let full = format!("{slug}/{repo}");
            for (path, offset, len, digest) in &plan.layers {
                if !uploads.iter().any(|u| u.0 == full && u.4 == *digest) {
                    uploads.push((full.clone(), path.clone(), *offset, *len, digest.clone()));
                }
            }
        }
    }
    let spool_path = spool.0.clone();
    let results: Vec<ApiResult<()>> = futures_util::stream::iter(uploads)
        .map(|(full, path, offset, len, digest)| {
            let spool_path = spool_path.clone();
            async move {
                if client.blob_exists(&full, &digest).await? {
                    return Ok(());
                }
                let body = reqwest::Body::wrap_stream(file_range(&spool_path, offset, len).await?);
                client.upload_blob(&full, &digest, body).await.map_err(|e| match e.downcast::<DigestMismatch>() {
                    Ok(_) => invalid(format!("layer {path} is corrupt: its content does not match the image config")),
                    Err(e) => ApiError::internal(e),
                })
            }
        })
        .buffer_unordered(PARALLEL_UPLOADS)
        .collect()
        .await;
    results.into_iter().collect::<ApiResult<Vec<()>>>()?;
    for plan in &plans {
        let mut repos: Vec<&str> = plan.targets.iter().map(|(r, _)| r.as_str()).collect();
        repos.dedup();
        for repo in repos {
            let full = format!("{slug}/{repo}");
            if !client.blob_exists(&full, &plan.config_digest).await? {
                client.upload_blob(&full, &plan.config_digest, plan.config.clone().into()).await?;
            }
        }
    }

    let uploaded = started.elapsed();
    // Then the manifests: only now do tags appear.
    let mut imported = Vec::new();
    for plan in &plans {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": plan.config.len(), "digest": plan.config_digest},
            "layers": plan.layers.iter().map(|(_, _, len, digest)| json!({"mediaType": LAYER_MEDIA_TYPE, "size": len, "digest": digest})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).map_err(anyhow::Error::from)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let size = plan.config.len() as i64 + plan.layers.iter().map(|l| l.2 as i64).sum::<i64>();
        for (repo, tag) in &plan.targets {
            let full = format!("{slug}/{repo}");
            client.put_manifest(&full, tag, MANIFEST_V2, bytes.clone()).await?;
            super::store::record_tag(db, tenant, repo, tag, &digest, size).await?;
            imported.push(ImportedImage {
                repository: format!("{}/{full}", reg.address),
                tag: tag.clone(),
                digest: digest.clone(),
            });
        }
    }
    tracing::info!(
        bytes = size,
        images = imported.len(),
        received = ?received,
        uploaded = ?uploaded,
        total = ?started.elapsed(),
        "imported a docker save archive"
    );
    Ok(imported)
}

/// Writes the request body to `path`, refusing it once it passes `max` bytes.
async fn receive(body: Body, path: &Path, max: u64) -> ApiResult<u64> {
    let file = tokio::fs::File::create(path).await.map_err(anyhow::Error::from)?;
    // Request bodies arrive in small chunks; write them in large ones.
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("body-read-failed", format!("reading the upload failed: {e}")))?;
        written += chunk.len() as u64;
        if written > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("the archive is larger than the import limit of {max} bytes (BERTH_IMPORT_MAX_BYTES)"),
            ));
        }
        file.write_all(&chunk).await.map_err(anyhow::Error::from)?;
    }
    file.flush().await.map_err(anyhow::Error::from)?;
    if written == 0 {
        return Err(invalid("the archive is empty"));
    }
    Ok(written)
}

/// Lists the archive's regular files and reads `manifest.json`. Blocking.
fn index_archive(path: &Path, size: u64) -> ApiResult<(Index, Vec<u8>)> {
    let not_tar = |e: std::io::Error| invalid(format!("not a readable tar archive (corrupt or truncated): {e}"));
    let file = std::fs::File::open(path).map_err(anyhow::Error::from)?;
    let mut archive = tar::Archive::new(file);
    let mut index = Index::new();
    let mut manifest = None;
    // Seeking past each file's data instead of reading it: indexing costs a few reads, not the archive.
    for entry in archive.entries_with_seek().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(not_tar)?.to_string_lossy().trim_start_matches("./").to_owned();
        let (offset, len) = (entry.raw_file_position(), entry.size());
        if offset + len > size {
            return Err(invalid(format!("the archive is truncated inside {name}")));
        }
        if name == "manifest.json" {
            let mut bytes = Vec::new();
            entry.by_ref().take(MAX_CONFIG_BYTES).read_to_end(&mut bytes).map_err(not_tar)?;
            manifest = Some(bytes);
        }
        index.insert(name, (offset, len));
    }
    let manifest = manifest.ok_or_else(|| invalid("the archive has no manifest.json: it is not a `docker save` tarball"))?;
    Ok((index, manifest))
}

async fn read_range(path: &Path, offset: u64, len: u64) -> ApiResult<Vec<u8>> {
    let mut file = tokio::fs::File::open(path).await.map_err(anyhow::Error::from)?;
    file.seek(SeekFrom::Start(offset)).await.map_err(anyhow::Error::from)?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf).await.map_err(|e| invalid(format!("the archive is truncated: {e}")))?;
    Ok(buf)
}

/// A byte stream over `len` bytes of `path` from `offset`, in 256 KiB chunks.
async fn file_range(
    path: &Path,
    offset: u64,
    len: u64,
) -> anyhow::Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Sync + 'static> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(offset)).await?;
    Ok(futures_util::stream::unfold(file.take(len), |mut r| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    }))
}

/// Where a `docker save` name goes in the tenant's namespace: `web:1` → (`web`, `1`);
/// `<address>/<slug>/web:1` → (`web`, `1`); `docker.io/library/busybox` → (`library/busybox`, `latest`).
/// A name under the built-in registry but another tenant's namespace is refused.
pub fn namespace_target(name: &str, address: &str, slug: &str) -> ApiResult<(String, String)> {
    let (repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (name, "latest"),
    };
    let mut path = repo;
    if let Some((first, rest)) = repo.split_once('/')
        && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        if first == address {
            let (ns, inner) = rest.split_once('/').unwrap_or((rest, ""));
            if ns != slug {
                return Err(ApiError::forbidden(format!(
                    "`{name}` names the namespace `{ns}`, which is not your tenant's; images are imported into `{address}/{slug}/`"
                )));
            }
            path = inner;
        } else {
            path = rest;
        }
    } else if let Some(inner) = repo.strip_prefix(&format!("{slug}/")) {
        path = inner;
    }
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid_repository(path) || !tag_ok {
        return Err(invalid(format!("`{name}` is not a valid image name")));
    }
    Ok((path.to_owned(), tag.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_land_in_the_callers_namespace() {
        let t = |n: &str| namespace_target(n, "10.213.0.1:5000", "acme").map_err(|e| e.status);
        assert_eq!(t("web:1").unwrap(), ("web".into(), "1".into()));
        assert_eq!(t("web").unwrap(), ("web".into(), "latest".into()));
        assert_eq!(t("acme/web:2").unwrap(), ("web".into(), "2".into()));
        assert_eq!(t("10.213.0.1:5000/acme/tools/x:3").unwrap(), ("tools/x".into(), "3".into()));
        assert_eq!(t("docker.io/library/busybox:1.36").unwrap(), ("library/busybox".into(), "1.36".into()));
        assert_eq!(t("localhost:5000/web").unwrap(), ("web".into(), "latest".into()));
        assert_eq!(t("10.213.0.1:5000/other/web:1").unwrap_err(), StatusCode::FORBIDDEN);
        assert_eq!(t("Web:1").unwrap_err(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(t("web:-bad").unwrap_err(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
