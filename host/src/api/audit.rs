//! `GET /api/audit`: the security log, newest first, paginated.

use super::error::{ApiError, ApiQuery};
use crate::store::auth as store;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use ferry_common::time::format_ms;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<Page>,
) -> Result<Json<Value>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    let offset = p.offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable(format!(
            "limit: must be between 1 and 1000, got {limit}"
        )));
    }
    if offset < 0 || offset > u32::MAX as i64 {
        return Err(ApiError::unprocessable(format!(
            "offset: must be 0 or more, got {offset}"
        )));
    }
    let (rows, total) = state
        .db
        .read(move |c| store::list_audit(c, limit as u32, offset as u32))
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|e| {
            json!({"id": e.id, "at": format_ms(e.at), "actor_id": e.actor_id, "actor": e.actor, "action": e.action,
                   "target": e.target, "detail": e.detail, "address": e.address})
        })
        .collect();
    Ok(Json(
        json!({"items": items, "total": total, "limit": limit, "offset": offset}),
    ))
}
