//! VPS sessions: [`create`] (validation, SSH key modes, placement now or in the queue),
//! [`lifecycle`] (stop, restart), [`snapshots`] (passed through to the VPS's runner), and
//! here who may reach a VPS, the lists and assignments.
//!
//! A VPS is a task (`TaskSpec::Vps`): it is queued, placed, booked, fenced and reported like
//! one. Who may reach it: its owner, the users assigned to it, and operators.

pub mod create;
pub mod lifecycle;
pub mod snapshots;

use crate::auth::Caller;
use crate::store::tasks::{self as task_store, ListFilter};
use crate::store::vps::{self as vps_store, AssignError, Assignee};
use crate::store::StoreError;
use crate::tasks::model::Task;
use crate::AppState;
use ferry_common::api::{AssignResponse, Assignment, AssignmentsResponse, VpsAssignee, VpsItem};
use ferry_common::task::VpsBackend;
use ferry_common::time::format_ms;
use ferry_common::{Role, TaskId, TaskKind, TaskStatus};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum VpsError {
    #[error("{0}")]
    Invalid(String),
    #[error("VPS not found.")]
    NotFound,
    #[error("{0}")]
    NotFoundOther(String),
    #[error("Access denied to this VPS")]
    Forbidden,
    #[error("{0}")]
    Conflict(String),
    /// No node has room now, or the VPS's node is offline.
    #[error("{0}")]
    Unavailable(String),
    /// The VPS failed to start because of what was asked (an image without sshd, ...).
    #[error("{0}")]
    Refused(String),
    /// Its runner answered with an error status (passed through).
    #[error("{detail}")]
    Runner { status: u16, detail: String },
    /// Its runner could not be reached.
    #[error("{0}")]
    BadGateway(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// States in which a VPS is "active" (the `/api/vps/status` list).
const ACTIVE: [TaskStatus; 4] = [
    TaskStatus::Pending,
    TaskStatus::Assigning,
    TaskStatus::Running,
    TaskStatus::Paused,
];

/// Most VPSes a list returns (they are few; the original has no paging here).
const LIST_LIMIT: u32 = 10_000;

/// Loads a VPS (a task of another kind is "not found").
pub async fn load(state: &AppState, id: TaskId) -> Result<Task, VpsError> {
    let t = state
        .db
        .read(move |c| task_store::get(c, id))
        .await?
        .ok_or(VpsError::NotFound)?;
    if t.definition.kind() != TaskKind::Vps {
        return Err(VpsError::NotFound);
    }
    Ok(t)
}

/// Whether `caller` may reach `t` (its owner, an operator, or a user assigned to it).
pub async fn may_reach(state: &AppState, caller: &Caller, t: &Task) -> Result<bool, StoreError> {
    if caller.may_touch(t.owner_id) {
        return Ok(true);
    }
    let (Some(user), TaskKind::Vps) = (caller.user_id, t.definition.kind()) else {
        return Ok(false);
    };
    let id = t.id;
    state
        .db
        .read(move |c| vps_store::is_assigned(c, id, user))
        .await
}

/// A VPS the caller may reach.
pub async fn load_reachable(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<Task, VpsError> {
    let t = load(state, id).await?;
    if may_reach(state, caller, &t).await? {
        Ok(t)
    } else {
        Err(VpsError::Forbidden)
    }
}

/// A VPS its owner or an operator acts on (stop, restart).
pub async fn load_owned(state: &AppState, caller: &Caller, id: TaskId) -> Result<Task, VpsError> {
    let t = load(state, id).await?;
    if caller.may_touch(t.owner_id) {
        Ok(t)
    } else {
        Err(VpsError::Forbidden)
    }
}

/// Which VPSes a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `/api/vps`: every VPS (a `user`: their own and those assigned to them).
    All,
    /// `/api/vps/status`: the active ones.
    Active,
    /// `/api/vps/my`: the caller's own and those assigned to them.
    Mine,
}

/// A VPS list, newest first, with assignees (one query for all of them).
pub async fn list(
    state: &AppState,
    caller: &Caller,
    which: Which,
) -> Result<Vec<VpsItem>, VpsError> {
    let filter = ListFilter {
        task_type: Some(TaskKind::Vps),
        limit: LIST_LIMIT,
        ..Default::default()
    };
    let user = caller.user_id;
    let (rows, mine) = state
        .db
        .read(move |c| {
            let rows = task_store::list(c, &filter)?;
            let mine = match user {
                Some(u) => vps_store::assigned_to(c, u)?,
                None => Vec::new(),
            };
            Ok((rows, mine))
        })
        .await?;
    let only_own = which == Which::Mine || caller.role == Role::User;
    let rows: Vec<Task> = rows
        .into_iter()
        .filter(|t| which != Which::Active || ACTIVE.contains(&t.status))
        .filter(|t| {
            !only_own
                || (t.owner_id.is_some() && t.owner_id == caller.user_id)
                || mine.contains(&t.id)
        })
        .collect();
    let ids: Vec<TaskId> = rows.iter().map(|t| t.id).collect();
    let assignees = state
        .db
        .read(move |c| vps_store::assignees(c, &ids))
        .await?;
    let view = state.scheduler.view();
    let full = which == Which::All;
    Ok(rows
        .iter()
        .map(|t| item(t, &assignees, view.queue.get(&t.id).copied(), full))
        .collect())
}

fn item(
    t: &Task,
    assignees: &HashMap<TaskId, Vec<Assignee>>,
    queue_position: Option<u64>,
    full: bool,
) -> VpsItem {
    let d = &t.definition;
    let vps = d.spec.as_vps();
    VpsItem {
        task_id: t.id,
        name: t.name.clone(),
        owner_id: t.owner_id,
        owner_username: t.owner_username.clone(),
        assignees: assignees
            .get(&t.id)
            .into_iter()
            .flatten()
            .map(|a| VpsAssignee {
                id: a.user_id,
                username: a.username.clone(),
                display_name: a.display_name.clone(),
            })
            .collect(),
        required_cores: d.resources.required_cores,
        required_gpus: d.resources.required_gpus.clone(),
        required_memory_bytes: d.resources.required_memory_bytes,
        status: t.status,
        assigned_node: t.assigned_node.clone().or(t.target_node.clone()),
        target_numa_node_id: d.resources.target_numa_node_id,
        container_name: d.image.container_name.clone(),
        ssh_port: t.ssh_port,
        vps_backend: vps.map_or(VpsBackend::Docker, |v| v.vps_backend),
        vm_image: vps.and_then(|v| v.vm_image.clone()),
        vm_ip: t.vm_ip.clone(),
        exit_code: if full { t.exit_code } else { None },
        error_message: if full { t.error_message.clone() } else { None },
        submitted_at: Some(format_ms(t.submitted_at)),
        started_at: t.started_at.map(format_ms),
        completed_at: if full {
            t.completed_at.map(format_ms)
        } else {
            None
        },
        queue_position,
    }
}

/// Assigns users to a VPS (operators).
pub async fn assign(
    state: &AppState,
    id: TaskId,
    users: Vec<i64>,
) -> Result<AssignResponse, VpsError> {
    load(state, id).await?;
    let sent = users.clone();
    let now = ferry_common::time::now_ms();
    state
        .db
        .write(move |c| match vps_store::assign(c, id, &users, now) {
            Ok(n) => Ok(Ok(n)),
            Err(AssignError::NoSuchUser(u)) => Ok(Err(u)),
            Err(AssignError::Store(e)) => Err(e),
        })
        .await?
        .map_err(|u| VpsError::NotFoundOther(format!("User {u} not found.")))?;
    Ok(AssignResponse {
        message: format!("VPS {id} assigned to {} user(s).", sent.len()),
        task_id: id.0,
        assigned_users: sent,
    })
}

pub async fn unassign(state: &AppState, id: TaskId, user: i64) -> Result<String, VpsError> {
    load(state, id).await?;
    let removed = state
        .db
        .write(move |c| vps_store::unassign(c, id, user))
        .await?;
    if removed {
        Ok(format!("User {user} unassigned from VPS {id}."))
    } else {
        Err(VpsError::NotFoundOther(format!(
            "User {user} is not assigned to VPS {id}."
        )))
    }
}

pub async fn assignments(state: &AppState, id: TaskId) -> Result<AssignmentsResponse, VpsError> {
    load(state, id).await?;
    let mut all = state
        .db
        .read(move |c| vps_store::assignees(c, &[id]))
        .await?;
    Ok(AssignmentsResponse {
        task_id: id.0,
        assignments: all
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|a| Assignment {
                user_id: a.user_id,
                username: a.username,
                display_name: a.display_name,
                assigned_at: format_ms(a.assigned_at),
            })
            .collect(),
    })
}
