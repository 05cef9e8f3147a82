//! SQLite state: the source of truth on the host.
//!
//! One writer thread owns the only read-write connection and groups whatever jobs are waiting
//! into one transaction (each job in its own savepoint, so one failing job does not undo the
//! others); a job's caller hears back only after the commit, so an acknowledged write is on
//! disk. Reads run on a small pool of read-only connections in blocking threads, never on the
//! async runtime. WAL mode lets reads proceed while the writer commits.

pub mod auth;
pub mod nodes;
pub mod schema;
pub mod tasks;

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
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
    #[error("database schema version {found} is newer than this ferry-host understands ({known})")]
    TooNew { found: i64, known: i64 },
}

/// One unit of work for the writer: run inside a savepoint, then told how the commit went.
trait Job: Send {
    /// Runs the work; `true` when it succeeded and its savepoint should be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Reports the outcome to the caller; `error` is set when the work never ran or its
    /// transaction did not commit.
    fn finish(self: Box<Self>, error: Option<String>);
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
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, error: Option<String>) {
        let outcome = match (error, self.result) {
            (None, Some(result)) => result,
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
        std::thread::Builder::new()
            .name("ferry-db-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start writer thread: {e}")))?;
        Ok(Db {
            writer: tx,
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
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())?)
        })
        .await
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        run_group(&mut conn, jobs);
    }
}

fn run_group(conn: &mut Connection, mut jobs: Vec<Box<dyn Job>>) {
    let mut txn = match conn.transaction() {
        Ok(t) => t,
        Err(e) => {
            let msg = e.to_string();
            for job in jobs {
                job.finish(Some(msg.clone()));
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
    let commit = txn.commit().err().map(|e| e.to_string());
    for (job, own) in jobs.into_iter().zip(own_errors) {
        job.finish(commit.clone().or(own));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grouped_writes_commit_and_a_failing_job_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        let ok = db.write(|c| {
            c.execute("CREATE TABLE t (x INTEGER)", [])?;
            Ok(())
        });
        ok.await.unwrap();
        let a = db.write(|c| {
            c.execute("INSERT INTO t VALUES (1)", [])?;
            Ok(())
        });
        let b = db.write(|c| {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            Err::<(), _>(StoreError::Corrupt("no".into()))
        });
        let (a, b) = tokio::join!(a, b);
        a.unwrap();
        assert!(b.is_err());
        let n: i64 = db
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
