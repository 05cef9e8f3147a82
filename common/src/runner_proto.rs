//! The runner protocol: what a runner sends the host (register, heartbeat, status updates) and
//! what the host sends a runner (execute, kill, pause, resume). Field names follow the original
//! so mixed clusters keep talking; every call carries `Authorization: Bearer <cluster secret>`.

use crate::task::TaskDefinition;
use crate::{TaskId, TaskStatus};
use serde::{Deserialize, Serialize};

/// `POST <host>/api/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    pub hostname: String,
    pub url: String,
    pub total_cores: u32,
    #[serde(default)]
    pub total_ram_bytes: Option<u64>,
    #[serde(default)]
    pub numa_topology: Option<serde_json::Value>,
    #[serde(default)]
    pub gpu_info: Vec<serde_json::Value>,
    #[serde(default)]
    pub runner_version: Option<String>,
    /// The runner's heartbeat period in milliseconds, so the host can judge silence by it.
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    pub message: String,
    pub created: bool,
    /// Ferry: the runner's own credential, issued at its first registration only. The runner
    /// keeps it and sends it as [`RUNNER_CREDENTIAL_HEADER`] on every later call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(default)]
    pub overlay: Option<serde_json::Value>,
}

/// The header carrying a runner's credential (beside the cluster secret) on its calls.
pub const RUNNER_CREDENTIAL_HEADER: &str = "x-ferry-runner-credential";

/// `PUT <host>/api/heartbeat/{hostname}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Heartbeat {
    /// Every task the runner currently has a container for (running or paused).
    pub running_tasks: Vec<TaskId>,
    pub killed_tasks: Vec<KilledTask>,
    /// Ferry: the subset of `running_tasks` that is paused.
    pub paused_tasks: Option<Vec<TaskId>>,
    /// Ferry: every task the runner holds state for (preparing, running, paused, or ended with
    /// its final report not yet acknowledged). A task the host placed on this node that stays
    /// absent from this list is gone from the node. `None` from runners that do not send it.
    pub known_tasks: Option<Vec<TaskId>>,
    /// Ferry: the placement attempt the runner holds for each of its known tasks (see
    /// [`ExecuteRequest::attempt`]). `None` from runners that do not send it.
    pub attempts: Option<Vec<TaskAttempt>>,
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub current_avg_temp: Option<f64>,
    pub current_max_temp: Option<f64>,
    pub gpu_info: Vec<serde_json::Value>,
    /// Ferry: why GPU discovery is failing (the GPUs listed are then the last good ones).
    pub gpu_error: Option<String>,
    pub vm_capable: bool,
    pub vfio_gpus: Option<Vec<serde_json::Value>>,
    pub runner_version: Option<String>,
    /// Ferry: the tasks the runner has accepted but not started yet, with what each waits for.
    pub preparing: Option<Vec<TaskPreparing>>,
    /// Ferry: the node's disk taken by environments and snapshots (refreshed every few
    /// heartbeats; `None` until first measured).
    pub disk_usage: Option<RunnerDiskUsage>,
}

/// One task in [`Heartbeat::preparing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskPreparing {
    pub task_id: TaskId,
    #[serde(flatten)]
    pub progress: crate::api::Preparing,
}

/// What environments and snapshots take on a runner's disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct RunnerDiskUsage {
    /// Environment images (`kohakuriver/<env>:base`), each at its full size as the engine
    /// reports it (layers shared between environments count once per environment).
    pub environment_images_bytes: u64,
    pub environment_images: u32,
    /// Environment tarballs being downloaded (partial files in the runner's data dir).
    pub environment_downloads_bytes: u64,
    /// VPS snapshots: the layer each snapshot adds to the image it was taken from.
    pub snapshot_bytes: u64,
    pub snapshots: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KilledTask {
    pub task_id: TaskId,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct HeartbeatResponse {
    pub message: String,
    /// Tasks the runner still runs that the host already considers ended (killed while the
    /// runner was unreachable, say): the runner kills them.
    pub kill_tasks: Vec<TaskId>,
    /// Ferry: for a task of `kill_tasks` listed here, kill it only if the attempt the runner
    /// holds is at most this one (a newer attempt may have reached the runner meanwhile).
    pub kill_attempts: Vec<TaskAttempt>,
}

/// One placement attempt of a task: the fencing number of [`ExecuteRequest::attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskAttempt {
    pub task_id: TaskId,
    pub attempt: u32,
}

/// `POST <runner>/api/execute`. Idempotent on the runner: a task id it already has is accepted
/// again without starting a second container. The definition is flattened, so the wire keeps
/// the original's flat keys (`command`, `required_cores`, `container_name`, ...) plus
/// `task_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecuteRequest {
    pub task_id: TaskId,
    #[serde(flatten)]
    pub definition: TaskDefinition,
    #[serde(default)]
    pub reserved_ip: Option<String>,
    /// Ferry: the user name of the task's owner (the runner mounts their `/shared` directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Ferry: which placement of the task this is (1 for the first, one more each time the
    /// host places it again). A runner refuses an attempt older than one it holds, and its
    /// reports and heartbeats carry the attempt, so a late dispatch of a task since placed
    /// elsewhere is recognised and killed instead of running twice. `None`: not fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Ferry: which run of the task this is (1 for the first, one more for each retry). Each
    /// run writes its own logs ([`crate::task::log_dir`]); a runner never lets a copy of an
    /// earlier run stand in for a new one. `None`: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u32>,
}

/// `POST <runner>/api/kill|pause|resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControlRequest {
    pub task_id: TaskId,
    #[serde(default)]
    pub container_name: Option<String>,
}

/// `POST <host>/api/update`: one status report from a runner. `seq` numbers a task's reports in
/// the order the runner made them, so the host can drop duplicates and stale ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskUpdate {
    pub task_id: TaskId,
    pub status: TaskStatus,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default)]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub seq: Option<u64>,
    /// Ferry: the reporting runner's name, so a report from a node the task has left (after
    /// it was placed again elsewhere) is recognised and ignored.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Ferry: the placement attempt reported on; a report of another attempt than the host's
    /// current one is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// Largest file the file routes write (`/api/fs/{id}/write`), on the host and the runner.
pub const FS_MAX_WRITE: usize = 50 * 1024 * 1024;
/// Largest write request body: [`FS_MAX_WRITE`] bytes as base64, and the JSON around them.
pub const FS_MAX_WRITE_BODY: usize = FS_MAX_WRITE / 3 * 4 + 64 * 1024 + 8;

/// `GET <runner>/api/tasks/{id}/stdout|stderr?lines=N` and the host route of the same shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogQuery {
    pub lines: Option<usize>,
    /// Ferry: keep the response open and send output as it is written, until the task has
    /// ended and all of it is sent.
    #[serde(default)]
    pub follow: Option<bool>,
    /// Ferry (runner, with `follow`): start at this byte instead of the last `lines` lines
    /// (the host resuming a follow it lost).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Ferry: the output of this attempt (run) of the task, 1 for the first; default: the
    /// latest.
    #[serde(default)]
    pub attempt: Option<u32>,
}
