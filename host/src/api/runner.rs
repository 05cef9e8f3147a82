//! Routes runners call: register, heartbeat, status update.

use super::error::{ApiError, ApiJson};
use crate::cluster::ClusterError;
use crate::store::tasks::{Applied, Change};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Json;
use ferry_common::runner_proto::{
    Heartbeat, HeartbeatResponse, RegisterRequest, RegisterResponse, TaskUpdate,
};
use ferry_common::time::parse_ms;
use serde_json::{json, Value};

fn cluster_error(e: ClusterError) -> ApiError {
    match e {
        ClusterError::UnknownNode(h) => {
            ApiError::not_found(format!("Node '{h}' is not registered; register first"))
        }
        ClusterError::Store(e) => e.into(),
    }
}

pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    if ferry_common::target::Target::parse(&req.hostname)
        .map(|t| t.numa_node.is_some())
        .unwrap_or(true)
    {
        return Err(ApiError::unprocessable(format!(
            "hostname: {:?} is not a valid node name",
            req.hostname
        )));
    }
    if req.total_cores == 0 {
        return Err(ApiError::unprocessable("total_cores: must be at least 1"));
    }
    if !(req.url.starts_with("http://") || req.url.starts_with("https://")) {
        return Err(ApiError::unprocessable(format!(
            "url: {:?} is not an http(s) URL",
            req.url
        )));
    }
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
) -> Result<Json<Value>, ApiError> {
    let change = Change {
        status: Some(u.status),
        exit_code: u.exit_code,
        message: u.message.clone(),
        started_at: u.started_at.as_deref().and_then(parse_ms),
        completed_at: u.completed_at.as_deref().and_then(parse_ms),
        seq: u.seq,
        assigned_node: None,
        approval: None,
        reporter: u.hostname.clone(),
    };
    let applied = state.scheduler.change(u.task_id, change).await?;
    let message = match applied {
        Applied::Changed { .. } => "Task status updated successfully.",
        Applied::Ignored(why) => {
            tracing::debug!(task_id = %u.task_id, status = %u.status, %why, "report ignored");
            "Task ID not recognized or invalid state transition."
        }
        Applied::NotFound => "Task ID not recognized or invalid state transition.",
    };
    Ok(Json(json!({"message": message})))
}
