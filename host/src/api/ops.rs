//! `/health` (the process answers) and `/ready` (database and scheduler work).

use super::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": ferry_common::VERSION}))
}

pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state
        .db
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(format!("database not ready: {e}")))?;
    if !state.scheduler.is_running() {
        return Err(ApiError::unavailable("scheduler is not running"));
    }
    Ok(Json(json!({"status": "ready"})))
}
