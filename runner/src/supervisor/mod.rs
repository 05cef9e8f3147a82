//! The supervisor alone owns this node's task table. For each task it drives one lifecycle —
//! image, container, start ([`Supervisor::launch`]), then log capture, wait, exit mapping,
//! report and clean-up ([`Supervisor::follow`]) — and it answers kill, pause and resume.
//!
//! Every task has a durable record (`<data_dir>/tasks/<id>.json`), written before the runner
//! acknowledges the task and kept until the host has acknowledged the task's final report. On
//! start, [`Supervisor::recover`] rebuilds the table from those records and from the containers
//! that carry this runner's label: running ones are re-adopted, ones that ended meanwhile are
//! reported with their real exit code, and tasks never started are started.

use crate::config::RunnerConfig;
use crate::durable;
use crate::outbox::Outbox;
use crate::scratch;
use crate::workload::{Exit, State, Workload, WorkloadError, WorkloadSpec};
use ferry_common::api::{PrepareStage, Preparing};
use ferry_common::runner_proto::{ExecuteRequest, TaskAttempt, TaskPreparing, TaskUpdate};
use ferry_common::task::{CommandSpec, TaskDefinition, TaskSpec};
use ferry_common::time::{format_ms, now_ms};
use ferry_common::{
    container_name, environment_image, TaskId, TaskStatus, LABEL_KIND, LABEL_RUNNER,
    LABEL_RUNNER_ID, LABEL_TASK_ID,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

mod vps;
pub use vps::SnapshotInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted; image and container being prepared.
    Preparing,
    Running,
    Paused,
    /// Ended; the final report is waiting for the host's acknowledgement.
    Finished,
}

/// What survives a runner restart about one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskRecord {
    request: ExecuteRequest,
    /// User name of the task's owner, as the host sent it (checked); `None`: not said.
    #[serde(default)]
    owner: Option<String>,
    /// Number of the last report made for this task.
    seq: u64,
    kill_requested: bool,
    /// A VPS asked to stop (its end is `stopped`, not `killed`).
    #[serde(default)]
    stop_requested: bool,
    /// A container was started for it.
    started: bool,
    /// Its final report has been made.
    finished: bool,
    /// When its container started (Unix ms): where its `timeout_seconds` counts from, kept
    /// so a restarted runner holds the same deadline.
    #[serde(default)]
    started_at_ms: Option<i64>,
    /// Killed at its deadline: it ends `timed_out`.
    #[serde(default)]
    timed_out: bool,
}

struct Entry {
    phase: Phase,
    record: TaskRecord,
    /// Set to the exit code once the task's container is gone.
    done: watch::Sender<Option<i64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("task {0} is not running on this node")]
    Unknown(TaskId),
    #[error("task {0} is {1}")]
    WrongState(TaskId, &'static str),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("cannot record task state: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    BadOwner(#[from] scratch::BadOwner),
    #[error("task {id}: attempt {got} is older than attempt {held}, which this runner holds")]
    OlderAttempt { id: TaskId, got: u32, held: u32 },
    #[error("task {id}: attempt {held} is still ending on this runner; send attempt {got} again shortly")]
    PreviousAttemptEnding { id: TaskId, got: u32, held: u32 },
}

pub struct Supervisor {
    engine: Arc<dyn Workload>,
    outbox: Arc<Outbox>,
    config: Arc<RunnerConfig>,
    records_dir: PathBuf,
    /// This runner's identity on the Docker engine (see `LABEL_RUNNER_ID`).
    instance_id: String,
    /// What the node offers: the base of tasks' default memory limits.
    node: crate::limits::Node,
    numa: Option<crate::numa::Topology>,
    tasks: Mutex<HashMap<TaskId, Entry>>,
    save_lock: tokio::sync::Mutex<()>,
    /// Tasks killed, with the newest attempt the kill was for (`None`: every attempt): a late
    /// or repeated execute of a killed attempt must not start it.
    killed: Mutex<HashMap<TaskId, Option<u32>>>,
    /// Tasks whose ended run's container is still being removed. The final report goes first
    /// (so users see the end at once), but a new run of the same task (a retry) must not start
    /// until the name is free, or the old run's removal would take the new container with it.
    removing: Mutex<HashSet<TaskId>>,
    /// Snapshots are taken one at a time (distinct tags, bounded engine load).
    snapshot_lock: tokio::sync::Mutex<()>,
    /// Environments: the newest packaged version loaded before a task uses it.
    pub envs: crate::envsync::EnvSync,
    /// What environments and snapshots take on disk, for the node view.
    pub disk: Arc<crate::disk_usage::DiskUsage>,
}

const KILLED_MESSAGE: &str = "Kill requested by user.";

/// A task's output being copied to its log files, in the background.
type LogCopy = tokio::task::JoinHandle<std::io::Result<()>>;

/// The task ended without its container running (its final report has been made).
struct NotStarted;

/// How a finished container maps to a task state: the engine's OOM flag first (never guessed
/// from exit code 137), then a kill we were asked for, then the exit code.
pub fn final_status(exit: Exit, kill_requested: bool) -> (TaskStatus, Option<String>) {
    if exit.oom_killed {
        (
            TaskStatus::KilledOom,
            Some("Killed by the kernel OOM killer (memory limit exceeded).".into()),
        )
    } else if kill_requested {
        (TaskStatus::Killed, Some(KILLED_MESSAGE.into()))
    } else if exit.code == 0 {
        (TaskStatus::Completed, None)
    } else {
        (
            TaskStatus::Failed,
            Some(format!("Exited with code {}.", exit.code)),
        )
    }
}

/// How a VPS's container ending maps to a state: asked to stop is `stopped`, killed is
/// `killed`, the OOM killer `killed_oom`; ending by itself is `stopped` (exit 0) or `failed`.
pub fn vps_final_status(
    exit: Exit,
    kill_requested: bool,
    stop_requested: bool,
) -> (TaskStatus, Option<String>) {
    if stop_requested && !exit.oom_killed {
        return (TaskStatus::Stopped, Some("Stopped by user.".into()));
    }
    match final_status(exit, kill_requested) {
        (TaskStatus::Completed, _) => (
            TaskStatus::Stopped,
            Some("The VPS's main process exited.".into()),
        ),
        (TaskStatus::Failed, _) => (
            TaskStatus::Failed,
            Some(format!(
                "The VPS's main process exited with code {}.",
                exit.code
            )),
        ),
        other => other,
    }
}

/// The container's command: the task's shell line, with arguments passed as positional
/// parameters rather than spliced into the string, so they need no quoting.
pub fn container_cmd(command: &str, arguments: &[String]) -> Vec<String> {
    let mut cmd = vec!["/bin/sh".to_string(), "-c".to_string()];
    if arguments.is_empty() {
        cmd.push(command.to_string());
    } else {
        cmd.push(format!("{command} \"$@\""));
        cmd.push("sh".to_string());
        cmd.extend(arguments.iter().cloned());
    }
    cmd
}

impl Supervisor {
    pub fn new(
        engine: Arc<dyn Workload>,
        outbox: Arc<Outbox>,
        config: Arc<RunnerConfig>,
        node: crate::limits::Node,
        numa: Option<crate::numa::Topology>,
    ) -> std::io::Result<Arc<Supervisor>> {
        let records_dir = config.data_dir.join("tasks");
        durable::private_dir(&records_dir)?;
        let instance_id = instance_id(&config.data_dir)?;
        Ok(Arc::new(Supervisor {
            envs: crate::envsync::EnvSync::new(engine.clone(), config.clone()),
            disk: Arc::new(crate::disk_usage::DiskUsage::new(
                engine.clone(),
                crate::envsync::downloads_dir(&config),
            )),
            engine,
            outbox,
            config,
            records_dir,
            instance_id,
            node,
            numa,
            tasks: Mutex::new(HashMap::new()),
            save_lock: tokio::sync::Mutex::new(()),
            killed: Mutex::new(HashMap::new()),
            removing: Mutex::new(HashSet::new()),
            snapshot_lock: tokio::sync::Mutex::new(()),
        }))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Entry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn engine(&self) -> &dyn Workload {
        self.engine.as_ref()
    }

    /// Tasks with a live container, and which of them are paused: what heartbeats report.
    pub fn live_tasks(&self) -> (Vec<TaskId>, Vec<TaskId>) {
        let table = self.table();
        let live = table
            .iter()
            .filter(|(_, e)| matches!(e.phase, Phase::Running | Phase::Paused))
            .map(|(id, _)| *id)
            .collect();
        let paused = table
            .iter()
            .filter(|(_, e)| e.phase == Phase::Paused)
            .map(|(id, _)| *id)
            .collect();
        (live, paused)
    }

    /// Every task this runner holds any state for.
    pub fn known_tasks(&self) -> Vec<TaskId> {
        self.table().keys().copied().collect()
    }

    /// The tasks accepted but not started yet, with what each waits for: what heartbeats
    /// report, so the host's task record shows an environment's load instead of silence.
    pub fn preparing(&self) -> Vec<TaskPreparing> {
        let mut waiting = self.envs.waiting();
        self.table()
            .iter()
            .filter(|(_, e)| e.phase == Phase::Preparing && !e.record.finished)
            .map(|(id, _)| TaskPreparing {
                task_id: *id,
                progress: waiting.remove(id).unwrap_or(Preparing {
                    stage: PrepareStage::Starting,
                    environment: None,
                    bytes_done: 0,
                    bytes_total: None,
                }),
            })
            .collect()
    }

    /// The placement attempt held for each task that has one: what heartbeats report.
    pub fn attempts(&self) -> Vec<TaskAttempt> {
        self.table()
            .iter()
            .filter_map(|(id, e)| {
                e.record.request.attempt.map(|attempt| TaskAttempt {
                    task_id: *id,
                    attempt,
                })
            })
            .collect()
    }

    fn record_path(&self, id: TaskId) -> PathBuf {
        self.records_dir.join(format!("{id}.json"))
    }

    async fn save_record(&self, id: TaskId, record: &TaskRecord) -> std::io::Result<()> {
        let path = self.record_path(id);
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || durable::write_atomic(&path, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Applies `f` to the task's record and writes it out.
    async fn update_record(
        &self,
        id: TaskId,
        f: impl FnOnce(&mut TaskRecord),
    ) -> std::io::Result<()> {
        // One save at a time, each of the newest state: an older snapshot can never land last.
        let _order = self.save_lock.lock().await;
        let record = {
            let mut table = self.table();
            let Some(e) = table.get_mut(&id) else {
                return Ok(());
            };
            f(&mut e.record);
            e.record.clone()
        };
        let saved = self.save_record(id, &record).await;
        // Forgotten while this write was in flight (its final report was acknowledged): the
        // record just written is stale and must not outlive the task.
        if !self.table().contains_key(&id) {
            let path = self.record_path(id);
            match tokio::task::spawn_blocking(move || durable::remove(&path)).await {
                Ok(Err(e)) => {
                    tracing::warn!(task_id = %id, error = %e, "cannot delete task record")
                }
                Err(e) => tracing::warn!(task_id = %id, error = %e, "cannot delete task record"),
                Ok(Ok(())) => {}
            }
        }
        saved
    }

    /// Makes a report durable and queues it for the host: the outbox file first, then the
    /// task record (a crash in between leaves a record that does not yet say "finished", so
    /// recovery follows the container again and the duplicate report is dropped by the host).
    async fn report(
        &self,
        id: TaskId,
        status: TaskStatus,
        exit_code: Option<i64>,
        message: Option<String>,
    ) {
        self.report_port(id, status, exit_code, message, None).await
    }

    /// [`Self::report`], with the node port a VPS's sshd is reached on.
    async fn report_port(
        &self,
        id: TaskId,
        status: TaskStatus,
        exit_code: Option<i64>,
        message: Option<String>,
        ssh_port: Option<u16>,
    ) {
        let (seq, attempt) = {
            let mut table = self.table();
            match table.get_mut(&id) {
                Some(e) => {
                    // Numbers grow with time as well as per report: a report made after a
                    // restart outranks every earlier one even when the record on disk had not
                    // caught up with the last report sent (outbox first, record second).
                    let micros = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros() as u64)
                        .unwrap_or(0);
                    e.record.seq = (e.record.seq + 1).max(micros);
                    if status.is_final() {
                        // Before the report can be acknowledged (which forgets a finished task).
                        e.phase = Phase::Finished;
                    }
                    (e.record.seq, e.record.request.attempt)
                }
                None => (1, None),
            }
        };
        let now = format_ms(now_ms());
        let update = TaskUpdate {
            task_id: id,
            status,
            exit_code,
            message,
            started_at: (status == TaskStatus::Running).then(|| now.clone()),
            completed_at: status.is_final().then_some(now),
            ssh_port,
            seq: Some(seq),
            hostname: Some(self.config.name.clone()),
            attempt,
        };
        if let Err(e) = self.outbox.push(update).await {
            tracing::error!(task_id = %id, error = %e, "cannot write status report to the outbox");
        }
        let saved = self
            .update_record(id, |r| {
                r.seq = r.seq.max(seq);
                r.finished |= status.is_final();
                r.started |= status == TaskStatus::Running;
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(task_id = %id, error = %e, "cannot record task state");
        }
    }

    /// The task ended without a container result (image, create or start failed).
    async fn report_failed(&self, id: TaskId, message: String) {
        self.report(id, TaskStatus::Failed, None, Some(message))
            .await;
    }

    /// The task was killed before its container ran.
    async fn report_killed(&self, id: TaskId) {
        self.report(id, TaskStatus::Killed, None, Some(KILLED_MESSAGE.into()))
            .await;
    }

    /// Called once the host has acknowledged a report: after the final one, the task is
    /// forgotten (record deleted), so a re-sent dispatch can no longer be mistaken for new work
    /// only once the host knows the outcome.
    pub fn acknowledged(&self, update: &TaskUpdate) {
        if !update.status.is_final() {
            return;
        }
        let removed = {
            let mut table = self.table();
            match table.get(&update.task_id) {
                // The report of the attempt held, not of one taken over since.
                Some(e)
                    if e.phase == Phase::Finished
                        && (update.attempt.is_none()
                            || update.attempt == e.record.request.attempt) =>
                {
                    table.remove(&update.task_id).is_some()
                }
                _ => false,
            }
        };
        if removed {
            self.forget_files(update.task_id);
        }
    }

    /// Deletes what the runner keeps of a task it forgets: its scratch directory, then its
    /// record (in that order, so a crash in between leaves a record that makes the next start
    /// finish the job). The directory is renamed away at once and deleted in a blocking thread.
    fn forget_files(&self, id: TaskId) {
        let trash = match scratch::discard(&self.config.local_temp_dir, id) {
            Ok(trash) => trash,
            Err(e) => {
                tracing::warn!(task_id = %id, error = %e, "cannot remove the task's scratch directory");
                None
            }
        };
        if let Err(e) = durable::remove(&self.record_path(id)) {
            tracing::warn!(task_id = %id, error = %e, "cannot delete task record");
        }
        if let Some(trash) = trash {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn_blocking(move || scratch::purge(&trash));
                }
                Err(_) => scratch::purge(&trash),
            }
        }
    }

    /// Accepts a task. Idempotent: a task id this runner already holds (running, or finished
    /// with its result not yet acknowledged) is not started again. The record is on disk before
    /// this returns, so an acknowledged dispatch survives a crash.
    /// Attempts fence late dispatches (see [`Self::newer_attempt`]): an attempt older than the
    /// one held is refused, and one killed is not started.
    /// `owner` is the user name of the task's owner, when the host says it: it names the
    /// task's directory under the shared filesystem, so one that is not a plain path component
    /// is refused.
    pub async fn execute(
        self: &Arc<Self>,
        req: ExecuteRequest,
        owner: Option<String>,
    ) -> Result<(), SupervisorError> {
        let id = req.task_id;
        scratch::owner_dir(owner.as_deref())?;
        let killed = self
            .killed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied();
        match (killed, req.attempt) {
            (Some(Some(k)), Some(n)) if n > k => {}
            (Some(_), _) => {
                tracing::info!(task_id = %id, attempt = ?req.attempt, "execute for a task already killed: ignored");
                return Ok(());
            }
            (None, _) => {}
        }
        if self.removing_container(id) {
            let got = req.attempt.unwrap_or(0);
            return Err(SupervisorError::PreviousAttemptEnding {
                id,
                got,
                held: got.saturating_sub(1),
            });
        }
        let record = TaskRecord {
            request: req.clone(),
            owner: owner.clone(),
            seq: 0,
            kill_requested: false,
            stop_requested: false,
            started: false,
            finished: false,
            started_at_ms: None,
            timed_out: false,
        };
        let held = {
            let mut table = self.table();
            match table.get(&id) {
                Some(held) => Some((
                    held.record.request.attempt,
                    held.phase,
                    held.record.kill_requested,
                    held.record.request.run.unwrap_or(1),
                )),
                None => {
                    let (done, _) = watch::channel(None);
                    table.insert(
                        id,
                        Entry {
                            phase: Phase::Preparing,
                            record: record.clone(),
                            done,
                        },
                    );
                    None
                }
            }
        };
        if let Some((held, phase, killing, held_run)) = held {
            let run = req.run.unwrap_or(1);
            if run != held_run {
                return Err(self.other_run(
                    id,
                    (req.attempt, run),
                    (held, held_run),
                    phase,
                    killing,
                ));
            }
            return self
                .newer_attempt(id, req.attempt, held, phase, killing)
                .await;
        }
        if let Err(e) = self.save_record(id, &record).await {
            self.table().remove(&id);
            return Err(e.into());
        }
        self.spawn_run(req, owner);
        Ok(())
    }

    /// An execute of a run of the task other than the one held (a retry placed here while a
    /// copy of an earlier run is still held, say from before this node was lost). A copy never
    /// stands in for another run, whose logs and exit are its own: an older run is refused;
    /// for a newer one the copy held is killed and the host asked to send it again (503) until
    /// the copy's end is acknowledged and the new run can start afresh.
    fn other_run(
        self: &Arc<Self>,
        id: TaskId,
        (got, run): (Option<u32>, u32),
        (held, held_run): (Option<u32>, u32),
        phase: Phase,
        killing: bool,
    ) -> SupervisorError {
        let (got_n, held_n) = (got.unwrap_or(0), held.unwrap_or(0));
        if run < held_run {
            tracing::warn!(task_id = %id, run, held_run, "execute of an older run refused");
            return SupervisorError::OlderAttempt {
                id,
                got: got_n,
                held: held_n,
            };
        }
        if phase != Phase::Finished && !killing {
            tracing::info!(task_id = %id, run, held_run, "a newer run of a task held here: killing the copy of the old one first");
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.kill_stale(id, held).await {
                    tracing::warn!(task_id = %id, error = %e, "cannot kill the copy of an older run");
                }
            });
        }
        SupervisorError::PreviousAttemptEnding {
            id,
            got: got_n,
            held: held_n,
        }
    }

    /// An execute for a task this runner already holds. The same attempt (or an unfenced one)
    /// is a repeat; an older one is refused; a newer one (the host gave up waiting for this
    /// runner and placed the task again, here) takes over the copy held, which then reports
    /// as the new attempt, unless that copy is ending: then the host is asked to retry (503)
    /// until its final report is acknowledged and the new attempt can start afresh.
    async fn newer_attempt(
        &self,
        id: TaskId,
        got: Option<u32>,
        held: Option<u32>,
        phase: Phase,
        killing: bool,
    ) -> Result<(), SupervisorError> {
        let (Some(got), Some(held)) = (got, held) else {
            return Ok(());
        };
        if got == held {
            return Ok(());
        }
        if got < held {
            tracing::warn!(task_id = %id, got, held, "execute of an older attempt refused");
            return Err(SupervisorError::OlderAttempt { id, got, held });
        }
        if phase == Phase::Finished || killing {
            return Err(SupervisorError::PreviousAttemptEnding { id, got, held });
        }
        tracing::info!(task_id = %id, from = held, to = got, "task placed here again: the copy held continues as the new attempt");
        self.update_record(id, |r| r.request.attempt = Some(got))
            .await?;
        Ok(())
    }

    /// Runs a task's whole lifecycle in the background.
    fn spawn_run(self: &Arc<Self>, req: ExecuteRequest, owner: Option<String>) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = req.task_id;
            let exit = match me.launch(&req, owner.as_deref()).await {
                Some((name, logs)) => me.follow(id, name, logs).await,
                None => None,
            };
            me.ended(id, exit);
        });
    }

    fn ended(&self, id: TaskId, exit_code: Option<i64>) {
        if let Some(e) = self.table().get(&id) {
            let _ = e.done.send(Some(exit_code.unwrap_or(-1)));
        }
    }

    /// Whether run `run` of the task's output is all written: it ended (its final report is
    /// made only after its log copy finished), or this runner does not hold that run.
    pub fn output_complete(&self, id: TaskId, run: u32) -> bool {
        self.table()
            .get(&id)
            .is_none_or(|e| e.phase == Phase::Finished || e.record.request.run.unwrap_or(1) != run)
    }

    fn kill_requested(&self, id: TaskId) -> bool {
        self.table()
            .get(&id)
            .map(|e| e.record.kill_requested)
            .unwrap_or(true)
    }

    /// For a VPS, whether it was asked to stop; `None` for a command task.
    /// When the task must end (Unix ms), if it has a time limit and has started.
    fn deadline(&self, id: TaskId) -> Option<(i64, u64)> {
        let table = self.table();
        let r = &table.get(&id)?.record;
        let limit = match &r.request.definition.spec {
            TaskSpec::Command(c) => c.timeout_seconds?,
            TaskSpec::Vps(_) => return None,
        };
        let started = r.started_at_ms?;
        Some((
            started.saturating_add(limit.saturating_mul(1000) as i64),
            limit,
        ))
    }

    fn timed_out(&self, id: TaskId) -> bool {
        self.table().get(&id).is_some_and(|e| e.record.timed_out)
    }

    /// Kills a task whose time is up; it will end `timed_out`.
    async fn time_out(&self, id: TaskId, name: &str, limit: u64) {
        tracing::warn!(task_id = %id, timeout_seconds = limit, "time limit reached: killing the task");
        if let Err(e) = self.update_record(id, |r| r.timed_out = true).await {
            tracing::warn!(task_id = %id, error = %e, "cannot record the time-out");
        }
        // A paused container only dies once thawed.
        let _ = self.engine.resume(name).await;
        if let Err(e) = self.engine.kill(name).await {
            tracing::warn!(task_id = %id, error = %e, "cannot kill a task past its time limit");
        }
    }

    fn stop_requested(&self, id: TaskId) -> Option<bool> {
        let table = self.table();
        let e = table.get(&id)?;
        e.record
            .request
            .definition
            .spec
            .as_vps()
            .map(|_| e.record.stop_requested)
    }

    /// A VPS reached over SSH (its sshd's port is published).
    fn is_ssh_vps(&self, id: TaskId) -> bool {
        self.table().get(&id).is_some_and(|e| {
            e.record
                .request
                .definition
                .spec
                .as_vps()
                .is_some_and(|v| v.ssh_key_mode != ferry_common::task::SshKeyMode::Disabled)
        })
    }

    /// The container of a task that is running now, or why there is none to reach.
    pub fn running_container(&self, id: TaskId) -> Result<String, &'static str> {
        // The phase first: the table's lock must be released before `container_of` takes it.
        let phase = self.table().get(&id).map(|e| e.phase);
        match phase {
            Some(Phase::Running) => Ok(self.container_of(id)),
            Some(Phase::Paused) => Err("is paused"),
            Some(Phase::Preparing) => Err("is still starting"),
            Some(Phase::Finished) => Err("has ended"),
            None => Err("is not on this node"),
        }
    }

    /// The container name of a task held (command tasks' name for one not held).
    fn container_of(&self, id: TaskId) -> String {
        let kind = self
            .table()
            .get(&id)
            .map(|e| e.record.request.definition.kind())
            .unwrap_or(ferry_common::TaskKind::Command);
        container_name(id, kind)
    }

    fn set_phase(&self, id: TaskId, phase: Phase) {
        if let Some(e) = self.table().get_mut(&id) {
            e.phase = phase;
        }
    }

    /// What the task's container is made of. `shared` is what it mounts at `/shared`.
    /// `image`: what it starts from (a VPS's newest snapshot); `None`: the task's own image.
    fn spec(
        &self,
        req: &ExecuteRequest,
        shared: Option<&std::path::Path>,
        image: Option<String>,
    ) -> WorkloadSpec {
        let d = &req.definition;
        let image = image.unwrap_or_else(|| {
            d.image
                .reference()
                .unwrap_or_else(|| environment_image("kohakuriver-base"))
        });
        // The API refuses other kinds on `execute`; an empty command here would only fail.
        let default_cmd = CommandSpec::default();
        let cmd = d.spec.as_command().unwrap_or(&default_cmd);
        let r = &d.resources;
        let mut env: Vec<String> = d.env_vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("FERRY_TASK_ID={}", req.task_id));
        env.push(format!("KOHAKURIVER_TASK_ID={}", req.task_id));
        // Ferry: which attempt this run is (1 for the first), so a retried job can tell.
        env.push(format!("FERRY_TASK_ATTEMPT={}", req.run.unwrap_or(1)));
        env.push("KOHAKURIVER_LOCAL_TEMP_DIR=/local_temp".into());
        let mut binds = vec![format!(
            "{}:/local_temp",
            scratch::task_dir(&self.config.local_temp_dir, req.task_id).display()
        )];
        if let Some(shared) = shared {
            binds.push(format!("{}:/shared", shared.display()));
            env.push("KOHAKURIVER_SHARED_DIR=/shared".into());
        }
        let numa_node = r
            .target_numa_node_id
            .and_then(|n| self.numa.as_ref()?.get(&n));
        let labels = HashMap::from([
            (LABEL_TASK_ID.to_string(), req.task_id.to_string()),
            (LABEL_KIND.to_string(), d.kind().to_string()),
            (LABEL_RUNNER.to_string(), self.config.name.clone()),
            (LABEL_RUNNER_ID.to_string(), self.instance_id.clone()),
        ]);
        let mut spec = WorkloadSpec {
            name: container_name(req.task_id, d.kind()),
            image,
            cmd: container_cmd(&cmd.command, &cmd.arguments),
            env,
            working_dir: cmd.working_dir.clone().or_else(|| {
                self.config
                    .shared_dir
                    .as_ref()
                    .map(|_| "/shared".to_string())
            }),
            labels,
            nano_cpus: (r.required_cores > 0).then(|| i64::from(r.required_cores) * 1_000_000_000),
            binds,
            cpuset_cpus: numa_node.map(crate::numa::cpuset),
            cpuset_mems: numa_node.map(|_| r.target_numa_node_id.unwrap_or(0).to_string()),
            gpus: r.required_gpus.clone(),
            ..Default::default()
        };
        // Memory, pids, privileges, capabilities, engine log: the same for every container.
        // (The runner never starts privileged containers: `privileged` is refused by the host
        // and ignored here, so no task is exempt.)
        crate::limits::apply(&mut spec, r, self.node, &self.config);
        if let TaskSpec::Vps(vps) = &d.spec {
            vps::shape(&mut spec, vps);
        }
        spec
    }

    /// The log files of the run of task `id` this runner holds (each run has its own).
    fn log_paths(&self, id: TaskId) -> (PathBuf, PathBuf) {
        let run = self.run_of(id).unwrap_or(1);
        let dir = self
            .config
            .log_dir()
            .join(ferry_common::task::log_dir(id, run));
        (dir.join("stdout.log"), dir.join("stderr.log"))
    }

    /// The run of task `id` whose logs are read when a caller names none: the one held, else
    /// the first (the host names the run of any task retried).
    pub fn latest_run(&self, id: TaskId) -> u32 {
        self.run_of(id).unwrap_or(1)
    }

    /// Which run of task `id` this runner holds.
    fn run_of(&self, id: TaskId) -> Option<u32> {
        self.table()
            .get(&id)
            .map(|e| e.record.request.run.unwrap_or(1))
    }

    /// Image, container, start. Returns the container name (and the copy of its output, when
    /// it was started here) once it runs; on failure the final report has been made.
    async fn launch(
        &self,
        req: &ExecuteRequest,
        owner: Option<&str>,
    ) -> Option<(String, Option<LogCopy>)> {
        let id = req.task_id;
        let shared = match (&self.config.shared_dir, scratch::owner_dir(owner)) {
            (Some(dir), Ok(owner)) => {
                Some(scratch::shared_source(dir, self.config.shared_mount, owner))
            }
            (None, _) => None,
            // Checked on execute; a record edited by hand since must not widen a mount.
            (Some(_), Err(e)) => {
                self.report_failed(id, e.to_string()).await;
                return None;
            }
        };
        let vps = req.definition.spec.as_vps();
        // A VPS comes back from its newest snapshot (a restart keeps the user's files).
        let restored = match vps {
            Some(_) => self.restore_image(id).await,
            None => None,
        };
        if let Some(image) = &restored {
            tracing::info!(task_id = %id, %image, "VPS starts from its newest snapshot");
        }
        // An environment's newest version (not for a VPS restored from its snapshot).
        let env = match (&req.definition.image, &restored) {
            (
                ferry_common::task::Image {
                    registry_image: Some(r),
                    ..
                },
                _,
            ) if !r.is_empty() => None,
            (_, Some(_)) => None,
            (ferry_common::task::Image { container_name, .. }, None) => Some(
                container_name
                    .clone()
                    .unwrap_or_else(|| "kohakuriver-base".into()),
            ),
        };
        if let Some(env) = env {
            let ready = self.envs.ensure(id, &env).await;
            self.disk.changed();
            if let Err(e) = ready {
                self.report_failed(id, e).await;
                return None;
            }
        }
        let spec = self.spec(req, shared.as_deref(), restored);
        let name = spec.name.clone();
        if let Err(e) = self.engine.prepare(&spec).await {
            self.report_failed(id, e.to_string()).await;
            return None;
        }
        if let Err(e) = self.create_dirs(id, shared).await {
            self.report_failed(id, format!("cannot create the task's directories: {e}"))
                .await;
            return None;
        }
        if self.kill_requested(id) {
            self.report_killed(id).await;
            return None;
        }
        match self.engine.create(&spec).await {
            Ok(()) => {
                if let Some(vps) = vps {
                    if let Err(why) = self.prepare_vps(&name, &spec.image, vps).await {
                        let _ = self.engine.remove(&name).await;
                        self.report_failed(id, why).await;
                        return None;
                    }
                }
            }
            // A container of that name exists. Ours for this task (a dispatch repeated after a
            // restart): adopt it instead of running the task twice. Anyone else's: never
            // adopt, start, kill or remove it, since that would hand this task's result (and
            // control over the container) to something the runner did not start.
            Err(WorkloadError::Exists(_)) => match self.engine.labels(&name).await {
                Ok(labels) if self.is_own(&labels, id) => {
                    tracing::info!(task_id = %id, "container exists: adopting it")
                }
                Ok(_) => {
                    tracing::warn!(task_id = %id, container = %name, "a foreign container holds the task's name");
                    self.report_failed(id, foreign_container_message(&name))
                        .await;
                    return None;
                }
                Err(e) => {
                    self.report_failed(
                        id,
                        format!("cannot inspect existing container {name}: {e}"),
                    )
                    .await;
                    return None;
                }
            },
            Err(e) => {
                self.report_failed(id, format!("cannot create container: {e}"))
                    .await;
                return None;
            }
        }
        let logs = self.start_created(id, &name).await.ok()?;
        Some((name, logs))
    }

    /// The task's scratch directory and, with a shared filesystem, its `/shared` directory.
    async fn create_dirs(&self, id: TaskId, shared: Option<PathBuf>) -> std::io::Result<()> {
        let scratch_dir = scratch::task_dir(&self.config.local_temp_dir, id);
        tokio::task::spawn_blocking(move || {
            scratch::create_task_dir(&scratch_dir)?;
            match shared {
                Some(dir) => std::fs::create_dir_all(dir),
                None => Ok(()),
            }
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Whether a container with these labels is this runner's container of task `id`.
    fn is_own(&self, labels: &HashMap<String, String>, id: TaskId) -> bool {
        labels.get(LABEL_RUNNER_ID) == Some(&self.instance_id)
            && labels.get(LABEL_TASK_ID) == Some(&id.to_string())
    }

    /// Starts the container if it is only created, then reports `running`. A container
    /// started here has its output attached before the start, and that copy is returned.
    async fn start_created(&self, id: TaskId, name: &str) -> Result<Option<LogCopy>, NotStarted> {
        let mut logs = None;
        match self.engine.inspect(name).await {
            // Killed before it started: it must not run at all.
            Ok(State::Created) if self.kill_requested(id) => {
                let _ = self.engine.remove(name).await;
                self.report_killed(id).await;
                return Err(NotStarted);
            }
            Ok(State::Created) => {
                logs = self.attach_output(id, name).await;
                if let Err(e) = self.engine.start(name).await {
                    if let Some(copy) = logs {
                        copy.abort();
                    }
                    self.report_failed(id, format!("cannot start container: {e}"))
                        .await;
                    let _ = self.engine.remove(name).await;
                    return Err(NotStarted);
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.report_failed(id, format!("container vanished: {e}"))
                    .await;
                return Err(NotStarted);
            }
        }
        self.set_phase(id, Phase::Running);
        let now = ferry_common::time::now_ms();
        if let Err(e) = self
            .update_record(id, |r| {
                r.started_at_ms.get_or_insert(now);
            })
            .await
        {
            tracing::warn!(task_id = %id, error = %e, "cannot record the start time");
        }
        if self.kill_requested(id) {
            // The kill arrived between create and start.
            let _ = self.engine.kill(name).await;
        }
        let ssh_port = match self.is_ssh_vps(id) {
            true => self.ssh_port(name).await,
            false => None,
        };
        self.report_port(id, TaskStatus::Running, None, None, ssh_port)
            .await;
        tracing::info!(task_id = %id, "task running");
        Ok(logs)
    }

    /// The task's log files, their directory created.
    async fn log_files(&self, id: TaskId) -> (PathBuf, PathBuf) {
        let (stdout, stderr) = self.log_paths(id);
        if let Some(dir) = stdout.parent() {
            if let Err(e) = tokio::fs::create_dir_all(dir).await {
                tracing::warn!(task_id = %id, error = %e, "cannot create log directory");
            }
        }
        (stdout, stderr)
    }

    /// Attaches to a created container's output, before it starts: a live copy misses
    /// nothing, whereas one read back from the engine's log loses what the engine's size cap
    /// discards before it is read. `None` (logged) if the engine refuses; [`Self::follow`]
    /// then reads the engine's copy.
    async fn attach_output(&self, id: TaskId, name: &str) -> Option<LogCopy> {
        let (stdout, stderr) = self.log_files(id).await;
        match self
            .engine
            .attach_logs(name, stdout, stderr, self.config.max_log_size)
            .await
        {
            Ok(copy) => Some(tokio::spawn(copy)),
            Err(e) => {
                tracing::warn!(task_id = %id, error = %e, "cannot attach to the container's output; reading the engine's log instead");
                None
            }
        }
    }

    /// Waits for the exit, reports it and removes the container, with the output copied to
    /// the task's log files meanwhile (`logs`, or from the engine's copy of a container not
    /// started here). Returns the exit code.
    async fn follow(&self, id: TaskId, name: String, logs: Option<LogCopy>) -> Option<i64> {
        let logs = match logs {
            Some(copy) => copy,
            None => {
                let (stdout, stderr) = self.log_files(id).await;
                let engine = self.engine.clone();
                let log_name = name.clone();
                let max_log = self.config.max_log_size;
                tokio::spawn(async move {
                    engine
                        .capture_logs(&log_name, stdout, stderr, max_log)
                        .await
                })
            }
        };
        // A container adopted from a runner that kept no start time counts from now (only
        // then is the record written again).
        let unknown_start = self
            .table()
            .get(&id)
            .is_some_and(|e| e.record.started_at_ms.is_none());
        if unknown_start {
            let now = ferry_common::time::now_ms();
            let _ = self
                .update_record(id, |r| {
                    r.started_at_ms.get_or_insert(now);
                })
                .await;
        }
        let exit = loop {
            let deadline = self.deadline(id).filter(|_| !self.timed_out(id));
            let waited = match deadline {
                None => self.engine.wait(&name).await,
                Some((at, limit)) => {
                    let left = (at - ferry_common::time::now_ms()).max(0) as u64;
                    tokio::select! {
                        w = self.engine.wait(&name) => w,
                        _ = tokio::time::sleep(Duration::from_millis(left)) => {
                            self.time_out(id, &name, limit).await;
                            continue;
                        }
                    }
                }
            };
            match waited {
                Ok(exit) => break exit,
                Err(WorkloadError::NotFound(_)) => {
                    break Exit {
                        code: -1,
                        oom_killed: false,
                    }
                }
                Err(e) => {
                    tracing::warn!(task_id = %id, error = %e, "waiting for the container failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        match logs.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(task_id = %id, error = %e, "could not write all logs"),
            Err(e) => tracing::warn!(task_id = %id, error = %e, "log task failed"),
        }
        let (status, message) = match (self.stop_requested(id), self.deadline(id)) {
            (Some(stopped), _) => vps_final_status(exit, self.kill_requested(id), stopped),
            (None, Some((_, limit))) if self.timed_out(id) && !exit.oom_killed => (
                TaskStatus::TimedOut,
                Some(format!(
                    "Timed out: killed {limit} s after it started (timeout_seconds={limit})."
                )),
            ),
            (None, _) => final_status(exit, self.kill_requested(id)),
        };
        self.set_removing(id, true);
        self.report(id, status, Some(exit.code), message).await;
        tracing::info!(task_id = %id, %status, exit_code = exit.code, "task ended");
        if let Err(e) = self.engine.remove(&name).await {
            tracing::warn!(task_id = %id, error = %e, "could not remove container");
        }
        self.set_removing(id, false);
        Some(exit.code)
    }

    fn removing_container(&self, id: TaskId) -> bool {
        self.removing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    fn set_removing(&self, id: TaskId, on: bool) {
        let mut set = self.removing.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }

    /// Rebuilds the task table after a start: from the records on disk and the containers
    /// labelled with this runner's name. Call before serving requests or heartbeating.
    pub async fn recover(self: &Arc<Self>) -> Result<(), SupervisorError> {
        let dir = self.records_dir.clone();
        let records: Vec<(PathBuf, TaskRecord)> =
            tokio::task::spawn_blocking(move || durable::read_dir_json(&dir))
                .await
                .map_err(std::io::Error::other)??;
        let mut records: BTreeMap<TaskId, TaskRecord> = records
            .into_iter()
            .map(|(_, r)| (r.request.task_id, r))
            .collect();
        let local_temp = self.config.local_temp_dir.clone();
        tokio::task::spawn_blocking(move || scratch::purge_leftovers(&local_temp));
        let containers = self.engine.find(LABEL_RUNNER_ID, &self.instance_id).await?;
        let mut by_task: BTreeMap<TaskId, String> = BTreeMap::new();
        for (name, labels) in containers {
            if let Some(id) = labels
                .get(LABEL_TASK_ID)
                .and_then(|v| v.parse::<TaskId>().ok())
            {
                by_task.insert(id, name);
            }
        }
        let pending_reports = self.outbox.pending_tasks();
        for (id, name) in &by_task {
            let record = records.remove(id).unwrap_or_else(|| TaskRecord {
                request: adopted_request(*id),
                owner: None,
                seq: 0,
                kill_requested: false,
                stop_requested: false,
                started: true,
                finished: false,
                started_at_ms: None,
                timed_out: false,
            });
            self.adopt(*id, name.clone(), record).await;
        }
        for (id, record) in records {
            let (done, _) = watch::channel(None);
            if record.finished {
                if pending_reports.contains(&id) {
                    self.table().insert(
                        id,
                        Entry {
                            phase: Phase::Finished,
                            record,
                            done,
                        },
                    );
                } else {
                    self.forget_files(id);
                }
                continue;
            }
            let started = record.started;
            let req = record.request.clone();
            let owner = record.owner.clone();
            self.table().insert(
                id,
                Entry {
                    phase: Phase::Preparing,
                    record,
                    done,
                },
            );
            if started {
                tracing::warn!(task_id = %id, "container gone while the runner was down");
                self.report_failed(
                    id,
                    "The task's container disappeared while the runner was down.".into(),
                )
                .await;
            } else {
                tracing::info!(task_id = %id, "task accepted before the restart but never started: starting it");
                self.spawn_run(req, owner);
            }
        }
        let n = self.table().len();
        tracing::info!(tasks = n, "recovered task table");
        Ok(())
    }

    /// Takes over a container found at start: follows it if it runs, reports it if it ended.
    async fn adopt(self: &Arc<Self>, id: TaskId, name: String, record: TaskRecord) {
        let state = self.engine.inspect(&name).await;
        let phase = match state {
            Ok(State::Paused) => Phase::Paused,
            Ok(State::Created) => Phase::Preparing,
            _ => Phase::Running,
        };
        let (done, _) = watch::channel(None);
        let finished = record.finished;
        self.table().insert(
            id,
            Entry {
                phase,
                record,
                done,
            },
        );
        tracing::info!(task_id = %id, container = %name, state = ?state, "re-adopting container");
        let me = self.clone();
        tokio::spawn(async move {
            if finished {
                // Its final report was already made; only the container is left to remove.
                me.set_phase(id, Phase::Finished);
                me.set_removing(id, true);
                let _ = me.engine.remove(&name).await;
                me.set_removing(id, false);
                return;
            }
            let started = match state {
                Ok(State::Created) => me.start_created(id, &name).await,
                _ => Ok(None),
            };
            let exit = match started {
                Ok(logs) => me.follow(id, name, logs).await,
                Err(NotStarted) => None,
            };
            me.ended(id, exit);
        });
    }

    /// Kills a copy of a task the host no longer runs here, if the attempt held is at most
    /// `attempt` (a newer one may have been taken over since the host looked).
    pub async fn kill_stale(
        &self,
        id: TaskId,
        attempt: Option<u32>,
    ) -> Result<Option<i64>, SupervisorError> {
        let held = self
            .table()
            .get(&id)
            .map(|e| e.record.request.attempt)
            .ok_or(SupervisorError::Unknown(id))?;
        if let (Some(max), Some(held)) = (attempt, held) {
            if held > max {
                tracing::info!(task_id = %id, held, max, "kill of an older attempt: the newer one held stays");
                return Ok(None);
            }
        }
        self.kill_attempt(id, attempt).await
    }

    /// Kills a task and waits (briefly) until its container is gone; returns its exit code.
    pub async fn kill(&self, id: TaskId) -> Result<Option<i64>, SupervisorError> {
        self.kill_attempt(id, None).await
    }

    /// [`Self::kill`], remembering which attempts the kill was for (`None`: all).
    async fn kill_attempt(
        &self,
        id: TaskId,
        attempt: Option<u32>,
    ) -> Result<Option<i64>, SupervisorError> {
        {
            let mut killed = self.killed.lock().unwrap_or_else(|p| p.into_inner());
            let entry = killed.entry(id).or_insert(attempt);
            // A kill of every attempt is never narrowed by a later one of some attempts.
            *entry = match (*entry, attempt) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        let done = self.table().get(&id).map(|e| (e.done.subscribe(), e.phase));
        let Some((mut done, phase)) = done else {
            return Err(SupervisorError::Unknown(id));
        };
        if phase == Phase::Finished {
            return Ok(*done.borrow());
        }
        self.update_record(id, |r| r.kill_requested = true).await?;
        let name = self.container_of(id);
        match self.engine.kill(&name).await {
            Ok(()) | Err(WorkloadError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // A paused container only dies once thawed.
        let _ = self.engine.resume(&name).await;
        let waited =
            tokio::time::timeout(Duration::from_secs(10), done.wait_for(|d| d.is_some())).await;
        Ok(match waited {
            Ok(Ok(code)) => *code,
            _ => None,
        })
    }

    pub async fn pause(&self, id: TaskId, pause: bool) -> Result<(), SupervisorError> {
        let phase = self
            .table()
            .get(&id)
            .map(|e| e.phase)
            .ok_or(SupervisorError::Unknown(id))?;
        let name = self.container_of(id);
        match (pause, phase) {
            (true, Phase::Running) => {
                self.engine.pause(&name).await?;
                self.set_phase(id, Phase::Paused);
            }
            (false, Phase::Paused) => {
                self.engine.resume(&name).await?;
                self.set_phase(id, Phase::Running);
            }
            // Already as asked: idempotent, so a host that lost track can simply ask again.
            (true, Phase::Paused) | (false, Phase::Running) => {}
            (_, Phase::Preparing) => return Err(SupervisorError::WrongState(id, "still starting")),
            (_, Phase::Finished) => return Err(SupervisorError::WrongState(id, "finished")),
        }
        Ok(())
    }
}

/// Why a task cannot start when its container name is taken by a container this runner did
/// not start (no or another runner-id label).
pub fn foreign_container_message(name: &str) -> String {
    format!("a container named {name} exists and was not started by this runner; remove it or rename it")
}

/// The runner's instance id: read from `<data_dir>/runner-id`, created on first start.
fn instance_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("runner-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    durable::write_atomic(&path, id.as_bytes())?;
    Ok(id)
}

/// A stand-in request for a container found without its record (started by an older run whose
/// record was lost); it is never launched again, only followed.
fn adopted_request(id: TaskId) -> ExecuteRequest {
    let mut definition = TaskDefinition::command("");
    definition.resources.required_cores = 0;
    ExecuteRequest {
        task_id: id,
        definition,
        reserved_ip: None,
        owner: None,
        attempt: None,
        run: None,
    }
}

#[cfg(test)]
mod tests;
