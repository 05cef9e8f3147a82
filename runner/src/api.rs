//! The routes the host calls on this runner; all but `/health` and `/ready` need the cluster
//! secret. Handlers only parse and hand over to the supervisor.

use crate::supervisor::SupervisorError;
use crate::RunnerState;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_common::runner_proto::{ControlRequest, ExecuteRequest, LogQuery};
use ferry_common::{ErrorBody, TaskId};
use serde_json::{json, Value};

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.0, Json(ErrorBody::new(self.1))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        let status = match e {
            SupervisorError::Unknown(_) => StatusCode::NOT_FOUND,
            SupervisorError::WrongState(..) | SupervisorError::OlderAttempt { .. } => {
                StatusCode::CONFLICT
            }
            // Retryable: the host's dispatch loop sends it again.
            SupervisorError::PreviousAttemptEnding { .. } => StatusCode::SERVICE_UNAVAILABLE,
            SupervisorError::BadOwner(_) => StatusCode::UNPROCESSABLE_ENTITY,
            SupervisorError::Workload(_) | SupervisorError::Io(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

/// A JSON body; a malformed one is a 422 naming the field.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(e.status(), e.body_text()))?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(Body).map_err(|e| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{}: {}", e.path(), e.inner()),
            )
        })
    }
}

async fn require_secret(
    State(state): State<RunnerState>,
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
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "runner API needs the cluster secret (Authorization: Bearer <cluster_secret>)".into(),
        ))
    }
}

pub fn router(state: RunnerState) -> Router {
    let secured = Router::new()
        .route("/api/execute", post(execute))
        .route("/api/kill", post(kill))
        .route("/api/pause", post(pause))
        .route("/api/resume", post(resume))
        .route("/api/tasks/{task_id}/{stream}", get(logs))
        .route("/ws/task/{task_id}/terminal", get(terminal))
        .route("/ws/fs/{task_id}/watch", get(watch))
        .route("/ws/forward/{task_id}/{port}", get(forward))
        .route("/api/fs/{task_id}/list", get(crate::api_files::op))
        .route("/api/fs/{task_id}/read", get(crate::api_files::op))
        .route("/api/fs/{task_id}/stat", get(crate::api_files::op))
        .route(
            "/api/fs/{task_id}/delete",
            axum::routing::delete(crate::api_files::op),
        )
        .route(
            "/api/fs/{task_id}/write",
            post(crate::api_files::op).layer(axum::extract::DefaultBodyLimit::max(
                crate::api_files::MAX_WRITE_BODY,
            )),
        )
        .route("/api/fs/{task_id}/mkdir", post(crate::api_files::op))
        .route("/api/fs/{task_id}/rename", post(crate::api_files::op))
        .route("/api/vps/stop/{task_id}", post(vps_stop))
        .route("/api/vps/pause/{task_id}", post(vps_pause))
        .route("/api/vps/resume/{task_id}", post(vps_resume))
        .route(
            "/api/vps/snapshots/{task_id}",
            get(snapshots_list)
                .post(snapshot_create)
                .delete(snapshots_delete_all),
        )
        .route("/api/vps/snapshots/{task_id}/latest", get(snapshot_latest))
        .route(
            "/api/vps/snapshots/{task_id}/{timestamp}",
            axum::routing::delete(snapshot_delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_secret,
        ));
    Router::new()
        .merge(secured)
        .route(
            "/health",
            get(|| async { Json(json!({"status": "ok", "version": ferry_common::VERSION})) }),
        )
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "Not Found".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into())
        })
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Prometheus text: this runner's tasks by phase and its undelivered reports.
async fn metrics(State(state): State<RunnerState>) -> impl IntoResponse {
    let (live, paused) = state.supervisor.live_tasks();
    let known = state.supervisor.known_tasks().len();
    let body = format!(
        "# HELP ferry_runner_tasks Tasks held by this runner.\n# TYPE ferry_runner_tasks gauge\n\
         ferry_runner_tasks{{phase=\"running\"}} {}\nferry_runner_tasks{{phase=\"paused\"}} {}\n\
         ferry_runner_tasks{{phase=\"other\"}} {}\n\
         # HELP ferry_runner_outbox_pending Status reports not yet acknowledged by the host.\n\
         # TYPE ferry_runner_outbox_pending gauge\nferry_runner_outbox_pending {}\n\
         # HELP ferry_runner_registered Whether the runner is registered with the host.\n\
         # TYPE ferry_runner_registered gauge\nferry_runner_registered {}\n",
        live.len() - paused.len(),
        paused.len(),
        known.saturating_sub(live.len()),
        state.outbox.len(),
        u8::from(state.link.is_registered()),
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

async fn ready(State(state): State<RunnerState>) -> Result<Json<Value>, ApiError> {
    if let Some(why) = state.outbox.unwritable() {
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, why));
    }
    state
        .supervisor
        .engine()
        .ping()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if !state.link.is_registered() {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered with the host yet".into(),
        ));
    }
    Ok(Json(json!({"status": "ready"})))
}

async fn execute(
    State(state): State<RunnerState>,
    Body(req): Body<ExecuteRequest>,
) -> Result<Json<Value>, ApiError> {
    check_definition(&req).map_err(|why| ApiError(StatusCode::UNPROCESSABLE_ENTITY, why))?;
    let id = req.task_id;
    let owner = req.owner.clone();
    state.supervisor.execute(req, owner).await?;
    Ok(Json(
        json!({"message": "Task accepted for launch", "task_id": id}),
    ))
}

/// What this runner can run: a command with a command line, or a Docker VPS whose SSH mode
/// has the key it needs.
fn check_definition(req: &ExecuteRequest) -> Result<(), String> {
    use ferry_common::task::{SshKeyMode, TaskSpec, VpsBackend};
    match &req.definition.spec {
        TaskSpec::Command(cmd) if cmd.command.trim().is_empty() => {
            Err("command: must not be empty".into())
        }
        TaskSpec::Command(_) => Ok(()),
        TaskSpec::Vps(v) if v.vps_backend == VpsBackend::Qemu => {
            Err("vps_backend: QEMU VPSes are not available on this runner yet".into())
        }
        TaskSpec::Vps(v) => match (v.ssh_key_mode, &v.ssh_public_key) {
            (SshKeyMode::Upload | SshKeyMode::Generate, None) => {
                Err("ssh_public_key: required for this ssh_key_mode".into())
            }
            (SshKeyMode::Upload | SshKeyMode::Generate, Some(key)) => {
                ferry_common::ssh::check_public_key(key)
                    .map(|_| ())
                    .map_err(|e| format!("ssh_public_key: {e}"))
            }
            _ => Ok(()),
        },
    }
}

/// A terminal in a running task's container (the host relays the user's socket here).
async fn terminal(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, ApiError> {
    use ferry_access::terminal;
    let id = task_id_of(&task_id)?;
    let target = state.supervisor.running_container(id);
    Ok(ws.on_upgrade(move |socket| async move {
        match target {
            Ok(container) => {
                let engine = state.supervisor.engine();
                let open: terminal::Opener<'_, _> = Box::new(|rows, cols| {
                    engine.open_tty(&container, terminal::SHELLS, rows, cols)
                });
                terminal::serve(socket, open).await;
            }
            Err(why) => {
                terminal::refuse(socket, terminal::CLOSE_POLICY, &format!("task {id} {why}")).await;
            }
        }
    }))
}

#[derive(serde::Deserialize)]
struct WatchQuery {
    paths: Option<String>,
}

/// Changes in a running task's directories (the host relays the user's socket here).
async fn watch(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    Query(q): Query<WatchQuery>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, ApiError> {
    use ferry_access::{fs::Root, watch};
    let id = task_id_of(&task_id)?;
    let paths = q
        .paths
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| watch::DEFAULT_PATHS.to_string());
    let root = match state.supervisor.running_container(id) {
        Ok(container) => match state.supervisor.engine().fs_root(&container).await {
            Ok((dir, _)) => Root::open(&dir).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(why) => Err(format!("task {id} {why}")),
    };
    Ok(ws.on_upgrade(move |mut socket| async move {
        match root {
            Ok(root) => watch::serve(socket, root, &paths).await,
            Err(why) => {
                let frame = serde_json::json!({"type": "error", "message": why}).to_string();
                let _ = socket
                    .send(axum::extract::ws::Message::Text(frame.into()))
                    .await;
                let _ = socket.send(axum::extract::ws::Message::Close(None)).await;
            }
        }
    }))
}

#[derive(serde::Deserialize)]
struct ForwardQuery {
    proto: Option<String>,
    /// `credit`: Ferry's per-stream flow control.
    flow: Option<String>,
}

/// Streams to a port of a running task's container (the host relays the user's socket here).
async fn forward(
    State(state): State<RunnerState>,
    Path((task_id, port)): Path<(String, String)>,
    Query(q): Query<ForwardQuery>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, ApiError> {
    use ferry_access::forward;
    let id = task_id_of(&task_id)?;
    let port: u16 = port
        .parse()
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("port: {e}")))?;
    // Each CONNECT frame carries its stream's protocol; `proto` is the client's default only.
    let _ = q.proto;
    let credit = q.flow.as_deref() == Some("credit");
    let netns = match state.supervisor.running_container(id) {
        Ok(container) => state
            .supervisor
            .engine()
            .net_namespace(&container)
            .await
            .map_err(|e| e.to_string()),
        Err(why) => Err(format!("task {id} {why}")),
    };
    Ok(ws.on_upgrade(move |mut socket| async move {
        match netns {
            Ok(ns) => forward::serve(socket, ns, port, credit).await,
            Err(why) => {
                let _ = socket
                    .send(axum::extract::ws::Message::Text(
                        format!("Error: {why}").into(),
                    ))
                    .await;
                let _ = socket
                    .send(axum::extract::ws::Message::Close(Some(
                        axum::extract::ws::CloseFrame {
                            code: 1011,
                            reason: "".into(),
                        },
                    )))
                    .await;
            }
        }
    }))
}

fn task_id_of(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("task_id: {e}")))
}

async fn vps_stop(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id_of(&task_id)?;
    state.supervisor.stop(id).await?;
    Ok(Json(json!({"message": format!("VPS {id} stopped.")})))
}

async fn vps_pause(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id_of(&task_id)?;
    state.supervisor.pause(id, true).await?;
    Ok(Json(json!({"message": format!("VPS {id} paused.")})))
}

async fn vps_resume(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id_of(&task_id)?;
    state.supervisor.pause(id, false).await?;
    Ok(Json(json!({"message": format!("VPS {id} resumed.")})))
}

async fn snapshots_list(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id_of(&task_id)?;
    let list = state.supervisor.list_snapshots(id).await?;
    Ok(Json(
        json!({"task_id": id, "count": list.len(), "snapshots": list}),
    ))
}

/// Longest snapshot message kept (it becomes the image's comment).
const MAX_SNAPSHOT_MESSAGE: usize = 4096;

#[derive(serde::Deserialize, Default)]
struct SnapshotBody {
    #[serde(default)]
    message: Option<String>,
}

async fn snapshot_create(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = task_id_of(&task_id)?;
    let body: SnapshotBody = if body.iter().all(u8::is_ascii_whitespace) {
        SnapshotBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("body: {e}")))?
    };
    if let Some(m) = &body.message {
        if m.len() > MAX_SNAPSHOT_MESSAGE || m.contains('\0') {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("message: at most {MAX_SNAPSHOT_MESSAGE} bytes, no NUL characters"),
            ));
        }
    }
    let tag = state
        .supervisor
        .snapshot(id, body.message.as_deref())
        .await?;
    Ok(Json(
        json!({"message": format!("Snapshot of VPS {id} created."), "tag": tag}),
    ))
}

async fn snapshot_latest(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id_of(&task_id)?;
    let list = state.supervisor.list_snapshots(id).await?;
    match list.into_iter().next() {
        Some(s) => Ok(Json(json!({"task_id": id, "tag": s.tag}))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("VPS {id} has no snapshots on this node."),
        )),
    }
}

async fn snapshot_delete(
    State(state): State<RunnerState>,
    Path((task_id, timestamp)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id_of(&task_id)?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("timestamp: {e}")))?;
    if state.supervisor.delete_snapshot(id, ts).await? {
        Ok(Json(
            json!({"message": format!("Snapshot {ts} of VPS {id} deleted.")}),
        ))
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("VPS {id} has no snapshot {ts} on this node."),
        ))
    }
}

async fn snapshots_delete_all(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = task_id_of(&task_id)?;
    let n = state.supervisor.delete_all_snapshots(id).await?;
    Ok(Json(
        json!({"message": format!("{n} snapshot(s) of VPS {id} deleted."), "deleted_count": n}),
    ))
}

async fn kill(
    State(state): State<RunnerState>,
    Body(req): Body<ControlRequest>,
) -> Result<Json<Value>, ApiError> {
    let code = state.supervisor.kill(req.task_id).await?;
    Ok(Json(
        json!({"message": format!("Task {} killed.", req.task_id), "exit_code": code}),
    ))
}

async fn pause(
    State(state): State<RunnerState>,
    Body(req): Body<ControlRequest>,
) -> Result<Json<Value>, ApiError> {
    state.supervisor.pause(req.task_id, true).await?;
    Ok(Json(
        json!({"message": format!("Task {} paused.", req.task_id)}),
    ))
}

async fn resume(
    State(state): State<RunnerState>,
    Body(req): Body<ControlRequest>,
) -> Result<Json<Value>, ApiError> {
    state.supervisor.pause(req.task_id, false).await?;
    Ok(Json(
        json!({"message": format!("Task {} resumed.", req.task_id)}),
    ))
}

/// A log followed until the task's output is complete.
fn follow_log(state: &RunnerState, id: TaskId, path: std::path::PathBuf, q: &LogQuery) -> Response {
    let sup = state.supervisor.clone();
    let run = q.attempt.unwrap_or(1);
    let ended: ferry_access::follow::Ended = Box::new(move || {
        let done = sup.output_complete(id, run);
        Box::pin(async move { done })
    });
    let body = match q.offset {
        // Resuming: everything from that byte on.
        Some(offset) => {
            axum::body::Body::from_stream(ferry_access::follow::follow_from(path, offset, ended))
        }
        None => axum::body::Body::from_stream(ferry_access::follow::follow(
            path,
            q.lines,
            16 * 1024 * 1024,
            ended,
        )),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn logs(
    State(state): State<RunnerState>,
    Path((task_id, stream)): Path<(String, String)>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("query: {}", e.body_text()),
        )
    })?;
    let id: TaskId = task_id
        .parse()
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("task_id: {e}")))?;
    if stream != "stdout" && stream != "stderr" {
        return Err(ApiError(StatusCode::NOT_FOUND, "Not Found".into()));
    }
    let run = match q.attempt {
        Some(0) => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "attempt: must be at least 1".into(),
            ))
        }
        Some(n) => n,
        None => state.supervisor.latest_run(id),
    };
    let path = state
        .config
        .log_dir()
        .join(ferry_common::task::log_dir(id, run))
        .join(format!("{stream}.log"));
    let q = LogQuery {
        attempt: Some(run),
        ..q
    };
    if q.follow == Some(true) {
        return Ok(follow_log(&state, id, path, &q));
    }
    let text = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, String> {
        match std::fs::File::open(&path) {
            Ok(mut f) => ferry_common::logtail::tail(&mut f, q.lines, 16 * 1024 * 1024)
                .map(Some)
                .map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read log: {e}"),
        )
    })?;
    match text {
        Some(bytes) => Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            bytes,
        )
            .into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no {stream} log for task {id}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_execute_body_carries_an_optional_owner_beside_the_flat_request() {
        let parse = |v: Value| -> ExecuteRequest {
            let bytes = serde_json::to_vec(&v).unwrap();
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
                .unwrap()
        };
        let b = parse(json!({"task_id": 5, "command": "echo", "arguments": ["a"],
                             "required_cores": 2, "owner": "alice"}));
        assert_eq!(b.owner.as_deref(), Some("alice"));
        assert_eq!(b.task_id, TaskId(5));
        assert_eq!(b.definition.resources.required_cores, 2);
        let cmd = b.definition.spec.as_command().unwrap();
        assert_eq!((cmd.command.as_str(), cmd.arguments.len()), ("echo", 1));
        // What hosts without the field send.
        let b = parse(json!({"task_id": 6, "command": "true"}));
        assert_eq!(b.owner, None);
        assert_eq!(b.task_id, TaskId(6));
    }
}
