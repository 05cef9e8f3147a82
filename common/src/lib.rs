//! Types and pure helpers shared by every Ferry crate.
//!
//! What lives here: the wire types of the host API ([`api`]) and of the runner protocol
//! ([`runner_proto`]), task ids ([`ids`]), task states and their allowed transitions
//! ([`status`]), the task model ([`task`]: what a command or VPS asks for), the target syntax ([`target`]), byte-size and duration parsing ([`units`]),
//! timestamps ([`time`]), the JSON error shape ([`error`]) and a log-tail reader ([`logtail`]).
//! No async runtime and no network I/O: the host, the runner and the CLI talk only through these.
//! The one exception is the `daemon` feature ([`daemon`], [`serve`]): start-up helpers and the
//! HTTP accept loop the two daemons share (config files, logging, signals, header timeout and
//! connection cap), which the CLI does not enable.

pub mod api;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod envs;
pub mod error;
pub mod ids;
pub mod logtail;
pub mod runner_proto;
pub mod secret;
#[cfg(feature = "daemon")]
pub mod serve;
#[cfg(feature = "ssh")]
pub mod ssh;
pub mod status;
pub mod target;
pub mod task;
pub mod time;
pub mod tunnel;
pub mod units;

pub use error::ErrorBody;
pub use ids::TaskId;
pub use status::TaskStatus;
pub use task::{ApprovalStatus, Role, TaskKind};

/// The version both daemons report (registration, heartbeats, `--version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Docker label carrying the task id on every container Ferry starts.
pub const LABEL_TASK_ID: &str = "ferry.task_id";
/// Docker label carrying the kind of workload (`command`, `vps`).
pub const LABEL_KIND: &str = "ferry.kind";
/// Docker label carrying the name of the runner that started the container.
pub const LABEL_RUNNER: &str = "ferry.runner";
/// Docker label carrying the runner's instance id (random, kept in its data dir), so runners
/// sharing one engine — even under the same name, in different clusters — only ever adopt
/// their own containers.
pub const LABEL_RUNNER_ID: &str = "ferry.runner_id";

/// Container name of a command task (kept from the original so its tooling still finds them).
pub fn task_container_name(id: TaskId) -> String {
    format!("kohakuriver-task-{id}")
}

/// Container name of a Docker VPS (the original's name).
pub fn vps_container_name(id: TaskId) -> String {
    format!("kohakuriver-vps-{id}")
}

/// Container name of a task of either kind.
pub fn container_name(id: TaskId, kind: TaskKind) -> String {
    match kind {
        TaskKind::Command => task_container_name(id),
        TaskKind::Vps => vps_container_name(id),
    }
}

/// Image repository holding a VPS's snapshots (tags are Unix seconds).
pub fn snapshot_repository(id: TaskId) -> String {
    format!("kohakuriver-snapshot/vps-{id}")
}

/// Image tag an environment name resolves to.
pub fn environment_image(container_name: &str) -> String {
    format!("kohakuriver/{container_name}:base")
}
