//! SQLite state: the source of truth on the host.
//!
//! One writer thread owns the only read-write connection and groups whatever jobs are waiting
//! into one transaction (each job in its own savepoint, so one failing job does not undo the
//! others); a job's caller hears back only after the commit, so an acknowledged write is on
//! disk. Reads run on a small pool of read-only connections in blocking threads, never on the
//! async runtime. WAL mode lets reads proceed while the writer commits.

pub mod attempts;
pub mod auth;
pub mod nodes;
pub mod schema;
pub mod tasks;
pub mod timeline;
pub mod vps;

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the database writer has stopped")]
    WriterGone,
    /// The disk is full, failing or read-only: nothing can be stored until that is fixed.
    #[error("the host cannot store this now: {0}")]
    Unavailable(String),
    #[error("database schema version {found} is newer than this ferry-host understands ({known})")]
    TooNew { found: i64, known: i64 },
}

/// One unit of work for the writer: run inside a savepoint, then told how the commit went.
trait Job: Send {
    /// Runs the work; `true` when it succeeded and its savepoint should be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// The storage failure the work hit (disk full, I/O error, read-only), if any.
    fn storage_error(&self) -> Option<String>;
    /// Reports the outcome to the caller; `error` is set when the work never ran or its
    /// transaction did not commit, `storage` when that was for want of storage.
    fn finish(self: Box<Self>, error: Option<String>, storage: Option<&str>);
}

struct WriteJob<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for WriteJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A panicking job fails alone: its savepoint is rolled back and the writer thread
        // (which every write of the host goes through) carries on.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(%why, "a database write job panicked; rolled back");
                Err(StoreError::Corrupt(format!("write job panicked: {why}")))
            });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn storage_error(&self) -> Option<String> {
        match &self.result {
            Some(Err(e)) if e.is_storage_failure() => Some(e.to_string()),
            _ => None,
        }
    }

    fn finish(self: Box<Self>, error: Option<String>, storage: Option<&str>) {
        let outcome = match (error, self.result) {
            (None, Some(result)) => result,
            (Some(_), _) if storage.is_some() => {
                Err(StoreError::Unavailable(storage.unwrap_or_default().into()))
            }
            (Some(e), Some(Err(own))) => Err(StoreError::Corrupt(format!("{own}; then {e}"))),
            (Some(e), _) => Err(StoreError::Corrupt(format!("transaction failed: {e}"))),
            (None, None) => Err(StoreError::WriterGone),
        };
        let _ = self.reply.send(outcome);
    }
}

/// Most jobs one transaction takes; bounds the latency a burst adds to its first job.
const MAX_GROUP: usize = 256;
const MAX_IDLE_READERS: usize = 4;

#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<Box<dyn Job>>,
    /// Write transactions and jobs so far (for `/metrics`, and to prove grouping in tests).
    counts: Arc<WriteCounts>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit that was acknowledged survives a power cut, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let counts = Arc::new(WriteCounts::default());
        let writer_counts = counts.clone();
        std::thread::Builder::new()
            .name("ferry-db-writer".into())
            .spawn(move || writer_loop(conn, rx, &writer_counts))
            .map_err(|e| StoreError::Corrupt(format!("cannot start writer thread: {e}")))?;
        Ok(Db {
            writer: tx,
            counts,
            readers: Arc::new(Mutex::new(Vec::new())),
            path: path.to_path_buf(),
        })
    }

    /// Runs `f` in the writer's transaction; resolves after the commit.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(WriteJob {
            work: Some(f),
            result: None,
            reply: tx,
        });
        self.writer.send(job).map_err(|_| StoreError::WriterGone)?;
        // Counted once sent, so "n waiting" means n jobs are in the channel (the test of
        // grouping relies on it); the writer may take it first, hence saturating_sub below.
        self.counts.queued.fetch_add(1, Ordering::Relaxed);
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs `f` on a read-only connection in a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.busy_timeout(std::time::Duration::from_secs(5))?;
                    c
                }
            };
            let result = f(&conn);
            if let Ok(mut pool) = readers.lock() {
                if pool.len() < MAX_IDLE_READERS {
                    pool.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }

    /// A cheap query proving the database answers (for `/ready`).
    /// Why the last write transaction could not be stored, while that is so.
    pub fn write_failure(&self) -> Option<String> {
        self.counts
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())?)
        })
        .await
    }
}

/// What the writer has done: jobs handed to it, jobs it has taken, transactions committed,
/// and whether the last transaction could not be stored (for `/ready`).
#[derive(Debug, Default)]
pub struct WriteCounts {
    queued: AtomicU64,
    taken: AtomicU64,
    transactions: AtomicU64,
    failing: Mutex<Option<String>>,
}

impl StoreError {
    /// Whether the database cannot be written at all, whatever the work (disk full, I/O
    /// error, read-only): the caller may retry later; the request was not at fault.
    pub fn is_storage_failure(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => is_storage_failure(e),
            StoreError::Unavailable(_) => true,
            _ => false,
        }
    }

    /// A copy to hand to each of several callers that shared one failed write.
    pub fn shared_copy(&self) -> StoreError {
        if self.is_storage_failure() {
            StoreError::Unavailable(match self {
                StoreError::Unavailable(m) => m.clone(),
                other => other.to_string(),
            })
        } else {
            StoreError::Corrupt(self.to_string())
        }
    }
}

/// Errors that say the database cannot be written at all, whatever the job.
fn is_storage_failure(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(DiskFull | SystemIoFailure | ReadOnly | CannotOpen | DatabaseBusy | DatabaseLocked)
    )
}

impl Db {
    /// Write transactions committed (or attempted) since the database was opened.
    pub fn transactions(&self) -> u64 {
        self.counts.transactions.load(Ordering::Relaxed)
    }

    /// Jobs sent to the writer that it has not taken yet.
    pub fn waiting_writes(&self) -> u64 {
        let queued = self.counts.queued.load(Ordering::Relaxed);
        queued.saturating_sub(self.counts.taken.load(Ordering::Relaxed))
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Box<dyn Job>>, counts: &WriteCounts) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        counts.taken.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        // Counted as it begins: its jobs' callers are answered from inside it, and must see it.
        counts.transactions.fetch_add(1, Ordering::Relaxed);
        run_group(&mut conn, jobs, &counts.failing);
    }
}

/// Runs one transaction of jobs and records in `failing` the storage failure it met (or
/// none), before any caller is answered, so a caller that saw its write fail sees it there.
fn run_group(conn: &mut Connection, mut jobs: Vec<Box<dyn Job>>, failing: &Mutex<Option<String>>) {
    let set = |f: Option<String>| *failing.lock().unwrap_or_else(|p| p.into_inner()) = f;
    let mut txn = match conn.transaction() {
        Ok(t) => t,
        Err(e) => {
            let msg = e.to_string();
            set(Some(msg.clone()));
            for job in jobs {
                job.finish(Some(msg.clone()), Some(&msg));
            }
            return;
        }
    };
    let mut own_errors: Vec<Option<String>> = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        let outcome = match txn.savepoint() {
            Ok(mut sp) => {
                let kept = job.run(&sp);
                let end = if kept { sp.commit() } else { sp.rollback() };
                end.err().map(|e| e.to_string())
            }
            Err(e) => Some(e.to_string()),
        };
        own_errors.push(outcome);
    }
    let storage = jobs.iter().find_map(|j| j.storage_error());
    let commit = txn.commit().err();
    let commit_storage = commit
        .as_ref()
        .filter(|e| is_storage_failure(e))
        .map(|e| e.to_string());
    let commit = commit.map(|e| e.to_string());
    // The storage failure names the cause (after one, SQLite may have rolled back already).
    let failing = storage.or(commit_storage).or(commit.clone());
    set(failing.clone());
    let storage_cause = failing.as_deref().filter(|_| commit.is_some());
    for (job, own) in jobs.into_iter().zip(own_errors) {
        job.finish(commit.clone().or(own), storage_cause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        let err = db
            .write(|_| -> Result<(), StoreError> { panic!("bug in a job") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bug in a job"), "{err}");
        db.write(|c| Ok(c.execute("CREATE TABLE t (x INTEGER)", []).map(drop)?))
            .await
            .expect("the writer still works");
    }

    #[tokio::test]
    async fn a_full_database_is_reported_until_a_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write(|c| Ok(c.execute("CREATE TABLE t (x BLOB)", []).map(drop)?))
            .await
            .unwrap();
        assert_eq!(db.write_failure(), None);
        let pages: i64 = db
            .read(|c| Ok(c.query_row("PRAGMA page_count", [], |r| r.get(0))?))
            .await
            .unwrap();
        // The file may not grow: the next big insert finds the disk "full".
        db.write(move |c| {
            c.pragma_update(None, "max_page_count", pages)?;
            Ok(())
        })
        .await
        .unwrap();
        let err = db
            .write(|c| {
                Ok(c.execute("INSERT INTO t VALUES (zeroblob(1000000))", [])
                    .map(drop)?)
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        let failure = db.write_failure().unwrap();
        assert!(failure.contains("full"), "{failure}");
        db.write(|c| {
            c.pragma_update(None, "max_page_count", 1_000_000)?;
            Ok(c.execute("INSERT INTO t VALUES (zeroblob(10))", [])
                .map(drop)?)
        })
        .await
        .unwrap();
        assert_eq!(db.write_failure(), None, "cleared by a stored write");
    }

    /// Jobs that wait while the writer is busy commit together, in one transaction, and a
    /// failing one among them is rolled back alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_writes_share_one_transaction_and_a_failing_job_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        db.write(|c| {
            c.execute("CREATE TABLE t (x INTEGER)", [])?;
            Ok(())
        })
        .await
        .unwrap();
        // Hold the writer busy until ten more jobs are waiting behind it.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = tokio::spawn({
            let (db, started) = (db.clone(), started.clone());
            async move {
                db.write(move |_| {
                    started.store(true, Ordering::SeqCst);
                    let _ = hold.recv();
                    Ok(())
                })
                .await
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !started.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "writer never started");
            tokio::task::yield_now().await;
        }
        let before = db.transactions();
        let jobs: Vec<_> = (0..10)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.write(move |c| {
                        c.execute("INSERT INTO t VALUES (?1)", [i])?;
                        if i == 3 {
                            return Err(StoreError::Corrupt("no".into()));
                        }
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        while db.waiting_writes() < 10 {
            assert!(std::time::Instant::now() < deadline, "jobs never queued");
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        let mut failed = 0;
        for j in jobs {
            failed += usize::from(j.await.unwrap().is_err());
        }
        assert_eq!(failed, 1);
        // `before` counts the busy job's transaction; then one for all ten waiting jobs.
        assert_eq!(db.transactions(), before + 1);
        let n: i64 = db
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 9);
    }
}
