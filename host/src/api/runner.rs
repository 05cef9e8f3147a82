//! Routes runners call: register, heartbeat, status update.

use super::error::{ApiError, ApiJson};
use crate::cluster::ClusterError;
use crate::store::tasks::Applied;
use crate::tasks::model::{Change, Report};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use ferry_common::api::MessageResponse;
use ferry_common::runner_proto::{
    Heartbeat, HeartbeatResponse, RegisterRequest, RegisterResponse, TaskUpdate,
};
use ferry_common::time::parse_ms;

fn cluster_error(e: ClusterError) -> ApiError {
    match e {
        ClusterError::UnknownNode(h) => {
            ApiError::not_found(format!("Node '{h}' is not registered; register first"))
        }
        ClusterError::Invalid { .. } => ApiError::unprocessable(e.to_string()),
        ClusterError::Store(e) => e.into(),
    }
}

pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let hostname = req.hostname.clone();
    let created = state.cluster.register(req).await.map_err(cluster_error)?;
    Ok(Json(RegisterResponse {
        message: format!("Runner {hostname} registered"),
        created,
        overlay: None,
    }))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    Path(hostname): Path<String>,
    ApiJson(hb): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
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
    ApiJson(u): ApiJson<TaskUpdate>,
) -> Result<Json<MessageResponse>, ApiError> {
    let change = Change::Report(Report {
        status: Some(u.status),
        exit_code: u.exit_code,
        message: u.message.clone(),
        started_at: u.started_at.as_deref().and_then(parse_ms),
        completed_at: u.completed_at.as_deref().and_then(parse_ms),
        seq: u.seq,
        reporter: u.hostname.clone(),
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
