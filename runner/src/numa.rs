//! NUMA topology from sysfs (`/sys/devices/system/node/node<N>/{cpulist,meminfo}`), reported
//! at registration so `host:numa` targets can be checked, and turned into a cpuset for tasks
//! bound to a NUMA node.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    pub cores: Vec<u32>,
    pub memory_bytes: Option<u64>,
}

pub type Topology = BTreeMap<u32, NumaNode>;

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpulist(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.contains("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().rev().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads the topology under `root` (normally `/sys/devices/system/node`); `None` when the
/// kernel exposes none.
pub fn detect(root: &Path) -> Option<Topology> {
    let mut topo = Topology::new();
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(cores) = std::fs::read_to_string(entry.path().join("cpulist"))
            .ok()
            .and_then(|s| parse_cpulist(&s))
        else {
            continue;
        };
        let memory_bytes = std::fs::read_to_string(entry.path().join("meminfo"))
            .ok()
            .and_then(|s| mem_total(&s));
        topo.insert(
            id,
            NumaNode {
                cores,
                memory_bytes,
            },
        );
    }
    (!topo.is_empty()).then_some(topo)
}

/// The wire form: `{"0": {"cores": [0, 1], "memory_bytes": 123}}`.
pub fn to_json(t: &Topology) -> Value {
    Value::Object(
        t.iter()
            .map(|(id, n)| {
                (
                    id.to_string(),
                    json!({"cores": n.cores, "memory_bytes": n.memory_bytes}),
                )
            })
            .collect(),
    )
}

/// Docker's `cpuset-cpus` for a node's cores: `0,1,2`.
pub fn cpuset(n: &NumaNode) -> String {
    n.cores
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(
            parse_cpulist("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpulist("5"), Some(vec![5]));
        assert_eq!(parse_cpulist(""), Some(vec![]));
        assert_eq!(parse_cpulist("3-1"), None);
        assert_eq!(parse_cpulist("x"), None);
    }

    #[test]
    fn reads_a_fake_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        for (n, cpus, kb) in [(0, "0-1", 1000), (1, "2-3", 2000)] {
            let d = dir.path().join(format!("node{n}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cpulist"), cpus).unwrap();
            std::fs::write(
                d.join("meminfo"),
                format!("Node {n} MemTotal:     {kb} kB\nNode {n} MemFree: 1 kB\n"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("power")).unwrap();
        let t = detect(dir.path()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[&1],
            NumaNode {
                cores: vec![2, 3],
                memory_bytes: Some(2000 * 1024)
            }
        );
        assert_eq!(to_json(&t)["1"]["cores"], json!([2, 3]));
        assert_eq!(cpuset(&t[&0]), "0,1");
        assert!(detect(&dir.path().join("missing")).is_none());
    }
}
