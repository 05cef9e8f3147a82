//! Nodes and their health: `GET /api/nodes`, `GET /api/health`.

use serde::{Deserialize, Serialize};

/// A node as `GET /api/nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub hostname: String,
    pub url: String,
    pub total_cores: u32,
    /// Always a number (the original sent the string "N/A" for offline nodes).
    pub cores_in_use: u32,
    pub available_cores: u32,
    pub status: String,
    pub last_heartbeat: Option<String>,
    pub numa_topology: serde_json::Value,
    pub gpu_info: Vec<serde_json::Value>,
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    pub current_avg_temp: Option<f64>,
    pub current_max_temp: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub vm_capable: bool,
    pub vfio_gpus: Vec<serde_json::Value>,
    /// Ferry: why the node's GPU discovery is failing, if it is (`gpu_info` then holds the
    /// last good inventory, for the runner's `gpu_failure_grace`).
    #[serde(default)]
    pub gpu_error: Option<String>,
    pub runner_version: Option<String>,
    /// Ferry extensions: memory booked by tasks on the node, and tasks holding resources there.
    pub memory_reserved_bytes: u64,
    pub tasks_holding: u32,
    /// Ferry: the node's disk taken by environments and snapshots, as its runner last
    /// measured it (absent until measured, and from runners that do not report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_usage: Option<crate::runner_proto::RunnerDiskUsage>,
}

/// One node in `GET /api/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeHealth {
    pub hostname: String,
    pub status: String,
    pub last_heartbeat: Option<String>,
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub total_cores: u32,
    pub numa_topology: serde_json::Value,
    pub current_avg_temp: Option<f64>,
    pub current_max_temp: Option<f64>,
    pub gpu_info: Vec<serde_json::Value>,
}

/// The cluster at one sample of `GET /api/health` (camelCase, as the original's dashboard reads it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HealthAggregate {
    pub total_nodes: u64,
    pub online_nodes: u64,
    pub total_cores: u64,
    pub total_mem_bytes: u64,
    pub used_mem_bytes: u64,
    pub avg_cpu_percent: f64,
    pub avg_mem_percent: f64,
    pub max_avg_cpu_temp: f64,
    pub max_max_cpu_temp: f64,
    pub last_updated: String,
}

/// `GET /api/health` without `hostname`: the recent samples, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthHistory {
    pub nodes: Vec<Vec<NodeHealth>>,
    pub aggregate: Vec<HealthAggregate>,
}

/// `GET /api/health`: the history, or one node's current health when `hostname` is given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum HealthResponse {
    History(HealthHistory),
    Node(Vec<NodeHealth>),
}
