//! Into a running container: what a user reaches through the host's `/ws` and file routes.
//! The runner serves its tasks and VPSes with it; the host serves its environment containers
//! with the same code. Each part speaks the original's wire format and knows nothing of
//! either daemon's task model: it is given a container's root, its network namespace or a
//! way to open a TTY.
//!
//! [`files`]: the file routes' operations, parsed and run on a root with [`fs`].
//! [`terminal`]: a shell on a TTY, as JSON frames over a WebSocket ([`tty`] is the seam,
//! [`docker`] opens one through Docker's exec API). [`fs`]: file operations on the
//! container's root, never leaving it. [`watch`]: inotify on the container's directories, as
//! JSON frames. [`forward`]: TCP and UDP streams to the container's ports, opened from inside
//! its network namespace. [`follow`]: a task's log as it is written. [`utf8`]: output cut on
//! character boundaries.

pub mod docker;
pub mod files;
pub mod follow;
pub mod forward;
pub mod fs;
pub mod terminal;
pub mod tty;
pub mod utf8;
pub mod watch;
