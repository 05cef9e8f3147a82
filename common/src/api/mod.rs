//! Wire types of the host's user-facing API (`/api/*`), shaped like KohakuRiver's so its clients
//! keep working: the body and reply of every route. Field order follows the original's
//! responses. Tasks and control here; accounts in [`auth`]; nodes and health in [`cluster`]; VPS
//! sessions, assignments and snapshots in [`vps`]; environments in [`envs`].

pub mod auth;
pub mod cluster;
pub mod envs;
pub mod events;
pub mod vps;

pub use auth::*;
pub use cluster::*;
pub use envs::*;
pub use events::*;
pub use vps::*;

use crate::task::{ApprovalStatus, RetryOn, TaskKind, VpsBackend};
use crate::{TaskId, TaskStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Body of `POST /api/submit`. Numbers are read as signed integers so that a negative value
/// gets a message about the field rather than a generic type error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct SubmitRequest {
    pub task_type: Option<String>,
    pub command: String,
    pub arguments: Vec<String>,
    pub env_vars: BTreeMap<String, String>,
    pub required_cores: Option<i64>,
    pub required_gpus: Option<Vec<Vec<i64>>>,
    pub required_memory_bytes: Option<i64>,
    pub targets: Option<Vec<String>>,
    pub container_name: Option<String>,
    pub registry_image: Option<String>,
    pub working_dir: Option<String>,
    pub privileged: Option<bool>,
    pub additional_mounts: Option<Vec<String>>,
    pub ip_reservation_token: Option<String>,
    /// Ferry extension: higher runs first; FIFO within one priority. Default 0.
    pub priority: Option<i64>,
    /// Ferry extension: the task is killed this many seconds after it starts and ends
    /// `timed_out` (1 up to the host's `max_task_timeout`; default `default_task_timeout`).
    pub timeout_seconds: Option<i64>,
    /// Ferry extension: run the task again up to this many times when an attempt ends in
    /// one of `retry_on` (0 up to the host's `max_task_retries`; default 0).
    pub max_retries: Option<i64>,
    /// Ferry extension: which endings are retried: `failed`, `lost`, `timed_out` (default
    /// `["failed", "lost"]`).
    pub retry_on: Option<Vec<String>>,
    /// Ferry extension: seconds before the first retry, doubled for each one after (default
    /// the host's `retry_backoff`; 0 up to 3600).
    pub retry_backoff_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeRef {
    pub hostname: String,
    pub url: String,
}

/// Reply of `POST /api/submit` (202).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitResponse {
    pub message: String,
    pub task_ids: Vec<TaskId>,
    /// The node of the last task when it was placed at once; null while it waits in the queue.
    pub assigned_node: Option<NodeRef>,
    pub runner_response: serde_json::Value,
    /// Ferry extension: tasks waiting for resources, with their queue positions (1 = next).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<QueuedTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueuedTask {
    pub task_id: TaskId,
    pub queue_position: u64,
}

/// A task as `/api/status/{id}` and `/api/tasks` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskResponse {
    pub task_id: TaskId,
    pub task_type: TaskKind,
    pub batch_id: Option<TaskId>,
    pub name: Option<String>,
    pub owner_id: Option<i64>,
    pub owner_username: Option<String>,
    pub approval_status: Option<ApprovalStatus>,
    pub approved_by_id: Option<i64>,
    pub approved_by_username: Option<String>,
    pub approved_at: Option<String>,
    pub rejection_reason: Option<String>,
    pub command: String,
    pub arguments: Vec<String>,
    pub env_vars: BTreeMap<String, String>,
    pub required_cores: u32,
    pub required_gpus: Vec<u32>,
    pub required_memory_bytes: Option<u64>,
    pub target_numa_node_id: Option<u32>,
    pub status: TaskStatus,
    pub assigned_node: Option<String>,
    pub container_name: Option<String>,
    pub docker_image_name: Option<String>,
    pub docker_privileged: bool,
    pub docker_mount_dirs: Vec<String>,
    pub ssh_port: Option<u16>,
    pub vps_backend: VpsBackend,
    pub vm_image: Option<String>,
    pub vm_disk_size: Option<String>,
    pub vm_ip: Option<String>,
    pub stdout_path: String,
    pub stderr_path: String,
    pub exit_code: Option<i64>,
    pub error_message: Option<String>,
    pub submitted_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// Ferry extensions.
    pub priority: i64,
    pub working_dir: Option<String>,
    /// 1-based place in the queue while the task is `pending`, else null.
    pub queue_position: Option<u64>,
    /// Its time limit (seconds after it started), if it has one.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Which attempt (run) of the task this is: 1 for the first, one more for each retry.
    #[serde(default)]
    pub attempt: u32,
    /// How many retries the task may have in all (see `retry_on`).
    #[serde(default)]
    pub max_retries: u32,
    /// Which endings of an attempt are retried (empty without retries).
    #[serde(default)]
    pub retry_on: Vec<RetryOn>,
    /// While the task waits out the backoff before its next attempt: when that may start.
    #[serde(default)]
    pub retry_at: Option<String>,
    /// How many times the task was placed on a node (0: never; more than one attempt or a
    /// node that never received it place it again).
    #[serde(default)]
    pub placements: u32,
    /// Ferry: while the task is `assigning` and its runner prepares it (an environment being
    /// fetched or loaded), what it waits for and how far along that is; else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparing: Option<Preparing>,
    /// Ferry: while the task is `pending`, why it is not running yet ("needs 4 cores;
    /// largest free 2 on node-a"); else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
}

/// One attempt of a task, as `GET /api/tasks/{id}/attempts` lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptSummary {
    /// 1 for the first.
    pub attempt: u32,
    /// How it ended (`failed`, `lost`, `timed_out`, ...), or the task's status for the
    /// attempt under way.
    pub status: TaskStatus,
    pub node: Option<String>,
    pub exit_code: Option<i64>,
    pub error_message: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// The attempt's output: `/api/tasks/{id}/stdout?attempt=N`.
    pub stdout_url: String,
    pub stderr_url: String,
}

/// Reply of `GET /api/tasks/{id}/attempts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskAttempts {
    pub task_id: TaskId,
    /// The current attempt.
    pub attempt: u32,
    pub max_retries: u32,
    /// Oldest first; the last is the current attempt.
    pub attempts: Vec<AttemptSummary>,
}

/// What a task accepted by its runner but not started yet is waiting for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Preparing {
    pub stage: PrepareStage,
    /// The environment being made ready, when that is what the task waits for.
    #[serde(default)]
    pub environment: Option<String>,
    /// Bytes of the stage's work done so far, of `bytes_total` (when known).
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: Option<u64>,
}

/// A stage of getting a task ready on its runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PrepareStage {
    /// Learning the environment's newest version, or waiting while another task's load of
    /// the same environment finishes.
    Checking,
    /// Fetching the environment's tarball from the host.
    Downloading,
    /// Checking the tarball against its recorded SHA-256.
    Verifying,
    /// Streaming the tarball into the container engine.
    Loading,
    /// Making the task's container (image, directories, start).
    Starting,
}

/// `{"message": ...}` replies of control routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageResponse {
    pub message: String,
}

/// `{"message", "task_id"}`: approval.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskMessage {
    pub message: String,
    pub task_id: TaskId,
}

/// Reply of `POST /api/reject/{task_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectResponse {
    pub message: String,
    pub task_id: TaskId,
    pub reason: Option<String>,
}

/// Body of `POST /api/reject/{task_id}` (the reason may also come as `?reason=`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Reply of `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse {
    pub status: String,
    pub version: String,
}

/// Reply of `GET /ready`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadyResponse {
    pub status: String,
}
