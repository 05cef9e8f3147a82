//! Placement, batches and the queue, against real runners.

use ferry_e2e::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_three_target_batch_runs_one_task_per_node() {
    let mut c = TestCluster::new(Opts::default());
    c.start_host().await;
    for n in ["node-a", "node-b", "node-c"] {
        c.start_runner(n, &[]);
    }
    for n in ["node-a", "node-b", "node-c"] {
        c.wait_node_online(n).await;
    }
    let ids = c
        .submit(
            json!({"command": "echo $FERRY_TASK_ID", "targets": ["node-a", "node-b", "node-c"]}),
        )
        .await;
    assert_eq!(ids.len(), 3);
    let mut nodes = Vec::new();
    for id in &ids {
        let t = c.wait_final(id).await;
        assert_eq!(t["status"], "completed", "{t}");
        assert_eq!(
            t["batch_id"],
            ids[0].as_str(),
            "batch id is the first task's id"
        );
        nodes.push(t["assigned_node"].as_str().unwrap_or_default().to_string());
        let (_, out) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
        assert_eq!(out.trim(), id);
    }
    assert_eq!(nodes, vec!["node-a", "node-b", "node-c"]);
}

#[tokio::test]
async fn tasks_needing_the_whole_node_wait_their_turn() {
    let c = TestCluster::with_runner(&["--cores", "2"]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = json!({"command": format!("sleep 1; echo run{i}"), "required_cores": 2});
        ids.extend(c.submit(body).await);
    }
    // None was refused; the later ones wait in the queue, in order.
    let second = c.task(&ids[1]).await;
    let third = c.task(&ids[2]).await;
    assert_eq!(second["status"], "pending", "{second}");
    assert_eq!(third["status"], "pending", "{third}");
    assert_eq!(second["queue_position"], 1);
    assert_eq!(third["queue_position"], 2);
    let nodes = c.nodes().await;
    assert_eq!(nodes[0]["cores_in_use"], 2);
    assert_eq!(nodes[0]["available_cores"], 0);

    let mut spans = Vec::new();
    for id in &ids {
        let t = c.wait_final(id).await;
        assert_eq!(t["status"], "completed", "{t}");
        assert!(t["queue_position"].is_null());
        spans.push((
            t["started_at"].as_str().unwrap().to_string(),
            t["completed_at"].as_str().unwrap().to_string(),
        ));
    }
    // One after another: each starts after the previous one ended.
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "overlap: {spans:?}");
    }
    let nodes = c.nodes().await;
    assert_eq!(nodes[0]["cores_in_use"], 0, "resources released");
}

#[tokio::test]
async fn a_queued_task_can_be_killed_and_priority_jumps_the_queue() {
    let c = TestCluster::with_runner(&["--cores", "1"]).await;
    let blocker = c.submit(json!({"command": "sleep 2"})).await;
    c.wait_status(&blocker[0], &["running"], Duration::from_secs(30))
        .await;
    let low = c.submit(json!({"command": "echo low"})).await;
    let doomed = c.submit(json!({"command": "echo never"})).await;
    let high = c
        .submit(json!({"command": "echo high", "priority": 10}))
        .await;
    assert_eq!(c.task(&high[0]).await["queue_position"], 1);
    let (status, _) = c
        .post_json(&format!("/api/kill/{}", doomed[0]), &json!({}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(c.task(&doomed[0]).await["status"], "killed");
    let h = c.wait_final(&high[0]).await;
    let l = c.wait_final(&low[0]).await;
    assert_eq!(h["status"], "completed");
    assert_eq!(l["status"], "completed");
    assert!(
        l["started_at"].as_str() >= h["completed_at"].as_str(),
        "high priority ran first: {h} {l}"
    );
    assert!(containers_of(&doomed[0]).is_empty());
    assert_eq!(
        c.task(&doomed[0]).await["started_at"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn a_numa_target_binds_the_task_to_that_nodes_cpus() {
    let c = TestCluster::with_runner(&[]).await;
    let topo = c.nodes().await[0]["numa_topology"].clone();
    let cores = topo["0"]["cores"]
        .as_array()
        .expect("this machine reports NUMA node 0")
        .clone();
    let ids = c
        .submit(json!({"command": "sleep 30", "targets": ["node-1:0"]}))
        .await;
    let t = c
        .wait_status(&ids[0], &["running"], Duration::from_secs(30))
        .await;
    assert_eq!(t["target_numa_node_id"], 0);
    let cpuset = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.CpusetCpus}}",
        &format!("kohakuriver-task-{}", ids[0]),
    ]);
    let want: Vec<String> = cores.iter().map(|c| c.to_string()).collect();
    assert_eq!(cpuset, want.join(","));
    let (status, _) = c
        .post_json(&format!("/api/kill/{}", ids[0]), &json!({}))
        .await;
    assert_eq!(status, 202);
}

/// GPUs come from nvidia-smi; here a fake one that prints what two A100s would.
#[tokio::test]
async fn gpus_reported_by_nvidia_smi_are_placeable_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nvidia-smi");
    std::fs::write(
        &fake,
        "#!/bin/sh\n\
         echo '0, NVIDIA A100-SXM4-40GB, 535.104.05, 00000000:06:00.0, 0, 210, 0, 1215, 40960, 0, 40960, 30, [N/A], 50.00, 400.00'\n\
         echo '1, NVIDIA A100-SXM4-40GB, 535.104.05, 00000000:07:00.0, 0, 210, 0, 1215, 40960, 0, 40960, 31, [N/A], 51.00, 400.00'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = TestCluster::with_runner(&["--nvidia-smi", fake.to_str().unwrap()]).await;
    let node = &c.nodes().await[0];
    let gpus = node["gpu_info"].as_array().unwrap();
    assert_eq!(gpus.len(), 2, "{node}");
    assert_eq!(gpus[1]["name"], "NVIDIA A100-SXM4-40GB");
    assert_eq!(gpus[1]["power_usage_mw"], 51000.0);

    let (status, v) = c
        .post_json(
            "/api/submit",
            &json!({"command": "nvidia-smi", "targets": ["node-1"], "required_gpus": [[2]]}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["detail"]
        .as_str()
        .unwrap()
        .contains("GPU 2 does not exist"));
    let (status, _) = c
        .post_json(
            "/api/submit",
            &json!({"command": "nvidia-smi", "required_gpus": [[0]]}),
        )
        .await;
    assert_eq!(status, 400, "GPU tasks need a target");

    let ids = c
        .submit(json!({"command": "echo gpu", "targets": ["node-1"], "required_gpus": [[1]]}))
        .await;
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["required_gpus"], json!([1]));
    // Without an NVIDIA runtime the engine refuses the device request and the task fails
    // saying so; with one it runs. Which one this engine has decides the one right outcome.
    let runtimes = docker(&["info", "--format", "{{json .Runtimes}}"]);
    if !runtimes.contains("nvidia") {
        assert_eq!(t["status"], "failed", "{t}");
        assert!(
            t["error_message"]
                .as_str()
                .unwrap_or_default()
                .contains("nvidia"),
            "{t}"
        );
    } else {
        assert_eq!(t["status"], "completed", "{t}");
    }
    assert_eq!(c.nodes().await[0]["tasks_holding"], 0);
}

#[tokio::test]
async fn a_queued_task_that_no_longer_fits_after_a_node_shrinks_fails_with_the_reason() {
    let c = TestCluster::with_runner(&["--cores", "2"]).await;
    let running = c
        .submit(json!({"command": "sleep 2", "required_cores": 2}))
        .await
        .remove(0);
    let queued = c
        .submit(json!({"command": "echo late", "required_cores": 2}))
        .await
        .remove(0);
    c.wait_status(&running, &["running"], Duration::from_secs(30))
        .await;
    assert_eq!(c.task(&queued).await["status"], "pending");
    // The runner comes back with fewer cores (re-registration, e.g. after a config change).
    let body = json!({"hostname": "node-1", "url": c.runners[0].url(), "total_cores": 1});
    let (status, v) = c.runner_post("/api/register", &body).await;
    assert_eq!(status, 200, "{v}");
    let t = c
        .wait_status(&queued, &["failed"], Duration::from_secs(10))
        .await;
    assert!(
        t["error_message"]
            .as_str()
            .unwrap()
            .contains("Can no longer run"),
        "{t}"
    );
    assert_eq!(c.wait_final(&running).await["status"], "completed");
}

/// nvidia-smi that fails while `<dir>/broken` exists.
fn flaky_nvidia_smi(dir: &std::path::Path) -> std::path::PathBuf {
    let fake = dir.join("nvidia-smi");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\
             [ -e {broken} ] && {{ echo 'NVML: Driver/library version mismatch' >&2; exit 18; }}\n\
             echo '0, NVIDIA A100-SXM4-40GB, 535.104.05, 00000000:06:00.0, 0, 210, 0, 1215, 40960, 0, 40960, 30, [N/A], 50.00, 400.00'\n",
            broken = dir.join("broken").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    fake
}

/// The first node, once `check` holds for it (10 s at most).
async fn node_when(
    c: &TestCluster,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = c.nodes().await.remove(0);
        if check(&n) {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never; last {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn gpu_discovery_that_flaps_does_not_fail_queued_gpu_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let fake = flaky_nvidia_smi(dir.path());
    let c = TestCluster::with_runner(&[
        "--nvidia-smi",
        fake.to_str().unwrap(),
        "--cores",
        "1",
        "--gpu-failure-grace",
        "1h",
    ])
    .await;
    // The one core is busy, so a GPU task waits in the queue.
    let busy = c
        .submit(json!({"command": "sleep 60", "required_cores": 1}))
        .await
        .remove(0);
    c.wait_status(&busy, &["running"], Duration::from_secs(30))
        .await;
    let gpu_task = c
        .submit(json!({"command": "true", "targets": ["node-1"], "required_gpus": [[0]]}))
        .await
        .remove(0);
    assert_eq!(c.task(&gpu_task).await["status"], "pending");

    std::fs::write(dir.path().join("broken"), "").unwrap();
    let node = node_when(&c, "the node reports the failure", |n| {
        n["gpu_error"].is_string()
    })
    .await;
    assert!(
        node["gpu_error"].as_str().unwrap().contains("exited with"),
        "{node}"
    );
    assert_eq!(
        node["gpu_info"].as_array().unwrap().len(),
        1,
        "last good list kept: {node}"
    );
    // Several heartbeats later the queued task still waits.
    let beats = node["last_heartbeat"].clone();
    node_when(&c, "more heartbeats", |n| n["last_heartbeat"] != beats).await;
    assert_eq!(c.task(&gpu_task).await["status"], "pending");

    std::fs::remove_file(dir.path().join("broken")).unwrap();
    node_when(&c, "the error clears", |n| n["gpu_error"].is_null()).await;
    assert_eq!(c.task(&gpu_task).await["status"], "pending");
}
