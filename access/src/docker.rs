//! Docker's side of going into a container, through the engine's API (no `docker` CLI, no
//! shell line): a shell on a TTY through the exec API, and where a running container's root
//! and network namespace are on this machine.

use crate::tty::{TtyControl, TtyError, TtySession};
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::ContainerArchiveInfoOptionsBuilder;
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::time::Duration;

fn engine(e: BollardError) -> TtyError {
    TtyError::Engine(e.to_string())
}

/// Why a container cannot be entered.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("{0}")]
    Engine(String),
}

/// A listed container's name (the engine lists `/name`).
pub fn listed_name(c: &bollard::models::ContainerSummary) -> Option<String> {
    let first = c.names.as_ref()?.first()?;
    Some(first.trim_start_matches('/').to_string())
}

/// A running container's init process as this machine sees it, and the image's default
/// user (`""` when none is set).
pub async fn init_process(docker: &Docker, name: &str) -> Result<(i64, String), EnterError> {
    let info = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| match e {
            BollardError::DockerResponseServerError {
                status_code: 404, ..
            } => EnterError::NotFound(name.to_string()),
            other => EnterError::Engine(other.to_string()),
        })?;
    let pid = info
        .state
        .unwrap_or_default()
        .pid
        .filter(|p| *p > 0)
        .ok_or_else(|| EnterError::NotRunning(name.to_string()))?;
    let user = info.config.and_then(|c| c.user).unwrap_or_default();
    Ok((pid, user))
}

/// The running container's root filesystem (`/proc/<pid>/root`) and its default user.
pub async fn fs_root(docker: &Docker, name: &str) -> Result<(PathBuf, String), EnterError> {
    let (pid, user) = init_process(docker, name).await?;
    Ok((PathBuf::from(format!("/proc/{pid}/root")), user))
}

/// Whether `path` exists in container `name` (asked through the archive API, so nothing runs
/// in the container).
pub async fn path_exists(docker: &Docker, name: &str, path: &str) -> Result<bool, EnterError> {
    let opts = ContainerArchiveInfoOptionsBuilder::default()
        .path(path)
        .build();
    match docker.get_container_archive_info(name, Some(opts)).await {
        Ok(_) => Ok(true),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            // The container itself missing is an error, a missing path an answer.
            match docker.inspect_container(name, None).await {
                Ok(_) => Ok(false),
                Err(_) => Err(EnterError::NotFound(name.to_string())),
            }
        }
        Err(e) => Err(EnterError::Engine(e.to_string())),
    }
}

/// Opens the first of `shells` that exists in container `name` on a TTY of `rows` x `cols`.
pub async fn open_first_shell(
    docker: &Docker,
    name: &str,
    shells: &[&str],
    rows: u16,
    cols: u16,
) -> Result<TtySession, TtyError> {
    for shell in shells {
        let exists = path_exists(docker, name, shell)
            .await
            .map_err(|e| TtyError::Engine(e.to_string()))?;
        if exists {
            return open(docker, name, shell, rows, cols).await;
        }
    }
    Err(TtyError::NoShell(shells.join(", ")))
}

/// Starts `shell` with a TTY in container `name`, sized `rows` x `cols`.
pub async fn open(
    docker: &Docker,
    name: &str,
    shell: &str,
    rows: u16,
    cols: u16,
) -> Result<TtySession, TtyError> {
    let exec = docker
        .create_exec(
            name,
            CreateExecOptions {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(true),
                cmd: Some(vec![shell.to_string()]),
                env: Some(vec!["TERM=xterm-256color".to_string()]),
                ..Default::default()
            },
        )
        .await
        .map_err(engine)?;
    let started = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty: true,
                output_capacity: None,
            }),
        )
        .await
        .map_err(engine)?;
    let StartExecResults::Attached { output, input } = started else {
        return Err(TtyError::Engine("exec did not attach".into()));
    };
    let control = DockerTty {
        docker: docker.clone(),
        exec: exec.id,
    };
    // The TTY exists once the exec runs; size it before the first prompt is drawn.
    let _ = control.resize_now(rows, cols).await;
    let output = output
        .filter_map(|item| async move {
            match item {
                Ok(LogOutput::StdOut { message })
                | Ok(LogOutput::StdErr { message })
                | Ok(LogOutput::Console { message }) => Some(Ok(message)),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
            }
        })
        .boxed();
    Ok(TtySession {
        output,
        input,
        control: Box::new(control),
    })
}

struct DockerTty {
    docker: Docker,
    exec: String,
}

impl DockerTty {
    async fn resize_now(&self, rows: u16, cols: u16) -> Result<(), TtyError> {
        self.docker
            .resize_exec(
                &self.exec,
                ResizeExecOptions {
                    height: rows.max(1),
                    width: cols.max(1),
                },
            )
            .await
            .map_err(engine)
    }

    /// The shell's process id on the node (it leads its own process group on the TTY).
    async fn pid(&self) -> Option<i32> {
        let info = self.docker.inspect_exec(&self.exec).await.ok()?;
        if info.running != Some(true) {
            return None;
        }
        info.pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
    }
}

impl TtyControl for DockerTty {
    fn resize(&self, rows: u16, cols: u16) -> BoxFuture<'_, Result<(), TtyError>> {
        Box::pin(self.resize_now(rows, cols))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(pid) = self.pid().await else {
                return;
            };
            use nix::sys::signal::{killpg, Signal};
            use nix::unistd::Pid;
            // Hang up the session's process group, as a closed terminal does; what ignores it
            // is killed a moment later.
            let group = Pid::from_raw(pid);
            let _ = killpg(group, Signal::SIGHUP);
            let _ = nix::sys::signal::kill(group, Signal::SIGHUP);
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.pid().await.is_none() {
                    return;
                }
            }
            let _ = killpg(group, Signal::SIGKILL);
            let _ = nix::sys::signal::kill(group, Signal::SIGKILL);
        })
    }
}
