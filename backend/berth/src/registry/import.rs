//! Importing `docker save` tarballs into a tenant's namespace, for air-gapped users and for tests.
//!
//! The archive is read as it arrives (refused past `BERTH_IMPORT_MAX_BYTES`), never stored whole:
//! small metadata files are kept in memory, every other entry (a layer) is streamed on to a staging
//! repository in the tenant's namespace, hashed on the way — so pushing overlaps the upload. Only when
//! the whole archive has been read is it checked: every layer must hash to the diff id its image config
//! names, every config to its own name. Then the layers are linked into the target repositories
//! (cross-repository mounts: no data moves), and only then are manifests put. A corrupt or truncated
//! tarball therefore fails before any tag exists; the staging repository is removed however the import
//! ends, and blobs no manifest refers to go at the next garbage collection.

use std::collections::HashMap;
use std::path::Path;

use axum::body::Body;
use axum::http::StatusCode;
use berth_types::ImportedImage;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::Registry;
use super::client::MANIFEST_V2;
use super::pin::ImageRef;
use super::tar_stream::{TarError, TarStream};
use super::token::valid_repository;
use crate::error::{ApiError, ApiResult};

const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
/// `docker save` writes layers uncompressed; the engine detects compression when it pulls.
const LAYER_MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Image configs are small JSON documents; anything larger is not one.
const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;
/// All the metadata files of one archive together.
const MAX_METADATA_BYTES: u64 = 64 * 1024 * 1024;

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-archive", detail)
}

fn tar_error(e: TarError) -> ApiError {
    match e {
        TarError::Invalid(m) => invalid(m),
        TarError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "the archive is larger than the import limit (BERTH_IMPORT_MAX_BYTES)",
        ),
        TarError::Body(m) => ApiError::bad_request("body-read-failed", format!("reading the upload failed: {m}")),
    }
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

/// Small files kept in memory as they pass: manifests, image configs, Docker's per-layer metadata.
/// Everything else (layers, OCI blobs) is streamed to the registry.
fn is_metadata(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".json") || matches!(name, "json" | "VERSION" | "repositories" | "oci-layout")
}

/// Imports every image of the tarball in `body` into the tenant's namespace.
///
/// Layers go to a staging repository of the tenant's namespace while the archive arrives (the
/// archive lists the image names only at its end); once the whole archive is read and checked they
/// are linked into the target repositories, and the staging links are removed however it ends.
pub async fn import(reg: &Registry, db: &PgPool, tenant: Uuid, slug: &str, body: Body) -> ApiResult<Vec<ImportedImage>> {
    let staging = format!("{slug}/import-{}", Uuid::now_v7().simple());
    let result = import_staged(reg, db, tenant, slug, body, &staging).await;
    if result.is_err() {
        // What it stored is no one's now: let the next quiet moment collect it.
        reg.needs_collection.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // The staging repository is this import's alone, and the registry has no call to remove a
    // repository: its directory goes from the registry's storage, which Berth owns. The layers stay
    // linked in the repositories they were mounted into; unlinked ones go at garbage collection.
    let dir = reg.process.storage().join("docker/registry/v2/repositories").join(&staging);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, dir = %dir.display(), "removing an import's staging repository failed");
    }
    result
}

async fn import_staged(
    reg: &Registry,
    db: &PgPool,
    tenant: Uuid,
    slug: &str,
    body: Body,
    staging: &str,
) -> ApiResult<Vec<ImportedImage>> {
    let started = std::time::Instant::now();
    let mut tar = TarStream::new(body.into_data_stream(), reg.import_max_bytes);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut blobs: HashMap<String, (String, u64)> = HashMap::new();
    let mut kept: u64 = 0;
    loop {
        let entry = match tar.next().await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(_) if tar.received == 0 => return Err(invalid("the archive is empty")),
            Err(e) => return Err(tar_error(e)),
        };
        if !entry.is_file {
            tar.skip(entry.size).await.map_err(tar_error)?;
        } else if is_metadata(&entry.path) {
            kept += entry.size;
            if entry.size > MAX_CONFIG_BYTES || kept > MAX_METADATA_BYTES {
                return Err(invalid(format!("{} is too large for an image's metadata", entry.path)));
            }
            let data = tar.read(entry.size).await.map_err(tar_error)?;
            files.insert(entry.path, data);
        } else {
            let digest = stage(reg, &mut tar, staging, entry.size).await?;
            blobs.insert(entry.path, (digest, entry.size));
        }
    }
    let received = started.elapsed();
    let manifest = files
        .get("manifest.json")
        .ok_or_else(|| invalid("the archive has no manifest.json: it is not a `docker save` tarball"))?;
    let saved: Vec<SavedImage> =
        serde_json::from_slice(manifest).map_err(|e| invalid(format!("manifest.json is not a `docker save` manifest: {e}")))?;
    if saved.is_empty() {
        return Err(invalid("the archive holds no images"));
    }

    // Check the whole archive before anything is tagged.
    struct Plan {
        config: Vec<u8>,
        config_digest: String,
        layers: Vec<(String, u64)>,     // digest, size
        targets: Vec<(String, String)>, // repository (in the namespace), tag
    }
    let client = &reg.client;
    let mut plans = Vec::new();
    for image in &saved {
        let config = match (files.get(&image.config), blobs.get(&image.config)) {
            (Some(bytes), _) => bytes.clone(),
            (None, Some((digest, size))) if *size <= MAX_CONFIG_BYTES => client.get_blob(staging, digest).await?,
            _ => return Err(invalid(format!("the archive lacks {}", image.config))),
        };
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
            let (digest, size) = blobs.get(path).ok_or_else(|| invalid(format!("the archive lacks layer {path}")))?;
            if digest != diff_id {
                return Err(invalid(format!("layer {path} is corrupt: its content does not match the image config")));
            }
            layers.push((digest.clone(), *size));
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

    let adding: i64 = plans.iter().map(|p| p.config.len() as i64 + p.layers.iter().map(|l| l.1 as i64).sum::<i64>()).sum();
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

    // Link the layers into every repository they belong to (no data moves) and store the configs.
    for plan in &plans {
        let mut repos: Vec<&str> = plan.targets.iter().map(|(r, _)| r.as_str()).collect();
        repos.dedup();
        for repo in repos {
            let full = format!("{slug}/{repo}");
            for (digest, _) in &plan.layers {
                if !client.blob_exists(&full, digest).await? {
                    client.mount(&full, digest, staging).await?;
                }
            }
            if !client.blob_exists(&full, &plan.config_digest).await? {
                client.upload_blob(&full, &plan.config_digest, plan.config.clone().into()).await?;
            }
        }
    }

    // Then the manifests: only now do tags appear.
    let mut imported = Vec::new();
    for plan in &plans {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": plan.config.len(), "digest": plan.config_digest},
            "layers": plan.layers.iter().map(|(digest, len)| json!({"mediaType": LAYER_MEDIA_TYPE, "size": len, "digest": digest})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).map_err(anyhow::Error::from)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let size = plan.config.len() as i64 + plan.layers.iter().map(|l| l.1 as i64).sum::<i64>();
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
        bytes = tar.received,
        images = imported.len(),
        received = ?received,
        total = ?started.elapsed(),
        "imported a docker save archive"
    );
    Ok(imported)
}

/// Streams one entry's data to the staging repository as it arrives, hashing it on the way, and
/// commits it under that hash; returns the digest.
async fn stage<S, E>(reg: &Registry, tar: &mut TarStream<S>, staging: &str, size: u64) -> ApiResult<String>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let client = &reg.client;
    let location = client.start_upload(staging).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let body =
        reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }));
    let sending = {
        let (client, repo, location) = (client.clone(), staging.to_owned(), location.clone());
        tokio::spawn(async move { client.send_upload(&repo, &location, body).await })
    };
    let mut hasher = Sha256::new();
    let fed = async {
        let mut left = size;
        while left > 0 {
            let chunk = tar.chunk(left).await?;
            left -= chunk.len() as u64;
            hasher.update(&chunk);
            if tx.send(Ok(chunk)).await.is_err() {
                // The upload stopped reading: its own error says why.
                break;
            }
        }
        tar.skip_padding(size).await
    };
    let fed: Result<(), TarError> = fed.await;
    if let Err(e) = fed {
        let _ = tx.send(Err(std::io::Error::other("the archive ended early"))).await;
        drop(tx);
        let _ = sending.await;
        client.cancel_upload(staging, &location).await;
        return Err(tar_error(e));
    }
    drop(tx);
    let next = match sending.await {
        Ok(Ok(next)) => next,
        Ok(Err(e)) => {
            client.cancel_upload(staging, &location).await;
            return Err(ApiError::internal(e));
        }
        Err(e) => return Err(ApiError::internal(anyhow::anyhow!(e))),
    };
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    client.finish_upload(staging, &next, &digest).await?;
    Ok(digest)
}

/// Where a `docker save` name goes in the tenant's namespace: `web:1` → (`web`, `1`);
/// `<address>/<slug>/web:1` → (`web`, `1`); `docker.io/library/busybox` → (`library/busybox`, `latest`).
/// A name under the built-in registry but another tenant's namespace is refused.
pub fn namespace_target(name: &str, address: &str, slug: &str) -> ApiResult<(String, String)> {
    let bad = || invalid(format!("`{name}` is not a valid image name"));
    let reference = ImageRef::parse(name).map_err(|_| bad())?;
    if reference.digest.is_some() {
        return Err(bad());
    }
    let path = match reference.host.as_deref() {
        Some(host) if host == address => {
            let (ns, inner) = reference.path.split_once('/').unwrap_or((reference.path.as_str(), ""));
            if ns != slug {
                return Err(ApiError::forbidden(format!(
                    "`{name}` names the namespace `{ns}`, which is not your tenant's; images are imported into `{address}/{slug}/`"
                )));
            }
            inner
        }
        Some(_) => reference.path.as_str(),
        None => reference.path.strip_prefix(&format!("{slug}/")).unwrap_or(&reference.path),
    };
    if !valid_repository(path) {
        return Err(bad());
    }
    Ok((path.to_owned(), reference.tag.unwrap_or_else(|| "latest".to_owned())))
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
