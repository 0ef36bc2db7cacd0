//! Berth's built-in gallery: templates every tenant sees and may deploy, never edit. They run on an
//! image Berth makes itself from Debian's `busybox-static` (no registry on the internet is needed):
//! deploying from the gallery first puts `busybox:debian` into the tenant's namespace of the built-in
//! registry, if it is not there yet. The Compose files name it `${BERTH_REGISTRY}/${BERTH_TENANT}/…`,
//! variables Berth fills in for every deploy.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use berth_types::{GalleryTemplate, Page, Problem};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::api::extract::ApiPath;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

struct Entry {
    name: &'static str,
    description: &'static str,
    compose: &'static str,
    files: &'static [(&'static str, &'static str)],
}

const ENTRIES: &[Entry] = &[
    Entry {
        name: "static-site",
        description: "A static site served by BusyBox httpd on every node, on a host-mode port (PORT, default 8080).",
        compose: include_str!("../../gallery/static-site.yml"),
        files: &[("index.html", include_str!("../../gallery/static-site.index.html"))],
    },
    Entry {
        name: "web-worker-queue",
        description: "A web service posting jobs to an HTTP queue, and workers (WORKERS, default 2) processing them.",
        compose: include_str!("../../gallery/web-worker-queue.yml"),
        files: &[
            ("push.sh", include_str!("../../gallery/web-worker-queue.push.sh")),
            ("pop.sh", include_str!("../../gallery/web-worker-queue.pop.sh")),
        ],
    },
    Entry {
        name: "stateful",
        description: "A single-replica service keeping its state in a named volume, updated stop-first.",
        compose: include_str!("../../gallery/stateful.yml"),
        files: &[],
    },
    Entry {
        name: "global-agent",
        description: "An agent on every node (new nodes included) reporting the node's load every INTERVAL seconds.",
        compose: include_str!("../../gallery/global-agent.yml"),
        files: &[],
    },
    Entry {
        name: "scheduled-job",
        description: "A job that runs TASK every EVERY_SECONDS, restarted by Swarm if it dies.",
        compose: include_str!("../../gallery/scheduled-job.yml"),
        files: &[],
    },
    Entry {
        name: "healthy-api",
        description: "An API with a health check and start-first rolling updates that roll back when tasks turn unhealthy.",
        compose: include_str!("../../gallery/healthy-api.yml"),
        files: &[],
    },
];

/// The repository and tag of the base image in a tenant's namespace.
pub const BASE_REPOSITORY: &str = "busybox";
pub const BASE_TAG: &str = "debian";
/// Where Debian's `busybox-static` puts the binary.
const BUSYBOX: &str = "/bin/busybox";

fn to_dto(e: &Entry) -> GalleryTemplate {
    let refs = super::compose::variables(e.compose);
    let services = super::compose::check_template(e.compose, &files(e)).map(|i| i.services).unwrap_or_default();
    GalleryTemplate {
        name: e.name.to_owned(),
        description: e.description.to_owned(),
        compose: e.compose.to_owned(),
        files: files(e),
        variables: super::templates::variables_of(refs),
        services,
    }
}

fn files(e: &Entry) -> BTreeMap<String, String> {
    e.files.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A gallery template's Compose text and files, by name.
pub fn find(name: &str) -> Option<(String, BTreeMap<String, String>)> {
    ENTRIES.iter().find(|e| e.name == name).map(|e| (e.compose.to_owned(), files(e)))
}

/// The built-in gallery (every tenant sees the same, read-only).
#[utoipa::path(get, path = "/api/v1/gallery", tag = "templates",
    responses((status = 200, body = Page<GalleryTemplate>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list_gallery(me: Principal) -> ApiResult<Json<Page<GalleryTemplate>>> {
    me.tenant()?;
    Ok(Json(Page { items: ENTRIES.iter().map(to_dto).collect(), next_cursor: None }))
}

#[utoipa::path(get, path = "/api/v1/gallery/{name}", tag = "templates", params(("name" = String, Path)),
    responses((status = 200, body = GalleryTemplate), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_gallery(me: Principal, ApiPath(name): ApiPath<String>) -> ApiResult<Json<GalleryTemplate>> {
    me.tenant()?;
    ENTRIES.iter().find(|e| e.name == name).map(|e| Json(to_dto(e))).ok_or_else(|| ApiError::not_found("gallery template"))
}

/// Puts `busybox:debian` into the tenant's namespace of the built-in registry unless it is there.
pub async fn ensure_base_image(state: &AppState, tenant: Uuid) -> ApiResult<()> {
    let reg = state.registry().ok_or_else(|| {
        ApiError::conflict("registry-off", "the gallery's templates run on an image in the built-in registry, which is off")
    })?;
    let mut conn = state.system.acquire().await?;
    let have = crate::registry::store::digests(&mut conn, tenant, BASE_REPOSITORY, Some(BASE_TAG)).await?;
    drop(conn);
    if !have.is_empty() {
        return Ok(());
    }
    let slug = crate::registry::store::slug_of(&state.system, tenant).await?.ok_or_else(|| ApiError::not_found("tenant"))?;
    let busybox = std::fs::read(BUSYBOX).map_err(|e| {
        ApiError::internal(anyhow::anyhow!("reading {BUSYBOX} (Debian's busybox-static) for the gallery's image: {e}"))
    })?;
    let tarball = base_image_tarball(&busybox).map_err(ApiError::internal)?;
    crate::registry::import::import(&reg, &state.system, tenant, &slug, Body::from(tarball)).await?;
    Ok(())
}

/// The gallery's base image as a `docker save` tarball: one layer holding `/bin/busybox` and a
/// world-writable `/tmp`.
pub fn base_image_tarball(busybox: &[u8]) -> anyhow::Result<Vec<u8>> {
    fn file(builder: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        builder.append_data(&mut h, path, data)
    }
    let mut layer = tar::Builder::new(Vec::new());
    let mut tmp = tar::Header::new_gnu();
    tmp.set_entry_type(tar::EntryType::Directory);
    tmp.set_size(0);
    tmp.set_mode(0o1777);
    tmp.set_mtime(0);
    tmp.set_cksum();
    layer.append_data(&mut tmp, "tmp/", std::io::empty())?;
    file(&mut layer, "bin/busybox", 0o755, busybox)?;
    let layer = layer.into_inner()?;
    let layer_hex = hex::encode(Sha256::digest(&layer));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
    }))?;
    let config_hex = hex::encode(Sha256::digest(&config));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": [format!("{BASE_REPOSITORY}:{BASE_TAG}")],
        "Layers": [format!("{layer_hex}/layer.tar")],
    }]))?;
    let mut out = tar::Builder::new(Vec::new());
    file(&mut out, &format!("{config_hex}.json"), 0o644, &config)?;
    file(&mut out, &format!("{layer_hex}/layer.tar"), 0o644, &layer)?;
    file(&mut out, "manifest.json", 0o644, &manifest)?;
    Ok(out.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applications::compose::{Input, load, policy::Policy};

    #[test]
    fn every_gallery_template_loads_cleanly_with_berths_variables() {
        assert!(ENTRIES.len() >= 6);
        let variables = BTreeMap::from([
            ("BERTH_REGISTRY".to_owned(), "10.213.0.1:5000".to_owned()),
            ("BERTH_TENANT".to_owned(), "acme".to_owned()),
        ]);
        for e in ENTRIES {
            let files = files(e);
            let loaded = load(&Input { text: e.compose, files: &files, variables: &variables }, &Policy::default())
                .unwrap_or_else(|errors| panic!("{}: {errors:?}", e.name));
            assert!(loaded.warnings.is_empty(), "{}: {:?}", e.name, loaded.warnings);
            for svc in loaded.project.services.values() {
                assert_eq!(svc.image, "10.213.0.1:5000/acme/busybox:debian", "{}", e.name);
            }
            assert!(!to_dto(e).services.is_empty());
        }
    }
}
