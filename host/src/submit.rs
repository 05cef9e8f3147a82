//! Turns a `POST /api/submit` body into task rows, or a 4xx naming the bad field. Pure: no
//! database, no scheduler; whether the tasks can ever fit is the scheduler's call.

use crate::store::tasks::TaskRow;
use ferry_common::api::SubmitRequest;
use ferry_common::target::Target;
use ferry_common::{environment_image, TaskId, TaskStatus};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Validates `req` and builds one row per target (one row when there is none).
pub fn build(
    req: SubmitRequest,
    default_env: &str,
    now_ms: i64,
    mut next_id: impl FnMut() -> TaskId,
) -> Result<Vec<TaskRow>, Invalid> {
    match req.task_type.as_deref().unwrap_or("command") {
        "command" => {}
        "vps" => {
            return Err(invalid(
                "task_type: VPS sessions are not available on this host yet",
            ))
        }
        other => {
            return Err(invalid(format!(
                "task_type: must be 'command' or 'vps', got {other:?}"
            )))
        }
    }
    if req.command.trim().is_empty() {
        return Err(invalid("command: must not be empty"));
    }
    if req.command.contains('\0') || req.arguments.iter().any(|a| a.contains('\0')) {
        return Err(invalid(
            "command/arguments: must not contain NUL characters",
        ));
    }
    let cores = req.required_cores.unwrap_or(1);
    if cores < 1 {
        return Err(invalid(format!(
            "required_cores: must be at least 1, got {cores}"
        )));
    }
    let cores = u32::try_from(cores)
        .map_err(|_| invalid(format!("required_cores: {cores} is too large")))?;
    let memory = match req.required_memory_bytes {
        None => None,
        Some(m) if m <= 0 => {
            return Err(invalid(format!(
                "required_memory_bytes: must be positive, got {m}"
            )))
        }
        // Docker refuses limits under 6 MiB; say so here rather than fail at launch.
        Some(m) if m < 6 * 1024 * 1024 => {
            return Err(invalid(format!(
                "required_memory_bytes: must be at least 6291456 (6 MiB), got {m}"
            )))
        }
        Some(m) => Some(m as u64),
    };
    for (k, v) in &req.env_vars {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(invalid(format!("env_vars: invalid variable name {k:?}")));
        }
        if v.contains('\0') {
            return Err(invalid(format!(
                "env_vars: the value of {k} contains a NUL character"
            )));
        }
    }
    if let Some(wd) = &req.working_dir {
        if !wd.starts_with('/') || wd.contains('\0') {
            return Err(invalid(format!(
                "working_dir: must be an absolute path, got {wd:?}"
            )));
        }
    }
    if req.privileged == Some(true) {
        return Err(invalid(
            "privileged: privileged containers are not enabled on this cluster",
        ));
    }
    if req
        .additional_mounts
        .as_ref()
        .is_some_and(|m| !m.is_empty())
    {
        return Err(invalid(
            "additional_mounts: extra mounts are not enabled on this cluster",
        ));
    }
    if req.ip_reservation_token.is_some() {
        return Err(invalid(
            "ip_reservation_token: IP reservations are not available on this host yet",
        ));
    }
    let (container_name, image) = match (&req.registry_image, &req.container_name) {
        (Some(img), _) => {
            // Docker repository names are lower case; a tag after the last ':' may not be.
            let repo = match img.rsplit_once(':') {
                Some((r, tag)) if !tag.contains('/') => r,
                _ => img.as_str(),
            };
            if img.trim().is_empty()
                || img.chars().any(|c| c.is_whitespace() || c == '\0')
                || repo.chars().any(|c| c.is_ascii_uppercase())
            {
                return Err(invalid(format!(
                    "registry_image: not a valid image reference: {img:?}"
                )));
            }
            (None, img.clone())
        }
        (None, Some(name)) if name == "NULL" => {
            return Err(invalid(
                "container_name: running without a container (\"NULL\") is not supported",
            ))
        }
        (None, Some(name)) => {
            if !valid_env_name(name) {
                return Err(invalid(format!(
                    "container_name: {name:?} is not a valid environment name (lower-case letters, digits, '.', '_', '-')"
                )));
            }
            (Some(name.clone()), environment_image(name))
        }
        (None, None) => (
            Some(default_env.to_string()),
            environment_image(default_env),
        ),
    };

    let targets: Vec<Option<Target>> = match &req.targets {
        None => vec![None],
        Some(list) if list.is_empty() => vec![None],
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Target::parse(t)
                    .map(Some)
                    .map_err(|e| invalid(format!("targets[{i}]: {e}")))
            })
            .collect::<Result<_, _>>()?,
    };
    let gpus: Vec<Vec<u32>> = match &req.required_gpus {
        None => vec![Vec::new(); targets.len()],
        Some(lists)
            if lists.iter().all(|l| l.is_empty())
                && (lists.is_empty() || lists.len() == targets.len()) =>
        {
            vec![Vec::new(); targets.len()]
        }
        Some(lists) => {
            if targets.iter().any(Option::is_none) {
                return Err(invalid(
                    "required_gpus: GPU tasks need explicit targets (GPU indices are per node)",
                ));
            }
            if lists.len() != targets.len() {
                return Err(invalid(format!(
                    "required_gpus: one list per target expected ({} targets, {} lists)",
                    targets.len(),
                    lists.len()
                )));
            }
            lists
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let mut ids: Vec<u32> = l
                        .iter()
                        .map(|g| {
                            u32::try_from(*g).map_err(|_| {
                                invalid(format!("required_gpus[{i}]: invalid GPU index {g}"))
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    ids.sort_unstable();
                    ids.dedup();
                    Ok(ids)
                })
                .collect::<Result<_, Invalid>>()?
        }
    };

    let mut rows = Vec::with_capacity(targets.len());
    let mut batch_id = None;
    for (target, gpus) in targets.into_iter().zip(gpus) {
        let id = next_id();
        let batch = *batch_id.get_or_insert(id);
        rows.push(TaskRow {
            id,
            task_type: "command".into(),
            batch_id: Some(batch),
            owner_id: None,
            approval_status: None,
            command: req.command.clone(),
            arguments: req.arguments.clone(),
            env_vars: req.env_vars.clone(),
            required_cores: cores,
            required_gpus: gpus,
            required_memory_bytes: memory,
            target_node: target.as_ref().map(|t| t.hostname.clone()),
            target_numa_node_id: target.as_ref().and_then(|t| t.numa_node),
            status: TaskStatus::Pending,
            assigned_node: None,
            container_name: container_name.clone(),
            docker_image_name: Some(image.clone()),
            registry_image: req.registry_image.clone(),
            working_dir: req.working_dir.clone(),
            privileged: false,
            mounts: Vec::new(),
            priority: req.priority.unwrap_or(0),
            exit_code: None,
            error_message: None,
            submitted_at: now_ms,
            started_at: None,
            completed_at: None,
            last_seq: 0,
            approved_by_id: None,
            approved_at: None,
            rejection_reason: None,
            owner_username: None,
            approved_by_username: None,
        });
    }
    Ok(rows)
}

/// Records who submitted the tasks and whether they wait for approval (tasks of the `user`
/// role do; everyone else's are approved by submitting). Returns whether they wait.
pub fn stamp_submitter(
    rows: &mut [TaskRow],
    owner: Option<i64>,
    needs_approval: bool,
    auth_enabled: bool,
    now_ms: i64,
) -> bool {
    for r in rows.iter_mut() {
        r.owner_id = owner;
        if needs_approval {
            r.status = TaskStatus::PendingApproval;
            r.approval_status = Some("pending".into());
        } else if auth_enabled {
            r.approval_status = Some("approved".into());
            r.approved_by_id = owner;
            r.approved_at = Some(now_ms);
        }
    }
    needs_approval
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: serde_json::Value) -> SubmitRequest {
        serde_json::from_value(json).unwrap()
    }

    fn ids() -> impl FnMut() -> TaskId {
        let mut n = 100;
        move || {
            n += 1;
            TaskId(n)
        }
    }

    #[test]
    fn builds_a_batch_sharing_the_first_id() {
        let rows = build(
            req(serde_json::json!({"command": "echo", "targets": ["a", "b:1", "c"]})),
            "base",
            0,
            ids(),
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.batch_id == Some(TaskId(101))));
        assert_eq!(rows[1].target_node.as_deref(), Some("b"));
        assert_eq!(rows[1].target_numa_node_id, Some(1));
        assert_eq!(
            rows[0].docker_image_name.as_deref(),
            Some("kohakuriver/base:base")
        );
    }

    #[test]
    fn registry_image_wins() {
        let rows = build(req(serde_json::json!({"command": "x", "registry_image": "busybox:1", "container_name": "env"})), "base", 0, ids()).unwrap();
        assert!(build(req(serde_json::json!({"command": "x", "registry_image": "localhost:5000/team/img:V1.2"})), "base", 0, ids()).is_ok());
        assert_eq!(rows[0].container_name, None);
        assert_eq!(rows[0].docker_image_name.as_deref(), Some("busybox:1"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (serde_json::json!({"command": "  "}), "command"),
            (
                serde_json::json!({"command": "x", "required_cores": 0}),
                "required_cores",
            ),
            (
                serde_json::json!({"command": "x", "required_cores": -2}),
                "required_cores",
            ),
            (
                serde_json::json!({"command": "x", "required_memory_bytes": 0}),
                "required_memory_bytes",
            ),
            (
                serde_json::json!({"command": "x", "required_memory_bytes": -1}),
                "required_memory_bytes",
            ),
            (
                serde_json::json!({"command": "x", "targets": ["a::1"]}),
                "targets[0]",
            ),
            (
                serde_json::json!({"command": "x", "required_gpus": [[0]]}),
                "required_gpus",
            ),
            (
                serde_json::json!({"command": "x", "targets": ["a", "b"], "required_gpus": [[0]]}),
                "required_gpus",
            ),
            (
                serde_json::json!({"command": "x", "task_type": "batch"}),
                "task_type",
            ),
            (
                serde_json::json!({"command": "x", "container_name": "NULL"}),
                "container_name",
            ),
            (
                serde_json::json!({"command": "x", "container_name": "Bad Name"}),
                "container_name",
            ),
            (
                serde_json::json!({"command": "x", "working_dir": "rel"}),
                "working_dir",
            ),
            (
                serde_json::json!({"command": "x", "privileged": true}),
                "privileged",
            ),
        ];
        for (body, field) in cases {
            let err = build(req(body.clone()), "base", 0, ids()).unwrap_err();
            assert!(err.0.starts_with(field), "{body}: {err}");
        }
    }
}
