//! The seam between the supervisor and whatever runs a task: one [`Workload`] trait covering a
//! workload's whole life (prepare, create, start, inspect, wait, logs, kill, stop, pause,
//! resume, remove, and finding this runner's workloads again after a restart), plus what a
//! VPS needs: files written in before it starts, a published port, and snapshots. Docker implements it
//! now ([`docker`]); QEMU will plug in beside it. Nothing here assumes containers: a workload
//! has a name, a spec of what to run, labels that say whose it is, and an exit.

pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod logcap;

use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot reach the workload engine: {0}")]
    Unreachable(String),
    #[error("image {image} is not available locally and could not be fetched: {reason}")]
    Image { image: String, reason: String },
    #[error("no such workload: {0}")]
    NotFound(String),
    #[error("workload {0} already exists")]
    Exists(String),
    #[error("engine: {0}")]
    Engine(String),
}

/// What one workload is made of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadSpec {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// Who it belongs to (task id, kind, runner); how [`Workload::find`] finds it again.
    pub labels: HashMap<String, String>,
    /// CPU quota in billionths of a core; `None`: no limit.
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    /// `host_path:workload_path` mounts.
    pub binds: Vec<String>,
    /// CPUs and memory nodes to bind to (a NUMA-targeted task).
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// NVIDIA GPU indices to expose.
    pub gpus: Vec<u32>,
    /// Most processes (and threads) at once; `None`: the engine's default (none).
    pub pids_limit: Option<i64>,
    /// Engine security options (`no-new-privileges`).
    pub security_opt: Vec<String>,
    /// Capabilities added to and dropped from the engine's default set.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Cap on the engine's own copy of the output (one file, no rotated copies kept).
    pub max_log_bytes: Option<u64>,
    /// TCP ports of the workload published on ephemeral ports of the node.
    pub publish: Vec<u16>,
    /// Run the command under a small init (signals forwarded, zombies reaped): a long-lived
    /// session whose own PID 1 would ignore SIGTERM still stops at once.
    pub init: bool,
}

/// One file or directory written into a workload (owned by root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute path inside the workload.
    pub path: String,
    pub mode: u32,
    /// `None`: a directory.
    pub contents: Option<Vec<u8>>,
}

impl FileEntry {
    pub fn dir(path: &str, mode: u32) -> FileEntry {
        FileEntry {
            path: path.to_string(),
            mode,
            contents: None,
        }
    }

    pub fn file(path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> FileEntry {
        FileEntry {
            path: path.to_string(),
            mode,
            contents: Some(contents.into()),
        }
    }
}

/// A saved image of a workload's whole filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotImage {
    pub tag: String,
    /// When it was taken (Unix seconds, from the engine).
    pub created: i64,
    pub size: i64,
}

/// How a workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i64,
    /// The kernel's OOM killer ended it (as the engine records it, never guessed from 137).
    pub oom_killed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Paused,
    Exited(Exit),
}

/// An interactive shell on a TTY inside a running workload (the shared access crate's seam).
pub use ferry_access::tty::TtySession;

/// A workload found by its labels: its name and all its labels.
pub type Found = (String, HashMap<String, String>);

pub type WorkloadResult<'a, T> = BoxFuture<'a, Result<T, WorkloadError>>;

/// One engine that runs workloads. Methods taking a name act on the workload of that name.
pub trait Workload: Send + Sync + 'static {
    /// The engine answers.
    fn ping(&self) -> WorkloadResult<'_, ()>;
    /// Makes what `spec` needs available locally (an image pull for Docker).
    fn prepare<'a>(&'a self, spec: &'a WorkloadSpec) -> WorkloadResult<'a, ()>;
    /// Creates the workload without starting it; [`WorkloadError::Exists`] if the name is taken.
    fn create<'a>(&'a self, spec: &'a WorkloadSpec) -> WorkloadResult<'a, ()>;
    fn start<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()>;
    fn inspect<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, State>;
    /// Its labels: whose it is.
    fn labels<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, HashMap<String, String>>;
    /// Waits until it is no longer running; how it ended.
    fn wait<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, Exit>;
    /// Copies its whole output from its start into two files (replacing them) and follows it
    /// until it stops; each file keeps at most `max_bytes` of output, then a line saying it
    /// was cut (see [`logcap`]).
    fn capture_logs<'a>(
        &'a self,
        name: &'a str,
        stdout: PathBuf,
        stderr: PathBuf,
        max_bytes: u64,
    ) -> BoxFuture<'a, std::io::Result<()>>;
    /// Attaches to a created, not yet started workload's output and returns the copy (made as
    /// [`Workload::capture_logs`] makes it) that runs until the workload stops. Read live, so
    /// nothing is lost to the engine's own log cap.
    fn attach_logs<'a>(
        &'a self,
        name: &'a str,
        stdout: PathBuf,
        stderr: PathBuf,
        max_bytes: u64,
    ) -> WorkloadResult<'a, BoxFuture<'static, std::io::Result<()>>>;
    /// Kills it at once; killing one that no longer runs succeeds.
    fn kill<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()>;
    fn pause<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()>;
    fn resume<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()>;
    /// Removes it, running or not; removing one that is gone succeeds.
    fn remove<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()>;
    /// Every workload carrying `label=value`, running or not.
    fn find<'a>(&'a self, label: &'a str, value: &'a str) -> WorkloadResult<'a, Vec<Found>>;
    /// Asks it to stop (SIGTERM), kills it after `grace`; stopping one that is gone succeeds.
    fn stop<'a>(&'a self, name: &'a str, grace: std::time::Duration) -> WorkloadResult<'a, ()>;
    /// Whether `path` exists inside a created (or running) workload.
    fn path_exists<'a>(&'a self, name: &'a str, path: &'a str) -> WorkloadResult<'a, bool>;
    /// Reads a small file (at most `max` bytes) from inside the workload; `None`: no such file.
    fn read_file<'a>(
        &'a self,
        name: &'a str,
        path: &'a str,
        max: usize,
    ) -> WorkloadResult<'a, Option<Vec<u8>>>;
    /// Writes files and directories into the workload, through the engine (never a shell).
    fn write_files<'a>(&'a self, name: &'a str, files: &'a [FileEntry]) -> WorkloadResult<'a, ()>;
    /// The node port `port` of the workload is published on, once it runs.
    fn published_port<'a>(&'a self, name: &'a str, port: u16) -> WorkloadResult<'a, Option<u16>>;
    /// Saves the workload's filesystem as `repository:tag` (frozen only while it is copied).
    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        repository: &'a str,
        tag: &'a str,
        message: &'a str,
    ) -> WorkloadResult<'a, ()>;
    /// The snapshots kept in `repository`, in no particular order.
    fn snapshots<'a>(&'a self, repository: &'a str) -> WorkloadResult<'a, Vec<SnapshotImage>>;
    /// Where the running workload's root filesystem is seen from the node
    /// (`/proc/<pid>/root`), and the user its processes run as (the image's `User`, empty for
    /// root): what the file routes work on.
    fn fs_root<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, (PathBuf, String)>;
    /// The running workload's network namespace as the node sees it (`/proc/<pid>/ns/net`):
    /// where forwarded connections are opened from.
    fn net_namespace<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, PathBuf>;
    /// Opens a shell (the first of `shells` that exists) on a TTY of `rows` x `cols`.
    fn open_tty<'a>(
        &'a self,
        name: &'a str,
        shells: &'a [&'a str],
        rows: u16,
        cols: u16,
    ) -> WorkloadResult<'a, TtySession>;
    /// Deletes one snapshot; deleting one that is gone succeeds.
    fn remove_snapshot<'a>(&'a self, repository: &'a str, tag: &'a str) -> WorkloadResult<'a, ()>;
    /// When a local image was made (Unix seconds); `None` when there is no such image.
    fn image_created<'a>(&'a self, image: &'a str) -> WorkloadResult<'a, Option<i64>>;
    /// Loads an image archive (`docker save` format) streamed from `path`, counting the bytes
    /// sent in `sent`; the loaded image (its id, or the reference the archive names). Nothing
    /// is tagged here.
    fn load_image<'a>(
        &'a self,
        path: &'a std::path::Path,
        sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> WorkloadResult<'a, String>;
    /// What environment images (`kohakuriver/*`) and VPS snapshots
    /// (`kohakuriver-snapshot/*`) take in the engine.
    fn image_usage(&self) -> WorkloadResult<'_, ImageUsage>;
    /// Tags `source` (an id or reference) as `repository:tag`.
    fn tag_image<'a>(
        &'a self,
        source: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> WorkloadResult<'a, ()>;
}

/// Disk taken by images Ferry made, by kind (see [`Workload::image_usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageUsage {
    /// Full size of each environment image.
    pub environment_bytes: u64,
    pub environments: u32,
    /// What each snapshot adds to the image it was committed from.
    pub snapshot_bytes: u64,
    pub snapshots: u32,
}
