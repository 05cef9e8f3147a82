//! The file routes the host relays (`/api/fs/{task_id}/<op>`): the task must be running
//! here; the work is done by [`ferry_access::fs`] in a blocking thread, on the container's
//! root as the node sees it.

use crate::RunnerState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use ferry_access::fs::{self, FsError, Owner, Root};
use ferry_common::{ErrorBody, TaskId};
use serde::Deserialize;
use serde_json::Value;

pub use ferry_common::runner_proto::FS_MAX_WRITE_BODY as MAX_WRITE_BODY;

fn fail(status: u16, detail: String) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(ErrorBody::new(detail))).into_response()
}

fn fs_fail(e: FsError) -> Response {
    fail(e.status(), e.to_string())
}

/// Runs `op` on the running task's container root.
async fn on_root(
    state: &RunnerState,
    task_id: &str,
    op: impl FnOnce(&Root, Owner) -> Result<Value, FsError> + Send + 'static,
) -> Response {
    let Ok(id) = task_id.parse::<TaskId>() else {
        return fail(422, format!("task_id: not a task id: {task_id:?}"));
    };
    let container = match state.supervisor.running_container(id) {
        Ok(c) => c,
        Err("is not on this node") => return fail(404, format!("Task {id} not found.")),
        Err(why) => return fail(400, format!("Task {id} {why}.")),
    };
    let (dir, user) = match state.supervisor.engine().fs_root(&container).await {
        Ok(r) => r,
        Err(e) => return fail(400, format!("Task {id}: {e}")),
    };
    let done = tokio::task::spawn_blocking(move || {
        let root = Root::open(&dir)?;
        let owner = fs::owner_of(&root, &user);
        op(&root, owner)
    })
    .await;
    match done {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => fs_fail(e),
        Err(e) => fail(500, format!("file operation failed: {e}")),
    }
}

/// A JSON body, or the 422 detail naming what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("body: {e}"))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default = "root_path")]
    path: String,
    #[serde(default)]
    show_hidden: bool,
}

fn root_path() -> String {
    "/".into()
}

#[derive(Deserialize)]
pub struct PathQuery {
    path: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    recursive: bool,
}

pub async fn list(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    on_root(&state, &task_id, move |root, _| {
        fs::list(root, &q.path, q.show_hidden)
    })
    .await
}

pub async fn read(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Response {
    let encoding = q.encoding.unwrap_or_else(|| "utf-8".into());
    if encoding != "utf-8" && encoding != "base64" {
        return fail(
            422,
            format!("encoding: 'utf-8' or 'base64', got {encoding:?}"),
        );
    }
    let limit = q.limit.unwrap_or(fs::MAX_READ);
    on_root(&state, &task_id, move |root, _| {
        fs::read(root, &q.path, &encoding, limit)
    })
    .await
}

pub async fn stat(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Response {
    on_root(&state, &task_id, move |root, _| fs::stat(root, &q.path)).await
}

pub async fn delete(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Response {
    on_root(&state, &task_id, move |root, _| {
        fs::delete(root, &q.path, q.recursive)
    })
    .await
}

#[derive(Deserialize)]
struct WriteBody {
    path: String,
    content: String,
    #[serde(default = "utf8")]
    encoding: String,
    #[serde(default = "yes")]
    create_parents: bool,
}

fn utf8() -> String {
    "utf-8".into()
}

fn yes() -> bool {
    true
}

pub async fn write(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let b: WriteBody = match body(&bytes) {
        Ok(b) => b,
        Err(why) => return fail(422, why),
    };
    let content = match b.encoding.as_str() {
        "utf-8" => b.content.into_bytes(),
        "base64" => match base64::engine::general_purpose::STANDARD.decode(b.content.as_bytes()) {
            Ok(c) => c,
            Err(e) => return fail(400, format!("content: invalid base64: {e}")),
        },
        other => return fail(422, format!("encoding: 'utf-8' or 'base64', got {other:?}")),
    };
    if content.len() > fs::MAX_WRITE {
        return fs_fail(FsError::TooLarge);
    }
    on_root(&state, &task_id, move |root, owner| {
        fs::write(root, &b.path, &content, b.create_parents, owner)
    })
    .await
}

#[derive(Deserialize)]
struct MkdirBody {
    path: String,
    #[serde(default = "yes")]
    parents: bool,
}

pub async fn mkdir(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let b: MkdirBody = match body(&bytes) {
        Ok(b) => b,
        Err(why) => return fail(422, why),
    };
    on_root(&state, &task_id, move |root, owner| {
        fs::mkdir(root, &b.path, b.parents, owner)
    })
    .await
}

#[derive(Deserialize)]
struct RenameBody {
    source: String,
    destination: String,
    #[serde(default)]
    overwrite: bool,
}

pub async fn rename(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    bytes: axum::body::Bytes,
) -> Response {
    let b: RenameBody = match body(&bytes) {
        Ok(b) => b,
        Err(why) => return fail(422, why),
    };
    on_root(&state, &task_id, move |root, _| {
        fs::rename(root, &b.source, &b.destination, b.overwrite)
    })
    .await
}
