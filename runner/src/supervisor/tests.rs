//! The supervisor against the recording fake workload, with real files for its records and
//! outbox: the lifecycle, the kill and adopt races, exit mapping, pause and resume.

use super::*;
use crate::workload::fake::{Call, FakeWorkload};
use ferry_common::daemon::LogFormat;
use std::time::Duration;

struct Harness {
    dir: tempfile::TempDir,
    fake: Arc<FakeWorkload>,
    outbox: Arc<Outbox>,
    sup: Arc<Supervisor>,
}

fn config(dir: &std::path::Path) -> RunnerConfig {
    RunnerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        host_url: "http://127.0.0.1:9".into(),
        name: "node-t".into(),
        data_dir: dir.join("data"),
        cluster_secret: "s".into(),
        cluster_secret_file: None,
        heartbeat_interval: Duration::from_secs(1),
        advertise_url: None,
        shared_dir: None,
        local_temp_dir: dir.join("local_temp"),
        cores: Some(2),
        memory: None,
        log_format: LogFormat::Text,
        nvidia_smi: "nvidia-smi".into(),
        default_memory: None,
        pids_limit: 4096,
        header_timeout: std::time::Duration::from_secs(15),
        gpu_failure_grace: std::time::Duration::from_secs(300),
        cap_add: Vec::new(),
        max_log_size: 64 << 20,
        shared_mount: crate::config::SharedMount::PerUser,
        snapshot_on_stop: true,
        max_snapshots_per_vps: 3,
        vps_stop_grace: Duration::from_secs(10),
    }
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeWorkload::new();
        Harness::on(dir, fake)
    }

    /// A supervisor over `dir` (records, outbox, instance id) and `fake` (the engine).
    fn on(dir: tempfile::TempDir, fake: Arc<FakeWorkload>) -> Harness {
        Harness::configured(dir, fake, |_| {})
    }

    /// A runner with a shared filesystem at `<dir>/shared`, mounted as `mode` says.
    fn shared(mode: crate::config::SharedMount) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        Harness::configured(dir, FakeWorkload::new(), move |c| {
            c.shared_dir = Some(shared);
            c.shared_mount = mode;
        })
    }

    fn configured(
        dir: tempfile::TempDir,
        fake: Arc<FakeWorkload>,
        edit: impl FnOnce(&mut RunnerConfig),
    ) -> Harness {
        let mut config = config(dir.path());
        edit(&mut config);
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir).unwrap();
        let outbox = Arc::new(Outbox::open(config.data_dir.join("outbox")).unwrap());
        let node = crate::limits::Node {
            cores: 2,
            memory: 4 << 30,
        };
        let sup = Supervisor::new(fake.clone(), outbox.clone(), config, node, None).unwrap();
        Harness {
            dir,
            fake,
            outbox,
            sup,
        }
    }

    /// The same data dir and engine after a runner restart.
    fn restarted(self) -> Harness {
        let Harness { dir, fake, .. } = self;
        Harness::on(dir, fake)
    }

    /// Statuses reported for a task, in order.
    fn reported(&self, id: u64) -> Vec<(TaskStatus, Option<i64>)> {
        self.outbox
            .reports()
            .into_iter()
            .filter(|u| u.task_id == TaskId(id))
            .map(|u| (u.status, u.exit_code))
            .collect()
    }

    fn labels(&self, id: u64) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_TASK_ID.to_string(), id.to_string()),
            (LABEL_RUNNER_ID.to_string(), self.sup.instance_id.clone()),
        ])
    }

    fn save(&self, id: u64, started: bool) {
        let record = TaskRecord {
            request: request(id),
            owner: None,
            seq: 1,
            kill_requested: false,
            stop_requested: false,
            started,
            finished: false,
            started_at_ms: None,
            timed_out: false,
        };
        let bytes = serde_json::to_vec(&record).unwrap();
        durable::write_atomic(&self.sup.record_path(TaskId(id)), &bytes).unwrap();
    }
}

fn request(id: u64) -> ExecuteRequest {
    ExecuteRequest {
        task_id: TaskId(id),
        definition: TaskDefinition::command("echo hi"),
        reserved_ip: None,
        owner: None,
        attempt: None,
        run: None,
    }
}

fn attempt(id: u64, n: u32) -> ExecuteRequest {
    ExecuteRequest {
        attempt: Some(n),
        ..request(id)
    }
}

fn name(id: u64) -> String {
    ferry_common::task_container_name(TaskId(id))
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_task_runs_once_and_its_exit_is_reported() {
    let h = Harness::new();
    h.sup.execute(request(1), None).await.unwrap();
    until("running", || h.reported(1).len() == 1).await;
    assert_eq!(h.reported(1), vec![(TaskStatus::Running, None)]);
    // A repeated dispatch of a running task starts nothing new.
    h.sup.execute(request(1), None).await.unwrap();
    assert_eq!(h.fake.count(&Call::Create(name(1))), 1);
    assert_eq!(h.fake.count(&Call::Start(name(1))), 1);
    h.fake.finish(
        &name(1),
        Exit {
            code: 0,
            oom_killed: false,
        },
    );
    until("completed", || h.reported(1).len() == 2).await;
    assert_eq!(h.reported(1)[1], (TaskStatus::Completed, Some(0)));
    until("removed", || h.fake.state_of(&name(1)).is_none()).await;
}

#[tokio::test]
async fn the_oom_flag_and_a_kill_decide_the_final_state() {
    let h = Harness::new();
    h.sup.execute(request(1), None).await.unwrap();
    h.sup.execute(request(2), None).await.unwrap();
    until("both running", || {
        h.reported(1).len() == 1 && h.reported(2).len() == 1
    })
    .await;
    h.fake.finish(
        &name(1),
        Exit {
            code: 137,
            oom_killed: true,
        },
    );
    let code = h.sup.kill(TaskId(2)).await.unwrap();
    assert_eq!(code, Some(137));
    until("both ended", || {
        h.reported(1).len() == 2 && h.reported(2).len() == 2
    })
    .await;
    assert_eq!(h.reported(1)[1], (TaskStatus::KilledOom, Some(137)));
    assert_eq!(h.reported(2)[1], (TaskStatus::Killed, Some(137)));
}

#[tokio::test]
async fn a_kill_while_preparing_means_the_workload_never_starts() {
    let h = Harness::new();
    h.fake.hold_prepare();
    h.sup.execute(request(1), None).await.unwrap();
    until("preparing", || h.fake.count(&Call::Prepare(name(1))) == 1).await;
    assert!(matches!(
        h.sup.pause(TaskId(1), true).await,
        Err(SupervisorError::WrongState(_, "still starting"))
    ));
    let sup = h.sup.clone();
    let kill = tokio::spawn(async move { sup.kill(TaskId(1)).await });
    until("kill asked", || h.fake.count(&Call::Kill(name(1))) == 1).await;
    h.fake.release_prepare();
    kill.await.unwrap().unwrap();
    until("reported", || !h.reported(1).is_empty()).await;
    assert_eq!(h.reported(1), vec![(TaskStatus::Killed, None)]);
    // A late or repeated dispatch must not start it either.
    h.sup.execute(request(1), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // let a wrongly started run show
    assert_eq!(h.fake.count(&Call::Create(name(1))), 0);
    assert_eq!(h.fake.count(&Call::Start(name(1))), 0);
}

#[tokio::test]
async fn pause_and_resume_follow_the_workload_and_are_idempotent() {
    let h = Harness::new();
    h.sup.execute(request(1), None).await.unwrap();
    until("running", || h.reported(1).len() == 1).await;
    h.sup.pause(TaskId(1), true).await.unwrap();
    h.sup.pause(TaskId(1), true).await.unwrap();
    assert_eq!(
        h.fake.count(&Call::Pause(name(1))),
        1,
        "asked twice, paused once"
    );
    assert_eq!(h.sup.live_tasks().1, vec![TaskId(1)]);
    h.sup.pause(TaskId(1), false).await.unwrap();
    assert_eq!(h.fake.count(&Call::Resume(name(1))), 1);
    assert!(h.sup.live_tasks().1.is_empty());
    assert!(matches!(
        h.sup.pause(TaskId(9), true).await,
        Err(SupervisorError::Unknown(_))
    ));
}

#[tokio::test]
async fn after_a_restart_it_adopts_running_work_reports_what_ended_and_starts_what_never_did() {
    let h = Harness::new();
    // What the previous run left: A still running, B ended while the runner was down, C
    // accepted but never started, D running without a record (lost with a wiped record).
    h.save(1, true);
    h.fake.plant(&name(1), h.labels(1), State::Running);
    h.save(2, true);
    h.fake.plant(
        &name(2),
        h.labels(2),
        State::Exited(Exit {
            code: 3,
            oom_killed: false,
        }),
    );
    h.save(3, false);
    h.fake.plant(&name(4), h.labels(4), State::Running);
    let h = h.restarted();
    h.sup.recover().await.unwrap();

    until("B reported, C running", || {
        h.reported(2).len() == 1 && h.reported(3).len() == 1
    })
    .await;
    assert_eq!(h.reported(2), vec![(TaskStatus::Failed, Some(3))]);
    assert_eq!(h.reported(3), vec![(TaskStatus::Running, None)]);
    assert_eq!(h.fake.count(&Call::Create(name(3))), 1);
    // A and D are followed, never created again.
    for id in [1, 4] {
        assert_eq!(h.fake.count(&Call::Create(name(id))), 0, "task {id}");
    }
    let (live, _) = h.sup.live_tasks();
    for id in [1, 3, 4] {
        assert!(live.contains(&TaskId(id)), "task {id} not live: {live:?}");
    }
    h.fake.finish(
        &name(1),
        Exit {
            code: 0,
            oom_killed: false,
        },
    );
    until("A completed", || !h.reported(1).is_empty()).await;
    assert_eq!(h.reported(1), vec![(TaskStatus::Completed, Some(0))]);
    assert!(h.sup.known_tasks().contains(&TaskId(4)));
}

#[tokio::test]
async fn a_started_task_whose_workload_vanished_is_failed_after_a_restart() {
    let h = Harness::new();
    h.save(5, true);
    let h = h.restarted();
    h.sup.recover().await.unwrap();
    until("reported", || !h.reported(5).is_empty()).await;
    assert_eq!(h.reported(5)[0].0, TaskStatus::Failed);
    assert!(h.dir.path().exists());
}

#[test]
fn exit_mapping_asks_the_oom_flag_not_the_code() {
    let e = |code, oom| Exit {
        code,
        oom_killed: oom,
    };
    assert_eq!(final_status(e(0, false), false).0, TaskStatus::Completed);
    assert_eq!(final_status(e(3, false), false).0, TaskStatus::Failed);
    assert_eq!(final_status(e(137, false), false).0, TaskStatus::Failed);
    assert_eq!(final_status(e(137, true), false).0, TaskStatus::KilledOom);
    assert_eq!(final_status(e(137, false), true).0, TaskStatus::Killed);
    assert_eq!(final_status(e(137, true), true).0, TaskStatus::KilledOom);
}

#[test]
fn arguments_are_positional_not_spliced() {
    assert_eq!(
        container_cmd("echo hi", &[]),
        vec!["/bin/sh", "-c", "echo hi"]
    );
    assert_eq!(
        container_cmd("echo", &["a b".into(), "$(x)".into()]),
        vec!["/bin/sh", "-c", "echo \"$@\"", "sh", "a b", "$(x)"]
    );
}

#[tokio::test]
async fn a_foreign_container_with_the_task_name_is_never_adopted() {
    let h = Harness::new();
    // Same name, but not this runner's: no runner-id label, or another runner's.
    h.fake.plant(&name(1), HashMap::new(), State::Running);
    let mut other = h.labels(2);
    other.insert(LABEL_RUNNER_ID.into(), "someone-else".into());
    h.fake.plant(&name(2), other, State::Running);
    h.sup.execute(request(1), None).await.unwrap();
    h.sup.execute(request(2), None).await.unwrap();
    until("both failed", || {
        h.reported(1).len() == 1 && h.reported(2).len() == 1
    })
    .await;
    for id in [1, 2] {
        assert_eq!(
            h.reported(id),
            vec![(TaskStatus::Failed, None)],
            "task {id}"
        );
        let report = h
            .outbox
            .reports()
            .into_iter()
            .find(|u| u.task_id == TaskId(id));
        assert_eq!(
            report.and_then(|u| u.message),
            Some(foreign_container_message(&name(id)))
        );
        // Left alone: still there, still running, never started, killed or removed by us.
        assert_eq!(h.fake.state_of(&name(id)), Some(State::Running));
        for call in [
            Call::Start(name(id)),
            Call::Kill(name(id)),
            Call::Remove(name(id)),
        ] {
            assert_eq!(h.fake.count(&call), 0, "{call:?}");
        }
    }
    // Its own container of the task, left from before a restart, is still adopted.
    h.fake.plant(&name(3), h.labels(3), State::Created);
    h.sup.execute(request(3), None).await.unwrap();
    until("adopted and running", || h.reported(3).len() == 1).await;
    assert_eq!(h.reported(3), vec![(TaskStatus::Running, None)]);
    assert_eq!(h.fake.count(&Call::Start(name(3))), 1);
}

#[tokio::test]
async fn output_is_attached_before_the_start_and_read_back_only_for_adopted_work() {
    let h = Harness::new();
    h.sup.execute(request(1), None).await.unwrap();
    until("running", || h.reported(1).len() == 1).await;
    let calls = h.fake.calls();
    let at = |c: Call| calls.iter().position(|x| *x == c);
    let (attach, start) = (at(Call::AttachLogs(name(1))), at(Call::Start(name(1))));
    assert!(attach.is_some() && attach < start, "{calls:?}");
    assert_eq!(h.fake.count(&Call::CaptureLogs(name(1))), 0);
    // A container already running when the runner starts: its output comes from the engine.
    h.save(2, true);
    h.fake.plant(&name(2), h.labels(2), State::Running);
    let h = h.restarted();
    h.sup.recover().await.unwrap();
    until("read back", || {
        h.fake.count(&Call::CaptureLogs(name(2))) == 1
    })
    .await;
    assert_eq!(h.fake.count(&Call::AttachLogs(name(2))), 0);
}

/// The host's acknowledgement of every report made so far.
fn acknowledge_all(h: &Harness) {
    for u in h.outbox.reports() {
        h.sup.acknowledged(&u);
    }
}

#[tokio::test]
async fn each_task_has_its_own_scratch_dir_until_it_is_forgotten() {
    let h = Harness::new();
    let local_temp = h.dir.path().join("local_temp");
    for id in [1, 2] {
        h.sup.execute(request(id), None).await.unwrap();
    }
    until("both running", || {
        h.reported(1).len() == 1 && h.reported(2).len() == 1
    })
    .await;
    for id in [1, 2] {
        let dir = local_temp.join(id.to_string());
        assert!(dir.is_dir(), "{dir:?}");
        let binds = h.fake.spec_of(&name(id)).unwrap().binds;
        assert_eq!(binds, vec![format!("{}:/local_temp", dir.display())]);
    }
    std::fs::write(local_temp.join("1/result"), b"x").unwrap();
    h.fake.finish(
        &name(1),
        Exit {
            code: 0,
            oom_killed: false,
        },
    );
    until("1 completed", || h.reported(1).len() == 2).await;
    // Still there while the final report waits for the host.
    assert!(local_temp.join("1/result").exists());
    acknowledge_all(&h);
    assert!(!local_temp.join("1").exists(), "scratch kept after forget");
    assert!(
        local_temp.join("2").is_dir(),
        "a running task lost its scratch"
    );
    assert!(h.sup.known_tasks() == vec![TaskId(2)]);
    // A record write still in flight at the acknowledgement is undone when it lands.
    until("record gone", || !h.sup.record_path(TaskId(1)).exists()).await;
    // Deleted in the background: nothing of it is left.
    until("purged", || {
        std::fs::read_dir(&local_temp).unwrap().count() == 1
    })
    .await;
}

#[tokio::test]
async fn shared_is_the_owners_directory_and_bad_owners_are_refused() {
    use crate::config::SharedMount;
    let h = Harness::shared(SharedMount::PerUser);
    let data = h.dir.path().join("shared/shared_data");
    h.sup
        .execute(request(1), Some("alice".into()))
        .await
        .unwrap();
    h.sup.execute(request(2), None).await.unwrap();
    until("running", || {
        h.reported(1).len() == 1 && h.reported(2).len() == 1
    })
    .await;
    for (id, dir) in [(1, "alice"), (2, scratch::ANONYMOUS)] {
        let binds = h.fake.spec_of(&name(id)).unwrap().binds;
        assert_eq!(
            binds[1],
            format!("{}:/shared", data.join(dir).display()),
            "task {id}"
        );
        assert!(data.join(dir).is_dir());
    }
    for bad in ["../alice", "a/b", "..", "_anonymous", ""] {
        let err = h.sup.execute(request(3), Some(bad.into())).await;
        assert!(
            matches!(err, Err(SupervisorError::BadOwner(_))),
            "{bad:?}: {err:?}"
        );
    }
    assert_eq!(h.fake.count(&Call::Create(name(3))), 0);
    // The owner is in the record, so a task started after a restart keeps its directory.
    let record: TaskRecord =
        serde_json::from_slice(&std::fs::read(h.sup.record_path(TaskId(1))).unwrap()).unwrap();
    assert_eq!(record.owner.as_deref(), Some("alice"));

    let h = Harness::shared(SharedMount::Whole);
    h.sup
        .execute(request(1), Some("alice".into()))
        .await
        .unwrap();
    until("running", || h.reported(1).len() == 1).await;
    let binds = h.fake.spec_of(&name(1)).unwrap().binds;
    assert_eq!(
        binds[1],
        format!(
            "{}:/shared",
            h.dir.path().join("shared/shared_data").display()
        )
    );
}

impl Harness {
    /// Attempts of a task's reports, in order.
    fn report_attempts(&self, id: u64) -> Vec<Option<u32>> {
        self.outbox
            .reports()
            .into_iter()
            .filter(|u| u.task_id == TaskId(id))
            .map(|u| u.attempt)
            .collect()
    }
}

#[tokio::test]
async fn an_older_attempt_is_refused_and_a_newer_one_takes_the_copy_over() {
    let h = Harness::new();
    h.sup.execute(attempt(1, 2), None).await.unwrap();
    until("running", || h.reported(1).len() == 1).await;
    assert_eq!(h.report_attempts(1), vec![Some(2)]);
    assert!(matches!(
        h.sup.execute(attempt(1, 1), None).await,
        Err(SupervisorError::OlderAttempt {
            got: 1,
            held: 2,
            ..
        })
    ));
    // Placed here again: the running copy continues as attempt 3, nothing new starts.
    h.sup.execute(attempt(1, 3), None).await.unwrap();
    assert_eq!(
        h.sup.attempts(),
        vec![TaskAttempt {
            task_id: TaskId(1),
            attempt: 3
        }]
    );
    assert_eq!(h.fake.count(&Call::Create(name(1))), 1);
    h.fake.finish(
        &name(1),
        Exit {
            code: 0,
            oom_killed: false,
        },
    );
    until("completed", || h.reported(1).len() == 2).await;
    assert_eq!(h.report_attempts(1), vec![Some(2), Some(3)]);
    // The record on disk says attempt 3 too (a restart reports as the attempt taken over).
    let text = std::fs::read_to_string(h.sup.record_path(TaskId(1))).unwrap();
    let record: TaskRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(record.request.attempt, Some(3));
}

#[tokio::test]
async fn a_stale_kill_spares_a_newer_attempt_and_a_killed_attempt_can_be_placed_again() {
    let h = Harness::new();
    h.sup.execute(attempt(1, 2), None).await.unwrap();
    until("running", || h.reported(1).len() == 1).await;
    // The host saw attempt 1 here; attempt 2 has been taken over since.
    assert_eq!(h.sup.kill_stale(TaskId(1), Some(1)).await.unwrap(), None);
    assert_eq!(h.fake.count(&Call::Kill(name(1))), 0);
    // A kill of attempt 2 itself goes through.
    h.sup.kill_stale(TaskId(1), Some(2)).await.unwrap();
    until("killed", || h.reported(1).len() == 2).await;
    assert_eq!(h.reported(1)[1].0, TaskStatus::Killed);
    // While its final report waits, attempt 3 is asked to come back (503), and a late
    // execute of attempt 2 is not started.
    assert!(matches!(
        h.sup.execute(attempt(1, 3), None).await,
        Err(SupervisorError::PreviousAttemptEnding { .. })
    ));
    let last = h.outbox.reports().pop().unwrap();
    h.sup.acknowledged(&last);
    h.sup.execute(attempt(1, 2), None).await.unwrap();
    assert_eq!(
        h.fake.count(&Call::Create(name(1))),
        1,
        "attempt 2 stays killed"
    );
    // Once it is acknowledged, attempt 3 starts afresh.
    until("container removed", || h.fake.state_of(&name(1)).is_none()).await;
    h.sup.execute(attempt(1, 3), None).await.unwrap();
    until("attempt 3 running", || h.reported(1).len() == 3).await;
    assert_eq!(h.fake.count(&Call::Create(name(1))), 2);
    assert_eq!(h.report_attempts(1)[2], Some(3));
}

fn run_of(id: u64, attempt: u32, run: u32) -> ExecuteRequest {
    ExecuteRequest {
        attempt: Some(attempt),
        run: Some(run),
        ..request(id)
    }
}

#[tokio::test]
async fn a_copy_of_an_earlier_run_is_killed_before_the_next_run_starts_with_its_own_logs() {
    let h = Harness::new();
    h.sup.execute(run_of(1, 1, 1), None).await.unwrap();
    until("running", || h.reported(1).len() == 1).await;
    let logs = h.sup.config.log_dir().join("1");
    assert!(logs.join("stdout.log").exists());
    // The host retried the task (its node was lost) and placed run 2 here: the old copy
    // does not stand in for it.
    assert!(matches!(
        h.sup.execute(run_of(1, 2, 2), None).await,
        Err(SupervisorError::PreviousAttemptEnding { .. })
    ));
    until("old run killed", || h.reported(1).len() == 2).await;
    assert_eq!(h.reported(1)[1].0, TaskStatus::Killed);
    // A late repeat of run 1's dispatch starts nothing.
    h.sup.execute(run_of(1, 1, 1), None).await.unwrap();
    assert_eq!(h.fake.count(&Call::Create(name(1))), 1);
    let last = h.outbox.reports().pop().unwrap();
    h.sup.acknowledged(&last);
    until("container removed", || h.fake.state_of(&name(1)).is_none()).await;
    h.sup.execute(run_of(1, 2, 2), None).await.unwrap();
    until("run 2 running", || h.reported(1).len() == 3).await;
    assert_eq!(h.fake.count(&Call::Create(name(1))), 2);
    assert!(logs.join("attempt-2").join("stdout.log").exists());
    assert!(!h.sup.output_complete(TaskId(1), 2));
    assert!(h.sup.output_complete(TaskId(1), 1), "run 1 is over");
    assert_eq!(h.sup.latest_run(TaskId(1)), 2);
}

fn vps_request(id: u64, mode: ferry_common::task::SshKeyMode, key: Option<&str>) -> ExecuteRequest {
    let mut definition = TaskDefinition::command("");
    definition.spec = TaskSpec::Vps(ferry_common::task::VpsSpec {
        ssh_key_mode: mode,
        ssh_public_key: key.map(str::to_string),
        ..Default::default()
    });
    definition.image.registry_image = Some("sshd-image".into());
    ExecuteRequest {
        task_id: TaskId(id),
        definition,
        reserved_ip: None,
        owner: None,
        attempt: Some(1),
        run: None,
    }
}

fn vps_name(id: u64) -> String {
    ferry_common::vps_container_name(TaskId(id))
}

#[tokio::test]
async fn a_vps_gets_its_key_as_a_file_and_reports_its_ssh_port() {
    use ferry_common::task::SshKeyMode;
    let h = Harness::new();
    h.fake.plant_image_file("sshd-image", vps::SSHD_PATH);
    let key = ferry_common::ssh::generate_ed25519("me")
        .unwrap()
        .public_openssh;
    h.sup
        .execute(vps_request(1, SshKeyMode::Upload, Some(&key)), None)
        .await
        .unwrap();
    until("running", || h.reported(1).len() == 1).await;
    assert_eq!(h.reported(1), vec![(TaskStatus::Running, None)]);
    let port = h.outbox.reports()[0].ssh_port;
    assert_eq!(port, Some(40022), "the published port is reported");
    let written = h
        .fake
        .file_of(&vps_name(1), "/root/.ssh/authorized_keys")
        .expect("authorized_keys written")
        .unwrap();
    assert_eq!(String::from_utf8(written).unwrap(), format!("{key}\n"));
    assert!(h
        .fake
        .file_of(&vps_name(1), "/etc/ssh/ssh_host_ed25519_key")
        .is_some());
    let spec = h.fake.spec_of(&vps_name(1)).unwrap();
    assert_eq!(spec.cmd[0], vps::SSHD_PATH);
    assert_eq!(spec.labels[LABEL_KIND], "vps");
    // Stop: a snapshot first, then the stop; the end is `stopped` and the container goes.
    h.sup.stop(TaskId(1)).await.unwrap();
    until("stopped", || h.reported(1).len() == 2).await;
    assert_eq!(h.reported(1)[1].0, TaskStatus::Stopped);
    let calls = h.fake.calls();
    let snap = calls
        .iter()
        .position(|c| matches!(c, Call::Snapshot(n, _) if *n == vps_name(1)))
        .expect("snapshot on stop");
    let stop = calls
        .iter()
        .position(|c| *c == Call::Stop(vps_name(1)))
        .expect("stopped");
    assert!(snap < stop, "{calls:?}");
    until("removed", || h.fake.state_of(&vps_name(1)).is_none()).await;
    // The next create of the same VPS starts from that snapshot.
    h.sup.acknowledged(&h.outbox.reports()[1]);
    let mut again = vps_request(1, SshKeyMode::Upload, Some(&key));
    again.attempt = Some(2);
    h.sup.execute(again, None).await.unwrap();
    until("running again", || h.reported(1).len() == 3).await;
    let spec = h.fake.spec_of(&vps_name(1)).unwrap();
    assert!(
        spec.image.starts_with("kohakuriver-snapshot/vps-1:"),
        "{}",
        spec.image
    );
}

#[tokio::test]
async fn an_image_without_sshd_fails_the_vps_with_the_image_named() {
    use ferry_common::task::SshKeyMode;
    let h = Harness::new();
    let key = ferry_common::ssh::generate_ed25519("me")
        .unwrap()
        .public_openssh;
    h.sup
        .execute(vps_request(2, SshKeyMode::Upload, Some(&key)), None)
        .await
        .unwrap();
    until("failed", || h.reported(2).len() == 1).await;
    let report = &h.outbox.reports()[0];
    assert_eq!(report.status, TaskStatus::Failed);
    let msg = report.message.clone().unwrap_or_default();
    assert!(
        msg.contains("sshd-image") && msg.contains("no OpenSSH server"),
        "{msg}"
    );
    assert!(
        h.fake.state_of(&vps_name(2)).is_none(),
        "no container is left"
    );
    // `disabled` needs no sshd: a terminal-only session under init.
    h.sup
        .execute(vps_request(3, SshKeyMode::Disabled, None), None)
        .await
        .unwrap();
    until("running", || h.reported(3).len() == 1).await;
    assert_eq!(h.outbox.reports().last().unwrap().ssh_port, None);
    let spec = h.fake.spec_of(&vps_name(3)).unwrap();
    assert!(spec.init && spec.publish.is_empty());
}

#[tokio::test]
async fn a_vps_ending_by_itself_or_killed_is_reported_as_such() {
    let exit = |code| Exit {
        code,
        oom_killed: false,
    };
    assert_eq!(
        vps_final_status(exit(0), false, true).0,
        TaskStatus::Stopped
    );
    assert_eq!(
        vps_final_status(exit(137), false, true).0,
        TaskStatus::Stopped
    );
    assert_eq!(
        vps_final_status(exit(137), true, false).0,
        TaskStatus::Killed
    );
    assert_eq!(
        vps_final_status(exit(0), false, false).0,
        TaskStatus::Stopped
    );
    assert_eq!(
        vps_final_status(exit(3), false, false).0,
        TaskStatus::Failed
    );
    let oom = Exit {
        code: 137,
        oom_killed: true,
    };
    assert_eq!(vps_final_status(oom, false, true).0, TaskStatus::KilledOom);
}
