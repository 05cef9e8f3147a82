//! Environment routes (`/api/docker/*`, operators): the host's environment containers, their
//! terminal, packaging them and their stored tarballs. The work is in [`crate::envs`].

use super::error::{ApiError, ApiJson};
use crate::auth::Caller;
use crate::envs::package::Phase;
use crate::envs::store::Store;
use crate::envs::{names, EnvError};
use crate::AppState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use ferry_access::terminal;
use ferry_common::api::{
    EnvContainer, EnvCreateRequest, EnvCreateResponse, EnvMigrateResponse, EnvPackageResponse,
    EnvPackaging, EnvStoreUsage, EnvVersion, EnvVersions, EnvView, MessageResponse,
};
use std::collections::BTreeMap;

impl From<EnvError> for ApiError {
    fn from(e: EnvError) -> ApiError {
        let detail = e.to_string();
        match e {
            EnvError::BadName(_) => ApiError::unprocessable(detail),
            EnvError::NotFound(_) => ApiError::not_found(detail),
            EnvError::Conflict(_) => ApiError::conflict(detail),
            EnvError::NotRunning(_) | EnvError::Refused(_) => ApiError::bad_request(detail),
            EnvError::NoDocker(_) => ApiError::unavailable(detail),
            EnvError::Engine(_) => ApiError::bad_gateway(detail),
            EnvError::Store(_) => ApiError::internal(detail),
            EnvError::Full(_) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, detail),
        }
    }
}

fn message(m: String) -> Json<MessageResponse> {
    Json(MessageResponse { message: m })
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<EnvContainer>>, ApiError> {
    Ok(Json(state.envs.list().await?))
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<EnvCreateRequest>,
) -> Result<Json<EnvCreateResponse>, ApiError> {
    let made = state
        .envs
        .create(&req.image_name, &req.container_name)
        .await?;
    crate::auth::service::audit(
        &state,
        Some(&caller),
        "env.create",
        Some(format!("env {}", made.env_name)),
        Some(req.image_name),
    )
    .await;
    Ok(Json(made))
}

pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    Ok(message(state.envs.start(&names::env_of(&name)?).await?))
}

pub async fn stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    Ok(message(state.envs.stop(&names::env_of(&name)?).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    let env = names::env_of(&name)?;
    let done = state.envs.delete(&env).await?;
    crate::auth::service::audit(
        &state,
        Some(&caller),
        "env.delete",
        Some(format!("env {env}")),
        None,
    )
    .await;
    Ok(message(done))
}

pub async fn migrate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(old): Path<String>,
) -> Result<Json<EnvMigrateResponse>, ApiError> {
    let done = state.envs.migrate(&old).await?;
    crate::auth::service::audit(
        &state,
        Some(&caller),
        "env.migrate",
        Some(format!("env {old}")),
        None,
    )
    .await;
    Ok(Json(done))
}

/// `/ws/docker/host/containers/{name}/terminal`: a shell in a running environment container,
/// served by the host itself. A missing or stopped container is an error frame and close 1008;
/// no Docker or no shell, 1011.
pub async fn terminal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // A bad name is refused before the upgrade; the container is looked up after it, so the
    // client reads why in the socket, as the original does.
    let env = names::env_of(&name)?;
    Ok(ws.on_upgrade(move |socket| async move {
        let container = match state.envs.running(&env).await {
            Ok(c) => c,
            Err(e) => {
                let code = match e {
                    EnvError::NoDocker(_) | EnvError::Engine(_) => terminal::CLOSE_ERROR,
                    _ => 1008,
                };
                terminal::refuse(socket, code, &e.to_string()).await;
                return;
            }
        };
        let docker = match state.envs.docker() {
            Ok(d) => d.clone(),
            Err(e) => {
                terminal::refuse(socket, terminal::CLOSE_ERROR, &e.to_string()).await;
                return;
            }
        };
        let what = Some(format!("env {env}"));
        crate::auth::service::audit(&state, Some(&caller), "terminal.open", what.clone(), None)
            .await;
        let started = std::time::Instant::now();
        let open: terminal::Opener<'_, _> = Box::new(|rows, cols| {
            Box::pin(ferry_access::docker::open_first_shell(
                &docker,
                &container,
                terminal::SHELLS,
                rows,
                cols,
            ))
        });
        terminal::serve(socket, open).await;
        let took = format!("{} ms", started.elapsed().as_millis());
        crate::auth::service::audit(&state, Some(&caller), "terminal.close", what, Some(took))
            .await;
    }))
}

fn version(t: &crate::envs::store::Tarball) -> EnvVersion {
    EnvVersion {
        timestamp: t.timestamp,
        tarball: t.path.display().to_string(),
        size_bytes: t.size_bytes,
    }
}

/// Runs blocking store work off the runtime.
async fn on_store<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Store) -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.envs.store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("the environment store: {e}")))
}

/// `GET /api/docker/list`: every environment's tarballs, newest first.
pub async fn tarballs(
    State(state): State<AppState>,
) -> Result<Json<BTreeMap<String, EnvVersions>>, ApiError> {
    let all = on_store(&state, |s| s.list()).await?;
    let out = all
        .into_iter()
        .filter_map(|(env, versions)| {
            let newest = versions.first()?.clone();
            Some((
                env,
                EnvVersions {
                    latest_timestamp: newest.timestamp,
                    latest_tarball: newest.path.display().to_string(),
                    all_versions: versions.iter().map(version).collect(),
                },
            ))
        })
        .collect();
    Ok(Json(out))
}

/// `GET /api/docker/store`: what the environment store holds, and its cap.
pub async fn store_usage(State(state): State<AppState>) -> Result<Json<EnvStoreUsage>, ApiError> {
    Ok(Json(state.envs.store_usage().await?))
}

/// `POST /api/docker/create_tar/{env}`: starts packaging; 202 at once.
pub async fn package(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<EnvPackageResponse>), ApiError> {
    let env = names::env_of(&name)?;
    let job = state.envs.package(&env).await?;
    let path = state.envs.store.dir().join(job.tarball_name());
    crate::auth::service::audit(
        &state,
        Some(&caller),
        "env.package",
        Some(format!("env {env}")),
        Some(job.tarball_name()),
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(EnvPackageResponse {
            message: format!(
                "Packaging environment '{env}' into {}; GET /api/docker/env/{env} shows its progress.",
                job.tarball_name()
            ),
            tarball_path: path.display().to_string(),
            env_name: env,
        }),
    ))
}

/// `GET /api/docker/env/{name}`: the container, the versions and the newest packaging job.
pub async fn view(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<EnvView>, ApiError> {
    let env = names::env_of(&name)?;
    let versions = {
        let env = env.clone();
        on_store(&state, move |s| s.versions(&env)).await?
    };
    let container = match state.envs.list().await {
        Ok(list) => list.into_iter().find(|c| c.env_name == env),
        // Without Docker the stored versions still show.
        Err(EnvError::NoDocker(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let packaging = state.envs.job(&env).map(|job| {
        let phase = job.phase();
        EnvPackaging {
            state: phase.name().to_string(),
            tarball: job.tarball_name(),
            bytes_written: job.bytes_written.load(std::sync::atomic::Ordering::Relaxed),
            started_at: ferry_common::time::format_ms(job.started_ms),
            error: match phase {
                Phase::Failed { error } => Some(error),
                _ => None,
            },
        }
    });
    if container.is_none() && versions.is_empty() && packaging.is_none() {
        return Err(ApiError::not_found(format!(
            "Environment '{env}' not found."
        )));
    }
    Ok(Json(EnvView {
        env_name: env,
        container,
        versions: versions.iter().map(version).collect(),
        packaging,
    }))
}

/// `DELETE /api/docker/container/{name}`: every stored version.
pub async fn delete_tarballs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    let env = names::env_of(&name)?;
    let removed = {
        let env = env.clone();
        on_store(&state, move |s| s.delete_all(&env)).await?
    };
    if removed == 0 {
        return Err(ApiError::not_found(format!(
            "No tarball of environment '{env}'."
        )));
    }
    crate::auth::service::audit(
        &state,
        Some(&caller),
        "env.tarballs_delete",
        Some(format!("env {env}")),
        Some(format!("{removed} versions")),
    )
    .await;
    Ok(message(format!("Container '{env}' deleted.")))
}

/// `?timestamp=`: one version rather than the newest.
#[derive(Debug, serde::Deserialize)]
pub struct VersionQuery {
    timestamp: Option<i64>,
}

/// `GET /api/docker/container/{name}` (operators) and `GET /api/runner/environments/{name}`
/// (runners): the newest tarball, or `?timestamp=` that version, streamed with
/// `Content-Length`, `Range` and the recorded checksum (`X-Ferry-Sha256`).
pub async fn download(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    use axum::http::header::{HeaderValue, CONTENT_DISPOSITION};
    use tower::ServiceExt;
    let env = names::env_of(&name)?;
    let found = {
        let env = env.clone();
        on_store(&state, move |s| {
            let versions = s.versions(&env)?;
            let pick = match q.timestamp {
                Some(ts) => versions.into_iter().find(|t| t.timestamp == ts),
                None => versions.into_iter().next(),
            };
            Ok(pick.map(|t| {
                let sum = s.sha256(&t);
                (t, sum)
            }))
        })
        .await?
    };
    let Some((tarball, sha256)) = found else {
        return Err(ApiError::not_found(match q.timestamp {
            Some(ts) => format!("No tarball of environment '{env}' numbered {ts}."),
            None => format!("No tarball of environment '{env}'."),
        }));
    };
    let served = tower_http::services::ServeFile::new(&tarball.path)
        .oneshot(req)
        .await
        .map_err(|e| ApiError::internal(format!("serving {}: {e}", tarball.path.display())))?;
    let mut resp = served.map(axum::body::Body::new);
    let headers = resp.headers_mut();
    let disposition = format!("attachment; filename=\"{}\"", tarball.file_name());
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    if let Some(v) = sha256.and_then(|s| HeaderValue::from_str(&s).ok()) {
        headers.insert(ferry_common::envs::HEADER_SHA256, v);
    }
    headers.insert(
        ferry_common::envs::HEADER_TIMESTAMP,
        HeaderValue::from(tarball.timestamp),
    );
    Ok(resp)
}

/// `/api/fs/container/{name}/<op>`: the file routes in a running environment container,
/// done by the host itself with the same code (and the same escape-proof rules) as the
/// runner's for tasks. Changing operations answer the runner's shape plus `"success": true`,
/// which the original's clients of these routes read.
pub async fn file_op(
    State(state): State<AppState>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    use ferry_access::files::{FileOp, Refused};
    let env = names::env_of(&name)?;
    let op_name = uri.path().rsplit('/').next().unwrap_or_default();
    if matches!(op_name, "write" | "mkdir" | "rename") {
        super::error::require_json(&headers)?;
    }
    let refused = |Refused { status, detail }| {
        ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            detail,
        )
    };
    let op = FileOp::parse(op_name, uri.query().unwrap_or(""), &bytes).map_err(refused)?;
    let container = state.envs.running(&env).await?;
    let docker = state.envs.docker()?;
    let (dir, user) = ferry_access::docker::fs_root(docker, &container)
        .await
        .map_err(|e| ApiError::bad_request(format!("Environment '{env}': {e}")))?;
    let writes = op.writes();
    let mut v = op.run_on(dir, user).await.map_err(refused)?;
    if writes {
        if let Some(obj) = v.as_object_mut() {
            obj.insert("success".into(), serde_json::Value::Bool(true));
        }
    }
    Ok(Json(v))
}
