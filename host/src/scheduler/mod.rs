//! The scheduler: one tokio task that alone owns the resource ledger and the queue.
//!
//! Everything that can change what is booked reaches it as an [`Event`] on one channel —
//! submissions, task state changes (runner reports, kills, pauses), node arrivals and
//! departures — so the order of events is the order of decisions and two concurrent submits
//! can never oversubscribe a node. It drains whatever events are waiting, writes their effects
//! in one SQLite transaction, runs one placement pass ([`placement::plan`]), commits the
//! placements, and only then dispatches them to runners (in background tasks, so a slow runner
//! never stalls the loop). It publishes a read-only [`View`] for the API after each pass.

pub mod placement;

use crate::cluster::Cluster;
use crate::runner_client::{RunnerClient, RunnerError};
use crate::store::tasks::{self, Applied, Change, TaskRow};
use crate::store::{Db, StoreError};
use ferry_common::runner_proto::ExecuteRequest;
use ferry_common::time::now_ms;
use ferry_common::{TaskId, TaskStatus};
use placement::{NodeCapacity, Request, Usage};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Most events handled in one pass.
const MAX_BATCH: usize = 512;

type SubmitReply = oneshot::Sender<Result<Vec<Placement>, SubmitError>>;
type ChangeReply = oneshot::Sender<Result<Applied, StoreError>>;
type PendingSubmit = (Vec<TaskRow>, SubmitReply);
type PendingChange = (TaskId, Change, Option<ChangeReply>);

pub enum Event {
    Submit {
        tasks: Vec<TaskRow>,
        reply: oneshot::Sender<Result<Vec<Placement>, SubmitError>>,
    },
    Change {
        id: TaskId,
        change: Change,
        reply: Option<oneshot::Sender<Result<Applied, StoreError>>>,
    },
    NodeUp(NodeCapacity),
    NodeOffline(String),
}

/// Where a submitted task went.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    Placed {
        id: TaskId,
        node: String,
    },
    Queued {
        id: TaskId,
        position: u64,
    },
    /// Submitted by the `user` role: waits for an operator before it is queued.
    AwaitingApproval {
        id: TaskId,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("node '{0}' is not registered")]
    UnknownNode(String),
    #[error("{0}")]
    NeverFits(String),
    #[error("no node is registered yet: start a ferry-runner first")]
    NoNodes,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the scheduler has stopped")]
    Stopped,
}

/// What the API may read about the scheduler's state without asking it.
#[derive(Debug, Default)]
pub struct View {
    pub usage: BTreeMap<String, Usage>,
    /// 1-based queue positions of `pending` tasks.
    pub queue: HashMap<TaskId, u64>,
}

#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Event>,
    view: watch::Receiver<Arc<View>>,
}

impl SchedulerHandle {
    pub async fn submit(&self, tasks: Vec<TaskRow>) -> Result<Vec<Placement>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Submit { tasks, reply })
            .await
            .map_err(|_| SubmitError::Stopped)?;
        rx.await.map_err(|_| SubmitError::Stopped)?
    }

    pub async fn change(&self, id: TaskId, change: Change) -> Result<Applied, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Change {
                id,
                change,
                reply: Some(reply),
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn send(&self, event: Event) {
        if self.tx.send(event).await.is_err() {
            tracing::error!("scheduler has stopped; event dropped");
        }
    }

    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// The request a task row makes of the ledger.
pub fn request_of(t: &TaskRow) -> Request {
    Request {
        id: t.id,
        cores: t.required_cores,
        memory: t.required_memory_bytes,
        gpus: t.required_gpus.clone(),
        target: t.target_node.clone(),
        numa: t.target_numa_node_id,
        priority: t.priority,
    }
}

pub fn execute_request(t: &TaskRow) -> ExecuteRequest {
    ExecuteRequest {
        task_id: t.id,
        command: t.command.clone(),
        arguments: t.arguments.clone(),
        env_vars: t.env_vars.clone(),
        required_cores: t.required_cores,
        required_gpus: t.required_gpus.clone(),
        required_memory_bytes: t.required_memory_bytes,
        target_numa_node_id: t.target_numa_node_id,
        container_name: t.container_name.clone(),
        registry_image: t.registry_image.clone(),
        working_dir: t.working_dir.clone(),
        reserved_ip: None,
    }
}

struct Scheduler {
    db: Db,
    cluster: Arc<Cluster>,
    runner: RunnerClient,
    events: mpsc::Sender<Event>,
    nodes: BTreeMap<String, NodeCapacity>,
    usage: BTreeMap<String, Usage>,
    holding: HashMap<TaskId, (String, Request)>,
    /// Queued tasks, kept in queue order.
    queue: Vec<TaskRow>,
    view: watch::Sender<Arc<View>>,
    /// The one dispatch loop of each task being sent to a runner; replaced (the old one
    /// aborted) when the task is placed again, dropped when it leaves `assigning`.
    dispatching: HashMap<TaskId, tokio::task::AbortHandle>,
}

/// Builds the scheduler from the database (ledger and queue are rebuilt from the task table),
/// starts its loop and re-sends tasks that were being dispatched when the host stopped.
pub async fn start(
    db: Db,
    cluster: Arc<Cluster>,
    runner: RunnerClient,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    view_tx: watch::Sender<Arc<View>>,
) -> Result<(), StoreError> {
    let active = db.read(tasks::active).await?;
    let mut s = Scheduler {
        db,
        cluster: cluster.clone(),
        runner,
        events: tx,
        nodes: cluster.capacities(),
        usage: BTreeMap::new(),
        holding: HashMap::new(),
        queue: Vec::new(),
        view: view_tx,
        dispatching: HashMap::new(),
    };
    let mut redispatch = Vec::new();
    for t in active {
        if t.status == TaskStatus::Pending {
            s.queue.push(t);
        } else if let Some(node) = t.assigned_node.clone() {
            let r = request_of(&t);
            s.usage.entry(node.clone()).or_default().book(&r);
            s.holding.insert(t.id, (node.clone(), r));
            if t.status == TaskStatus::Assigning {
                redispatch.push((t, node));
            }
        }
    }
    s.sort_queue();
    tracing::info!(
        queued = s.queue.len(),
        holding = s.holding.len(),
        "scheduler state rebuilt"
    );
    // The runner accepts a task id it already has without starting it twice, so re-sending is
    // safe whichever side of the dispatch the host stopped on.
    for (t, node) in redispatch {
        s.dispatch(t, node);
    }
    // Queued tasks may fit right away (the host may have stopped with a queue).
    s.place().await;
    tokio::spawn(s.run(rx));
    Ok(())
}

pub fn channel() -> (
    mpsc::Sender<Event>,
    mpsc::Receiver<Event>,
    watch::Sender<Arc<View>>,
    SchedulerHandle,
) {
    let (tx, rx) = mpsc::channel(4096);
    let (view_tx, view_rx) = watch::channel(Arc::new(View::default()));
    let handle = SchedulerHandle {
        tx: tx.clone(),
        view: view_rx,
    };
    (tx, rx, view_tx, handle)
}

impl Scheduler {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            self.handle(batch).await;
        }
    }

    fn sort_queue(&mut self) {
        self.queue
            .sort_by(|a, b| placement::queue_order(&request_of(a), &request_of(b)));
    }

    /// Refuses what can never run; `Ok` for what may (now or later).
    fn check_submission(&self, t: &TaskRow) -> Result<(), SubmitError> {
        let r = request_of(t);
        match &t.target_node {
            Some(target) => {
                let node = self
                    .nodes
                    .get(target)
                    .ok_or_else(|| SubmitError::UnknownNode(target.clone()))?;
                match placement::never_fits_on(&r, node) {
                    Some(why) => Err(SubmitError::NeverFits(why)),
                    None => Ok(()),
                }
            }
            None => {
                if self.nodes.is_empty() {
                    return Err(SubmitError::NoNodes);
                }
                let reasons: Vec<String> = self
                    .nodes
                    .values()
                    .filter_map(|n| placement::never_fits_on(&r, n))
                    .collect();
                if reasons.len() == self.nodes.len() {
                    Err(SubmitError::NeverFits(format!(
                        "no registered node can ever run this task: {}",
                        reasons.join("; ")
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn handle(&mut self, batch: Vec<Event>) {
        let mut submits: Vec<PendingSubmit> = Vec::new();
        let mut changes = Vec::new();
        let mut nodes_changed = false;
        for event in batch {
            match event {
                Event::NodeUp(cap) => {
                    self.nodes.insert(cap.hostname.clone(), cap);
                    nodes_changed = true;
                }
                // A heartbeat may have brought the node back between the liveness check and
                // this event: the registry's word is the latest.
                Event::NodeOffline(host) if self.cluster.is_online(&host) => {}
                Event::NodeOffline(host) => {
                    if let Some(n) = self.nodes.get_mut(&host) {
                        n.online = false;
                    }
                    // Its tasks may still be running there: they keep their resources, but
                    // nobody can vouch for them until the node is heard from again.
                    let message = format!(
                        "Node {host} went offline (no heartbeat for {}).",
                        ferry_common::units::format_duration(self.cluster.timeout())
                    );
                    for (id, (node, _)) in &self.holding {
                        if *node == host {
                            let change = Change {
                                status: Some(TaskStatus::Lost),
                                message: Some(message.clone()),
                                ..Default::default()
                            };
                            changes.push((*id, change, None));
                        }
                    }
                }
                Event::Submit { tasks, reply } => {
                    match tasks.iter().try_for_each(|t| self.check_submission(t)) {
                        Ok(()) => submits.push((tasks, reply)),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Event::Change { id, change, reply } => changes.push((id, change, reply)),
            }
        }

        if nodes_changed {
            // A node may have come back smaller: queued tasks that can no longer run anywhere
            // fail with the reason instead of waiting for ever.
            for t in &self.queue {
                if let Err(why) = self.check_submission(t) {
                    let change = Change {
                        status: Some(TaskStatus::Failed),
                        message: Some(format!("Can no longer run: {why}")),
                        ..Default::default()
                    };
                    changes.push((t.id, change, None));
                }
            }
        }
        if !submits.is_empty() || !changes.is_empty() {
            self.write_batch(&mut submits, changes).await;
        }
        self.place().await;

        for (tasks, reply) in submits {
            let view = self.view.borrow().clone();
            let placed: Vec<Placement> = tasks
                .iter()
                .map(|t| match self.holding.get(&t.id) {
                    _ if t.status == TaskStatus::PendingApproval => {
                        Placement::AwaitingApproval { id: t.id }
                    }
                    Some((node, _)) => Placement::Placed {
                        id: t.id,
                        node: node.clone(),
                    },
                    None => Placement::Queued {
                        id: t.id,
                        position: view.queue.get(&t.id).copied().unwrap_or(0),
                    },
                })
                .collect();
            let _ = reply.send(Ok(placed));
        }
    }

    /// Inserts new tasks and applies changes in one transaction, then mirrors them in memory.
    async fn write_batch(&mut self, submits: &mut Vec<PendingSubmit>, changes: Vec<PendingChange>) {
        let new_rows: Vec<Vec<TaskRow>> = submits.iter().map(|(t, _)| t.clone()).collect();
        let change_list: Vec<(TaskId, Change)> =
            changes.iter().map(|(id, c, _)| (*id, c.clone())).collect();
        let now = now_ms();
        let result = self
            .db
            .write(move |conn| {
                let mut inserted = Vec::new();
                for group in &new_rows {
                    let ok = tasks::insert_batch(conn, group);
                    inserted.push(ok.map_err(|e| e.to_string()));
                }
                let mut applied = Vec::new();
                for (id, change) in &change_list {
                    let a = tasks::apply(conn, *id, change, now);
                    let row = match &a {
                        Ok(Applied::Changed { .. }) => tasks::get(conn, *id).ok().flatten(),
                        _ => None,
                    };
                    applied.push(a.map(|a| (a, row)).map_err(|e| e.to_string()));
                }
                Ok((inserted, applied))
            })
            .await;

        let (inserted, applied) = match result {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "scheduler batch write failed");
                for (_, reply) in submits.drain(..) {
                    let _ = reply.send(Err(SubmitError::Store(StoreError::Corrupt(msg.clone()))));
                }
                for (_, _, reply) in changes {
                    if let Some(r) = reply {
                        let _ = r.send(Err(StoreError::Corrupt(msg.clone())));
                    }
                }
                return;
            }
        };

        let mut kept = Vec::new();
        for ((rows, reply), outcome) in submits.drain(..).zip(inserted) {
            match outcome {
                Ok(()) => {
                    self.queue.extend(
                        rows.iter()
                            .filter(|t| t.status == TaskStatus::Pending)
                            .cloned(),
                    );
                    kept.push((rows, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(SubmitError::Store(StoreError::Corrupt(e))));
                }
            }
        }
        *submits = kept;
        self.sort_queue();

        for ((id, _, reply), outcome) in changes.into_iter().zip(applied) {
            let outcome = match outcome {
                Ok((applied, row)) => {
                    if let Applied::Changed { from, to, .. } = &applied {
                        self.mirror_change(id, *from, *to, row);
                    }
                    Ok(applied)
                }
                Err(e) => Err(StoreError::Corrupt(e)),
            };
            if let Some(r) = reply {
                let _ = r.send(outcome);
            }
        }
    }

    /// Keeps the ledger and queue in step with a status change already written.
    fn mirror_change(
        &mut self,
        id: TaskId,
        from: TaskStatus,
        to: TaskStatus,
        row: Option<TaskRow>,
    ) {
        if from == TaskStatus::Assigning {
            if let Some(h) = self.dispatching.remove(&id) {
                h.abort();
            }
        }
        if from.holds_resources() && !to.holds_resources() {
            if let Some((node, r)) = self.holding.remove(&id) {
                if let Some(u) = self.usage.get_mut(&node) {
                    u.release(&r);
                }
            }
        }
        if from == TaskStatus::Pending && to != TaskStatus::Pending {
            self.queue.retain(|t| t.id != id);
        }
        if to == TaskStatus::Pending && from != TaskStatus::Pending {
            if let Some(row) = row {
                self.queue.push(row);
                self.sort_queue();
            }
        }
        tracing::info!(task_id = %id, %from, %to, "task state changed");
    }

    /// One placement pass: commit what starts, then dispatch it.
    async fn place(&mut self) {
        let queue: Vec<Request> = self.queue.iter().map(request_of).collect();
        let plan = placement::plan(&self.nodes, &self.usage, &queue);
        if plan.is_empty() {
            self.publish();
            return;
        }
        let writes = plan.clone();
        let now = now_ms();
        let result = self
            .db
            .write(move |conn| {
                let mut out = Vec::new();
                for (id, node) in &writes {
                    let change = Change {
                        status: Some(TaskStatus::Assigning),
                        assigned_node: Some(node.clone()),
                        ..Default::default()
                    };
                    out.push(tasks::apply(conn, *id, &change, now)?);
                }
                Ok(out)
            })
            .await;
        match result {
            Ok(applied) => {
                for ((id, node), a) in plan.into_iter().zip(applied) {
                    let Some(pos) = self.queue.iter().position(|t| t.id == id) else {
                        continue;
                    };
                    let mut row = self.queue.remove(pos);
                    if !matches!(a, Applied::Changed { .. }) {
                        tracing::warn!(task_id = %id, outcome = ?a, "placement not applied");
                        continue;
                    }
                    row.status = TaskStatus::Assigning;
                    row.assigned_node = Some(node.clone());
                    let r = request_of(&row);
                    self.usage.entry(node.clone()).or_default().book(&r);
                    self.holding.insert(id, (node.clone(), r));
                    tracing::info!(task_id = %id, node = %node, "task placed");
                    self.dispatch(row, node);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not commit placements; will retry on the next event")
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let queue = self
            .queue
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id, i as u64 + 1))
            .collect();
        self.view.send_replace(Arc::new(View {
            usage: self.usage.clone(),
            queue,
        }));
    }

    /// Sends a placed task to its runner in the background. An unreachable runner is retried
    /// for as long as the task is still `assigning` (the node going offline makes it `lost`,
    /// and the node's heartbeats then settle it); a runner that refuses fails the task.
    fn dispatch(&mut self, row: TaskRow, node: String) {
        let runner = self.runner.clone();
        let cluster = self.cluster.clone();
        let events = self.events.clone();
        let db = self.db.clone();
        let task_id = row.id;
        let handle = tokio::spawn(async move {
            let req = execute_request(&row);
            let id = row.id;
            let mut delay = Duration::from_millis(250);
            let failure = loop {
                let Some(url) = cluster.url_of(&node) else {
                    break format!("node '{node}' is no longer registered");
                };
                match runner.execute(&url, &req).await {
                    Ok(_) => {
                        tracing::debug!(task_id = %id, node = %node, "dispatched");
                        return;
                    }
                    // A 4xx is the runner's considered answer; a 5xx may pass (disk full a moment).
                    Err(RunnerError::Refused { status, detail }) if status < 500 => {
                        break format!("runner '{node}' refused the task ({status}): {detail}");
                    }
                    Err(e) => {
                        tracing::warn!(task_id = %id, node = %node, error = %e, retry_in = ?delay, "dispatch failed");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                // Go on only while the task still waits for this very node.
                let placed = db.read(move |c| tasks::get(c, id)).await;
                match placed {
                    Ok(Some(t))
                        if t.status == TaskStatus::Assigning
                            && t.assigned_node.as_deref() == Some(node.as_str()) => {}
                    Ok(_) => return,
                    Err(e) => tracing::warn!(task_id = %id, error = %e, "cannot check task status"),
                }
            };
            let change = Change {
                status: Some(TaskStatus::Failed),
                message: Some(failure),
                exit_code: Some(-1),
                ..Default::default()
            };
            let _ = events
                .send(Event::Change {
                    id,
                    change,
                    reply: None,
                })
                .await;
        });
        if let Some(old) = self.dispatching.insert(task_id, handle.abort_handle()) {
            old.abort();
        }
    }
}
