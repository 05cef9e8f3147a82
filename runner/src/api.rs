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
    let Some(cmd) = req.definition.spec.as_command() else {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "task_type: this runner runs only command tasks through execute".into(),
        ));
    };
    if cmd.command.trim().is_empty() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "command: must not be empty".into(),
        ));
    }
    let id = req.task_id;
    let owner = req.owner.clone();
    state.supervisor.execute(req, owner).await?;
    Ok(Json(
        json!({"message": "Task accepted for launch", "task_id": id}),
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
    let path = state
        .config
        .log_dir()
        .join(id.to_string())
        .join(format!("{stream}.log"));
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
