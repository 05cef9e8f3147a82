//! Approval of tasks submitted by the `user` role: operators approve (the task then joins the
//! normal queue, with the usual resource checks) or reject with a reason the submitter sees.

use crate::auth::service::audit;
use crate::auth::Caller;
use crate::store::tasks::{self, Applied};
use crate::store::StoreError;
use crate::tasks::model::{Change, Task};
use crate::AppState;
use ferry_common::{TaskId, TaskStatus};

/// Longest rejection reason kept (it is shown to the submitter).
const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("Task not found.")]
    NotFound,
    #[error("Task is not awaiting approval (state: {0})")]
    NotWaiting(TaskStatus),
    #[error("Task changed meanwhile: {0}")]
    Changed(String),
    #[error("reason: at most {MAX_REASON_CHARS} characters")]
    ReasonTooLong,
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    approve: bool,
    reason: Option<String>,
) -> Result<(), ApprovalError> {
    let t = state
        .db
        .read(move |c| tasks::get(c, id))
        .await?
        .ok_or(ApprovalError::NotFound)?;
    if t.status != TaskStatus::PendingApproval {
        return Err(ApprovalError::NotWaiting(t.status));
    }
    let change = if approve {
        Change::Approve { by: caller.user_id }
    } else {
        Change::Reject {
            by: caller.user_id,
            reason: reason.clone(),
        }
    };
    match state.scheduler.change(id, change).await? {
        Applied::Changed(_) => {}
        Applied::NotFound => return Err(ApprovalError::NotFound),
        Applied::Refused(why) => return Err(ApprovalError::Changed(why.to_string())),
    }
    let action = if approve {
        "task.approve"
    } else {
        "task.reject"
    };
    audit(
        state,
        Some(caller),
        action,
        Some(format!("task {id}")),
        reason,
    )
    .await;
    Ok(())
}

pub async fn approve(state: &AppState, caller: &Caller, id: TaskId) -> Result<(), ApprovalError> {
    decide(state, caller, id, true, None).await
}

pub async fn reject(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    reason: Option<String>,
) -> Result<(), ApprovalError> {
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApprovalError::ReasonTooLong);
    }
    decide(state, caller, id, false, reason).await
}

/// Tasks waiting for an operator, newest first.
pub async fn pending(state: &AppState, limit: u32, offset: u32) -> Result<Vec<Task>, StoreError> {
    let filter = tasks::ListFilter {
        status: Some(TaskStatus::PendingApproval),
        task_type: None,
        limit,
        offset,
        ..Default::default()
    };
    state.db.read(move |c| tasks::list(c, &filter)).await
}
