//! WebSocket routes: the caller is authenticated and authorised (route access, then
//! [`access::check_caller`]) before the upgrade; what can only be known later (the task is
//! not running, its node is down) is said in-band, as the original does, then the socket is
//! relayed to the task's runner.

use super::error::{ApiError, TaskIdPath};
use crate::auth::Caller;
use crate::relay::ws::{self as relay, ClientFrames};
use crate::tasks::access::{self, AccessError};
use crate::AppState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;

fn access_error(e: AccessError) -> ApiError {
    match e {
        AccessError::NotFound => ApiError::not_found(e.to_string()),
        AccessError::Forbidden => ApiError::forbidden(e.to_string()),
        AccessError::Store(e) => e.into(),
        other => ApiError::conflict(other.to_string()),
    }
}

/// The caller may go into task `id` (else the HTTP refusal, before any upgrade); whether it
/// can be reached now is said in-band after the upgrade.
async fn checked_target(
    state: &AppState,
    caller: &Caller,
    id: ferry_common::TaskId,
) -> Result<Result<access::Target, AccessError>, ApiError> {
    let task = access::check_caller(state, caller, id)
        .await
        .map_err(access_error)?;
    Ok(access::running_target(state, task))
}

/// The upgrade, with the relay's frame limits.
fn sized(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_frame_size(relay::MAX_FRAME)
        .max_message_size(relay::MAX_FRAME)
        .read_buffer_size(relay::READ_BUFFER)
        .write_buffer_size(relay::WRITE_BUFFER)
        .max_write_buffer_size(4 * relay::WRITE_BUFFER)
}

fn error_frame(text: &str) -> String {
    serde_json::json!({"type": "error", "data": text}).to_string()
}

/// `/ws/fs/{task_id}/watch?paths=...`: changes in the task's directories.
pub async fn watch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    uri: axum::http::Uri,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let task = access::check_reader(&state, &caller, id)
        .await
        .map_err(access_error)?;
    let target = access::running_target(&state, task);
    // The query goes on as the client encoded it (never re-spliced).
    let path = match uri.query() {
        Some(q) => format!("/ws/fs/{id}/watch?{q}"),
        None => format!("/ws/fs/{id}/watch"),
    };
    Ok(ws
        .max_frame_size(relay::MAX_FRAME)
        .on_upgrade(move |socket| async move {
            let message =
                |why: &str| serde_json::json!({"type": "error", "message": why}).to_string();
            let target = match target {
                Ok(t) => t,
                Err(e) => {
                    let why = e.to_string();
                    relay::close_with(socket, Some(message(&why)), 1008, &why).await;
                    return;
                }
            };
            match relay::dial(&target.runner_url, &path, &state.config.cluster_secret).await {
                Ok(upstream) => {
                    relay::relay(socket, upstream, ClientFrames::Any).await;
                }
                Err(why) => relay::close_with(socket, Some(message(&why)), 1011, &why).await,
            }
        }))
}

#[derive(serde::Deserialize)]
pub struct ForwardQuery {
    proto: Option<String>,
    /// `credit`: Ferry's per-stream flow control (WINDOW frames).
    flow: Option<String>,
}

/// `/ws/forward/{task_id}/{port}?proto=tcp|udp`: streams to a port of the task's container
/// (the original's tunnel frames, relayed unchanged; binary frames only from the client).
pub async fn forward(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    axum::extract::Path(params): axum::extract::Path<std::collections::HashMap<String, String>>,
    super::error::ApiQuery(q): super::error::ApiQuery<ForwardQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let port: u16 = params
        .get("port")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::unprocessable("port: must be 1 to 65535"))?;
    let proto = match q.proto.as_deref() {
        Some("udp") => "udp",
        _ => "tcp",
    };
    let credit = match q.flow.as_deref() {
        None | Some("") => false,
        Some("credit") => true,
        Some(other) => {
            return Err(ApiError::unprocessable(format!(
                "flow: only 'credit' is known, got {other:?}"
            )))
        }
    };
    let target = checked_target(&state, &caller, id).await?;
    Ok(sized(ws).on_upgrade(move |socket| async move {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message as Up;
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                let why = e.to_string();
                relay::close_with(socket, Some(format!("Error: {why}")), 1008, &why).await;
                return;
            }
        };
        let flow = if credit { "&flow=credit" } else { "" };
        let path = format!("/ws/forward/{id}/{port}?proto={proto}{flow}");
        let mut upstream =
            match relay::dial(&target.runner_url, &path, &state.config.cluster_secret).await {
                Ok(u) => u,
                Err(why) => {
                    let text = format!("Error: Failed to connect to runner: {why}");
                    relay::close_with(socket, Some(text), 1011, &why).await;
                    return;
                }
            };
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), upstream.next()).await;
        let mut socket = socket;
        match first {
            Ok(Some(Ok(Up::Text(t)))) if t.as_str() == "CONNECTED" => {
                use axum::extract::ws::Message;
                if socket
                    .send(Message::Text("CONNECTED".into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(Some(Ok(Up::Text(t)))) => {
                relay::close_with(socket, Some(t.as_str().to_string()), 1011, "runner refused")
                    .await;
                return;
            }
            Err(_) => {
                let text = "Error: Timeout connecting to container tunnel".to_string();
                relay::close_with(socket, Some(text), 1011, "timeout").await;
                return;
            }
            _ => {
                let text = "Error: the runner closed the tunnel".to_string();
                relay::close_with(socket, Some(text), 1011, "runner closed").await;
                return;
            }
        }
        crate::auth::service::audit(
            &state,
            Some(&caller),
            "forward.open",
            Some(format!("task {id}")),
            Some(format!("port {port}/{proto}")),
        )
        .await;
        let started = std::time::Instant::now();
        let ended = relay::relay(socket, upstream, ClientFrames::Binary).await;
        crate::auth::service::audit(
            &state,
            Some(&caller),
            "forward.close",
            Some(format!("task {id}")),
            Some(format!(
                "port {port}/{proto}, {} ms, {ended}",
                started.elapsed().as_millis()
            )),
        )
        .await;
    }))
}

/// `/ws/task/{task_id}/terminal`: a shell in the task's container.
pub async fn terminal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    TaskIdPath(id): TaskIdPath,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let target = checked_target(&state, &caller, id).await?;
    Ok(sized(ws).on_upgrade(move |socket| async move {
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                let code = match e {
                    AccessError::NodeDown(_) => 1011,
                    _ => 1008,
                };
                let why = e.to_string();
                relay::close_with(socket, Some(error_frame(&why)), code, &why).await;
                return;
            }
        };
        let path = format!("/ws/task/{id}/terminal");
        let upstream =
            match relay::dial(&target.runner_url, &path, &state.config.cluster_secret).await {
                Ok(u) => u,
                Err(why) => {
                    relay::close_with(socket, Some(error_frame(&why)), 1011, &why).await;
                    return;
                }
            };
        crate::auth::service::audit(
            &state,
            Some(&caller),
            "terminal.open",
            Some(format!("task {id}")),
            None,
        )
        .await;
        let started = std::time::Instant::now();
        let ended = relay::relay(socket, upstream, ClientFrames::Text).await;
        crate::auth::service::audit(
            &state,
            Some(&caller),
            "terminal.close",
            Some(format!("task {id}")),
            Some(format!("{} ms, {ended}", started.elapsed().as_millis())),
        )
        .await;
    }))
}
