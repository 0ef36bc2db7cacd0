//! Digest pinning: `image:tag` → `image:tag@sha256:…`, resolved through the registry that holds the
//! image with the caller's rights there, so every node of a cluster runs the same bytes however the tag
//! moves afterwards.

use uuid::Uuid;

use super::external::{ExternalError, StoredRegistry};
use super::store;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// An image reference as Docker reads it: `[host[:port]/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host, when the first component names one (has a `.` or `:`, or is `localhost`).
    pub host: Option<String>,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        let bad = || format!("`{s}` is not an image reference");
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let ok = d
                    .strip_prefix("sha256:")
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                if !ok {
                    return Err(format!("`{s}`: the digest must be `sha256:` and 64 lowercase hex digits"));
                }
                (r, Some(d.to_owned()))
            }
            None => (s, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_owned())),
            _ => (rest, None),
        };
        let (host, path) = match name.split_once('/') {
            Some((first, p)) if first.contains('.') || first.contains(':') || first == "localhost" => (Some(first.to_owned()), p),
            _ => (None, name),
        };
        if !super::token::valid_repository(path) {
            return Err(bad());
        }
        if let Some(t) = &tag {
            let ok = t.len() <= 128
                && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(format!("`{s}`: `{t}` is not a valid tag"));
            }
        }
        Ok(ImageRef { host, path: path.to_owned(), tag, digest })
    }

    fn name(&self) -> String {
        match &self.host {
            Some(h) => format!("{h}/{}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Resolves `image` for `tenant` to `name:tag@digest`. An already pinned reference is returned as it
/// is. Images in the built-in registry must be in the tenant's own namespace; images elsewhere must be
/// in one of the tenant's registries (Berth reaches no other).
pub async fn pin(state: &AppState, tenant: Uuid, image: &str) -> ApiResult<String> {
    let r = ImageRef::parse(image).map_err(|m| ApiError::invalid_field("image", m))?;
    if r.digest.is_some() {
        return Ok(image.to_owned());
    }
    let tag = r.tag.clone().unwrap_or_else(|| "latest".to_owned());
    let not_found = || ApiError::invalid_field("image", format!("`{}:{tag}` does not exist", r.name()));
    let builtin = state.registry();
    let digest = match (&r.host, &builtin) {
        (Some(host), Some(reg)) if *host == reg.address => {
            let slug = store::slug_of(&state.system, tenant).await?.unwrap_or_default();
            if !r.path.starts_with(&format!("{slug}/")) {
                return Err(ApiError::invalid_field(
                    "image",
                    format!("`{image}` is outside your namespace `{}/{slug}/`", reg.address),
                ));
            }
            reg.client.tag_digest(&r.path, &tag).await?.ok_or_else(not_found)?
        }
        (Some(host), _) => {
            let mut conn = state.system.acquire().await?;
            let Some(stored) = StoredRegistry::by_address(&mut conn, tenant, host).await? else {
                return Err(ApiError::invalid_field(
                    "image",
                    format!(
                        "`{host}` is neither the built-in registry nor one of your registries: add it under /api/v1/registries"
                    ),
                ));
            };
            drop(conn);
            let ext = stored.connect(&state.keys, &state.external).await.map_err(external_problem)?;
            ext.digest(&r.path, &tag).await.map_err(external_problem)?.ok_or_else(not_found)?
        }
        (None, _) => {
            return Err(ApiError::invalid_field(
                "image",
                format!(
                    "`{image}` names no registry (Docker Hub is not reachable from Berth): use the built-in registry or one of yours"
                ),
            ));
        }
    };
    Ok(format!("{}:{tag}@{digest}", r.name()))
}

/// An external registry's failure as the API tells it.
pub fn external_problem(e: ExternalError) -> ApiError {
    match e {
        ExternalError::Refused(m) => ApiError::invalid_field("address", m),
        ExternalError::Credentials(m) => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "registry-credentials-refused",
            format!("the registry refused the credentials: {m}"),
        ),
        ExternalError::Denied(scope) => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "registry-access-denied",
            format!("the registry does not grant these credentials `{scope}`"),
        ),
        ExternalError::Unreachable(m) => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "registry-unreachable",
            format!("cannot reach the registry: {m}"),
        ),
        ExternalError::Status(s) => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "registry-error",
            format!("the registry answered HTTP {s}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_docker_reads_them() {
        let r = ImageRef::parse("10.213.0.1:5000/acme/web:1").unwrap();
        assert_eq!((r.host.as_deref(), r.path.as_str(), r.tag.as_deref()), (Some("10.213.0.1:5000"), "acme/web", Some("1")));
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!((r.host, r.path.as_str(), r.tag), (None, "busybox", None));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("registry.example.com/team/app@{d}")).unwrap();
        assert_eq!((r.host.as_deref(), r.digest.as_deref()), (Some("registry.example.com"), Some(d.as_str())));
        let r = ImageRef::parse("localhost/x:y").unwrap();
        assert_eq!(r.host.as_deref(), Some("localhost"));
        for bad in ["Web", "a//b", "web:", "web@sha256:abc", "web:-x", ""] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
