//! `GET /api/nodes` and `GET /api/health`.

use super::error::{ApiError, ApiQuery};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use ferry_common::api::{HealthResponse, NodeInfo};
use serde::Deserialize;

pub async fn list(State(state): State<AppState>) -> Json<Vec<NodeInfo>> {
    let view = state.scheduler.view();
    Json(
        state
            .cluster
            .snapshot()
            .iter()
            .map(|n| crate::cluster::view::node(n, &view))
            .collect(),
    )
}

#[derive(Deserialize)]
pub struct HealthQuery {
    hostname: Option<String>,
}

pub async fn health(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<HealthQuery>,
) -> Result<Json<HealthResponse>, ApiError> {
    match q.hostname {
        None => Ok(Json(HealthResponse::History(state.health.all()))),
        Some(h) => {
            let node = state
                .cluster
                .snapshot()
                .into_iter()
                .find(|n| n.hostname == h)
                .ok_or_else(|| {
                    ApiError::not_found(format!("Node {h} not found in health data."))
                })?;
            Ok(Json(HealthResponse::Node(vec![
                crate::cluster::health::node_health(&node),
            ])))
        }
    }
}
