//! Snapshot routes: checked here (who may, which VPS, where it is), carried out by the VPS's
//! runner, whose answer is passed back (its status and detail on an error).

use super::{load_reachable, VpsError};
use crate::auth::Caller;
use crate::runner_client::RunnerError;
use crate::tasks::model::Task;
use crate::AppState;
use ferry_common::{TaskId, TaskStatus};
use std::time::Duration;

/// Longest snapshot message accepted.
pub const MAX_MESSAGE: usize = 4096;

/// What is asked of the runner.
#[derive(Debug, Clone)]
pub enum SnapshotCall {
    List,
    Latest,
    Create { message: Option<String> },
    Delete { timestamp: i64 },
    DeleteAll,
}

/// Checks the caller and the VPS, then asks its runner.
pub async fn call(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    what: SnapshotCall,
) -> Result<serde_json::Value, VpsError> {
    let t = load_reachable(state, caller, id).await?;
    if let SnapshotCall::Create { message } = &what {
        if t.status != TaskStatus::Running {
            return Err(VpsError::Invalid(format!(
                "VPS must be running to take a snapshot (state: {})",
                t.status
            )));
        }
        if message
            .as_ref()
            .is_some_and(|m| m.len() > MAX_MESSAGE || m.contains('\0'))
        {
            return Err(VpsError::Invalid(format!(
                "message: at most {MAX_MESSAGE} bytes, no NUL characters"
            )));
        }
    }
    let url = runner_of(state, &t)?;
    let (method, path, body, timeout) = match &what {
        SnapshotCall::List => ("GET", format!("/api/vps/snapshots/{id}"), None, 30),
        SnapshotCall::Latest => ("GET", format!("/api/vps/snapshots/{id}/latest"), None, 30),
        SnapshotCall::Create { message } => (
            "POST",
            format!("/api/vps/snapshots/{id}"),
            Some(match message {
                Some(m) => serde_json::json!({ "message": m }),
                None => serde_json::json!({}),
            }),
            300,
        ),
        SnapshotCall::Delete { timestamp } => (
            "DELETE",
            format!("/api/vps/snapshots/{id}/{timestamp}"),
            None,
            60,
        ),
        SnapshotCall::DeleteAll => ("DELETE", format!("/api/vps/snapshots/{id}"), None, 120),
    };
    let answer = state
        .runner
        .call(
            &url,
            method,
            &path,
            body.as_ref(),
            Duration::from_secs(timeout),
        )
        .await
        .map_err(|e| match e {
            RunnerError::Refused { status, detail } => VpsError::Runner { status, detail },
            other => VpsError::BadGateway(format!("Failed to communicate with runner: {other}")),
        })?;
    if matches!(what, SnapshotCall::Create { .. }) {
        crate::auth::service::audit(
            state,
            Some(caller),
            "vps.snapshot",
            Some(format!("task {id}")),
            None,
        )
        .await;
    }
    Ok(answer)
}

/// The URL of the VPS's node (it may be offline: the call then says so).
fn runner_of(state: &AppState, t: &Task) -> Result<String, VpsError> {
    let node = t
        .assigned_node
        .as_ref()
        .ok_or_else(|| VpsError::Invalid("VPS has no assigned node.".into()))?;
    state
        .cluster
        .url_of(node)
        .ok_or_else(|| VpsError::NotFoundOther("Node not found.".into()))
}
