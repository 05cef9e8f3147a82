//! The scheduler's background loops: delivering a placed task to its runner and delivering a
//! kill. Each runs detached (a slow runner never stalls the scheduler), reads node addresses
//! from the scheduler's published [`View`], and reports back only as [`Event`]s; the scheduler
//! aborts a loop when the task no longer needs it.

use super::{Event, View};
use crate::runner_client::{Control, RunnerApi, RunnerError};
use crate::tasks::model::Change;
use ferry_common::runner_proto::ExecuteRequest;
use ferry_common::TaskId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub(super) struct LoopContext {
    pub db: crate::store::Db,
    pub runner: Arc<dyn RunnerApi>,
    pub view: watch::Receiver<Arc<View>>,
    pub events: mpsc::Sender<Event>,
}

const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(5);

impl LoopContext {
    /// The node's address and whether it is online, as the scheduler last published them.
    fn node(&self, node: &str) -> Option<(String, bool)> {
        self.view
            .borrow()
            .nodes
            .get(node)
            .map(|n| (n.url.clone(), n.online))
    }

    async fn tell(&self, id: TaskId, change: Change) {
        let event = Event::Change {
            id,
            change,
            reply: None,
        };
        if self.events.send(event).await.is_err() {
            tracing::error!(task_id = %id, "scheduler has stopped; change dropped");
        }
    }
}

/// Sends a placed task to its runner. An unreachable runner is retried for as long as the
/// loop lives (the scheduler aborts it when the task leaves `assigning`: the node going
/// offline makes it `lost`, and the node's heartbeats then settle it); a runner that refuses
/// fails the task, if it is still in the attempt this loop delivers.
pub(super) async fn deliver_task(cx: LoopContext, req: ExecuteRequest, node: String) {
    let id = req.task_id;
    // On the timeline before the runner can answer, so it comes before "started".
    let sent = {
        let (node, attempt, run) = (node.clone(), req.attempt.unwrap_or(0), req.run.unwrap_or(1));
        let step = crate::tasks::timeline::Step {
            event: "dispatched",
            detail: Some(format!("sent to {node}")),
        };
        cx.db
            .write(move |c| {
                crate::store::timeline::append(
                    c,
                    id,
                    ferry_common::time::now_ms(),
                    &step,
                    (ferry_common::TaskStatus::Assigning, &node, attempt, run),
                )
            })
            .await
    };
    if let Err(e) = sent {
        tracing::warn!(task_id = %id, error = %e, "cannot record the dispatch on the timeline");
    }
    let mut delay = FIRST_RETRY;
    let failure = loop {
        let Some((url, _)) = cx.node(&node) else {
            break format!("node '{node}' is no longer registered");
        };
        match cx.runner.execute(&url, &req).await {
            Ok(_) => {
                tracing::debug!(task_id = %id, node = %node, "dispatched");
                return;
            }
            // A 4xx is the runner's considered answer; a 5xx may pass (disk full a moment).
            Err(RunnerError::Refused { status, detail }) if status < 500 => {
                break format!("runner '{node}' refused the task ({status}): {detail}");
            }
            Err(e) => {
                tracing::warn!(task_id = %id, node = %node, error = %e, retry_in = ?delay, "dispatch failed");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LAST_RETRY);
    };
    let fail = Change::Fail {
        reason: failure,
        exit_code: Some(-1),
    };
    let change = match req.attempt {
        Some(attempt) => Change::ForAttempt {
            attempt,
            change: Box::new(fail),
        },
        None => fail,
    };
    cx.tell(id, change).await;
}

/// Tells the task's runner to kill it; a kill the runner acknowledges releases the booking.
/// While the node is unreachable the kill is retried; once it is offline the loop stops (the
/// node being declared lost releases the booking), and a runner that answers it has no such
/// task leaves the release to its next heartbeat, which shows whether it still runs it.
pub(super) async fn deliver_kill(cx: LoopContext, id: TaskId, node: String, how: Control) {
    let mut delay = FIRST_RETRY;
    loop {
        let Some((url, online)) = cx.node(&node) else {
            cx.tell(id, Change::Released).await;
            return;
        };
        if !online {
            return;
        }
        match cx.runner.control(&url, how, id).await {
            Ok(_) => {
                tracing::debug!(task_id = %id, node = %node, action = %how, "end delivered");
                cx.tell(id, Change::Released).await;
                return;
            }
            Err(RunnerError::Refused { status, detail }) if status < 500 => {
                tracing::info!(task_id = %id, node = %node, status, %detail, "runner has nothing to kill; its heartbeat settles the booking");
                return;
            }
            Err(e) => {
                tracing::warn!(task_id = %id, node = %node, error = %e, retry_in = ?delay, "kill not delivered");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LAST_RETRY);
    }
}
