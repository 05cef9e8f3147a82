//! Packaging an environment into the store, in the background: the container is stopped (so
//! its files are consistent), committed to `kohakuriver/<env>:base`, and that image saved by
//! id (untagged, as the original's runners expect) into a new tarball, its SHA-256 taken on
//! the way. A multi-GB save takes minutes, so it never runs inside a request: the route starts
//! it and answers, and the environment's view shows the bytes written so far. A container
//! that was running is started again afterwards.

use super::store::{self, Tarball};
use super::{names, EnvError, Envs};
use bollard::models::ContainerConfig;
use bollard::query_parameters::{CommitContainerOptionsBuilder, StopContainerOptionsBuilder};
use ferry_common::api::envs::EnvStoreUsage;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// Where a packaging job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Stopping,
    Committing,
    Saving,
    Done { tarball: String },
    Failed { error: String },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Stopping => "stopping",
            Phase::Committing => "committing",
            Phase::Saving => "saving",
            Phase::Done { .. } => "done",
            Phase::Failed { .. } => "failed",
        }
    }

    pub fn finished(&self) -> bool {
        matches!(self, Phase::Done { .. } | Phase::Failed { .. })
    }
}

/// One packaging job; the newest job of each environment is kept to be shown.
#[derive(Debug)]
pub struct Job {
    pub env: String,
    /// The new tarball's number (Unix seconds, taken before the commit, so an image loaded
    /// from it is never older than its number).
    pub timestamp: i64,
    pub started_ms: i64,
    pub bytes_written: AtomicU64,
    /// Bytes the store's cap leaves this tarball (`u64::MAX`: no cap); a save that outgrows
    /// it stops, so the cap holds even for an image bigger than what was free.
    room: u64,
    phase: Mutex<Phase>,
}

impl Job {
    pub fn phase(&self) -> Phase {
        self.phase
            .lock()
            .map(|p| p.clone())
            .unwrap_or(Phase::Failed {
                error: "job state lost".into(),
            })
    }

    fn set(&self, phase: Phase) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase;
        }
    }

    pub fn tarball_name(&self) -> String {
        store::file_name(&self.env, self.timestamp)
    }
}

impl Envs {
    /// Starts packaging `env`; the job is returned at once.
    pub async fn package(&self, env: &str) -> Result<Arc<Job>, EnvError> {
        let container = self.existing(env).await?;
        let st = self.store.clone();
        let cap = self.max_store_bytes;
        let (used, newest) = tokio::task::spawn_blocking({
            let env = env.to_string();
            move || -> std::io::Result<_> {
                st.ensure_dir()?;
                Ok((st.total_bytes()?, st.newest(&env)?))
            }
        })
        .await
        .map_err(|e| EnvError::Engine(e.to_string()))?
        .map_err(|e| EnvError::Store(format!("the environment store: {e}")))?;
        if cap > 0 && used >= cap {
            return Err(EnvError::Full(format!(
                "the environment store holds {used} bytes, its cap (max_env_store) is {cap}: \
                 delete old environments first"
            )));
        }
        let now = ferry_common::time::now_ms() / 1000;
        // Two packagings within one second still get distinct, increasing numbers.
        let timestamp = newest.map_or(now, |t| now.max(t.timestamp + 1));
        let job = Arc::new(Job {
            env: env.to_string(),
            timestamp,
            started_ms: ferry_common::time::now_ms(),
            bytes_written: AtomicU64::new(0),
            room: if cap > 0 { cap - used } else { u64::MAX },
            phase: Mutex::new(Phase::Stopping),
        });
        {
            let mut jobs = self
                .jobs
                .lock()
                .map_err(|_| EnvError::Engine("job table poisoned".into()))?;
            if let Some(running) = jobs.get(env).filter(|j| !j.phase().finished()) {
                return Err(EnvError::Conflict(format!(
                    "Environment '{env}' is already being packaged (into {}).",
                    running.tarball_name()
                )));
            }
            jobs.insert(env.to_string(), job.clone());
        }
        let envs = self.clone();
        let running = job.clone();
        tokio::spawn(async move {
            let outcome = envs.run_package(&container, &running).await;
            match outcome {
                Ok(t) => {
                    tracing::info!(env = %running.env, tarball = %t.path.display(), bytes = t.size_bytes, "environment packaged");
                    running.set(Phase::Done {
                        tarball: t.file_name(),
                    });
                }
                Err(e) => {
                    tracing::warn!(env = %running.env, error = %e, "packaging failed");
                    running.set(Phase::Failed {
                        error: e.to_string(),
                    });
                }
            }
        });
        Ok(job)
    }

    /// What the store holds: tarballs' bytes and count, environments, packaging under way.
    pub async fn store_usage(&self) -> Result<EnvStoreUsage, EnvError> {
        let st = self.store.clone();
        let list = tokio::task::spawn_blocking(move || st.list())
            .await
            .map_err(|e| EnvError::Store(e.to_string()))?
            .map_err(|e| EnvError::Store(format!("the environment store: {e}")))?;
        let packaging_bytes = self
            .jobs
            .lock()
            .map(|jobs| {
                jobs.values()
                    .filter(|j| !j.phase().finished())
                    .map(|j| j.bytes_written.load(Ordering::Relaxed))
                    .sum()
            })
            .unwrap_or(0);
        Ok(EnvStoreUsage {
            path: self.store.dir().display().to_string(),
            used_bytes: list.values().flatten().map(|t| t.size_bytes).sum(),
            limit_bytes: (self.max_store_bytes > 0).then_some(self.max_store_bytes),
            tarballs: list.values().map(|v| v.len() as u32).sum(),
            environments: list.len() as u32,
            packaging_bytes,
        })
    }

    /// The newest packaging job of `env`, if any ran since the host started.
    pub fn job(&self, env: &str) -> Option<Arc<Job>> {
        self.jobs.lock().ok()?.get(env).cloned()
    }

    async fn run_package(&self, container: &str, job: &Job) -> Result<Tarball, EnvError> {
        let docker = self.docker()?;
        let info = docker
            .inspect_container(container, None)
            .await
            .map_err(|e| EnvError::from_docker(e, "looking up the container"))?;
        let was_running = info.state.and_then(|s| s.running) == Some(true);
        if was_running {
            let opts = StopContainerOptionsBuilder::default().t(10).build();
            docker
                .stop_container(container, Some(opts))
                .await
                .map_err(|e| EnvError::from_docker(e, "stopping the container"))?;
        }
        let saved = self.commit_and_save(container, job).await;
        if was_running {
            if let Err(e) = docker.start_container(container, None).await {
                tracing::warn!(%container, error = %e, "could not start the container again after packaging");
            }
        }
        let saved = match saved {
            Ok(t) => t,
            Err(e) => {
                let partial = self.store.partial_path(&job.env, job.timestamp);
                let _ = tokio::fs::remove_file(partial).await;
                return Err(e);
            }
        };
        let st = self.store.clone();
        let env = job.env.clone();
        match tokio::task::spawn_blocking(move || st.prune(&env)).await {
            Ok(Ok(pruned)) => {
                for t in pruned {
                    tracing::info!(tarball = %t.path.display(), "older environment version pruned");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning old environment versions failed"),
            Err(e) => tracing::warn!(error = %e, "pruning old environment versions failed"),
        }
        Ok(saved)
    }

    async fn commit_and_save(&self, container: &str, job: &Job) -> Result<Tarball, EnvError> {
        let docker = self.docker()?;
        job.set(Phase::Committing);
        let image = names::image(&job.env);
        let (repo, tag) = image.rsplit_once(':').unwrap_or((&image, "base"));
        let opts = CommitContainerOptionsBuilder::default()
            .container(container)
            .repo(repo)
            .tag(tag)
            .comment(&format!("ferry environment {}", job.env))
            .author("ferry-host")
            .pause(false)
            .build();
        let committed = docker
            .commit_container(opts, ContainerConfig::default())
            .await
            .map_err(|e| EnvError::from_docker(e, "committing the container"))?;
        let id = committed.id;
        job.set(Phase::Saving);
        let partial = self.store.partial_path(&job.env, job.timestamp);
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| EnvError::Store(format!("{}: {e}", partial.display())))?;
        let mut hash = Sha256::new();
        let mut saved = docker.export_image(&id);
        while let Some(chunk) = saved.next().await {
            let chunk = chunk.map_err(|e| EnvError::from_docker(e, "saving the image"))?;
            hash.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| EnvError::Store(format!("{}: {e}", partial.display())))?;
            let written = job
                .bytes_written
                .fetch_add(chunk.len() as u64, Ordering::Relaxed)
                + chunk.len() as u64;
            if written > job.room {
                return Err(EnvError::Full(format!(
                    "the tarball outgrew the room the environment store's cap (max_env_store, \
                     {}) leaves: {} bytes; stopped and removed; delete old environments first",
                    self.max_store_bytes, job.room
                )));
            }
        }
        file.flush()
            .await
            .map_err(|e| EnvError::Store(format!("{}: {e}", partial.display())))?;
        drop(file);
        let sha256: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let st = self.store.clone();
        let (env, timestamp) = (job.env.clone(), job.timestamp);
        tokio::task::spawn_blocking(move || st.finish(&env, timestamp, &sha256))
            .await
            .map_err(|e| EnvError::Engine(e.to_string()))?
            .map_err(|e| EnvError::Store(format!("finishing the tarball: {e}")))
    }
}
