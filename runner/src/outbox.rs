//! Status reports waiting to reach the host, sent in order and retried with backoff until the
//! host acknowledges them; a report is never dropped because the host was away.

use ferry_common::runner_proto::TaskUpdate;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Outbox {
    queue: Mutex<VecDeque<TaskUpdate>>,
    wake: Notify,
}

impl Outbox {
    pub fn push(&self, update: TaskUpdate) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(update);
        self.wake.notify_one();
    }

    fn front(&self) -> Option<TaskUpdate> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .cloned()
    }

    fn pop(&self) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Delivers reports one at a time, oldest first, through `send`, for ever.
    pub async fn deliver<F, Fut>(&self, send: F)
    where
        F: Fn(TaskUpdate) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut backoff = Duration::from_millis(200);
        loop {
            let Some(update) = self.front() else {
                self.wake.notified().await;
                continue;
            };
            match send(update.clone()).await {
                Ok(()) => {
                    self.pop();
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    tracing::warn!(task_id = %update.task_id, status = %update.status, error = %e, pending = self.len(), "status report not delivered; will retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
