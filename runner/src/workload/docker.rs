//! Docker behind the [`Workload`] seam: the Engine API through bollard (never the docker
//! CLI). Each method is one engine operation with errors that say what failed.

use super::{
    logcap, Exit, FileEntry, Found, ImageUsage, SnapshotImage, State, Workload, WorkloadError,
    WorkloadResult, WorkloadSpec,
};
use futures_util::future::BoxFuture;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerStateStatusEnum, HostConfig,
    HostConfigLogConfig, PortBinding,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CommitContainerOptionsBuilder,
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;

type DockerError = WorkloadError;

fn engine_error(e: BollardError) -> DockerError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => DockerError::NotFound(message),
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } => DockerError::Exists(message),
        BollardError::DockerResponseServerError { message, .. } => DockerError::Engine(message),
        BollardError::HyperResponseError { .. }
        | BollardError::IOError { .. }
        | BollardError::RequestTimeoutError => DockerError::Unreachable(e.to_string()),
        other => DockerError::Engine(other.to_string()),
    }
}

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    // The engine operations; [`Workload`] below is what the supervisor sees.
    /// Connects as the docker CLI would (`DOCKER_HOST`, else the local socket).
    pub fn connect() -> Result<Engine, DockerError> {
        let docker =
            Docker::connect_with_defaults().map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Ok(Engine { docker })
    }

    pub async fn ping(&self) -> Result<(), DockerError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| DockerError::Unreachable(e.to_string()))
    }

    /// Uses a local image when present, else pulls it.
    pub async fn ensure_image(&self, image: &str) -> Result<(), DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(engine_error(e)),
        }
        tracing::info!(%image, "image not present locally: pulling");
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut pull = self.docker.create_image(Some(opts), None, None);
        while let Some(step) = pull.next().await {
            if let Err(e) = step {
                return Err(DockerError::Image {
                    image: image.to_string(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(())
    }

    pub async fn create(&self, spec: &WorkloadSpec) -> Result<(), DockerError> {
        let host_config = HostConfig {
            nano_cpus: spec.nano_cpus,
            memory: spec.memory_bytes,
            // Same as memory: no swap, so a task over its limit is OOM-killed, not slowed.
            memory_swap: spec.memory_bytes,
            cpuset_cpus: spec.cpuset_cpus.clone(),
            cpuset_mems: spec.cpuset_mems.clone(),
            device_requests: (!spec.gpus.is_empty()).then(|| {
                vec![bollard::models::DeviceRequest {
                    driver: Some("nvidia".into()),
                    device_ids: Some(spec.gpus.iter().map(u32::to_string).collect()),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]
            }),
            binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
            pids_limit: spec.pids_limit,
            security_opt: (!spec.security_opt.is_empty()).then(|| spec.security_opt.clone()),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            cap_drop: (!spec.cap_drop.is_empty()).then(|| spec.cap_drop.clone()),
            // json-file whatever the daemon's default driver: the runner reads the output back
            // through the engine, and this driver takes a size cap. One file, no rotated copies.
            log_config: spec.max_log_bytes.map(|max| HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), max.to_string()),
                    ("max-file".to_string(), "1".to_string()),
                ])),
            }),
            port_bindings: (!spec.publish.is_empty()).then(|| {
                spec.publish
                    .iter()
                    .map(|p| {
                        // An empty host port: the engine picks a free one.
                        let any = PortBinding {
                            host_ip: None,
                            host_port: Some(String::new()),
                        };
                        (format!("{p}/tcp"), Some(vec![any]))
                    })
                    .collect()
            }),
            init: spec.init.then_some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            exposed_ports: (!spec.publish.is_empty())
                .then(|| spec.publish.iter().map(|p| format!("{p}/tcp")).collect()),
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            working_dir: spec.working_dir.clone(),
            labels: Some(spec.labels.clone()),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    pub async fn start(&self, name: &str) -> Result<(), DockerError> {
        self.docker
            .start_container(name, None)
            .await
            .map_err(engine_error)
    }

    pub async fn state(&self, name: &str) -> Result<State, DockerError> {
        let info = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(engine_error)?;
        let st = info.state.unwrap_or_default();
        Ok(match st.status {
            Some(ContainerStateStatusEnum::CREATED) => State::Created,
            Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::RESTARTING) => State::Running,
            Some(ContainerStateStatusEnum::PAUSED) => State::Paused,
            _ => State::Exited(Exit {
                code: st.exit_code.unwrap_or(-1),
                oom_killed: st.oom_killed.unwrap_or(false),
            }),
        })
    }

    pub async fn container_labels(
        &self,
        name: &str,
    ) -> Result<HashMap<String, String>, DockerError> {
        let info = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(engine_error)?;
        Ok(info.config.and_then(|c| c.labels).unwrap_or_default())
    }

    /// Waits until the container is no longer running and returns how it ended (asked of the
    /// engine after the wait, so `OOMKilled` is read before the container is removed).
    pub async fn wait_exit(&self, name: &str) -> Result<Exit, DockerError> {
        loop {
            let mut wait = self.docker.wait_container(name, None);
            // The stream ends (or errors with the exit code) when the container stops; either way
            // the truth is in the inspect below.
            let waited = wait.next().await;
            match self.state(name).await? {
                State::Exited(exit) => return Ok(exit),
                _ => {
                    if let Some(Err(e)) = waited {
                        if matches!(engine_error(e), DockerError::Unreachable(_)) {
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                    }
                }
            }
        }
    }

    /// Copies the container's whole output, from its start, into two files (replacing what they
    /// held) and follows it until the container stops. Starting over from the engine's copy
    /// makes a re-adopted task's logs exact, with nothing doubled (output the engine's size
    /// cap already discarded is gone). Each file keeps at most `max_bytes` of output and then
    /// says it was cut.
    pub async fn copy_logs(
        &self,
        name: &str,
        stdout: PathBuf,
        stderr: PathBuf,
        max_bytes: u64,
    ) -> std::io::Result<()> {
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let stream = self.docker.logs(name, Some(opts));
        copy_output(name, stream, stdout, stderr, max_bytes).await
    }

    /// Attaches to a created container's stdout and stderr (before it starts, so the first
    /// bytes are not missed) and returns the copy into two files, which runs until the
    /// container stops. Live output is read from the engine as the task writes it, with
    /// back-pressure, so unlike a read of the engine's log nothing is lost to its size cap.
    pub async fn attach_output(
        &self,
        name: &str,
        stdout: PathBuf,
        stderr: PathBuf,
        max_bytes: u64,
    ) -> Result<BoxFuture<'static, std::io::Result<()>>, DockerError> {
        let opts = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .docker
            .attach_container(name, Some(opts))
            .await
            .map_err(engine_error)?;
        let name = name.to_string();
        Ok(Box::pin(async move {
            // The input half stays open for as long as the output is read.
            let _input = attached.input;
            copy_output(&name, attached.output, stdout, stderr, max_bytes).await
        }))
    }

    pub async fn kill(&self, name: &str) -> Result<(), DockerError> {
        let opts = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self.docker.kill_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            // Not running any more (409) is what a kill wants.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(engine_error(e)),
        }
    }

    pub async fn pause(&self, name: &str) -> Result<(), DockerError> {
        self.docker
            .pause_container(name)
            .await
            .map_err(engine_error)
    }

    pub async fn unpause(&self, name: &str) -> Result<(), DockerError> {
        self.docker
            .unpause_container(name)
            .await
            .map_err(engine_error)
    }

    pub async fn remove(&self, name: &str) -> Result<(), DockerError> {
        let image = self
            .docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|c| c.image);
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(engine_error(e)),
        }
        if let Some(image) = image {
            self.drop_deleted_snapshot(&image).await;
        }
        Ok(())
    }

    /// A VPS started from a snapshot that was deleted meanwhile (untagged while in use) leaves
    /// the image behind once its container goes: delete it then, if nothing names it any more
    /// and a VPS commit made it (commits carry the VPS's labels).
    async fn drop_deleted_snapshot(&self, image: &str) {
        let Ok(info) = self.docker.inspect_image(image).await else {
            return;
        };
        let untagged = info.repo_tags.as_ref().is_none_or(|t| t.is_empty());
        let from_vps = info
            .config
            .and_then(|c| c.labels)
            .is_some_and(|l| l.get(ferry_common::LABEL_KIND).map(String::as_str) == Some("vps"));
        if untagged && from_vps {
            let opts = RemoveImageOptionsBuilder::default().build();
            if let Err(e) = self.docker.remove_image(image, Some(opts), None).await {
                tracing::debug!(%image, error = %e, "deleted snapshot's image still in use");
            }
        }
    }

    /// Names of containers carrying `label=value` (running or not).
    pub async fn list_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>, DockerError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(engine_error)?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let name = ferry_access::docker::listed_name(&c)?;
                Some((name, c.labels.unwrap_or_default()))
            })
            .collect())
    }
}

/// The VPS operations: stop with a grace period, files in and out, published ports, snapshots.
impl Engine {
    pub async fn stop(&self, name: &str, grace: std::time::Duration) -> Result<(), DockerError> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::default().t(secs).build();
        match self.docker.stop_container(name, Some(opts)).await {
            // 304: already stopped; 404: gone. Either is what a stop wants.
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(engine_error(e)),
        }
    }

    pub async fn path_exists(&self, name: &str, path: &str) -> Result<bool, DockerError> {
        let opts = ContainerArchiveInfoOptionsBuilder::default()
            .path(path)
            .build();
        match self
            .docker
            .get_container_archive_info(name, Some(opts))
            .await
        {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            }) => {
                // The container itself missing is an error, a missing path an answer.
                if self.docker.inspect_container(name, None).await.is_err() {
                    Err(DockerError::NotFound(message))
                } else {
                    Ok(false)
                }
            }
            Err(e) => Err(engine_error(e)),
        }
    }

    pub async fn read_file(
        &self,
        name: &str,
        path: &str,
        max: usize,
    ) -> Result<Option<Vec<u8>>, DockerError> {
        if !self.path_exists(name, path).await? {
            return Ok(None);
        }
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(name, Some(opts));
        let mut archive = Vec::new();
        // The tar framing adds a few blocks around the file.
        let limit = max + 64 * 1024;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(engine_error)?;
            if archive.len() + chunk.len() > limit {
                return Err(DockerError::Engine(format!(
                    "{path} is larger than {max} bytes"
                )));
            }
            archive.extend_from_slice(&chunk);
        }
        let mut tar = tar::Archive::new(archive.as_slice());
        let entries = tar
            .entries()
            .map_err(|e| DockerError::Engine(format!("reading {path}: {e}")))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| DockerError::Engine(format!("reading {path}: {e}")))?;
            if entry.header().entry_type().is_file() {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes)
                    .map_err(|e| DockerError::Engine(format!("reading {path}: {e}")))?;
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    pub async fn write_files(&self, name: &str, files: &[FileEntry]) -> Result<(), DockerError> {
        let archive = archive_of(files).map_err(|e| DockerError::Engine(e.to_string()))?;
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        self.docker
            .upload_to_container(name, Some(opts), bollard::body_full(archive.into()))
            .await
            .map_err(engine_error)
    }

    pub async fn published_port(&self, name: &str, port: u16) -> Result<Option<u16>, DockerError> {
        let info = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(engine_error)?;
        let bindings = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut p| p.remove(&format!("{port}/tcp")))
            .flatten()
            .unwrap_or_default();
        Ok(bindings
            .iter()
            .filter_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())
            .find(|p| *p > 0))
    }

    pub async fn commit(
        &self,
        name: &str,
        repository: &str,
        tag: &str,
        message: &str,
    ) -> Result<(), DockerError> {
        let paused = matches!(self.state(name).await?, State::Paused);
        let opts = CommitContainerOptionsBuilder::default()
            .container(name)
            .repo(repository)
            .tag(tag)
            .comment(message)
            .author("ferry-runner")
            // Frozen for the copy so it is consistent; one already paused stays as it is.
            .pause(!paused)
            .build();
        self.docker
            .commit_container(opts, ContainerConfig::default())
            .await
            .map(|_| ())
            .map_err(engine_error)
    }

    pub async fn snapshot_images(
        &self,
        repository: &str,
    ) -> Result<Vec<SnapshotImage>, DockerError> {
        let filters = HashMap::from([("reference".to_string(), vec![repository.to_string()])]);
        let opts = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let images = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(engine_error)?;
        let prefix = format!("{repository}:");
        Ok(images
            .iter()
            .flat_map(|img| {
                img.repo_tags
                    .iter()
                    .filter_map(|t| t.strip_prefix(&prefix))
                    .map(|tag| SnapshotImage {
                        tag: tag.to_string(),
                        created: img.created,
                        size: img.size,
                    })
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// Environment images at their full size; snapshots at what they add to their parent
    /// (a snapshot of a snapshot shares every layer but its newest).
    pub async fn image_usage(&self) -> Result<ImageUsage, DockerError> {
        let images = self
            .docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .map_err(engine_error)?;
        let size_of: HashMap<&str, i64> = images.iter().map(|i| (i.id.as_str(), i.size)).collect();
        let mut usage = ImageUsage::default();
        for img in &images {
            let is = |prefix: &str| img.repo_tags.iter().any(|t| t.starts_with(prefix));
            let size = img.size.max(0) as u64;
            if is("kohakuriver-snapshot/") {
                let parent = size_of.get(img.parent_id.as_str()).copied().unwrap_or(0);
                usage.snapshot_bytes += size.saturating_sub(parent.max(0) as u64);
                usage.snapshots += 1;
            } else if is("kohakuriver/") {
                usage.environment_bytes += size;
                usage.environments += 1;
            }
        }
        Ok(usage)
    }

    /// Removes a tag. One still used by a container (a VPS running from that snapshot) is
    /// untagged only; its image goes with the container (see [`Self::remove`]).
    pub async fn remove_image(&self, reference: &str) -> Result<(), DockerError> {
        let opts = RemoveImageOptionsBuilder::default().force(true).build();
        match self.docker.remove_image(reference, Some(opts), None).await {
            Ok(_)
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(engine_error(e)),
        }
    }
}

/// A tar archive of `files`, every entry owned by root, paths relative to `/`.
fn archive_of(files: &[FileEntry]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for f in files {
        let path = f.path.trim_start_matches('/');
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(f.mode);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        match &f.contents {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, path, std::io::empty())?;
            }
            Some(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, path, bytes.as_slice())?;
            }
        }
    }
    tar.into_inner()
}

impl Workload for Engine {
    fn ping(&self) -> WorkloadResult<'_, ()> {
        Box::pin(Engine::ping(self))
    }
    fn prepare<'a>(&'a self, spec: &'a WorkloadSpec) -> WorkloadResult<'a, ()> {
        Box::pin(self.ensure_image(&spec.image))
    }
    fn create<'a>(&'a self, spec: &'a WorkloadSpec) -> WorkloadResult<'a, ()> {
        Box::pin(Engine::create(self, spec))
    }
    fn start<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        Box::pin(Engine::start(self, name))
    }
    fn inspect<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, State> {
        Box::pin(self.state(name))
    }
    fn labels<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, HashMap<String, String>> {
        Box::pin(self.container_labels(name))
    }
    fn wait<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, Exit> {
        Box::pin(self.wait_exit(name))
    }
    fn capture_logs<'a>(
        &'a self,
        name: &'a str,
        stdout: PathBuf,
        stderr: PathBuf,
        max_bytes: u64,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(self.copy_logs(name, stdout, stderr, max_bytes))
    }
    fn attach_logs<'a>(
        &'a self,
        name: &'a str,
        stdout: PathBuf,
        stderr: PathBuf,
        max_bytes: u64,
    ) -> WorkloadResult<'a, BoxFuture<'static, std::io::Result<()>>> {
        Box::pin(self.attach_output(name, stdout, stderr, max_bytes))
    }
    fn kill<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        Box::pin(Engine::kill(self, name))
    }
    fn pause<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        Box::pin(Engine::pause(self, name))
    }
    fn resume<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        Box::pin(self.unpause(name))
    }
    fn remove<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        Box::pin(Engine::remove(self, name))
    }
    fn find<'a>(&'a self, label: &'a str, value: &'a str) -> WorkloadResult<'a, Vec<Found>> {
        Box::pin(self.list_labelled(label, value))
    }
    fn stop<'a>(&'a self, name: &'a str, grace: std::time::Duration) -> WorkloadResult<'a, ()> {
        Box::pin(Engine::stop(self, name, grace))
    }
    fn path_exists<'a>(&'a self, name: &'a str, path: &'a str) -> WorkloadResult<'a, bool> {
        Box::pin(Engine::path_exists(self, name, path))
    }
    fn read_file<'a>(
        &'a self,
        name: &'a str,
        path: &'a str,
        max: usize,
    ) -> WorkloadResult<'a, Option<Vec<u8>>> {
        Box::pin(Engine::read_file(self, name, path, max))
    }
    fn write_files<'a>(&'a self, name: &'a str, files: &'a [FileEntry]) -> WorkloadResult<'a, ()> {
        Box::pin(Engine::write_files(self, name, files))
    }
    fn published_port<'a>(&'a self, name: &'a str, port: u16) -> WorkloadResult<'a, Option<u16>> {
        Box::pin(Engine::published_port(self, name, port))
    }
    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        repository: &'a str,
        tag: &'a str,
        message: &'a str,
    ) -> WorkloadResult<'a, ()> {
        Box::pin(self.commit(name, repository, tag, message))
    }
    fn snapshots<'a>(&'a self, repository: &'a str) -> WorkloadResult<'a, Vec<SnapshotImage>> {
        Box::pin(self.snapshot_images(repository))
    }
    fn remove_snapshot<'a>(&'a self, repository: &'a str, tag: &'a str) -> WorkloadResult<'a, ()> {
        Box::pin(async move { self.remove_image(&format!("{repository}:{tag}")).await })
    }
    fn image_usage(&self) -> WorkloadResult<'_, ImageUsage> {
        Box::pin(Engine::image_usage(self))
    }

    fn image_created<'a>(&'a self, image: &'a str) -> WorkloadResult<'a, Option<i64>> {
        Box::pin(async move {
            match self.docker.inspect_image(image).await {
                Ok(info) => Ok(info
                    .created
                    .as_deref()
                    .and_then(|c| humantime::parse_rfc3339_weak(c).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)),
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(None),
                Err(e) => Err(engine_error(e)),
            }
        })
    }

    fn load_image<'a>(
        &'a self,
        path: &'a std::path::Path,
        sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> WorkloadResult<'a, String> {
        Box::pin(async move {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| WorkloadError::Engine(format!("{}: {e}", path.display())))?;
            // Streamed in 1 MiB pieces: never the whole archive in memory.
            let chunks = futures_util::stream::unfold(file, move |mut f| {
                let sent = sent.clone();
                async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
                    match f.read_buf(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            sent.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            Some((Ok::<_, std::io::Error>(buf.freeze()), f))
                        }
                        Err(e) => Some((Err(e), f)),
                    }
                }
            });
            let opts = bollard::query_parameters::ImportImageOptionsBuilder::default()
                .quiet(true)
                .build();
            let mut loaded = String::new();
            let mut out = self.docker.import_image_stream(opts, chunks, None);
            while let Some(step) = out.next().await {
                let info = step.map_err(engine_error)?;
                if let Some(line) = info.stream {
                    for l in line.lines() {
                        if let Some(id) = l.strip_prefix("Loaded image ID: ") {
                            loaded = id.trim().to_string();
                        } else if let Some(r) = l.strip_prefix("Loaded image: ") {
                            loaded = r.trim().to_string();
                        }
                    }
                }
            }
            if loaded.is_empty() {
                return Err(WorkloadError::Engine(format!(
                    "{}: the engine loaded no image from it",
                    path.display()
                )));
            }
            Ok(loaded)
        })
    }

    fn tag_image<'a>(
        &'a self,
        source: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> WorkloadResult<'a, ()> {
        Box::pin(async move {
            let opts = bollard::query_parameters::TagImageOptionsBuilder::default()
                .repo(repository)
                .tag(tag)
                .build();
            self.docker
                .tag_image(source, Some(opts))
                .await
                .map_err(engine_error)
        })
    }

    fn net_namespace<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, PathBuf> {
        Box::pin(async move {
            let (pid, _) = ferry_access::docker::init_process(&self.docker, name)
                .await
                .map_err(enter_error)?;
            Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
        })
    }
    fn fs_root<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, (PathBuf, String)> {
        Box::pin(async move {
            ferry_access::docker::fs_root(&self.docker, name)
                .await
                .map_err(enter_error)
        })
    }
    fn open_tty<'a>(
        &'a self,
        name: &'a str,
        shells: &'a [&'a str],
        rows: u16,
        cols: u16,
    ) -> WorkloadResult<'a, super::TtySession> {
        Box::pin(async move {
            ferry_access::docker::open_first_shell(&self.docker, name, shells, rows, cols)
                .await
                .map_err(|e| WorkloadError::Engine(e.to_string()))
        })
    }
}

fn enter_error(e: ferry_access::docker::EnterError) -> WorkloadError {
    WorkloadError::Engine(e.to_string())
}

/// Writes a container's output stream into two capped files until the stream ends (or both
/// files are full).
async fn copy_output(
    name: &str,
    mut stream: impl futures_util::Stream<Item = Result<LogOutput, BollardError>> + Unpin,
    stdout: PathBuf,
    stderr: PathBuf,
    max_bytes: u64,
) -> std::io::Result<()> {
    let file = |f| logcap::Capped::new(tokio::io::BufWriter::new(f), max_bytes);
    let mut out = file(tokio::fs::File::create(&stdout).await?);
    let mut err = file(tokio::fs::File::create(&stderr).await?);
    loop {
        // Written through as soon as the container pauses its output, so a follower sees
        // each line when it is printed; a burst still goes out in big writes.
        let next = match futures_util::FutureExt::now_or_never(stream.next()) {
            Some(next) => next,
            None => {
                out.flush().await?;
                err.flush().await?;
                stream.next().await
            }
        };
        let Some(chunk) = next else { break };
        match chunk {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                out.write(&message).await?
            }
            Ok(LogOutput::StdErr { message }) => err.write(&message).await?,
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "log stream ended with an error");
                break;
            }
        }
        // Both copies are full: reading on would only drain output to drop it.
        if out.is_cut() && err.is_cut() {
            break;
        }
    }
    out.flush().await?;
    err.flush().await?;
    out.get_ref().get_ref().sync_all().await?;
    err.get_ref().get_ref().sync_all().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_holds_root_owned_entries_with_their_modes() {
        let files = [
            FileEntry::dir("/root/.ssh", 0o700),
            FileEntry::file("/root/.ssh/authorized_keys", 0o600, "ssh-ed25519 AAAA k\n"),
        ];
        let bytes = archive_of(&files).unwrap();
        let mut tar = tar::Archive::new(bytes.as_slice());
        let got: Vec<(String, u32, u64, bool)> = tar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.entry_type().is_dir(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("root/.ssh".to_string(), 0o700, 0, true),
                ("root/.ssh/authorized_keys".to_string(), 0o600, 0, false),
            ]
        );
    }
}
