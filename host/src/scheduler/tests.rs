//! The scheduler loop against a real SQLite file and a recording fake runner.

use super::*;
use crate::runner_client::{Control, RunnerError};
use crate::tasks::model::tests::sample;
use futures_util::future::BoxFuture;
use std::sync::Mutex;
use std::time::Duration;

/// How the fake answers `execute`.
#[derive(Clone, Copy, PartialEq)]
enum Execute {
    Accept,
    /// Never answers (a runner stuck mid-request).
    Hang,
    Unreachable,
}

/// How the fake answers `kill`.
#[derive(Clone, Copy, PartialEq)]
enum Kill {
    Accept,
    Unreachable,
}

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Execute(TaskId),
    Control(Control, TaskId),
}

struct FakeRunner {
    execute: Mutex<Execute>,
    kill: Mutex<Kill>,
    calls: Mutex<Vec<Call>>,
}

impl FakeRunner {
    fn new(execute: Execute, kill: Kill) -> Arc<FakeRunner> {
        Arc::new(FakeRunner {
            execute: Mutex::new(execute),
            kill: Mutex::new(kill),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, call: &Call) -> usize {
        self.calls().iter().filter(|c| *c == call).count()
    }
}

impl RunnerApi for FakeRunner {
    fn execute<'a>(
        &'a self,
        _base: &'a str,
        req: &'a ExecuteRequest,
    ) -> BoxFuture<'a, Result<serde_json::Value, RunnerError>> {
        self.calls.lock().unwrap().push(Call::Execute(req.task_id));
        let how = *self.execute.lock().unwrap();
        Box::pin(async move {
            match how {
                Execute::Accept => Ok(serde_json::Value::Null),
                Execute::Hang => std::future::pending().await,
                Execute::Unreachable => Err(RunnerError::Unreachable("refused".into())),
            }
        })
    }

    fn control<'a>(
        &'a self,
        _base: &'a str,
        action: Control,
        id: TaskId,
    ) -> BoxFuture<'a, Result<serde_json::Value, RunnerError>> {
        self.calls.lock().unwrap().push(Call::Control(action, id));
        let kill = *self.kill.lock().unwrap();
        Box::pin(async move {
            match (action, kill) {
                (Control::Kill, Kill::Unreachable) => {
                    Err(RunnerError::Unreachable("refused".into()))
                }
                _ => Ok(serde_json::Value::Null),
            }
        })
    }

    fn logs<'a>(
        &'a self,
        _base: &'a str,
        _id: TaskId,
        _run: u32,
        _stream: &'a str,
        _lines: Option<usize>,
    ) -> BoxFuture<'a, Result<Option<String>, RunnerError>> {
        Box::pin(async { Ok(None) })
    }
}

fn node(name: &str, cores: u32, epoch: u64) -> NodeEvent {
    NodeEvent::Up {
        capacity: NodeCapacity {
            hostname: name.into(),
            total_cores: cores,
            memory_total: Some(1 << 34),
            gpu_count: 0,
            numa: None,
            online: true,
        },
        url: format!("http://{name}.invalid"),
        epoch,
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    db: Db,
    handle: SchedulerHandle,
    runner: Arc<FakeRunner>,
}

impl Harness {
    /// A scheduler over one empty database; `before` is sent before its loop starts, so the
    /// loop finds it all waiting at once.
    async fn start(runner: Arc<FakeRunner>, nodes: Vec<NodeEvent>, before: Vec<Event>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("ferry.db")).unwrap();
        let channel = channel();
        let handle = channel.handle.clone();
        for e in before {
            handle.send(e).await;
        }
        start(db.clone(), runner.clone(), nodes, channel)
            .await
            .unwrap();
        Harness {
            _dir: dir,
            db,
            handle,
            runner,
        }
    }

    async fn task(&self, id: TaskId) -> Task {
        self.db
            .read(move |c| tasks::get(c, id))
            .await
            .unwrap()
            .unwrap()
    }

    fn cores_in_use(&self, node: &str) -> u32 {
        self.handle.view().usage.get(node).map_or(0, |u| u.cores)
    }

    async fn submit_one(&self, id: u64) -> Placement {
        let placed = self.handle.submit(vec![sample(id)]).await.unwrap();
        placed[0].clone()
    }
}

/// Waits (with a deadline) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_burst_of_submits_is_one_pass_and_never_oversubscribes() {
    let mut replies = Vec::new();
    let mut burst = Vec::new();
    for id in 1..=20 {
        let (reply, rx) = oneshot::channel();
        burst.push(Event::Submit {
            now: false,
            tasks: vec![sample(id)],
            reply,
        });
        replies.push(rx);
    }
    let runner = FakeRunner::new(Execute::Accept, Kill::Accept);
    let h = Harness::start(runner, vec![node("n1", 4, 1)], burst).await;
    let mut placed = 0;
    let mut queued = Vec::new();
    for rx in replies {
        match rx.await.unwrap().unwrap().remove(0) {
            Placement::Placed { node, .. } => {
                assert_eq!(node, "n1");
                placed += 1;
            }
            Placement::Queued { position, .. } => queued.push(position),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(placed, 4, "4 cores, 1 core each");
    assert_eq!(queued, (1..=16).collect::<Vec<u64>>());
    // One pass at start (empty queue) and one for the whole burst.
    assert_eq!(h.handle.view().passes, 2);
    assert_eq!(h.cores_in_use("n1"), 4);
    until("4 dispatches", || {
        (1..=20)
            .filter(|i| h.runner.count(&Call::Execute(TaskId(*i))) > 0)
            .count()
            == 4
    })
    .await;
}

#[tokio::test]
async fn a_kill_during_dispatch_stops_it_and_frees_cores_only_when_the_runner_confirms() {
    let runner = FakeRunner::new(Execute::Unreachable, Kill::Unreachable);
    let h = Harness::start(runner, vec![node("n1", 2, 1)], vec![]).await;
    assert!(matches!(h.submit_one(1).await, Placement::Placed { .. }));
    until("dispatch retried", || {
        h.runner.count(&Call::Execute(TaskId(1))) >= 2
    })
    .await;

    let kill = Change::Kill {
        reason: "Kill requested by user.".into(),
    };
    assert!(matches!(
        h.handle.change(TaskId(1), kill).await.unwrap(),
        Applied::Changed(_)
    ));
    let t = h.task(TaskId(1)).await;
    assert_eq!(t.status, TaskStatus::Killed);
    assert!(t.booked);
    // The runner cannot be reached: the kill is retried, the cores stay booked.
    until("kill retried", || {
        h.runner.count(&Call::Control(Control::Kill, TaskId(1))) >= 2
    })
    .await;
    assert_eq!(h.cores_in_use("n1"), 1, "a failed kill call frees nothing");
    assert!(h.task(TaskId(1)).await.booked);
    let tries = h.runner.count(&Call::Execute(TaskId(1)));

    // The runner answers: the kill is confirmed and the cores are free.
    *h.runner.kill.lock().unwrap() = Kill::Accept;
    until("booking released", || h.cores_in_use("n1") == 0).await;
    let t = h.task(TaskId(1)).await;
    assert_eq!(t.status, TaskStatus::Killed);
    assert!(!t.booked);
    // The dispatch was stopped with the kill: no attempt since.
    assert_eq!(h.runner.count(&Call::Execute(TaskId(1))), tries);
}

#[tokio::test]
async fn a_runner_stuck_mid_dispatch_does_not_stall_the_scheduler() {
    let runner = FakeRunner::new(Execute::Hang, Kill::Accept);
    let h = Harness::start(runner, vec![node("n1", 2, 1)], vec![]).await;
    assert!(matches!(h.submit_one(1).await, Placement::Placed { .. }));
    assert!(matches!(h.submit_one(2).await, Placement::Placed { .. }));
    until("both dispatched", || {
        h.runner.count(&Call::Execute(TaskId(2))) == 1
    })
    .await;
}

#[tokio::test]
async fn a_node_lost_mid_dispatch_stops_the_dispatch_and_keeps_the_booking() {
    let runner = FakeRunner::new(Execute::Unreachable, Kill::Accept);
    let h = Harness::start(runner, vec![node("n1", 2, 1)], vec![]).await;
    h.submit_one(1).await;
    until("dispatch retried", || {
        h.runner.count(&Call::Execute(TaskId(1))) >= 2
    })
    .await;
    h.handle
        .send(Event::Node(NodeEvent::Offline {
            hostname: "n1".into(),
            epoch: 2,
            reason: "Node n1 went offline.".into(),
        }))
        .await;
    until("task lost", || {
        !h.handle.view().nodes.get("n1").is_some_and(|n| n.online)
    })
    .await;
    let t = h.task(TaskId(1)).await;
    assert_eq!(t.status, TaskStatus::Lost);
    assert!(t.booked, "a lost task may still run there");
    assert_eq!(h.cores_in_use("n1"), 1);
    let tries = h.runner.count(&Call::Execute(TaskId(1)));
    tokio::time::sleep(Duration::from_millis(600)).await; // longer than two retry delays
    assert_eq!(
        h.runner.count(&Call::Execute(TaskId(1))),
        tries,
        "the dispatch loop stopped"
    );
    // Killing it now frees it at once: its node is already declared lost.
    let kill = Change::Kill {
        reason: "Kill requested by user.".into(),
    };
    h.handle.change(TaskId(1), kill).await.unwrap();
    until("booking released", || h.cores_in_use("n1") == 0).await;
    assert!(h
        .runner
        .calls()
        .iter()
        .all(|c| !matches!(c, Call::Control(Control::Kill, _))));
}

#[tokio::test]
async fn a_late_offline_never_undoes_a_newer_up() {
    let runner = FakeRunner::new(Execute::Accept, Kill::Accept);
    let h = Harness::start(runner, vec![node("n1", 2, 1)], vec![]).await;
    h.handle.send(Event::Node(node("n1", 2, 5))).await;
    h.handle
        .send(Event::Node(NodeEvent::Offline {
            hostname: "n1".into(),
            epoch: 3,
            reason: "late".into(),
        }))
        .await;
    // A submit after both events sees the node online and is placed.
    assert!(matches!(h.submit_one(1).await, Placement::Placed { .. }));
    assert!(h.handle.view().nodes["n1"].online);
}

#[tokio::test]
async fn a_node_that_shrinks_fails_queued_tasks_that_can_no_longer_fit() {
    let runner = FakeRunner::new(Execute::Accept, Kill::Accept);
    let h = Harness::start(runner, vec![node("n1", 4, 1)], vec![]).await;
    let mut big = sample(1);
    big.definition.resources.required_cores = 4;
    let mut blocker = sample(2);
    blocker.definition.resources.required_cores = 4;
    h.handle.submit(vec![blocker]).await.unwrap();
    let placed = h.handle.submit(vec![big]).await.unwrap();
    assert!(matches!(placed[0], Placement::Queued { position: 1, .. }));
    // The runner comes back with 2 cores (a heartbeat's capacity change).
    h.handle.send(Event::Node(node("n1", 2, 2))).await;
    until("queued task failed", || h.handle.view().queue.is_empty()).await;
    let t = h.task(TaskId(1)).await;
    assert_eq!(t.status, TaskStatus::Failed);
    assert!(
        t.error_message
            .unwrap_or_default()
            .contains("Can no longer run"),
        "the reason is given"
    );
}

#[tokio::test]
async fn restart_rebuilds_the_ledger_and_resumes_unconfirmed_kills() {
    let runner = FakeRunner::new(Execute::Accept, Kill::Unreachable);
    let h = Harness::start(runner, vec![node("n1", 2, 1)], vec![]).await;
    h.submit_one(1).await;
    let kill = Change::Kill {
        reason: "Kill requested by user.".into(),
    };
    h.handle.change(TaskId(1), kill).await.unwrap();
    assert!(h.task(TaskId(1)).await.booked);

    // A second scheduler on the same database (the host restarted), whose runner answers.
    let channel = channel();
    let handle = channel.handle.clone();
    let answering = FakeRunner::new(Execute::Accept, Kill::Accept);
    start(
        h.db.clone(),
        answering.clone(),
        vec![node("n1", 2, 1)],
        channel,
    )
    .await
    .unwrap();
    assert_eq!(handle.view().usage["n1"].cores, 1, "the booking survived");
    until("kill resumed and confirmed", || {
        handle.view().usage.get("n1").map_or(0, |u| u.cores) == 0
    })
    .await;
    assert_eq!(answering.count(&Call::Control(Control::Kill, TaskId(1))), 1);
    assert!(!h.task(TaskId(1)).await.booked);
}
