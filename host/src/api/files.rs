//! `/api/fs/{task_id}/<op>`: checked here (who, which task, that it runs on an online node),
//! done by the task's runner, whose status and body come back unchanged.

use super::error::{require_json, ApiError, TaskIdPath};
use crate::auth::Caller;
use crate::tasks::access::{self, AccessError};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use std::time::Duration;

/// How long a file operation may take on the runner.
const FS_TIMEOUT: Duration = Duration::from_secs(60);
pub use ferry_common::runner_proto::FS_MAX_WRITE_BODY as MAX_WRITE_BODY;

/// One file operation, relayed.
async fn relay(
    state: &AppState,
    caller: &Caller,
    id: ferry_common::TaskId,
    method: Method,
    uri: &axum::http::Uri,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    let task = access::check_reader(state, caller, id)
        .await
        .map_err(|e| match e {
            AccessError::NotFound => ApiError::not_found(format!("Task {id} not found.")),
            AccessError::Forbidden => ApiError::forbidden(e.to_string()),
            AccessError::Store(e) => e.into(),
            other => ApiError::internal(other.to_string()),
        })?;
    let target = access::running_target(state, task).map_err(|e| match e {
        AccessError::NotNow(_) => ApiError::bad_request(e.to_string()),
        AccessError::NodeDown(_) => ApiError::unavailable(e.to_string()),
        other => ApiError::internal(other.to_string()),
    })?;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let (status, reply) = state
        .runner
        .forward(&target.runner_url, method.as_str(), &path, body, FS_TIMEOUT)
        .await
        .map_err(|e| ApiError::bad_gateway(format!("Failed to communicate with runner: {e}")))?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((status, [("content-type", "application/json")], reply).into_response())
}

pub async fn read_op(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    uri: Uri,
    method: Method,
) -> Result<Response, ApiError> {
    relay(&state, &caller, id, method, &uri, None).await
}

pub async fn write_op(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    relay(&state, &caller, id, method, &uri, Some(body)).await
}
