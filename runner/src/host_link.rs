//! The runner's side of the conversation with the host: registration (retried for ever with
//! backoff, so a runner started before the host joins when the host comes up), heartbeats
//! (which re-register when the host has forgotten this node), and delivery of the outbox.

use crate::config::RunnerConfig;
use crate::outbox::Outbox;
use crate::resources::Resources;
use crate::supervisor::Supervisor;
use ferry_common::runner_proto::{
    Heartbeat, HeartbeatResponse, RegisterRequest, RegisterResponse, TaskUpdate,
    RUNNER_CREDENTIAL_HEADER,
};
use ferry_common::ErrorBody;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The file holding this runner's credential, issued by the host at its first registration.
pub const CREDENTIAL_FILE: &str = "runner-credential";

#[derive(Clone)]
pub struct HostLink {
    http: reqwest::Client,
    config: Arc<RunnerConfig>,
    advertise_url: String,
    resources: Resources,
    registered: Arc<AtomicBool>,
    /// This runner's own credential (None until the host has issued one).
    credential: Arc<RwLock<Option<String>>>,
    gpus: Arc<crate::gpu::Inventory>,
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("host unreachable: {0}")]
    Unreachable(String),
    #[error("host answered {status}: {detail}")]
    Status { status: u16, detail: String },
}

impl HostLink {
    pub fn new(config: Arc<RunnerConfig>, advertise_url: String, resources: Resources) -> HostLink {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        let credential = Self::load_credential(&config);
        let config_grace = config.gpu_failure_grace;
        HostLink {
            http,
            config,
            advertise_url,
            resources,
            registered: Arc::new(AtomicBool::new(false)),
            credential: Arc::new(RwLock::new(credential)),
            gpus: Arc::new(crate::gpu::Inventory::new(config_grace)),
        }
    }

    fn credential_path(config: &RunnerConfig) -> std::path::PathBuf {
        config.data_dir.join(CREDENTIAL_FILE)
    }

    fn load_credential(config: &RunnerConfig) -> Option<String> {
        std::fs::read_to_string(Self::credential_path(config))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    fn credential(&self) -> Option<String> {
        self.credential
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps a newly issued credential: on disk (0600) first, so a crash right after cannot
    /// lose the only copy, then in memory.
    async fn store_credential(&self, credential: String) -> std::io::Result<()> {
        let path = Self::credential_path(&self.config);
        let bytes = format!("{credential}\n").into_bytes();
        tokio::task::spawn_blocking(move || crate::durable::write_atomic(&path, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        *self.credential.write().unwrap_or_else(|p| p.into_inner()) = Some(credential);
        Ok(())
    }

    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    async fn call<B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, CallError> {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.config.host_url))
            .bearer_auth(&self.config.cluster_secret)
            .json(body);
        if let Some(c) = self.credential() {
            rb = rb.header(RUNNER_CREDENTIAL_HEADER, c);
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.detail)
            .unwrap_or(text);
        Err(CallError::Status { status, detail })
    }

    async fn register_once(&self) -> Result<(), CallError> {
        let req = RegisterRequest {
            hostname: self.config.name.clone(),
            url: self.advertise_url.clone(),
            total_cores: self.resources.cores,
            total_ram_bytes: Some(self.resources.memory_total),
            numa_topology: self.resources.numa.as_ref().map(crate::numa::to_json),
            gpu_info: self.gpus.refresh(&self.config.nvidia_smi).await.gpus,
            runner_version: Some(ferry_common::VERSION.to_string()),
            heartbeat_interval_ms: Some(self.config.heartbeat_interval.as_millis() as u64),
        };
        let resp = self
            .call(reqwest::Method::POST, "/api/register", &req)
            .await?;
        let reply: RegisterResponse = resp
            .json()
            .await
            .map_err(|e| CallError::Unreachable(format!("unreadable register reply: {e}")))?;
        if let Some(credential) = reply.credential {
            self.store_credential(credential).await.map_err(|e| {
                CallError::Unreachable(format!("cannot keep the runner credential: {e}"))
            })?;
            tracing::info!("the host issued this runner's credential; kept in {CREDENTIAL_FILE}");
        }
        self.registered.store(true, Ordering::Relaxed);
        tracing::info!(host = %self.config.host_url, url = %self.advertise_url, "registered with the host");
        Ok(())
    }

    /// Registers, retrying with backoff (1 s doubling to 30 s) until the host accepts.
    pub async fn register(&self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.register_once().await {
                Ok(()) => return,
                Err(CallError::Status {
                    status: 403,
                    detail,
                }) => {
                    tracing::error!(%detail, retry_in = ?backoff, "the host refuses this runner the name {}: another runner holds it, or this data dir lost its credential", self.config.name);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "registration failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Registers, then heartbeats for ever.
    pub async fn run(self, supervisor: Arc<Supervisor>) {
        self.register().await;
        let mut interval = tokio::time::interval(self.config.heartbeat_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let usage = self.resources.sample().await;
            let (running, paused) = supervisor.live_tasks();
            let gpus = self.gpus.refresh(&self.config.nvidia_smi).await;
            let hb = Heartbeat {
                running_tasks: running,
                paused_tasks: Some(paused),
                known_tasks: Some(supervisor.known_tasks()),
                attempts: Some(supervisor.attempts()),
                cpu_percent: Some(usage.cpu_percent),
                memory_percent: Some(usage.memory_percent),
                memory_used_bytes: Some(usage.memory_used_bytes),
                memory_total_bytes: Some(usage.memory_total_bytes),
                gpu_info: gpus.gpus,
                gpu_error: gpus.error,
                runner_version: Some(ferry_common::VERSION.to_string()),
                preparing: Some(supervisor.preparing()),
                disk_usage: supervisor.disk.latest(),
                ..Default::default()
            };
            let path = format!("/api/heartbeat/{}", self.config.name);
            match self.call(reqwest::Method::PUT, &path, &hb).await {
                Ok(resp) => {
                    self.registered.store(true, Ordering::Relaxed);
                    let reply: HeartbeatResponse = resp.json().await.unwrap_or_default();
                    for id in reply.kill_tasks {
                        let attempt = reply
                            .kill_attempts
                            .iter()
                            .find(|a| a.task_id == id)
                            .map(|a| a.attempt);
                        tracing::warn!(task_id = %id, ?attempt, "host does not run this task here (ended, or placed again): killing it");
                        let sup = supervisor.clone();
                        tokio::spawn(async move {
                            if let Err(e) = sup.kill_stale(id, attempt).await {
                                tracing::warn!(task_id = %id, error = %e, "kill requested by host failed");
                            }
                        });
                    }
                }
                Err(CallError::Status {
                    status: 404 | 401, ..
                }) => {
                    tracing::warn!("host does not know this node: registering again");
                    self.registered.store(false, Ordering::Relaxed);
                    self.register().await;
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    /// Sends one status report; Ok once the host has acknowledged it.
    pub async fn send_update(&self, update: TaskUpdate) -> Result<(), String> {
        self.call(reqwest::Method::POST, "/api/update", &update)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub async fn deliver_outbox(self, outbox: Arc<Outbox>, supervisor: Arc<Supervisor>) {
        outbox
            .deliver(|u| self.send_update(u), |u| supervisor.acknowledged(u))
            .await;
    }
}

/// The URL the host should use for this runner: `advertise_url`, else the listen address, with
/// an unspecified IP replaced by the local address that routes to the host (found with a UDP
/// `connect`, which sends nothing).
pub async fn advertise_url(config: &RunnerConfig, bound: std::net::SocketAddr) -> String {
    if let Some(url) = &config.advertise_url {
        return url.clone();
    }
    let mut ip = bound.ip();
    if ip.is_unspecified() {
        ip = route_to_host(&config.host_url)
            .await
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    }
    let host = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    format!("http://{host}:{}", bound.port())
}

async fn route_to_host(host_url: &str) -> Option<std::net::IpAddr> {
    let url = reqwest::Url::parse(host_url).ok()?;
    let target = format!(
        "{}:{}",
        url.host_str()?.trim_matches(['[', ']']),
        url.port_or_known_default()?
    );
    let addr = tokio::net::lookup_host(target).await.ok()?.next()?;
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.connect(addr).await.ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}
