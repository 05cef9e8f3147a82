//! Approval of tasks submitted by the `user` role: operators approve (the task then joins the
//! normal queue, with the usual resource checks) or reject with a reason the submitter sees.

use crate::api::error::ApiError;
use crate::auth::service::audit;
use crate::auth::Caller;
use crate::store::tasks::{self, Applied, Change};
use crate::AppState;
use ferry_common::{TaskId, TaskStatus};

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    approve: bool,
    reason: Option<String>,
) -> Result<(), ApiError> {
    let t = state
        .db
        .read(move |c| tasks::get(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found("Task not found."))?;
    if t.status != TaskStatus::PendingApproval {
        return Err(ApiError::conflict(format!(
            "Task is not awaiting approval (state: {})",
            t.status
        )));
    }
    let (to, approval) = if approve {
        (
            TaskStatus::Pending,
            ("approved".to_string(), caller.user_id, None),
        )
    } else {
        (
            TaskStatus::Rejected,
            ("rejected".to_string(), caller.user_id, reason.clone()),
        )
    };
    let change = Change {
        status: Some(to),
        message: reason
            .clone()
            .filter(|_| !approve)
            .map(|r| format!("Rejected: {r}")),
        approval: Some(approval),
        ..Default::default()
    };
    match state.scheduler.change(id, change).await? {
        Applied::Changed { .. } => {}
        Applied::NotFound => return Err(ApiError::not_found("Task not found.")),
        Applied::Ignored(why) => {
            return Err(ApiError::conflict(format!("Task changed meanwhile: {why}")))
        }
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

pub async fn approve(state: &AppState, caller: &Caller, id: TaskId) -> Result<(), ApiError> {
    decide(state, caller, id, true, None).await
}

pub async fn reject(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    reason: Option<String>,
) -> Result<(), ApiError> {
    if reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(ApiError::unprocessable("reason: at most 1000 characters"));
    }
    decide(state, caller, id, false, reason).await
}
