//! VPS routes: create, stop, restart, the lists, assignments and snapshots. Thin: parse,
//! call `tasks::vps`, map its error.

use super::error::{ApiError, ApiJson, ApiJsonArray, ApiQuery, TaskIdPath};
use crate::auth::Caller;
use crate::tasks::vps::{self, lifecycle, snapshots, VpsError, Which};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use ferry_common::api::{
    AssignResponse, AssignmentsResponse, MessageResponse, VpsActionResponse, VpsCreateRequest,
    VpsCreateResponse, VpsItem,
};
use serde::Deserialize;
use std::collections::HashMap;

pub fn vps_error(e: VpsError) -> ApiError {
    let detail = e.to_string();
    match e {
        VpsError::Invalid(_) => ApiError::bad_request(detail),
        VpsError::NotFound | VpsError::NotFoundOther(_) => ApiError::not_found(detail),
        VpsError::Forbidden => ApiError::forbidden(detail),
        VpsError::Conflict(_) => ApiError::conflict(detail),
        VpsError::Unavailable(_) => ApiError::unavailable(detail),
        VpsError::Refused(_) => ApiError::unprocessable(detail),
        VpsError::Runner { status, .. } => ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            detail,
        ),
        VpsError::BadGateway(_) => ApiError::bad_gateway(detail),
        VpsError::Store(e) => e.into(),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<VpsCreateRequest>,
) -> Result<Json<VpsCreateResponse>, ApiError> {
    vps::create::create(&state, &caller, req)
        .await
        .map(Json)
        .map_err(vps_error)
}

pub async fn stop(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<(StatusCode, Json<MessageResponse>), ApiError> {
    let message = lifecycle::stop(&state, &caller, id)
        .await
        .map_err(vps_error)?;
    Ok((StatusCode::ACCEPTED, Json(MessageResponse { message })))
}

pub async fn restart(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<(StatusCode, Json<VpsActionResponse>), ApiError> {
    let reply = lifecycle::restart(&state, &caller, id)
        .await
        .map_err(vps_error)?;
    Ok((StatusCode::ACCEPTED, Json(reply)))
}

async fn listed(
    state: AppState,
    caller: Caller,
    which: Which,
) -> Result<Json<Vec<VpsItem>>, ApiError> {
    vps::list(&state, &caller, which)
        .await
        .map(Json)
        .map_err(vps_error)
}

pub async fn list_all(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<VpsItem>>, ApiError> {
    listed(state, caller, Which::All).await
}

pub async fn list_active(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<VpsItem>>, ApiError> {
    listed(state, caller, Which::Active).await
}

pub async fn list_mine(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<VpsItem>>, ApiError> {
    listed(state, caller, Which::Mine).await
}

/// Most users one assign call may name.
const MAX_ASSIGN: usize = 1000;

pub async fn assign(
    State(state): State<AppState>,
    TaskIdPath(id): TaskIdPath,
    ApiJsonArray(users): ApiJsonArray<Vec<i64>>,
) -> Result<Json<AssignResponse>, ApiError> {
    if users.len() > MAX_ASSIGN {
        return Err(ApiError::unprocessable(format!(
            "body: at most {MAX_ASSIGN} user ids per call"
        )));
    }
    vps::assign(&state, id, users)
        .await
        .map(Json)
        .map_err(vps_error)
}

/// A numeric path segment other than `task_id`: 422 naming it when it is not a number.
fn number_in(params: &HashMap<String, String>, name: &str) -> Result<i64, ApiError> {
    params
        .get(name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::unprocessable(format!("{name}: must be an integer")))
}

pub async fn unassign(
    State(state): State<AppState>,
    TaskIdPath(id): TaskIdPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<MessageResponse>, ApiError> {
    let user = number_in(&params, "user_id")?;
    vps::unassign(&state, id, user)
        .await
        .map(|message| Json(MessageResponse { message }))
        .map_err(vps_error)
}

pub async fn assignments(
    State(state): State<AppState>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<AssignmentsResponse>, ApiError> {
    vps::assignments(&state, id)
        .await
        .map(Json)
        .map_err(vps_error)
}

async fn snapshot_call(
    state: AppState,
    caller: Caller,
    id: ferry_common::TaskId,
    what: snapshots::SnapshotCall,
) -> Result<Json<serde_json::Value>, ApiError> {
    snapshots::call(&state, &caller, id, what)
        .await
        .map(Json)
        .map_err(vps_error)
}

pub async fn snapshots_list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<serde_json::Value>, ApiError> {
    snapshot_call(state, caller, id, snapshots::SnapshotCall::List).await
}

pub async fn snapshot_latest(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<serde_json::Value>, ApiError> {
    snapshot_call(state, caller, id, snapshots::SnapshotCall::Latest).await
}

#[derive(Deserialize)]
pub struct SnapshotQuery {
    message: Option<String>,
}

pub async fn snapshot_create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let what = snapshots::SnapshotCall::Create {
        message: q.message.filter(|m| !m.is_empty()),
    };
    snapshot_call(state, caller, id, what).await
}

pub async fn snapshot_delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let timestamp = number_in(&params, "timestamp")?;
    snapshot_call(
        state,
        caller,
        id,
        snapshots::SnapshotCall::Delete { timestamp },
    )
    .await
}

pub async fn snapshots_delete_all(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<serde_json::Value>, ApiError> {
    snapshot_call(state, caller, id, snapshots::SnapshotCall::DeleteAll).await
}
