//! Stop and restart. A stop is a scheduler change like a kill (`stopped` at once, the
//! runner's stop delivered in the background: snapshot, SIGTERM, removal). A restart of a
//! running VPS stops it first and waits until its runner confirms; then the VPS goes back to
//! the queue pinned to its node (where its snapshots are) and starts from its newest snapshot.

use super::create::{start_failure, wait_until_started};
use super::{load_owned, VpsError};
use crate::auth::Caller;
use crate::store::tasks::Applied;
use crate::tasks::model::{Change, Task, TransitionError};
use crate::AppState;
use ferry_common::api::VpsActionResponse;
use ferry_common::{TaskId, TaskStatus};
use std::time::Duration;

pub const STOP_MESSAGE: &str = "Stopped by user.";

/// Stops a VPS in any state but ended or awaiting approval.
pub async fn stop(state: &AppState, caller: &Caller, id: TaskId) -> Result<String, VpsError> {
    let t = load_owned(state, caller, id).await?;
    if !matches!(
        t.status,
        TaskStatus::Pending
            | TaskStatus::Assigning
            | TaskStatus::Running
            | TaskStatus::Paused
            | TaskStatus::Lost
    ) {
        return Err(VpsError::Conflict(format!(
            "VPS cannot be stopped (state: {})",
            t.status
        )));
    }
    apply_stop(state, id).await?;
    crate::auth::service::audit(
        state,
        Some(caller),
        "vps.stop",
        Some(format!("task {id}")),
        None,
    )
    .await;
    Ok(format!("VPS {id} stop requested. VPS marked as stopped."))
}

async fn apply_stop(state: &AppState, id: TaskId) -> Result<(), VpsError> {
    let change = Change::Stop {
        reason: STOP_MESSAGE.into(),
    };
    match state.scheduler.change(id, change).await? {
        Applied::Changed(_) => Ok(()),
        Applied::NotFound => Err(VpsError::NotFound),
        // Its own end may have been reported first.
        Applied::Refused(TransitionError::NotAllowed {
            from: TaskStatus::Stopped,
            ..
        }) => Ok(()),
        Applied::Refused(why) => Err(VpsError::Conflict(format!("VPS cannot be stopped: {why}"))),
    }
}

/// Restarts a VPS that is running, paused, stopped or failed, on the node it was on.
pub async fn restart(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<VpsActionResponse, VpsError> {
    let t = load_owned(state, caller, id).await?;
    if !matches!(
        t.status,
        TaskStatus::Running | TaskStatus::Paused | TaskStatus::Stopped | TaskStatus::Failed
    ) {
        return Err(VpsError::Conflict(format!(
            "VPS cannot be restarted (state: {})",
            t.status
        )));
    }
    // Its snapshots are on its node: that node must be there to start it from them.
    if let Some(node) = &t.assigned_node {
        if state.cluster.url_of(node).is_none() {
            return Err(VpsError::Unavailable(format!(
                "node '{node}' is not registered"
            )));
        }
        if !state.cluster.is_online(node) {
            return Err(VpsError::Unavailable(format!(
                "node '{node}' is offline; the VPS restarts there, where its snapshots are"
            )));
        }
    }
    if matches!(t.status, TaskStatus::Running | TaskStatus::Paused) {
        apply_stop(state, id).await?;
    }
    let limit = state.config.vps_start_wait;
    wait_released(state, id, limit).await?;
    match state.scheduler.change(id, Change::Restart).await? {
        Applied::Changed(_) => {}
        Applied::NotFound => return Err(VpsError::NotFound),
        Applied::Refused(why) => {
            return Err(VpsError::Conflict(format!(
                "VPS cannot be restarted: {why}"
            )))
        }
    }
    crate::auth::service::audit(
        state,
        Some(caller),
        "vps.restart",
        Some(format!("task {id}")),
        None,
    )
    .await;
    let t = wait_until_started(state, id, limit).await?;
    match t.status {
        TaskStatus::Running | TaskStatus::Paused => Ok(VpsActionResponse {
            message: format!("VPS {id} restart successful."),
            task_id: id,
            status: t.status,
            ssh_port: t.ssh_port,
            runner_response: Some(serde_json::Value::Bool(true)),
        }),
        TaskStatus::Pending | TaskStatus::Assigning => Ok(VpsActionResponse {
            message: "VPS restart request sent (awaiting runner confirmation).".into(),
            task_id: id,
            status: t.status,
            ssh_port: None,
            runner_response: None,
        }),
        _ => Err(start_failure(
            &t,
            t.error_message.as_deref().unwrap_or("it ended at once"),
        )),
    }
}

/// Waits until the VPS holds no booking (its runner confirmed the stop), at most `limit`.
async fn wait_released(state: &AppState, id: TaskId, limit: Duration) -> Result<Task, VpsError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let t = super::load(state, id).await?;
        if !t.booked {
            return Ok(t);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(VpsError::Unavailable(format!(
                "VPS {id} is still stopping on its node; try the restart again shortly"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
