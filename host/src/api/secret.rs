//! Runner-facing routes accept only the cluster secret (`Authorization: Bearer <secret>`).

use super::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

pub async fn require_cluster_secret(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if ferry_common::secret::bearer_matches(header, &state.config.cluster_secret) {
        Ok(next.run(req).await)
    } else {
        Err(ApiError::unauthorized(
            "runner calls need the cluster secret (Authorization: Bearer <cluster_secret>)",
        ))
    }
}
