//! The one error type handlers return, rendered as `{"detail": "..."}` with the right status,
//! and extractors whose rejections use the same shape (naming the bad field).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_common::{ErrorBody, TaskId};
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn unprocessable(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    pub fn conflict(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, detail)
    }
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }
    pub fn bad_gateway(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_GATEWAY, detail)
    }
    pub fn internal(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
    pub fn too_many(detail: impl Into<String>, wait: std::time::Duration) -> ApiError {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, detail);
        e.retry_after = Some(wait.as_secs().max(1));
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, detail = %self.detail, "request failed");
        }
        let mut resp = (self.status, Json(ErrorBody::new(self.detail))).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(m) => ApiError::conflict(m),
            // Disk full or failing: not the caller's fault, and worth retrying later.
            other if other.is_storage_failure() => {
                let mut err = ApiError::unavailable(other.shared_copy().to_string());
                err.retry_after = Some(30);
                err
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<crate::auth::password::HashError> for ApiError {
    fn from(e: crate::auth::password::HashError) -> Self {
        match e {
            crate::auth::password::HashError::Busy => {
                let mut err = ApiError::unavailable(e.to_string());
                err.retry_after = Some(5);
                err
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// A JSON body whose errors name the offending field (`required_cores: invalid type ...`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state, b'{', "a JSON object")
            .await
            .map(ApiJson)
    }
}

/// A body that is a JSON array (the original's `vps/assign` takes a bare list of ids).
pub struct ApiJsonArray<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJsonArray<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state, b'[', "a JSON array")
            .await
            .map(ApiJsonArray)
    }
}

/// Reads a JSON body that must open with `opening` (the body's kind, `what`), with errors
/// naming the offending field.
async fn read_json<S: Send + Sync, T: DeserializeOwned>(
    req: Request,
    state: &S,
    opening: u8,
    what: &str,
) -> Result<T, ApiError> {
    require_json(req.headers())?;
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| {
            ApiError::new(
                e.status(),
                format!("cannot read request body: {}", e.body_text()),
            )
        })?;
    // Each body has one shape; an array would otherwise be read as an object's fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&opening) {
        return Err(ApiError::unprocessable(format!(
            "request body must be {what}"
        )));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::unprocessable(format!("request body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::unprocessable(format!("invalid request body: {inner}"))
        } else {
            ApiError::unprocessable(format!("{path}: {inner}"))
        }
    })
}

/// A body is read as JSON only when it says it is: a form or `text/plain` body is what another
/// site's page can make a browser send without asking, so it is refused (415).
pub fn require_json(headers: &header::HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type: expected application/json, got {:?}",
                other.chars().take(80).collect::<String>()
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: expected application/json (the header is missing)",
        )),
    }
}

/// Query parameters with rejections in the house shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::unprocessable(format!("query: {}", e.body_text()))
            })
    }
}

/// The `{task_id}` path segment: a non-numeric id is a 422 naming `task_id` (as the original),
/// never a 404.
pub struct TaskIdPath(pub TaskId);

impl<S: Send + Sync> FromRequestParts<S> for TaskIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params =
            axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(
                parts, state,
            )
            .await
            .map_err(|e: PathRejection| ApiError::unprocessable(e.body_text()))?;
        let raw = params.0.get("task_id").cloned().unwrap_or_default();
        raw.parse::<TaskId>()
            .map(TaskIdPath)
            .map_err(|e| ApiError::unprocessable(format!("task_id: {e}")))
    }
}
