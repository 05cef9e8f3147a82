//! The environment store: one directory of tarballs `<env>-<unix seconds>.tar`, as the
//! original names them (its runners and its CLI list them by these names), each with a
//! `<tarball>.sha256` beside it. A tarball is written as a hidden `.partial` file and renamed
//! into place only once complete and synced, so nobody (a runner reading the shared dir) ever
//! sees half of one; older versions beyond `keep` are pruned after a new one lands.
//!
//! Everything here is blocking file-system work: callers run it in a blocking thread.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One stored version of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tarball {
    pub env: String,
    pub timestamp: i64,
    pub path: PathBuf,
    pub size_bytes: u64,
}

impl Tarball {
    pub fn file_name(&self) -> String {
        file_name(&self.env, self.timestamp)
    }
}

pub use ferry_common::envs::{parse_tarball_name as parse_name, tarball_name as file_name};

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
}

impl Store {
    pub fn new(dir: PathBuf, keep: usize) -> Store {
        Store {
            dir,
            keep: keep.max(1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every environment's versions, newest first. A missing directory is an empty store.
    pub fn list(&self) -> std::io::Result<BTreeMap<String, Vec<Tarball>>> {
        let mut out: BTreeMap<String, Vec<Tarball>> = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((env, timestamp)) = parse_name(&name) else {
                continue;
            };
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            out.entry(env.clone()).or_default().push(Tarball {
                env,
                timestamp,
                path: entry.path(),
                size_bytes: meta.len(),
            });
        }
        for versions in out.values_mut() {
            versions.sort_by_key(|t| std::cmp::Reverse(t.timestamp));
        }
        Ok(out)
    }

    pub fn versions(&self, env: &str) -> std::io::Result<Vec<Tarball>> {
        Ok(self.list()?.remove(env).unwrap_or_default())
    }

    pub fn newest(&self, env: &str) -> std::io::Result<Option<Tarball>> {
        Ok(self.versions(env)?.into_iter().next())
    }

    /// Bytes all tarballs take.
    pub fn total_bytes(&self) -> std::io::Result<u64> {
        Ok(self.list()?.values().flatten().map(|t| t.size_bytes).sum())
    }

    /// Where a tarball is written until it is complete (hidden, so never listed).
    pub fn partial_path(&self, env: &str, timestamp: i64) -> PathBuf {
        self.dir
            .join(format!(".{}.partial", file_name(env, timestamp)))
    }

    /// Creates the store's directory (0750) if needed.
    pub fn ensure_dir(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&self.dir)
    }

    /// Removes partial files a packaging cut off by a stop or crash left (none runs at start).
    pub fn remove_partials(&self) -> std::io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tar.partial") {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Puts a complete, synced partial file in place with its checksum beside it.
    pub fn finish(&self, env: &str, timestamp: i64, sha256: &str) -> std::io::Result<Tarball> {
        let partial = self.partial_path(env, timestamp);
        std::fs::File::open(&partial)?.sync_all()?;
        let path = self.dir.join(file_name(env, timestamp));
        let sum = sidecar(&path);
        let mut f = std::fs::File::create(&sum)?;
        writeln!(f, "{sha256}  {}", file_name(env, timestamp))?;
        f.sync_all()?;
        std::fs::rename(&partial, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        let size_bytes = std::fs::metadata(&path)?.len();
        Ok(Tarball {
            env: env.to_string(),
            timestamp,
            path,
            size_bytes,
        })
    }

    /// The checksum recorded for a tarball (hex), if any.
    pub fn sha256(&self, tarball: &Tarball) -> Option<String> {
        let text = std::fs::read_to_string(sidecar(&tarball.path)).ok()?;
        let hex = text.split_whitespace().next()?.to_string();
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
    }

    /// Removes the versions of `env` beyond the newest `keep`; returns what was removed.
    pub fn prune(&self, env: &str) -> std::io::Result<Vec<Tarball>> {
        let old: Vec<Tarball> = self.versions(env)?.into_iter().skip(self.keep).collect();
        for t in &old {
            remove(t)?;
        }
        Ok(old)
    }

    /// Removes every version of `env`; returns how many there were.
    pub fn delete_all(&self, env: &str) -> std::io::Result<usize> {
        let all = self.versions(env)?;
        for t in &all {
            remove(t)?;
        }
        Ok(all.len())
    }
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

fn remove(t: &Tarball) -> std::io::Result<()> {
    std::fs::remove_file(&t.path)?;
    match std::fs::remove_file(sidecar(&t.path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, env: &str, ts: i64, bytes: &[u8]) -> Tarball {
        std::fs::write(store.partial_path(env, ts), bytes).unwrap();
        store.finish(env, ts, &"ab".repeat(32)).unwrap()
    }

    #[test]
    fn versions_list_newest_first_prune_to_keep_and_partials_stay_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("envs"), 2);
        assert!(store.list().unwrap().is_empty(), "no directory yet: empty");
        store.ensure_dir().unwrap();
        put(&store, "dev", 1_700_000_001, b"one");
        put(&store, "dev", 1_700_000_003, b"three");
        put(&store, "dev", 1_700_000_002, b"two");
        put(&store, "other", 1_700_000_005, b"x");
        std::fs::write(store.partial_path("dev", 1_700_000_009), b"half").unwrap();
        let dev = store.versions("dev").unwrap();
        let stamps: Vec<i64> = dev.iter().map(|t| t.timestamp).collect();
        assert_eq!(stamps, [1_700_000_003, 1_700_000_002, 1_700_000_001]);
        assert_eq!(store.sha256(&dev[0]).unwrap(), "ab".repeat(32));
        assert_eq!(store.total_bytes().unwrap(), 3 + 5 + 3 + 1);
        let pruned = store.prune("dev").unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!(pruned[0].timestamp, 1_700_000_001);
        assert!(!dir.path().join("envs/dev-1700000001.tar.sha256").exists());
        assert_eq!(store.versions("dev").unwrap().len(), 2);
        assert_eq!(store.versions("other").unwrap().len(), 1);
        assert_eq!(store.remove_partials().unwrap(), 1);
        assert!(!store.partial_path("dev", 1_700_000_009).exists());
        assert_eq!(store.delete_all("dev").unwrap(), 2);
        assert!(store.newest("dev").unwrap().is_none());
    }
}
