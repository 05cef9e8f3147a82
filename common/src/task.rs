//! The task model every crate shares: what a task asks to run ([`TaskDefinition`]: a
//! [`TaskSpec`] for a command or a VPS, the [`Resources`] both book, the [`Image`] they run)
//! and the typed names of the API ([`TaskKind`], [`ApprovalStatus`], [`Role`],
//! [`VpsBackend`], [`SshKeyMode`]).
//!
//! A definition is fixed at submission. The host stores it as one JSON document and sends the
//! same document to the runner inside `ExecuteRequest`, flattened so the wire keeps the
//! original's flat field names (`task_type`, `command`, `required_cores`, ...). A new field of a
//! VPS is therefore added once, in [`VpsSpec`], and reaches the store and the runner unchanged.

use crate::environment_image;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Declares a unit-only enum with its wire names, `as_str`, `Display`, `FromStr` and `ALL`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        got: s.to_string(),
                        expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    })
            }
        }
    };
}

/// A name that is not one of an enum's wire names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?} (expected one of: {expected})")]
pub struct UnknownName {
    pub what: &'static str,
    pub got: String,
    pub expected: String,
}

wire_enum!(
    /// `task_type` on the wire.
    TaskKind, "task type" {
        Command => "command",
        Vps => "vps",
    }
);

wire_enum!(
    /// `approval_status` on the wire; null when authentication is off.
    ApprovalStatus, "approval status" {
        Pending => "pending",
        Approved => "approved",
        Rejected => "rejected",
    }
);

wire_enum!(
    /// Roles, lowest first; each includes the rights of those below.
    Role, "role" {
        Anony => "anony",
        Viewer => "viewer",
        User => "user",
        Operator => "operator",
        Admin => "admin",
    }
);

wire_enum!(
    /// Where a VPS runs.
    VpsBackend, "VPS backend" {
        Docker => "docker",
        Qemu => "qemu",
    }
);

wire_enum!(
    /// How a VPS is reached over SSH: `disabled` (terminal only), `none` (passwordless root),
    /// `upload` (the caller's public key), `generate` (a key pair made for the caller).
    SshKeyMode, "SSH key mode" {
        Disabled => "disabled",
        None => "none",
        Upload => "upload",
        Generate => "generate",
    }
);

#[allow(clippy::derivable_impls)] // the enums come from `wire_enum!`, which cannot mark a default
impl Default for VpsBackend {
    fn default() -> Self {
        VpsBackend::Docker
    }
}

#[allow(clippy::derivable_impls)]
impl Default for SshKeyMode {
    fn default() -> Self {
        SshKeyMode::Disabled
    }
}

/// What a task books on its node while it holds resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// Cores booked and given to the container as its CPU limit. 0 means "no CPU limit, none
    /// booked", as in the original.
    #[serde(default = "one")]
    pub required_cores: u32,
    /// GPU indices on the node.
    #[serde(default)]
    pub required_gpus: Vec<u32>,
    #[serde(default)]
    pub required_memory_bytes: Option<u64>,
    /// NUMA node the task is bound to.
    #[serde(default)]
    pub target_numa_node_id: Option<u32>,
}

fn one() -> u32 {
    1
}

/// What the workload runs: an environment (`kohakuriver/<name>:base`) or a registry image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Image {
    #[serde(default)]
    pub container_name: Option<String>,
    #[serde(default)]
    pub registry_image: Option<String>,
}

impl Image {
    /// The image reference the engine runs; `None` when neither is set.
    pub fn reference(&self) -> Option<String> {
        match (&self.registry_image, &self.container_name) {
            (Some(r), _) if !r.is_empty() => Some(r.clone()),
            (_, Some(env)) => Some(environment_image(env)),
            _ => None,
        }
    }
}

/// A one-shot command: run `command` through `/bin/sh -c` with `arguments` as positional
/// parameters (never spliced into the line).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandSpec {
    pub command: String,
    #[serde(default)]
    pub arguments: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Ferry: the runner kills the task this many seconds after it started; it ends
    /// `timed_out`. `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Ferry: how many times the host runs the task again after an attempt ends in one of
    /// `retry_on` (0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_retries: u32,
    /// Ferry: which endings of an attempt are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<RetryOn>,
    /// Ferry: the wait before the first retry; each further retry waits twice as long as the
    /// one before, up to [`MAX_RETRY_BACKOFF_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_seconds: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The longest wait between two attempts of a task, however many retries came before.
pub const MAX_RETRY_BACKOFF_SECS: u64 = 3600;

impl CommandSpec {
    /// Seconds to wait before attempt `next` (2 for the first retry): the backoff doubled for
    /// each retry before it, capped at [`MAX_RETRY_BACKOFF_SECS`] (or the base, if larger).
    pub fn backoff_before(&self, next: u32) -> u64 {
        let base = self.retry_backoff_seconds.unwrap_or(0);
        let doublings = next.saturating_sub(2).min(32);
        base.saturating_mul(1u64 << doublings)
            .min(MAX_RETRY_BACKOFF_SECS.max(base))
    }
}

/// Where a task's logs of attempt `run` live, under a log directory: `<id>/` for the first
/// (the layout of tasks never retried), `<id>/attempt-<run>/` for each retry.
pub fn log_dir(id: crate::TaskId, run: u32) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(id.to_string());
    match run {
        0 | 1 => dir,
        n => dir.join(format!("attempt-{n}")),
    }
}

wire_enum!(
    /// An ending of an attempt that `retry_on` may name.
    RetryOn, "retry_on value" {
        Failed => "failed",
        Lost => "lost",
        TimedOut => "timed_out",
    }
);

/// A persistent session: a container or a VM that lives until it is stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VpsSpec {
    #[serde(default)]
    pub vps_backend: VpsBackend,
    #[serde(default)]
    pub ssh_key_mode: SshKeyMode,
    /// The public key installed for `upload` and `generate` (never the private key).
    #[serde(default)]
    pub ssh_public_key: Option<String>,
    /// QEMU: base image and disk size.
    #[serde(default)]
    pub vm_image: Option<String>,
    #[serde(default)]
    pub vm_disk_size: Option<String>,
}

/// What kind of work a task is, with the fields only that kind has. Tagged by `task_type`;
/// a document without the tag (a runner record or a host from before the tag) is a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "task_type", rename_all = "snake_case")]
pub enum TaskSpec {
    Command(CommandSpec),
    Vps(VpsSpec),
}

impl<'de> Deserialize<'de> for TaskSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let kind = match fields.remove("task_type") {
            None | Some(serde_json::Value::Null) => TaskKind::Command,
            Some(serde_json::Value::String(s)) => s.parse().map_err(D::Error::custom)?,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "task_type: expected a string, got {other}"
                )))
            }
        };
        let rest = serde_json::Value::Object(fields);
        match kind {
            TaskKind::Command => CommandSpec::deserialize(rest).map(TaskSpec::Command),
            TaskKind::Vps => VpsSpec::deserialize(rest).map(TaskSpec::Vps),
        }
        .map_err(D::Error::custom)
    }
}

impl TaskSpec {
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskSpec::Command(_) => TaskKind::Command,
            TaskSpec::Vps(_) => TaskKind::Vps,
        }
    }

    pub fn as_command(&self) -> Option<&CommandSpec> {
        match self {
            TaskSpec::Command(c) => Some(c),
            TaskSpec::Vps(_) => None,
        }
    }

    pub fn as_vps(&self) -> Option<&VpsSpec> {
        match self {
            TaskSpec::Vps(v) => Some(v),
            TaskSpec::Command(_) => None,
        }
    }
}

/// Everything a task asks for, fixed at submission: stored by the host, sent to the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDefinition {
    #[serde(flatten)]
    pub spec: TaskSpec,
    #[serde(flatten)]
    pub resources: Resources,
    #[serde(flatten)]
    pub image: Image,
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub mounts: Vec<String>,
}

impl TaskDefinition {
    /// A command task with default resources (1 core) and no image: a starting point.
    pub fn command(command: impl Into<String>) -> TaskDefinition {
        TaskDefinition {
            spec: TaskSpec::Command(CommandSpec {
                command: command.into(),
                ..Default::default()
            }),
            resources: Resources {
                required_cores: 1,
                ..Default::default()
            },
            image: Image::default(),
            env_vars: BTreeMap::new(),
            privileged: false,
            mounts: Vec::new(),
        }
    }

    pub fn kind(&self) -> TaskKind {
        self.spec.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
        }
        assert!(Role::Viewer < Role::User && Role::Operator < Role::Admin);
        let err = "root".parse::<Role>().unwrap_err();
        assert!(err.to_string().contains("viewer, user"), "{err}");
        assert_eq!("vps".parse::<TaskKind>().unwrap(), TaskKind::Vps);
        assert!("Vps".parse::<TaskKind>().is_err());
    }

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_the_cap() {
        let spec = CommandSpec {
            retry_backoff_seconds: Some(10),
            ..Default::default()
        };
        let waits: Vec<u64> = (2..=6).map(|n| spec.backoff_before(n)).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160]);
        assert_eq!(spec.backoff_before(40), MAX_RETRY_BACKOFF_SECS);
        assert_eq!(CommandSpec::default().backoff_before(3), 0);
        assert_eq!(log_dir(crate::TaskId(7), 1), std::path::PathBuf::from("7"));
        assert_eq!(
            log_dir(crate::TaskId(7), 3),
            std::path::PathBuf::from("7/attempt-3")
        );
    }

    #[test]
    fn a_definition_is_flat_on_the_wire() {
        let mut d = TaskDefinition::command("echo");
        d.resources.required_memory_bytes = Some(1 << 20);
        d.image.container_name = Some("base".into());
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["task_type"], "command");
        assert_eq!(v["command"], "echo");
        assert_eq!(v["required_cores"], 1);
        assert_eq!(v["required_memory_bytes"], 1 << 20);
        assert_eq!(v["container_name"], "base");
        let back: TaskDefinition = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn a_vps_definition_carries_its_own_fields() {
        let v = json!({"task_type": "vps", "vps_backend": "qemu", "ssh_key_mode": "generate",
                       "required_cores": 2, "vm_image": "debian"});
        let d: TaskDefinition = serde_json::from_value(v).unwrap();
        let vps = d.spec.as_vps().unwrap();
        assert_eq!(vps.vps_backend, VpsBackend::Qemu);
        assert_eq!(vps.ssh_key_mode, SshKeyMode::Generate);
        assert_eq!(d.resources.required_cores, 2);
        assert_eq!(d.kind(), TaskKind::Vps);
    }

    #[test]
    fn a_definition_without_task_type_is_a_command() {
        let d: TaskDefinition =
            serde_json::from_value(json!({"command": "echo", "required_cores": 3})).unwrap();
        assert_eq!(d.spec.as_command().unwrap().command, "echo");
        assert_eq!(d.resources.required_cores, 3);
        let err = serde_json::from_value::<TaskDefinition>(json!({"task_type": "batch"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown task type"), "{err}");
        assert!(serde_json::from_value::<TaskDefinition>(json!({"task_type": "command"})).is_err());
    }

    #[test]
    fn image_reference_prefers_the_registry_image() {
        let img = Image {
            container_name: Some("env".into()),
            registry_image: Some("busybox:1".into()),
        };
        assert_eq!(img.reference().as_deref(), Some("busybox:1"));
        let env = Image {
            container_name: Some("env".into()),
            registry_image: None,
        };
        assert_eq!(env.reference().as_deref(), Some("kohakuriver/env:base"));
        assert_eq!(Image::default().reference(), None);
    }
}
