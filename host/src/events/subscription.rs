//! One subscriber's view of the bus: the topics and filters it asked for, limited to what
//! its caller may read (a `user` sees only their own tasks, as the read routes show them),
//! the events it missed since the index it gave, then live ones. Too far behind, it gets a
//! `stream.too_old` (list again, then follow); too slow, a `stream.dropped` and the end.

use super::bus::{EventBus, Replay};
use ferry_common::api::{ClusterEvent, EventTopic};
use ferry_common::TaskId;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};

/// Longest `owner` or `node` a filter takes.
const MAX_NAME: usize = 255;

/// Who reads: everything (viewers and up), or one owner's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    All,
    Owner(Option<i64>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// `None`: every topic.
    pub topics: Option<HashSet<EventTopic>>,
    pub task_id: Option<TaskId>,
    pub owner: Option<String>,
    pub node: Option<String>,
    pub reader: Reader,
}

/// A filter the caller got wrong: the field and why.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BadFilter {
    pub field: &'static str,
    pub message: String,
}

impl Filter {
    /// From the query's `topics` (comma-separated), `task_id`, `owner` and `node`.
    pub fn parse(
        topics: Option<&str>,
        task_id: Option<&str>,
        owner: Option<&str>,
        node: Option<&str>,
        reader: Reader,
    ) -> Result<Filter, BadFilter> {
        let topics = match topics.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(|t| {
                        EventTopic::parse(t.trim()).ok_or_else(|| BadFilter {
                            field: "topics",
                            message: format!(
                                "unknown topic {:?}; topics are task, vps, node, approval",
                                t.trim()
                            ),
                        })
                    })
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
        };
        let task_id = match task_id {
            None => None,
            Some(t) => Some(t.parse::<TaskId>().map_err(|_| BadFilter {
                field: "task_id",
                message: format!("{t:?} is not a task id"),
            })?),
        };
        let name = |field: &'static str, v: Option<&str>| match v {
            Some(v) if v.len() > MAX_NAME => Err(BadFilter {
                field,
                message: format!("longer than {MAX_NAME} bytes"),
            }),
            v => Ok(v.map(str::to_string)),
        };
        Ok(Filter {
            topics,
            task_id,
            owner: name("owner", owner)?,
            node: name("node", node)?,
            reader,
        })
    }

    /// Whether this subscriber is shown `e`.
    pub fn shows(&self, e: &ClusterEvent) -> bool {
        if e.topic == EventTopic::Stream {
            return true;
        }
        let about_a_task = matches!(
            e.topic,
            EventTopic::Task | EventTopic::Vps | EventTopic::Approval
        );
        if let Reader::Owner(me) = self.reader {
            if about_a_task && (me.is_none() || e.owner_id != me) {
                return false;
            }
        }
        if self.topics.as_ref().is_some_and(|t| !t.contains(&e.topic)) {
            return false;
        }
        if self.task_id.is_some() && e.task_id != self.task_id {
            return false;
        }
        if self.owner.is_some() && e.owner_username != self.owner {
            return false;
        }
        if self.node.is_some() && e.node != self.node {
            return false;
        }
        true
    }
}

pub struct Subscription {
    filter: Filter,
    replay: VecDeque<Arc<ClusterEvent>>,
    live: broadcast::Receiver<Arc<ClusterEvent>>,
    /// A `stream.*` event to send before anything else.
    notice: Option<Arc<ClusterEvent>>,
    /// The last index this subscriber has been given (for `stream.*` events' index).
    last: u64,
    ended: bool,
}

impl Subscription {
    pub fn new(bus: &EventBus, filter: Filter, since: Option<u64>) -> Subscription {
        let before = bus.next_index().saturating_sub(1);
        let (replay, live) = bus.subscribe(since);
        let (replay, notice) = match replay {
            Replay::Events(e) => (e.into(), None),
            Replay::TooOld => (
                VecDeque::new(),
                Some(stream_event(
                    "too_old",
                    before,
                    format!(
                        "events after {} are no longer kept: list what you need again, then \
                         follow from index {before}",
                        since.unwrap_or(0)
                    ),
                )),
            ),
        };
        Subscription {
            filter,
            replay,
            live,
            notice,
            last: since.unwrap_or(before),
            ended: false,
        }
    }

    /// The next event to send; `None` once the stream is over (after `stream.dropped`).
    pub async fn next(&mut self) -> Option<Arc<ClusterEvent>> {
        if self.ended {
            return None;
        }
        if let Some(n) = self.notice.take() {
            return Some(n);
        }
        while let Some(e) = self.replay.pop_front() {
            self.last = e.index;
            if self.filter.shows(&e) {
                return Some(e);
            }
        }
        loop {
            match self.live.recv().await {
                Ok(e) => {
                    self.last = e.index;
                    if self.filter.shows(&e) {
                        return Some(e);
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    self.ended = true;
                    return Some(stream_event(
                        "dropped",
                        self.last,
                        format!(
                            "this reader fell {missed} events behind and is dropped; reconnect \
                             with Last-Event-ID {} to resume",
                            self.last
                        ),
                    ));
                }
                Err(RecvError::Closed) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }
}

fn stream_event(what: &str, index: u64, reason: String) -> Arc<ClusterEvent> {
    let mut e = ClusterEvent::new(EventTopic::Stream, what);
    e.index = index;
    e.time = ferry_common::time::format_ms(ferry_common::time::now_ms());
    e.reason = Some(reason);
    Arc::new(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_event(owner: i64, task: u64) -> ClusterEvent {
        let mut e = ClusterEvent::new(EventTopic::Task, "status");
        e.owner_id = Some(owner);
        e.task_id = Some(TaskId(task));
        e
    }

    fn all() -> Filter {
        Filter::parse(None, None, None, None, Reader::All).unwrap()
    }

    #[test]
    fn a_user_sees_only_their_own_tasks_but_every_node() {
        let f = Filter::parse(None, None, None, None, Reader::Owner(Some(7))).unwrap();
        assert!(f.shows(&task_event(7, 1)));
        assert!(!f.shows(&task_event(8, 2)));
        assert!(f.shows(&ClusterEvent::new(EventTopic::Node, "online")));
        let nobody = Filter::parse(None, None, None, None, Reader::Owner(None)).unwrap();
        assert!(!nobody.shows(&task_event(7, 1)));
    }

    #[test]
    fn topics_and_filters_narrow_and_bad_ones_name_the_field() {
        let f = Filter::parse(Some("node"), None, None, None, Reader::All).unwrap();
        assert!(!f.shows(&task_event(1, 1)));
        assert!(f.shows(&ClusterEvent::new(EventTopic::Stream, "too_old")));
        let f = Filter::parse(None, Some("5"), None, None, Reader::All).unwrap();
        assert!(f.shows(&task_event(1, 5)) && !f.shows(&task_event(1, 6)));
        let e = Filter::parse(Some("task,bogus"), None, None, None, Reader::All).unwrap_err();
        assert_eq!(e.field, "topics");
        let e = Filter::parse(None, Some("x"), None, None, Reader::All).unwrap_err();
        assert_eq!(e.field, "task_id");
        let long = "n".repeat(300);
        let e = Filter::parse(None, None, None, Some(&long), Reader::All).unwrap_err();
        assert_eq!(e.field, "node");
    }

    #[tokio::test]
    async fn a_reader_too_slow_gets_dropped_with_where_to_resume() {
        let bus = EventBus::new(100, 2);
        let mut sub = Subscription::new(&bus, all(), None);
        for i in 0..5 {
            bus.publish(task_event(1, i));
        }
        let e = sub.next().await.unwrap();
        assert_eq!(e.kind, "stream.dropped", "{e:?}");
        assert!(sub.next().await.is_none(), "the stream is over");
    }

    #[tokio::test]
    async fn a_reader_from_too_long_ago_is_told_to_list_again() {
        let bus = EventBus::new(2, 8);
        let first = bus.next_index();
        for i in 0..5 {
            bus.publish(task_event(1, i));
        }
        let mut sub = Subscription::new(&bus, all(), Some(first));
        let e = sub.next().await.unwrap();
        assert_eq!(e.kind, "stream.too_old");
        assert_eq!(e.index, first + 4, "resume from the newest");
        bus.publish(task_event(1, 9));
        assert_eq!(sub.next().await.unwrap().index, first + 5);
    }
}
