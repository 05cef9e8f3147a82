//! `GET /api/nodes` and `GET /api/health`.

use super::error::{ApiError, ApiQuery};
use crate::AppState;
use axum::extract::State;
use axum::Json;
use ferry_common::api::NodeInfo;
use serde::Deserialize;
use serde_json::Value;

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
) -> Result<Json<Value>, ApiError> {
    match q.hostname {
        None => Ok(Json(state.health.all())),
        Some(h) => {
            let node = state
                .cluster
                .snapshot()
                .into_iter()
                .find(|n| n.hostname == h)
                .ok_or_else(|| {
                    ApiError::not_found(format!("Node {h} not found in health data."))
                })?;
            Ok(Json(Value::from(vec![
                crate::cluster::health::node_health(&node),
            ])))
        }
    }
}
