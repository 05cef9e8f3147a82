//! Task output: read from the shared directory when the host has one, else fetched from the
//! runner that ran the task (no shared filesystem needed).

use crate::auth::Caller;
use crate::store::tasks;
use crate::AppState;
use ferry_common::TaskId;

/// Most bytes returned at once (from the end of the log).
const MAX_LOG_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("Task not found.")]
    NotFound,
    #[error("Access denied to this task")]
    Forbidden,
    #[error("VPS tasks do not have stdout.")]
    Vps,
    #[error("{0}")]
    Unavailable(String),
    #[error("Too many output reads in progress; try again shortly")]
    Busy,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

pub async fn read(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    stream: &'static str,
    lines: Option<usize>,
) -> Result<String, LogError> {
    let t = state
        .db
        .read(move |c| tasks::get(c, id))
        .await?
        .ok_or(LogError::NotFound)?;
    if !caller.may_touch(t.owner_id) {
        return Err(LogError::Forbidden);
    }
    if t.definition.kind() == ferry_common::TaskKind::Vps {
        return Err(LogError::Vps);
    }
    // Each read may hold up to 16 MiB: bound how many run at once (`max_log_reads`).
    let _slot = state
        .log_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| LogError::Busy)?;
    if let Some(dir) = &state.config.shared_dir {
        let path = dir
            .join("logs")
            .join(id.to_string())
            .join(format!("{stream}.log"));
        return tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
            Ok(mut f) => ferry_common::logtail::tail(&mut f, lines, MAX_LOG_BYTES)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| LogError::Unavailable(format!("cannot read {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(LogError::Unavailable(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        })
        .await
        .map_err(|e| LogError::Unavailable(e.to_string()))?;
    }
    // Not placed yet: nothing has been written.
    let Some(node) = t.assigned_node else {
        return Ok(String::new());
    };
    let Some(url) = state.cluster.url_of(&node) else {
        return Ok(String::new());
    };
    if !state.cluster.is_online(&node) {
        return Err(LogError::Unavailable(format!(
            "node '{node}' is offline; its logs are kept on that node"
        )));
    }
    match state.runner.logs(&url, id, stream, lines).await {
        Ok(text) => Ok(text.unwrap_or_default()),
        Err(e) => Err(LogError::Unavailable(format!(
            "cannot fetch logs from node '{node}': {e}"
        ))),
    }
}
