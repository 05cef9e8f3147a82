//! A shell on a TTY inside a container, through the engine's exec API (no `docker` CLI): the
//! Docker side of [`Workload::open_tty`](super::Workload::open_tty).

use super::{TtyControl, TtySession, WorkloadError, WorkloadResult};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::time::Duration;

fn engine(e: bollard::errors::Error) -> WorkloadError {
    WorkloadError::Engine(e.to_string())
}

/// Starts `shell` with a TTY in container `name`, sized `rows` x `cols`.
pub async fn open(
    docker: &Docker,
    name: &str,
    shell: &str,
    rows: u16,
    cols: u16,
) -> Result<TtySession, WorkloadError> {
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
        return Err(WorkloadError::Engine("exec did not attach".into()));
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
    async fn resize_now(&self, rows: u16, cols: u16) -> Result<(), WorkloadError> {
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
    fn resize(&self, rows: u16, cols: u16) -> WorkloadResult<'_, ()> {
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
