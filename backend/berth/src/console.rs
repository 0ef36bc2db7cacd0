//! Serving the web console (`frontend/`, built by `scripts/build-console.sh` into a directory such as
//! `target/console`): `index.html` for every page path the console routes (so a reloaded link works),
//! and its assets under `/assets/`.
//!
//! Asset names carry a hash of their content, so they are cached for a year as immutable; `index.html`,
//! which names them, is revalidated on every load (`no-cache`), so a new build reaches browsers at
//! once. Brotli or gzip files made at build time are sent to browsers that accept them. The
//! Content-Security-Policy that keeps the console to its own origin is set in `api::headers`.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::error::ApiError;

/// A built console on disk.
#[derive(Debug, Clone)]
pub struct Console {
    dir: PathBuf,
}

impl Console {
    /// The console built into `dir`, if there is one (`index.html` present).
    pub fn open(dir: &Path) -> Option<Console> {
        dir.join("index.html").is_file().then(|| Console { dir: dir.to_owned() })
    }

    /// Answers a request that no API route took: the console's files for page paths and assets; a
    /// problem+json 404 under `/api/` and everywhere when there is no console.
    pub async fn serve(console: Option<&Console>, req: Request) -> Response {
        let path = req.uri().path();
        let Some(console) = console.filter(|_| !path.starts_with("/api/")) else {
            return ApiError::new(StatusCode::NOT_FOUND, "no-such-route", "there is no such route").into_response();
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "the console's pages can only be read")
                .into_response();
        }
        let asset = path.starts_with("/assets/");
        let mut resp = if asset {
            let files = ServeDir::new(&console.dir).precompressed_br().precompressed_gzip();
            files.oneshot(req).await.map(|r| r.map(Body::new)).unwrap_or_else(|e| match e {})
        } else {
            let index = ServeFile::new(console.dir.join("index.html")).precompressed_br().precompressed_gzip();
            index.oneshot(req).await.map(|r| r.map(Body::new)).unwrap_or_else(|e| match e {})
        };
        if asset && resp.status() == StatusCode::NOT_FOUND {
            resp = ApiError::new(
                StatusCode::NOT_FOUND,
                "no-such-asset",
                "the console has no such file (is the page from an older build?)",
            )
            .into_response();
        }
        let cache = match (asset, resp.status().is_success()) {
            (true, true) => "public, max-age=31536000, immutable",
            (false, true) => "no-cache",
            (_, false) => "no-store",
        };
        let headers = resp.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        resp
    }
}
