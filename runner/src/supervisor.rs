//! The supervisor alone owns this node's task table. For each task it drives one lifecycle —
//! image, container, start, log capture, wait, exit mapping, report, clean-up — and it answers
//! kill, pause and resume. Every state change is reported through the outbox.

use crate::config::RunnerConfig;
use crate::docker::{ContainerSpec, DockerError, Engine, Exit, State};
use crate::outbox::Outbox;
use ferry_common::runner_proto::{ExecuteRequest, TaskUpdate};
use ferry_common::time::{format_ms, now_ms};
use ferry_common::{
    environment_image, task_container_name, TaskId, TaskStatus, LABEL_KIND, LABEL_RUNNER,
    LABEL_TASK_ID,
};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preparing,
    Running,
    Paused,
}

struct Entry {
    phase: Phase,
    kill_requested: bool,
    seq: u64,
    /// Set to the exit code once the task's container is gone.
    done: watch::Receiver<Option<i64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("task {0} is not running on this node")]
    Unknown(TaskId),
    #[error("task {0} is {1}")]
    WrongState(TaskId, &'static str),
    #[error(transparent)]
    Docker(#[from] DockerError),
}

pub struct Supervisor {
    engine: Engine,
    outbox: Arc<Outbox>,
    config: Arc<RunnerConfig>,
    tasks: Mutex<HashMap<TaskId, Entry>>,
    /// Tasks killed before their container existed: a late or repeated execute must not start them.
    killed: Mutex<HashSet<TaskId>>,
}

/// How a finished container maps to a task state: the engine's OOM flag first (never guessed
/// from exit code 137), then a kill we were asked for, then the exit code.
pub fn final_status(exit: Exit, kill_requested: bool) -> (TaskStatus, Option<String>) {
    if exit.oom_killed {
        (
            TaskStatus::KilledOom,
            Some("Killed by the kernel OOM killer (memory limit exceeded).".into()),
        )
    } else if kill_requested {
        (TaskStatus::Killed, Some("Kill requested by user.".into()))
    } else if exit.code == 0 {
        (TaskStatus::Completed, None)
    } else {
        (
            TaskStatus::Failed,
            Some(format!("Exited with code {}.", exit.code)),
        )
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
    pub fn new(engine: Engine, outbox: Arc<Outbox>, config: Arc<RunnerConfig>) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            engine,
            outbox,
            config,
            tasks: Mutex::new(HashMap::new()),
            killed: Mutex::new(HashSet::new()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Entry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Tasks with a live container (running or paused): what heartbeats list.
    pub fn live_tasks(&self) -> Vec<TaskId> {
        self.table()
            .iter()
            .filter(|(_, e)| e.phase != Phase::Preparing)
            .map(|(id, _)| *id)
            .collect()
    }

    fn report(
        &self,
        id: TaskId,
        status: TaskStatus,
        exit_code: Option<i64>,
        message: Option<String>,
    ) {
        let seq = {
            let mut table = self.table();
            match table.get_mut(&id) {
                Some(e) => {
                    e.seq += 1;
                    e.seq
                }
                None => 1,
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
            ssh_port: None,
            seq: Some(seq),
        };
        self.outbox.push(update);
    }

    /// Accepts a task; idempotent, so the host may resend a dispatch it is unsure about.
    pub fn execute(self: &Arc<Self>, req: ExecuteRequest) {
        let id = req.task_id;
        if self
            .killed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
        {
            tracing::info!(task_id = %id, "execute for a task already killed: ignored");
            return;
        }
        let (done_tx, done_rx) = watch::channel(None);
        {
            let mut table = self.table();
            if table.contains_key(&id) {
                return;
            }
            table.insert(
                id,
                Entry {
                    phase: Phase::Preparing,
                    kill_requested: false,
                    seq: 0,
                    done: done_rx,
                },
            );
        }
        let me = self.clone();
        tokio::spawn(async move {
            let exit_code = me.lifecycle(req).await;
            me.table().remove(&id);
            let _ = done_tx.send(Some(exit_code.unwrap_or(-1)));
        });
    }

    fn kill_requested(&self, id: TaskId) -> bool {
        self.table()
            .get(&id)
            .map(|e| e.kill_requested)
            .unwrap_or(true)
    }

    fn set_phase(&self, id: TaskId, phase: Phase) {
        if let Some(e) = self.table().get_mut(&id) {
            e.phase = phase;
        }
    }

    fn spec(&self, req: &ExecuteRequest) -> ContainerSpec {
        let image = match (&req.registry_image, &req.container_name) {
            (Some(img), _) => img.clone(),
            (None, Some(env)) => environment_image(env),
            (None, None) => environment_image("kohakuriver-base"),
        };
        let mut env: Vec<String> = req
            .env_vars
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("FERRY_TASK_ID={}", req.task_id));
        env.push(format!("KOHAKURIVER_TASK_ID={}", req.task_id));
        env.push("KOHAKURIVER_LOCAL_TEMP_DIR=/local_temp".into());
        let mut binds = vec![format!(
            "{}:/local_temp",
            self.config.local_temp_dir.display()
        )];
        if let Some(shared) = &self.config.shared_dir {
            binds.push(format!("{}:/shared", shared.join("shared_data").display()));
            env.push("KOHAKURIVER_SHARED_DIR=/shared".into());
        }
        let labels = HashMap::from([
            (LABEL_TASK_ID.to_string(), req.task_id.to_string()),
            (LABEL_KIND.to_string(), "command".to_string()),
            (LABEL_RUNNER.to_string(), self.config.name.clone()),
        ]);
        ContainerSpec {
            name: task_container_name(req.task_id),
            image,
            cmd: container_cmd(&req.command, &req.arguments),
            env,
            working_dir: req.working_dir.clone().or_else(|| {
                self.config
                    .shared_dir
                    .as_ref()
                    .map(|_| "/shared".to_string())
            }),
            labels,
            nano_cpus: (req.required_cores > 0)
                .then(|| i64::from(req.required_cores) * 1_000_000_000),
            memory_bytes: req.required_memory_bytes.map(|m| m as i64),
            binds,
        }
    }

    fn log_paths(&self, id: TaskId) -> (PathBuf, PathBuf) {
        let dir = self.config.log_dir().join(id.to_string());
        (dir.join("stdout.log"), dir.join("stderr.log"))
    }

    /// Runs one task to its end; returns the exit code when a container ran.
    async fn lifecycle(&self, req: ExecuteRequest) -> Option<i64> {
        let id = req.task_id;
        let spec = self.spec(&req);
        let name = spec.name.clone();
        if let Err(e) = self.engine.ensure_image(&spec.image).await {
            self.report(id, TaskStatus::Failed, None, Some(e.to_string()));
            return None;
        }
        let (stdout, stderr) = self.log_paths(id);
        if let Some(dir) = stdout.parent() {
            if let Err(e) = tokio::fs::create_dir_all(dir).await {
                self.report(
                    id,
                    TaskStatus::Failed,
                    None,
                    Some(format!(
                        "cannot create log directory {}: {e}",
                        dir.display()
                    )),
                );
                return None;
            }
        }
        if let Err(e) = tokio::fs::create_dir_all(&self.config.local_temp_dir).await {
            tracing::warn!(error = %e, "cannot create local_temp_dir");
        }
        if self.kill_requested(id) {
            self.report(
                id,
                TaskStatus::Killed,
                None,
                Some("Kill requested by user.".into()),
            );
            return None;
        }
        match self.engine.create(&spec).await {
            Ok(()) => {}
            // A container of this task already exists (a dispatch repeated after a restart):
            // adopt it instead of running the task twice.
            Err(DockerError::Exists(_)) => {
                tracing::info!(task_id = %id, "container exists: adopting it")
            }
            Err(e) => {
                self.report(
                    id,
                    TaskStatus::Failed,
                    None,
                    Some(format!("cannot create container: {e}")),
                );
                return None;
            }
        }
        match self.engine.state(&name).await {
            Ok(State::Created) => {
                if let Err(e) = self.engine.start(&name).await {
                    self.report(
                        id,
                        TaskStatus::Failed,
                        None,
                        Some(format!("cannot start container: {e}")),
                    );
                    let _ = self.engine.remove(&name).await;
                    return None;
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.report(
                    id,
                    TaskStatus::Failed,
                    None,
                    Some(format!("container vanished: {e}")),
                );
                return None;
            }
        }
        self.set_phase(id, Phase::Running);
        if self.kill_requested(id) {
            // The kill arrived between create and start.
            let _ = self.engine.kill(&name).await;
        }
        self.report(id, TaskStatus::Running, None, None);
        tracing::info!(task_id = %id, image = %spec.image, "task started");

        let engine = self.engine.clone();
        let log_name = name.clone();
        let logs = tokio::spawn(async move { engine.copy_logs(&log_name, stdout, stderr).await });
        let exit = loop {
            match self.engine.wait_exit(&name).await {
                Ok(exit) => break exit,
                Err(DockerError::NoSuchContainer(_)) => {
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
        let (status, message) = final_status(exit, self.kill_requested(id));
        self.report(id, status, Some(exit.code), message);
        tracing::info!(task_id = %id, %status, exit_code = exit.code, "task ended");
        if let Err(e) = self.engine.remove(&name).await {
            tracing::warn!(task_id = %id, error = %e, "could not remove container");
        }
        Some(exit.code)
    }

    /// Kills a task and waits (briefly) until its container is gone; returns its exit code.
    pub async fn kill(&self, id: TaskId) -> Result<Option<i64>, SupervisorError> {
        let done = {
            let mut table = self.table();
            match table.get_mut(&id) {
                Some(e) => {
                    e.kill_requested = true;
                    Some(e.done.clone())
                }
                None => None,
            }
        };
        self.killed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        let Some(mut done) = done else {
            return Err(SupervisorError::Unknown(id));
        };
        let name = task_container_name(id);
        match self.engine.kill(&name).await {
            Ok(()) | Err(DockerError::NoSuchContainer(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // A paused container only dies once thawed.
        let _ = self.engine.unpause(&name).await;
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
        let name = task_container_name(id);
        match (pause, phase) {
            (true, Phase::Running) => {
                self.engine.pause(&name).await?;
                self.set_phase(id, Phase::Paused);
            }
            (false, Phase::Paused) => {
                self.engine.unpause(&name).await?;
                self.set_phase(id, Phase::Running);
            }
            (true, Phase::Paused) => return Err(SupervisorError::WrongState(id, "already paused")),
            (false, Phase::Running) => return Err(SupervisorError::WrongState(id, "not paused")),
            (_, Phase::Preparing) => return Err(SupervisorError::WrongState(id, "still starting")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_mapping_asks_the_oom_flag_not_the_code() {
        let e = |code, oom| Exit {
            code,
            oom_killed: oom,
        };
        assert_eq!(final_status(e(0, false), false).0, TaskStatus::Completed);
        assert_eq!(final_status(e(3, false), false).0, TaskStatus::Failed);
        assert_eq!(final_status(e(137, false), false).0, TaskStatus::Failed);
        assert_eq!(final_status(e(137, true), false).0, TaskStatus::KilledOom);
        assert_eq!(final_status(e(137, false), true).0, TaskStatus::Killed);
        assert_eq!(final_status(e(137, true), true).0, TaskStatus::KilledOom);
    }

    #[test]
    fn arguments_are_positional_not_spliced() {
        assert_eq!(
            container_cmd("echo hi", &[]),
            vec!["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            container_cmd("echo", &["a b".into(), "$(x)".into()]),
            vec!["/bin/sh", "-c", "echo \"$@\"", "sh", "a b", "$(x)"]
        );
    }
}
