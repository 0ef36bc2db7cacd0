//! Extractors whose rejections are problem+json: a JSON body that names the offending field, path
//! parameters, and query strings.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body. Syntax errors are 400 `malformed-json`; well-formed JSON of the wrong shape
/// (wrong type, missing or unknown field) is 422 `validation-failed` naming the field by its JSON path.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every request body is an object. serde would also fill a struct from an array of its fields in
    // order (`[null, "x"]`), which no client means and the API description does not allow.
    if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace())
        && *first != b'{'
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    }
    // PostgreSQL text cannot hold NUL characters, and no name, e-mail or password needs one.
    if bytes.windows(6).any(|w| w == br"\u0000")
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(field) = string_with_nul(&value, "")
    {
        return Err(ApiError::invalid_field(if field.is_empty() { "body" } else { &field }, "must not contain NUL characters"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("malformed-json", format!("the body is not valid JSON: {inner}"))
            }
            Category::Data => {
                let message = strip_position(&inner.to_string());
                // serde reports a missing field at the enclosing object; name the field itself. (An unknown
                // field's path already ends with it.)
                let field = field_from_message(&message)
                    .map(|f| if path == "." { f.to_owned() } else { format!("{path}.{f}") })
                    .unwrap_or_else(|| if path == "." { "body".to_owned() } else { path });
                ApiError::invalid_field(&field, message)
            }
        }
    })
}

/// The JSON path of the first string (or object key) holding a NUL character.
fn string_with_nul(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| string_with_nul(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if k.contains('\0') { Some(here) } else { string_with_nul(v, &here) }
        }),
        _ => None,
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn field_from_message(msg: &str) -> Option<&str> {
    msg.strip_prefix("missing field `").and_then(|rest| rest.split('`').next())
}

fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "the request body is larger than the server accepts")
    } else {
        ApiError::bad_request("unreadable-body", e.body_text())
    }
}

/// Path parameters; a malformed id is a 400 `invalid-id` rather than a plain-text rejection.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid-id", format!("invalid path parameter: {}", e.body_text())))
    }
}

/// Query parameters; a malformed one is a 400 `invalid-query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid-query", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: i32,
    }

    fn field(body: &str) -> (u16, String) {
        let e = parse_json::<Body>(body.as_bytes()).unwrap_err();
        (e.status.as_u16(), e.errors.first().map(|f| f.field.clone()).unwrap_or_default())
    }

    #[test]
    fn names_the_offending_field() {
        assert_eq!(field(r#"{"name": 5}"#), (422, "name".into()));
        assert_eq!(field(r#"{}"#), (422, "name".into()));
        assert_eq!(field(r#"{"name":"a","extra":1}"#), (422, "extra".into()));
        assert_eq!(field(r#"{"name":"a","inner":{"count":"x"}}"#), (422, "inner.count".into()));
        assert_eq!(field(r#"{"name":"a","inner":{}}"#), (422, "inner.count".into()));
        assert_eq!(field(r#"{"name":"#).0, 400);
        assert_eq!(field(r#"[null, null]"#), (422, "body".into()));
        assert_eq!(field(r#"["a"]"#), (422, "body".into()));
        assert_eq!(field(r#"{"name":"a\u0000b"}"#), (422, "name".into()));
        assert_eq!(field(r#"{"name":"a","inner":{"count":1,"x":["\u0000"]}}"#), (422, "inner.x[0]".into()));
        // An escaped backslash before `u0000` is not a NUL.
        assert_eq!(parse_json::<Body>(br#"{"name":"a\\u0000"}"#).unwrap().name, "a\\u0000");
    }
}
