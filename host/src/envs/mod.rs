//! Environments: containers an operator prepares on the host (install packages, copy a
//! dataset loader) so that tasks can run in them. [`names`] checks and maps environment
//! names; [`containers`] creates, lists, starts, stops and deletes the containers through the
//! host's own Docker engine; [`package`] turns one into a tarball in the [`store`], in the
//! background. The terminal and file routes reach into them with
//! `ferry-access`, as the runner does for tasks.
//!
//! The host needs Docker only for this: without an engine these routes answer 503 with the
//! reason, and everything else works.

pub mod containers;
pub mod names;
pub mod package;
pub mod store;

use bollard::errors::Error as BollardError;
use bollard::Docker;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What can go wrong with an environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{0}")]
    BadName(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotRunning(String),
    /// A request that cannot apply (e.g. adopting what is already adopted).
    #[error("{0}")]
    Refused(String),
    /// No Docker engine answers on the host.
    #[error("Docker is not reachable on the host: {0}")]
    NoDocker(String),
    #[error("Docker failed: {0}")]
    Engine(String),
    /// The environment store could not be read or written.
    #[error("{0}")]
    Store(String),
    /// The store is at its configured cap.
    #[error("{0}")]
    Full(String),
}

impl EnvError {
    /// A Docker error: the engine's own 404/409 answers keep their meaning, a transport
    /// failure means the engine is not there.
    pub fn from_docker(e: BollardError, what: &str) -> EnvError {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => EnvError::NotFound(format!("{what}: {message}")),
            BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            } => EnvError::Conflict(format!("{what}: {message}")),
            BollardError::DockerResponseServerError { message, .. } => {
                EnvError::Engine(format!("{what}: {message}"))
            }
            other => EnvError::NoDocker(other.to_string()),
        }
    }
}

/// The host's Docker engine (if it has one), the tarball store and the packaging jobs.
#[derive(Clone)]
pub struct Envs {
    docker: Result<Docker, String>,
    pub store: store::Store,
    /// 0: no cap.
    max_store_bytes: u64,
    jobs: Arc<Mutex<HashMap<String, Arc<package::Job>>>>,
    /// The host's cores and memory (bytes; 0 unknown), read once at start: what an
    /// environment container's share is taken of.
    host_size: (usize, u64),
}

impl Envs {
    /// Connects as the docker CLI would (`DOCKER_HOST`, else the local socket). Nothing is
    /// asked of the engine yet: a host that has none starts all the same.
    pub fn connect(store: store::Store, max_store_bytes: u64) -> Envs {
        Envs {
            docker: Docker::connect_with_defaults().map_err(|e| e.to_string()),
            store,
            max_store_bytes,
            jobs: Arc::default(),
            host_size: containers::host_size(),
        }
    }

    pub fn docker(&self) -> Result<&Docker, EnvError> {
        self.docker
            .as_ref()
            .map_err(|e| EnvError::NoDocker(e.clone()))
    }
}
