//! `GET /api/health`: a one-second history of node health (60 samples), taken from the
//! in-memory registry, never from the database.

use super::Cluster;
use crate::store::nodes::NodeRow;
use ferry_common::time::{format_ms, now_ms};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEEP: usize = 60;

#[derive(Default)]
pub struct HealthHistory {
    samples: Mutex<VecDeque<(Vec<Value>, Value)>>,
}

fn metric(row: &NodeRow, key: &str) -> Value {
    row.metrics
        .as_ref()
        .and_then(|m| m.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

pub fn node_health(row: &NodeRow) -> Value {
    json!({
        "hostname": row.hostname,
        "status": if row.online { "online" } else { "offline" },
        "last_heartbeat": row.last_heartbeat.map(format_ms),
        "cpu_percent": metric(row, "cpu_percent"),
        "memory_percent": metric(row, "memory_percent"),
        "memory_used_bytes": metric(row, "memory_used_bytes"),
        "memory_total_bytes": metric(row, "memory_total_bytes"),
        "total_cores": row.total_cores,
        "numa_topology": row.numa_topology,
        "current_avg_temp": metric(row, "current_avg_temp"),
        "current_max_temp": metric(row, "current_max_temp"),
        "gpu_info": row.gpu_info,
    })
}

fn aggregate(rows: &[NodeRow]) -> Value {
    let f = |r: &NodeRow, k: &str| metric(r, k).as_f64();
    let online: Vec<&NodeRow> = rows.iter().filter(|r| r.online).collect();
    let cores: u64 = online.iter().map(|r| u64::from(r.total_cores)).sum();
    let weighted_cpu: f64 = online
        .iter()
        .map(|r| f(r, "cpu_percent").unwrap_or(0.0) * f64::from(r.total_cores))
        .sum();
    let mems: Vec<f64> = online
        .iter()
        .filter_map(|r| f(r, "memory_percent"))
        .collect();
    let total_mem: f64 = online
        .iter()
        .filter_map(|r| f(r, "memory_total_bytes"))
        .sum();
    let used_mem: f64 = online
        .iter()
        .filter_map(|r| f(r, "memory_used_bytes"))
        .sum();
    let max_of = |k: &str| {
        online
            .iter()
            .filter_map(|r| f(r, k))
            .fold(0.0_f64, f64::max)
    };
    json!({
        "totalNodes": rows.len(),
        "onlineNodes": online.len(),
        "totalCores": cores,
        "totalMemBytes": total_mem as u64,
        "usedMemBytes": used_mem as u64,
        "avgCpuPercent": if cores > 0 { weighted_cpu / cores as f64 } else { 0.0 },
        "avgMemPercent": if mems.is_empty() { 0.0 } else { mems.iter().sum::<f64>() / mems.len() as f64 },
        "maxAvgCpuTemp": max_of("current_avg_temp"),
        "maxMaxCpuTemp": max_of("current_max_temp"),
        "lastUpdated": format_ms(now_ms()),
    })
}

impl HealthHistory {
    pub async fn sample_forever(self: Arc<Self>, cluster: Arc<Cluster>) {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            let rows = cluster.snapshot();
            let nodes: Vec<Value> = rows.iter().map(node_health).collect();
            let agg = aggregate(&rows);
            let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            if s.len() == KEEP {
                s.pop_front();
            }
            s.push_back((nodes, agg));
        }
    }

    /// `{"nodes": [[...] per sample], "aggregate": [...]}`, oldest first.
    pub fn all(&self) -> Value {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        json!({
            "nodes": s.iter().map(|(n, _)| Value::from(n.clone())).collect::<Vec<_>>(),
            "aggregate": s.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>(),
        })
    }
}
