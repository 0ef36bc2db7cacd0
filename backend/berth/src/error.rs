//! The API's one error type. Every failure leaves as `application/problem+json` (RFC 9457) with a stable
//! `type` per kind of error. Internal errors are logged with the request id and answered with a generic
//! 500: their text never reaches the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_types::{FieldError, Problem};

/// Prefix of every problem `type`. A URN rather than a URL: nothing needs to be served there.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:berth:problem:";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The stable last segment of `type`, e.g. `not-found`.
    pub kind: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub location: Option<(u64, u64)>,
    /// Seconds a throttled (429) or unavailable (503) caller should wait: the `Retry-After` header.
    pub retry_after: Option<u64>,
    /// The cause of a 5xx, for the log only.
    source: Option<anyhow::Error>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, kind, detail: detail.into(), errors: Vec::new(), location: None, retry_after: None, source: None }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// The object does not exist *for this caller*: also what another tenant's object looks like.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", format!("{what} not found"))
    }

    pub fn conflict(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, detail)
    }

    /// 409 `name-taken`: "a cluster with this name already exists" (`what` = "cluster").
    pub fn name_taken(what: &str) -> Self {
        let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        Self::conflict("name-taken", format!("{article} {what} with this name already exists"))
    }

    /// A unique violation on a name as [`ApiError::name_taken`]; any other error as it is.
    pub fn or_name_taken(e: sqlx::Error, what: &str) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::name_taken(what),
            _ => e.into(),
        }
    }

    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }

    /// A 422 naming one invalid field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid_fields(vec![FieldError::new(field, message)])
    }

    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed", detail);
        e.errors = errors;
        e
    }

    /// A violation of `constraint` (a unique index, say) as a 422 at `field`; any other database error
    /// as usual.
    pub fn on_constraint(e: sqlx::Error, constraint: &str, field: &str, message: impl Into<String>) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.constraint() == Some(constraint) => Self::invalid_field(field, message),
            _ => e.into(),
        }
    }

    /// Over a tenant quota. Kubernetes answers exceeded quotas with 403 too; `type` tells them apart.
    pub fn quota_exceeded(limit: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "quota-exceeded", detail);
        e.errors = vec![FieldError::new(limit, "quota exceeded")];
        e
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an internal error occurred; see the server log");
        e.source = Some(source.into());
        e
    }

    pub fn with_location(mut self, line: u64, column: u64) -> Self {
        self.location = Some((line, column));
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    pub fn to_problem(&self) -> Problem {
        Problem {
            type_: format!("{PROBLEM_TYPE_PREFIX}{}", self.kind),
            title: self.title().to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            instance: None,
            errors: self.errors.clone(),
            line: self.location.map(|l| l.0),
            column: self.location.map(|l| l.1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            tracing::error!(error = ?source, "request failed");
        }
        let mut resp = problem_response(self.status, &self.to_problem());
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    resp
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // Named constraints are the schema's promises; breaking one is the caller's conflict, not a 500.
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => {
                    return ApiError::conflict("already-exists", "an object with that name already exists");
                }
                sqlx::error::ErrorKind::ForeignKeyViolation => {
                    return ApiError::conflict("in-use", "the object is referenced by, or refers to, another that prevents this");
                }
                _ => {}
            }
        }
        if matches!(e, sqlx::Error::PoolTimedOut) {
            let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is busy; retry");
            err.source = Some(e.into());
            return err;
        }
        ApiError::internal(e)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(e)
    }
}
