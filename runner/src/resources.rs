//! What this node offers and how busy it is, from sysinfo (read in a blocking thread).

use std::sync::{Arc, Mutex};
use sysinfo::{MemoryRefreshKind, RefreshKind, System};

#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub cpu_percent: f64,
    pub memory_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
}

#[derive(Clone)]
pub struct Resources {
    system: Arc<Mutex<System>>,
    pub cores: u32,
    pub memory_total: u64,
    pub numa: Option<crate::numa::Topology>,
}

impl Resources {
    pub fn detect(cores: Option<u32>, memory: Option<u64>) -> Resources {
        let mut sys = System::new_with_specifics(
            RefreshKind::nothing().with_memory(MemoryRefreshKind::everything()),
        );
        sys.refresh_cpu_usage();
        let detected_cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let total = sys.total_memory();
        Resources {
            system: Arc::new(Mutex::new(sys)),
            cores: cores.unwrap_or(detected_cores),
            memory_total: memory.unwrap_or(total),
            numa: crate::numa::detect(std::path::Path::new("/sys/devices/system/node")),
        }
    }

    /// Samples CPU (busy % since the last sample) and memory.
    pub async fn sample(&self) -> Usage {
        let system = self.system.clone();
        let offered = self.memory_total;
        tokio::task::spawn_blocking(move || {
            let mut sys = system.lock().unwrap_or_else(|p| p.into_inner());
            sys.refresh_cpu_usage();
            sys.refresh_memory();
            let total = sys.total_memory().max(1);
            Usage {
                cpu_percent: f64::from(sys.global_cpu_usage()),
                memory_percent: sys.used_memory() as f64 * 100.0 / total as f64,
                memory_used_bytes: sys.used_memory(),
                memory_total_bytes: offered,
            }
        })
        .await
        .unwrap_or_default()
    }
}
