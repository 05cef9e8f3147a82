//! Kill, pause and resume: the runner is asked first where a container exists, and the new
//! state is recorded through the scheduler, which frees resources when the task ends.

use crate::auth::Caller;
use crate::runner_client::RunnerError;
use crate::store::tasks::{self, Applied, Change, TaskRow};
use crate::AppState;
use ferry_common::{TaskId, TaskStatus};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("Task not found.")]
    NotFound,
    #[error("Access denied to this task")]
    Forbidden,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Runner(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

async fn load(state: &AppState, id: TaskId) -> Result<TaskRow, ControlError> {
    state
        .db
        .read(move |c| tasks::get(c, id))
        .await?
        .ok_or(ControlError::NotFound)
}

/// Loads a task the caller may act on: its owner, or an operator and up.
pub async fn load_owned(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<TaskRow, ControlError> {
    let t = load(state, id).await?;
    if caller.may_touch(t.owner_id) {
        Ok(t)
    } else {
        Err(ControlError::Forbidden)
    }
}

/// Kills a task in any non-final state. A queued task just leaves the queue; a placed one is
/// killed on its runner when that runner answers (if not, the runner is told to kill it on its
/// next heartbeat, because the host already records the task as ended).
pub async fn kill(state: &AppState, caller: &Caller, id: TaskId) -> Result<(), ControlError> {
    let t = load_owned(state, caller, id).await?;
    if t.status.is_final() {
        return Err(ControlError::Conflict(format!(
            "Task cannot be killed (state: {})",
            t.status
        )));
    }
    let mut exit_code = None;
    if t.status.holds_resources() {
        if let Some(url) = t
            .assigned_node
            .as_deref()
            .and_then(|n| state.cluster.url_of(n))
        {
            match state.runner.control(&url, "kill", id).await {
                Ok(v) => exit_code = v.get("exit_code").and_then(|c| c.as_i64()),
                Err(RunnerError::Refused { status: 404, .. }) => {}
                Err(e) => {
                    tracing::warn!(task_id = %id, error = %e, "kill not delivered now; the runner will be told on its next heartbeat")
                }
            }
        }
    }
    let change = Change {
        status: Some(TaskStatus::Killed),
        message: Some("Kill requested by user.".into()),
        exit_code,
        ..Default::default()
    };
    let outcome = match state.scheduler.change(id, change).await? {
        // Placed between our read and the kill: it may be starting on its runner now.
        Applied::Changed {
            from,
            node: Some(node),
            ..
        } if from.holds_resources() && !t.status.holds_resources() => {
            if let Some(url) = state.cluster.url_of(&node) {
                if let Err(e) = state.runner.control(&url, "kill", id).await {
                    tracing::warn!(task_id = %id, error = %e, "kill not delivered now; the runner will be told on its next heartbeat");
                }
            }
            Ok(())
        }
        Applied::Changed { .. } => Ok(()),
        Applied::NotFound => Err(ControlError::NotFound),
        Applied::Ignored(_) => {
            let now = load(state, id).await?;
            // The runner's own report of the kill may arrive first: that is success too.
            if now.status == TaskStatus::Killed {
                Ok(())
            } else {
                Err(ControlError::Conflict(format!(
                    "Task cannot be killed (state: {})",
                    now.status
                )))
            }
        }
    };
    if outcome.is_ok() {
        crate::auth::service::audit(
            state,
            Some(caller),
            "task.kill",
            Some(format!("task {id}")),
            None,
        )
        .await;
    }
    outcome
}

/// `pause` (from running) or `resume` (from paused), applied only when the runner succeeds.
pub async fn pause_or_resume(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    pause: bool,
) -> Result<(), ControlError> {
    let (verb, from, to) = if pause {
        ("pause", TaskStatus::Running, TaskStatus::Paused)
    } else {
        ("resume", TaskStatus::Paused, TaskStatus::Running)
    };
    let t = load_owned(state, caller, id).await?;
    if t.status != from {
        return Err(ControlError::Conflict(format!(
            "Invalid command or task state: {verb} for {}",
            t.status
        )));
    }
    let node = t
        .assigned_node
        .clone()
        .ok_or_else(|| ControlError::Conflict("Task has no assigned node.".into()))?;
    let url = state
        .cluster
        .url_of(&node)
        .ok_or_else(|| ControlError::Conflict("Assigned node not found.".into()))?;
    state
        .runner
        .control(&url, verb, id)
        .await
        .map_err(|e| match e {
            // The runner's considered answer (still starting, already ended): a conflict.
            RunnerError::Refused { status, detail } if status < 500 => {
                ControlError::Conflict(format!("{verb} refused by node '{node}': {detail}"))
            }
            other => ControlError::Runner(format!("{verb} failed on node '{node}': {other}")),
        })?;
    match state
        .scheduler
        .change(
            id,
            Change {
                status: Some(to),
                ..Default::default()
            },
        )
        .await?
    {
        Applied::Changed { .. } => Ok(()),
        Applied::NotFound => Err(ControlError::NotFound),
        Applied::Ignored(why) => Err(ControlError::Conflict(format!(
            "task changed meanwhile: {why}"
        ))),
    }
}
