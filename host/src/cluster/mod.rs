//! The node registry: which runners exist, where they listen, what they last reported, and
//! whether they are alive. Node arrivals and departures are passed to the scheduler as events;
//! the registry itself never touches the resource ledger.

pub mod health;

use crate::scheduler::placement::NodeCapacity;
use crate::scheduler::{Event, SchedulerHandle};
use crate::store::nodes::{self, NodeRow};
use crate::store::tasks::{self, Change};
use crate::store::{Db, StoreError};
use ferry_common::runner_proto::{Heartbeat, HeartbeatResponse, RegisterRequest};
use ferry_common::time::now_ms;
use ferry_common::{TaskId, TaskStatus};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub row: NodeRow,
    last_seen: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("node '{0}' is not registered")]
    UnknownNode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Cluster {
    db: Db,
    scheduler: SchedulerHandle,
    nodes: RwLock<BTreeMap<String, NodeEntry>>,
    node_timeout: Duration,
    /// Consecutive heartbeats in which a node's runner did not know a task placed there.
    absent: Mutex<HashMap<TaskId, u32>>,
}

/// Heartbeats a task may be missing from its runner's known tasks before it is given up.
pub const ABSENT_BEATS: u32 = 3;

fn capacity(row: &NodeRow) -> NodeCapacity {
    // {"0": {"cores": [0, 1], ...}} -> {0: 2}
    let numa = row
        .numa_topology
        .as_object()
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let cores = v
                        .get("cores")
                        .and_then(|c| c.as_array())
                        .map_or(0, |c| c.len() as u32);
                    k.parse::<u32>().ok().map(|id| (id, cores))
                })
                .collect::<BTreeMap<u32, u32>>()
        });
    NodeCapacity {
        hostname: row.hostname.clone(),
        total_cores: row.total_cores,
        memory_total: row.memory_total_bytes,
        gpu_count: row.gpu_info.len() as u32,
        numa,
        online: row.online,
    }
}

impl Cluster {
    /// Loads every known node. Nodes that were online get a full timeout to send a heartbeat
    /// before they are judged, so a host restart alone never makes nodes (and tasks) look lost.
    pub async fn load(
        db: Db,
        scheduler: SchedulerHandle,
        node_timeout: Duration,
    ) -> Result<Arc<Cluster>, StoreError> {
        let rows = db.read(nodes::all).await?;
        let now = Instant::now();
        let map = rows
            .into_iter()
            .map(|row| {
                (
                    row.hostname.clone(),
                    NodeEntry {
                        row,
                        last_seen: now,
                    },
                )
            })
            .collect();
        Ok(Arc::new(Cluster {
            db,
            scheduler,
            nodes: RwLock::new(map),
            node_timeout,
            absent: Mutex::new(HashMap::new()),
        }))
    }

    fn read_nodes(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, NodeEntry>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_nodes(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, NodeEntry>> {
        self.nodes.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacities(&self) -> BTreeMap<String, NodeCapacity> {
        self.read_nodes()
            .iter()
            .map(|(k, v)| (k.clone(), capacity(&v.row)))
            .collect()
    }

    pub fn url_of(&self, hostname: &str) -> Option<String> {
        self.read_nodes().get(hostname).map(|n| n.row.url.clone())
    }

    pub fn is_online(&self, hostname: &str) -> bool {
        self.read_nodes()
            .get(hostname)
            .map(|n| n.row.online)
            .unwrap_or(false)
    }

    pub fn snapshot(&self) -> Vec<NodeRow> {
        self.read_nodes().values().map(|n| n.row.clone()).collect()
    }

    pub fn timeout(&self) -> Duration {
        self.node_timeout
    }

    /// Registers or re-registers a runner; returns whether the node is new.
    pub async fn register(&self, req: RegisterRequest) -> Result<bool, ClusterError> {
        let now = now_ms();
        let previous = self.read_nodes().get(&req.hostname).map(|n| n.row.clone());
        let numa = req
            .numa_topology
            .clone()
            .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()));
        let row = NodeRow {
            hostname: req.hostname.clone(),
            url: req.url.trim_end_matches('/').to_string(),
            total_cores: req.total_cores,
            memory_total_bytes: req
                .total_ram_bytes
                .or(previous.as_ref().and_then(|p| p.memory_total_bytes)),
            numa_topology: numa.unwrap_or_else(|| serde_json::json!({})),
            gpu_info: req.gpu_info.clone(),
            online: true,
            last_heartbeat: Some(now),
            metrics: previous.as_ref().and_then(|p| p.metrics.clone()),
            runner_version: req.runner_version.clone(),
            heartbeat_interval_ms: req.heartbeat_interval_ms,
        };
        let stored = row.clone();
        let created = self
            .db
            .write(move |c| nodes::upsert(c, &stored, now))
            .await?;
        self.write_nodes().insert(
            row.hostname.clone(),
            NodeEntry {
                row: row.clone(),
                last_seen: Instant::now(),
            },
        );
        self.scheduler.send(Event::NodeUp(capacity(&row))).await;
        tracing::info!(node = %row.hostname, url = %row.url, cores = row.total_cores, created, "runner registered");
        Ok(created)
    }

    /// Records a heartbeat and reconciles the tasks the runner says it runs.
    pub async fn heartbeat(
        &self,
        hostname: &str,
        hb: Heartbeat,
    ) -> Result<HeartbeatResponse, ClusterError> {
        let now = now_ms();
        let metrics = serde_json::json!({
            "cpu_percent": hb.cpu_percent,
            "memory_percent": hb.memory_percent,
            "memory_used_bytes": hb.memory_used_bytes,
            "memory_total_bytes": hb.memory_total_bytes,
            "current_avg_temp": hb.current_avg_temp,
            "current_max_temp": hb.current_max_temp,
            "vm_capable": hb.vm_capable,
            "vfio_gpus": hb.vfio_gpus,
        });
        let came_back = {
            let mut map = self.write_nodes();
            let entry = map
                .get_mut(hostname)
                .ok_or_else(|| ClusterError::UnknownNode(hostname.to_string()))?;
            let was_offline = !entry.row.online;
            entry.last_seen = Instant::now();
            entry.row.online = true;
            entry.row.last_heartbeat = Some(now);
            entry.row.metrics = Some(metrics.clone());
            // An empty list is news too: the GPUs are gone.
            entry.row.gpu_info = hb.gpu_info.clone();
            if entry.row.memory_total_bytes.is_none() {
                entry.row.memory_total_bytes = hb.memory_total_bytes;
            }
            if hb.runner_version.is_some() {
                entry.row.runner_version = hb.runner_version.clone();
            }
            was_offline.then(|| capacity(&entry.row))
        };
        let host = hostname.to_string();
        let gpus = hb.gpu_info.clone();
        self.db
            .write(move |c| nodes::record_heartbeat(c, &host, now, &metrics, &gpus))
            .await?;
        if let Some(cap) = came_back {
            tracing::info!(node = %hostname, "node is back online");
            self.scheduler.send(Event::NodeUp(cap)).await;
        }
        let kill_tasks = self.reconcile(hostname, &hb).await?;
        Ok(HeartbeatResponse {
            message: "Heartbeat received".into(),
            kill_tasks,
        })
    }

    /// Squares the host's view of a node's tasks with what its runner reports:
    /// - a task the runner runs is alive: `assigning`/`lost` become `running` (or `paused`);
    /// - a task the runner runs that the host has already ended is returned, to be killed;
    /// - a task placed on the node that the runner does not know for [`ABSENT_BEATS`]
    ///   heartbeats is gone: queued again if it never started, failed if it had.
    async fn reconcile(&self, hostname: &str, hb: &Heartbeat) -> Result<Vec<TaskId>, ClusterError> {
        let listed: HashSet<TaskId> = hb.running_tasks.iter().copied().collect();
        let paused: HashSet<TaskId> = hb.paused_tasks.iter().flatten().copied().collect();
        let known: Option<HashSet<TaskId>> =
            hb.known_tasks.as_ref().map(|k| k.iter().copied().collect());
        let ids = hb.running_tasks.clone();
        let host = hostname.to_string();
        let (statuses, holding) = self
            .db
            .read(move |c| Ok((tasks::statuses(c, &ids)?, tasks::holding_on(c, &host)?)))
            .await?;
        let kill: Vec<TaskId> = statuses
            .iter()
            .filter(|(_, s)| s.is_final())
            .map(|(id, _)| *id)
            .collect();
        if !kill.is_empty() {
            tracing::warn!(node = %hostname, tasks = ?kill, "runner still runs tasks that have ended; asking it to kill them");
        }
        let mut changes = Vec::new();
        {
            let mut absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
            for (id, status, started) in holding {
                if listed.contains(&id) {
                    absent.remove(&id);
                    let alive = if paused.contains(&id) {
                        TaskStatus::Paused
                    } else {
                        TaskStatus::Running
                    };
                    if matches!(status, TaskStatus::Assigning | TaskStatus::Lost) {
                        changes.push((
                            id,
                            Change {
                                status: Some(alive),
                                ..Default::default()
                            },
                        ));
                    }
                    continue;
                }
                match &known {
                    Some(k) if !k.contains(&id) => {
                        let n = absent.entry(id).or_insert(0);
                        *n += 1;
                        if *n >= ABSENT_BEATS {
                            absent.remove(&id);
                            let change = if started {
                                Change {
                                    status: Some(TaskStatus::Failed),
                                    exit_code: Some(-1),
                                    message: Some(format!("Runner {hostname} no longer has this task: its container and state are gone.")),
                                    ..Default::default()
                                }
                            } else {
                                Change {
                                    status: Some(TaskStatus::Pending),
                                    message: Some(format!(
                                        "Runner {hostname} never received this task; queued again."
                                    )),
                                    ..Default::default()
                                }
                            };
                            tracing::warn!(node = %hostname, task_id = %id, ?status, started, "task unknown to its runner");
                            changes.push((id, change));
                        }
                    }
                    _ => {
                        absent.remove(&id);
                    }
                }
            }
        }
        for (id, change) in changes {
            self.scheduler
                .send(Event::Change {
                    id,
                    change,
                    reply: None,
                })
                .await;
        }
        Ok(kill)
    }

    /// Marks nodes silent for longer than the timeout offline. Runs for the host's lifetime.
    pub async fn watch_liveness(self: Arc<Self>) {
        let tick =
            (self.node_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            let silent: Vec<String> = {
                let mut map = self.write_nodes();
                map.values_mut()
                    .filter(|n| n.row.online && n.last_seen.elapsed() > self.node_timeout)
                    .map(|n| {
                        n.row.online = false;
                        n.row.hostname.clone()
                    })
                    .collect()
            };
            for host in silent {
                tracing::warn!(node = %host, timeout = ?self.node_timeout, "node silent past the timeout: offline");
                let h = host.clone();
                if let Err(e) = self
                    .db
                    .write(move |c| nodes::set_status(c, &h, false))
                    .await
                {
                    tracing::error!(error = %e, "could not record node offline");
                }
                self.scheduler.send(Event::NodeOffline(host)).await;
            }
        }
    }
}
