//! Security headers on every response.
//!
//! - `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` everywhere.
//! - `Cache-Control: no-store` on every response to a request that carried credentials: tenant data must
//!   not linger in browser or proxy caches (a response that already chose its caching keeps it).
//! - A Content-Security-Policy: the console and the docs UI may load only their own scripts, styles and
//!   images; API responses (JSON, never rendered as pages) may load nothing and may not be framed.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The docs UI (Swagger UI, vendored): its own files only; it sets inline styles on elements.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console (its own files only): no inline script or style attribute, and the wasm module may be
/// compiled (`wasm-unsafe-eval` allows WebAssembly, not JavaScript `eval`). It talks only to Berth.
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Everything under `/api/`, and the operations endpoints, is data, not a page.
const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

pub async fn middleware(req: Request, next: Next) -> Response {
    let authenticated = req.headers().contains_key(header::AUTHORIZATION);
    let path = req.uri().path();
    let csp = if path.starts_with("/api/docs") {
        DOCS_CSP
    } else if path.starts_with("/api/") || matches!(path, "/healthz" | "/readyz" | "/metrics") {
        API_CSP
    } else {
        CONSOLE_CSP
    };
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    if authenticated && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
