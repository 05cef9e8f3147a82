//! Environments (`/api/docker/*`): the host's environment containers, where an operator
//! prepares what tasks run in.

use serde::{Deserialize, Serialize};

/// Body of `POST /api/docker/host/create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvCreateRequest {
    /// A local image (pulled when absent and a registry is reachable).
    pub image_name: String,
    /// The environment's name; the container is `kohakuriver-env-<name>`.
    pub container_name: String,
}

/// Reply of `POST /api/docker/host/create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvCreateResponse {
    pub message: String,
    pub container_id: String,
    /// `kohakuriver-env-<env_name>`.
    pub container_name: String,
    pub env_name: String,
    pub status: String,
}

/// One item of `GET /api/docker/host/containers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvContainer {
    /// Short container id (12 hex digits).
    pub id: String,
    pub name: String,
    pub env_name: String,
    /// The image's first tag, else its short id, else `<missing>`.
    pub image: String,
    /// Docker's state: `running`, `exited`, `created`, ...
    pub status: String,
    /// When the container was created (RFC 3339).
    pub created: String,
}

/// One stored version of an environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvVersion {
    /// Unix seconds: the tarball's number.
    pub timestamp: i64,
    /// The tarball's path on the host.
    pub tarball: String,
    pub size_bytes: u64,
}

/// An environment's versions in `GET /api/docker/list` (which maps each name to one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvVersions {
    pub latest_timestamp: i64,
    pub latest_tarball: String,
    /// Newest first.
    pub all_versions: Vec<EnvVersion>,
}

/// Reply of `POST /api/docker/create_tar/{env}` (202: packaging runs in the background).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvPackageResponse {
    pub message: String,
    /// Where the tarball will be once packaging is done.
    pub tarball_path: String,
    pub env_name: String,
}

/// A packaging job as `GET /api/docker/env/{name}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvPackaging {
    /// `stopping`, `committing`, `saving`, `done` or `failed`.
    pub state: String,
    pub tarball: String,
    pub bytes_written: u64,
    pub started_at: String,
    /// Why it failed (`failed` only).
    pub error: Option<String>,
}

/// Reply of `GET /api/docker/env/{name}` (Ferry's): an environment's container, its versions
/// and its newest packaging job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvView {
    pub env_name: String,
    pub container: Option<EnvContainer>,
    pub versions: Vec<EnvVersion>,
    pub packaging: Option<EnvPackaging>,
}

/// Reply of `POST /api/docker/host/migrate/{old}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvMigrateResponse {
    pub message: String,
    pub old_name: String,
    pub new_name: String,
    pub env_name: String,
    pub image: String,
}

/// Reply of `GET /api/docker/store` (Ferry's): what the host's environment store holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvStoreUsage {
    /// The store's directory on the host.
    pub path: String,
    /// Bytes the finished tarballs take.
    pub used_bytes: u64,
    /// The cap (`max_env_store`); absent: none.
    pub limit_bytes: Option<u64>,
    pub tarballs: u32,
    pub environments: u32,
    /// Bytes written so far by packagings under way (not in `used_bytes` yet).
    pub packaging_bytes: u64,
}
