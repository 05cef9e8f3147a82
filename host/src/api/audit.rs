//! `GET /api/audit`: the security log, newest first, paginated.

use super::error::{ApiError, ApiQuery};
use crate::auth::service;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use ferry_common::api::AuditPage;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<Page>,
) -> Result<Json<AuditPage>, ApiError> {
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
    let (items, total) = service::audit_page(&state, limit as u32, offset as u32).await?;
    Ok(Json(AuditPage {
        items,
        total,
        limit,
        offset,
    }))
}
