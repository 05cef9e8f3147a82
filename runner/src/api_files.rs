//! The file routes the host relays (`/api/fs/{task_id}/<op>`): the task must be running
//! here; the operation ([`ferry_access::files`]) runs on the container's root as the node
//! sees it.

use crate::RunnerState;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_access::files::{FileOp, Refused};
use ferry_common::{ErrorBody, TaskId};

pub use ferry_common::runner_proto::FS_MAX_WRITE_BODY as MAX_WRITE_BODY;

fn fail(status: u16, detail: String) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(ErrorBody::new(detail))).into_response()
}

/// Every file route (the operation is the path's last segment): GET and DELETE read the
/// query, POST the JSON body.
pub async fn op(
    State(state): State<RunnerState>,
    Path(task_id): Path<String>,
    uri: Uri,
    bytes: axum::body::Bytes,
) -> Response {
    let op = uri.path().rsplit('/').next().unwrap_or_default();
    let Ok(id) = task_id.parse::<TaskId>() else {
        return fail(422, format!("task_id: not a task id: {task_id:?}"));
    };
    let op = match FileOp::parse(op, uri.query().unwrap_or(""), &bytes) {
        Ok(op) => op,
        Err(Refused { status, detail }) => return fail(status, detail),
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
    match op.run_on(dir, user).await {
        Ok(v) => Json(v).into_response(),
        Err(Refused { status, detail }) => fail(status, detail),
    }
}
