//! NVIDIA GPUs, read from `nvidia-smi`'s CSV query output (no NVML binding to build or load).
//! A node without the tool has no GPUs; where the tool fails, the last good list is kept for a
//! grace period ([`Inventory`]). Each GPU is reported in the
//! original's shape (`gpu_id`, `name`, `memory_total_mib`, ...), with -1 for a value the driver
//! does not give ("[N/A]").

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// The fields asked of `nvidia-smi --query-gpu`, in order, with the names they get.
const FIELDS: &[(&str, &str)] = &[
    ("index", "gpu_id"),
    ("name", "name"),
    ("driver_version", "driver_version"),
    ("pci.bus_id", "pci_bus_id"),
    ("utilization.gpu", "gpu_utilization"),
    ("clocks.gr", "graphics_clock_mhz"),
    ("utilization.memory", "mem_utilization"),
    ("clocks.mem", "mem_clock_mhz"),
    ("memory.total", "memory_total_mib"),
    ("memory.used", "memory_used_mib"),
    ("memory.free", "memory_free_mib"),
    ("temperature.gpu", "temperature"),
    ("fan.speed", "fan_speed"),
    ("power.draw", "power_usage_mw"),
    ("power.limit", "power_limit_mw"),
];

const TEXT_FIELDS: &[&str] = &["name", "driver_version", "pci_bus_id"];

/// Parses `--format=csv,noheader,nounits` output into GPU objects; malformed lines are skipped.
pub fn parse(csv: &str) -> Vec<Value> {
    let mut gpus = Vec::new();
    for line in csv.lines().filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != FIELDS.len() {
            continue;
        }
        let Ok(index) = cells[0].parse::<u32>() else {
            continue;
        };
        let mut gpu = serde_json::Map::new();
        gpu.insert("gpu_id".into(), json!(index));
        for ((_, key), cell) in FIELDS.iter().zip(&cells).skip(1) {
            let value = if TEXT_FIELDS.contains(key) {
                json!(cell)
            } else {
                let n = cell.parse::<f64>().unwrap_or(-1.0);
                // nvidia-smi reports watts; the original's fields are milliwatts.
                if key.ends_with("_mw") && n >= 0.0 {
                    json!(n * 1000.0)
                } else {
                    json!(n)
                }
            };
            gpu.insert((*key).into(), value);
        }
        gpus.push(Value::Object(gpu));
    }
    gpus.sort_by_key(|g| g["gpu_id"].as_u64());
    gpus
}

/// What one call of the tool gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Found(Vec<Value>),
    /// No tool on this node: no GPUs, and nothing wrong.
    Absent,
    Failed(String),
}

/// Asks `tool` for the GPUs.
pub async fn probe(tool: &Path) -> Probe {
    let query: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
    let run = tokio::process::Command::new(tool)
        .arg(format!("--query-gpu={}", query.join(",")))
        .arg("--format=csv,noheader,nounits")
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(out)) if out.status.success() => {
            Probe::Found(parse(&String::from_utf8_lossy(&out.stdout)))
        }
        Ok(Ok(out)) => Probe::Failed(format!("nvidia-smi exited with {}", out.status)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Probe::Absent,
        Ok(Err(e)) => Probe::Failed(format!("cannot run nvidia-smi: {e}")),
        Err(_) => Probe::Failed("nvidia-smi did not answer within 10 s".into()),
    }
}

/// The GPUs this node reports. One failed call of the tool does not make them vanish (which
/// would fail every queued GPU task for the node): the last good list is kept until the tool
/// has failed for `grace`, and the failure is reported meanwhile.
pub struct Inventory {
    grace: Duration,
    state: std::sync::Mutex<InventoryState>,
}

#[derive(Default)]
struct InventoryState {
    last_good: Vec<Value>,
    failing_since: Option<std::time::Instant>,
}

/// What to report: the GPUs, and why the tool failed (if it did).
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub gpus: Vec<Value>,
    pub error: Option<String>,
}

impl Inventory {
    pub fn new(grace: Duration) -> Inventory {
        Inventory {
            grace,
            state: Default::default(),
        }
    }

    /// Folds one probe into the inventory, at `now`.
    pub fn update(&self, probe: Probe, now: std::time::Instant) -> Reported {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match probe {
            Probe::Found(gpus) => {
                st.last_good = gpus.clone();
                st.failing_since = None;
                Reported { gpus, error: None }
            }
            Probe::Absent => {
                st.last_good.clear();
                st.failing_since = None;
                Reported {
                    gpus: Vec::new(),
                    error: None,
                }
            }
            Probe::Failed(why) => {
                let since = *st.failing_since.get_or_insert(now);
                let failing = now.duration_since(since);
                if failing < self.grace {
                    tracing::warn!(error = %why, failing_for = ?failing, "GPU discovery failed: reporting the last good inventory");
                    Reported {
                        gpus: st.last_good.clone(),
                        error: Some(format!(
                            "{why} (failing for {} s; last good inventory kept)",
                            failing.as_secs()
                        )),
                    }
                } else {
                    tracing::warn!(error = %why, failing_for = ?failing, "GPU discovery failing past its grace: no GPUs reported");
                    Reported {
                        gpus: Vec::new(),
                        error: Some(format!(
                            "{why} (failing for {} s; GPUs withdrawn)",
                            failing.as_secs()
                        )),
                    }
                }
            }
        }
    }

    /// Probes the tool and folds the result in.
    pub async fn refresh(&self, tool: &Path) -> Reported {
        let p = probe(tool).await;
        self.update(p, std::time::Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_tool_keeps_the_last_good_inventory_for_the_grace() {
        let inv = Inventory::new(Duration::from_secs(60));
        let t0 = std::time::Instant::now();
        let gpus = parse(SAMPLE);
        assert_eq!(inv.update(Probe::Found(gpus.clone()), t0).gpus, gpus);
        let r = inv.update(Probe::Failed("boom".into()), t0 + Duration::from_secs(1));
        assert_eq!(r.gpus, gpus, "kept");
        assert!(r.error.unwrap().starts_with("boom"));
        let r = inv.update(Probe::Failed("boom".into()), t0 + Duration::from_secs(62));
        assert!(
            r.gpus.is_empty(),
            "withdrawn past the grace (counted from the first failure)"
        );
        let r = inv.update(Probe::Found(gpus.clone()), t0 + Duration::from_secs(63));
        assert_eq!((r.gpus, r.error), (gpus, None));
        assert!(inv.update(Probe::Absent, t0).gpus.is_empty());
    }

    const SAMPLE: &str = "\\
1, NVIDIA A100-SXM4-40GB, 535.104.05, 00000000:07:00.0, 3, 210, 1, 1215, 40960, 5, 40354, 33, [N/A], 55.12, 400.00
0, NVIDIA A100-SXM4-40GB, 535.104.05, 00000000:06:00.0, 97, 1410, 40, 1215, 40960, 30000, 10354, 61, [N/A], 301.50, 400.00
garbage line
";

    #[test]
    fn parses_nvidia_smi_csv() {
        let gpus = parse(SAMPLE);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0]["gpu_id"], 0);
        assert_eq!(gpus[0]["name"], "NVIDIA A100-SXM4-40GB");
        assert_eq!(gpus[0]["pci_bus_id"], "00000000:06:00.0");
        assert_eq!(gpus[0]["gpu_utilization"], 97.0);
        assert_eq!(gpus[0]["memory_total_mib"], 40960.0);
        assert_eq!(gpus[0]["fan_speed"], -1.0, "[N/A] becomes -1");
        assert_eq!(gpus[0]["power_usage_mw"], 301500.0);
        assert_eq!(gpus[1]["gpu_id"], 1);
    }

    #[tokio::test]
    async fn a_missing_tool_means_no_gpus() {
        assert_eq!(
            probe(Path::new("/nonexistent/nvidia-smi")).await,
            Probe::Absent
        );
    }
}
