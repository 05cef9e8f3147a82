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
    #[error("attempt: the task has no attempt {asked} (its attempts are 1 to {latest})")]
    NoAttempt { asked: u32, latest: u32 },
    #[error("{0}")]
    Unavailable(String),
    #[error("Too many output reads in progress; try again shortly")]
    Busy,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The task, if it exists, has output and the caller may read it.
async fn readable(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
) -> Result<crate::tasks::model::Task, LogError> {
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
    Ok(t)
}

/// Which attempt's output is read (the current one unless `asked`), and the node it ran on
/// (the current attempt's may change until it starts; an ended one's is recorded).
async fn attempt_of(
    state: &AppState,
    t: &crate::tasks::model::Task,
    asked: Option<u32>,
) -> Result<(u32, Option<String>), LogError> {
    let run = asked.unwrap_or(t.run);
    if run == 0 || run > t.run {
        return Err(LogError::NoAttempt {
            asked: run,
            latest: t.run,
        });
    }
    if run == t.run {
        return Ok((run, t.assigned_node.clone()));
    }
    let id = t.id;
    let node = state
        .db
        .read(move |c| crate::store::attempts::node_of(c, id, run))
        .await?;
    Ok((run, node))
}

/// Where the host's shared directory keeps a task's `stream` of attempt `run`.
fn shared_path(dir: &std::path::Path, id: TaskId, run: u32, stream: &str) -> std::path::PathBuf {
    dir.join("logs")
        .join(ferry_common::task::log_dir(id, run))
        .join(format!("{stream}.log"))
}

pub async fn read(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    (stream, attempt): (&'static str, Option<u32>),
    lines: Option<usize>,
) -> Result<String, LogError> {
    let t = readable(state, caller, id).await?;
    let (run, node) = attempt_of(state, &t, attempt).await?;
    // Each read may hold up to 16 MiB: bound how many run at once (`max_log_reads`).
    let _slot = state
        .log_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| LogError::Busy)?;
    if let Some(dir) = &state.config.shared_dir {
        let path = shared_path(dir, id, run, stream);
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
    let Some(node) = node else {
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
    match state.runner.logs(&url, id, run, stream, lines).await {
        Ok(text) => Ok(text.unwrap_or_default()),
        Err(e) => Err(LogError::Unavailable(format!(
            "cannot fetch logs from node '{node}': {e}"
        ))),
    }
}

/// Followers served at once; more are refused (each holds a connection for a task's life).
pub const MAX_FOLLOWERS: usize = 1024;
/// How long a follow whose runner stream broke waits before asking again.
const RECONNECT: std::time::Duration = std::time::Duration::from_millis(500);

/// Held by a follow for as long as its response lives.
type Follower = tokio::sync::OwnedSemaphorePermit;

/// Whether attempt `run` of task `id` has ended (the task ended or went on to its next
/// attempt) or the task is gone, as the host records it.
async fn attempt_over(db: &crate::store::Db, id: TaskId, run: u32) -> bool {
    match db.read(move |c| tasks::get(c, id)).await {
        Ok(Some(t)) => t.status.is_final() || t.run != run,
        Ok(None) => true,
        // A store that cannot answer ends nothing; the follower asks again.
        Err(_) => false,
    }
}

/// `stdout?follow=true`: the task's output as it is written, ending after its last byte
/// once the task has ended. Read from the shared dir when the host has one, else relayed
/// from the task's runner (resumed at the byte it broke off if that connection breaks).
pub async fn follow(
    state: &AppState,
    caller: &Caller,
    id: TaskId,
    (stream, attempt): (&'static str, Option<u32>),
    lines: Option<usize>,
) -> Result<axum::body::Body, LogError> {
    let t = readable(state, caller, id).await?;
    let (run, _) = attempt_of(state, &t, attempt).await?;
    let follower = state
        .follow_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| LogError::Busy)?;
    if let Some(dir) = &state.config.shared_dir {
        let path = shared_path(dir, id, run, stream);
        let db = state.db.clone();
        let ended: ferry_access::follow::Ended = Box::new(move || {
            let db = db.clone();
            Box::pin(async move { attempt_over(&db, id, run).await })
        });
        let body = ferry_access::follow::follow(path, lines, MAX_LOG_BYTES, ended);
        let body = futures_util::StreamExt::map(body, move |piece| {
            let _held = &follower;
            piece
        });
        return Ok(axum::body::Body::from_stream(body));
    }
    Ok(axum::body::Body::from_stream(relay(
        state.clone(),
        (id, run),
        stream,
        lines,
        follower,
    )))
}

struct Relay {
    state: AppState,
    id: TaskId,
    run: u32,
    stream: &'static str,
    lines: Option<usize>,
    /// Bytes sent so far: where a new runner connection starts.
    sent: u64,
    resp: Option<reqwest::Response>,
    _follower: Follower,
}

fn relay(
    state: AppState,
    (id, run): (TaskId, u32),
    stream: &'static str,
    lines: Option<usize>,
    follower: Follower,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    let r = Relay {
        state,
        id,
        run,
        stream,
        lines,
        sent: 0,
        resp: None,
        _follower: follower,
    };
    futures_util::stream::unfold(r, |mut r| async move {
        loop {
            if let Some(resp) = r.resp.as_mut() {
                match resp.chunk().await {
                    Ok(Some(piece)) => {
                        r.sent += piece.len() as u64;
                        return Some((Ok(piece), r));
                    }
                    // The runner sent all of the task's output.
                    Ok(None) => {
                        r.resp = None;
                        if attempt_over(&r.state.db, r.id, r.run).await {
                            return None;
                        }
                        // The runner is done (or does not hold the task yet) before the host
                        // has its final report: ask again shortly.
                        tokio::time::sleep(RECONNECT).await;
                    }
                    // Broken off: resume from the byte it stopped at.
                    Err(e) => {
                        tracing::debug!(task_id = %r.id, error = %e, "log follow broke off; resuming");
                        r.resp = None;
                    }
                }
            } else {
                let (id, run) = (r.id, r.run);
                let node = match r.state.db.read(move |c| tasks::get(c, id)).await {
                    Ok(Some(t)) if t.run == run => t.assigned_node,
                    Ok(Some(_)) => {
                        let read = move |c: &rusqlite::Connection| {
                            crate::store::attempts::node_of(c, id, run)
                        };
                        r.state.db.read(read).await.ok().flatten()
                    }
                    Ok(None) => return None,
                    Err(_) => None,
                };
                let url = node.as_deref().and_then(|n| {
                    r.state
                        .cluster
                        .is_online(n)
                        .then(|| r.state.cluster.url_of(n))
                        .flatten()
                });
                if let Some(url) = url {
                    // Nothing sent yet: start from the tail asked for; else where it stopped.
                    let (lines, offset) = match r.sent {
                        0 => (r.lines, None),
                        sent => (None, Some(sent)),
                    };
                    match r
                        .state
                        .runner
                        .follow_logs(&url, r.id, r.run, r.stream, lines, offset)
                        .await
                    {
                        Ok(resp) => {
                            r.resp = Some(resp);
                            continue;
                        }
                        Err(e) => {
                            tracing::debug!(task_id = %r.id, error = %e, "cannot follow the log on its runner yet")
                        }
                    }
                } else if attempt_over(&r.state.db, r.id, r.run).await {
                    // Ended, and its node is gone or it never ran: nothing more will come.
                    return None;
                }
                tokio::time::sleep(RECONNECT).await;
            }
        }
    })
}
