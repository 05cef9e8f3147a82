//! Environments on the runner: a task naming an environment (`container_name`) runs its newest
//! packaged version. Before the container is made, the newest tarball is found — in the
//! shared dir's `kohakuriver-containers` when this runner has one and it holds that
//! environment, else from the host (`/api/runner/environments/<env>`) — and when the local
//! `kohakuriver/<env>:base` is missing or older than that tarball's number, the tarball is
//! checked against its SHA-256 and loaded into the engine (streamed, never whole in memory),
//! then tagged. Only a complete, checked load is tagged, so a corrupt tarball leaves no image
//! under that name. Tasks needing the same environment at once wait for one load.
//!
//! While a task waits, [`EnvSync::waiting`] says what for (the stage and bytes done of its
//! environment's load), which the heartbeat carries to the host's task record.
//!
//! A host that cannot be asked (an outage) does not stop a task: it runs what is local, with
//! a warning, and the host is not asked again for a few seconds.

use crate::config::RunnerConfig;
use crate::workload::Workload;
use ferry_common::api::{PrepareStage, Preparing};
use ferry_common::envs::{
    is_valid_name, parse_tarball_name, tarball_name, HEADER_SHA256, HEADER_TIMESTAMP,
    RUNNER_TARBALL_PATH,
};
use ferry_common::TaskId;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// The newest version of an environment and where it is.
#[derive(Debug, Clone)]
struct Newest {
    timestamp: i64,
    size: u64,
    sha256: Option<String>,
    /// In the shared dir (read in place); `None`: fetched from the host.
    shared: Option<PathBuf>,
}

/// How far one environment's load is; every task waiting for it shows the same.
struct Progress {
    stage: Mutex<PrepareStage>,
    done: Arc<AtomicU64>,
    total: AtomicU64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            stage: Mutex::new(PrepareStage::Checking),
            done: Arc::default(),
            total: AtomicU64::new(0),
        }
    }

    /// Enters `stage`, with `done` of `total` bytes already behind it.
    fn enter(&self, stage: PrepareStage, done: u64, total: u64) {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = stage;
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }
}

/// An entry of a map for as long as this lives (also when the future holding it is dropped).
struct Listed<'a, K: Hash + Eq, V> {
    map: &'a Mutex<HashMap<K, V>>,
    key: K,
}

impl<'a, K: Hash + Eq + Clone, V> Listed<'a, K, V> {
    fn new(map: &'a Mutex<HashMap<K, V>>, key: K, value: V) -> Self {
        map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), value);
        Listed { map, key }
    }
}

impl<K: Hash + Eq, V> Drop for Listed<'_, K, V> {
    fn drop(&mut self) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

pub struct EnvSync {
    engine: Arc<dyn Workload>,
    config: Arc<RunnerConfig>,
    http: reqwest::Client,
    /// One lock per environment: one load at a time, and those who waited see it done.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When the host last failed to answer: for a while after, tasks run what is local
    /// without asking, so a host that hangs delays one task, not each.
    host_silent_since: Mutex<Option<std::time::Instant>>,
    /// The load under way for each environment being loaded.
    progress: Mutex<HashMap<String, Arc<Progress>>>,
    /// The environment each task waits for.
    waiting: Mutex<HashMap<TaskId, String>>,
    /// Loads done since start (for the log and the tests).
    pub loads: AtomicU64,
}

/// How long a host that did not answer is not asked again.
const SILENCE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the host is given to answer it.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl EnvSync {
    pub fn new(engine: Arc<dyn Workload>, config: Arc<RunnerConfig>) -> EnvSync {
        EnvSync {
            engine,
            config,
            http: reqwest::Client::new(),
            locks: Mutex::default(),
            host_silent_since: Mutex::default(),
            progress: Mutex::default(),
            waiting: Mutex::default(),
            loads: AtomicU64::new(0),
        }
    }

    fn shared_dir(&self) -> Option<PathBuf> {
        self.config
            .shared_dir
            .as_ref()
            .map(|d| d.join("kohakuriver-containers"))
    }

    fn cache_dir(&self) -> PathBuf {
        downloads_dir(&self.config)
    }

    /// What each task waiting for an environment waits for, and how far along it is.
    pub fn waiting(&self) -> HashMap<TaskId, Preparing> {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        waiting
            .iter()
            .map(|(id, env)| {
                let shown = match progress.get(env) {
                    Some(p) => Preparing {
                        stage: *p.stage.lock().unwrap_or_else(|p| p.into_inner()),
                        environment: Some(env.clone()),
                        bytes_done: p.done.load(Ordering::Relaxed),
                        bytes_total: Some(p.total.load(Ordering::Relaxed)),
                    },
                    None => Preparing {
                        stage: PrepareStage::Checking,
                        environment: Some(env.clone()),
                        bytes_done: 0,
                        bytes_total: None,
                    },
                };
                (*id, shown)
            })
            .collect()
    }

    /// Makes sure the newest version of `env` is the local image before `task` uses it; an
    /// error says why the task cannot run.
    pub async fn ensure(&self, task: TaskId, env: &str) -> Result<(), String> {
        if !is_valid_name(env) {
            return Err(format!(
                "container_name: {env:?} is not an environment name"
            ));
        }
        let _waiting = Listed::new(&self.waiting, task, env.to_string());
        let image = ferry_common::environment_image(env);
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(env.to_string()).or_default().clone()
        };
        let _one_at_a_time = lock.lock().await;
        let local = self
            .engine
            .image_created(&image)
            .await
            .map_err(|e| e.to_string())?;
        let newest = match self.newest(env).await {
            Ok(Some(n)) => n,
            // No tarball anywhere: whatever is local (a missing image fails later, clearly).
            Ok(None) => return Ok(()),
            // The host cannot say: run what is local (a missing image then fails as any
            // missing image does, naming it).
            Err(e) => {
                tracing::warn!(%env, error = %e, local = local.is_some(), "cannot learn the newest environment version; using the local image");
                return Ok(());
            }
        };
        if local.is_some_and(|created| created >= newest.timestamp) {
            return Ok(());
        }
        let name = tarball_name(env, newest.timestamp);
        let from = match &newest.shared {
            Some(_) => "the shared dir",
            None => "the host",
        };
        tracing::info!(%env, tarball = %name, bytes = newest.size, from, "loading environment");
        let progress = Arc::new(Progress::new());
        let _shown = Listed::new(&self.progress, env.to_string(), progress.clone());
        let started = std::time::Instant::now();
        let path = match &newest.shared {
            Some(p) => {
                self.verify(p, &newest, &progress).await?;
                p.clone()
            }
            None => self.fetch_checked(env, &newest, &progress).await?,
        };
        let fetch_ms = started.elapsed().as_millis() as u64;
        progress.enter(PrepareStage::Loading, 0, newest.size);
        let loaded = self.load(&path, progress.done.clone()).await;
        let load_ms = started.elapsed().as_millis() as u64 - fetch_ms;
        if newest.shared.is_none() {
            // The image holds it now; the copy would only take disk.
            let _ = tokio::fs::remove_file(&path).await;
        }
        let loaded = loaded?;
        let (repo, tag) = image.rsplit_once(':').unwrap_or((&image, "base"));
        self.engine
            .tag_image(&loaded, repo, tag)
            .await
            .map_err(|e| format!("environment {env}: cannot tag the loaded image: {e}"))?;
        self.loads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%env, tarball = %name, bytes = newest.size, fetch_ms, load_ms, "environment loaded");
        Ok(())
    }

    /// The newest tarball: the shared dir's when it has one of `env`, else the host's.
    async fn newest(&self, env: &str) -> Result<Option<Newest>, String> {
        if let Some(dir) = self.shared_dir() {
            let env_name = env.to_string();
            let found = tokio::task::spawn_blocking(move || newest_in(&dir, &env_name))
                .await
                .map_err(|e| e.to_string())?;
            if found.is_some() {
                return Ok(found);
            }
        }
        let silent = *self
            .host_silent_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if silent.is_some_and(|at| at.elapsed() < SILENCE_BACKOFF) {
            return Err("the host did not answer a moment ago".into());
        }
        let answer = self.ask_host(env).await;
        *self
            .host_silent_since
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = answer.is_err().then(std::time::Instant::now);
        answer
    }

    async fn ask_host(&self, env: &str) -> Result<Option<Newest>, String> {
        let url = format!(
            "{}{RUNNER_TARBALL_PATH}/{env}",
            self.config.host_url.trim_end_matches('/')
        );
        let resp = self
            .http
            .head(&url)
            .bearer_auth(&self.config.cluster_secret)
            .timeout(ASK_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("cannot ask the host for it: {e}"))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(format!("the host answered {} for it", resp.status()));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let timestamp = header(HEADER_TIMESTAMP)
            .and_then(|t| t.parse().ok())
            .ok_or("the host named no version")?;
        let size = header("content-length")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        Ok(Some(Newest {
            timestamp,
            size,
            sha256: header(HEADER_SHA256),
            shared: None,
        }))
    }

    /// Downloads the version and checks it. A resumed download that does not match (its
    /// first part from a different or damaged copy) is fetched again whole, once.
    async fn fetch_checked(
        &self,
        env: &str,
        v: &Newest,
        progress: &Progress,
    ) -> Result<PathBuf, String> {
        let (path, resumed) = self.fetch(env, v, progress).await?;
        let why = match self.verify(&path, v, progress).await {
            Ok(()) => return Ok(path),
            Err(why) => why,
        };
        let _ = tokio::fs::remove_file(&path).await;
        if !resumed {
            return Err(why);
        }
        tracing::warn!(%env, %why, "a resumed download does not match its checksum; fetching it whole");
        let (path, _) = self.fetch(env, v, progress).await?;
        if let Err(why) = self.verify(&path, v, progress).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(why);
        }
        Ok(path)
    }

    /// Downloads the version into the cache, resuming a partial download; the complete file
    /// and whether it was resumed.
    async fn fetch(
        &self,
        env: &str,
        v: &Newest,
        progress: &Progress,
    ) -> Result<(PathBuf, bool), String> {
        let dir = self.cache_dir();
        let made = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || crate::durable::private_dir(&dir)).await
        };
        made.map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = tarball_name(env, v.timestamp);
        let partial = dir.join(format!("{name}.partial"));
        let mut have = tokio::fs::metadata(&partial)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if have > v.size {
            let _ = tokio::fs::remove_file(&partial).await;
            have = 0;
        }
        let url = format!(
            "{}{RUNNER_TARBALL_PATH}/{env}?timestamp={}",
            self.config.host_url.trim_end_matches('/'),
            v.timestamp
        );
        let mut req = self.http.get(&url).bearer_auth(&self.config.cluster_secret);
        if have > 0 {
            req = req.header("range", format!("bytes={have}-"));
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| format!("environment {env}: cannot fetch {name}: {e}"))?;
        let resumed = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        progress.enter(
            PrepareStage::Downloading,
            if resumed { have } else { 0 },
            v.size,
        );
        if resumed {
            tracing::info!(%env, tarball = %name, from_byte = have, "resuming a download");
        }
        if !resp.status().is_success() {
            return Err(format!(
                "environment {env}: the host answered {} for {name}",
                resp.status()
            ));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&partial)
            .await
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("environment {env}: fetching {name} broke off: {e}"))?
        {
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("{}: {e}", partial.display()))?;
            progress
                .done
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        file.flush()
            .await
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        drop(file);
        let complete = dir.join(&name);
        tokio::fs::rename(&partial, &complete)
            .await
            .map_err(|e| format!("{}: {e}", complete.display()))?;
        Ok((complete, resumed))
    }

    /// Checks the file against its recorded checksum (when the host recorded one).
    async fn verify(&self, path: &Path, v: &Newest, progress: &Progress) -> Result<(), String> {
        let name = path.display().to_string();
        if let Some(want) = &v.sha256 {
            progress.enter(PrepareStage::Verifying, 0, v.size);
            let p = path.to_path_buf();
            let hashed = progress.done.clone();
            let got = tokio::task::spawn_blocking(move || sha256_file(&p, &hashed))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{name}: {e}"))?;
            if !got.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "environment tarball {name} is damaged: its SHA-256 is {got}, the host recorded {want}"
                ));
            }
        }
        Ok(())
    }

    /// Streams a checked tarball into the engine; the loaded image.
    async fn load(&self, path: &Path, sent: Arc<AtomicU64>) -> Result<String, String> {
        let name = path.display().to_string();
        self.engine
            .load_image(path, sent)
            .await
            .map_err(|e| format!("environment tarball {name} could not be loaded: {e}"))
    }
}

/// Where tarballs fetched from the host are kept while they download.
pub fn downloads_dir(config: &RunnerConfig) -> PathBuf {
    config.data_dir.join("environments")
}

/// The newest `<env>-<ts>.tar` in `dir`, with the checksum beside it.
fn newest_in(dir: &Path, env: &str) -> Option<Newest> {
    let mut best: Option<(i64, PathBuf, u64)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some((e, ts)) = parse_tarball_name(&file) else {
            continue;
        };
        if e != env || best.as_ref().is_some_and(|(b, _, _)| *b >= ts) {
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        best = Some((ts, entry.path(), size));
    }
    let (timestamp, path, size) = best?;
    let mut sidecar = path.as_os_str().to_owned();
    sidecar.push(".sha256");
    let sha256 = std::fs::read_to_string(PathBuf::from(sidecar))
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string));
    Some(Newest {
        timestamp,
        size,
        sha256,
        shared: Some(path),
    })
}

/// The file's SHA-256, counting the bytes read into `hashed`.
fn sha256_file(path: &Path, hashed: &AtomicU64) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        hashed.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
