//! File watch over a WebSocket (`/ws/fs/{id}/watch?paths=/shared,/local_temp`): inotify from
//! the node on the container's own directories, resolved inside its root like the file routes
//! (nothing is installed in the image). Recursive: new directories are watched as they appear.
//!
//! Server → client: `{"type":"watching","paths":[...],"method":"inotify"}` once, then
//! `{"type":"change","event":"CREATE"|"MODIFY"|"DELETE"|"MOVE","path","is_dir"}`, and
//! `{"type":"error","message"}` (a path that does not exist, too many changes). Client →
//! server: `{"type":"ping"}` is answered `{"type":"pong"}`.

use super::fs::{clean_path, FsError, Root};
use axum::extract::ws::{Message, WebSocket};
use nix::fcntl::OFlag;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::stat::Mode;
use serde_json::json;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// Most directories one socket watches.
const MAX_WATCHES: usize = 8192;
/// Deepest directory level followed below a watched path.
const MAX_DEPTH: usize = 16;
/// Most change messages sent per second; more are counted and reported as dropped.
pub const MAX_EVENTS_PER_SECOND: usize = 200;
/// The original's default paths.
pub const DEFAULT_PATHS: &str = "/shared,/local_temp";

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ONLYDIR
}

/// The watches of one socket: inotify descriptor and which container directory each is.
pub struct Watcher {
    root: Root,
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, String>,
}

impl Watcher {
    pub fn new(root: Root) -> Result<Watcher, FsError> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| FsError::Io(format!("inotify: {e}")))?;
        Ok(Watcher {
            root,
            inotify,
            dirs: HashMap::new(),
        })
    }

    /// Watches `path` and the directories below it. The directory is opened inside the
    /// container's root first and watched through that descriptor, so a link never leads the
    /// watch out of the container.
    pub fn add_tree(&mut self, raw: &str) -> Result<String, FsError> {
        let path = clean_path(raw)?;
        self.add(&path, 0)?;
        Ok(path)
    }

    fn add(&mut self, path: &str, depth: usize) -> Result<(), FsError> {
        if self.dirs.len() >= MAX_WATCHES || depth > MAX_DEPTH {
            return Ok(());
        }
        let fd = self
            .root
            .open_dir(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        let wd = self
            .inotify
            .add_watch(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(), mask())
            .map_err(|e| FsError::Io(format!("{path}: inotify: {e}")))?;
        self.dirs.insert(wd, path.to_string());
        for name in super::fs::subdirectories(&fd) {
            let child = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            // A directory that vanished meanwhile is no error.
            let _ = self.add(&child, depth + 1);
        }
        Ok(())
    }

    /// The changes waiting; new directories are watched on the way.
    fn drain(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
                    continue;
                };
                let Some(name) = ev.name.as_ref().map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                let path = if dir == "/" {
                    format!("/{name}")
                } else {
                    format!("{dir}/{name}")
                };
                let m = ev.mask;
                let is_dir = m.contains(AddWatchFlags::IN_ISDIR);
                let event = if m.contains(AddWatchFlags::IN_CREATE) {
                    "CREATE"
                } else if m.contains(AddWatchFlags::IN_DELETE) {
                    "DELETE"
                } else if m.intersects(AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_MOVED_TO) {
                    "MOVE"
                } else {
                    "MODIFY"
                };
                if is_dir && (event == "CREATE" || m.contains(AddWatchFlags::IN_MOVED_TO)) {
                    let _ = self.add(&path, 0);
                }
                out.push(json!({"type": "change", "event": event, "path": path, "is_dir": is_dir}));
            }
        }
        out
    }
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// Serves one watch socket for `paths` (comma-separated) on the container root `root`.
pub async fn serve(mut ws: WebSocket, root: Root, paths: &str) {
    // Walking the trees to watch is blocking file-system work: a blocking thread does it.
    let wanted: Vec<String> = paths
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let setup = tokio::task::spawn_blocking(move || {
        let mut watcher = Watcher::new(root)?;
        let added: Vec<Result<String, FsError>> =
            wanted.iter().map(|p| watcher.add_tree(p)).collect();
        Ok::<_, FsError>((watcher, added))
    })
    .await;
    let (mut watcher, added) = match setup {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            let _ = ws
                .send(text(json!({"type": "error", "message": e.to_string()})))
                .await;
            return;
        }
        Err(_) => return,
    };
    let mut watching = Vec::new();
    for outcome in added {
        match outcome {
            Ok(path) => watching.push(path),
            Err(e) => {
                let _ = ws
                    .send(text(json!({"type": "error", "message": e.to_string()})))
                    .await;
            }
        }
    }
    if watching.is_empty() {
        let _ = ws.send(Message::Close(None)).await;
        return;
    }
    if ws
        .send(text(
            json!({"type": "watching", "paths": watching, "method": "inotify"}),
        ))
        .await
        .is_err()
    {
        return;
    }
    let raw = watcher.inotify.as_fd().as_raw_fd();
    // Safety: the descriptor belongs to `watcher`'s inotify, which is declared before `ready`
    // and so outlives it; nothing closes or replaces it meanwhile.
    let Ok(ready) =
        (unsafe { AsyncFd::register_with_interest(raw, tokio::io::Interest::READABLE) })
    else {
        return;
    };
    let mut window = Instant::now();
    let mut sent = 0usize;
    let mut dropped = 0usize;
    let mut ping = tokio::time::interval(super::terminal::PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = ws.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let ping = serde_json::from_str::<serde_json::Value>(&t)
                        .is_ok_and(|v| v["type"] == "ping");
                    if ping && ws.send(text(json!({"type": "pong"}))).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => break,
            },
            guard = ready.readable() => {
                let Ok(mut guard) = guard else { break };
                let changes = watcher.drain();
                guard.clear_ready();
                for change in changes {
                    if window.elapsed() >= Duration::from_secs(1) {
                        if dropped > 0 {
                            let _ = ws.send(text(json!({"type": "error", "message":
                                format!("too many changes: {dropped} not sent (at most {MAX_EVENTS_PER_SECOND} a second)")}))).await;
                        }
                        window = Instant::now();
                        sent = 0;
                        dropped = 0;
                    }
                    if sent >= MAX_EVENTS_PER_SECOND {
                        dropped += 1;
                        continue;
                    }
                    sent += 1;
                    if ws.send(text(change)).await.is_err() {
                        return;
                    }
                }
            }
            _ = ping.tick() => {
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
}
