//! The host's environment containers through its Docker engine: list, create, start, stop,
//! delete. A container is `kohakuriver-env-<env>`, runs `tail -f /dev/null` under Docker's
//! init (so a stop is quick) and is capped at a share of the host's cores and memory, so
//! preparing an environment never starves the host's API.

use super::names;
use super::{EnvError, Envs};
use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use ferry_common::api::{EnvContainer, EnvCreateResponse, EnvMigrateResponse};
use futures_util::StreamExt;
use std::collections::HashMap;

/// Share of the host's cores and memory an environment container may use (the original's
/// `ENV_CONTAINER_CPU_LIMIT` / `MEM_LIMIT` default).
pub const HOST_SHARE: f64 = 0.25;
/// Seconds a stop waits before the engine kills.
const STOP_GRACE: i32 = 10;
/// Label every environment container carries (names stay the original's).
pub const LABEL: &str = "ferry.env";

impl Envs {
    /// Every environment container, by name.
    pub async fn list(&self) -> Result<Vec<EnvContainer>, EnvError> {
        let docker = self.docker()?;
        let filters = HashMap::from([(
            "name".to_string(),
            vec![format!("^/{}", names::CONTAINER_PREFIX)],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| EnvError::from_docker(e, "listing containers"))?;
        let mut out: Vec<EnvContainer> = list
            .into_iter()
            .filter_map(|c| {
                let name = ferry_access::docker::listed_name(&c)?;
                let env_name = name.strip_prefix(names::CONTAINER_PREFIX)?.to_string();
                let id: String = c.id.unwrap_or_default().chars().take(12).collect();
                let image = c
                    .image
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| "<missing>".into());
                let created = c
                    .created
                    .map(|s| ferry_common::time::format_ms(s.saturating_mul(1000)))
                    .unwrap_or_default();
                let status = c.state.map(|s| s.to_string()).unwrap_or_default();
                Some(EnvContainer {
                    id,
                    name,
                    env_name,
                    image,
                    status,
                    created,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates and starts `kohakuriver-env-<env>` from `image`.
    pub async fn create(&self, image: &str, env: &str) -> Result<EnvCreateResponse, EnvError> {
        names::check("container_name", env)?;
        if image.trim().is_empty() || image.len() > 256 {
            return Err(EnvError::BadName(
                "image_name: an image name of 1 to 256 characters".into(),
            ));
        }
        let docker = self.docker()?;
        let name = names::container(env);
        if docker.inspect_container(&name, None).await.is_ok() {
            return Err(EnvError::Conflict(format!(
                "Environment '{env}' already exists ({name})."
            )));
        }
        self.ensure_image(image).await?;
        let id = self.create_container(image, env).await?;
        Ok(EnvCreateResponse {
            message: format!("Environment '{env}' created from {image}."),
            container_id: id,
            container_name: name,
            env_name: env.to_string(),
            status: "running".into(),
        })
    }

    /// Creates and starts `kohakuriver-env-<env>` from a local `image`; its short id.
    async fn create_container(&self, image: &str, env: &str) -> Result<String, EnvError> {
        let docker = self.docker()?;
        let name = names::container(env);
        let (cores, memory) = self.host_size;
        let host_config = HostConfig {
            nano_cpus: Some(((cores as f64) * HOST_SHARE * 1e9) as i64),
            memory: (memory > 0).then_some(((memory as f64) * HOST_SHARE) as i64),
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["tail".into(), "-f".into(), "/dev/null".into()]),
            labels: Some(HashMap::from([(LABEL.to_string(), env.to_string())])),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| EnvError::from_docker(e, "creating the container"))?;
        docker
            .start_container(&name, None)
            .await
            .map_err(|e| EnvError::from_docker(e, "starting the container"))?;
        Ok(created.id.chars().take(12).collect())
    }

    /// A local image, else a pull (which fails fast where no registry is reachable).
    async fn ensure_image(&self, image: &str) -> Result<(), EnvError> {
        let docker = self.docker()?;
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(EnvError::from_docker(e, "looking up the image")),
        }
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut pull = docker.create_image(Some(opts), None, None);
        while let Some(step) = pull.next().await {
            if let Err(e) = step {
                return Err(EnvError::NotFound(format!(
                    "image_name: {image} is not on the host and could not be pulled: {}",
                    short(&e.to_string())
                )));
            }
        }
        Ok(())
    }

    /// The container of environment `env`, which must exist.
    pub(super) async fn existing(&self, env: &str) -> Result<String, EnvError> {
        let docker = self.docker()?;
        let name = names::container(env);
        match docker.inspect_container(&name, None).await {
            Ok(_) => Ok(name),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Err(EnvError::NotFound(format!(
                "Environment '{env}' not found."
            ))),
            Err(e) => Err(EnvError::from_docker(e, "looking up the container")),
        }
    }

    pub async fn start(&self, env: &str) -> Result<String, EnvError> {
        let name = self.existing(env).await?;
        match self.docker()?.start_container(&name, None).await {
            // 304: already running.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(format!("Environment '{env}' started successfully.")),
            Err(e) => Err(EnvError::from_docker(e, "starting the container")),
        }
    }

    pub async fn stop(&self, env: &str) -> Result<String, EnvError> {
        let name = self.existing(env).await?;
        let opts = StopContainerOptionsBuilder::default().t(STOP_GRACE).build();
        match self.docker()?.stop_container(&name, Some(opts)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(format!("Environment '{env}' stopped successfully.")),
            Err(e) => Err(EnvError::from_docker(e, "stopping the container")),
        }
    }

    pub async fn delete(&self, env: &str) -> Result<String, EnvError> {
        let name = self.existing(env).await?;
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        self.docker()?
            .remove_container(&name, Some(opts))
            .await
            .map_err(|e| EnvError::from_docker(e, "removing the container"))?;
        Ok(format!("Environment '{env}' deleted successfully."))
    }

    /// Adopts a container made before the naming rule (a bare `<old>`, e.g. by an older
    /// KohakuRiver): it is stopped, committed to `kohakuriver/<old>:base`, re-created as
    /// `kohakuriver-env-<old>` from that image and removed. The one route that reaches a
    /// container by its bare name, and only to bring it under the rule.
    pub async fn migrate(&self, old: &str) -> Result<EnvMigrateResponse, EnvError> {
        if old.starts_with(names::CONTAINER_PREFIX) {
            return Err(EnvError::Refused(format!(
                "{old} already carries the {} prefix",
                names::CONTAINER_PREFIX
            )));
        }
        names::check("name", old)?;
        let docker = self.docker()?;
        let new_name = names::container(old);
        match docker.inspect_container(old, None).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Err(EnvError::NotFound(format!("Container '{old}' not found."))),
            Err(e) => return Err(EnvError::from_docker(e, "looking up the container")),
        }
        if docker.inspect_container(&new_name, None).await.is_ok() {
            return Err(EnvError::Conflict(format!(
                "Environment '{old}' already exists ({new_name})."
            )));
        }
        let opts = StopContainerOptionsBuilder::default().t(STOP_GRACE).build();
        match docker.stop_container(old, Some(opts)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(EnvError::from_docker(e, "stopping the container")),
        }
        let image = names::image(old);
        let (repo, tag) = image.rsplit_once(':').unwrap_or((&image, "base"));
        let commit = CommitContainerOptionsBuilder::default()
            .container(old)
            .repo(repo)
            .tag(tag)
            .author("ferry-host")
            .pause(false)
            .build();
        docker
            .commit_container(commit, ContainerConfig::default())
            .await
            .map_err(|e| EnvError::from_docker(e, "committing the container"))?;
        self.create_container(&image, old).await?;
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        docker
            .remove_container(old, Some(remove))
            .await
            .map_err(|e| EnvError::from_docker(e, "removing the old container"))?;
        Ok(EnvMigrateResponse {
            message: format!("Container '{old}' migrated to environment '{old}' ({new_name})."),
            old_name: old.to_string(),
            new_name,
            env_name: old.to_string(),
            image,
        })
    }

    /// The running container of `env`, for its terminal and files.
    pub async fn running(&self, env: &str) -> Result<String, EnvError> {
        let name = self.existing(env).await?;
        let info = self
            .docker()?
            .inspect_container(&name, None)
            .await
            .map_err(|e| EnvError::from_docker(e, "looking up the container"))?;
        if info.state.and_then(|s| s.running) != Some(true) {
            return Err(EnvError::NotRunning(format!(
                "Environment '{env}' is not running."
            )));
        }
        Ok(name)
    }
}

/// The host's cores and memory (bytes; 0 when unknown).
pub(super) fn host_size() -> (usize, u64) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total())
        .unwrap_or(0);
    (cores, memory)
}

/// The first line of an engine message, at most 300 characters.
fn short(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}
