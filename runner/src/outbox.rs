//! Status reports waiting to reach the host. Each report is written to its own file under
//! `<data_dir>/outbox/` (fsynced) before it is queued, sent oldest first, resent with backoff
//! until the host acknowledges it, and only then deleted: a crash, a restart or a host outage
//! loses none, and a task's reports arrive in the order they were made. When a report cannot
//! be written (disk full), it is kept in memory, still delivered, and its write retried; the
//! runner is not ready (`/ready` 503, see [`Outbox::unwritable`]) while any report is only in
//! memory.

use crate::durable;
use ferry_common::runner_proto::TaskUpdate;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

pub struct Outbox {
    dir: PathBuf,
    /// (file, report), oldest first; `next` numbers new files after the newest on disk.
    queue: Mutex<(VecDeque<(PathBuf, TaskUpdate)>, u64)>,
    /// Reports held only in memory (their file could not be written), with the last error.
    unwritten: Mutex<(std::collections::HashSet<PathBuf>, Option<String>)>,
    wake: Notify,
}

impl Outbox {
    /// Opens the outbox, picking up reports a previous run did not deliver.
    pub fn open(dir: PathBuf) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(&dir)?;
        let pending: Vec<(PathBuf, TaskUpdate)> = durable::read_dir_json(&dir)?;
        let next = pending
            .iter()
            .filter_map(|(p, _)| p.file_stem()?.to_str()?.parse::<u64>().ok())
            .max()
            .map_or(0, |n| n + 1);
        if !pending.is_empty() {
            tracing::info!(
                count = pending.len(),
                "resending status reports left from the previous run"
            );
        }
        Ok(Outbox {
            dir,
            queue: Mutex::new((pending.into_iter().collect(), next)),
            unwritten: Mutex::new(Default::default()),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<(PathBuf, TaskUpdate)>, u64)> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unwritten(
        &self,
    ) -> std::sync::MutexGuard<'_, (std::collections::HashSet<PathBuf>, Option<String>)> {
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why reports are held only in memory, while some are.
    pub fn unwritable(&self) -> Option<String> {
        let u = self.unwritten();
        if u.0.is_empty() {
            None
        } else {
            u.1.clone()
        }
    }

    async fn write(path: &std::path::Path, update: &TaskUpdate) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(update).map_err(std::io::Error::other)?;
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || durable::write_atomic(&p, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Makes `update` durable, then queues it. A report that cannot be written is queued all
    /// the same (it is delivered from memory) and its write retried by
    /// [`Outbox::retry_writes`]; the error is returned for the caller to log.
    pub async fn push(&self, update: TaskUpdate) -> std::io::Result<()> {
        let path = {
            let mut q = self.lock();
            let n = q.1;
            q.1 += 1;
            self.dir.join(format!("{n:020}.json"))
        };
        let written = Self::write(&path, &update).await;
        if let Err(e) = &written {
            let mut u = self.unwritten();
            u.0.insert(path.clone());
            u.1 = Some(format!(
                "cannot write status reports to {}: {e}",
                self.dir.display()
            ));
        }
        {
            let mut q = self.lock();
            q.0.push_back((path, update));
            // File numbers are taken in order but written concurrently: keep the queue sorted.
            q.0.make_contiguous().sort_by(|a, b| a.0.cmp(&b.0));
        }
        self.wake.notify_one();
        written
    }

    /// Retries writing the reports held only in memory, every `period`, for ever.
    pub async fn retry_writes(&self, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            let todo: Vec<PathBuf> = self.unwritten().0.iter().cloned().collect();
            for path in todo {
                let update = self
                    .lock()
                    .0
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, u)| u.clone());
                let Some(update) = update else {
                    // Delivered meanwhile: nothing left to keep.
                    self.unwritten().0.remove(&path);
                    continue;
                };
                match Self::write(&path, &update).await {
                    Ok(()) => {
                        self.unwritten().0.remove(&path);
                        // Delivered while being written: the file must not outlive it.
                        if !self.lock().0.iter().any(|(p, _)| *p == path) {
                            let p = path.clone();
                            let _ = tokio::task::spawn_blocking(move || durable::remove(&p)).await;
                        }
                        tracing::info!(task_id = %update.task_id, "status report written after all");
                    }
                    Err(e) => {
                        self.unwritten().1 = Some(format!(
                            "cannot write status reports to {}: {e}",
                            self.dir.display()
                        ));
                    }
                }
            }
        }
    }

    /// Tasks with a report still waiting for the host.
    pub fn pending_tasks(&self) -> std::collections::HashSet<ferry_common::TaskId> {
        self.lock().0.iter().map(|(_, u)| u.task_id).collect()
    }

    /// Every report waiting, oldest first.
    #[cfg(test)]
    pub fn reports(&self) -> Vec<TaskUpdate> {
        self.lock().0.iter().map(|(_, u)| u.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Delivers reports one at a time, oldest first, through `send`, for ever; calls `acked`
    /// after the host has taken one.
    pub async fn deliver<F, Fut, A>(&self, send: F, acked: A)
    where
        F: Fn(TaskUpdate) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
        A: Fn(&TaskUpdate),
    {
        let mut backoff = Duration::from_millis(200);
        loop {
            let front = self.lock().0.front().cloned();
            let Some((path, update)) = front else {
                self.wake.notified().await;
                continue;
            };
            match send(update.clone()).await {
                Ok(()) => {
                    let in_memory_only = self.unwritten().0.remove(&path);
                    let p = path.clone();
                    if !in_memory_only {
                        if let Ok(Err(e)) =
                            tokio::task::spawn_blocking(move || durable::remove(&p)).await
                        {
                            tracing::warn!(path = %path.display(), error = %e, "could not delete a delivered report");
                        }
                    }
                    self.lock().0.retain(|(p, _)| *p != path);
                    acked(&update);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::{TaskId, TaskStatus};
    use std::sync::Arc;

    fn update(id: u64, status: TaskStatus, seq: u64) -> TaskUpdate {
        TaskUpdate {
            task_id: TaskId(id),
            status,
            exit_code: None,
            message: None,
            started_at: None,
            completed_at: None,
            ssh_port: None,
            seq: Some(seq),
            hostname: None,
            attempt: None,
        }
    }

    #[tokio::test]
    async fn an_unwritable_report_is_kept_in_memory_and_written_when_it_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let boxdir = dir.path().join("outbox");
        let ob = Arc::new(Outbox::open(boxdir.clone()).unwrap());
        // The directory turns into a file: every write fails (root ignores modes).
        std::fs::remove_dir(&boxdir).unwrap();
        std::fs::write(&boxdir, b"").unwrap();
        assert!(ob.push(update(1, TaskStatus::Completed, 2)).await.is_err());
        assert_eq!(ob.len(), 1, "kept for delivery");
        assert!(ob
            .unwritable()
            .unwrap()
            .contains("cannot write status reports"));
        let retry = tokio::spawn({
            let ob = ob.clone();
            async move { ob.retry_writes(Duration::from_millis(20)).await }
        });
        std::fs::remove_file(&boxdir).unwrap();
        std::fs::create_dir(&boxdir).unwrap();
        for _ in 0..200 {
            if ob.unwritable().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        retry.abort();
        assert_eq!(ob.unwritable(), None);
        assert_eq!(
            std::fs::read_dir(&boxdir).unwrap().count(),
            1,
            "now on disk"
        );
        let reopened = Outbox::open(boxdir).unwrap();
        assert_eq!(
            reopened.reports(),
            vec![update(1, TaskStatus::Completed, 2)]
        );
    }

    #[tokio::test]
    async fn reports_survive_a_restart_and_are_delivered_in_order_after_failures() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ob = Outbox::open(dir.path().to_path_buf()).unwrap();
            ob.push(update(1, TaskStatus::Running, 1)).await.unwrap();
            ob.push(update(1, TaskStatus::Completed, 2)).await.unwrap();
        }
        // "Restart": a new outbox sees both, and numbers new reports after them.
        let ob = Arc::new(Outbox::open(dir.path().to_path_buf()).unwrap());
        assert_eq!(ob.len(), 2);
        ob.push(update(2, TaskStatus::Running, 1)).await.unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(2));
        let (s, f, o) = (sent.clone(), failures.clone(), ob.clone());
        let deliver = tokio::spawn(async move {
            o.deliver(
                move |u| {
                    let (s, f) = (s.clone(), f.clone());
                    async move {
                        let mut left = f.lock().unwrap();
                        if *left > 0 {
                            *left -= 1;
                            return Err("host down".to_string());
                        }
                        s.lock().unwrap().push((u.task_id.0, u.seq));
                        Ok(())
                    }
                },
                |_| {},
            )
            .await
        });
        for _ in 0..100 {
            if ob.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        deliver.abort();
        assert_eq!(
            *sent.lock().unwrap(),
            vec![(1, Some(1)), (1, Some(2)), (2, Some(1))]
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "delivered files are deleted"
        );
    }
}
