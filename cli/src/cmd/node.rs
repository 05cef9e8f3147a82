//! `ferry node ...` and `ferry health`: the compute nodes and their last minute.

use crate::failure::{CliResult, Failure};
use crate::output::{self, Table};
use crate::session::Session;
use serde_json::Value;

#[derive(clap::Subcommand, Debug)]
pub enum NodeCmd {
    /// Every registered node, online or offline
    List,
    /// One node in full
    Show { hostname: String },
    /// Forget a node so its runner may register afresh (its tasks become lost)
    Remove { hostname: String },
}

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// Only this node
    #[arg(long)]
    pub node: Option<String>,
}

pub async fn run(s: Session, c: NodeCmd) -> CliResult {
    match c {
        NodeCmd::List => {
            let v = s.get("/api/nodes").await?;
            s.show(&v, |v| {
                let mut t = Table::new(&[
                    "NODE", "STATUS", "CORES", "FREE", "MEMORY", "CPU%", "MEM%", "GPUS", "TASKS",
                    "VERSION",
                ]);
                for n in v.as_array().into_iter().flatten() {
                    t.row(vec![
                        output::cell(n, "hostname"),
                        output::cell(n, "status"),
                        output::cell(n, "total_cores"),
                        output::cell(n, "available_cores"),
                        n["memory_total_bytes"]
                            .as_u64()
                            .map(output::bytes)
                            .unwrap_or("-".into()),
                        percent(&n["cpu_percent"]),
                        percent(&n["memory_percent"]),
                        n["gpu_info"]
                            .as_array()
                            .map(|g| g.len().to_string())
                            .unwrap_or("-".into()),
                        output::cell(n, "tasks_holding"),
                        output::cell(n, "runner_version"),
                    ]);
                }
                t.print();
            });
            Ok(())
        }
        NodeCmd::Show { hostname } => {
            let v = s.get("/api/nodes").await?;
            let node = v
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["hostname"].as_str() == Some(&hostname))
                .cloned()
                .ok_or_else(|| Failure::NotFound(format!("no node named '{hostname}'")))?;
            s.show(&node, |n| {
                print!(
                    "{}",
                    output::fields(
                        n,
                        &[
                            ("Node", "hostname"),
                            ("URL", "url"),
                            ("Status", "status"),
                            ("Last heartbeat", "last_heartbeat"),
                            ("Cores", "total_cores"),
                            ("Cores in use", "cores_in_use"),
                            ("Cores free", "available_cores"),
                            ("Memory total", "memory_total_bytes"),
                            ("Memory used", "memory_used_bytes"),
                            ("Memory reserved", "memory_reserved_bytes"),
                            ("CPU %", "cpu_percent"),
                            ("Tasks holding", "tasks_holding"),
                            ("NUMA", "numa_topology"),
                            ("GPUs", "gpu_info"),
                            ("GPU error", "gpu_error"),
                            ("Disk usage", "disk_usage"),
                            ("Runner version", "runner_version"),
                        ]
                    )
                )
            });
            Ok(())
        }
        NodeCmd::Remove { hostname } => {
            let v = s.delete(&format!("/api/nodes/{hostname}")).await?;
            s.said(&v);
            Ok(())
        }
    }
}

fn percent(v: &Value) -> String {
    v.as_f64().map(|p| format!("{p:.0}")).unwrap_or("-".into())
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Percentages (0-100) as a sparkline, one character per sample.
pub fn sparkline(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| {
            let i = ((v.clamp(0.0, 100.0) / 100.0) * 7.0).round() as usize;
            BARS[i.min(7)]
        })
        .collect()
}

pub async fn health(s: Session, a: HealthArgs) -> CliResult {
    let v = s.get("/api/health").await?;
    let mut series: std::collections::BTreeMap<String, (Vec<f64>, Vec<f64>, String)> =
        Default::default();
    for sample in v["nodes"].as_array().into_iter().flatten() {
        for n in sample.as_array().into_iter().flatten() {
            let Some(name) = n["hostname"].as_str() else {
                continue;
            };
            if a.node.as_deref().is_some_and(|x| x != name) {
                continue;
            }
            let e = series.entry(name.to_string()).or_default();
            e.0.push(n["cpu_percent"].as_f64().unwrap_or(0.0));
            e.1.push(n["memory_percent"].as_f64().unwrap_or(0.0));
            e.2 = output::cell(n, "status");
        }
    }
    if let Some(n) = &a.node {
        if !series.contains_key(n) {
            return Err(Failure::NotFound(format!("no health data for node '{n}'")));
        }
    }
    s.show(&v, |v| {
        let mut t = Table::new(&[
            "NODE",
            "STATUS",
            "CPU% NOW",
            "CPU (last minute)",
            "MEM% NOW",
            "MEMORY (last minute)",
        ]);
        for (name, (cpu, mem, status)) in &series {
            t.row(vec![
                name.clone(),
                status.clone(),
                cpu.last().map(|c| format!("{c:.0}")).unwrap_or("-".into()),
                sparkline(cpu),
                mem.last().map(|m| format!("{m:.0}")).unwrap_or("-".into()),
                sparkline(mem),
            ]);
        }
        t.print();
        if let Some(agg) = v["aggregate"].as_array().and_then(|a| a.last()) {
            println!(
                "\n{} of {} nodes online, {} cores, CPU {}% (core-weighted), memory {}%",
                output::cell(agg, "onlineNodes"),
                output::cell(agg, "totalNodes"),
                output::cell(agg, "totalCores"),
                percent(&agg["avgCpuPercent"]),
                percent(&agg["avgMemPercent"]),
            );
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_percentages() {
        assert_eq!(sparkline(&[0.0, 50.0, 100.0, 250.0, -3.0]), "▁▅██▁");
    }
}
