//! The event bus: a bounded ring of recent events (for replay to a client that reconnects)
//! and a broadcast channel for live delivery. Publishing never waits: a subscriber that falls
//! more than [`LIVE_BACKLOG`] events behind is dropped by its own stream, not waited for.

use ferry_common::api::ClusterEvent;
use ferry_common::time::{format_ms, now_ms};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept for replay.
pub const REPLAY_BUFFER: usize = 10_000;
/// Events a live subscriber may fall behind before it is dropped.
pub const LIVE_BACKLOG: usize = 4_096;
/// Indexes of one start begin at its Unix seconds times this, so they keep growing across
/// restarts (unless a run averaged more events per second of its life) and stay exact in
/// JavaScript numbers.
const INDEX_PER_SECOND: u64 = 10_000;

pub struct EventBus {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<ClusterEvent>>,
}

struct Ring {
    next: u64,
    events: VecDeque<Arc<ClusterEvent>>,
    capacity: usize,
}

/// What a subscriber missed since the index it gave.
#[derive(Debug)]
pub enum Replay {
    Events(Vec<Arc<ClusterEvent>>),
    /// Older than the buffer holds (or from another run): the caller lists again.
    TooOld,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(REPLAY_BUFFER, LIVE_BACKLOG)
    }
}

impl EventBus {
    pub fn new(replay: usize, backlog: usize) -> EventBus {
        let first = (now_ms().max(0) as u64 / 1000) * INDEX_PER_SECOND + 1;
        EventBus {
            ring: Mutex::new(Ring {
                next: first,
                events: VecDeque::with_capacity(replay.min(1024)),
                capacity: replay.max(1),
            }),
            live: broadcast::channel(backlog.max(1)).0,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers, stamps and sends `event`.
    pub fn publish(&self, mut event: ClusterEvent) {
        let mut ring = self.ring();
        event.index = ring.next;
        ring.next += 1;
        if event.time.is_empty() {
            event.time = format_ms(now_ms());
        }
        let event = Arc::new(event);
        if ring.events.len() == ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Under the ring's lock: a subscriber joining now sees each event once, in order,
        // either in its replay or live. No receiver is fine.
        let _ = self.live.send(event);
    }

    /// The index the next event gets.
    pub fn next_index(&self) -> u64 {
        self.ring().next
    }

    /// Joins the live stream; with `since`, also what came after that index.
    pub fn subscribe(
        &self,
        since: Option<u64>,
    ) -> (Replay, broadcast::Receiver<Arc<ClusterEvent>>) {
        let ring = self.ring();
        let live = self.live.subscribe();
        let replay = match since {
            None => Replay::Events(Vec::new()),
            Some(since) => {
                let oldest = ring.events.front().map_or(ring.next, |e| e.index);
                if since >= ring.next || since.saturating_add(1) < oldest {
                    Replay::TooOld
                } else {
                    Replay::Events(
                        ring.events
                            .iter()
                            .filter(|e| e.index > since)
                            .cloned()
                            .collect(),
                    )
                }
            }
        };
        (replay, live)
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_common::api::EventTopic;

    fn ev() -> ClusterEvent {
        ClusterEvent::new(EventTopic::Task, "status")
    }

    #[test]
    fn indexes_grow_and_a_replay_returns_what_came_after() {
        let bus = EventBus::new(3, 8);
        let first = bus.next_index();
        for _ in 0..3 {
            bus.publish(ev());
        }
        let (replay, _) = bus.subscribe(Some(first));
        match replay {
            Replay::Events(e) => {
                let got: Vec<u64> = e.iter().map(|e| e.index).collect();
                assert_eq!(got, vec![first + 1, first + 2]);
            }
            Replay::TooOld => panic!("in the buffer"),
        }
        // Nothing missed: the last index seen.
        let (replay, _) = bus.subscribe(Some(first + 2));
        assert!(matches!(replay, Replay::Events(e) if e.is_empty()));
    }

    #[test]
    fn an_index_older_than_the_buffer_or_from_the_future_is_too_old() {
        let bus = EventBus::new(2, 8);
        let first = bus.next_index();
        for _ in 0..4 {
            bus.publish(ev());
        }
        // Buffer holds first+2, first+3: a client that saw first has missed first+1.
        assert!(matches!(bus.subscribe(Some(first)).0, Replay::TooOld));
        assert!(matches!(bus.subscribe(Some(first + 1)).0, Replay::Events(e) if e.len() == 2));
        assert!(matches!(bus.subscribe(Some(first + 100)).0, Replay::TooOld));
    }

    #[tokio::test]
    async fn live_events_follow_the_replay_without_a_gap_or_a_repeat() {
        let bus = EventBus::new(100, 8);
        let first = bus.next_index();
        bus.publish(ev());
        let (replay, mut live) = bus.subscribe(Some(first - 1));
        bus.publish(ev());
        let Replay::Events(seen) = replay else {
            panic!("in the buffer")
        };
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].index, first);
        assert_eq!(live.recv().await.unwrap().index, first + 1);
    }
}
