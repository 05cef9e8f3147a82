//! Kill, pause and resume.
//!
//! A kill is a scheduler event like a placement: the scheduler records the task `killed` at
//! once (what the user sees), keeps its resources booked and delivers the kill to the task's
//! runner in the background; the booking is released when the runner confirms or the node is
//! declared lost. Pause and resume ask the runner first and record the new state only when it
//! succeeded.

use crate::auth::Caller;
use crate::runner_client::{Control, RunnerError};
use crate::store::tasks::{self, Applied};
use crate::store::StoreError;
use crate::tasks::model::{Change, Task, TransitionError};
use crate::AppState;
use ferry_common::{TaskId, TaskStatus};

pub const KILL_MESSAGE: &str = "Kill requested by user.";

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
    Store(#[from] StoreError),
}

async fn load(state: &AppState, id: TaskId) -> Result<Task, ControlError> {
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
) -> Result<Task, ControlError> {
    let t = load(state, id).await?;
    if caller.may_touch(t.owner_id) {
        Ok(t)
    } else {
        Err(ControlError::Forbidden)
    }
}

/// Kills a task in any non-final state (see the module doc for what happens on its node).
pub async fn kill(state: &AppState, caller: &Caller, id: TaskId) -> Result<(), ControlError> {
    let t = load_owned(state, caller, id).await?;
    if t.status.is_final() {
        return Err(ControlError::Conflict(format!(
            "Task cannot be killed (state: {})",
            t.status
        )));
    }
    let change = Change::Kill {
        reason: KILL_MESSAGE.into(),
    };
    match state.scheduler.change(id, change).await? {
        Applied::Changed(_) => {}
        Applied::NotFound => return Err(ControlError::NotFound),
        Applied::Refused(TransitionError::NotAllowed { from, .. }) => {
            // The runner's own report of the end may have arrived first: killed is success.
            if from != TaskStatus::Killed {
                return Err(ControlError::Conflict(format!(
                    "Task cannot be killed (state: {from})"
                )));
            }
        }
        Applied::Refused(other) => return Err(ControlError::Conflict(other.to_string())),
    }
    crate::auth::service::audit(
        state,
        Some(caller),
        "task.kill",
        Some(format!("task {id}")),
        None,
    )
    .await;
    Ok(())
}

/// Runs an ended command task again as its next attempt (the owner or an operator). Its
/// previous attempts keep their exit codes and logs. A task whose kill its runner has not
/// confirmed yet waits: nothing of the old attempt may still run when the new one starts.
pub async fn retry(state: &AppState, caller: &Caller, id: TaskId) -> Result<Task, ControlError> {
    let t = load_owned(state, caller, id).await?;
    let refused = |why: String| Err(ControlError::Conflict(why));
    if t.definition.spec.as_vps().is_some() {
        return refused(
            "A VPS is started again with POST /api/vps/restart/{task_id}, not retried".into(),
        );
    }
    if t.status.is_final() && t.booked {
        return refused(format!(
            "Task {id} is still ending on node '{}'; retry once its end is confirmed",
            t.assigned_node.as_deref().unwrap_or("?")
        ));
    }
    let reason = format!(
        "Retry requested by {}: attempt {} starts.",
        if caller.username.is_empty() {
            "a user"
        } else {
            caller.username.as_str()
        },
        t.run + 1
    );
    let after = match state.scheduler.change(id, Change::Retry { reason }).await? {
        Applied::Changed(tr) => tr.after,
        Applied::NotFound => return Err(ControlError::NotFound),
        Applied::Refused(TransitionError::NotAllowed { from, .. }) => {
            return refused(format!(
                "Task cannot be retried (state: {from}): only an ended task (completed, failed, killed, timed_out) or a lost one can"
            ))
        }
        Applied::Refused(other) => return refused(other.to_string()),
    };
    crate::auth::service::audit(
        state,
        Some(caller),
        "task.retry",
        Some(format!("task {id}")),
        Some(format!("attempt {}", after.run)),
    )
    .await;
    Ok(after)
}

/// `pause` (from running) or `resume` (from paused), applied only when the runner succeeds.
pub async fn pause_or_resume(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    pause: bool,
) -> Result<(), ControlError> {
    let (verb, from) = if pause {
        (Control::Pause, TaskStatus::Running)
    } else {
        (Control::Resume, TaskStatus::Paused)
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
        .change(id, Change::Running { paused: pause })
        .await?
    {
        Applied::Changed(_) => Ok(()),
        Applied::NotFound => Err(ControlError::NotFound),
        Applied::Refused(why) => Err(ControlError::Conflict(format!(
            "task changed meanwhile: {why}"
        ))),
    }
}
