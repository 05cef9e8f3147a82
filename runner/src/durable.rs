//! Small durable files: write to a temporary name, fsync, rename over the target, fsync the
//! directory. A crash leaves either the old or the new content, never a torn file. Files are
//! private to the runner's user (mode 0600): task records hold the tasks' environment values.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its parents) and makes it private to the runner's user (mode 0700),
/// also when it already existed with wider permissions.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no parent"))?;
    // A name of its own per write: two writers of one file never share a temporary.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    {
        // The mode is set at creation, so the content is never readable by others, not even for
        // a moment; set again for a temporary a crashed earlier run may have left.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Every `*.json` file in `dir`, sorted by name, parsed; unreadable files are skipped with a
/// warning (and left in place for an operator to look at).
pub fn read_dir_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
) -> std::io::Result<Vec<(std::path::PathBuf, T)>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => out.push((p, v)),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "skipping unreadable state file")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_read_back_sorted() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("b.json"), b"2").unwrap();
        write_atomic(&dir.path().join("a.json"), b"1").unwrap();
        write_atomic(&dir.path().join("a.json"), b"3").unwrap();
        std::fs::write(dir.path().join("c.json"), b"{broken").unwrap();
        let got: Vec<(std::path::PathBuf, u32)> = read_dir_json(dir.path()).unwrap();
        assert_eq!(got.iter().map(|(_, v)| *v).collect::<Vec<_>>(), vec![3, 2]);
        remove(&dir.path().join("a.json")).unwrap();
        remove(&dir.path().join("a.json")).unwrap();
        assert_eq!(read_dir_json::<u32>(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn files_and_dirs_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("state");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        write_atomic(&d.join("r.json"), b"{}").unwrap();
        assert_eq!(mode(&d.join("r.json")), 0o600);
    }
}
