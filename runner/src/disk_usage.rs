//! What environments and snapshots take on this node's disk, measured in the background and
//! carried by heartbeats to the node view. Measured every [`REFRESH`], and soon after a load
//! or snapshot changed it; a heartbeat never waits for the engine.

use crate::workload::Workload;
use ferry_common::runner_proto::RunnerDiskUsage;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How often usage is measured when nothing says it changed.
const REFRESH: Duration = Duration::from_secs(30);

pub struct DiskUsage {
    engine: Arc<dyn Workload>,
    /// Where environment tarballs are downloaded (see `envsync`).
    downloads: PathBuf,
    latest: Mutex<Option<RunnerDiskUsage>>,
    changed: Notify,
}

impl DiskUsage {
    pub fn new(engine: Arc<dyn Workload>, downloads: PathBuf) -> DiskUsage {
        DiskUsage {
            engine,
            downloads,
            latest: Mutex::default(),
            changed: Notify::new(),
        }
    }

    /// The last measurement (`None` before the first).
    pub fn latest(&self) -> Option<RunnerDiskUsage> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Something changed what images take: measure again now.
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// Measures for ever.
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.measure().await {
                Ok(usage) => {
                    *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
                }
                Err(e) => tracing::debug!(error = %e, "cannot measure disk usage"),
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = self.changed.notified() => {}
            }
        }
    }

    async fn measure(&self) -> Result<RunnerDiskUsage, String> {
        let images = self.engine.image_usage().await.map_err(|e| e.to_string())?;
        let dir = self.downloads.clone();
        let downloads = tokio::task::spawn_blocking(move || bytes_in(&dir))
            .await
            .map_err(|e| e.to_string())?;
        Ok(RunnerDiskUsage {
            environment_images_bytes: images.environment_bytes,
            environment_images: images.environments,
            environment_downloads_bytes: downloads,
            snapshot_bytes: images.snapshot_bytes,
            snapshots: images.snapshots,
        })
    }
}

/// Bytes in the files directly in `dir` (0 when it does not exist).
fn bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
