//! Wire types of the VPS routes (`/api/vps/*`): create, the lists, assignments, snapshots.
//! Shapes are the original's; Ferry's additions are marked.

use super::NodeRef;
use crate::task::{SshKeyMode, VpsBackend};
use crate::{TaskId, TaskStatus};
use serde::{Deserialize, Serialize};

/// Body of `POST /api/vps/create`. Numbers are signed so a negative one gets a message naming
/// the field; the modes are read as text so an unknown one does too.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct VpsCreateRequest {
    pub name: Option<String>,
    pub required_cores: Option<i64>,
    pub required_gpus: Option<Vec<i64>>,
    pub required_memory_bytes: Option<i64>,
    pub target_hostname: Option<String>,
    pub target_numa_node_id: Option<i64>,
    pub container_name: Option<String>,
    pub registry_image: Option<String>,
    /// `disabled` (default), `none`, `upload`, `generate`.
    pub ssh_key_mode: Option<String>,
    pub ssh_public_key: Option<String>,
    pub ip_reservation_token: Option<String>,
    /// `docker` (default) or `qemu`.
    pub vps_backend: Option<String>,
    pub vm_image: Option<String>,
    pub vm_disk_size: Option<String>,
    pub memory_mb: Option<i64>,
    /// Ferry: wait in the queue when no node has room now (default: refuse at once).
    pub queue: Option<bool>,
}

/// Reply of `POST /api/vps/create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VpsCreateResponse {
    pub message: String,
    pub task_id: TaskId,
    pub vps_backend: VpsBackend,
    pub ssh_key_mode: SshKeyMode,
    /// The port its sshd is published on (0 for `disabled`, or while not running yet).
    pub ssh_port: u16,
    pub assigned_node: Option<NodeRef>,
    pub runner_response: serde_json::Value,
    /// `generate` only: the private key, shown this once and kept nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<String>,
    /// Ferry: where it is now (`running`; `pending` while queued or awaiting approval,
    /// `assigning` while its runner prepares it).
    pub status: TaskStatus,
    /// Ferry: its place in the queue when it waits for resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
}

/// A user assigned to a VPS, as the lists show them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VpsAssignee {
    pub id: i64,
    pub username: String,
    pub display_name: Option<String>,
}

/// One VPS in `/api/vps` (all keys), `/api/vps/status` and `/api/vps/my` (without
/// `exit_code`, `error_message`, `completed_at`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VpsItem {
    pub task_id: TaskId,
    pub name: Option<String>,
    pub owner_id: Option<i64>,
    pub owner_username: Option<String>,
    pub assignees: Vec<VpsAssignee>,
    pub required_cores: u32,
    pub required_gpus: Vec<u32>,
    pub required_memory_bytes: Option<u64>,
    pub status: TaskStatus,
    pub assigned_node: Option<String>,
    pub target_numa_node_id: Option<u32>,
    pub container_name: Option<String>,
    pub ssh_port: Option<u16>,
    pub vps_backend: VpsBackend,
    pub vm_image: Option<String>,
    pub vm_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub submitted_at: Option<String>,
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Ferry: its place in the queue while it waits for resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
}

/// Reply of `POST /api/vps/{id}/assign` (the id is a number here, as in the original).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignResponse {
    pub message: String,
    pub task_id: u64,
    pub assigned_users: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignment {
    pub user_id: i64,
    pub username: String,
    pub display_name: Option<String>,
    pub assigned_at: String,
}

/// Reply of `GET /api/vps/{id}/assignments`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignmentsResponse {
    pub task_id: u64,
    pub assignments: Vec<Assignment>,
}

/// Reply of the VPS restart and stop routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VpsActionResponse {
    pub message: String,
    pub task_id: TaskId,
    /// Ferry: where the VPS is now.
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_response: Option<serde_json::Value>,
}

/// One snapshot of a VPS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Snapshot {
    /// The image reference, `kohakuriver-snapshot/vps-<id>:<timestamp>`.
    pub tag: String,
    pub task_id: TaskId,
    /// Unix seconds; the key of `DELETE /api/vps/snapshots/{id}/{timestamp}`.
    pub timestamp: i64,
    pub size: i64,
    pub created_at: String,
}

/// Reply of `GET /api/vps/snapshots/{id}` (newest first).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotList {
    pub task_id: TaskId,
    pub snapshots: Vec<Snapshot>,
    pub count: usize,
}

/// Reply of `POST /api/vps/snapshots/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotCreated {
    pub message: String,
    pub tag: String,
}

/// Reply of `GET /api/vps/snapshots/{id}/latest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LatestSnapshot {
    pub task_id: TaskId,
    pub tag: String,
}

/// Reply of `DELETE /api/vps/snapshots/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotsDeleted {
    pub message: String,
    pub deleted_count: usize,
}
