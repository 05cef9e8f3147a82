//! ferry-host: keeps the cluster's state, schedules work and serves the one API users talk to.
//!
//! Modules: `api` (HTTP routes, thin handlers), `auth` (users, sessions, tokens), `tasks`
//! (the task model and the services behind the task routes), `scheduler` (the single owner of
//! the resource ledger and queue), `cluster` (node registry and liveness; feeds the
//! scheduler), `store` (SQLite, one writer), `runner_client` (the seam to runners), `config`,
//! `ids`, `relay` (the SSH relay). Dependencies point one way: api → tasks → scheduler ← cluster; everything → store.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod envs;
pub mod events;
pub mod ids;
pub mod relay;
pub mod runner_client;
pub mod scheduler;
pub mod store;
pub mod tasks;

use anyhow::Context;
use cluster::health::HealthHistory;
use cluster::Cluster;
use config::HostConfig;
use runner_client::{RunnerApi, RunnerClient};
use scheduler::SchedulerHandle;
use std::sync::Arc;
use store::Db;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub cluster: Arc<Cluster>,
    pub scheduler: SchedulerHandle,
    pub runner: Arc<dyn RunnerApi>,
    pub config: Arc<HostConfig>,
    pub ids: Arc<ids::IdGen>,
    pub health: Arc<HealthHistory>,
    pub limiter: Arc<auth::ratelimit::LoginLimiter>,
    /// User requests in progress (`max_user_requests`); runner routes take none.
    pub user_slots: Arc<tokio::sync::Semaphore>,
    /// Task output reads in progress (`max_log_reads`).
    pub log_slots: Arc<tokio::sync::Semaphore>,
    /// Log follows open at once (`tasks::logs::MAX_FOLLOWERS`).
    pub follow_slots: Arc<tokio::sync::Semaphore>,
    /// The host's Docker engine, for environment containers.
    pub envs: envs::Envs,
}

/// Reads the cluster secret from the config, or from `<data_dir>/cluster-secret`, generating
/// that file (mode 0600) on first start.
fn ensure_secret(config: &mut HostConfig) -> anyhow::Result<()> {
    if !config.cluster_secret.is_empty() {
        return Ok(());
    }
    let path = config.data_dir.join("cluster-secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let s = text.trim().to_string();
        if !s.is_empty() {
            config.cluster_secret = s;
            return Ok(());
        }
    }
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    write_private(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(path = %path.display(), "no cluster_secret configured: generated one; give runners the same secret (cluster_secret_file)");
    config.cluster_secret = secret;
    Ok(())
}

pub(crate) fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Opens the state, starts the scheduler and background loops, and serves until `shutdown`.
pub async fn run(
    mut config: HostConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    auth::password::keep_hash_memory_transient();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    // The database holds password hashes: keep the directory private whatever the umask.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict data_dir {}", config.data_dir.display()))?;
    }
    ensure_secret(&mut config)?;
    let db_path = config.data_dir.join("ferry.db");
    let db = Db::open(&db_path)
        .with_context(|| format!("cannot open database {}", db_path.display()))?;
    let runner: Arc<dyn RunnerApi> = Arc::new(RunnerClient::new(
        config.cluster_secret.clone(),
        config.runner_timeout,
    ));
    let channel = scheduler::channel();
    let handle = channel.handle.clone();
    let cluster = Cluster::load(db.clone(), handle.clone(), config.node_timeout).await?;
    scheduler::start(db.clone(), runner.clone(), cluster.node_events(), channel).await?;
    let health = Arc::new(HealthHistory::default());
    tokio::spawn(cluster.clone().watch_liveness());
    tokio::spawn(health.clone().sample_forever(cluster.clone()));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let runner_listener = match config.runner_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (runner_listen)"))?,
        ),
        None => None,
    };
    let relay_listener = match config.ssh_relay_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (ssh_relay_listen)"))?,
        ),
        None => None,
    };
    let state = AppState {
        user_slots: Arc::new(tokio::sync::Semaphore::new(config.max_user_requests)),
        log_slots: Arc::new(tokio::sync::Semaphore::new(config.max_log_reads)),
        follow_slots: Arc::new(tokio::sync::Semaphore::new(tasks::logs::MAX_FOLLOWERS)),
        envs: envs::Envs::connect(
            envs::store::Store::new(config.env_dir.clone(), config.env_keep),
            config.max_env_store_bytes,
        ),
        db,
        cluster,
        scheduler: handle,
        runner,
        config: Arc::new(config),
        ids: Arc::new(ids::IdGen::new()),
        health,
        limiter: Arc::new(auth::ratelimit::LoginLimiter::default()),
    };
    {
        // A packaging cut off by the last stop left a partial tarball: nobody finishes it.
        // Done before serving, so no new packaging's partial is taken for an old one.
        let store = state.envs.store.clone();
        match tokio::task::spawn_blocking(move || store.remove_partials()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                removed = n,
                "partial environment tarballs of an interrupted packaging removed"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot clean the environment store"),
            Err(e) => tracing::warn!(error = %e, "cannot clean the environment store"),
        }
    }
    tokio::spawn(auth::service::expire_audit_forever(
        state.db.clone(),
        state.config.audit_retention,
    ));
    if state.config.auth_enabled {
        auth::service::bootstrap_admin(&state, &state.config.data_dir).await?;
    } else {
        tracing::warn!("authentication is DISABLED: every caller acts as an administrator");
    }
    if let Some(l) = relay_listener {
        tracing::info!(addr = %l.local_addr()?, "SSH relay listening");
        tokio::spawn(relay::ssh::serve(l, state.clone()));
    }
    tracing::info!(%addr, version = ferry_common::VERSION, "ferry-host listening");
    let limits = state.config.serve_limits();
    // One shutdown signal for every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let runners = match runner_listener {
        Some(l) => {
            tracing::info!(addr = %l.local_addr()?, "runner routes listening");
            let app = api::router(state.clone(), api::Serves::Runners);
            Some(tokio::spawn(ferry_common::serve::serve(
                l,
                app,
                limits,
                stopped(),
            )))
        }
        None => None,
    };
    let serves = if runners.is_some() {
        api::Serves::Users
    } else {
        api::Serves::All
    };
    let users = tokio::spawn(ferry_common::serve::serve(
        listener,
        api::router(state, serves),
        limits,
        stopped(),
    ));
    shutdown.await;
    let _ = stop_tx.send(true);
    users.await??;
    if let Some(r) = runners {
        r.await??;
    }
    tracing::info!("ferry-host stopped");
    Ok(())
}
