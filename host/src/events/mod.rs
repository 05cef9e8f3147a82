//! Live events: the bus every state change is published on ([`bus`]), and what one subscriber
//! is shown of it ([`subscription`]: topics, filters, what the caller may read, replay from
//! an index, a clear end for a reader too slow or too far behind). The routes are
//! `api/events.rs`; the scheduler publishes what tasks do ([`tasks`] makes those events) and
//! the cluster registry what nodes do.

pub mod bus;
pub mod subscription;
pub mod tasks;

pub use bus::EventBus;
pub use subscription::{Filter, Subscription};
