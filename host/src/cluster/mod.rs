//! The node registry: which runners exist, where they listen, what they last reported, and
//! whether they are alive. Node arrivals, departures and capacity changes are passed to the
//! scheduler as [`NodeEvent`]s, and what heartbeats reveal about tasks as task changes; the
//! registry itself never touches the resource ledger (and the scheduler never calls it).

pub mod health;
pub mod view;

use crate::auth::secrets;
use crate::scheduler::placement::NodeCapacity;
use crate::scheduler::{Event, NodeEvent, SchedulerHandle};
use crate::store::nodes::{self, NodeRow};
use crate::store::tasks;
use crate::store::{Db, StoreError};
use crate::tasks::model::Change;
use ferry_common::api::{ClusterEvent, EventTopic, Preparing};
use ferry_common::runner_proto::{
    Heartbeat, HeartbeatResponse, RegisterRequest, TaskAttempt, TaskPreparing,
};
use ferry_common::time::now_ms;
use ferry_common::{TaskId, TaskStatus};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub row: NodeRow,
    last_seen: Instant,
    /// Digest of the runner's credential (None: not issued yet).
    credential: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("node '{0}' is not registered")]
    UnknownNode(String),
    #[error(
        "runner calls for node '{0}' need its runner credential (header x-ferry-runner-credential)"
    )]
    NoCredential(String),
    #[error("node '{0}' belongs to another runner: only the runner holding its credential may speak for it (an operator can release the name with DELETE /api/nodes/{0})")]
    NotYours(String),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
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
    /// Numbers node events in the order the registry changed (see [`NodeEvent`]).
    epoch: AtomicU64,
    /// What each task its runner prepares waits for, with that runner's name, as its last
    /// heartbeat said (in memory only: the next heartbeat says it again).
    preparing: RwLock<HashMap<TaskId, (String, Preparing)>>,
}

/// Heartbeats a task may be missing from its runner's known tasks before it is given up.
pub const ABSENT_BEATS: u32 = 3;

/// The outcome of a registration.
#[derive(Debug)]
pub struct Registered {
    pub created: bool,
    /// The runner's new credential (first registration only).
    pub credential: Option<String>,
}

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
        let (rows, creds) = db
            .read(|c| Ok((nodes::all(c)?, nodes::credentials(c)?)))
            .await?;
        let creds: HashMap<String, String> = creds.into_iter().collect();
        let now = Instant::now();
        let map = rows
            .into_iter()
            .map(|row| {
                let credential = creds.get(&row.hostname).cloned();
                (
                    row.hostname.clone(),
                    NodeEntry {
                        row,
                        last_seen: now,
                        credential,
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
            epoch: AtomicU64::new(1),
            preparing: RwLock::default(),
        }))
    }

    fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::Relaxed)
    }

    fn up_event(&self, row: &NodeRow) -> NodeEvent {
        NodeEvent::Up {
            capacity: capacity(row),
            url: row.url.clone(),
            epoch: self.next_epoch(),
        }
    }

    /// The scheduler's starting picture of the nodes.
    pub fn node_events(&self) -> Vec<NodeEvent> {
        self.read_nodes()
            .values()
            .map(|n| self.up_event(&n.row))
            .collect()
    }

    fn read_nodes(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, NodeEntry>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_nodes(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, NodeEntry>> {
        self.nodes.write().unwrap_or_else(|p| p.into_inner())
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

    /// Registers or re-registers a runner. A name with a credential may be registered again
    /// only with that credential; a new name (or one registered before credentials existed)
    /// gets one, returned here once and kept as a digest.
    pub async fn register(
        &self,
        req: RegisterRequest,
        presented: Option<&str>,
    ) -> Result<Registered, ClusterError> {
        validate_registration(&req)?;
        let now = now_ms();
        let (previous, held) = match self.read_nodes().get(&req.hostname) {
            Some(n) => (Some(n.row.clone()), n.credential.clone()),
            None => (None, None),
        };
        let issued = match &held {
            Some(digest) => {
                if !presented.is_some_and(|p| secrets::equal(digest, &secrets::digest(p))) {
                    return Err(ClusterError::NotYours(req.hostname.clone()));
                }
                None
            }
            None => Some(secrets::generate()),
        };
        let digest = issued.as_deref().map(secrets::digest).or(held.clone());
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
        let new_digest = issued.as_deref().map(secrets::digest);
        let created = self
            .db
            .write(move |c| {
                let created = nodes::upsert(c, &stored, now)?;
                if let Some(d) = &new_digest {
                    nodes::set_credential(c, &stored.hostname, d)?;
                }
                Ok(created)
            })
            .await?;
        let event = {
            let mut map = self.write_nodes();
            map.insert(
                row.hostname.clone(),
                NodeEntry {
                    row: row.clone(),
                    last_seen: Instant::now(),
                    credential: digest,
                },
            );
            self.up_event(&row)
        };
        self.scheduler.send(Event::Node(event)).await;
        if created {
            self.announce("registered", &row.hostname, None);
        } else if !previous.as_ref().is_some_and(|p| p.online) {
            self.announce("online", &row.hostname, None);
        }
        tracing::info!(node = %row.hostname, url = %row.url, cores = row.total_cores, created, issued = issued.is_some(), "runner registered");
        Ok(Registered {
            created,
            credential: issued,
        })
    }

    /// Checks that `presented` is the credential of `hostname`'s runner.
    pub fn check_credential(
        &self,
        hostname: &str,
        presented: Option<&str>,
    ) -> Result<(), ClusterError> {
        let map = self.read_nodes();
        let entry = map
            .get(hostname)
            .ok_or_else(|| ClusterError::UnknownNode(hostname.to_string()))?;
        let Some(digest) = &entry.credential else {
            return Err(ClusterError::NoCredential(hostname.to_string()));
        };
        match presented {
            None => Err(ClusterError::NoCredential(hostname.to_string())),
            Some(p) if secrets::equal(digest, &secrets::digest(p)) => Ok(()),
            Some(_) => Err(ClusterError::NotYours(hostname.to_string())),
        }
    }

    /// The node whose runner holds `presented`, if any.
    pub fn node_of_credential(&self, presented: &str) -> Option<String> {
        let digest = secrets::digest(presented);
        self.read_nodes()
            .values()
            .find(|n| {
                n.credential
                    .as_ref()
                    .is_some_and(|d| secrets::equal(d, &digest))
            })
            .map(|n| n.row.hostname.clone())
    }

    /// Forgets a node and its credential (an operator's decision: the runner was replaced or
    /// lost its data dir). Its tasks are handled as on a node gone offline.
    pub async fn remove(&self, hostname: &str) -> Result<(), ClusterError> {
        let host = hostname.to_string();
        if !self.db.write(move |c| nodes::delete(c, &host)).await? {
            return Err(ClusterError::UnknownNode(hostname.to_string()));
        }
        self.write_nodes().remove(hostname);
        let event = NodeEvent::Offline {
            hostname: hostname.to_string(),
            epoch: self.next_epoch(),
            reason: format!("Node {hostname} was removed by an operator."),
        };
        self.scheduler.send(Event::Node(event)).await;
        self.announce("removed", hostname, None);
        tracing::warn!(node = %hostname, "node removed by an operator");
        Ok(())
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
            "gpu_error": hb.gpu_error,
            "disk_usage": hb.disk_usage,
        });
        let news = {
            let mut map = self.write_nodes();
            let entry = map
                .get_mut(hostname)
                .ok_or_else(|| ClusterError::UnknownNode(hostname.to_string()))?;
            let was_offline = !entry.row.online;
            let before = capacity(&entry.row);
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
            let changed = capacity(&entry.row) != before;
            if was_offline {
                tracing::info!(node = %hostname, "node is back online");
                self.announce("online", hostname, None);
            } else if changed {
                tracing::info!(node = %hostname, "node capacity changed");
            }
            (was_offline || changed).then(|| self.up_event(&entry.row))
        };
        self.note_preparing(hostname, hb.preparing.as_deref().unwrap_or_default());
        let host = hostname.to_string();
        let gpus = hb.gpu_info.clone();
        self.db
            .write(move |c| nodes::record_heartbeat(c, &host, now, &metrics, &gpus))
            .await?;
        if let Some(event) = news {
            self.scheduler.send(Event::Node(event)).await;
        }
        let (kill_tasks, kill_attempts) = self.reconcile(hostname, &hb).await?;
        Ok(HeartbeatResponse {
            message: "Heartbeat received".into(),
            kill_tasks,
            kill_attempts,
        })
    }

    /// Publishes a node event (`node.<what>`).
    fn announce(&self, what: &str, hostname: &str, reason: Option<String>) {
        let mut e = ClusterEvent::new(EventTopic::Node, what);
        e.node = Some(hostname.to_string());
        e.reason = reason;
        self.scheduler.bus().publish(e);
    }

    /// Replaces what `hostname`'s tasks were waiting for with what its runner says now.
    fn note_preparing(&self, hostname: &str, now: &[TaskPreparing]) {
        let mut map = self.preparing.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (host, _)| host != hostname);
        for p in now {
            map.insert(p.task_id, (hostname.to_string(), p.progress.clone()));
        }
    }

    /// What a task waits for on `node` (its runner's last word), while that node is online.
    pub fn preparing_of(&self, task: TaskId, node: &str) -> Option<Preparing> {
        if !self.is_online(node) {
            return None;
        }
        let map = self.preparing.read().unwrap_or_else(|p| p.into_inner());
        map.get(&task)
            .filter(|(host, _)| host == node)
            .map(|(_, p)| p.clone())
    }

    /// Squares the host's view of a node's tasks with what its runner reports:
    /// - a task the runner runs in its current attempt is alive: `assigning`/`lost` become
    ///   `running` (or `paused`);
    /// - a task the runner runs that the host has ended, queued again or placed elsewhere, or
    ///   whose attempt is not the host's, is returned, to be killed (see [`stale_copy`]);
    /// - a task the host ended whose booking is held and that the runner no longer runs is
    ///   released (the runner confirms it is gone);
    /// - a task placed on the node that the runner does not know for [`ABSENT_BEATS`]
    ///   heartbeats is gone: queued again if it never started, failed if it had.
    async fn reconcile(
        &self,
        hostname: &str,
        hb: &Heartbeat,
    ) -> Result<(Vec<TaskId>, Vec<TaskAttempt>), ClusterError> {
        let listed: HashSet<TaskId> = hb.running_tasks.iter().copied().collect();
        let paused: HashSet<TaskId> = hb.paused_tasks.iter().flatten().copied().collect();
        let known: Option<HashSet<TaskId>> =
            hb.known_tasks.as_ref().map(|k| k.iter().copied().collect());
        let held: HashMap<TaskId, u32> = hb
            .attempts
            .iter()
            .flatten()
            .map(|a| (a.task_id, a.attempt))
            .collect();
        let ids = hb.running_tasks.clone();
        let host = hostname.to_string();
        let (placed, booked) = self
            .db
            .read(move |c| Ok((tasks::placements(c, &ids)?, tasks::booked_on(c, &host)?)))
            .await?;
        let mut kill = Vec::new();
        let mut kill_attempts = Vec::new();
        for p in &placed {
            let attempt = held.get(&p.id).copied();
            if let Some(why) = stale_copy(hostname, p, attempt) {
                tracing::warn!(node = %hostname, task_id = %p.id, ?attempt, current = p.attempt, why, "runner runs a copy of a task the host does not run there: asking it to kill it");
                kill.push(p.id);
                if let Some(attempt) = attempt {
                    kill_attempts.push(TaskAttempt {
                        task_id: p.id,
                        attempt,
                    });
                }
            }
        }
        let mut changes = Vec::new();
        {
            let mut absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
            for b in booked {
                if listed.contains(&b.id) {
                    absent.remove(&b.id);
                    let current = held.get(&b.id).is_none_or(|a| *a == b.attempt);
                    if current && matches!(b.status, TaskStatus::Assigning | TaskStatus::Lost) {
                        let paused = paused.contains(&b.id);
                        changes.push((b.id, b.attempt, Change::Running { paused }));
                    }
                    continue;
                }
                if b.status.is_final() {
                    absent.remove(&b.id);
                    changes.push((b.id, b.attempt, Change::Released));
                    continue;
                }
                match &known {
                    Some(k) if !k.contains(&b.id) => {
                        let n = absent.entry(b.id).or_insert(0);
                        *n += 1;
                        if *n >= ABSENT_BEATS {
                            absent.remove(&b.id);
                            tracing::warn!(node = %hostname, task_id = %b.id, status = %b.status, started = b.started, "task unknown to its runner");
                            changes.push((b.id, b.attempt, gone_from_runner(hostname, b.started)));
                        }
                    }
                    _ => {
                        absent.remove(&b.id);
                    }
                }
            }
        }
        for (id, attempt, change) in changes {
            // Only for the attempt seen here: the task may be placed again before this lands.
            let change = Change::ForAttempt {
                attempt,
                change: Box::new(change),
            };
            self.scheduler
                .send(Event::Change {
                    id,
                    change,
                    reply: None,
                })
                .await;
        }
        Ok((kill, kill_attempts))
    }

    /// Marks nodes silent for longer than the timeout offline. Runs for the host's lifetime.
    pub async fn watch_liveness(self: Arc<Self>) {
        let tick =
            (self.node_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            let silent: Vec<(String, u64)> = {
                let mut map = self.write_nodes();
                map.values_mut()
                    .filter(|n| n.row.online && n.last_seen.elapsed() > self.node_timeout)
                    .map(|n| {
                        n.row.online = false;
                        (n.row.hostname.clone(), self.next_epoch())
                    })
                    .collect()
            };
            for (host, epoch) in silent {
                tracing::warn!(node = %host, timeout = ?self.node_timeout, "node silent past the timeout: offline");
                let h = host.clone();
                if let Err(e) = self
                    .db
                    .write(move |c| nodes::set_status(c, &h, false))
                    .await
                {
                    tracing::error!(error = %e, "could not record node offline");
                }
                let reason = format!(
                    "Node {host} went offline (no heartbeat for {}).",
                    ferry_common::units::format_duration(self.node_timeout)
                );
                self.announce("offline", &host, Some(reason.clone()));
                self.scheduler
                    .send(Event::Node(NodeEvent::Offline {
                        hostname: host,
                        epoch,
                        reason,
                    }))
                    .await;
            }
        }
    }
}

/// Why the copy of task `p` that runner `hostname` runs (in `attempt`, if it says) must be
/// killed, or `None` if it is the one the host runs there. A copy of an older attempt is
/// tolerated only while the task waits in `assigning` on this node: the dispatch of the current
/// attempt is on its way, and the runner takes its copy over as that attempt.
fn stale_copy(hostname: &str, p: &tasks::Placed, attempt: Option<u32>) -> Option<&'static str> {
    if p.status == TaskStatus::Stopped && p.booked && p.node.as_deref() == Some(hostname) {
        // A VPS being stopped: the stop (snapshot first) is on its way; a kill would lose it.
        return None;
    }
    if p.status.is_final() {
        return Some("the task has ended");
    }
    let here = p.node.as_deref() == Some(hostname)
        && matches!(
            p.status,
            TaskStatus::Assigning | TaskStatus::Running | TaskStatus::Paused | TaskStatus::Lost
        );
    if !here {
        return Some("the task is queued again or placed on another node");
    }
    match attempt {
        Some(a) if a > p.attempt => Some("the host never made this attempt"),
        Some(a) if a < p.attempt && p.status != TaskStatus::Assigning => {
            Some("an older attempt of the task")
        }
        _ => None,
    }
}

/// What becomes of a task its runner no longer knows: queued again if it never started there,
/// failed if it had (its container and state are gone).
fn gone_from_runner(hostname: &str, started: bool) -> Change {
    if started {
        Change::Fail {
            reason: format!(
                "Runner {hostname} no longer has this task: its container and state are gone."
            ),
            exit_code: Some(-1),
        }
    } else {
        Change::Requeue {
            reason: format!("Runner {hostname} never received this task; queued again."),
        }
    }
}

/// A registration the host can use: a node name that is not a target with a NUMA suffix, at
/// least one core, an http(s) address.
fn validate_registration(req: &RegisterRequest) -> Result<(), ClusterError> {
    if ferry_common::target::Target::parse(&req.hostname)
        .map(|t| t.numa_node.is_some())
        .unwrap_or(true)
    {
        return Err(ClusterError::Invalid {
            field: "hostname",
            message: format!("{:?} is not a valid node name", req.hostname),
        });
    }
    if req.total_cores == 0 {
        return Err(ClusterError::Invalid {
            field: "total_cores",
            message: "must be at least 1".into(),
        });
    }
    if !(req.url.starts_with("http://") || req.url.starts_with("https://")) {
        return Err(ClusterError::Invalid {
            field: "url",
            message: format!("{:?} is not an http(s) URL", req.url),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::model::tests::sample;
    use tokio::sync::mpsc;

    struct Harness {
        _dir: tempfile::TempDir,
        db: Db,
        cluster: Arc<Cluster>,
        events: mpsc::Receiver<Event>,
    }

    async fn harness() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("ferry.db")).unwrap();
        let (handle, events) = crate::scheduler::channel().into_parts();
        let cluster = Cluster::load(db.clone(), handle, Duration::from_secs(30))
            .await
            .unwrap();
        let mut h = Harness {
            _dir: dir,
            db,
            cluster,
            events,
        };
        h.cluster
            .register(
                RegisterRequest {
                    hostname: "n1".into(),
                    url: "http://127.0.0.1:9".into(),
                    total_cores: 4,
                    total_ram_bytes: Some(1 << 33),
                    numa_topology: None,
                    gpu_info: vec![],
                    runner_version: None,
                    heartbeat_interval_ms: None,
                },
                None,
            )
            .await
            .unwrap();
        assert!(matches!(
            h.drain().as_slice(),
            [Event::Node(NodeEvent::Up { .. })]
        ));
        h
    }

    impl Harness {
        /// Stores a task in `status` on n1 (booked when that status holds resources).
        async fn task(&self, id: u64, status: TaskStatus, started: bool) {
            self.placed(id, status, started, "n1", 0).await;
        }

        /// Stores a task in `status`, placed on `node` in `attempt`.
        async fn placed(
            &self,
            id: u64,
            status: TaskStatus,
            started: bool,
            node: &str,
            attempt: u32,
        ) {
            let mut t = sample(id);
            t.status = status;
            t.attempt = attempt;
            t.assigned_node = Some(node.into());
            t.booked = status.holds_resources() || status.is_final();
            t.started_at = started.then_some(5);
            self.db.write(move |c| tasks::insert(c, &t)).await.unwrap();
        }

        fn drain(&mut self) -> Vec<Event> {
            let mut out = Vec::new();
            while let Ok(e) = self.events.try_recv() {
                out.push(e);
            }
            out
        }

        fn changes(&mut self) -> Vec<(TaskId, Change)> {
            self.drain()
                .into_iter()
                .filter_map(|e| match e {
                    Event::Change {
                        id,
                        change: Change::ForAttempt { change, .. },
                        ..
                    } => Some((id, *change)),
                    Event::Change { id, change, .. } => Some((id, change)),
                    _ => None,
                })
                .collect()
        }

        async fn beat(&self, hb: Heartbeat) -> HeartbeatResponse {
            self.cluster.heartbeat("n1", hb).await.unwrap()
        }
    }

    fn running(ids: &[u64], known: &[u64]) -> Heartbeat {
        Heartbeat {
            running_tasks: ids.iter().map(|i| TaskId(*i)).collect(),
            known_tasks: Some(known.iter().map(|i| TaskId(*i)).collect()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_listed_task_is_alive_and_an_ended_one_is_killed() {
        let mut h = harness().await;
        h.task(1, TaskStatus::Assigning, false).await;
        h.task(2, TaskStatus::Lost, true).await;
        h.task(3, TaskStatus::Killed, true).await;
        let mut hb = running(&[1, 2, 3], &[1, 2, 3]);
        hb.paused_tasks = Some(vec![TaskId(2)]);
        let reply = h.beat(hb).await;
        assert_eq!(reply.kill_tasks, vec![TaskId(3)]);
        assert_eq!(
            h.changes(),
            vec![
                (TaskId(1), Change::Running { paused: false }),
                (TaskId(2), Change::Running { paused: true }),
            ]
        );
    }

    fn with_attempts(mut hb: Heartbeat, attempts: &[(u64, u32)]) -> Heartbeat {
        hb.attempts = Some(
            attempts
                .iter()
                .map(|(id, attempt)| TaskAttempt {
                    task_id: TaskId(*id),
                    attempt: *attempt,
                })
                .collect(),
        );
        hb
    }

    #[tokio::test]
    async fn a_copy_of_a_task_queued_again_or_placed_elsewhere_is_killed() {
        let mut h = harness().await;
        // Placed on n1 first, then again on n2: n1's late copy must go.
        h.placed(1, TaskStatus::Running, true, "n2", 2).await;
        // Queued again after n1 never showed it (it still names n1).
        h.placed(2, TaskStatus::Pending, false, "n1", 1).await;
        let hb = with_attempts(running(&[1, 2], &[1, 2]), &[(1, 1), (2, 1)]);
        let reply = h.beat(hb).await;
        assert_eq!(reply.kill_tasks, vec![TaskId(1), TaskId(2)]);
        assert_eq!(
            reply.kill_attempts,
            vec![
                TaskAttempt {
                    task_id: TaskId(1),
                    attempt: 1
                },
                TaskAttempt {
                    task_id: TaskId(2),
                    attempt: 1
                }
            ]
        );
        assert!(h.changes().is_empty(), "the host's own copy is untouched");
    }

    #[tokio::test]
    async fn attempts_decide_which_copy_on_the_same_node_is_the_task() {
        let mut h = harness().await;
        // Placed again on n1 (attempt 2 on its way): the runner's attempt-1 copy will be
        // taken over as attempt 2, so it is neither killed nor taken for attempt 2 running.
        h.placed(1, TaskStatus::Assigning, false, "n1", 2).await;
        // Running as attempt 2: an attempt-1 copy is not it.
        h.placed(2, TaskStatus::Running, true, "n1", 2).await;
        // An attempt the host never made.
        h.placed(3, TaskStatus::Running, true, "n1", 2).await;
        // The current attempt.
        h.placed(4, TaskStatus::Assigning, false, "n1", 2).await;
        let hb = with_attempts(
            running(&[1, 2, 3, 4], &[1, 2, 3, 4]),
            &[(1, 1), (2, 1), (3, 3), (4, 2)],
        );
        let reply = h.beat(hb).await;
        assert_eq!(reply.kill_tasks, vec![TaskId(2), TaskId(3)]);
        assert_eq!(
            h.changes(),
            vec![(TaskId(4), Change::Running { paused: false })]
        );
    }

    #[tokio::test]
    async fn heartbeat_changes_are_fenced_by_the_attempt_seen() {
        let mut h = harness().await;
        h.placed(1, TaskStatus::Assigning, false, "n1", 4).await;
        h.beat(running(&[1], &[1])).await;
        match h.drain().as_slice() {
            [Event::Change {
                change: Change::ForAttempt { attempt: 4, .. },
                ..
            }] => {}
            other => panic!(
                "expected one change fenced by attempt 4, got {}",
                other.len()
            ),
        }
    }

    #[tokio::test]
    async fn what_a_task_waits_for_is_the_runners_last_word_and_only_its_nodes() {
        let h = harness().await;
        let downloading = ferry_common::api::Preparing {
            stage: ferry_common::api::PrepareStage::Downloading,
            environment: Some("torch".into()),
            bytes_done: 10,
            bytes_total: Some(100),
        };
        let mut hb = running(&[], &[4]);
        hb.preparing = Some(vec![TaskPreparing {
            task_id: TaskId(4),
            progress: downloading.clone(),
        }]);
        h.beat(hb).await;
        assert_eq!(h.cluster.preparing_of(TaskId(4), "n1"), Some(downloading));
        assert_eq!(h.cluster.preparing_of(TaskId(4), "n2"), None, "not n2's");
        // The next beat no longer lists it: nothing to wait for any more.
        h.beat(running(&[4], &[4])).await;
        assert_eq!(h.cluster.preparing_of(TaskId(4), "n1"), None);
    }

    #[tokio::test]
    async fn an_ended_task_the_runner_no_longer_runs_is_released() {
        let mut h = harness().await;
        h.task(3, TaskStatus::Killed, true).await;
        let reply = h.beat(running(&[], &[])).await;
        assert!(reply.kill_tasks.is_empty());
        assert_eq!(h.changes(), vec![(TaskId(3), Change::Released)]);
    }

    #[tokio::test]
    async fn a_task_unknown_for_three_beats_is_requeued_or_failed() {
        let mut h = harness().await;
        h.task(1, TaskStatus::Assigning, false).await;
        h.task(2, TaskStatus::Running, true).await;
        for _ in 1..ABSENT_BEATS {
            h.beat(running(&[], &[])).await;
            assert!(h.changes().is_empty(), "not before {ABSENT_BEATS} beats");
        }
        h.beat(running(&[], &[])).await;
        let changes = h.changes();
        assert!(
            matches!(
                &changes[..],
                [
                    (TaskId(1), Change::Requeue { .. }),
                    (TaskId(2), Change::Fail { .. })
                ]
            ),
            "{changes:?}"
        );
    }

    #[tokio::test]
    async fn a_task_the_runner_still_prepares_is_not_given_up() {
        let mut h = harness().await;
        h.task(1, TaskStatus::Assigning, false).await;
        for _ in 0..ABSENT_BEATS + 1 {
            h.beat(running(&[], &[1])).await;
        }
        assert!(h.changes().is_empty());
    }

    #[tokio::test]
    async fn a_capacity_change_in_a_heartbeat_reaches_the_scheduler() {
        let mut h = harness().await;
        h.beat(Heartbeat::default()).await;
        assert!(h.drain().is_empty(), "nothing changed");
        let hb = Heartbeat {
            gpu_info: vec![serde_json::json!({"gpu_id": 0})],
            ..Default::default()
        };
        h.beat(hb).await;
        match h.drain().as_slice() {
            [Event::Node(NodeEvent::Up { capacity, .. })] => assert_eq!(capacity.gpu_count, 1),
            other => panic!("expected one node event, got {}", other.len()),
        }
    }
}
