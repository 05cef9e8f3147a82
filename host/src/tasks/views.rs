//! Tasks as callers see them: the one mapping from [`Task`] to the wire's `TaskResponse`, who
//! may read what, and the read services behind `/api/status` and the task lists.

use crate::auth::Caller;
use crate::scheduler::View;
use crate::store::tasks::{self, ListFilter};
use crate::store::StoreError;
use crate::tasks::model::Task;
use crate::AppState;
use ferry_common::api::{AttemptSummary, TaskResponse};
use ferry_common::task::{TaskSpec, VpsBackend};
use ferry_common::time::format_ms;
use ferry_common::{Role, TaskId, TaskStatus};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("Task not found.")]
    NotFound,
    #[error("Access denied to this task")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn task(t: &Task, view: &View, shared_dir: Option<&Path>) -> TaskResponse {
    let log = |stream: &str| {
        shared_dir
            .map(|d| {
                d.join("logs")
                    .join(ferry_common::task::log_dir(t.id, t.run))
                    .join(format!("{stream}.log"))
                    .display()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let d = &t.definition;
    let (command, arguments, working_dir, timeout_seconds) = match &d.spec {
        TaskSpec::Command(c) => (
            c.command.clone(),
            c.arguments.clone(),
            c.working_dir.clone(),
            c.timeout_seconds,
        ),
        TaskSpec::Vps(_) => ("vps".to_string(), Vec::new(), None, None),
    };
    let (max_retries, retry_on) = match d.spec.as_command() {
        Some(c) => (c.max_retries, c.retry_on.clone()),
        None => (0, Vec::new()),
    };
    let vps = d.spec.as_vps();
    TaskResponse {
        task_id: t.id,
        task_type: d.kind(),
        batch_id: t.batch_id,
        name: t.name.clone(),
        owner_id: t.owner_id,
        owner_username: t.owner_username.clone(),
        approval_status: t.approval.status,
        approved_by_id: t.approval.by,
        approved_by_username: t.approved_by_username.clone(),
        approved_at: t.approval.at.map(format_ms),
        rejection_reason: t.approval.rejection_reason.clone(),
        command,
        arguments,
        env_vars: d.env_vars.clone(),
        required_cores: d.resources.required_cores,
        required_gpus: d.resources.required_gpus.clone(),
        required_memory_bytes: d.resources.required_memory_bytes,
        target_numa_node_id: d.resources.target_numa_node_id,
        status: t.status,
        assigned_node: t.assigned_node.clone().or(t.target_node.clone()),
        container_name: d.image.container_name.clone(),
        docker_image_name: d.image.reference(),
        docker_privileged: d.privileged,
        docker_mount_dirs: d.mounts.clone(),
        ssh_port: t.ssh_port,
        // The original says `docker` for command tasks too.
        vps_backend: vps.map_or(VpsBackend::Docker, |v| v.vps_backend),
        vm_image: vps.and_then(|v| v.vm_image.clone()),
        vm_disk_size: vps.and_then(|v| v.vm_disk_size.clone()),
        vm_ip: t.vm_ip.clone(),
        stdout_path: log("stdout"),
        stderr_path: log("stderr"),
        exit_code: t.exit_code,
        error_message: t.error_message.clone(),
        submitted_at: Some(format_ms(t.submitted_at)),
        started_at: t.started_at.map(format_ms),
        completed_at: t.completed_at.map(format_ms),
        priority: t.priority,
        working_dir,
        queue_position: view.queue.get(&t.id).copied(),
        timeout_seconds,
        attempt: t.run,
        max_retries,
        retry_on,
        retry_at: t
            .retry_at
            .filter(|_| t.status == TaskStatus::Pending)
            .map(format_ms),
        placements: t.attempt,
        preparing: None,
        waiting_reason: (t.status == TaskStatus::Pending).then(|| waiting_reason(t, view)),
    }
}

/// Why a queued task is not running: its retry's backoff, else what placement lacks.
fn waiting_reason(t: &Task, view: &View) -> String {
    let now = ferry_common::time::now_ms();
    match t.retry_at.filter(|at| *at > now) {
        Some(at) => format!(
            "attempt {} waits for its retry backoff until {}",
            t.run,
            format_ms(at)
        ),
        None => crate::scheduler::placement::why_waiting(
            &crate::scheduler::request_of(t),
            &view.capacities,
            &view.usage,
        ),
    }
}

/// Users see their own tasks; viewers (read-only observers) and operators see all.
pub fn may_read(caller: &Caller, owner: Option<i64>) -> bool {
    caller.role != Role::User || caller.may_touch(owner)
}

/// A task as `caller` may see it: environment values often hold secrets, so only the owner
/// and operators see them; a viewer observing someone else's task sees the names only.
pub fn shown_to(state: &AppState, caller: &Caller, t: &Task) -> TaskResponse {
    let mut shown = task(
        t,
        &state.scheduler.view(),
        state.config.shared_dir.as_deref(),
    );
    if t.status == TaskStatus::Assigning {
        shown.preparing = t
            .assigned_node
            .as_deref()
            .and_then(|node| state.cluster.preparing_of(t.id, node));
    }
    if !caller.may_touch(t.owner_id) {
        for v in shown.env_vars.values_mut() {
            *v = "[hidden]".into();
        }
    }
    shown
}

/// One task, if the caller may read it.
pub async fn status(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<TaskResponse, QueryError> {
    let t = state
        .db
        .read(move |c| tasks::get(c, id))
        .await?
        .ok_or(QueryError::NotFound)?;
    if !may_read(caller, t.owner_id) && !crate::tasks::vps::may_reach(state, caller, &t).await? {
        return Err(QueryError::Forbidden);
    }
    Ok(shown_to(state, caller, &t))
}

/// A task's timeline, if the caller may read the task.
pub async fn timeline(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<ferry_common::api::TaskTimeline, QueryError> {
    // The task's own read check first: a timeline says no more than the task does.
    status(state, caller, id).await?;
    let events = state
        .db
        .read(move |c| crate::store::timeline::list(c, id))
        .await?;
    Ok(ferry_common::api::TaskTimeline {
        task_id: id,
        events,
    })
}

/// Every attempt of a task, oldest first, the current one last.
pub async fn attempts(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<ferry_common::api::TaskAttempts, QueryError> {
    status(state, caller, id).await?;
    let (t, ended) = state
        .db
        .read(move |c| {
            let t = tasks::get(c, id)?;
            Ok((t, crate::store::attempts::list(c, id)?))
        })
        .await?;
    let t = t.ok_or(QueryError::NotFound)?;
    let summary = |run: u32, a: &crate::store::attempts::EndedAttempt| AttemptSummary {
        attempt: run,
        status: a.status,
        node: a.node.clone(),
        exit_code: a.exit_code,
        error_message: a.error_message.clone(),
        started_at: a.started_at.map(format_ms),
        completed_at: a.completed_at.map(format_ms),
        stdout_url: format!("/api/tasks/{id}/stdout?attempt={run}"),
        stderr_url: format!("/api/tasks/{id}/stderr?attempt={run}"),
    };
    let mut list: Vec<AttemptSummary> = ended
        .iter()
        .filter(|a| a.run < t.run)
        .map(|a| summary(a.run, a))
        .collect();
    let current = crate::store::attempts::EndedAttempt {
        run: t.run,
        status: t.status,
        node: t.assigned_node.clone(),
        exit_code: t.exit_code,
        error_message: t.error_message.clone(),
        started_at: t.started_at,
        completed_at: t.completed_at,
    };
    list.push(summary(t.run, &current));
    Ok(ferry_common::api::TaskAttempts {
        task_id: id,
        attempt: t.run,
        max_retries: t.definition.spec.as_command().map_or(0, |c| c.max_retries),
        attempts: list,
    })
}

/// A page of tasks, newest first; a `user` sees only their own whatever the filter says.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    mut filter: ListFilter,
) -> Result<Vec<TaskResponse>, StoreError> {
    if caller.role == Role::User {
        filter.owner = Some(caller.user_id.unwrap_or(-1));
    }
    let rows = state.db.read(move |c| tasks::list(c, &filter)).await?;
    Ok(rows.iter().map(|t| shown_to(state, caller, t)).collect())
}
