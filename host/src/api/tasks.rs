//! Submission, queries, logs and control of tasks.

use super::error::{ApiError, ApiJson, ApiQuery, TaskIdPath};
use crate::auth::{Caller, Role};
use crate::control::{self, ControlError};
use crate::logs::{self, LogError};
use crate::scheduler::{Placement, SubmitError};
use crate::store::tasks::{self as store_tasks, ListFilter};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use ferry_common::api::{NodeRef, QueuedTask, SubmitRequest, SubmitResponse, TaskResponse};
use ferry_common::TaskStatus;
use serde::Deserialize;
use serde_json::json;

pub async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let rows = crate::submit::build(
        req,
        &state.config.default_container_name,
        ferry_common::time::now_ms(),
        || state.ids.next(),
    )
    .map_err(|e| ApiError::bad_request(e.0))?;
    let mut rows = rows;
    let needs_approval = crate::submit::stamp_submitter(
        &mut rows,
        caller.user_id,
        state.config.auth_enabled && caller.role == Role::User,
        state.config.auth_enabled,
        ferry_common::time::now_ms(),
    );
    let targets: Vec<Option<String>> = rows.iter().map(|r| r.target_node.clone()).collect();
    let placements = state.scheduler.submit(rows).await.map_err(|e| match e {
        SubmitError::UnknownNode(n) => {
            ApiError::bad_request(format!("targets: node '{n}' is not registered"))
        }
        SubmitError::NeverFits(why) => ApiError::bad_request(why),
        SubmitError::NoNodes => {
            ApiError::bad_request("no node is registered yet: start a ferry-runner first")
        }
        SubmitError::Store(e) => e.into(),
        SubmitError::Stopped => ApiError::unavailable("scheduler is not running"),
    })?;
    let n = placements.len();
    let task_ids = placements
        .iter()
        .map(|p| match p {
            Placement::Placed { id, .. }
            | Placement::Queued { id, .. }
            | Placement::AwaitingApproval { id } => *id,
        })
        .collect();
    let queued = placements
        .iter()
        .filter_map(|p| match p {
            Placement::Queued { id, position } => Some(QueuedTask {
                task_id: *id,
                queue_position: *position,
            }),
            Placement::Placed { .. } | Placement::AwaitingApproval { .. } => None,
        })
        .collect::<Vec<_>>();
    let last_node = match placements.last() {
        Some(Placement::Placed { node, .. }) => Some(node.clone()),
        _ => targets.last().cloned().flatten(),
    };
    let assigned_node = last_node.and_then(|h| {
        state
            .cluster
            .url_of(&h)
            .map(|url| NodeRef { hostname: h, url })
    });
    let message = if needs_approval {
        format!("Task batch submitted. {n} tasks created, awaiting approval by an operator.")
    } else if queued.is_empty() {
        format!("Task batch submitted successfully. {n} tasks created.")
    } else {
        format!(
            "Task batch submitted successfully. {n} tasks created, {} waiting for resources.",
            queued.len()
        )
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(SubmitResponse {
            message,
            task_ids,
            assigned_node,
            runner_response: if needs_approval {
                json!({"status": "pending_approval"})
            } else {
                json!(true)
            },
            queued,
        }),
    ))
}

/// Users see their own tasks; viewers (read-only observers) and operators see all.
fn may_read(caller: &Caller, owner: Option<i64>) -> bool {
    caller.role != Role::User || caller.may_touch(owner)
}

pub async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<TaskResponse>, ApiError> {
    let row = state
        .db
        .read(move |c| store_tasks::get(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found("Task not found."))?;
    if !may_read(&caller, row.owner_id) {
        return Err(ApiError::forbidden("Access denied to this task"));
    }
    let shown = crate::views::task(
        &row,
        &state.scheduler.view(),
        state.config.shared_dir.as_deref(),
    );
    Ok(Json(shown_to(&caller, &row, shown)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    task_type: Option<String>,
    node: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Most rows one page may hold (the original CLI asks for 10000).
const MAX_LIMIT: i64 = 10_000;

/// Validated `limit` (default 100) and `offset` (default 0).
pub fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(u32, u32), ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::unprocessable(format!(
            "limit: must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 || offset > u32::MAX as i64 {
        return Err(ApiError::unprocessable(format!(
            "offset: must be 0 or more, got {offset}"
        )));
    }
    Ok((limit as u32, offset as u32))
}

fn filter(q: ListQuery, owner: Option<i64>) -> Result<ListFilter, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<TaskStatus>()
                .map_err(|e| ApiError::unprocessable(format!("status: {e}")))?,
        ),
    };
    let (limit, offset) = page(q.limit, q.offset)?;
    let task_type = match q.task_type.as_deref().filter(|s| !s.is_empty()) {
        None => Some("command".to_string()),
        Some(t @ ("command" | "vps")) => Some(t.to_string()),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "task_type: must be command, vps or all, got {other:?}"
            )))
        }
    };
    Ok(ListFilter {
        status,
        task_type,
        node: q.node.filter(|n| !n.is_empty()),
        owner,
        limit,
        offset,
    })
}

async fn list_with(
    state: AppState,
    caller: &Caller,
    f: ListFilter,
) -> Result<Json<Vec<TaskResponse>>, ApiError> {
    let rows = state.db.read(move |c| store_tasks::list(c, &f)).await?;
    let view = state.scheduler.view();
    Ok(Json(
        rows.iter()
            .map(|r| {
                shown_to(
                    caller,
                    r,
                    crate::views::task(r, &view, state.config.shared_dir.as_deref()),
                )
            })
            .collect(),
    ))
}

/// Environment values often hold secrets: only the owner and operators see them; a viewer
/// observing someone else's task sees the names only.
fn shown_to(
    caller: &Caller,
    row: &crate::store::tasks::TaskRow,
    mut t: TaskResponse,
) -> TaskResponse {
    if !caller.may_touch(row.owner_id) {
        for v in t.env_vars.values_mut() {
            *v = "[hidden]".into();
        }
    }
    t
}

/// Newest first; a `user` sees only their own tasks.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<TaskResponse>>, ApiError> {
    let owner = if caller.role == Role::User {
        Some(caller.user_id.unwrap_or(-1))
    } else {
        None
    };
    list_with(state, &caller, filter(q, owner)?).await
}

pub async fn list_mine(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<TaskResponse>>, ApiError> {
    list_with(
        state,
        &caller,
        filter(q, Some(caller.user_id.unwrap_or(-1)))?,
    )
    .await
}

#[derive(Deserialize)]
pub struct LogParams {
    lines: Option<i64>,
}

async fn log_stream(
    state: AppState,
    caller: Caller,
    id: ferry_common::TaskId,
    stream: &'static str,
    lines: Option<i64>,
) -> Result<impl IntoResponse, ApiError> {
    let lines = match lines {
        None => None,
        Some(n) if n < 0 => {
            return Err(ApiError::unprocessable(format!(
                "lines: must be 0 or more, got {n}"
            )))
        }
        Some(n) => Some(n as usize),
    };
    let text = logs::read(&state, &caller, id, stream, lines)
        .await
        .map_err(|e| match e {
            LogError::NotFound => ApiError::not_found(e.to_string()),
            LogError::Forbidden => ApiError::forbidden(e.to_string()),
            LogError::Vps => ApiError::bad_request(e.to_string()),
            LogError::Unavailable(m) => ApiError::unavailable(m),
            LogError::Store(e) => e.into(),
        })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    ))
}

pub async fn stdout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    ApiQuery(q): ApiQuery<LogParams>,
) -> Result<impl IntoResponse, ApiError> {
    log_stream(state, caller, id, "stdout", q.lines).await
}

pub async fn stderr(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    ApiQuery(q): ApiQuery<LogParams>,
) -> Result<impl IntoResponse, ApiError> {
    log_stream(state, caller, id, "stderr", q.lines).await
}

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::NotFound => ApiError::not_found(e.to_string()),
        ControlError::Forbidden => ApiError::forbidden(e.to_string()),
        ControlError::Conflict(m) => ApiError::conflict(m),
        ControlError::Runner(m) => ApiError::bad_gateway(m),
        ControlError::Store(e) => e.into(),
    }
}

pub async fn kill(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<impl IntoResponse, ApiError> {
    control::kill(&state, &caller, id)
        .await
        .map_err(control_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"message": format!("Kill requested for task {id}. Task marked as killed.")})),
    ))
}

pub async fn command(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    Path((_, command)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pause = match command.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "command: must be 'pause' or 'resume', got {other:?}"
            )))
        }
    };
    control::pause_or_resume(&state, &caller, id, pause)
        .await
        .map_err(control_error)?;
    let (verb, done) = if pause {
        ("Pause", "Pause command sent successfully.")
    } else {
        ("Resume", "Resume command sent successfully.")
    };
    Ok(Json(
        json!({"message": format!("{verb} for task {id}: {done}")}),
    ))
}
