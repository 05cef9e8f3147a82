//! An in-memory [`Workload`] for unit tests: it records every call in order, keeps workloads
//! in a table, and lets a test hold `prepare` until released, end a workload with a chosen
//! exit, or plant workloads as if a previous run had left them.

use super::{
    Exit, FileEntry, Found, ImageUsage, SnapshotImage, State, Workload, WorkloadError,
    WorkloadResult, WorkloadSpec,
};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Semaphore};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Prepare(String),
    Create(String),
    Start(String),
    Kill(String),
    Pause(String),
    Resume(String),
    Remove(String),
    CaptureLogs(String),
    AttachLogs(String),
    Stop(String),
    WriteFiles(String),
    Snapshot(String, String),
    RemoveSnapshot(String, String),
}

struct Entry {
    labels: HashMap<String, String>,
    /// Files written in, by path (images' own files are not modelled).
    files: HashMap<String, Option<Vec<u8>>>,
    state: watch::Sender<State>,
    /// What it was created from (`None` for a planted one).
    spec: Option<WorkloadSpec>,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    workloads: HashMap<String, Entry>,
    /// Snapshots by repository.
    snapshots: HashMap<String, Vec<SnapshotImage>>,
    /// Files each image brings (copied into workloads created from it).
    image_files: HashMap<String, Vec<String>>,
}

pub struct FakeWorkload {
    inner: Mutex<Inner>,
    /// `prepare` takes a permit; a test holding them all holds every `prepare`.
    prepare_gate: Arc<Semaphore>,
    /// The exit a killed workload gets.
    kill_exit: Exit,
}

impl FakeWorkload {
    pub fn new() -> Arc<FakeWorkload> {
        Arc::new(FakeWorkload {
            inner: Mutex::new(Inner::default()),
            prepare_gate: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            kill_exit: Exit {
                code: 137,
                oom_killed: false,
            },
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn count(&self, call: &Call) -> usize {
        self.calls().iter().filter(|c| *c == call).count()
    }

    /// Holds every later `prepare` until [`FakeWorkload::release_prepare`].
    pub fn hold_prepare(&self) {
        self.prepare_gate.forget_permits(Semaphore::MAX_PERMITS);
    }

    pub fn release_prepare(&self) {
        self.prepare_gate.add_permits(Semaphore::MAX_PERMITS);
    }

    /// Plants a workload as if an earlier run had created it.
    pub fn plant(&self, name: &str, labels: HashMap<String, String>, state: State) {
        let (tx, _) = watch::channel(state);
        self.lock().workloads.insert(
            name.to_string(),
            Entry {
                labels,
                files: HashMap::new(),
                state: tx,
                spec: None,
            },
        );
    }

    /// Ends a running workload the way its process would.
    pub fn finish(&self, name: &str, exit: Exit) {
        if let Some(e) = self.lock().workloads.get(name) {
            e.state.send_replace(State::Exited(exit));
        }
    }

    /// The spec a workload was created from.
    pub fn spec_of(&self, name: &str) -> Option<WorkloadSpec> {
        self.lock().workloads.get(name).and_then(|e| e.spec.clone())
    }

    /// A file written into a workload (`Some(None)`: a directory).
    pub fn file_of(&self, name: &str, path: &str) -> Option<Option<Vec<u8>>> {
        self.lock().workloads.get(name)?.files.get(path).cloned()
    }

    /// Makes `image` bring the (empty) file `path` into every workload created from it.
    pub fn plant_image_file(&self, image: &str, path: &str) {
        self.lock()
            .image_files
            .entry(image.to_string())
            .or_default()
            .push(path.to_string());
    }

    pub fn state_of(&self, name: &str) -> Option<State> {
        self.lock().workloads.get(name).map(|e| *e.state.borrow())
    }

    fn record(&self, call: Call) {
        self.lock().calls.push(call);
    }

    fn with<T>(
        &self,
        name: &str,
        f: impl FnOnce(&Entry) -> Result<T, WorkloadError>,
    ) -> Result<T, WorkloadError> {
        match self.lock().workloads.get(name) {
            Some(e) => f(e),
            None => Err(WorkloadError::NotFound(name.to_string())),
        }
    }

    /// A workload's output: none, written once it stops.
    fn empty_logs(
        &self,
        name: &str,
        stdout: PathBuf,
        stderr: PathBuf,
    ) -> BoxFuture<'static, std::io::Result<()>> {
        let rx = self.watch_of(name);
        Box::pin(async move {
            tokio::fs::write(&stdout, b"").await?;
            tokio::fs::write(&stderr, b"").await?;
            if let Ok(mut rx) = rx {
                let _ = rx.wait_for(|s| matches!(s, State::Exited(_))).await;
            }
            Ok(())
        })
    }

    fn watch_of(&self, name: &str) -> Result<watch::Receiver<State>, WorkloadError> {
        self.with(name, |e| Ok(e.state.subscribe()))
    }
}

impl Workload for FakeWorkload {
    fn ping(&self) -> WorkloadResult<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn prepare<'a>(&'a self, spec: &'a WorkloadSpec) -> WorkloadResult<'a, ()> {
        self.record(Call::Prepare(spec.name.clone()));
        let gate = self.prepare_gate.clone();
        Box::pin(async move {
            let _permit = gate
                .acquire()
                .await
                .map_err(|e| WorkloadError::Engine(e.to_string()))?;
            Ok(())
        })
    }

    fn create<'a>(&'a self, spec: &'a WorkloadSpec) -> WorkloadResult<'a, ()> {
        self.record(Call::Create(spec.name.clone()));
        let mut inner = self.lock();
        let result = if inner.workloads.contains_key(&spec.name) {
            Err(WorkloadError::Exists(spec.name.clone()))
        } else {
            let (tx, _) = watch::channel(State::Created);
            let files = inner
                .image_files
                .get(&spec.image)
                .into_iter()
                .flatten()
                .map(|p| (p.clone(), Some(Vec::new())))
                .collect();
            inner.workloads.insert(
                spec.name.clone(),
                Entry {
                    labels: spec.labels.clone(),
                    files,
                    state: tx,
                    spec: Some(spec.clone()),
                },
            );
            Ok(())
        };
        Box::pin(async move { result })
    }

    fn start<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        self.record(Call::Start(name.to_string()));
        let r = self.with(name, |e| {
            e.state.send_replace(State::Running);
            Ok(())
        });
        Box::pin(async move { r })
    }

    fn inspect<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, State> {
        let r = self.with(name, |e| Ok(*e.state.borrow()));
        Box::pin(async move { r })
    }

    fn labels<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, HashMap<String, String>> {
        let r = self.with(name, |e| Ok(e.labels.clone()));
        Box::pin(async move { r })
    }

    fn wait<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, Exit> {
        let rx = self.watch_of(name);
        Box::pin(async move {
            let mut rx = rx?;
            let state = rx
                .wait_for(|s| matches!(s, State::Exited(_)))
                .await
                .map_err(|_| WorkloadError::NotFound(name.to_string()))?;
            match *state {
                State::Exited(exit) => Ok(exit),
                _ => Err(WorkloadError::Engine("not exited".into())),
            }
        })
    }

    fn capture_logs<'a>(
        &'a self,
        name: &'a str,
        stdout: PathBuf,
        stderr: PathBuf,
        _max_bytes: u64,
    ) -> BoxFuture<'a, std::io::Result<()>> {
        self.record(Call::CaptureLogs(name.to_string()));
        self.empty_logs(name, stdout, stderr)
    }

    fn attach_logs<'a>(
        &'a self,
        name: &'a str,
        stdout: PathBuf,
        stderr: PathBuf,
        _max_bytes: u64,
    ) -> WorkloadResult<'a, BoxFuture<'static, std::io::Result<()>>> {
        self.record(Call::AttachLogs(name.to_string()));
        let copy = self.empty_logs(name, stdout, stderr);
        Box::pin(async move { Ok(copy) })
    }

    fn kill<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        self.record(Call::Kill(name.to_string()));
        let exit = self.kill_exit;
        let r = self.with(name, |e| {
            if !matches!(*e.state.borrow(), State::Exited(_)) {
                e.state.send_replace(State::Exited(exit));
            }
            Ok(())
        });
        Box::pin(async move { r })
    }

    fn pause<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        self.record(Call::Pause(name.to_string()));
        let r = self.with(name, |e| {
            e.state.send_replace(State::Paused);
            Ok(())
        });
        Box::pin(async move { r })
    }

    fn resume<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        self.record(Call::Resume(name.to_string()));
        let r = self.with(name, |e| {
            if *e.state.borrow() == State::Paused {
                e.state.send_replace(State::Running);
            }
            Ok(())
        });
        Box::pin(async move { r })
    }

    fn remove<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, ()> {
        self.record(Call::Remove(name.to_string()));
        self.lock().workloads.remove(name);
        Box::pin(async { Ok(()) })
    }

    fn find<'a>(&'a self, label: &'a str, value: &'a str) -> WorkloadResult<'a, Vec<Found>> {
        let found = self
            .lock()
            .workloads
            .iter()
            .filter(|(_, e)| e.labels.get(label).map(String::as_str) == Some(value))
            .map(|(n, e)| (n.clone(), e.labels.clone()))
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn stop<'a>(&'a self, name: &'a str, _grace: std::time::Duration) -> WorkloadResult<'a, ()> {
        self.record(Call::Stop(name.to_string()));
        let r = self.with(name, |e| {
            if !matches!(*e.state.borrow(), State::Exited(_)) {
                e.state.send_replace(State::Exited(Exit {
                    code: 0,
                    oom_killed: false,
                }));
            }
            Ok(())
        });
        Box::pin(async move { r.or(Ok(())) })
    }

    fn path_exists<'a>(&'a self, name: &'a str, path: &'a str) -> WorkloadResult<'a, bool> {
        let r = self.with(name, |e| Ok(e.files.contains_key(path)));
        Box::pin(async move { r })
    }

    fn read_file<'a>(
        &'a self,
        name: &'a str,
        path: &'a str,
        _max: usize,
    ) -> WorkloadResult<'a, Option<Vec<u8>>> {
        let r = self.with(name, |e| Ok(e.files.get(path).cloned().flatten()));
        Box::pin(async move { r })
    }

    fn write_files<'a>(&'a self, name: &'a str, files: &'a [FileEntry]) -> WorkloadResult<'a, ()> {
        self.record(Call::WriteFiles(name.to_string()));
        let r = match self.lock().workloads.get_mut(name) {
            Some(e) => {
                for f in files {
                    e.files.insert(f.path.clone(), f.contents.clone());
                }
                Ok(())
            }
            None => Err(WorkloadError::NotFound(name.to_string())),
        };
        Box::pin(async move { r })
    }

    fn published_port<'a>(&'a self, name: &'a str, port: u16) -> WorkloadResult<'a, Option<u16>> {
        let r = self.with(name, |e| {
            let published = e.spec.as_ref().is_some_and(|s| s.publish.contains(&port));
            Ok(published.then_some(40000 + port))
        });
        Box::pin(async move { r })
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        repository: &'a str,
        tag: &'a str,
        _message: &'a str,
    ) -> WorkloadResult<'a, ()> {
        self.record(Call::Snapshot(name.to_string(), tag.to_string()));
        let mut inner = self.lock();
        let r = if let Some(e) = inner.workloads.get(name) {
            // The snapshot holds the workload's files, as an image made from it would.
            let files: Vec<String> = e.files.keys().cloned().collect();
            inner
                .image_files
                .insert(format!("{repository}:{tag}"), files);
            let created = tag.parse().unwrap_or(0);
            inner
                .snapshots
                .entry(repository.to_string())
                .or_default()
                .push(SnapshotImage {
                    tag: tag.to_string(),
                    created,
                    size: 1,
                });
            Ok(())
        } else {
            Err(WorkloadError::NotFound(name.to_string()))
        };
        Box::pin(async move { r })
    }

    fn snapshots<'a>(&'a self, repository: &'a str) -> WorkloadResult<'a, Vec<SnapshotImage>> {
        let list = self
            .lock()
            .snapshots
            .get(repository)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(list) })
    }

    fn remove_snapshot<'a>(&'a self, repository: &'a str, tag: &'a str) -> WorkloadResult<'a, ()> {
        self.record(Call::RemoveSnapshot(
            repository.to_string(),
            tag.to_string(),
        ));
        if let Some(list) = self.lock().snapshots.get_mut(repository) {
            list.retain(|s| s.tag != tag);
        }
        Box::pin(async { Ok(()) })
    }

    fn image_usage(&self) -> WorkloadResult<'_, ImageUsage> {
        Box::pin(async { Ok(ImageUsage::default()) })
    }

    fn image_created<'a>(&'a self, _image: &'a str) -> WorkloadResult<'a, Option<i64>> {
        Box::pin(async { Ok(None) })
    }

    fn load_image<'a>(
        &'a self,
        path: &'a std::path::Path,
        _sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> WorkloadResult<'a, String> {
        let path = path.display().to_string();
        Box::pin(async move {
            Err(WorkloadError::Engine(format!(
                "{path}: the fake loads no images"
            )))
        })
    }

    fn tag_image<'a>(
        &'a self,
        _source: &'a str,
        _repository: &'a str,
        _tag: &'a str,
    ) -> WorkloadResult<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn net_namespace<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, PathBuf> {
        let name = name.to_string();
        Box::pin(async move {
            Err(WorkloadError::Engine(format!(
                "{name}: the fake has no network"
            )))
        })
    }

    fn fs_root<'a>(&'a self, name: &'a str) -> WorkloadResult<'a, (PathBuf, String)> {
        let name = name.to_string();
        Box::pin(async move {
            Err(WorkloadError::Engine(format!(
                "{name}: the fake has no files"
            )))
        })
    }

    fn open_tty<'a>(
        &'a self,
        name: &'a str,
        _shells: &'a [&'a str],
        _rows: u16,
        _cols: u16,
    ) -> WorkloadResult<'a, super::TtySession> {
        let name = name.to_string();
        Box::pin(async move {
            Err(WorkloadError::Engine(format!(
                "{name}: the fake has no TTY"
            )))
        })
    }
}
