//! NVIDIA GPUs, read from `nvidia-smi`'s CSV query output (no NVML binding to build or load).
//! A node without the tool, or where it fails, simply has no GPUs. Each GPU is reported in the
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

/// Asks `tool` for the GPUs; an empty list when it is absent, fails or hangs.
pub async fn query(tool: &Path) -> Vec<Value> {
    let query: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
    let run = tokio::process::Command::new(tool)
        .arg(format!("--query-gpu={}", query.join(",")))
        .arg("--format=csv,noheader,nounits")
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(out)) if out.status.success() => parse(&String::from_utf8_lossy(&out.stdout)),
        Ok(Ok(out)) => {
            tracing::warn!(tool = %tool.display(), status = %out.status, "nvidia-smi failed: no GPUs reported");
            Vec::new()
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Ok(Err(e)) => {
            tracing::warn!(tool = %tool.display(), error = %e, "cannot run nvidia-smi: no GPUs reported");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(tool = %tool.display(), "nvidia-smi hung: no GPUs reported");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(query(Path::new("/nonexistent/nvidia-smi")).await.is_empty());
    }
}
