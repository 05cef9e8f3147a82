//! `GET /api/health`: a one-second history of node health (60 samples), taken from the
//! in-memory registry, never from the database.

use super::Cluster;
use crate::store::nodes::NodeRow;
use ferry_common::api::{self, HealthAggregate, NodeHealth};
use ferry_common::time::{format_ms, now_ms};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEEP: usize = 60;

#[derive(Default)]
pub struct HealthHistory {
    samples: Mutex<VecDeque<(Vec<NodeHealth>, HealthAggregate)>>,
}

fn metric<'a>(row: &'a NodeRow, key: &str) -> Option<&'a Value> {
    row.metrics.as_ref().and_then(|m| m.get(key))
}

fn f64_metric(row: &NodeRow, key: &str) -> Option<f64> {
    metric(row, key).and_then(Value::as_f64)
}

fn u64_metric(row: &NodeRow, key: &str) -> Option<u64> {
    metric(row, key).and_then(Value::as_u64)
}

pub fn node_health(row: &NodeRow) -> NodeHealth {
    NodeHealth {
        hostname: row.hostname.clone(),
        status: if row.online { "online" } else { "offline" }.into(),
        last_heartbeat: row.last_heartbeat.map(format_ms),
        cpu_percent: f64_metric(row, "cpu_percent"),
        memory_percent: f64_metric(row, "memory_percent"),
        memory_used_bytes: u64_metric(row, "memory_used_bytes"),
        memory_total_bytes: u64_metric(row, "memory_total_bytes"),
        total_cores: row.total_cores,
        numa_topology: row.numa_topology.clone(),
        current_avg_temp: f64_metric(row, "current_avg_temp"),
        current_max_temp: f64_metric(row, "current_max_temp"),
        gpu_info: row.gpu_info.clone(),
    }
}

fn aggregate(rows: &[NodeRow]) -> HealthAggregate {
    let online: Vec<&NodeRow> = rows.iter().filter(|r| r.online).collect();
    let cores: u64 = online.iter().map(|r| u64::from(r.total_cores)).sum();
    let weighted_cpu: f64 = online
        .iter()
        .map(|r| f64_metric(r, "cpu_percent").unwrap_or(0.0) * f64::from(r.total_cores))
        .sum();
    let mems: Vec<f64> = online
        .iter()
        .filter_map(|r| f64_metric(r, "memory_percent"))
        .collect();
    let sum_of = |k: &str| -> f64 { online.iter().filter_map(|r| f64_metric(r, k)).sum() };
    let max_of = |k: &str| {
        online
            .iter()
            .filter_map(|r| f64_metric(r, k))
            .fold(0.0_f64, f64::max)
    };
    HealthAggregate {
        total_nodes: rows.len() as u64,
        online_nodes: online.len() as u64,
        total_cores: cores,
        total_mem_bytes: sum_of("memory_total_bytes") as u64,
        used_mem_bytes: sum_of("memory_used_bytes") as u64,
        avg_cpu_percent: if cores > 0 {
            weighted_cpu / cores as f64
        } else {
            0.0
        },
        avg_mem_percent: if mems.is_empty() {
            0.0
        } else {
            mems.iter().sum::<f64>() / mems.len() as f64
        },
        max_avg_cpu_temp: max_of("current_avg_temp"),
        max_max_cpu_temp: max_of("current_max_temp"),
        last_updated: format_ms(now_ms()),
    }
}

impl HealthHistory {
    pub async fn sample_forever(self: Arc<Self>, cluster: Arc<Cluster>) {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            let rows = cluster.snapshot();
            let nodes: Vec<NodeHealth> = rows.iter().map(node_health).collect();
            let agg = aggregate(&rows);
            let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            if s.len() == KEEP {
                s.pop_front();
            }
            s.push_back((nodes, agg));
        }
    }

    /// Every sample, oldest first.
    pub fn all(&self) -> api::HealthHistory {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        api::HealthHistory {
            nodes: s.iter().map(|(n, _)| n.clone()).collect(),
            aggregate: s.iter().map(|(_, a)| a.clone()).collect(),
        }
    }
}
