//! Nodes as `GET /api/nodes` shows them.

use crate::scheduler::View;
use crate::store::nodes::NodeRow;
use ferry_common::api::NodeInfo;
use ferry_common::time::format_ms;

pub fn node(n: &NodeRow, view: &View) -> NodeInfo {
    let usage = view.usage.get(&n.hostname).cloned().unwrap_or_default();
    let m = |k: &str| {
        n.metrics
            .as_ref()
            .and_then(|m| m.get(k))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    NodeInfo {
        hostname: n.hostname.clone(),
        url: n.url.clone(),
        total_cores: n.total_cores,
        cores_in_use: usage.cores,
        available_cores: if n.online {
            n.total_cores.saturating_sub(usage.cores)
        } else {
            0
        },
        status: if n.online {
            "online".into()
        } else {
            "offline".into()
        },
        last_heartbeat: n.last_heartbeat.map(format_ms),
        numa_topology: n.numa_topology.clone(),
        gpu_info: n.gpu_info.clone(),
        cpu_percent: m("cpu_percent").as_f64(),
        memory_percent: m("memory_percent").as_f64(),
        current_avg_temp: m("current_avg_temp").as_f64(),
        current_max_temp: m("current_max_temp").as_f64(),
        memory_used_bytes: m("memory_used_bytes").as_u64(),
        memory_total_bytes: m("memory_total_bytes").as_u64().or(n.memory_total_bytes),
        vm_capable: m("vm_capable").as_bool().unwrap_or(false),
        vfio_gpus: m("vfio_gpus").as_array().cloned().unwrap_or_default(),
        gpu_error: m("gpu_error").as_str().map(str::to_string),
        runner_version: n.runner_version.clone(),
        memory_reserved_bytes: usage.memory,
        tasks_holding: usage.tasks,
        disk_usage: n
            .metrics
            .as_ref()
            .and_then(|m| m.get("disk_usage"))
            .and_then(|d| serde_json::from_value(d.clone()).ok()),
    }
}
