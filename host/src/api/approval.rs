//! Approval routes: list what waits, approve, reject.

use super::error::{ApiError, ApiQuery, TaskIdPath};
use crate::auth::Caller;
use crate::tasks::approval::{self, ApprovalError};
use crate::tasks::views;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Json};
use ferry_common::api::{RejectRequest, RejectResponse, TaskMessage, TaskResponse};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

pub async fn pending(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(p): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    let page = super::tasks::page(p.limit, p.offset)?;
    let rows = approval::pending(&state, page.limit, page.offset).await?;
    let shown: Vec<TaskResponse> = rows
        .iter()
        .map(|t| views::shown_to(&state, &caller, t))
        .collect();
    Ok(page.mark(Json(shown)))
}

fn approval_error(e: ApprovalError) -> ApiError {
    match e {
        ApprovalError::NotFound => ApiError::not_found(e.to_string()),
        ApprovalError::NotWaiting(_) | ApprovalError::Changed(_) => {
            ApiError::conflict(e.to_string())
        }
        ApprovalError::ReasonTooLong => ApiError::unprocessable(e.to_string()),
        ApprovalError::Store(e) => e.into(),
    }
}

pub async fn approve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<TaskMessage>, ApiError> {
    approval::approve(&state, &caller, id)
        .await
        .map_err(approval_error)?;
    Ok(Json(TaskMessage {
        message: "Task approved and queued".into(),
        task_id: id,
    }))
}

#[derive(Deserialize, Default)]
pub struct ReasonQuery {
    reason: Option<String>,
}

/// The reason may come as `?reason=` (as the original) or as a JSON body `{"reason": ...}`.
pub async fn reject(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    ApiQuery(q): ApiQuery<ReasonQuery>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Json<RejectResponse>, ApiError> {
    let from_body = if body.is_empty() {
        None
    } else {
        super::error::require_json(&headers)?;
        serde_json::from_slice::<RejectRequest>(&body)
            .map_err(|e| ApiError::unprocessable(format!("reason: {e}")))?
            .reason
    };
    let reason = from_body.or(q.reason).filter(|r| !r.trim().is_empty());
    approval::reject(&state, &caller, id, reason.clone())
        .await
        .map_err(approval_error)?;
    Ok(Json(RejectResponse {
        message: "Task rejected".into(),
        task_id: id,
        reason,
    }))
}
