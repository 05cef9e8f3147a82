//! `/health` (the process answers), `/ready` (database and scheduler work) and `/metrics`
//! (Prometheus text: aggregate counts only, no names, so it can be scraped without a token).

use super::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use ferry_common::api::{ReadyResponse, StatusResponse};

pub async fn health() -> Json<StatusResponse> {
    Json(StatusResponse {
        status: "ok".into(),
        version: ferry_common::VERSION.into(),
    })
}

pub async fn ready(State(state): State<AppState>) -> Result<Json<ReadyResponse>, ApiError> {
    state
        .db
        .ping()
        .await
        .map_err(|e| ApiError::unavailable(format!("database not ready: {e}")))?;
    if let Some(why) = state.db.write_failure() {
        return Err(ApiError::unavailable(format!(
            "database writes are failing: {why}"
        )));
    }
    if !state.scheduler.is_running() {
        return Err(ApiError::unavailable("scheduler is not running"));
    }
    Ok(Json(ReadyResponse {
        status: "ready".into(),
    }))
}

/// Prometheus exposition of the cluster's shape: nodes, tasks by status, the queue, cores.
pub async fn metrics(
    State(state): State<AppState>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    use std::fmt::Write;
    let counts = state.db.read(crate::store::tasks::count_by_status).await?;
    let view = state.scheduler.view();
    let nodes = state.cluster.snapshot();
    let online = nodes.iter().filter(|n| n.online).count();
    let total_cores: u64 = nodes
        .iter()
        .filter(|n| n.online)
        .map(|n| u64::from(n.total_cores))
        .sum();
    let used_cores: u64 = view.usage.values().map(|u| u64::from(u.cores)).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ferry_nodes Registered nodes by liveness.\n# TYPE ferry_nodes gauge"
    );
    let _ = writeln!(out, "ferry_nodes{{status=\"online\"}} {online}");
    let _ = writeln!(
        out,
        "ferry_nodes{{status=\"offline\"}} {}",
        nodes.len() - online
    );
    let in_progress = state
        .config
        .max_user_requests
        .saturating_sub(state.user_slots.available_permits());
    let _ = writeln!(
        out,
        "# HELP ferry_user_requests_in_progress User requests being served (of max_user_requests).\n\
         # TYPE ferry_user_requests_in_progress gauge\nferry_user_requests_in_progress {in_progress}"
    );
    let reads = state
        .config
        .max_log_reads
        .saturating_sub(state.log_slots.available_permits());
    let _ = writeln!(
        out,
        "# HELP ferry_log_reads_in_progress Task output reads being served (of max_log_reads).\n\
         # TYPE ferry_log_reads_in_progress gauge\nferry_log_reads_in_progress {reads}"
    );
    let _ = writeln!(
        out,
        "# HELP ferry_tasks Tasks by status.\n# TYPE ferry_tasks gauge"
    );
    for status in ferry_common::TaskStatus::ALL {
        let n = counts
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        let _ = writeln!(out, "ferry_tasks{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP ferry_queue_length Tasks waiting for resources.\n# TYPE ferry_queue_length gauge"
    );
    let _ = writeln!(out, "ferry_queue_length {}", view.queue.len());
    let _ = writeln!(out, "# HELP ferry_cores Cores of online nodes, and cores booked by tasks.\n# TYPE ferry_cores gauge");
    let _ = writeln!(out, "ferry_cores{{kind=\"total\"}} {total_cores}");
    let _ = writeln!(out, "ferry_cores{{kind=\"booked\"}} {used_cores}");
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    ))
}
