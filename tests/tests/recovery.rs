//! Nothing lost: restarts, outages and partitions of host and runner, made by the test itself
//! against the real binaries and the real Docker engine.

use ferry_e2e::*;
use nix::sys::signal::Signal;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn runner_killed_while_a_task_runs_adopts_it_after_restart() {
    let mut c = TestCluster::with_runner(&[]).await;
    let ids = c
        .submit(json!({"command": "echo start; sleep 3; echo done"}))
        .await;
    c.wait_status(&ids[0], &["running"], Duration::from_secs(30))
        .await;
    c.runners[0].kill();
    c.runners[0].restart();
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "completed", "{t}\n{}", c.logs());
    assert_eq!(t["exit_code"], 0);
    let (_, out) = c.get_text(&format!("/api/tasks/{}/stdout", ids[0])).await;
    assert_eq!(out, "start\ndone\n", "logs complete, nothing doubled");
    assert!(c.runners[0].log_text().contains("re-adopting container"));
}

#[tokio::test]
async fn task_that_ends_while_the_runner_is_down_gets_its_real_exit_code() {
    let mut c = TestCluster::with_runner(&[]).await;
    let ids = c
        .submit(json!({"command": "sleep 2; echo out; exit 7"}))
        .await;
    let name = format!("kohakuriver-task-{}", ids[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while container_state(&name) != "running" {
        assert!(Instant::now() < deadline, "container never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.runners[0].kill();
    // The task ends on its own while no runner watches.
    let deadline = Instant::now() + Duration::from_secs(30);
    while container_state(&name) == "running" {
        assert!(Instant::now() < deadline, "container never exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Status}}",
            &format!("kohakuriver-task-{}", ids[0])
        ]),
        "exited"
    );
    c.runners[0].restart();
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["exit_code"], 7);
    let (_, out) = c.get_text(&format!("/api/tasks/{}/stdout", ids[0])).await;
    assert_eq!(out, "out\n");
    // The container is cleaned up once its result is in.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !containers_of(&ids[0]).is_empty() {
        assert!(Instant::now() < deadline, "container left behind");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn host_killed_with_running_and_queued_tasks_runs_each_exactly_once() {
    // /local_temp is per task and deleted with it: the tasks log their starts in /shared.
    let shared = tempfile::tempdir().unwrap();
    let shared_arg = shared.path().display().to_string();
    let mut c = TestCluster::with_runner(&["--cores", "1", "--shared-dir", &shared_arg]).await;
    let mut ids = Vec::new();
    for code in [0, 1, 2, 3] {
        let cmd = format!("echo $FERRY_TASK_ID >> /shared/starts; sleep 1; exit {code}");
        ids.extend(c.submit(json!({"command": cmd})).await);
    }
    c.wait_status(&ids[0], &["running"], Duration::from_secs(30))
        .await;
    assert_eq!(c.task(&ids[3]).await["status"], "pending");
    c.crash_and_restart_host().await;
    for (i, id) in ids.iter().enumerate() {
        let t = c.wait_final(id).await;
        assert_eq!(t["exit_code"], i as i64, "{t}");
        assert_eq!(
            t["status"],
            if i == 0 { "completed" } else { "failed" },
            "{t}"
        );
    }
    let starts = shared_lines(shared.path(), "starts");
    for id in &ids {
        assert_eq!(
            starts.iter().filter(|l| *l == id).count(),
            1,
            "task {id} started {starts:?}"
        );
    }
    // A second crash while idle changes nothing and loses nothing.
    c.crash_and_restart_host().await;
    for id in &ids {
        assert!(["completed", "failed"].contains(&c.task(id).await["status"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn a_report_made_while_the_host_is_down_arrives_when_it_returns() {
    let mut c = TestCluster::with_runner(&[]).await;
    let ids = c.submit(json!({"command": "sleep 2; echo finished"})).await;
    c.wait_status(&ids[0], &["running"], Duration::from_secs(30))
        .await;
    c.host_mut().kill();
    // The task ends and its report cannot be delivered while the host is away.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.runners[0]
        .log_text()
        .contains("status report not delivered")
    {
        assert!(Instant::now() < deadline, "no undelivered report");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The runner kept the task and its report; nothing was killed because the host was away.
    assert!(
        c.runners[0]
            .log_text()
            .contains("status report not delivered"),
        "{}",
        c.logs()
    );
    c.host_mut().restart();
    c.wait_ready(&c.url()).await;
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "completed", "{t}");
    let (_, out) = c.get_text(&format!("/api/tasks/{}/stdout", ids[0])).await;
    assert_eq!(out, "finished\n");
}

#[tokio::test]
async fn a_stopped_runner_makes_its_tasks_lost_and_they_recover() {
    let mut c = TestCluster::new(Opts {
        node_timeout: "2s",
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &["--cores", "2"]);
    c.wait_node_online("node-1").await;
    let ids = c
        .submit(json!({"command": "sleep 6; echo survived", "required_cores": 2}))
        .await;
    c.wait_status(&ids[0], &["running"], Duration::from_secs(30))
        .await;
    c.runners[0].signal(Signal::SIGSTOP);
    let t = c
        .wait_status(&ids[0], &["lost"], Duration::from_secs(15))
        .await;
    assert!(
        t["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("offline"),
        "{t}"
    );
    let node = &c.nodes().await[0];
    assert_eq!(node["status"], "offline");
    assert_eq!(
        node["cores_in_use"], 2,
        "a lost task keeps its resources: the node may still run it"
    );
    // Nothing else may be placed on its cores meanwhile.
    let other = c
        .submit(json!({"command": "echo later", "required_cores": 2}))
        .await;
    assert_eq!(c.task(&other[0]).await["status"], "pending");
    c.runners[0].signal(Signal::SIGCONT);
    // Heard from again, it leaves `lost` (running, or completed if it ended meanwhile) and
    // sheds the "went offline" message either way.
    let t = c
        .wait_status(&ids[0], &["running", "completed"], Duration::from_secs(15))
        .await;
    assert!(t["error_message"].is_null(), "{t}");
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "completed", "{t}");
    let (_, out) = c.get_text(&format!("/api/tasks/{}/stdout", ids[0])).await;
    assert_eq!(out, "survived\n");
    assert_eq!(c.wait_final(&other[0]).await["status"], "completed");
}

#[tokio::test]
async fn duplicate_and_stale_reports_do_not_change_a_final_state() {
    let c = TestCluster::with_runner(&[]).await;
    let ids = c.submit(echo_task("once")).await;
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "completed");
    let id = &ids[0];
    for report in [
        json!({"task_id": id, "status": "running", "seq": 1}),
        json!({"task_id": id, "status": "completed", "exit_code": 0, "seq": 2}),
        json!({"task_id": id, "status": "failed", "exit_code": 9, "seq": 100}),
        json!({"task_id": id, "status": "killed", "exit_code": 137}),
    ] {
        let (status, v) = c.runner_post("/api/update", &report).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["message"], "Task ID not recognized or invalid state transition.",
            "{report}"
        );
    }
    let after = c.task(id).await;
    assert_eq!(after["status"], "completed");
    assert_eq!(after["exit_code"], 0);
    assert_eq!(after["completed_at"], t["completed_at"]);
    // A status that does not exist is refused outright.
    let (status, _) = c
        .runner_post("/api/update", &json!({"task_id": id, "status": "exploded"}))
        .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn graceful_stop_leaves_tasks_running_and_exits_zero() {
    let mut c = TestCluster::with_runner(&[]).await;
    let ids = c.submit(json!({"command": "sleep 3; echo after"})).await;
    c.wait_status(&ids[0], &["running"], Duration::from_secs(30))
        .await;
    let st = c.runners[0].terminate().expect("runner exit status");
    assert!(st.success(), "runner exit {st:?}");
    assert_eq!(
        container_state(&format!("kohakuriver-task-{}", ids[0])),
        "running"
    );
    let st = c.host_mut().terminate().expect("host exit status");
    assert!(st.success(), "host exit {st:?}");
    c.host_mut().restart();
    c.wait_ready(&c.url()).await;
    c.runners[0].restart();
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "completed", "{t}");
}

/// Bounded soak: many short tasks while runner and host are killed and restarted at random;
/// at the end every task is final, matches what its container did, and ran exactly once.
#[tokio::test]
async fn soak_with_random_crashes_loses_nothing() {
    const TASKS: usize = 120;
    // /local_temp is per task and deleted with it: the tasks log their starts in /shared.
    let shared = tempfile::tempdir().unwrap();
    let shared_arg = shared.path().display().to_string();
    let mut c = TestCluster::with_runner(&["--cores", "2", "--shared-dir", &shared_arg]).await;
    let mut ids = Vec::new();
    for _ in 0..TASKS {
        let cmd = "echo $FERRY_TASK_ID >> /shared/starts; sleep 0.$((RANDOM % 3)); exit $((FERRY_TASK_ID % 3))";
        ids.extend(c.submit(json!({"command": cmd})).await);
    }
    // Crash something every 1-2 s, a bounded number of times.
    let mut seed: u64 = std::process::id() as u64 | 1;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(1000 + next() % 1000)).await;
        if next() % 2 == 0 {
            c.runners[0].restart();
        } else {
            c.crash_and_restart_host().await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    for id in &ids {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let t = c.wait_status(id, ENDED, remaining).await;
        let expected: u64 = id.parse::<u64>().unwrap() % 3;
        let want = if expected == 0 { "completed" } else { "failed" };
        assert_eq!(t["status"], want, "{t}\n{}", c.logs());
        assert_eq!(t["exit_code"], expected as i64, "{t}");
    }
    let starts = shared_lines(shared.path(), "starts");
    for id in &ids {
        assert_eq!(
            starts.iter().filter(|l| *l == id).count(),
            1,
            "task {id} did not run exactly once"
        );
    }
    assert_eq!(starts.len(), TASKS);
}

#[tokio::test]
async fn a_report_from_a_node_the_task_is_not_on_is_ignored() {
    let c = TestCluster::with_runner(&[]).await;
    let id = c.submit(json!({"command": "sleep 5"})).await.remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    // Another runner, with its own credential, reports on node-1's task.
    let (status, reg) = c
        .runner_post_as(
            "/api/register",
            &json!({"hostname": "elsewhere", "url": "http://127.0.0.1:9", "total_cores": 1}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reg}");
    let other = reg["credential"].as_str().unwrap().to_string();
    let (status, v) = c
        .runner_post_as(
            "/api/update",
            &json!({"task_id": id, "status": "completed", "exit_code": 0, "seq": 50, "hostname": "node-1"}),
            Some(&other),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["message"],
        "Task ID not recognized or invalid state transition."
    );
    assert_eq!(c.task(&id).await["status"], "running");
    assert_eq!(c.wait_final(&id).await["status"], "completed");
}

/// The runner's disk is full when a task ends: its final report is kept in memory, the runner
/// says it is not ready and why, and the report still reaches the host.
#[tokio::test]
async fn a_final_report_that_cannot_be_written_is_not_lost() {
    let mut c = TestCluster::with_runner(&[]).await;
    let id = c
        .submit(json!({"command": "sleep 2; echo survived"}))
        .await
        .remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    // The host goes away, so the report has to wait; and the outbox cannot be written.
    c.host_mut().kill();
    let outbox = c.dir.path().join("runner-node-1/outbox");
    std::fs::remove_dir(&outbox).expect("the outbox is empty once `running` was taken");
    std::fs::write(&outbox, b"").unwrap();
    let ready = format!("{}/ready", c.runners[0].url());
    let deadline = Instant::now() + Duration::from_secs(30);
    let why = loop {
        let r = c.http.get(&ready).send().await.unwrap();
        if r.status().as_u16() == 503 {
            let v: serde_json::Value = r.json().await.unwrap();
            let detail = v["detail"].as_str().unwrap_or_default().to_string();
            if detail.contains("cannot write status reports") {
                break detail;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the runner never said it cannot persist"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(why.contains("outbox"), "{why}");
    // Space comes back: the report is written, and the runner is ready again.
    std::fs::remove_file(&outbox).unwrap();
    std::fs::create_dir(&outbox).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.http.get(&ready).send().await.unwrap().status().as_u16() != 200 {
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_dir(&outbox).unwrap().count(),
        1,
        "the report is on disk"
    );
    // The host comes back and learns the outcome.
    c.host_mut().restart();
    c.wait_ready(&c.url()).await;
    let t = c.wait_final(&id).await;
    assert_eq!(t["status"], "completed", "{t}");
    let (_, out) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
    assert_eq!(out, "survived\n");
}

/// A tmpfs of `size` mounted at `dir` for the test's life (the test runs as root, as CI does).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        SmallDisk(dir.to_path_buf())
    }

    /// Fills the disk with a file `filler` until writing fails.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The host's disk fills up: what cannot be stored is refused with a clear error instead of
/// being accepted and lost, `/ready` says why, and both recover once space is back.
#[tokio::test]
async fn a_host_whose_disk_is_full_refuses_writes_and_says_so_until_space_is_back() {
    let mut c = TestCluster::new(Opts::default());
    let disk = SmallDisk::mount(&c.dir.path().join("host"), "8m");
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let before = c.submit(echo_task("before")).await;
    assert_eq!(c.wait_final(&before[0]).await["status"], "completed");
    disk.fill();
    // Every task row takes space: within a few submits one can no longer be stored.
    let big = "x".repeat(32 * 1024);
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let (status, v) = c
            .post_json(
                "/api/submit",
                &json!({"command": "echo", "arguments": [big]}),
            )
            .await;
        if status != 202 {
            break (status, v);
        }
        assert!(
            Instant::now() < deadline,
            "submits never failed on a full disk"
        );
    };
    assert_eq!(refused.0, 503, "{refused:?}");
    let detail = refused.1["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("full"), "{detail}");
    let (status, v) = c.get_json("/ready").await;
    assert_eq!(status, 503, "{v}");
    let why = v["detail"].as_str().unwrap_or_default();
    assert!(why.contains("database writes are failing"), "{why}");
    // Reads still work, and what was stored before is all there.
    assert_eq!(c.task(&before[0]).await["status"], "completed");
    disk.free();
    let after = c.submit(echo_task("after")).await;
    assert_eq!(c.wait_final(&after[0]).await["status"], "completed");
    let (status, v) = c.get_json("/ready").await;
    assert_eq!(status, 200, "ready again once a write is stored: {v}");
}
