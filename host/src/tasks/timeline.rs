//! A task's timeline: the steps of its life that a change makes (submitted, approved,
//! placed, started, lost, requeued, finished, ...), decided here from the change and the task
//! before and after it, and written by the store in the same transaction as the change.

use super::model::{Change, Task};
use ferry_common::TaskStatus;

/// One step, about the task as it is after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub event: &'static str,
    pub detail: Option<String>,
}

fn step(event: &'static str, detail: Option<String>) -> Step {
    Step { event, detail }
}

/// The steps of a new task.
pub fn submitted(t: &Task) -> Vec<Step> {
    let detail = match t.status {
        TaskStatus::PendingApproval => Some("awaiting approval".to_string()),
        TaskStatus::Pending => Some("queued".to_string()),
        _ => None,
    };
    vec![step("submitted", detail)]
}

/// The steps `change` made of `before`, now `after`. `approver` names who approved.
pub fn changed(before: &Task, after: &Task, change: &Change, approver: Option<&str>) -> Vec<Step> {
    let inner = change.innermost();
    let moved = before.status != after.status;
    let mut out = Vec::new();
    match inner {
        Change::Place { node } => out.push(step("placed", Some(format!("on {node}")))),
        Change::Approve { .. } => out.push(step("approved", approver.map(|a| format!("by {a}")))),
        Change::Reject { reason, .. } => out.push(step("rejected", reason.clone())),
        Change::Kill { reason } => out.push(step("kill_requested", Some(reason.clone()))),
        Change::Stop { reason } => out.push(step("stop_requested", Some(reason.clone()))),
        Change::Restart => out.push(step("restarted", None)),
        Change::Retry { reason } => out.push(step("retried", Some(reason.clone()))),
        Change::Requeue { reason } => out.push(step("requeued", Some(reason.clone()))),
        Change::Lost { reason } if moved => out.push(step("lost", Some(reason.clone()))),
        Change::Report(_) | Change::Running { .. } if moved => {
            match (before.status, after.status) {
                (TaskStatus::Lost, TaskStatus::Running) => {
                    out.push(step("recovered", Some("its node is back".into())))
                }
                (TaskStatus::Paused, TaskStatus::Running) => out.push(step("resumed", None)),
                (_, TaskStatus::Paused) => out.push(step("paused", None)),
                (_, TaskStatus::Running) => out.push(step("started", None)),
                _ => {}
            }
        }
        _ => {}
    }
    if moved && after.status.is_final() && !before.status.is_final() {
        let detail = match (&after.error_message, after.exit_code) {
            (Some(m), _) => Some(m.clone()),
            (None, Some(code)) => Some(format!("exit code {code}")),
            (None, None) => None,
        };
        out.push(step("finished", detail));
    }
    if before.booked && !after.booked {
        out.push(step(
            "released",
            Some("its resources are free again".into()),
        ));
    }
    out
}

/// The steps of an attempt that ended and is retried at once: what ended it (as
/// [`changed`] says) with `finished` named `attempt_ended`, since the task goes on.
pub fn attempt_ended(before: &Task, ended: &Task, change: &Change) -> Vec<Step> {
    changed(before, ended, change, None)
        .into_iter()
        .map(|s| match s.event {
            "finished" => step("attempt_ended", s.detail),
            _ => s,
        })
        .collect()
}

/// The step of a task queued again as its next attempt by its retry policy.
pub fn retried(next: &Task) -> Vec<Step> {
    vec![step("retried", next.error_message.clone())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::model::tests::sample;

    fn with(status: TaskStatus) -> Task {
        let mut t = sample(1);
        t.status = status;
        t
    }

    #[test]
    fn a_run_is_placed_started_and_finished() {
        let (pending, assigning) = (with(TaskStatus::Pending), with(TaskStatus::Assigning));
        let place = Change::Place { node: "n1".into() };
        assert_eq!(
            changed(&pending, &assigning, &place, None),
            vec![step("placed", Some("on n1".into()))]
        );
        let running = with(TaskStatus::Running);
        let report = Change::Running { paused: false };
        assert_eq!(
            changed(&assigning, &running, &report, None)[0].event,
            "started"
        );
        let mut done = with(TaskStatus::Completed);
        done.exit_code = Some(0);
        let steps = changed(&running, &done, &Change::Report(Default::default()), None);
        assert_eq!(steps, vec![step("finished", Some("exit code 0".into()))]);
    }

    #[test]
    fn a_retried_attempt_ends_without_finishing_the_task() {
        let running = with(TaskStatus::Running);
        let mut failed = with(TaskStatus::Failed);
        failed.exit_code = Some(1);
        let steps = attempt_ended(&running, &failed, &Change::Report(Default::default()));
        assert_eq!(
            steps,
            vec![step("attempt_ended", Some("exit code 1".into()))]
        );
    }

    #[test]
    fn a_lost_task_that_comes_back_is_recovered_and_a_repeat_adds_nothing() {
        let (running, lost) = (with(TaskStatus::Running), with(TaskStatus::Lost));
        let change = Change::Lost {
            reason: "node n1 went offline".into(),
        };
        assert_eq!(changed(&running, &lost, &change, None)[0].event, "lost");
        let back = Change::Running { paused: false };
        assert_eq!(changed(&lost, &running, &back, None)[0].event, "recovered");
        assert!(changed(&running, &running, &back, None).is_empty());
    }
}
