//! Placement as a pure function: given the nodes, what is booked on them and the queue in
//! order, decide which queued tasks start where. No I/O, so every rule is unit-tested here.
//!
//! Rules: the queue is ordered by priority (higher first), then by submission. A task that does
//! not fit now keeps its place and *claims* the nodes it is waiting for: later tasks may not
//! start on a claimed node, so a big task is never starved by a stream of small ones. Among
//! nodes that fit, the one with the most free cores wins (ties: hostname order).

use ferry_common::TaskId;
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub struct NodeCapacity {
    pub hostname: String,
    pub total_cores: u32,
    /// `None` until the runner tells; memory requests cannot be placed there until then.
    pub memory_total: Option<u64>,
    pub gpu_count: u32,
    /// Cores of each NUMA node, `None` when the node reported no topology.
    pub numa: Option<BTreeMap<u32, u32>>,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: TaskId,
    pub cores: u32,
    pub memory: Option<u64>,
    pub gpus: Vec<u32>,
    pub target: Option<String>,
    pub numa: Option<u32>,
    pub priority: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub cores: u32,
    pub memory: u64,
    pub gpus: BTreeSet<u32>,
    pub tasks: u32,
    /// Cores booked by tasks bound to each NUMA node.
    pub numa_cores: BTreeMap<u32, u32>,
}

impl Usage {
    pub fn book(&mut self, r: &Request) {
        self.cores += r.cores;
        self.memory += r.memory.unwrap_or(0);
        self.gpus.extend(r.gpus.iter().copied());
        self.tasks += 1;
        if let Some(n) = r.numa {
            *self.numa_cores.entry(n).or_default() += r.cores;
        }
    }

    pub fn release(&mut self, r: &Request) {
        self.cores = self.cores.saturating_sub(r.cores);
        self.memory = self.memory.saturating_sub(r.memory.unwrap_or(0));
        for g in &r.gpus {
            self.gpus.remove(g);
        }
        self.tasks = self.tasks.saturating_sub(1);
        if let Some(n) = r.numa {
            if let Some(c) = self.numa_cores.get_mut(&n) {
                *c = c.saturating_sub(r.cores);
            }
        }
    }
}

/// Why a request can never run on a node, whatever frees up.
pub fn never_fits_on(r: &Request, n: &NodeCapacity) -> Option<String> {
    if r.cores > n.total_cores {
        return Some(format!(
            "required_cores={} but node '{}' has only {} cores",
            r.cores, n.hostname, n.total_cores
        ));
    }
    if let (Some(want), Some(total)) = (r.memory, n.memory_total) {
        if want > total {
            return Some(format!(
                "required_memory_bytes={} but node '{}' has only {} bytes of memory",
                want, n.hostname, total
            ));
        }
    }
    if let Some(g) = r.gpus.iter().find(|g| **g >= n.gpu_count) {
        return Some(format!(
            "GPU {} does not exist on node '{}' (it has {} GPUs)",
            g, n.hostname, n.gpu_count
        ));
    }
    if let Some(numa) = r.numa {
        match &n.numa {
            None => return Some(format!("node '{}' reported no NUMA topology", n.hostname)),
            Some(nodes) => match nodes.get(&numa) {
                None => {
                    let valid: Vec<&u32> = nodes.keys().collect();
                    return Some(format!(
                        "NUMA node {} does not exist on node '{}' (valid: {:?})",
                        numa, n.hostname, valid
                    ));
                }
                Some(cores) if r.cores > *cores => {
                    return Some(format!(
                        "required_cores={} but NUMA node {} of '{}' has only {} cores",
                        r.cores, numa, n.hostname, cores
                    ))
                }
                Some(_) => {}
            },
        }
    }
    None
}

/// Whether `r` fits on `n` right now, given what is booked there.
pub fn fits_now(r: &Request, n: &NodeCapacity, used: &Usage) -> bool {
    if !n.online || never_fits_on(r, n).is_some() {
        return false;
    }
    if used.cores + r.cores > n.total_cores {
        return false;
    }
    // A task bound to a NUMA node runs on that node's cores only.
    if let (Some(numa), Some(nodes)) = (r.numa, &n.numa) {
        let booked = used.numa_cores.get(&numa).copied().unwrap_or(0);
        if booked + r.cores > nodes.get(&numa).copied().unwrap_or(0) {
            return false;
        }
    }
    if let Some(want) = r.memory {
        match n.memory_total {
            Some(total) if used.memory + want <= total => {}
            _ => return false,
        }
    }
    r.gpus.iter().all(|g| !used.gpus.contains(g))
}

/// Why `r` does not fit on `n` right now (what is short), for a caller who will not wait.
pub fn why_not_now(r: &Request, n: &NodeCapacity, used: &Usage) -> String {
    let name = &n.hostname;
    if !n.online {
        return format!("node '{name}' is offline");
    }
    if let Some(why) = never_fits_on(r, n) {
        return why;
    }
    let free_cores = n.total_cores.saturating_sub(used.cores);
    if r.cores > free_cores {
        return format!(
            "node '{name}' has {free_cores} of {} cores free, {} asked",
            n.total_cores, r.cores
        );
    }
    if let (Some(numa), Some(nodes)) = (r.numa, &n.numa) {
        let total = nodes.get(&numa).copied().unwrap_or(0);
        let free = total.saturating_sub(used.numa_cores.get(&numa).copied().unwrap_or(0));
        if r.cores > free {
            return format!(
                "NUMA node {numa} of '{name}' has {free} of {total} cores free, {} asked",
                r.cores
            );
        }
    }
    if let Some(want) = r.memory {
        match n.memory_total {
            None => return format!("node '{name}' has not reported its memory yet"),
            Some(total) if used.memory + want > total => {
                return format!(
                    "node '{name}' has {} of {total} bytes of memory free, {want} asked",
                    total.saturating_sub(used.memory)
                )
            }
            Some(_) => {}
        }
    }
    let busy: Vec<String> = r
        .gpus
        .iter()
        .filter(|g| used.gpus.contains(g))
        .map(u32::to_string)
        .collect();
    if !busy.is_empty() {
        return format!("GPU {} of '{name}' in use", busy.join(", "));
    }
    format!("node '{name}' is held for tasks queued ahead")
}

/// Why a queued task is not running yet, across the nodes it could run on: the node that
/// comes closest is named.
pub fn why_waiting(
    r: &Request,
    nodes: &BTreeMap<String, NodeCapacity>,
    usage: &BTreeMap<String, Usage>,
) -> String {
    let empty = Usage::default();
    let used = |n: &NodeCapacity| usage.get(&n.hostname).unwrap_or(&empty);
    let candidates: Vec<&NodeCapacity> = match &r.target {
        Some(t) => match nodes.get(t) {
            Some(n) => vec![n],
            None => return format!("node '{t}' is not registered"),
        },
        None => nodes.values().collect(),
    };
    if candidates.is_empty() {
        return "no node is registered".into();
    }
    let up: Vec<&NodeCapacity> = candidates.iter().copied().filter(|n| n.online).collect();
    let Some(first_up) = up.first() else {
        return match candidates.as_slice() {
            [only] => why_not_now(r, only, used(only)),
            _ => "every node is offline".into(),
        };
    };
    let eligible: Vec<&NodeCapacity> = up
        .iter()
        .copied()
        .filter(|n| never_fits_on(r, n).is_none())
        .collect();
    if eligible.is_empty() {
        return why_not_now(r, first_up, used(first_up));
    }
    if eligible.iter().any(|n| fits_now(r, n, used(n))) {
        return "waiting for tasks queued ahead of it".into();
    }
    let free = |n: &NodeCapacity| n.total_cores.saturating_sub(used(n).cores);
    let Some(roomiest) = eligible.iter().copied().max_by_key(|n| free(n)) else {
        return "waiting for room".into();
    };
    if r.cores > free(roomiest) {
        return format!(
            "needs {} cores; largest free {} on {}",
            r.cores,
            free(roomiest),
            roomiest.hostname
        );
    }
    why_not_now(r, roomiest, used(roomiest))
}

/// Orders a queue: priority first, then submission (task ids grow with time).
pub fn queue_order(a: &Request, b: &Request) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then(a.id.cmp(&b.id))
}

/// Decides placements for `queue` (already in queue order). Returns `(task, hostname)` pairs.
pub fn plan(
    nodes: &BTreeMap<String, NodeCapacity>,
    usage: &BTreeMap<String, Usage>,
    queue: &[Request],
) -> Vec<(TaskId, String)> {
    let mut usage = usage.clone();
    let mut claimed: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let empty = Usage::default();
    for r in queue {
        let candidates: Vec<&NodeCapacity> = match &r.target {
            Some(t) => nodes.get(t).into_iter().collect(),
            None => nodes.values().collect(),
        };
        // Nodes this task could ever run on and that are up: it waits for these.
        let eligible: Vec<&NodeCapacity> = candidates
            .into_iter()
            .filter(|n| n.online && never_fits_on(r, n).is_none())
            .collect();
        let best = eligible
            .iter()
            .filter(|n| !claimed.contains(&n.hostname))
            .filter(|n| fits_now(r, n, usage.get(&n.hostname).unwrap_or(&empty)))
            .max_by(|a, b| {
                let free = |n: &NodeCapacity| {
                    n.total_cores
                        - usage
                            .get(&n.hostname)
                            .map(|u| u.cores)
                            .unwrap_or(0)
                            .min(n.total_cores)
                };
                free(a).cmp(&free(b)).then(b.hostname.cmp(&a.hostname))
            });
        match best {
            Some(n) => {
                usage.entry(n.hostname.clone()).or_default().book(r);
                out.push((r.id, n.hostname.clone()));
            }
            None => claimed.extend(eligible.iter().map(|n| n.hostname.clone())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cores: u32) -> NodeCapacity {
        NodeCapacity {
            hostname: name.into(),
            total_cores: cores,
            memory_total: Some(1 << 30),
            gpu_count: 2,
            numa: None,
            online: true,
        }
    }

    fn req(id: u64, cores: u32) -> Request {
        Request {
            id: TaskId(id),
            cores,
            memory: None,
            gpus: vec![],
            target: None,
            numa: None,
            priority: 0,
        }
    }

    fn nodes(list: &[NodeCapacity]) -> BTreeMap<String, NodeCapacity> {
        list.iter()
            .map(|n| (n.hostname.clone(), n.clone()))
            .collect()
    }

    #[test]
    fn a_waiting_task_is_told_what_comes_closest() {
        let ns = nodes(&[node("node-a", 4), node("node-b", 4)]);
        let mut usage = BTreeMap::new();
        usage
            .entry("node-a".to_string())
            .or_insert_with(Usage::default)
            .book(&req(1, 2));
        usage
            .entry("node-b".to_string())
            .or_insert_with(Usage::default)
            .book(&req(2, 3));
        assert_eq!(
            why_waiting(&req(9, 4), &ns, &usage),
            "needs 4 cores; largest free 2 on node-a"
        );
        assert_eq!(
            why_waiting(&req(9, 1), &ns, &usage),
            "waiting for tasks queued ahead of it"
        );
        let mut targeted = req(9, 1);
        targeted.target = Some("node-z".into());
        assert_eq!(
            why_waiting(&targeted, &ns, &usage),
            "node 'node-z' is not registered"
        );
        let mut down = node("node-a", 4);
        down.online = false;
        assert_eq!(
            why_waiting(&req(9, 1), &nodes(&[down]), &usage),
            "node 'node-a' is offline"
        );
        assert_eq!(
            why_waiting(&req(9, 1), &BTreeMap::new(), &usage),
            "no node is registered"
        );
    }

    #[test]
    fn picks_the_node_with_most_free_cores() {
        let ns = nodes(&[node("a", 4), node("b", 8)]);
        let plan = plan(&ns, &BTreeMap::new(), &[req(1, 2)]);
        assert_eq!(plan, vec![(TaskId(1), "b".to_string())]);
    }

    #[test]
    fn tasks_wait_when_nothing_fits_and_order_is_fifo() {
        let ns = nodes(&[node("a", 2)]);
        let q = [req(1, 2), req(2, 2), req(3, 2)];
        assert_eq!(
            plan(&ns, &BTreeMap::new(), &q),
            vec![(TaskId(1), "a".to_string())]
        );
        // With the node busy nothing starts, and the small task behind does not jump the queue.
        let mut used = BTreeMap::new();
        used.entry("a".to_string())
            .or_insert_with(Usage::default)
            .book(&req(1, 2));
        let q = [req(2, 2), req(4, 1)];
        assert!(plan(&ns, &used, &q).is_empty());
    }

    #[test]
    fn a_blocked_task_does_not_hold_back_tasks_for_other_nodes() {
        let ns = nodes(&[node("a", 2), node("b", 2)]);
        let mut used = BTreeMap::new();
        used.entry("a".to_string())
            .or_insert_with(Usage::default)
            .book(&req(9, 2));
        let mut big = req(1, 2);
        big.target = Some("a".into());
        let small = req(2, 1);
        assert_eq!(
            plan(&ns, &used, &[big, small]),
            vec![(TaskId(2), "b".to_string())]
        );
    }

    #[test]
    fn priority_goes_first() {
        let mut q = vec![req(1, 2), req(2, 2)];
        q[1].priority = 5;
        q.sort_by(queue_order);
        assert_eq!(q[0].id, TaskId(2));
        let ns = nodes(&[node("a", 2)]);
        assert_eq!(
            plan(&ns, &BTreeMap::new(), &q),
            vec![(TaskId(2), "a".to_string())]
        );
    }

    #[test]
    fn memory_gpus_and_offline_nodes_are_respected() {
        let mut ns = nodes(&[node("a", 8), node("b", 8)]);
        ns.get_mut("b").unwrap().online = false;
        let mut r = req(1, 1);
        r.memory = Some(2 << 30);
        assert!(never_fits_on(&r, &ns["a"]).is_some());
        r.memory = Some(512 << 20);
        let mut used = BTreeMap::new();
        used.entry("a".to_string())
            .or_insert_with(Usage::default)
            .memory = 600 << 20;
        assert!(
            plan(&ns, &used, &[r.clone()]).is_empty(),
            "not enough free memory on a, b offline"
        );
        let mut g = req(2, 1);
        g.target = Some("a".into());
        g.gpus = vec![1];
        used.get_mut("a").unwrap().gpus.insert(1);
        assert!(plan(&ns, &used, &[g.clone()]).is_empty(), "GPU 1 is taken");
        g.gpus = vec![0];
        assert_eq!(plan(&ns, &used, &[g]), vec![(TaskId(2), "a".to_string())]);
    }

    #[test]
    fn numa_bound_tasks_share_their_numa_nodes_cores() {
        let mut n = node("a", 8);
        n.numa = Some(BTreeMap::from([(0, 4), (1, 4)]));
        let ns = nodes(&[n.clone()]);
        let bound = |id, cores| {
            let mut r = req(id, cores);
            r.numa = Some(0);
            r
        };
        assert!(never_fits_on(&bound(1, 5), &n)
            .unwrap()
            .contains("NUMA node 0"));
        // Two 3-core tasks fit the node (8 cores) but not NUMA node 0 (4 cores) together.
        assert_eq!(
            plan(&ns, &BTreeMap::new(), &[bound(1, 3), bound(2, 3)]),
            vec![(TaskId(1), "a".to_string())]
        );
        let mut other = req(3, 3);
        other.numa = Some(1);
        assert_eq!(plan(&ns, &BTreeMap::new(), &[bound(1, 3), other]).len(), 2);
    }

    #[test]
    fn never_fits_explains_why() {
        let n = node("a", 2);
        assert!(never_fits_on(&req(1, 3), &n)
            .unwrap()
            .contains("only 2 cores"));
        let mut r = req(1, 1);
        r.gpus = vec![5];
        assert!(never_fits_on(&r, &n).unwrap().contains("GPU 5"));
        r.gpus = vec![];
        r.numa = Some(1);
        assert!(never_fits_on(&r, &n).unwrap().contains("NUMA"));
        assert!(never_fits_on(&req(1, 2), &n).is_none());
    }
}
