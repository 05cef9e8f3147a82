//! The host's task: its definition (fixed at submission) plus its life (status, node,
//! booking, exit), and the one pure function that changes it: [`apply`].
//!
//! Every state change is a [`Change`], an intent with a name (place, a runner's report, kill,
//! approve, ...). [`apply`] decides whether it is allowed and what the task becomes; the store
//! only persists the result and the scheduler only mirrors it in the ledger. A task's
//! resources stay booked (`booked`) from placement until its runner confirms the workload is
//! gone or its node is declared lost — not merely until the host decides the task ended, so a
//! kill that has not reached the runner yet never frees cores a container still uses.

use ferry_common::task::{ApprovalStatus, RetryOn, TaskDefinition};
use ferry_common::{TaskId, TaskStatus};

/// Who decided about a task submitted by the `user` role, and when.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Approval {
    /// `None` when authentication is off.
    pub status: Option<ApprovalStatus>,
    pub by: Option<i64>,
    pub at: Option<i64>,
    pub rejection_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: TaskId,
    pub batch_id: Option<TaskId>,
    pub name: Option<String>,
    pub owner_id: Option<i64>,
    pub definition: TaskDefinition,
    /// The node the submitter asked for; `None` = placed automatically.
    pub target_node: Option<String>,
    /// Higher runs first; FIFO within one priority.
    pub priority: i64,
    pub approval: Approval,
    pub status: TaskStatus,
    pub assigned_node: Option<String>,
    /// Resources are booked on `assigned_node`.
    pub booked: bool,
    pub exit_code: Option<i64>,
    pub error_message: Option<String>,
    pub submitted_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    /// Sequence number of the last runner report applied.
    pub last_seq: u64,
    /// How many times it was placed: the fencing number of its current placement (0: never
    /// placed). Reports and heartbeats about another attempt are not believed.
    pub attempt: u32,
    /// Which run of the task this is: 1 for the first, one more for each retry (what the API
    /// calls its attempt). Each run has its own logs and, once ended, its own record.
    pub run: u32,
    /// A retry waits in the queue until this time (Unix ms), its backoff.
    pub retry_at: Option<i64>,
    pub ssh_port: Option<u16>,
    pub vm_ip: Option<String>,
    /// Read-only, joined from `users` (never written).
    pub owner_username: Option<String>,
    pub approved_by_username: Option<String>,
}

impl Task {
    /// A new task waiting in the queue.
    pub fn new(id: TaskId, definition: TaskDefinition, submitted_at: i64) -> Task {
        Task {
            id,
            batch_id: Some(id),
            name: None,
            owner_id: None,
            definition,
            target_node: None,
            priority: 0,
            approval: Approval::default(),
            status: TaskStatus::Pending,
            assigned_node: None,
            booked: false,
            exit_code: None,
            error_message: None,
            submitted_at,
            started_at: None,
            completed_at: None,
            last_seq: 0,
            attempt: 0,
            run: 1,
            retry_at: None,
            ssh_port: None,
            vm_ip: None,
            owner_username: None,
            approved_by_username: None,
        }
    }
}

/// A status report from the task's runner.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub status: Option<TaskStatus>,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    /// Reports at or below the last applied number are dropped.
    pub seq: Option<u64>,
    /// The reporting node; a report from another node than the task's is ignored.
    pub reporter: Option<String>,
    /// The placement attempt reported on; a report about another attempt is ignored.
    pub attempt: Option<u32>,
    /// A VPS's sshd is reached on this port of its node.
    pub ssh_port: Option<u16>,
}

/// What is asked of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The scheduler placed it on `node` (its resources are booked there).
    Place {
        node: String,
    },
    /// Its runner says what happened.
    Report(Report),
    /// Its runner shows it alive (heartbeat, or a pause/resume the runner carried out).
    Running {
        paused: bool,
    },
    /// A user or operator kills it.
    Kill {
        reason: String,
    },
    /// A VPS is stopped (snapshot, then a graceful stop); like a kill, its booking stays until
    /// its runner confirms.
    Stop {
        reason: String,
    },
    /// A stopped or failed VPS is started again: back to the queue (pinned to its node,
    /// where its snapshots are) as a new placement.
    Restart,
    /// An ended command task is run again as its next attempt (a user asked; automatic
    /// retries happen inside [`apply`], see [`retry_due`]).
    Retry {
        reason: String,
    },
    Approve {
        by: Option<i64>,
    },
    Reject {
        by: Option<i64>,
        reason: Option<String>,
    },
    /// It never started where it was placed: back to the queue.
    Requeue {
        reason: String,
    },
    /// Its node went silent.
    Lost {
        reason: String,
    },
    /// The host gives up on it (refused by its runner, gone from it, can no longer fit).
    Fail {
        reason: String,
        exit_code: Option<i64>,
    },
    /// Its runner confirmed its workload is gone, or its node was declared lost: the booking
    /// of an ended task is released.
    Released,
    /// `change`, only if the task is still in placement `attempt`: what a dispatch loop or a
    /// heartbeat learnt about one placement must not land on the next.
    ForAttempt {
        attempt: u32,
        change: Box<Change>,
    },
}

impl Change {
    /// The change itself, without the attempt it is fenced to.
    pub fn innermost(&self) -> &Change {
        let mut inner = self;
        while let Change::ForAttempt { change, .. } = inner {
            inner = change;
        }
        inner
    }

    pub fn name(&self) -> &'static str {
        match self {
            Change::Place { .. } => "place",
            Change::Report(_) => "report",
            Change::Running { .. } => "running",
            Change::Kill { .. } => "kill",
            Change::Stop { .. } => "stop",
            Change::Restart => "restart",
            Change::Retry { .. } => "retry",
            Change::Approve { .. } => "approve",
            Change::Reject { .. } => "reject",
            Change::Requeue { .. } => "requeue",
            Change::Lost { .. } => "lost",
            Change::Fail { .. } => "fail",
            Change::Released => "released",
            Change::ForAttempt { change, .. } => change.name(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("{from} -> {to} is not allowed")]
    NotAllowed { from: TaskStatus, to: TaskStatus },
    #[error("report {seq} already applied (last {last})")]
    Stale { seq: u64, last: u64 },
    #[error("report from node {from}, but the task is on {on}")]
    WrongNode { from: String, on: String },
    #[error("a report must carry a status")]
    NoStatus,
    #[error("nothing is booked for this task")]
    NothingBooked,
    #[error("about placement attempt {got}, but the task is in attempt {current}")]
    OtherAttempt { got: u32, current: u32 },
    #[error("only a VPS can be stopped or restarted")]
    NotAVps,
    #[error("a VPS is started again with restart, not retried")]
    IsAVps,
    #[error("the task has had {0} attempts, the most one task may have")]
    TooManyAttempts(u32),
}

/// Most attempts one task may have (its first run and every retry, automatic or asked for).
pub const MAX_ATTEMPTS: u32 = 100;

/// What `task` becomes under `change` at time `now_ms`, or why the change is refused.
/// Timestamps: `started_at` is kept once set; a final state gets `completed_at`.
/// An attempt that ends in a way its task retries is not final: the task goes back to the
/// queue as its next attempt (see [`retry_due`] and [`Outcome`]).
pub fn apply(task: &Task, change: &Change, now_ms: i64) -> Result<Task, TransitionError> {
    apply_outcome(task, change, now_ms).map(|o| o.task)
}

/// What a change made of a task: the task now, and the attempt it ended on the way when that
/// attempt was retried at once (its status, exit and node as it ended).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub task: Task,
    pub ended_attempt: Option<Task>,
}

/// [`apply`], saying also which attempt ended when the task was retried.
pub fn apply_outcome(
    task: &Task,
    change: &Change,
    now_ms: i64,
) -> Result<Outcome, TransitionError> {
    let after = transition(task, change, now_ms)?;
    Ok(match retry_due(task, &after) {
        Some(why) => Outcome {
            task: next_attempt(&after, now_ms, why, true),
            ended_attempt: Some(after),
        },
        None => Outcome {
            task: after,
            ended_attempt: None,
        },
    })
}

/// If `after` (once `before`) is an attempt that ended in a way its task retries, with a
/// retry left: how it ended.
pub fn retry_due(before: &Task, after: &Task) -> Option<RetryOn> {
    let spec = after.definition.spec.as_command()?;
    if after.run > spec.max_retries || after.run >= MAX_ATTEMPTS {
        return None;
    }
    // Only an attempt that was on a node ends; a queued task that fails never ran.
    if !matches!(
        before.status,
        TaskStatus::Assigning | TaskStatus::Running | TaskStatus::Paused
    ) {
        return None;
    }
    let how = match after.status {
        TaskStatus::Failed => RetryOn::Failed,
        TaskStatus::TimedOut => RetryOn::TimedOut,
        TaskStatus::Lost => RetryOn::Lost,
        _ => return None,
    };
    spec.retry_on.contains(&how).then_some(how)
}

/// `ended` as its next attempt, back in the queue. `automatic`: a retry of the task's
/// policy, which waits out its backoff first.
fn next_attempt(ended: &Task, now_ms: i64, how: RetryOn, automatic: bool) -> Task {
    let mut t = ended.clone();
    let next = ended.run + 1;
    let (wait, of) = match ended.definition.spec.as_command() {
        Some(c) if automatic => (c.backoff_before(next), Some(c.max_retries + 1)),
        _ => (0, None),
    };
    let ending = match (how, ended.exit_code) {
        (RetryOn::Failed, Some(code)) => format!("failed (exit code {code})"),
        (RetryOn::Failed, None) => "failed".to_string(),
        (RetryOn::TimedOut, _) => "timed out".to_string(),
        (RetryOn::Lost, _) => "was lost with its node".to_string(),
    };
    let of = of.map(|n| format!(" of {n}")).unwrap_or_default();
    let when = match wait {
        0 => String::new(),
        w => format!(
            " in {}",
            ferry_common::units::format_duration(std::time::Duration::from_secs(w))
        ),
    };
    t.error_message = Some(format!(
        "Attempt {} {ending}; attempt {next}{of} starts{when}.",
        ended.run
    ));
    t.status = TaskStatus::Pending;
    t.run = next;
    t.retry_at = (wait > 0).then(|| now_ms.saturating_add((wait * 1000) as i64));
    // A lost attempt's node is declared lost: nothing there to wait for. Any copy still
    // running there is killed when the node is heard from again.
    t.booked = false;
    t.assigned_node = None;
    t.exit_code = None;
    t.started_at = None;
    t.completed_at = None;
    t.ssh_port = None;
    t
}

fn transition(task: &Task, change: &Change, now_ms: i64) -> Result<Task, TransitionError> {
    let mut t = task.clone();
    match change {
        Change::Place { node } => {
            t.enter(TaskStatus::Assigning, now_ms)?;
            t.assigned_node = Some(node.clone());
            t.booked = true;
            t.attempt += 1;
            t.retry_at = None;
        }
        Change::ForAttempt { attempt, change } => {
            if *attempt != t.attempt {
                return Err(TransitionError::OtherAttempt {
                    got: *attempt,
                    current: t.attempt,
                });
            }
            return transition(task, change, now_ms);
        }
        Change::Report(r) => t.report(r, now_ms)?,
        Change::Running { paused } => {
            let to = if *paused {
                TaskStatus::Paused
            } else {
                TaskStatus::Running
            };
            let was_lost = t.status == TaskStatus::Lost;
            t.enter(to, now_ms)?;
            if was_lost {
                // Back from `lost`: the "node went offline" message goes with the state.
                t.error_message = None;
            }
        }
        Change::Kill { reason } => {
            let from = t.status;
            t.enter(TaskStatus::Killed, now_ms)?;
            t.error_message = Some(reason.clone());
            // A lost task's node is already declared lost: nothing there to wait for.
            t.booked = t.booked && from != TaskStatus::Lost;
        }
        Change::Stop { reason } => {
            if t.definition.spec.as_vps().is_none() {
                return Err(TransitionError::NotAVps);
            }
            let from = t.status;
            t.enter(TaskStatus::Stopped, now_ms)?;
            t.error_message = Some(reason.clone());
            t.booked = t.booked && from != TaskStatus::Lost;
        }
        Change::Restart => {
            if t.definition.spec.as_vps().is_none() {
                return Err(TransitionError::NotAVps);
            }
            // The one way out of a final state: a VPS is a session a user starts again.
            if !matches!(t.status, TaskStatus::Stopped | TaskStatus::Failed) || t.booked {
                return Err(TransitionError::NotAllowed {
                    from: t.status,
                    to: TaskStatus::Pending,
                });
            }
            t.status = TaskStatus::Pending;
            t.target_node = t.assigned_node.take().or(t.target_node.take());
            t.exit_code = None;
            t.error_message = None;
            t.started_at = None;
            t.completed_at = None;
            t.ssh_port = None;
        }
        Change::Retry { reason } => {
            if t.definition.spec.as_vps().is_some() {
                return Err(TransitionError::IsAVps);
            }
            // Ended (and its end confirmed, so nothing of it still runs), or lost with a node
            // that is declared lost.
            let ended = t.status.is_final() && !t.booked && t.status != TaskStatus::Rejected;
            if !(ended || t.status == TaskStatus::Lost) {
                return Err(TransitionError::NotAllowed {
                    from: t.status,
                    to: TaskStatus::Pending,
                });
            }
            if t.run >= MAX_ATTEMPTS {
                return Err(TransitionError::TooManyAttempts(t.run));
            }
            let mut next = next_attempt(&t, now_ms, RetryOn::Failed, false);
            next.error_message = Some(reason.clone());
            return Ok(next);
        }
        Change::Approve { by } => {
            t.enter_from(TaskStatus::PendingApproval, TaskStatus::Pending, now_ms)?;
            t.approval = Approval {
                status: Some(ApprovalStatus::Approved),
                by: *by,
                at: Some(now_ms),
                rejection_reason: None,
            };
        }
        Change::Reject { by, reason } => {
            t.enter_from(TaskStatus::PendingApproval, TaskStatus::Rejected, now_ms)?;
            t.approval = Approval {
                status: Some(ApprovalStatus::Rejected),
                by: *by,
                at: Some(now_ms),
                rejection_reason: reason.clone(),
            };
            t.error_message = reason.as_ref().map(|r| format!("Rejected: {r}"));
        }
        Change::Requeue { reason } => {
            if !matches!(t.status, TaskStatus::Assigning | TaskStatus::Lost) {
                return Err(TransitionError::NotAllowed {
                    from: t.status,
                    to: TaskStatus::Pending,
                });
            }
            t.enter(TaskStatus::Pending, now_ms)?;
            t.error_message = Some(reason.clone());
            t.booked = false;
        }
        Change::Lost { reason } => {
            if t.status.is_final() && t.booked {
                // Ended by the host, not yet confirmed by the runner, whose node is now lost.
                t.booked = false;
                return Ok(t);
            }
            t.enter(TaskStatus::Lost, now_ms)?;
            t.error_message = Some(reason.clone());
        }
        Change::Fail { reason, exit_code } => {
            t.enter(TaskStatus::Failed, now_ms)?;
            t.error_message = Some(reason.clone());
            t.exit_code = exit_code.or(t.exit_code);
            t.booked = false;
        }
        Change::Released => {
            if !(t.booked && t.status.is_final()) {
                return Err(TransitionError::NothingBooked);
            }
            t.booked = false;
        }
    }
    Ok(t)
}

impl Task {
    /// Moves to `to` if the status rules allow it, stamping the times.
    fn enter(&mut self, to: TaskStatus, now_ms: i64) -> Result<(), TransitionError> {
        if !self.status.can_become(to) {
            return Err(TransitionError::NotAllowed {
                from: self.status,
                to,
            });
        }
        self.status = to;
        if to == TaskStatus::Running && self.started_at.is_none() {
            self.started_at = Some(now_ms);
        }
        if to.is_final() {
            self.completed_at = Some(now_ms);
        }
        Ok(())
    }

    fn enter_from(
        &mut self,
        from: TaskStatus,
        to: TaskStatus,
        now_ms: i64,
    ) -> Result<(), TransitionError> {
        if self.status != from {
            return Err(TransitionError::NotAllowed {
                from: self.status,
                to,
            });
        }
        self.enter(to, now_ms)
    }

    fn report(&mut self, r: &Report, now_ms: i64) -> Result<(), TransitionError> {
        if let Some(seq) = r.seq {
            if seq <= self.last_seq {
                return Err(TransitionError::Stale {
                    seq,
                    last: self.last_seq,
                });
            }
        }
        if let Some(got) = r.attempt.filter(|a| *a != self.attempt) {
            return Err(TransitionError::OtherAttempt {
                got,
                current: self.attempt,
            });
        }
        if let (Some(from), Some(on)) = (&r.reporter, &self.assigned_node) {
            if from != on {
                return Err(TransitionError::WrongNode {
                    from: from.clone(),
                    on: on.clone(),
                });
            }
        }
        let to = r.status.ok_or(TransitionError::NoStatus)?;
        if matches!(
            self.status,
            TaskStatus::Pending | TaskStatus::PendingApproval
        ) {
            // Not on any node: a report can only be a late copy's (queued again since).
            return Err(TransitionError::NotAllowed {
                from: self.status,
                to,
            });
        }
        let seq = r.seq.unwrap_or(0).max(self.last_seq);
        if to == TaskStatus::Running && r.ssh_port.is_some() {
            self.ssh_port = r.ssh_port;
        }
        let fills_exit_code = self.exit_code.is_none() && r.exit_code.is_some();
        if self.status.is_final() && to.is_final() && (self.booked || fills_exit_code) {
            // The runner confirms the end of a task the host had already ended (a kill):
            // the first final state stays, the booking is released, the exit code is kept.
            // Any other report about an ended task changes nothing and is refused below.
            self.booked = false;
            self.exit_code = self.exit_code.or(r.exit_code);
            self.last_seq = seq;
            return Ok(());
        }
        let from = self.status;
        let booked = self.booked;
        self.enter(to, now_ms)?;
        self.last_seq = seq;
        if let Some(started) = r.started_at {
            self.started_at = self.started_at.or(Some(started));
        }
        if to.is_final() {
            self.completed_at = Some(r.completed_at.unwrap_or(now_ms));
        }
        if to.is_final() || to == TaskStatus::Lost {
            self.exit_code = r.exit_code.or(self.exit_code);
        }
        // A task back from `lost` sheds the "node went offline" message with the state.
        self.error_message = if to.is_final() || to == TaskStatus::Lost || from == TaskStatus::Lost
        {
            r.message.clone()
        } else {
            r.message.clone().or(self.error_message.take())
        };
        // Still on its node (running, paused) it stays booked; a final report frees it.
        self.booked = booked && to.holds_resources();
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use TaskStatus::*;

    pub fn sample(id: u64) -> Task {
        let mut d = TaskDefinition::command("echo");
        d.image.container_name = Some("kohakuriver-base".into());
        Task::new(TaskId(id), d, 1000)
    }

    fn at(status: TaskStatus) -> Task {
        let mut t = sample(1);
        t.status = status;
        t.booked = status.holds_resources();
        t.assigned_node = t.booked.then(|| "n1".to_string());
        t
    }

    fn report(status: TaskStatus) -> Change {
        Change::Report(Report {
            status: Some(status),
            ..Default::default()
        })
    }

    #[test]
    fn reports_follow_the_status_rules_over_every_pair() {
        for from in TaskStatus::ALL {
            for to in TaskStatus::ALL {
                let got = apply(&at(from), &report(to), 50);
                // A task on no node takes no report: any runner's copy of it is a stale one.
                let placed = !matches!(from, Pending | PendingApproval);
                if placed && from.can_become(to) {
                    let t = got.unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
                    assert_eq!(t.status, to);
                    assert_eq!(t.completed_at.is_some(), to.is_final(), "{from} -> {to}");
                    assert_eq!(t.booked, at(from).booked && to.holds_resources());
                } else {
                    assert_eq!(
                        got,
                        Err(TransitionError::NotAllowed { from, to }),
                        "{from} -> {to}"
                    );
                }
            }
        }
    }

    /// Which statuses each intent accepts, checked over every status.
    #[test]
    fn a_report_about_an_ended_task_changes_nothing_unless_it_confirms_a_kill() {
        let ended = at(Completed);
        assert!(apply(&ended, &report(Killed), 50).is_err());
        let mut killed = at(Killed);
        killed.booked = true;
        let confirmed = apply(&killed, &report(Failed), 50).unwrap();
        assert_eq!((confirmed.status, confirmed.booked), (Killed, false));
    }

    #[test]
    fn each_intent_applies_only_where_it_makes_sense() {
        let cases: Vec<(Change, Vec<TaskStatus>)> = vec![
            (Change::Place { node: "n2".into() }, vec![Pending]),
            (
                Change::Running { paused: false },
                vec![Assigning, Paused, Lost],
            ),
            (Change::Running { paused: true }, vec![Running, Lost]),
            (
                Change::Kill {
                    reason: "Kill requested by user.".into(),
                },
                vec![PendingApproval, Pending, Assigning, Running, Paused, Lost],
            ),
            (Change::Approve { by: Some(1) }, vec![PendingApproval]),
            (
                Change::Reject {
                    by: Some(1),
                    reason: None,
                },
                vec![PendingApproval],
            ),
            (
                Change::Requeue {
                    reason: "again".into(),
                },
                vec![Assigning, Lost],
            ),
            (
                Change::Lost {
                    reason: "silent".into(),
                },
                vec![Assigning, Running, Paused],
            ),
            (
                Change::Fail {
                    reason: "no".into(),
                    exit_code: Some(-1),
                },
                vec![Pending, Assigning, Running, Paused, Lost],
            ),
        ];
        for (change, allowed) in cases {
            for from in TaskStatus::ALL {
                let ok = apply(&at(from), &change, 50).is_ok();
                assert_eq!(ok, allowed.contains(&from), "{} from {from}", change.name());
            }
        }
    }

    #[test]
    fn a_kill_keeps_the_booking_until_the_runner_confirms() {
        let killed = apply(
            &at(Running),
            &Change::Kill {
                reason: "Kill requested by user.".into(),
            },
            50,
        )
        .unwrap();
        assert_eq!(killed.status, Killed);
        assert!(killed.booked, "cores stay booked until the runner confirms");
        assert_eq!(killed.completed_at, Some(50));
        // The runner's own report of the kill confirms it and brings the exit code.
        let confirmed = apply(
            &killed,
            &Change::Report(Report {
                status: Some(Killed),
                exit_code: Some(137),
                seq: Some(4),
                ..Default::default()
            }),
            60,
        )
        .unwrap();
        assert_eq!(confirmed.status, Killed);
        assert!(!confirmed.booked);
        assert_eq!(confirmed.exit_code, Some(137));
        assert_eq!(confirmed.last_seq, 4);
        // Or an acknowledged kill call, or the node declared lost.
        assert!(!apply(&killed, &Change::Released, 60).unwrap().booked);
        let lost = apply(
            &killed,
            &Change::Lost {
                reason: "silent".into(),
            },
            60,
        )
        .unwrap();
        assert!(!lost.booked);
        assert_eq!(lost.status, Killed);
        assert_eq!(
            apply(&confirmed, &Change::Released, 70),
            Err(TransitionError::NothingBooked)
        );
    }

    #[test]
    fn killing_a_lost_or_queued_task_books_nothing() {
        for from in [Lost, Pending, PendingApproval] {
            let t = apply(&at(from), &Change::Kill { reason: "k".into() }, 50).unwrap();
            assert!(!t.booked, "kill from {from}");
        }
    }

    #[test]
    fn first_final_state_wins_and_stale_reports_are_dropped() {
        let placed = apply(&sample(5), &Change::Place { node: "n1".into() }, 10).unwrap();
        assert!(placed.booked);
        let run = Change::Report(Report {
            status: Some(Running),
            seq: Some(1),
            started_at: Some(20),
            ..Default::default()
        });
        let running = apply(&placed, &run, 20).unwrap();
        let done = apply(
            &running,
            &Change::Report(Report {
                status: Some(Completed),
                exit_code: Some(0),
                seq: Some(2),
                completed_at: Some(30),
                ..Default::default()
            }),
            30,
        )
        .unwrap();
        assert!(!done.booked);
        assert_eq!(
            apply(&done, &run, 40),
            Err(TransitionError::Stale { seq: 1, last: 2 })
        );
        let late_kill = Change::Report(Report {
            status: Some(Killed),
            exit_code: Some(9),
            seq: Some(3),
            ..Default::default()
        });
        assert_eq!(
            apply(&done, &late_kill, 50),
            Err(TransitionError::NotAllowed {
                from: Completed,
                to: Killed
            })
        );
        assert_eq!(done.exit_code, Some(0));
        assert_eq!(done.started_at, Some(20));
        assert_eq!(done.completed_at, Some(30));
    }

    #[test]
    fn reports_from_another_node_are_ignored() {
        let r = Change::Report(Report {
            status: Some(Running),
            reporter: Some("n2".into()),
            ..Default::default()
        });
        assert!(matches!(
            apply(&at(Assigning), &r, 5),
            Err(TransitionError::WrongNode { .. })
        ));
    }

    #[test]
    fn each_placement_is_a_new_attempt_and_old_attempts_are_not_believed() {
        let first = apply(&sample(5), &Change::Place { node: "n1".into() }, 10).unwrap();
        assert_eq!(first.attempt, 1);
        let requeued = apply(
            &first,
            &Change::Requeue {
                reason: "never received".into(),
            },
            20,
        )
        .unwrap();
        let second = apply(&requeued, &Change::Place { node: "n1".into() }, 30).unwrap();
        assert_eq!(second.attempt, 2);
        // The first attempt's late report, even from the same node, is refused.
        let late = Change::Report(Report {
            status: Some(Running),
            seq: Some(9),
            attempt: Some(1),
            reporter: Some("n1".into()),
            ..Default::default()
        });
        assert_eq!(
            apply(&second, &late, 40),
            Err(TransitionError::OtherAttempt { got: 1, current: 2 })
        );
        // A dispatch failure of the first attempt does not fail the second.
        let stale_failure = Change::ForAttempt {
            attempt: 1,
            change: Box::new(Change::Fail {
                reason: "refused".into(),
                exit_code: Some(-1),
            }),
        };
        assert_eq!(
            apply(&second, &stale_failure, 40),
            Err(TransitionError::OtherAttempt { got: 1, current: 2 })
        );
        let current_failure = Change::ForAttempt {
            attempt: 2,
            change: Box::new(Change::Fail {
                reason: "refused".into(),
                exit_code: Some(-1),
            }),
        };
        assert_eq!(apply(&second, &current_failure, 40).unwrap().status, Failed);
        // A report of the current attempt applies.
        let now = Change::Report(Report {
            status: Some(Running),
            seq: Some(10),
            attempt: Some(2),
            reporter: Some("n1".into()),
            ..Default::default()
        });
        assert_eq!(apply(&second, &now, 40).unwrap().status, Running);
    }

    #[test]
    fn back_from_lost_sheds_the_offline_message() {
        let lost = apply(
            &at(Running),
            &Change::Lost {
                reason: "Node n1 went offline".into(),
            },
            5,
        )
        .unwrap();
        assert!(
            lost.booked,
            "a lost task may still run: it keeps its booking"
        );
        let back = apply(&lost, &Change::Running { paused: false }, 6).unwrap();
        assert_eq!(back.status, Running);
        assert_eq!(back.error_message, None);
    }

    #[test]
    fn a_vps_is_stopped_like_a_kill_and_restarted_on_its_node() {
        let mut t = at(Running);
        t.definition.spec =
            ferry_common::task::TaskSpec::Vps(ferry_common::task::VpsSpec::default());
        t.ssh_port = Some(2222);
        t.attempt = 1;
        let stop = Change::Stop {
            reason: "Stopped by user.".into(),
        };
        let stopped = apply(&t, &stop, 10).unwrap();
        assert_eq!(stopped.status, Stopped);
        assert!(stopped.booked, "booked until the runner confirms the stop");
        assert_eq!(
            apply(&stopped, &Change::Restart, 11),
            Err(TransitionError::NotAllowed {
                from: Stopped,
                to: Pending
            }),
            "not while its container may still be there"
        );
        let released = apply(&stopped, &Change::Released, 12).unwrap();
        let again = apply(&released, &Change::Restart, 13).unwrap();
        assert_eq!(again.status, Pending);
        assert_eq!(
            again.target_node.as_deref(),
            Some("n1"),
            "pinned to its node"
        );
        assert_eq!(
            (again.assigned_node.as_deref(), again.ssh_port),
            (None, None)
        );
        assert_eq!(
            (again.completed_at, again.error_message.as_deref()),
            (None, None)
        );
        let placed = apply(&again, &Change::Place { node: "n1".into() }, 14).unwrap();
        assert_eq!(
            placed.attempt, 2,
            "a new attempt: the old one's reports are fenced"
        );
        // Only a VPS stops or restarts; a command task is killed or ends.
        assert_eq!(
            apply(&at(Running), &stop, 10),
            Err(TransitionError::NotAVps)
        );
        let mut done = at(Failed);
        done.booked = false;
        assert_eq!(
            apply(&done, &Change::Restart, 10),
            Err(TransitionError::NotAVps)
        );
    }

    #[test]
    fn approval_and_rejection_are_recorded() {
        let waiting = at(PendingApproval);
        let ok = apply(&waiting, &Change::Approve { by: Some(7) }, 9).unwrap();
        assert_eq!(ok.status, Pending);
        assert_eq!(ok.approval.status, Some(ApprovalStatus::Approved));
        assert_eq!((ok.approval.by, ok.approval.at), (Some(7), Some(9)));
        let no = apply(
            &waiting,
            &Change::Reject {
                by: Some(7),
                reason: Some("too big".into()),
            },
            9,
        )
        .unwrap();
        assert_eq!(no.status, Rejected);
        assert_eq!(no.approval.rejection_reason.as_deref(), Some("too big"));
        assert_eq!(no.error_message.as_deref(), Some("Rejected: too big"));
    }

    fn retrying(status: TaskStatus, retries: u32, on: &[RetryOn]) -> Task {
        let mut t = at(status);
        if let ferry_common::task::TaskSpec::Command(c) = &mut t.definition.spec {
            c.max_retries = retries;
            c.retry_on = on.to_vec();
            c.retry_backoff_seconds = Some(2);
        }
        t
    }

    fn failed_with(code: i64) -> Change {
        Change::Report(Report {
            status: Some(Failed),
            exit_code: Some(code),
            ..Default::default()
        })
    }

    #[test]
    fn a_failed_attempt_with_retries_left_goes_back_to_the_queue_after_its_backoff() {
        let running = retrying(Running, 2, &[RetryOn::Failed]);
        let o = apply_outcome(&running, &failed_with(1), 1_000).unwrap();
        let ended = o.ended_attempt.expect("the attempt ended");
        assert_eq!(
            (ended.status, ended.exit_code, ended.run),
            (Failed, Some(1), 1)
        );
        let next = o.task;
        assert_eq!((next.status, next.run, next.booked), (Pending, 2, false));
        assert_eq!(
            next.retry_at,
            Some(3_000),
            "first retry waits the base backoff"
        );
        assert_eq!(next.exit_code, None);
        assert!(
            next.error_message
                .as_deref()
                .unwrap()
                .contains("attempt 2 of 3"),
            "{:?}",
            next.error_message
        );
        // Its second retry waits twice as long; the third failure is final.
        let mut second = apply(&next, &Change::Place { node: "n1".into() }, 3_000).unwrap();
        assert_eq!(second.retry_at, None);
        second = apply(&second, &Change::Running { paused: false }, 3_100).unwrap();
        let third = apply(&second, &failed_with(1), 4_000).unwrap();
        assert_eq!((third.run, third.retry_at), (3, Some(8_000)));
        let mut last = apply(&third, &Change::Place { node: "n1".into() }, 8_000).unwrap();
        last = apply(&last, &Change::Running { paused: false }, 8_100).unwrap();
        let o = apply_outcome(&last, &failed_with(1), 9_000).unwrap();
        assert!(o.ended_attempt.is_none());
        assert_eq!(
            (o.task.status, o.task.run, o.task.exit_code),
            (Failed, 3, Some(1))
        );
    }

    #[test]
    fn only_the_endings_named_in_retry_on_are_retried() {
        let lost = Change::Lost {
            reason: "node n1 went offline".into(),
        };
        let on_lost = retrying(Running, 1, &[RetryOn::Lost]);
        let next = apply(&on_lost, &lost, 10).unwrap();
        assert_eq!((next.status, next.run, next.booked), (Pending, 2, false));
        assert_eq!(next.assigned_node, None);
        // Not named: the ending stands.
        let on_failed = retrying(Running, 1, &[RetryOn::Failed]);
        assert_eq!(apply(&on_failed, &lost, 10).unwrap().status, Lost);
        let timed_out = Change::Report(Report {
            status: Some(TimedOut),
            ..Default::default()
        });
        assert_eq!(apply(&on_failed, &timed_out, 10).unwrap().status, TimedOut);
        let on_time = retrying(Running, 1, &[RetryOn::TimedOut]);
        assert_eq!(apply(&on_time, &timed_out, 10).unwrap().status, Pending);
        // A kill, a success or no retries at all: never retried.
        let all = [RetryOn::Failed, RetryOn::Lost, RetryOn::TimedOut];
        let kill = Change::Kill {
            reason: "by user".into(),
        };
        assert_eq!(
            apply(&retrying(Running, 3, &all), &kill, 10)
                .unwrap()
                .status,
            Killed
        );
        assert_eq!(
            apply(&retrying(Running, 0, &all), &failed_with(1), 10)
                .unwrap()
                .status,
            Failed
        );
        // A queued task that can no longer run never ran: not an attempt to retry.
        let fail = Change::Fail {
            reason: "Can no longer run".into(),
            exit_code: None,
        };
        assert_eq!(
            apply(&retrying(Pending, 3, &all), &fail, 10)
                .unwrap()
                .status,
            Failed
        );
    }

    #[test]
    fn a_user_retries_an_ended_task_but_not_one_still_ending_or_running() {
        let retry = Change::Retry {
            reason: "asked".into(),
        };
        let mut done = at(Completed);
        done.exit_code = Some(0);
        done.run = 4;
        let next = apply(&done, &retry, 50).unwrap();
        assert_eq!((next.status, next.run, next.retry_at), (Pending, 5, None));
        assert_eq!(next.error_message.as_deref(), Some("asked"));
        assert_eq!((next.exit_code, next.completed_at), (None, None));
        for status in [Running, Pending, Assigning, Rejected] {
            assert!(
                matches!(
                    apply(&at(status), &retry, 50),
                    Err(TransitionError::NotAllowed { .. })
                ),
                "{status}"
            );
        }
        let mut ending = at(Killed);
        ending.booked = true;
        assert!(
            apply(&ending, &retry, 50).is_err(),
            "its kill is not confirmed"
        );
        let lost = at(Lost);
        assert!(!apply(&lost, &retry, 50).unwrap().booked);
        let mut vps = at(Failed);
        vps.definition.spec = ferry_common::task::TaskSpec::Vps(Default::default());
        assert_eq!(apply(&vps, &retry, 50), Err(TransitionError::IsAVps));
        done.run = MAX_ATTEMPTS;
        assert_eq!(
            apply(&done, &retry, 50),
            Err(TransitionError::TooManyAttempts(MAX_ATTEMPTS))
        );
    }
}
