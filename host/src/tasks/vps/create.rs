//! `POST /api/vps/create`: [`build`] checks the request and makes the task (pure); [`create`]
//! makes the key pair of `generate`, hands the task to the scheduler (now or queued) and
//! waits, bounded, for the VPS to run so the reply can carry its SSH port.

use super::VpsError;
use crate::auth::Caller;
use crate::scheduler::{PlaceError, Placement};
use crate::tasks::model::Task;
use crate::tasks::submit::{
    check_cores, check_image, check_memory, stamp_submitter, Invalid, Policy,
};
use crate::AppState;
use ferry_common::api::{NodeRef, VpsCreateRequest, VpsCreateResponse};
use ferry_common::ssh::{check_public_key, generate_ed25519, KeyPair};
use ferry_common::task::{
    Image, Resources, SshKeyMode, TaskDefinition, TaskSpec, VpsBackend, VpsSpec,
};
use ferry_common::{vps_container_name, Role, TaskId, TaskStatus};
use std::time::Duration;

/// Longest VPS name kept.
const MAX_NAME: usize = 128;

/// What the cluster allows VPSes to be.
#[derive(Debug, Clone)]
pub struct VpsPolicy {
    pub tasks: Policy,
    pub allow_passwordless: bool,
}

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Checks `req` and builds the VPS task (without its owner and key pair).
pub fn build(
    req: &VpsCreateRequest,
    policy: &VpsPolicy,
    id: TaskId,
    now_ms: i64,
) -> Result<Task, Invalid> {
    match req.vps_backend.as_deref().unwrap_or("docker") {
        "docker" => {}
        "qemu" => {
            return Err(invalid(
                "vps_backend: QEMU VPSes are not available on this host yet; use 'docker'",
            ))
        }
        other => {
            return Err(invalid(format!(
                "vps_backend: must be 'docker' or 'qemu', got {other:?}"
            )))
        }
    }
    let mode: SshKeyMode = req
        .ssh_key_mode
        .as_deref()
        .unwrap_or("disabled")
        .parse()
        .map_err(|e| invalid(format!("ssh_key_mode: {e}")))?;
    if mode == SshKeyMode::None && !policy.allow_passwordless {
        return Err(invalid(
            "ssh_key_mode: 'none' (root over SSH without a password) is not allowed on this \
             cluster (allow_passwordless_vps); use 'upload' or 'generate'",
        ));
    }
    let public_key = match mode {
        SshKeyMode::Upload => {
            let key = req
                .ssh_public_key
                .as_deref()
                .filter(|k| !k.trim().is_empty())
                .ok_or_else(|| invalid("ssh_public_key: required when ssh_key_mode is 'upload'"))?;
            Some(check_public_key(key).map_err(|e| invalid(format!("ssh_public_key: {e}")))?)
        }
        _ => None,
    };
    if req.ip_reservation_token.is_some() {
        return Err(invalid(
            "ip_reservation_token: IP reservations are not available on this host yet",
        ));
    }
    if let Some(name) = &req.name {
        if name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Err(invalid(format!(
                "name: at most {MAX_NAME} characters, no control characters"
            )));
        }
    }
    let cores = check_cores(req.required_cores, &policy.tasks)?;
    let memory = check_memory(req.required_memory_bytes)?;
    let container_name = check_image(
        &req.registry_image,
        &req.container_name,
        &policy.tasks.default_env,
    )?;
    let numa = req
        .target_numa_node_id
        .map(|n| {
            u32::try_from(n)
                .map_err(|_| invalid(format!("target_numa_node_id: invalid NUMA node {n}")))
        })
        .transpose()?;
    let mut gpus = req
        .required_gpus
        .iter()
        .flatten()
        .map(|g| {
            u32::try_from(*g).map_err(|_| invalid(format!("required_gpus: invalid GPU index {g}")))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    gpus.sort_unstable();
    gpus.dedup();
    let target = req
        .target_hostname
        .as_ref()
        .filter(|h| !h.is_empty())
        .cloned();
    if !gpus.is_empty() && target.is_none() {
        return Err(invalid(
            "required_gpus: a GPU VPS needs target_hostname (GPU indices are per node)",
        ));
    }
    let definition = TaskDefinition {
        spec: TaskSpec::Vps(VpsSpec {
            vps_backend: VpsBackend::Docker,
            ssh_key_mode: mode,
            ssh_public_key: public_key,
            vm_image: None,
            vm_disk_size: None,
        }),
        resources: Resources {
            required_cores: cores,
            required_gpus: gpus,
            required_memory_bytes: memory,
            target_numa_node_id: numa,
        },
        image: Image {
            container_name,
            registry_image: req.registry_image.clone(),
        },
        env_vars: Default::default(),
        privileged: false,
        mounts: Vec::new(),
    };
    let mut task = Task::new(id, definition, now_ms);
    // A VPS stands alone (the original gives it no batch).
    task.batch_id = None;
    task.name = req.name.clone();
    task.target_node = target;
    Ok(task)
}

/// What the scheduler's refusal means for a VPS request.
fn refused(e: PlaceError) -> VpsError {
    match e {
        PlaceError::UnknownNode(n) => {
            VpsError::Invalid(format!("target_hostname: node '{n}' is not registered"))
        }
        PlaceError::NeverFits(why) => VpsError::Invalid(why),
        PlaceError::NoRoom(why) => VpsError::Unavailable(why),
        PlaceError::NoNodes => VpsError::Unavailable(e.to_string()),
        PlaceError::Stopped => VpsError::Unavailable("the scheduler is not running".into()),
        PlaceError::Store(e) => VpsError::Store(e),
    }
}

/// Creates a VPS for `caller` (see the module doc).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    req: VpsCreateRequest,
) -> Result<VpsCreateResponse, VpsError> {
    let cfg = &state.config;
    let policy = VpsPolicy {
        tasks: Policy {
            default_env: cfg.default_container_name.clone(),
            allow_unlimited_cores: cfg.allow_unlimited_cores,
            max_targets: 1,
            max_priority: None,
            // A VPS lives until it is stopped.
            default_timeout: None,
            max_timeout: 0,
            // A VPS is started again with restart, never retried.
            max_retries: 0,
            default_retry_backoff: 0,
        },
        allow_passwordless: cfg.allow_passwordless_vps,
    };
    let now = ferry_common::time::now_ms();
    let id = state.ids.next();
    let mut task = build(&req, &policy, id, now).map_err(|e| VpsError::Invalid(e.0))?;
    let mode = task
        .definition
        .spec
        .as_vps()
        .map_or(SshKeyMode::Disabled, |v| v.ssh_key_mode);
    // Made here, in a blocking thread (key generation draws on the OS random source); the
    // private half goes into this reply only.
    let pair: Option<KeyPair> = if mode == SshKeyMode::Generate {
        let comment = vps_container_name(id);
        let pair = tokio::task::spawn_blocking(move || generate_ed25519(&comment))
            .await
            .map_err(|e| VpsError::Invalid(format!("ssh_key_mode: cannot make a key: {e}")))?
            .map_err(|e| VpsError::Invalid(format!("ssh_key_mode: {e}")))?;
        if let TaskSpec::Vps(v) = &mut task.definition.spec {
            v.ssh_public_key = Some(pair.public_openssh.clone());
        }
        Some(pair)
    } else {
        None
    };
    if caller.user_id.is_some() {
        task.owner_username = Some(caller.username.clone());
    }
    let needs_approval = stamp_submitter(
        std::slice::from_mut(&mut task),
        caller.user_id,
        cfg.auth_enabled && caller.role == Role::User,
        cfg.auth_enabled,
        now,
    );
    let wait_in_queue = req.queue.unwrap_or(false) || needs_approval;
    let placed = if wait_in_queue {
        state.scheduler.submit(vec![task]).await
    } else {
        state.scheduler.submit_now(vec![task]).await
    }
    .map_err(refused)?;
    crate::auth::service::audit(
        state,
        Some(caller),
        "vps.create",
        Some(format!("task {id}")),
        Some(format!("ssh_key_mode={mode}")),
    )
    .await;
    let placement = placed.into_iter().next();
    let mut reply = VpsCreateResponse {
        message: String::new(),
        task_id: id,
        vps_backend: VpsBackend::Docker,
        ssh_key_mode: mode,
        ssh_port: 0,
        assigned_node: None,
        runner_response: serde_json::Value::Null,
        ssh_private_key: pair.as_ref().map(|p| p.private_openssh.clone()),
        ssh_public_key: pair.map(|p| p.public_openssh),
        status: TaskStatus::Pending,
        queue_position: None,
    };
    match placement {
        Some(Placement::AwaitingApproval { .. }) => {
            reply.status = TaskStatus::PendingApproval;
            reply.message = "VPS submitted, awaiting approval by an operator.".into();
            Ok(reply)
        }
        Some(Placement::Queued { position, .. }) => {
            reply.queue_position = Some(position);
            reply.message =
                format!("VPS queued: waiting for resources (position {position} in the queue).");
            Ok(reply)
        }
        Some(Placement::Placed { .. }) | None => {
            let t = wait_until_started(state, id, cfg.vps_start_wait).await?;
            started_reply(state, reply, &t)
        }
    }
}

/// Waits (at most `limit`) until the VPS leaves `assigning`/`pending`; returns it as it is.
pub async fn wait_until_started(
    state: &AppState,
    id: TaskId,
    limit: Duration,
) -> Result<Task, VpsError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut delay = Duration::from_millis(25);
    loop {
        let t = super::load(state, id).await?;
        let waiting = matches!(t.status, TaskStatus::Assigning | TaskStatus::Pending);
        if !waiting || tokio::time::Instant::now() >= deadline {
            return Ok(t);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// The create reply for a VPS that was placed: running (with its port), still on its way, or
/// failed (the runner's reason, naming the field when the request was the cause).
pub fn started_reply(
    state: &AppState,
    mut reply: VpsCreateResponse,
    t: &Task,
) -> Result<VpsCreateResponse, VpsError> {
    reply.status = t.status;
    reply.assigned_node = t.assigned_node.as_ref().and_then(|h| {
        state.cluster.url_of(h).map(|url| NodeRef {
            hostname: h.clone(),
            url,
        })
    });
    reply.queue_position = state.scheduler.view().queue.get(&t.id).copied();
    match t.status {
        TaskStatus::Running | TaskStatus::Paused => {
            let port = t.ssh_port.unwrap_or(0);
            reply.ssh_port = port;
            reply.message = "VPS created successfully.".into();
            reply.runner_response = serde_json::json!({
                "success": true,
                "ssh_port": port,
                "container_name": vps_container_name(t.id),
            });
            Ok(reply)
        }
        TaskStatus::Assigning | TaskStatus::Pending => {
            reply.message = "VPS creation request sent (awaiting runner confirmation).".into();
            Ok(reply)
        }
        _ => {
            let why = t
                .error_message
                .clone()
                .unwrap_or_else(|| format!("the VPS ended as {}", t.status));
            Err(start_failure(t, &why))
        }
    }
}

/// A VPS that failed to start: the caller's request (its image, key) is a 422 naming the
/// field the caller set (`registry_image` or `container_name` for the image); anything else a
/// 502 from the runner.
pub fn start_failure(t: &Task, why: &str) -> VpsError {
    let image_field = if t.definition.image.registry_image.is_some() {
        "registry_image"
    } else {
        "container_name"
    };
    let pulled = why.contains("is not available locally and could not be fetched");
    let why = match why.strip_prefix("image: ") {
        Some(rest) => format!("{image_field}: {rest}"),
        None if pulled => format!("{image_field}: {why}"),
        None => why.to_string(),
    };
    let by_request = ["registry_image:", "container_name:", "ssh_public_key:"]
        .iter()
        .any(|f| why.starts_with(f));
    let message = format!("VPS {} could not start: {why}", t.id);
    if by_request {
        VpsError::Refused(message)
    } else {
        VpsError::BadGateway(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> VpsPolicy {
        VpsPolicy {
            tasks: Policy {
                default_env: "base".into(),
                allow_unlimited_cores: true,
                max_targets: 1,
                max_priority: None,
                default_timeout: None,
                max_timeout: 0,
                max_retries: 0,
                default_retry_backoff: 0,
            },
            allow_passwordless: false,
        }
    }

    fn req(v: serde_json::Value) -> VpsCreateRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_request_becomes_a_vps_task() {
        let key = generate_ed25519("k").unwrap().public_openssh;
        let t = build(
            &req(
                serde_json::json!({"name": "dev", "required_cores": 2, "ssh_key_mode": "upload",
                "ssh_public_key": key, "target_hostname": "node-1", "registry_image": "img:1"}),
            ),
            &policy(),
            TaskId(9),
            5,
        )
        .unwrap();
        let vps = t.definition.spec.as_vps().unwrap();
        assert_eq!(vps.ssh_key_mode, SshKeyMode::Upload);
        assert_eq!(vps.ssh_public_key.as_deref(), Some(key.as_str()));
        assert_eq!(t.definition.resources.required_cores, 2);
        assert_eq!(t.target_node.as_deref(), Some("node-1"));
        assert_eq!(t.name.as_deref(), Some("dev"));
        assert_eq!(t.batch_id, None);
        assert_eq!(t.status, TaskStatus::Pending);
        let plain = build(&req(serde_json::json!({})), &policy(), TaskId(1), 0).unwrap();
        assert_eq!(
            plain.definition.spec.as_vps().unwrap().ssh_key_mode,
            SshKeyMode::Disabled
        );
        assert_eq!(
            plain.definition.image.reference().as_deref(),
            Some("kohakuriver/base:base")
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (serde_json::json!({"vps_backend": "qemu"}), "vps_backend"),
            (serde_json::json!({"vps_backend": "lxc"}), "vps_backend"),
            (
                serde_json::json!({"ssh_key_mode": "password"}),
                "ssh_key_mode",
            ),
            (serde_json::json!({"ssh_key_mode": "none"}), "ssh_key_mode"),
            (
                serde_json::json!({"ssh_key_mode": "upload"}),
                "ssh_public_key",
            ),
            (
                serde_json::json!({"ssh_key_mode": "upload", "ssh_public_key": "ssh-rsa nope"}),
                "ssh_public_key",
            ),
            (serde_json::json!({"required_cores": -1}), "required_cores"),
            (
                serde_json::json!({"required_memory_bytes": 5}),
                "required_memory_bytes",
            ),
            (serde_json::json!({"required_gpus": [0]}), "required_gpus"),
            (
                serde_json::json!({"target_numa_node_id": -1}),
                "target_numa_node_id",
            ),
            (
                serde_json::json!({"container_name": "Bad"}),
                "container_name",
            ),
            (serde_json::json!({"name": "a\nb"}), "name"),
            (
                serde_json::json!({"ip_reservation_token": "t"}),
                "ip_reservation_token",
            ),
        ];
        for (body, field) in cases {
            let err = build(&req(body.clone()), &policy(), TaskId(1), 0).unwrap_err();
            assert!(err.0.starts_with(field), "{body}: {}", err.0);
        }
        let open = VpsPolicy {
            allow_passwordless: true,
            ..policy()
        };
        assert!(build(
            &req(serde_json::json!({"ssh_key_mode": "none"})),
            &open,
            TaskId(1),
            0
        )
        .is_ok());
    }

    #[test]
    fn start_failures_caused_by_the_request_are_the_callers() {
        let mut t = build(&req(serde_json::json!({})), &policy(), TaskId(1), 0).unwrap();
        match start_failure(&t, "image: busybox has no OpenSSH server") {
            VpsError::Refused(m) => assert!(m.contains("container_name: busybox"), "{m}"),
            other => panic!("{other:?}"),
        }
        t.definition.image.registry_image = Some("busybox".into());
        match start_failure(
            &t,
            "image busybox is not available locally and could not be fetched: x",
        ) {
            VpsError::Refused(m) => assert!(m.contains("registry_image: image busybox"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            start_failure(&t, "cannot create container: engine down"),
            VpsError::BadGateway(_)
        ));
    }
}
