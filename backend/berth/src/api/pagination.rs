//! Keyset pagination. Ids are UUIDv7 (time-ordered) or sequence numbers, so "the rows after the last one
//! seen" is `WHERE id > $cursor ORDER BY id`: stable under concurrent inserts, and as fast on page 1000
//! as on page 1. The cursor is the last id, base64url-encoded so clients treat it as opaque.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_types::Page;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1–500 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// The page size, validated.
    pub fn limit(&self) -> ApiResult<i64> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid_field("limit", format!("must be between 1 and {MAX_LIMIT}"))),
        }
    }

    /// The decoded cursor, parsed as the list's key type.
    pub fn after<K: std::str::FromStr>(&self) -> ApiResult<Option<K>> {
        let Some(c) = &self.cursor else {
            return Ok(None);
        };
        let invalid = || ApiError::bad_request("invalid-cursor", "the cursor is not one this list returned");
        let bytes = URL_SAFE_NO_PAD.decode(c).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        text.parse().map(Some).map_err(|_| invalid())
    }
}

/// Builds a page from up to `limit + 1` rows fetched in key order: the extra row only tells whether
/// there is a next page.
pub fn page<R, T, K: ToString>(mut rows: Vec<R>, limit: i64, key: impl Fn(&R) -> K, map: impl Fn(R) -> T) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|r| URL_SAFE_NO_PAD.encode(key(r).to_string())) } else { None };
    Page { items: rows.into_iter().map(map).collect(), next_cursor }
}
