//! The task room: what a task is ([`model`]: the host's `Task` and its pure transitions) and
//! the services behind the task routes — [`access`] (who may go into a running task), [`submit`], [`control`] (kill, pause, resume),
//! [`approval`], [`logs`], [`views`] (reads, and how a task looks to each caller) and [`vps`]
//! (VPS sessions: create, stop, restart, lists, assignments, snapshots). Each
//! service returns its own error; the API maps them to status codes.

pub mod access;
pub mod approval;
pub mod control;
pub mod logs;
pub mod model;
pub mod submit;
pub mod timeline;
pub mod views;
pub mod vps;

pub use model::{Change, Report, Task};
