//! Environments on the runner: a task naming an environment (`container_name`) runs its newest
//! packaged version. Before the container is made, the newest tarball is found — in the
//! shared dir's `kohakuriver-containers` when this runner has one and it holds that
//! environment, else from the host (`/api/runner/environments/<env>`) — and when the local
//! `kohakuriver/<env>:base` is missing or older than that tarball's number, the tarball is
//! checked against its SHA-256 and loaded into the engine (streamed, never whole in memory),
//! then tagged. Only a complete, checked load is tagged, so a corrupt tarball leaves no image
//! under that name. Tasks needing the same environment at once wait for one load.
//!
//! A host that cannot be asked (an outage) does not stop a task: it runs what is local, with
//! a warning, and the host is not asked again for a few seconds.

use crate::config::RunnerConfig;
use crate::workload::Workload;
use ferry_common::envs::{
    is_valid_name, parse_tarball_name, tarball_name, HEADER_SHA256, HEADER_TIMESTAMP,
    RUNNER_TARBALL_PATH,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
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

pub struct EnvSync {
    engine: Arc<dyn Workload>,
    config: Arc<RunnerConfig>,
    http: reqwest::Client,
    /// One lock per environment: one load at a time, and those who waited see it done.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When the host last failed to answer: for a while after, tasks run what is local
    /// without asking, so a host that hangs delays one task, not each.
    host_silent_since: Mutex<Option<std::time::Instant>>,
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
        self.config.data_dir.join("environments")
    }

    /// Makes sure the newest version of `env` is the local image; an error says why the
    /// task cannot run.
    pub async fn ensure(&self, env: &str) -> Result<(), String> {
        if !is_valid_name(env) {
            return Err(format!(
                "container_name: {env:?} is not an environment name"
            ));
        }
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
        let started = std::time::Instant::now();
        let path = match &newest.shared {
            Some(p) => {
                self.verify(p, &newest).await?;
                p.clone()
            }
            None => self.fetch_checked(env, &newest).await?,
        };
        let fetch_ms = started.elapsed().as_millis() as u64;
        let loaded = self.load(&path).await;
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
    async fn fetch_checked(&self, env: &str, v: &Newest) -> Result<PathBuf, String> {
        let (path, resumed) = self.fetch(env, v).await?;
        let why = match self.verify(&path, v).await {
            Ok(()) => return Ok(path),
            Err(why) => why,
        };
        let _ = tokio::fs::remove_file(&path).await;
        if !resumed {
            return Err(why);
        }
        tracing::warn!(%env, %why, "a resumed download does not match its checksum; fetching it whole");
        let (path, _) = self.fetch(env, v).await?;
        if let Err(why) = self.verify(&path, v).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(why);
        }
        Ok(path)
    }

    /// Downloads the version into the cache, resuming a partial download; the complete file
    /// and whether it was resumed.
    async fn fetch(&self, env: &str, v: &Newest) -> Result<(PathBuf, bool), String> {
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
    async fn verify(&self, path: &Path, v: &Newest) -> Result<(), String> {
        let name = path.display().to_string();
        if let Some(want) = &v.sha256 {
            let p = path.to_path_buf();
            let got = tokio::task::spawn_blocking(move || sha256_file(&p))
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
    async fn load(&self, path: &Path) -> Result<String, String> {
        let name = path.display().to_string();
        let sent = Arc::new(AtomicU64::new(0));
        self.engine
            .load_image(path, sent)
            .await
            .map_err(|e| format!("environment tarball {name} could not be loaded: {e}"))
    }
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

fn sha256_file(path: &Path) -> std::io::Result<String> {
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
    }
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
