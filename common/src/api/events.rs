//! Live events (`GET /api/events` as Server-Sent Events, `/ws/events` as a WebSocket): every
//! task state change, placement, queue-position change, approval and node liveness change,
//! numbered by an index that only grows.

use crate::{TaskId, TaskStatus};
use serde::{Deserialize, Serialize};

/// What an event is about; subscribers choose topics (`?topics=task,node`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventTopic {
    /// Command tasks.
    Task,
    /// VPS sessions (tasks of type `vps`).
    Vps,
    Node,
    Approval,
    /// The stream itself: `stream.too_old` (what was asked for is gone from the buffer:
    /// list again, then follow from this event) and `stream.dropped` (too slow a reader).
    /// Always sent, whatever the topics.
    Stream,
}

impl EventTopic {
    pub const ALL: [EventTopic; 5] = [
        EventTopic::Task,
        EventTopic::Vps,
        EventTopic::Node,
        EventTopic::Approval,
        EventTopic::Stream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventTopic::Task => "task",
            EventTopic::Vps => "vps",
            EventTopic::Node => "node",
            EventTopic::Approval => "approval",
            EventTopic::Stream => "stream",
        }
    }

    pub fn parse(s: &str) -> Option<EventTopic> {
        EventTopic::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One event. `type` is `<topic>.<what>`: `task.submitted`, `task.status`, `task.placed`,
/// `task.queue_position` (the same with `vps.`), `approval.requested`, `approval.approved`,
/// `approval.rejected`, `node.registered`, `node.online`, `node.offline`, `node.removed`,
/// `stream.too_old`, `stream.dropped`. Fields that do not apply are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterEvent {
    /// Grows by one per event; also the SSE `id`, to resume from with `Last-Event-ID` or
    /// `?since=`. Numbering starts from the host's start time, so it keeps growing across
    /// restarts.
    pub index: u64,
    /// When it happened (RFC 3339).
    pub time: String,
    pub topic: EventTopic,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<TaskStatus>,
    /// The task's attempt (1 for the first run, one more for each retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// Why (an error message, a kill's or rejection's reason, why a node went offline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

impl ClusterEvent {
    /// An event of `topic` and `what` (`type` becomes `<topic>.<what>`), not numbered yet.
    pub fn new(topic: EventTopic, what: &str) -> ClusterEvent {
        ClusterEvent {
            index: 0,
            time: String::new(),
            topic,
            kind: format!("{}.{what}", topic.as_str()),
            task_id: None,
            owner_id: None,
            owner_username: None,
            node: None,
            status: None,
            previous_status: None,
            attempt: None,
            queue_position: None,
            reason: None,
            exit_code: None,
        }
    }
}

/// One step of a task's life, as `GET /api/tasks/{id}/events` lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEntry {
    /// RFC 3339.
    pub time: String,
    /// `submitted`, `approved`, `rejected`, `placed`, `dispatched`, `started`, `paused`,
    /// `resumed`, `kill_requested`, `stop_requested`, `lost`, `recovered`, `requeued`,
    /// `restarted`, `finished`, `attempt_ended`, `retried`, `released`.
    pub event: String,
    /// The task's status after the step.
    pub status: String,
    pub node: Option<String>,
    /// The attempt (run) the step belongs to: 1 for the first, one more for each retry.
    pub attempt: u32,
    /// The placement (0: never placed; one more each time the task is put on a node).
    #[serde(default)]
    pub placement: u32,
    pub detail: Option<String>,
}

/// Reply of `GET /api/tasks/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskTimeline {
    pub task_id: TaskId,
    /// Oldest first.
    pub events: Vec<TimelineEntry>,
}
