//! What every task's container is held to, whatever the task asks for: a memory limit (its own,
//! else a default, so one task cannot take the node's memory from the others), a process limit
//! (a fork bomb stays inside its container), no privilege gain through setuid binaries, fewer
//! capabilities than Docker's default set, and a capped engine log. Pure: the supervisor puts
//! the result into the workload spec.

use crate::config::RunnerConfig;
use crate::workload::WorkloadSpec;
use ferry_common::task::Resources;

/// Dropped from Docker's default capability set: raw sockets (packet spoofing and sniffing on
/// the node's networks) and device nodes, which no batch task needs. `cap_add` gives them back.
pub const DROPPED_CAPABILITIES: &[&str] = &["NET_RAW", "MKNOD"];

/// Setuid and file-capability binaries cannot raise a process's privileges.
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges";

/// Docker refuses memory limits below 6 MiB; a default share is never smaller.
const MIN_MEMORY: u64 = 6 << 20;

/// What this node offers (after the `cores` and `memory` keys), the base of default shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub cores: u32,
    pub memory: u64,
}

/// The memory limit of a task: what it asked for; else `default_memory`; else its cores' share
/// of the node's memory (`required_cores` / node cores × node memory), the whole node's for a
/// task that books no cores.
pub fn memory_limit(r: &Resources, node: Node, default_memory: Option<u64>) -> u64 {
    if let Some(m) = r.required_memory_bytes {
        return m;
    }
    if let Some(m) = default_memory {
        return m;
    }
    if r.required_cores == 0 || node.cores == 0 {
        return node.memory;
    }
    let cores = r.required_cores.min(node.cores);
    let share = u128::from(node.memory) * u128::from(cores) / u128::from(node.cores);
    u64::try_from(share).unwrap_or(node.memory).max(MIN_MEMORY)
}

/// Sets the limits and privilege reductions on a task's container spec.
pub fn apply(spec: &mut WorkloadSpec, r: &Resources, node: Node, config: &RunnerConfig) {
    let memory = memory_limit(r, node, config.default_memory);
    spec.memory_bytes = Some(i64::try_from(memory).unwrap_or(i64::MAX));
    spec.pids_limit = Some(config.pids_limit);
    spec.security_opt = vec![NO_NEW_PRIVILEGES.to_string()];
    spec.cap_drop = DROPPED_CAPABILITIES
        .iter()
        .filter(|c| !config.cap_add.iter().any(|a| a == *c))
        .map(|c| c.to_string())
        .collect();
    spec.cap_add = config.cap_add.clone();
    spec.max_log_bytes = Some(config.max_log_size);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Node = Node {
        cores: 4,
        memory: 8 << 30,
    };

    fn resources(cores: u32, memory: Option<u64>) -> Resources {
        Resources {
            required_cores: cores,
            required_memory_bytes: memory,
            ..Default::default()
        }
    }

    #[test]
    fn memory_defaults_to_the_cores_share_of_the_node() {
        assert_eq!(memory_limit(&resources(1, None), NODE, None), 2 << 30);
        assert_eq!(memory_limit(&resources(3, None), NODE, None), 6 << 30);
        // No cores booked: the whole node, as for more cores than the node has.
        assert_eq!(memory_limit(&resources(0, None), NODE, None), 8 << 30);
        assert_eq!(memory_limit(&resources(9, None), NODE, None), 8 << 30);
        // A fixed default replaces the share; the task's own figure beats both.
        assert_eq!(
            memory_limit(&resources(1, None), NODE, Some(1 << 30)),
            1 << 30
        );
        assert_eq!(
            memory_limit(&resources(1, Some(5 << 20)), NODE, Some(1 << 30)),
            5 << 20
        );
        // Never below what the engine accepts.
        let tiny = Node {
            cores: 64,
            memory: 64 << 20,
        };
        assert_eq!(memory_limit(&resources(1, None), tiny, None), 6 << 20);
    }

    #[test]
    fn every_container_gets_the_limits_and_cap_add_gives_back_a_dropped_capability() {
        let config = |extra: &[&str]| {
            let mut args = vec![
                "ferry-runner",
                "--cluster-secret",
                "0123456789abcdef0123456789abcdef",
                "--pids-limit",
                "77",
            ];
            args.extend_from_slice(extra);
            <crate::config::RunnerArgs as clap::Parser>::parse_from(args)
                .resolve()
                .unwrap()
        };
        let mut spec = WorkloadSpec::default();
        apply(&mut spec, &resources(2, None), NODE, &config(&[]));
        assert_eq!(spec.memory_bytes, Some(4 << 30));
        assert_eq!(spec.pids_limit, Some(77));
        assert_eq!(spec.security_opt, vec!["no-new-privileges"]);
        assert_eq!(spec.cap_drop, vec!["NET_RAW", "MKNOD"]);
        assert!(spec.cap_add.is_empty());
        assert_eq!(spec.max_log_bytes, Some(64 << 20));
        let mut spec = WorkloadSpec::default();
        apply(
            &mut spec,
            &resources(2, None),
            NODE,
            &config(&["--cap-add", "net_raw,SYS_PTRACE", "--max-log-size", "1M"]),
        );
        assert_eq!(spec.cap_drop, vec!["MKNOD"]);
        assert_eq!(spec.cap_add, vec!["NET_RAW", "SYS_PTRACE"]);
        assert_eq!(spec.max_log_bytes, Some(1 << 20));
    }
}
