//! Submission: [`build`] turns a `POST /api/submit` body into tasks or an error naming the bad
//! field (pure: no database, no scheduler); [`submit`] stamps the submitter and the approval
//! policy on them and hands them to the scheduler, which alone decides whether they can ever
//! fit and where they go.

use crate::auth::Caller;
use crate::scheduler::{PlaceError, Placement};
use crate::tasks::model::{Approval, Task};
use crate::AppState;
use ferry_common::api::{NodeRef, QueuedTask, SubmitRequest, SubmitResponse};
use ferry_common::target::Target;
use ferry_common::task::{
    ApprovalStatus, CommandSpec, Image, Resources, RetryOn, TaskDefinition, TaskSpec,
};
use ferry_common::{Role, TaskId, TaskStatus};

/// What the host's configuration says about submissions.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Environment used when a task names neither `container_name` nor `registry_image`.
    pub default_env: String,
    /// `required_cores: 0` means "no CPU limit, none booked" (as the original) when allowed.
    pub allow_unlimited_cores: bool,
    /// Most targets one request may name (`max_targets`).
    pub max_targets: usize,
    /// Highest priority this caller may ask for; `None`: any (operators and admins).
    pub max_priority: Option<i64>,
    /// `timeout_seconds` when the request names none.
    pub default_timeout: Option<u64>,
    /// The longest `timeout_seconds` allowed.
    pub max_timeout: u64,
    /// The most `max_retries` allowed.
    pub max_retries: u32,
    /// `retry_backoff_seconds` when the request names none.
    pub default_retry_backoff: u64,
}

/// The longest `retry_backoff_seconds` a task may ask for.
const MAX_RETRY_BACKOFF: i64 = ferry_common::task::MAX_RETRY_BACKOFF_SECS as i64;

/// What is retried when `max_retries` is set and `retry_on` is not: a failure or a lost
/// node, not a time limit (the next attempt would most likely hit it again).
const DEFAULT_RETRY_ON: [RetryOn; 2] = [RetryOn::Failed, RetryOn::Lost];

/// How often a task is retried, on what, and after which first wait.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RetryPolicy {
    max_retries: u32,
    retry_on: Vec<RetryOn>,
    backoff: Option<u64>,
}

fn check_retries(req: &SubmitRequest, policy: &Policy) -> Result<RetryPolicy, Invalid> {
    let max_retries = match req.max_retries {
        None => 0,
        Some(n) if n < 0 => {
            return Err(invalid(format!("max_retries: must be 0 or more, got {n}")))
        }
        Some(n) if n > i64::from(policy.max_retries) => {
            return Err(invalid(format!(
                "max_retries: at most {} (the host's max_task_retries), got {n}",
                policy.max_retries
            )))
        }
        Some(n) => n as u32,
    };
    let mut retry_on = match &req.retry_on {
        None => DEFAULT_RETRY_ON.to_vec(),
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.parse::<RetryOn>()
                    .map_err(|e| invalid(format!("retry_on[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    retry_on.sort_unstable();
    retry_on.dedup();
    let backoff = match req.retry_backoff_seconds {
        None => policy.default_retry_backoff,
        Some(b) if !(0..=MAX_RETRY_BACKOFF).contains(&b) => {
            return Err(invalid(format!(
                "retry_backoff_seconds: must be between 0 and {MAX_RETRY_BACKOFF}, got {b}"
            )))
        }
        Some(b) => b as u64,
    };
    if max_retries == 0 {
        // Nothing is retried: keep the stored definition free of a policy that never acts.
        return Ok(RetryPolicy {
            max_retries: 0,
            retry_on: Vec::new(),
            backoff: None,
        });
    }
    Ok(RetryPolicy {
        max_retries,
        retry_on,
        backoff: Some(backoff),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Refused(#[from] PlaceError),
}

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

/// `required_cores`: 1 when absent; 0 (no CPU limit) only where the cluster allows it.
pub(crate) fn check_cores(raw: Option<i64>, policy: &Policy) -> Result<u32, Invalid> {
    let cores = raw.unwrap_or(1);
    if cores == 0 && !policy.allow_unlimited_cores {
        return Err(invalid(
            "required_cores: 0 (no CPU limit) is not allowed on this cluster; ask for at least 1",
        ));
    }
    if cores < 0 {
        return Err(invalid(format!(
            "required_cores: must be 0 (no CPU limit) or more, got {cores}"
        )));
    }
    u32::try_from(cores).map_err(|_| invalid(format!("required_cores: {cores} is too large")))
}

/// `required_memory_bytes`: positive, and at least Docker's smallest limit.
pub(crate) fn check_memory(raw: Option<i64>) -> Result<Option<u64>, Invalid> {
    let memory = match raw {
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
    Ok(memory)
}

/// What a workload runs: a registry image (its name checked), else an environment (its name
/// checked), else the default environment. Returns the environment name, if any.
pub(crate) fn check_image(
    registry_image: &Option<String>,
    container_name: &Option<String>,
    default_env: &str,
) -> Result<Option<String>, Invalid> {
    Ok(match (registry_image, container_name) {
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
            None
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
            Some(name.clone())
        }
        (None, None) => Some(default_env.to_string()),
    })
}

/// Validates `req` and builds one row per target (one row when there is none).
pub fn build(
    req: SubmitRequest,
    policy: &Policy,
    now_ms: i64,
    mut next_id: impl FnMut() -> TaskId,
) -> Result<Vec<Task>, Invalid> {
    let default_env = policy.default_env.as_str();
    match req.task_type.as_deref().unwrap_or("command") {
        "command" => {}
        "vps" => {
            return Err(invalid(
                "task_type: VPS sessions are created with POST /api/vps/create",
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
    let cores = check_cores(req.required_cores, policy)?;
    let memory = check_memory(req.required_memory_bytes)?;
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
    let container_name = check_image(&req.registry_image, &req.container_name, default_env)?;
    let timeout_seconds = match req.timeout_seconds {
        None => policy.default_timeout,
        Some(t) if t < 1 => {
            return Err(invalid(format!(
                "timeout_seconds: must be at least 1, got {t}"
            )))
        }
        Some(t) if t as u64 > policy.max_timeout => {
            return Err(invalid(format!(
                "timeout_seconds: at most {} (the host's max_task_timeout), got {t}",
                policy.max_timeout
            )))
        }
        Some(t) => Some(t as u64),
    };
    let retries = check_retries(&req, policy)?;

    if let Some(list) = &req.targets {
        if list.len() > policy.max_targets {
            return Err(invalid(format!(
                "targets: at most {} per request, got {}",
                policy.max_targets,
                list.len()
            )));
        }
    }
    if let (Some(p), Some(max)) = (req.priority, policy.max_priority) {
        if p > max {
            return Err(invalid(format!(
                "priority: at most {max} for your role, got {p} (operators may set more)"
            )));
        }
    }
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

    refuse_shared_gpus(&targets, &gpus)?;
    let mut rows = Vec::with_capacity(targets.len());
    let mut batch_id = None;
    for (target, gpus) in targets.into_iter().zip(gpus) {
        let definition = TaskDefinition {
            spec: TaskSpec::Command(CommandSpec {
                command: req.command.clone(),
                arguments: req.arguments.clone(),
                working_dir: req.working_dir.clone(),
                timeout_seconds,
                max_retries: retries.max_retries,
                retry_on: retries.retry_on.clone(),
                retry_backoff_seconds: retries.backoff,
            }),
            resources: Resources {
                required_cores: cores,
                required_gpus: gpus,
                required_memory_bytes: memory,
                target_numa_node_id: target.as_ref().and_then(|t| t.numa_node),
            },
            image: Image {
                container_name: container_name.clone(),
                registry_image: req.registry_image.clone(),
            },
            env_vars: req.env_vars.clone(),
            privileged: false,
            mounts: Vec::new(),
        };
        let id = next_id();
        let mut task = Task::new(id, definition, now_ms);
        task.batch_id = Some(*batch_id.get_or_insert(id));
        task.target_node = target.map(|t| t.hostname);
        task.priority = req.priority.unwrap_or(0);
        rows.push(task);
    }
    Ok(rows)
}

/// A batch may name the same target twice (two tasks side by side on one node), but not the
/// same GPU of one node twice: the tasks of a batch are meant to run at once, and two of them
/// can never hold one GPU together.
fn refuse_shared_gpus(targets: &[Option<Target>], gpus: &[Vec<u32>]) -> Result<(), Invalid> {
    let mut seen: std::collections::HashMap<(&str, u32), usize> = Default::default();
    for (i, (target, ids)) in targets.iter().zip(gpus).enumerate() {
        let Some(t) = target else { continue };
        for g in ids {
            if let Some(first) = seen.insert((t.hostname.as_str(), *g), i) {
                return Err(invalid(format!(
                    "required_gpus[{i}]: GPU {g} of {} is already asked for by targets[{first}]; \
                     tasks of one batch run side by side, so each needs its own GPUs",
                    t.hostname
                )));
            }
        }
    }
    Ok(())
}

/// Records who submitted the tasks and whether they wait for approval (tasks of the `user`
/// role do; everyone else's are approved by submitting). Returns whether they wait.
pub fn stamp_submitter(
    rows: &mut [Task],
    owner: Option<i64>,
    needs_approval: bool,
    auth_enabled: bool,
    now_ms: i64,
) -> bool {
    for r in rows.iter_mut() {
        r.owner_id = owner;
        if needs_approval {
            r.status = TaskStatus::PendingApproval;
            r.approval.status = Some(ApprovalStatus::Pending);
        } else if auth_enabled {
            r.approval = Approval {
                status: Some(ApprovalStatus::Approved),
                by: owner,
                at: Some(now_ms),
                rejection_reason: None,
            };
        }
    }
    needs_approval
}

/// Validates and submits `req` for `caller`: tasks of the `user` role wait for an operator's
/// approval (when authentication is on), everyone else's are queued at once.
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    req: SubmitRequest,
) -> Result<SubmitResponse, SubmitError> {
    let policy = Policy {
        default_env: state.config.default_container_name.clone(),
        allow_unlimited_cores: state.config.allow_unlimited_cores,
        max_targets: state.config.max_targets,
        max_priority: (!caller.at_least(Role::Operator)).then_some(state.config.max_user_priority),
        default_timeout: state.config.default_task_timeout.map(|d| d.as_secs()),
        max_timeout: state.config.max_task_timeout.as_secs(),
        max_retries: state.config.max_task_retries,
        default_retry_backoff: state.config.retry_backoff.as_secs(),
    };
    let now = ferry_common::time::now_ms();
    let mut rows = build(req, &policy, now, || state.ids.next())?;
    let auth = state.config.auth_enabled;
    if caller.user_id.is_some() {
        for row in &mut rows {
            row.owner_username = Some(caller.username.clone());
        }
    }
    let needs_approval = stamp_submitter(
        &mut rows,
        caller.user_id,
        auth && caller.role == Role::User,
        auth,
        now,
    );
    let targets: Vec<Option<String>> = rows.iter().map(|r| r.target_node.clone()).collect();
    let placements = state.scheduler.submit(rows).await?;
    Ok(response(state, &placements, &targets, needs_approval))
}

/// The original's reply shape: every id, the node of the last task, and (Ferry) the queue.
fn response(
    state: &AppState,
    placements: &[Placement],
    targets: &[Option<String>],
    needs_approval: bool,
) -> SubmitResponse {
    let n = placements.len();
    let task_ids = placements.iter().map(Placement::id).collect();
    let queued: Vec<QueuedTask> = placements
        .iter()
        .filter_map(|p| match p {
            Placement::Queued { id, position } => Some(QueuedTask {
                task_id: *id,
                queue_position: *position,
            }),
            Placement::Placed { .. } | Placement::AwaitingApproval { .. } => None,
        })
        .collect();
    let last_node = match placements.last() {
        Some(Placement::Placed { node, .. }) => Some(node.clone()),
        _ => targets.last().cloned().flatten(),
    };
    let assigned_node = last_node.and_then(|h| {
        state
            .cluster
            .url_of(&h)
            .map(|url| NodeRef { hostname: h, url })
    });
    let message = if needs_approval {
        format!("Task batch submitted. {n} tasks created, awaiting approval by an operator.")
    } else if queued.is_empty() {
        format!("Task batch submitted successfully. {n} tasks created.")
    } else {
        format!(
            "Task batch submitted successfully. {n} tasks created, {} waiting for resources.",
            queued.len()
        )
    };
    SubmitResponse {
        message,
        task_ids,
        assigned_node,
        runner_response: if needs_approval {
            serde_json::json!({"status": "pending_approval"})
        } else {
            serde_json::Value::Bool(true)
        },
        queued,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            default_env: "base".into(),
            allow_unlimited_cores: true,
            max_targets: 4,
            max_priority: Some(0),
            default_timeout: None,
            max_timeout: 3600,
            max_retries: 10,
            default_retry_backoff: 10,
        }
    }

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
            &policy(),
            0,
            ids(),
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.batch_id == Some(TaskId(101))));
        assert_eq!(rows[1].target_node.as_deref(), Some("b"));
        assert_eq!(rows[1].definition.resources.target_numa_node_id, Some(1));
        assert_eq!(
            rows[0].definition.image.reference().as_deref(),
            Some("kohakuriver/base:base")
        );
    }

    #[test]
    fn registry_image_wins() {
        let rows = build(req(serde_json::json!({"command": "x", "registry_image": "busybox:1", "container_name": "env"})), &policy(), 0, ids()).unwrap();
        assert!(build(req(serde_json::json!({"command": "x", "registry_image": "localhost:5000/team/img:V1.2"})), &policy(), 0, ids()).is_ok());
        assert_eq!(rows[0].definition.image.container_name, None);
        assert_eq!(
            rows[0].definition.image.reference().as_deref(),
            Some("busybox:1")
        );
    }

    #[test]
    fn zero_cores_means_unlimited_unless_the_cluster_refuses_it() {
        let body = serde_json::json!({"command": "x", "required_cores": 0});
        let rows = build(req(body.clone()), &policy(), 0, ids()).unwrap();
        assert_eq!(rows[0].definition.resources.required_cores, 0);
        let strict = Policy {
            allow_unlimited_cores: false,
            ..policy()
        };
        let err = build(req(body), &strict, 0, ids()).unwrap_err();
        assert!(err.0.starts_with("required_cores"), "{err}");
    }

    #[test]
    fn limits_of_one_request() {
        let many = serde_json::json!({"command": "x", "targets": ["a", "b", "c", "d", "e"]});
        let err = build(req(many), &policy(), 0, ids()).unwrap_err();
        assert!(err.0.starts_with("targets: at most 4"), "{err}");
        let twice = serde_json::json!({"command": "x", "targets": ["a", "a"]});
        assert_eq!(
            build(req(twice), &policy(), 0, ids()).unwrap().len(),
            2,
            "same node twice is fine"
        );
        let same_gpu = serde_json::json!({"command": "x", "targets": ["a", "b", "a"], "required_gpus": [[0, 1], [0], [1]]});
        let err = build(req(same_gpu), &policy(), 0, ids()).unwrap_err();
        assert!(err.0.starts_with("required_gpus[2]: GPU 1 of a"), "{err}");
        let other_gpus =
            serde_json::json!({"command": "x", "targets": ["a", "a"], "required_gpus": [[0], [1]]});
        assert!(build(req(other_gpus), &policy(), 0, ids()).is_ok());
        let urgent = serde_json::json!({"command": "x", "priority": 5});
        let err = build(req(urgent.clone()), &policy(), 0, ids()).unwrap_err();
        assert!(err.0.starts_with("priority: at most 0"), "{err}");
        let operator = Policy {
            max_priority: None,
            ..policy()
        };
        assert_eq!(
            build(req(urgent), &operator, 0, ids()).unwrap()[0].priority,
            5
        );
    }

    #[test]
    fn retries_default_to_failures_and_lost_nodes_with_the_host_backoff() {
        let rows = build(
            req(serde_json::json!({"command": "x", "max_retries": 2})),
            &policy(),
            0,
            ids(),
        )
        .unwrap();
        let spec = rows[0].definition.spec.as_command().unwrap();
        assert_eq!(spec.max_retries, 2);
        assert_eq!(spec.retry_on, vec![RetryOn::Failed, RetryOn::Lost]);
        assert_eq!(spec.retry_backoff_seconds, Some(10));
        let body = serde_json::json!({"command": "x", "max_retries": 1,
            "retry_on": ["timed_out", "timed_out"], "retry_backoff_seconds": 0});
        let rows = build(req(body), &policy(), 0, ids()).unwrap();
        let spec = rows[0].definition.spec.as_command().unwrap();
        assert_eq!(spec.retry_on, vec![RetryOn::TimedOut]);
        assert_eq!(spec.retry_backoff_seconds, Some(0));
        let rows = build(
            req(serde_json::json!({"command": "x"})),
            &policy(),
            0,
            ids(),
        )
        .unwrap();
        let spec = rows[0].definition.spec.as_command().unwrap();
        assert_eq!((spec.max_retries, spec.retry_on.len()), (0, 0));
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (serde_json::json!({"command": "  "}), "command"),
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
            (
                serde_json::json!({"command": "x", "max_retries": -1}),
                "max_retries",
            ),
            (
                serde_json::json!({"command": "x", "max_retries": 11}),
                "max_retries",
            ),
            (
                serde_json::json!({"command": "x", "max_retries": 1, "retry_on": ["failed", "oom"]}),
                "retry_on[1]",
            ),
            (
                serde_json::json!({"command": "x", "retry_backoff_seconds": 3601}),
                "retry_backoff_seconds",
            ),
        ];
        for (body, field) in cases {
            let err = build(req(body.clone()), &policy(), 0, ids()).unwrap_err();
            assert!(err.0.starts_with(field), "{body}: {err}");
        }
    }
}
