//! Where a task's files live on the node. Each task gets its own scratch directory,
//! `<local_temp_dir>/<task id>`, mounted at `/local_temp` and removed when the runner forgets
//! the task, so no task reads or changes another's scratch files (they used to share one
//! directory, across users). With a shared filesystem, `/shared` is the owner's directory
//! `<shared_dir>/shared_data/<user>`, or the whole of `shared_data` when
//! `shared_mount = "whole"`.

use crate::config::SharedMount;
use ferry_common::TaskId;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The `/shared` directory of tasks whose owner the host did not say (a host from before
/// `owner`, or authentication off). Host user names never start with `_`, so no user has it.
pub const ANONYMOUS: &str = "_anonymous";

/// Prefix of scratch directories on their way out (see [`discard`]).
const TRASH_PREFIX: &str = ".trash-";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("owner: {0:?} is not a plain user name (letters, digits, '.', '_', '-'; not '.', '..' or starting with '_')")]
pub struct BadOwner(pub String);

/// The directory name of a task's owner under `shared_data`. A name the host sends becomes a
/// path component, so anything that could be more than one (`/`, `..`) or hidden behind the
/// reserved anonymous name is refused.
pub fn owner_dir(owner: Option<&str>) -> Result<&str, BadOwner> {
    let Some(name) = owner else {
        return Ok(ANONYMOUS);
    };
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with('_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        Ok(name)
    } else {
        Err(BadOwner(name.to_string()))
    }
}

pub fn task_dir(local_temp_dir: &Path, id: TaskId) -> PathBuf {
    local_temp_dir.join(id.to_string())
}

/// What a task sees at `/shared`.
pub fn shared_source(shared_dir: &Path, mode: SharedMount, owner_dir: &str) -> PathBuf {
    let data = shared_dir.join("shared_data");
    match mode {
        SharedMount::PerUser => data.join(owner_dir),
        SharedMount::Whole => data,
    }
}

/// Creates a task's scratch directory, private to the runner's user (and so to the task's
/// container, which is the only other thing that mounts it).
pub fn create_task_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        // A re-sent dispatch or a restart: the task's directory is already there.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Moves a task's scratch directory out of the way at once (a rename) and returns where it
/// went, for [`purge`] to delete later; `None` if there was none. The rename is what makes
/// forgetting a task quick: deleting a large tree is left to a blocking thread, and a task
/// of the same id dispatched again meanwhile starts with an empty directory.
pub fn discard(local_temp_dir: &Path, id: TaskId) -> std::io::Result<Option<PathBuf>> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = task_dir(local_temp_dir, id);
    let trash = local_temp_dir.join(format!("{TRASH_PREFIX}{id}.{}.{n}", std::process::id()));
    match std::fs::rename(&dir, &trash) {
        Ok(()) => Ok(Some(trash)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes a discarded directory (blocking: call it from a blocking thread).
pub fn purge(trash: &Path) {
    if let Err(e) = std::fs::remove_dir_all(trash) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %trash.display(), error = %e, "cannot delete a finished task's scratch directory");
        }
    }
}

/// Deletes what earlier runs discarded but did not get to delete (blocking).
pub fn purge_leftovers(local_temp_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(local_temp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(TRASH_PREFIX)
        {
            purge(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owners_are_plain_path_components() {
        assert_eq!(owner_dir(None), Ok(ANONYMOUS));
        for ok in ["alice", "bob.smith", "x-1", "a_b", ".dot"] {
            assert_eq!(owner_dir(Some(ok)), Ok(ok));
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "_anonymous",
            "a b",
            "a\0b",
            "é",
        ] {
            assert!(owner_dir(Some(bad)).is_err(), "{bad:?} accepted");
        }
        let long = "a".repeat(256);
        assert!(owner_dir(Some(&long)).is_err());
    }

    #[test]
    fn shared_is_the_owners_directory_unless_whole() {
        let s = Path::new("/mnt/c");
        assert_eq!(
            shared_source(s, SharedMount::PerUser, "alice"),
            PathBuf::from("/mnt/c/shared_data/alice")
        );
        assert_eq!(
            shared_source(s, SharedMount::Whole, "alice"),
            PathBuf::from("/mnt/c/shared_data")
        );
    }

    #[test]
    fn a_task_dir_is_private_and_discarded_whole() {
        let root = tempfile::tempdir().unwrap();
        let lt = root.path().join("local_temp");
        let dir = task_dir(&lt, TaskId(7));
        create_task_dir(&dir).unwrap();
        create_task_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), b"x").unwrap();
        let trash = discard(&lt, TaskId(7)).unwrap().unwrap();
        assert!(!dir.exists() && trash.exists());
        assert_eq!(discard(&lt, TaskId(7)).unwrap(), None);
        // A crash before the purge: the next start deletes it; other tasks' dirs stay.
        create_task_dir(&task_dir(&lt, TaskId(8))).unwrap();
        purge_leftovers(&lt);
        assert!(!trash.exists());
        assert!(task_dir(&lt, TaskId(8)).exists());
    }
}
