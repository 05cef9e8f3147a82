//! Approval routes: list what waits, approve, reject.

use super::error::{ApiError, ApiQuery, TaskIdPath};
use crate::auth::Caller;
use crate::store::tasks::{self as store_tasks, ListFilter};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use ferry_common::api::TaskResponse;
use ferry_common::TaskStatus;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

pub async fn pending(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<Page>,
) -> Result<Json<Vec<TaskResponse>>, ApiError> {
    let (limit, offset) = super::tasks::page(p.limit, p.offset)?;
    let filter = ListFilter {
        status: Some(TaskStatus::PendingApproval),
        limit,
        offset,
        ..Default::default()
    };
    let rows = state
        .db
        .read(move |c| store_tasks::list(c, &filter))
        .await?;
    let view = state.scheduler.view();
    Ok(Json(
        rows.iter()
            .map(|r| crate::views::task(r, &view, state.config.shared_dir.as_deref()))
            .collect(),
    ))
}

pub async fn approve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<Value>, ApiError> {
    crate::approval::approve(&state, &caller, id).await?;
    Ok(Json(
        json!({"message": "Task approved and queued", "task_id": id}),
    ))
}

#[derive(Deserialize, Default)]
pub struct ReasonQuery {
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct ReasonBody {
    reason: Option<String>,
}

/// The reason may come as `?reason=` (as the original) or as a JSON body `{"reason": ...}`.
pub async fn reject(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    ApiQuery(q): ApiQuery<ReasonQuery>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let from_body = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<ReasonBody>(&body)
            .map_err(|e| ApiError::unprocessable(format!("reason: {e}")))?
            .reason
    };
    let reason = from_body.or(q.reason).filter(|r| !r.trim().is_empty());
    crate::approval::reject(&state, &caller, id, reason.clone()).await?;
    Ok(Json(
        json!({"message": "Task rejected", "task_id": id, "reason": reason}),
    ))
}
