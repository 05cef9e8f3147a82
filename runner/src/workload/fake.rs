//! An in-memory [`Workload`] for unit tests: it records every call in order, keeps workloads
//! in a table, and lets a test hold `prepare` until released, end a workload with a chosen
//! exit, or plant workloads as if a previous run had left them.

use super::{Exit, Found, State, Workload, WorkloadError, WorkloadResult, WorkloadSpec};
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
}

struct Entry {
    labels: HashMap<String, String>,
    state: watch::Sender<State>,
    /// What it was created from (`None` for a planted one).
    spec: Option<WorkloadSpec>,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    workloads: HashMap<String, Entry>,
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
            inner.workloads.insert(
                spec.name.clone(),
                Entry {
                    labels: spec.labels.clone(),
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
}
