//! Who may go into a running task or VPS (terminal; next files, watch and forwards), and
//! where its runner is. Checked before a socket is upgraded, so an anonymous, foreign or
//! under-privileged caller is refused before any runner is contacted.

use crate::auth::Caller;
use crate::store::tasks;
use crate::store::StoreError;
use crate::tasks::model::Task;
use crate::AppState;
use ferry_common::{TaskId, TaskStatus};

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("Task not found.")]
    NotFound,
    #[error("Access denied to this task")]
    Forbidden,
    /// Reachable in principle, not now: reported in-band on the socket (close 1008).
    #[error("{0}")]
    NotNow(String),
    /// Its node cannot be reached (close 1011).
    #[error("{0}")]
    NodeDown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A running task the caller may enter, and its runner's address.
pub struct Target {
    pub task: Task,
    pub runner_url: String,
}

/// The task, whoever asks.
pub async fn load(state: &AppState, id: TaskId) -> Result<Task, AccessError> {
    state
        .db
        .read(move |c| tasks::get(c, id))
        .await?
        .ok_or(AccessError::NotFound)
}

/// The task, if the caller may go into it (its owner, a VPS's assignee, or an operator).
pub async fn check_caller(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<Task, AccessError> {
    let t = load(state, id).await?;
    if !crate::tasks::vps::may_reach(state, caller, &t).await? {
        return Err(AccessError::Forbidden);
    }
    Ok(t)
}

/// The task, if the caller may read its files and watch them: as [`check_caller`], and any
/// task for a viewer (whom the route admits only where `viewer_file_access` allows it).
pub async fn check_reader(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<Task, AccessError> {
    if caller.role == ferry_common::Role::Viewer {
        load(state, id).await
    } else {
        check_caller(state, caller, id).await
    }
}

/// The task is running on an online node: where to dial.
pub fn running_target(state: &AppState, t: Task) -> Result<Target, AccessError> {
    if t.status != TaskStatus::Running {
        return Err(AccessError::NotNow(format!(
            "Task {} is not running (state: {})",
            t.id, t.status
        )));
    }
    let node = t
        .assigned_node
        .clone()
        .ok_or_else(|| AccessError::NodeDown("Task has no assigned node.".into()))?;
    let url = state
        .cluster
        .url_of(&node)
        .ok_or_else(|| AccessError::NodeDown(format!("node '{node}' is not registered")))?;
    if !state.cluster.is_online(&node) {
        return Err(AccessError::NodeDown(format!("node '{node}' is offline")));
    }
    Ok(Target {
        task: t,
        runner_url: url,
    })
}
