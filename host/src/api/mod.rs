//! The HTTP surface: one router, handlers grouped by endpoint family. Handlers only parse,
//! call a service and map its error.

pub mod error;
mod nodes;
mod ops;
mod runner;
mod secret;
mod tasks;

use crate::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use error::ApiError;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub fn router(state: AppState) -> Router {
    let runner_facing = Router::new()
        .route("/api/register", post(runner::register))
        .route("/api/heartbeat/{hostname}", put(runner::heartbeat))
        .route("/api/update", post(runner::update))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            secret::require_cluster_secret,
        ));

    let user_facing = Router::new()
        .route("/api/submit", post(tasks::submit))
        .route("/api/status/{task_id}", get(tasks::status))
        .route("/api/tasks", get(tasks::list))
        .route("/api/tasks/{task_id}/stdout", get(tasks::stdout))
        .route("/api/tasks/{task_id}/stderr", get(tasks::stderr))
        .route("/api/kill/{task_id}", post(tasks::kill))
        .route("/api/command/{task_id}/{command}", post(tasks::command))
        .route("/api/nodes", get(nodes::list))
        .route("/api/health", get(nodes::health));

    let ops = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready));

    let body_limit = state.config.max_body_bytes;
    Router::new()
        .merge(runner_facing)
        .merge(user_facing)
        .merge(ops)
        .fallback(|| async { ApiError::not_found("Not Found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
