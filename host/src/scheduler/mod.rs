//! The scheduler: one tokio task that alone owns the resource ledger and the queue.
//!
//! Everything that can change what is booked reaches it as an [`Event`] on one channel —
//! submissions, task changes (runner reports, kills, approvals), node arrivals, departures and
//! capacity changes — so the order of events is the order of decisions and two concurrent
//! submits can never oversubscribe a node. It drains whatever events are waiting, writes their
//! effects in one SQLite transaction, runs one placement pass ([`placement::plan`]), commits
//! the placements, and only then dispatches them ([`dispatch`]: in background tasks, so a slow
//! runner never stalls the loop). Kills are dispatched the same way. It publishes a read-only
//! [`View`] for the API after each pass.
//!
//! It knows nodes only from [`NodeEvent`]s (the cluster registry sends them; the scheduler
//! never calls back into it), and runners only through [`RunnerApi`].

mod dispatch;
pub mod placement;
#[cfg(test)]
mod tests;

use crate::events::EventBus;
use crate::runner_client::{Control, RunnerApi};
use crate::store::tasks::{self, Applied, Transition};
use crate::store::{Db, StoreError};
use crate::tasks::model::{Change, Task};
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

type SubmitReply = oneshot::Sender<Result<Vec<Placement>, PlaceError>>;
type ChangeReply = oneshot::Sender<Result<Applied, StoreError>>;

pub enum Event {
    Submit {
        tasks: Vec<Task>,
        reply: SubmitReply,
        /// Refuse (`NoRoom`) unless every task starts in this pass: for a caller who will
        /// not wait in the queue.
        now: bool,
    },
    Change {
        id: TaskId,
        change: Change,
        reply: Option<ChangeReply>,
    },
    Node(NodeEvent),
}

/// What the scheduler learns about nodes. `epoch` orders the events of the registry, so a
/// late "offline" never undoes a newer "up" that overtook it on the way.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// Registered, back online, or its capacity (cores, memory, GPUs) changed.
    Up {
        capacity: NodeCapacity,
        url: String,
        epoch: u64,
    },
    /// Silent past the timeout.
    Offline {
        hostname: String,
        epoch: u64,
        reason: String,
    },
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

impl Placement {
    pub fn id(&self) -> TaskId {
        match self {
            Placement::Placed { id, .. }
            | Placement::Queued { id, .. }
            | Placement::AwaitingApproval { id } => *id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("targets: node '{0}' is not registered")]
    UnknownNode(String),
    #[error("{0}")]
    NeverFits(String),
    #[error("no node is registered yet: start a ferry-runner first")]
    NoNodes,
    /// Nothing fits now and the caller would not wait: what is short where.
    #[error("{0}")]
    NoRoom(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the scheduler is not running")]
    Stopped,
}

/// A node as the scheduler last heard of it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub url: String,
    pub online: bool,
}

/// What the API may read about the scheduler's state without asking it.
#[derive(Debug, Default)]
pub struct View {
    pub usage: BTreeMap<String, Usage>,
    /// 1-based queue positions of `pending` tasks.
    pub queue: HashMap<TaskId, u64>,
    pub nodes: BTreeMap<String, NodeView>,
    /// What each node offers, to say why a queued task waits.
    pub capacities: BTreeMap<String, NodeCapacity>,
    /// Placement passes run so far (a burst of events makes one).
    pub passes: u64,
}

#[derive(Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Event>,
    view: watch::Receiver<Arc<View>>,
    /// Where the scheduler (and the cluster registry) publish what changed.
    bus: Arc<EventBus>,
}

impl SchedulerHandle {
    pub async fn submit(&self, tasks: Vec<Task>) -> Result<Vec<Placement>, PlaceError> {
        self.submit_as(tasks, false).await
    }

    /// Submits tasks that must start now or not at all ([`PlaceError::NoRoom`]).
    pub async fn submit_now(&self, tasks: Vec<Task>) -> Result<Vec<Placement>, PlaceError> {
        self.submit_as(tasks, true).await
    }

    async fn submit_as(&self, tasks: Vec<Task>, now: bool) -> Result<Vec<Placement>, PlaceError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Submit { tasks, reply, now })
            .await
            .map_err(|_| PlaceError::Stopped)?;
        rx.await.map_err(|_| PlaceError::Stopped)?
    }

    /// Applies `change` through the scheduler (which books, releases and dispatches what it
    /// implies) and says how it went.
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

    pub fn bus(&self) -> &Arc<EventBus> {
        &self.bus
    }

    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// The request a task makes of the ledger.
pub fn request_of(t: &Task) -> Request {
    let r = &t.definition.resources;
    Request {
        id: t.id,
        cores: r.required_cores,
        memory: r.required_memory_bytes,
        gpus: r.required_gpus.clone(),
        target: t.target_node.clone(),
        numa: r.target_numa_node_id,
        priority: t.priority,
    }
}

pub fn execute_request(t: &Task) -> ExecuteRequest {
    ExecuteRequest {
        task_id: t.id,
        definition: t.definition.clone(),
        reserved_ip: None,
        owner: t.owner_username.clone(),
        attempt: Some(t.attempt),
        run: Some(t.run),
    }
}

struct NodeState {
    capacity: NodeCapacity,
    url: String,
    epoch: u64,
}

struct Scheduler {
    db: Db,
    runner: Arc<dyn RunnerApi>,
    events: mpsc::Sender<Event>,
    nodes: BTreeMap<String, NodeState>,
    usage: BTreeMap<String, Usage>,
    holding: HashMap<TaskId, (String, Request)>,
    /// Queued tasks, kept in queue order.
    queue: Vec<Task>,
    view: watch::Sender<Arc<View>>,
    bus: Arc<EventBus>,
    passes: u64,
    /// The one dispatch loop of each task being sent to a runner; replaced (the old one
    /// aborted) when the task is placed again, dropped when it leaves `assigning`.
    dispatching: HashMap<TaskId, tokio::task::AbortHandle>,
    /// The one loop delivering each kill, dropped when the booking is released.
    killing: HashMap<TaskId, tokio::task::AbortHandle>,
}

/// The channel of a scheduler not started yet: events sent now wait for [`start`].
pub struct Channel {
    pub handle: SchedulerHandle,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    view: watch::Sender<Arc<View>>,
    bus: Arc<EventBus>,
}

impl Channel {
    /// The handle and the receiving end, for tests that read what others send the scheduler.
    #[cfg(test)]
    pub(crate) fn into_parts(self) -> (SchedulerHandle, mpsc::Receiver<Event>) {
        (self.handle, self.rx)
    }
}

pub fn channel() -> Channel {
    let (tx, rx) = mpsc::channel(4096);
    let (view, view_rx) = watch::channel(Arc::new(View::default()));
    let bus = Arc::new(EventBus::default());
    Channel {
        handle: SchedulerHandle {
            tx: tx.clone(),
            view: view_rx,
            bus: bus.clone(),
        },
        tx,
        rx,
        view,
        bus,
    }
}

/// Builds the scheduler from the database (ledger and queue are rebuilt from the task table)
/// and the nodes known at start, starts its loop, and resumes the dispatches and kills that
/// were under way when the host stopped.
pub async fn start(
    db: Db,
    runner: Arc<dyn RunnerApi>,
    nodes: Vec<NodeEvent>,
    channel: Channel,
) -> Result<(), StoreError> {
    let Channel {
        tx, rx, view, bus, ..
    } = channel;
    let active = db.read(tasks::active).await?;
    let mut s = Scheduler {
        db,
        runner,
        events: tx,
        nodes: BTreeMap::new(),
        usage: BTreeMap::new(),
        holding: HashMap::new(),
        queue: Vec::new(),
        view,
        bus,
        passes: 0,
        dispatching: HashMap::new(),
        killing: HashMap::new(),
    };
    for n in nodes {
        s.node_event(n, &mut Vec::new());
    }
    let mut redispatch = Vec::new();
    let mut rekill = Vec::new();
    for t in active {
        if t.status == TaskStatus::Pending {
            s.queue.push(t);
        } else if let (true, Some(node)) = (t.booked, t.assigned_node.clone()) {
            let r = request_of(&t);
            s.usage.entry(node.clone()).or_default().book(&r);
            s.holding.insert(t.id, (node.clone(), r));
            if t.status == TaskStatus::Assigning {
                redispatch.push((t, node));
            } else if t.status.is_final() {
                rekill.push((t.id, node, ending_of(&t)));
            }
        }
    }
    s.sort_queue();
    tracing::info!(
        queued = s.queue.len(),
        holding = s.holding.len(),
        "scheduler state rebuilt"
    );
    s.publish();
    // The runner accepts a task id it already has without starting it twice, so re-sending is
    // safe whichever side of the dispatch the host stopped on.
    for (t, node) in redispatch {
        s.dispatch(&t, node);
    }
    for (id, node, how) in rekill {
        s.deliver_kill(id, node, how);
    }
    // Queued tasks may fit right away (the host may have stopped with a queue).
    s.place().await;
    tokio::spawn(s.run(rx));
    Ok(())
}

impl Scheduler {
    async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        loop {
            // A retry waiting out its backoff is placed when it is due, event or not.
            let first = match self.next_retry_due() {
                None => rx.recv().await,
                Some(at) => {
                    // One millisecond late, so the task is past its time when placement looks.
                    let wait =
                        Duration::from_millis((at + 1).saturating_sub(now_ms()).max(1) as u64);
                    match tokio::time::timeout(wait, rx.recv()).await {
                        Ok(e) => e,
                        Err(_) => {
                            self.place().await;
                            continue;
                        }
                    }
                }
            };
            let Some(first) = first else { break };
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

    /// When the earliest queued retry still in its backoff may start (those past it wait
    /// for room like any queued task).
    fn next_retry_due(&self) -> Option<i64> {
        let now = now_ms();
        self.queue
            .iter()
            .filter_map(|t| t.retry_at)
            .filter(|at| *at > now)
            .min()
    }

    fn sort_queue(&mut self) {
        self.queue
            .sort_by(|a, b| placement::queue_order(&request_of(a), &request_of(b)));
    }

    /// Refuses what can never run; `Ok` for what may (now or later).
    fn check_submission(&self, t: &Task) -> Result<(), PlaceError> {
        let r = request_of(t);
        match &t.target_node {
            Some(target) => {
                let node = self
                    .nodes
                    .get(target)
                    .ok_or_else(|| PlaceError::UnknownNode(target.clone()))?;
                match placement::never_fits_on(&r, &node.capacity) {
                    Some(why) => Err(PlaceError::NeverFits(why)),
                    None => Ok(()),
                }
            }
            None => {
                if self.nodes.is_empty() {
                    return Err(PlaceError::NoNodes);
                }
                let reasons: Vec<String> = self
                    .nodes
                    .values()
                    .filter_map(|n| placement::never_fits_on(&r, &n.capacity))
                    .collect();
                if reasons.len() == self.nodes.len() {
                    Err(PlaceError::NeverFits(format!(
                        "no registered node can ever run this task: {}",
                        reasons.join("; ")
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Whether `tasks` would all start in this pass, after the queue and the tasks already
    /// admitted to start now (`admitted`, which they join); else what is short.
    fn room_now(&self, tasks: &[Task], admitted: &mut Vec<Request>) -> Result<(), PlaceError> {
        let new: Vec<Request> = tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Pending)
            .map(request_of)
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut queue: Vec<Request> = self.queue.iter().map(request_of).collect();
        queue.extend(admitted.iter().cloned());
        queue.extend(new.iter().cloned());
        queue.sort_by(placement::queue_order);
        let capacities = self.capacities();
        let plan = placement::plan(&capacities, &self.usage, &queue);
        let placed = |r: &Request| plan.iter().any(|(id, _)| *id == r.id);
        if let Some(r) = new.iter().find(|r| !placed(r)) {
            let empty = Usage::default();
            let reasons: Vec<String> = capacities
                .values()
                .filter(|n| r.target.as_ref().is_none_or(|t| *t == n.hostname))
                .map(|n| {
                    placement::why_not_now(r, n, self.usage.get(&n.hostname).unwrap_or(&empty))
                })
                .collect();
            return Err(PlaceError::NoRoom(format!(
                "No suitable node available now: {}",
                reasons.join("; ")
            )));
        }
        admitted.extend(new);
        Ok(())
    }

    /// Takes in a node event; returns whether capacity may have changed. Tasks on a node that
    /// went offline get a `Lost` change queued in `changes`.
    fn node_event(&mut self, event: NodeEvent, changes: &mut Vec<PendingChange>) -> bool {
        match event {
            NodeEvent::Up {
                capacity,
                url,
                epoch,
            } => {
                if self
                    .nodes
                    .get(&capacity.hostname)
                    .is_some_and(|n| n.epoch > epoch)
                {
                    return false;
                }
                self.nodes.insert(
                    capacity.hostname.clone(),
                    NodeState {
                        capacity,
                        url,
                        epoch,
                    },
                );
                true
            }
            NodeEvent::Offline {
                hostname,
                epoch,
                reason,
            } => {
                let Some(n) = self.nodes.get_mut(&hostname) else {
                    return false;
                };
                if n.epoch > epoch {
                    return false;
                }
                n.epoch = epoch;
                n.capacity.online = false;
                // Its tasks may still be running there: they keep their resources, but nobody
                // can vouch for them until the node is heard from again. Tasks already ended
                // by the host are released: their node is declared lost.
                for (id, (node, _)) in &self.holding {
                    if *node == hostname {
                        let change = Change::Lost {
                            reason: reason.clone(),
                        };
                        changes.push((*id, change, None));
                    }
                }
                true
            }
        }
    }

    async fn handle(&mut self, batch: Vec<Event>) {
        let mut submits: Vec<(Vec<Task>, SubmitReply)> = Vec::new();
        let mut changes = Vec::new();
        let mut nodes_changed = false;
        // Tasks admitted in this batch that must start now: later ones are checked with them.
        let mut starting_now: Vec<Request> = Vec::new();
        for event in batch {
            match event {
                Event::Node(e) => nodes_changed |= self.node_event(e, &mut changes),
                Event::Submit { tasks, reply, now } => {
                    let checked = tasks
                        .iter()
                        .try_for_each(|t| self.check_submission(t))
                        .and_then(|()| match now {
                            true => self.room_now(&tasks, &mut starting_now),
                            false => Ok(()),
                        });
                    match checked {
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
                    let change = Change::Fail {
                        reason: format!("Can no longer run: {why}"),
                        exit_code: None,
                    };
                    changes.push((t.id, change, None));
                }
            }
        }
        if !submits.is_empty() || !changes.is_empty() {
            self.write_batch(&mut submits, changes).await;
        }
        self.place().await;

        let view = self.view.borrow().clone();
        for (tasks, reply) in submits {
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
    async fn write_batch(
        &mut self,
        submits: &mut Vec<(Vec<Task>, SubmitReply)>,
        changes: Vec<PendingChange>,
    ) {
        let new_rows: Vec<Vec<Task>> = submits.iter().map(|(t, _)| t.clone()).collect();
        let change_list: Vec<(TaskId, Change)> =
            changes.iter().map(|(id, c, _)| (*id, c.clone())).collect();
        let now = now_ms();
        let result = self
            .db
            .write(move |conn| {
                let inserted: Vec<Result<(), StoreError>> = new_rows
                    .iter()
                    .map(|group| tasks::insert_batch(conn, group))
                    .collect();
                let applied: Vec<Result<Applied, StoreError>> = change_list
                    .iter()
                    .map(|(id, change)| tasks::apply(conn, *id, change, now))
                    .collect();
                Ok((inserted, applied))
            })
            .await;

        let (inserted, applied) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "scheduler batch write failed");
                for (_, reply) in submits.drain(..) {
                    let _ = reply.send(Err(PlaceError::Store(e.shared_copy())));
                }
                for (_, _, reply) in changes {
                    if let Some(r) = reply {
                        let _ = r.send(Err(e.shared_copy()));
                    }
                }
                return;
            }
        };

        let mut kept = Vec::new();
        for ((rows, reply), outcome) in submits.drain(..).zip(inserted) {
            match outcome {
                Ok(()) => {
                    for t in &rows {
                        for e in crate::events::tasks::submitted(t) {
                            self.bus.publish(e);
                        }
                    }
                    self.queue.extend(
                        rows.iter()
                            .filter(|t| t.status == TaskStatus::Pending)
                            .cloned(),
                    );
                    kept.push((rows, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(PlaceError::Store(e)));
                }
            }
        }
        *submits = kept;
        self.sort_queue();

        for ((_, change, reply), outcome) in changes.into_iter().zip(applied) {
            if let Ok(Applied::Changed(tr)) = &outcome {
                self.mirror(tr, &change);
            }
            if let Some(r) = reply {
                let _ = r.send(outcome);
            }
        }
    }

    /// Keeps the ledger, the queue and the background loops in step with a change written.
    fn mirror(&mut self, tr: &Transition, change: &Change) {
        for e in crate::events::tasks::changed(tr, change) {
            self.bus.publish(e);
        }
        let (before, after) = (&tr.before, &tr.after);
        let id = after.id;
        if before.status == TaskStatus::Assigning && after.status != TaskStatus::Assigning {
            if let Some(h) = self.dispatching.remove(&id) {
                h.abort();
            }
        }
        if before.booked && !after.booked {
            if let Some((node, r)) = self.holding.remove(&id) {
                if let Some(u) = self.usage.get_mut(&node) {
                    u.release(&r);
                }
            }
            if let Some(h) = self.killing.remove(&id) {
                h.abort();
            }
        }
        if before.status == TaskStatus::Pending && after.status != TaskStatus::Pending {
            self.queue.retain(|t| t.id != id);
        }
        if after.status == TaskStatus::Pending && before.status != TaskStatus::Pending {
            self.queue.push(after.clone());
            self.sort_queue();
        }
        if let (Change::Kill { .. } | Change::Stop { .. }, true, Some(node)) =
            (change, after.booked, after.assigned_node.clone())
        {
            self.deliver_kill(id, node, ending_of(after));
        }
        tracing::info!(task_id = %id, from = %before.status, to = %after.status,
            change = change.name(), booked = after.booked, "task changed");
    }

    /// What each node offers, as placement reads it.
    fn capacities(&self) -> BTreeMap<String, NodeCapacity> {
        self.nodes
            .iter()
            .map(|(k, n)| (k.clone(), n.capacity.clone()))
            .collect()
    }

    /// One placement pass: commit what starts, then dispatch it.
    async fn place(&mut self) {
        self.passes += 1;
        let now = now_ms();
        // Retries still in their backoff wait; they keep their place in the queue order.
        let queue: Vec<Request> = self
            .queue
            .iter()
            .filter(|t| t.retry_at.is_none_or(|at| at <= now))
            .map(request_of)
            .collect();
        let capacities = self.capacities();
        let plan = placement::plan(&capacities, &self.usage, &queue);
        if plan.is_empty() {
            self.publish();
            return;
        }
        let writes = plan.clone();
        let now = now_ms();
        let result = self
            .db
            .write(move |conn| {
                writes
                    .iter()
                    .map(|(id, node)| {
                        tasks::apply(conn, *id, &Change::Place { node: node.clone() }, now)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        match result {
            Ok(applied) => {
                for ((id, node), a) in plan.into_iter().zip(applied) {
                    let Applied::Changed(tr) = a else {
                        tracing::warn!(task_id = %id, outcome = ?a, "placement not applied");
                        self.queue.retain(|t| t.id != id);
                        continue;
                    };
                    self.queue.retain(|t| t.id != id);
                    let r = request_of(&tr.after);
                    self.usage.entry(node.clone()).or_default().book(&r);
                    self.holding.insert(id, (node.clone(), r));
                    self.bus.publish(crate::events::tasks::placed(&tr.after));
                    let place = Change::Place { node: node.clone() };
                    for e in crate::events::tasks::changed(&tr, &place) {
                        self.bus.publish(e);
                    }
                    tracing::info!(task_id = %id, node = %node, "task placed");
                    self.dispatch(&tr.after, node);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not commit placements; will retry on the next event")
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let queue: HashMap<TaskId, u64> = self
            .queue
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id, i as u64 + 1))
            .collect();
        {
            let before = self.view.borrow();
            for t in &self.queue {
                let now = queue.get(&t.id).copied().unwrap_or(0);
                if before.queue.get(&t.id) != Some(&now) {
                    self.bus.publish(crate::events::tasks::queue_moved(t, now));
                }
            }
        }
        let nodes = self
            .nodes
            .iter()
            .map(|(k, n)| {
                (
                    k.clone(),
                    NodeView {
                        url: n.url.clone(),
                        online: n.capacity.online,
                    },
                )
            })
            .collect();
        self.view.send_replace(Arc::new(View {
            usage: self.usage.clone(),
            queue,
            nodes,
            capacities: self.capacities(),
            passes: self.passes,
        }));
    }

    fn dispatch(&mut self, t: &Task, node: String) {
        let handle = tokio::spawn(dispatch::deliver_task(
            self.loop_context(),
            execute_request(t),
            node,
        ));
        if let Some(old) = self.dispatching.insert(t.id, handle.abort_handle()) {
            old.abort();
        }
    }

    fn deliver_kill(&mut self, id: TaskId, node: String, how: Control) {
        let handle = tokio::spawn(dispatch::deliver_kill(self.loop_context(), id, node, how));
        if let Some(old) = self.killing.insert(id, handle.abort_handle()) {
            old.abort();
        }
    }

    fn loop_context(&self) -> dispatch::LoopContext {
        dispatch::LoopContext {
            db: self.db.clone(),
            runner: self.runner.clone(),
            view: self.view.subscribe(),
            events: self.events.clone(),
        }
    }
}

type PendingChange = (TaskId, Change, Option<ChangeReply>);

/// How the runner ends a task the host has ended: a stopped VPS is stopped (snapshot first),
/// anything else killed.
fn ending_of(t: &Task) -> Control {
    match t.status {
        TaskStatus::Stopped if t.definition.spec.as_vps().is_some() => Control::Stop,
        _ => Control::Kill,
    }
}
