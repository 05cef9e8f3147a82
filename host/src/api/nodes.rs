//! `GET /api/nodes`, `DELETE /api/nodes/{hostname}` and `GET /api/health`.

use super::error::{ApiError, ApiQuery};
use crate::AppState;
use axum::extract::{Path, State};
use axum::Extension;
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

/// Forgets a node and its runner credential, so the name can be registered afresh (a runner
/// that lost its data dir, or a replaced machine). Its tasks become `lost`, as on a node
/// gone offline.
pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<crate::auth::Caller>,
    Path(hostname): Path<String>,
) -> Result<Json<ferry_common::api::MessageResponse>, ApiError> {
    state.cluster.remove(&hostname).await.map_err(|e| match e {
        crate::cluster::ClusterError::UnknownNode(_) => {
            ApiError::not_found(format!("Node '{hostname}' is not registered"))
        }
        other => ApiError::internal(other.to_string()),
    })?;
    crate::auth::service::audit(
        &state,
        Some(&caller),
        "node.remove",
        Some(hostname.clone()),
        None,
    )
    .await;
    Ok(Json(ferry_common::api::MessageResponse {
        message: format!("Node {hostname} removed; a runner may register the name again"),
    }))
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
