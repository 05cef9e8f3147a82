//! Following a task's log as it is written (`stdout?follow=true`): the last lines first,
//! then each new byte, until the writer is done. The file is read where it is (the runner's
//! log directory, or the host's shared dir), polled at [`POLL`]: it works the same on a local
//! disk and on NFS, where change notifications do not cross machines.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How often a quiet log is looked at again.
pub const POLL: Duration = Duration::from_millis(200);
/// Most bytes sent in one piece.
const PIECE: usize = 64 * 1024;

/// Says whether the log's writer is done (the task ended and its output is all written).
pub type Ended = Box<dyn FnMut() -> BoxFuture<'static, bool> + Send>;

/// Where a follow begins.
#[derive(Clone, Copy)]
enum Start {
    /// The last `lines` lines (all when `None`), at most `max` bytes.
    Tail { lines: Option<usize>, max: u64 },
    /// At this byte.
    At(u64),
}

struct State {
    path: PathBuf,
    start: Start,
    file: Option<tokio::fs::File>,
    ended: Ended,
    /// The writer is done: read to the end once more, then stop.
    finishing: bool,
    done: bool,
}

/// The log at `path`: its last `lines` lines (all of it when `None`, at most `max_first`
/// bytes), then what is appended, until `ended` says so and the end has been read. A log
/// not there yet is waited for (the task has not started).
pub fn follow(
    path: PathBuf,
    lines: Option<usize>,
    max_first: u64,
    ended: Ended,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    stream(
        path,
        Start::Tail {
            lines,
            max: max_first,
        },
        ended,
    )
}

/// [`follow`] from byte `offset` on (a follower resuming after a break).
pub fn follow_from(
    path: PathBuf,
    offset: u64,
    ended: Ended,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    stream(path, Start::At(offset), ended)
}

fn stream(
    path: PathBuf,
    start: Start,
    ended: Ended,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let state = State {
        path,
        start,
        file: None,
        ended,
        finishing: false,
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            if st.file.is_none() {
                match open_at(&st.path, st.start).await {
                    Ok(Some((file, first))) => {
                        st.file = Some(file);
                        if !first.is_empty() {
                            return Some((Ok(Bytes::from(first)), st));
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            } else if let Some(file) = st.file.as_mut() {
                let mut buf = vec![0u8; PIECE];
                match file.read(&mut buf).await {
                    Ok(0) => {}
                    Ok(n) => {
                        buf.truncate(n);
                        return Some((Ok(Bytes::from(buf)), st));
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
            // At the end of what is written so far.
            if st.finishing {
                return None;
            }
            if (st.ended)().await {
                // Whatever was written before the end was seen is read once more.
                st.finishing = true;
                continue;
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

/// Opens the log where the follow begins, with the tail to send first; `None` when there is
/// no log yet.
async fn open_at(
    path: &std::path::Path,
    start: Start,
) -> io::Result<Option<(tokio::fs::File, Vec<u8>)>> {
    let (lines, max_first) = match start {
        Start::Tail { lines, max } => (lines, max),
        Start::At(offset) => {
            let mut file = match tokio::fs::File::open(path).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            file.seek(io::SeekFrom::Start(offset)).await?;
            return Ok(Some((file, Vec::new())));
        }
    };
    let p = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || -> io::Result<Option<(Vec<u8>, u64)>> {
        let mut f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        ferry_common::logtail::tail_to_end(&mut f, lines, max_first).map(Some)
    })
    .await
    .map_err(io::Error::other)??;
    let Some((first, end)) = read else {
        return Ok(None);
    };
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(io::SeekFrom::Start(end)).await?;
    Ok(Some((file, first)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn the_tail_then_what_is_appended_then_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let over = Arc::new(AtomicBool::new(false));
        let flag = over.clone();
        let ended: Ended = Box::new(move || {
            let v = flag.load(Ordering::SeqCst);
            Box::pin(async move { v })
        });
        let mut s = Box::pin(follow(path.clone(), Some(2), 1 << 20, ended));
        assert_eq!(s.next().await.unwrap().unwrap(), "two\nthree\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"four\n").unwrap();
        assert_eq!(s.next().await.unwrap().unwrap(), "four\n");
        // Written just before the end is seen: still sent, then the stream ends.
        f.write_all(b"last\n").unwrap();
        over.store(true, Ordering::SeqCst);
        let mut rest = Vec::new();
        while let Some(piece) = s.next().await {
            rest.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(rest, b"last\n");
    }

    #[tokio::test]
    async fn a_log_not_there_yet_is_waited_for_and_none_at_all_ends_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = calls.clone();
        let ended: Ended = Box::new(move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { n >= 2 })
        });
        let got: Vec<_> = follow(path, None, 1 << 20, ended).collect().await;
        assert!(got.is_empty(), "{got:?}");
        assert!(calls.load(Ordering::SeqCst) >= 3, "it waited");
    }
}
