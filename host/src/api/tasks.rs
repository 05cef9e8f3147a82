//! Submission, queries, logs and control of tasks.

use super::error::{ApiError, ApiJson, ApiQuery, TaskIdPath};
use crate::auth::Caller;
use crate::scheduler::PlaceError;
use crate::store::tasks::ListFilter;
use crate::tasks::control::{self, ControlError};
use crate::tasks::logs::{self, LogError};
use crate::tasks::submit::{self, SubmitError};
use crate::tasks::views::{self, QueryError};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferry_common::api::{
    MessageResponse, SubmitRequest, SubmitResponse, TaskAttempts, TaskResponse, TaskTimeline,
};
use ferry_common::{TaskKind, TaskStatus};
use serde::Deserialize;

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Invalid(e) => ApiError::bad_request(e.0),
        SubmitError::Refused(PlaceError::Store(e)) => e.into(),
        SubmitError::Refused(PlaceError::Stopped) => {
            ApiError::unavailable("scheduler is not running")
        }
        SubmitError::Refused(e) => ApiError::bad_request(e.to_string()),
    }
}

pub async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let reply = submit::submit(&state, &caller, req)
        .await
        .map_err(submit_error)?;
    Ok((StatusCode::ACCEPTED, Json(reply)))
}

fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::NotFound => ApiError::not_found(e.to_string()),
        QueryError::Forbidden => ApiError::forbidden(e.to_string()),
        QueryError::Store(e) => e.into(),
    }
}

pub async fn status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<TaskResponse>, ApiError> {
    views::status(&state, &caller, id)
        .await
        .map(Json)
        .map_err(query_error)
}

/// `GET /api/tasks/{task_id}/events`.
pub async fn timeline(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<TaskTimeline>, ApiError> {
    views::timeline(&state, &caller, id)
        .await
        .map(Json)
        .map_err(query_error)
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

/// Response header saying a `limit` above [`MAX_LIMIT`] was lowered to it.
pub const LIMIT_CLAMPED: HeaderName = HeaderName::from_static("x-ferry-limit-clamped");

/// A validated page: `limit` (default 100; above [`MAX_LIMIT`] it is lowered, as the original
/// returns what it has) and `offset` (default 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
    /// The limit asked for, when it was lowered to the cap.
    pub clamped_from: Option<i64>,
}

impl Page {
    /// Adds the [`LIMIT_CLAMPED`] header (`<asked> -> <used>`) when the limit was lowered.
    pub fn mark<T: IntoResponse>(&self, body: T) -> Response {
        let mut resp = body.into_response();
        if let Some(asked) = self.clamped_from {
            if let Ok(v) = HeaderValue::from_str(&format!("{asked} -> {}", self.limit)) {
                resp.headers_mut().insert(LIMIT_CLAMPED, v);
            }
        }
        resp
    }
}

pub fn page(limit: Option<i64>, offset: Option<i64>) -> Result<Page, ApiError> {
    let asked = limit.unwrap_or(100);
    if asked < 1 {
        return Err(ApiError::unprocessable(format!(
            "limit: must be at least 1, got {asked}"
        )));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 || offset > u32::MAX as i64 {
        return Err(ApiError::unprocessable(format!(
            "offset: must be 0 or more, got {offset}"
        )));
    }
    Ok(Page {
        limit: asked.min(MAX_LIMIT) as u32,
        offset: offset as u32,
        clamped_from: (asked > MAX_LIMIT).then_some(asked),
    })
}

fn filter(q: ListQuery, owner: Option<i64>) -> Result<(ListFilter, Page), ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<TaskStatus>()
                .map_err(|e| ApiError::unprocessable(format!("status: {e}")))?,
        ),
    };
    let page = page(q.limit, q.offset)?;
    let task_type = match q.task_type.as_deref().filter(|s| !s.is_empty()) {
        None => Some(TaskKind::Command),
        Some("all") => None,
        Some(t) => Some(t.parse::<TaskKind>().map_err(|_| {
            ApiError::unprocessable(format!("task_type: must be command, vps or all, got {t:?}"))
        })?),
    };
    let filter = ListFilter {
        status,
        task_type,
        node: q.node.filter(|n| !n.is_empty()),
        owner,
        limit: page.limit,
        offset: page.offset,
    };
    Ok((filter, page))
}

/// Newest first; a `user` sees only their own tasks.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let (filter, page) = filter(q, None)?;
    let tasks = views::list(&state, &caller, filter).await?;
    Ok(page.mark(Json(tasks)))
}

pub async fn list_mine(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let (filter, page) = filter(q, Some(caller.user_id.unwrap_or(-1)))?;
    let tasks = views::list(&state, &caller, filter).await?;
    Ok(page.mark(Json(tasks)))
}

#[derive(Deserialize)]
pub struct LogParams {
    lines: Option<i64>,
    follow: Option<bool>,
    /// Which attempt's output (1 for the first run); default the current one.
    attempt: Option<i64>,
}

async fn log_stream(
    state: AppState,
    caller: Caller,
    id: ferry_common::TaskId,
    stream: &'static str,
    q: LogParams,
) -> Result<Response, ApiError> {
    let lines = match q.lines {
        None => None,
        Some(n) if n < 0 => {
            return Err(ApiError::unprocessable(format!(
                "lines: must be 0 or more, got {n}"
            )))
        }
        Some(n) => Some(n as usize),
    };
    let attempt = match q.attempt {
        None => None,
        Some(n) if !(1..=i64::from(u32::MAX)).contains(&n) => {
            return Err(ApiError::unprocessable(format!(
                "attempt: must be at least 1, got {n}"
            )))
        }
        Some(n) => Some(n as u32),
    };
    let log_error = |e: LogError| match e {
        LogError::NotFound | LogError::NoAttempt { .. } => ApiError::not_found(e.to_string()),
        LogError::Forbidden => ApiError::forbidden(e.to_string()),
        LogError::Vps => ApiError::bad_request(e.to_string()),
        LogError::Unavailable(m) => ApiError::unavailable(m),
        LogError::Busy => {
            let mut err = ApiError::unavailable(e.to_string());
            err.retry_after = Some(1);
            err
        }
        LogError::Store(e) => e.into(),
    };
    let kind = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; charset=utf-8",
    )];
    if q.follow == Some(true) {
        let body = logs::follow(&state, &caller, id, (stream, attempt), lines)
            .await
            .map_err(log_error)?;
        return Ok((kind, body).into_response());
    }
    let text = logs::read(&state, &caller, id, (stream, attempt), lines)
        .await
        .map_err(log_error)?;
    Ok((kind, text).into_response())
}

pub async fn stdout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    ApiQuery(q): ApiQuery<LogParams>,
) -> Result<impl IntoResponse, ApiError> {
    log_stream(state, caller, id, "stdout", q).await
}

pub async fn stderr(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    ApiQuery(q): ApiQuery<LogParams>,
) -> Result<impl IntoResponse, ApiError> {
    log_stream(state, caller, id, "stderr", q).await
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
) -> Result<(StatusCode, Json<MessageResponse>), ApiError> {
    control::kill(&state, &caller, id)
        .await
        .map_err(control_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageResponse {
            message: format!("Kill requested for task {id}. Task marked as killed."),
        }),
    ))
}

/// `POST /api/tasks/{task_id}/retry`: an ended task runs again as its next attempt.
pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<(StatusCode, Json<TaskResponse>), ApiError> {
    let t = control::retry(&state, &caller, id)
        .await
        .map_err(control_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(views::shown_to(&state, &caller, &t)),
    ))
}

/// `GET /api/tasks/{task_id}/attempts`.
pub async fn attempts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<TaskAttempts>, ApiError> {
    views::attempts(&state, &caller, id)
        .await
        .map(Json)
        .map_err(query_error)
}

pub async fn command(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    Path((_, command)): Path<(String, String)>,
) -> Result<Json<MessageResponse>, ApiError> {
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
    Ok(Json(MessageResponse {
        message: format!("{verb} for task {id}: {done}"),
    }))
}
