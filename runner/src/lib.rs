//! ferry-runner: runs the host's work on one node, in Docker containers.
//!
//! Modules: `api` (routes the host calls), `access` (terminal and, next, files and
//! forwards into a running workload), `supervisor` (sole owner of the task table and each
//! task's lifecycle), `workload` (the seam to what runs tasks; Docker through bollard behind it), `host_link` (registration,
//! heartbeats, report delivery), `outbox` (reports awaiting the host), `resources` (cores,
//! memory, usage), `envsync` (environments' newest versions), `disk_usage` (what they and
//! snapshots take), `limits` (what every container is held to), `scratch` (a task's own
//! directories), `config`.

pub mod api;
pub mod api_files;
pub mod config;
pub mod disk_usage;
pub mod durable;
pub mod envsync;
pub mod gpu;
pub mod host_link;
pub mod limits;
pub mod numa;
pub mod outbox;
pub mod resources;
pub mod scratch;
pub mod supervisor;
pub mod workload;

use anyhow::Context;
use config::RunnerConfig;
use std::sync::Arc;

#[derive(Clone)]
pub struct RunnerState {
    pub config: Arc<RunnerConfig>,
    pub supervisor: Arc<supervisor::Supervisor>,
    pub link: host_link::HostLink,
    pub outbox: Arc<outbox::Outbox>,
}

pub async fn run(
    config: RunnerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The data dir holds task records with the tasks' environment values: the runner's alone.
    durable::private_dir(&config.data_dir)
        .with_context(|| format!("cannot create {} (mode 0700)", config.data_dir.display()))?;
    for dir in [&config.local_temp_dir, &config.log_dir()] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let engine: Arc<dyn workload::Workload> = Arc::new(workload::docker::Engine::connect()?);
    if let Err(e) = engine.ping().await {
        tracing::warn!(error = %e, "Docker engine not answering yet; tasks fail until it does");
    }
    let config = Arc::new(config);
    let resources = resources::Resources::detect(config.cores, config.memory);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    let url = host_link::advertise_url(&config, bound).await;
    let outbox = Arc::new(
        outbox::Outbox::open(config.data_dir.join("outbox")).context("cannot open the outbox")?,
    );
    let node = limits::Node {
        cores: resources.cores,
        memory: resources.memory_total,
    };
    let supervisor = supervisor::Supervisor::new(
        engine,
        outbox.clone(),
        config.clone(),
        node,
        resources.numa.clone(),
    )?;
    // Know what runs here before anyone asks: re-adopt containers, resume unfinished work.
    // Docker may still be starting (boot order): keep trying rather than exit.
    while let Err(e) = supervisor.recover().await {
        tracing::warn!(error = %e, "cannot recover tasks from the previous run yet; retrying in 2s");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    tokio::spawn(supervisor.disk.clone().run());
    let link = host_link::HostLink::new(config.clone(), url.clone(), resources);
    tokio::spawn(link.clone().run(supervisor.clone()));
    tokio::spawn(
        link.clone()
            .deliver_outbox(outbox.clone(), supervisor.clone()),
    );
    tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.retry_writes(std::time::Duration::from_secs(1)).await }
    });
    let state = RunnerState {
        config: config.clone(),
        supervisor,
        link,
        outbox,
    };
    tracing::info!(addr = %bound, %url, name = %config.name, host = %config.host_url, "ferry-runner listening");
    // Header timeout and connection cap: a silent client cannot hold the port.
    let limits = ferry_common::serve::ServeLimits {
        header_timeout: config.header_timeout,
        ..Default::default()
    };
    ferry_common::serve::serve(listener, api::router(state), limits, shutdown).await?;
    tracing::info!("ferry-runner stopped; containers keep running");
    Ok(())
}
