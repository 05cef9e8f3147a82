//! How stored rows look on the wire.

use crate::scheduler::View;
use crate::store::nodes::NodeRow;
use crate::store::tasks::TaskRow;
use ferry_common::api::{NodeInfo, TaskResponse};
use ferry_common::time::format_ms;
use std::path::Path;

pub fn task(t: &TaskRow, view: &View, shared_dir: Option<&Path>) -> TaskResponse {
    let log = |stream: &str| {
        shared_dir
            .map(|d| {
                d.join("logs")
                    .join(t.id.to_string())
                    .join(format!("{stream}.log"))
                    .display()
                    .to_string()
            })
            .unwrap_or_default()
    };
    TaskResponse {
        task_id: t.id,
        task_type: t.task_type.clone(),
        batch_id: t.batch_id,
        name: None,
        owner_id: t.owner_id,
        owner_username: t.owner_username.clone(),
        approval_status: t.approval_status.clone(),
        approved_by_id: t.approved_by_id,
        approved_by_username: t.approved_by_username.clone(),
        approved_at: t.approved_at.map(format_ms),
        rejection_reason: t.rejection_reason.clone(),
        command: t.command.clone(),
        arguments: t.arguments.clone(),
        env_vars: t.env_vars.clone(),
        required_cores: t.required_cores,
        required_gpus: t.required_gpus.clone(),
        required_memory_bytes: t.required_memory_bytes,
        target_numa_node_id: t.target_numa_node_id,
        status: t.status,
        assigned_node: t.assigned_node.clone().or(t.target_node.clone()),
        container_name: t.container_name.clone(),
        docker_image_name: t.docker_image_name.clone(),
        docker_privileged: t.privileged,
        docker_mount_dirs: t.mounts.clone(),
        ssh_port: None,
        vps_backend: "docker".into(),
        vm_image: None,
        vm_disk_size: None,
        vm_ip: None,
        stdout_path: log("stdout"),
        stderr_path: log("stderr"),
        exit_code: t.exit_code,
        error_message: t.error_message.clone(),
        submitted_at: Some(format_ms(t.submitted_at)),
        started_at: t.started_at.map(format_ms),
        completed_at: t.completed_at.map(format_ms),
        priority: t.priority,
        working_dir: t.working_dir.clone(),
        queue_position: view.queue.get(&t.id).copied(),
    }
}

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
        runner_version: n.runner_version.clone(),
        memory_reserved_bytes: usage.memory,
        tasks_holding: usage.tasks,
    }
}
