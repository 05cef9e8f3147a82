//! Into a running task or VPS: what a user reaches through the host's `/ws` routes. Each part
//! works on a workload through the [`Workload`](crate::workload::Workload) seam and speaks the
//! original's wire format, and none of it knows about the supervisor, so the host can serve
//! its own containers with the same code once it moves to a shared crate.
//!
//! [`terminal`]: a shell on a TTY, as JSON frames over a WebSocket. [`fs`]: file operations
//! on the container's root, never leaving it. [`watch`]: inotify on the container's
//! directories, as JSON frames. [`forward`]: TCP and UDP streams to the container's ports,
//! opened from inside its network namespace.

pub mod forward;
pub mod fs;
pub mod terminal;
pub mod utf8;
pub mod watch;
