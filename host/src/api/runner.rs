//! Routes runners call: register, heartbeat, status update.

use super::error::{ApiError, ApiJson};
use crate::cluster::ClusterError;
use crate::store::tasks::Applied;
use crate::tasks::model::{Change, Report};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use ferry_common::api::MessageResponse;
use ferry_common::runner_proto::RUNNER_CREDENTIAL_HEADER;
use ferry_common::runner_proto::{
    Heartbeat, HeartbeatResponse, RegisterRequest, RegisterResponse, TaskUpdate,
};
use ferry_common::time::parse_ms;
use ferry_common::TaskStatus;

fn cluster_error(e: ClusterError) -> ApiError {
    match e {
        ClusterError::UnknownNode(h) => {
            ApiError::not_found(format!("Node '{h}' is not registered; register first"))
        }
        ClusterError::NoCredential(_) => ApiError::unauthorized(e.to_string()),
        ClusterError::NotYours(_) => ApiError::forbidden(e.to_string()),
        ClusterError::Invalid { .. } => ApiError::unprocessable(e.to_string()),
        ClusterError::Store(e) => e.into(),
    }
}

/// The runner credential a call carries, if any.
fn credential(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(RUNNER_CREDENTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let hostname = req.hostname.clone();
    let done = state
        .cluster
        .register(req, credential(&headers))
        .await
        .map_err(cluster_error)?;
    Ok(Json(RegisterResponse {
        message: format!("Runner {hostname} registered"),
        created: done.created,
        credential: done.credential,
        overlay: None,
    }))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    Path(hostname): Path<String>,
    headers: HeaderMap,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    state
        .cluster
        .check_credential(&hostname, credential(&headers))
        .map_err(cluster_error)?;
    state
        .cluster
        .heartbeat(&hostname, hb)
        .await
        .map(Json)
        .map_err(cluster_error)
}

/// Always 200 for a well-formed report, as the original: the message says whether it applied.
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(u): ApiJson<TaskUpdate>,
) -> Result<Json<MessageResponse>, ApiError> {
    // The credential says who reports; the body's `hostname` is not believed.
    let reporter = credential(&headers)
        .and_then(|c| state.cluster.node_of_credential(c))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "status reports need the reporting runner's credential (header x-ferry-runner-credential)",
            )
        })?;
    if !runner_may_report(u.status) {
        return Err(ApiError::unprocessable(format!(
            "status: a runner reports running, paused or a final state (completed, failed, killed, killed_oom, stopped), not {}",
            u.status
        )));
    }
    let change = Change::Report(Report {
        status: Some(u.status),
        exit_code: u.exit_code,
        message: u.message.clone(),
        started_at: u.started_at.as_deref().and_then(parse_ms),
        completed_at: u.completed_at.as_deref().and_then(parse_ms),
        seq: u.seq,
        reporter: Some(reporter),
        attempt: u.attempt,
        ssh_port: u.ssh_port.filter(|p| *p > 0),
    });
    let applied = state.scheduler.change(u.task_id, change).await?;
    let message = match applied {
        Applied::Changed(_) => "Task status updated successfully.",
        Applied::Refused(why) => {
            tracing::debug!(task_id = %u.task_id, status = %u.status, %why, "report ignored");
            "Task ID not recognized or invalid state transition."
        }
        Applied::NotFound => "Task ID not recognized or invalid state transition.",
    };
    Ok(Json(MessageResponse {
        message: message.into(),
    }))
}

/// The states a runner may report: what it sees of a container. `pending`, `assigning`, `lost`
/// and the approval states are the host's to decide (a `pending` would re-place a task that
/// may be running).
fn runner_may_report(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Running
            | TaskStatus::Paused
            | TaskStatus::Completed
            | TaskStatus::Failed
            | TaskStatus::Killed
            | TaskStatus::KilledOom
            | TaskStatus::Stopped
            | TaskStatus::TimedOut
    )
}
