//! The events a task's changes make: what the scheduler publishes as it writes them.

use crate::store::tasks::Transition;
use crate::tasks::model::{Change, Task};
use ferry_common::api::{ClusterEvent, EventTopic};
use ferry_common::{TaskKind, TaskStatus};

fn topic_of(t: &Task) -> EventTopic {
    match t.definition.kind() {
        TaskKind::Vps => EventTopic::Vps,
        _ => EventTopic::Task,
    }
}

/// An event about `t` of `topic`, with the task's owner, node, status and attempt (run).
fn about(t: &Task, topic: EventTopic, what: &str) -> ClusterEvent {
    let mut e = ClusterEvent::new(topic, what);
    e.task_id = Some(t.id);
    e.owner_id = t.owner_id;
    e.owner_username = t.owner_username.clone();
    e.node = t.assigned_node.clone().or_else(|| t.target_node.clone());
    e.status = Some(t.status);
    e.attempt = Some(t.run);
    e
}

/// A task was submitted (and, when it must be approved first, an approval was requested).
pub fn submitted(t: &Task) -> Vec<ClusterEvent> {
    let mut out = vec![about(t, topic_of(t), "submitted")];
    if t.status == TaskStatus::PendingApproval {
        out.push(about(t, EventTopic::Approval, "requested"));
    }
    out
}

/// A task was placed on a node.
pub fn placed(t: &Task) -> ClusterEvent {
    about(t, topic_of(t), "placed")
}

/// What a change written to a task shows: its new status (with the old one and why), and an
/// approval's outcome.
pub fn changed(tr: &Transition, change: &Change) -> Vec<ClusterEvent> {
    let (before, after) = (&tr.before, &tr.after);
    let mut out = Vec::new();
    let inner = change.innermost();
    match inner {
        Change::Approve { .. } => out.push(about(after, EventTopic::Approval, "approved")),
        Change::Reject { reason, .. } => {
            let mut e = about(after, EventTopic::Approval, "rejected");
            e.reason = reason.clone();
            out.push(e);
        }
        _ => {}
    }
    if let Some(ended) = &tr.ended_attempt {
        // Retried at once: the attempt's end (how, where, its exit code), then the task's
        // move back to the queue below.
        let mut e = about(ended, topic_of(ended), "attempt_ended");
        e.previous_status = Some(before.status);
        e.reason = ended.error_message.clone();
        e.exit_code = ended.exit_code;
        out.push(e);
    }
    if before.status != after.status {
        let mut e = about(after, topic_of(after), "status");
        e.previous_status = Some(before.status);
        e.reason = match inner {
            Change::Kill { reason }
            | Change::Stop { reason }
            | Change::Requeue { reason }
            | Change::Lost { reason } => Some(reason.clone()),
            _ => after.error_message.clone(),
        };
        e.exit_code = after.exit_code.filter(|_| after.status.is_final());
        out.push(e);
    }
    out
}

/// A queued task's place in the queue changed.
pub fn queue_moved(t: &Task, position: u64) -> ClusterEvent {
    let mut e = about(t, topic_of(t), "queue_position");
    e.queue_position = Some(position);
    e
}
