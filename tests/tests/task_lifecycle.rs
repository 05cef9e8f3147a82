//! What a user sees of a command task, end to end on the real Docker engine.

use ferry_e2e::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn echo_task_completes_with_its_stdout() {
    let c = TestCluster::with_runner(&[]).await;
    let ids = c
        .submit(json!({"command": "echo", "arguments": ["hello from ferry", "$HOME; rm -rf /"]}))
        .await;
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["exit_code"], 0);
    assert_eq!(t["assigned_node"], "node-1");
    assert!(t["started_at"].is_string() && t["completed_at"].is_string());
    let (status, out) = c.get_text(&format!("/api/tasks/{}/stdout", ids[0])).await;
    assert_eq!(status, 200);
    // Arguments reach the program verbatim: no shell expansion.
    assert_eq!(out, "hello from ferry $HOME; rm -rf /\n");
    // The container is labelled with the task id and removed once its result is in.
    assert!(containers_of(&ids[0]).is_empty(), "container left behind");
}

#[tokio::test]
async fn registry_image_env_vars_and_log_tail() {
    let c = TestCluster::with_runner(&[]).await;
    let body = json!({
        "command": "for i in 1 2 3 4 5; do echo line$i; done; echo \"$GREETING\" >&2",
        "registry_image": TEST_IMAGE,
        "env_vars": {"GREETING": "hi there"},
        "working_dir": "/tmp",
    });
    let ids = c.submit(body).await;
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["docker_image_name"], TEST_IMAGE);
    let (_, tail) = c
        .get_text(&format!("/api/tasks/{}/stdout?lines=2", ids[0]))
        .await;
    assert_eq!(tail, "line4\nline5\n");
    let (_, err) = c.get_text(&format!("/api/tasks/{}/stderr", ids[0])).await;
    assert_eq!(err, "hi there\n");
}

#[tokio::test]
async fn failing_command_is_failed_with_its_exit_code() {
    let c = TestCluster::with_runner(&[]).await;
    let ids = c.submit(json!({"command": "echo oops >&2; exit 3"})).await;
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["exit_code"], 3);
    let (_, err) = c.get_text(&format!("/api/tasks/{}/stderr", ids[0])).await;
    assert_eq!(err, "oops\n");
}

#[tokio::test]
async fn missing_image_fails_with_a_reason() {
    let c = TestCluster::with_runner(&[]).await;
    let ids = c
        .submit(json!({"command": "true", "container_name": "no-such-env"}))
        .await;
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "failed", "{t}");
    let msg = t["error_message"].as_str().unwrap_or_default();
    assert!(msg.contains("kohakuriver/no-such-env:base"), "{msg}");
}

#[tokio::test]
async fn task_over_its_memory_limit_is_killed_oom() {
    let c = TestCluster::with_runner(&[]).await;
    // tail keeps the "last line" of a stream without newlines: it grows until the limit.
    let ids = c
        .submit(json!({"command": "tail /dev/zero", "required_memory_bytes": 32 * 1024 * 1024}))
        .await;
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "killed_oom", "{t}");
    assert_eq!(t["exit_code"], 137);
}

#[tokio::test]
async fn a_killed_sleep_is_killed_and_its_container_gone() {
    let c = TestCluster::with_runner(&[]).await;
    let ids = c.submit(json!({"command": "sleep 300"})).await;
    c.wait_status(&ids[0], &["running"], Duration::from_secs(30))
        .await;
    assert_eq!(containers_of(&ids[0]).len(), 1);
    let (status, v) = c
        .post_json(&format!("/api/kill/{}", ids[0]), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    let t = c.task(&ids[0]).await;
    assert_eq!(t["status"], "killed", "kill is visible at once: {t}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !containers_of(&ids[0]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "container still there after kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The runner's own final report does not overwrite the kill (it brings the exit code),
    // and a second kill conflicts.
    let t = c
        .wait_until(
            &ids[0],
            |t| !t["exit_code"].is_null(),
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(t["status"], "killed", "{t}");
    assert_eq!(t["exit_code"], 137, "{t}");
    let (status, _) = c
        .post_json(&format!("/api/kill/{}", ids[0]), &json!({}))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn pause_then_resume() {
    let c = TestCluster::with_runner(&[]).await;
    let ids = c.submit(json!({"command": "sleep 2; echo resumed"})).await;
    let id = &ids[0];
    c.wait_status(id, &["running"], Duration::from_secs(30))
        .await;
    let (status, v) = c
        .post_json(&format!("/api/command/{id}/pause"), &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.task(id).await["status"], "paused");
    assert_eq!(container_state(&format!("kohakuriver-task-{id}")), "paused");
    // Frozen: it does not finish while paused. (Time passing is the point here: longer than
    // the task's own 2 s.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.task(id).await["status"], "paused");
    let (status, _) = c
        .post_json(&format!("/api/command/{id}/pause"), &json!({}))
        .await;
    assert_eq!(status, 409, "pausing twice is a conflict");
    let (status, v) = c
        .post_json(&format!("/api/command/{id}/resume"), &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    let t = c.wait_final(id).await;
    assert_eq!(t["status"], "completed", "{t}");
    let (_, out) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
    assert_eq!(out, "resumed\n");
    let (status, _) = c
        .post_json(&format!("/api/command/{id}/bogus"), &json!({}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_task_killed_right_after_submit_never_does_its_work() {
    // /local_temp is per task and deleted with it: the tasks would log their work in /shared.
    let shared = tempfile::tempdir().unwrap();
    let shared_arg = shared.path().display().to_string();
    let c = TestCluster::with_runner(&["--shared-dir", &shared_arg]).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        let id = c
            .submit(json!({"command": "sleep 1; echo $FERRY_TASK_ID >> /shared/ran"}))
            .await
            .remove(0);
        let (status, v) = c.post_json(&format!("/api/kill/{id}"), &json!({})).await;
        assert_eq!(status, 202, "{v}");
        ids.push(id);
    }
    // Every kill confirmed: nothing booked, no container left that could still do the work.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while c.nodes().await[0]["tasks_holding"] != 0
        || ids.iter().any(|id| !containers_of(id).is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "kills never confirmed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        assert_eq!(c.task(id).await["status"], "killed");
        assert!(
            containers_of(id).is_empty(),
            "container of {id} left behind"
        );
    }
    assert!(
        shared_lines(shared.path(), "ran").is_empty(),
        "a killed task did its work"
    );
}

#[tokio::test]
async fn concurrent_kills_of_one_task_all_succeed() {
    let c = TestCluster::with_runner(&[]).await;
    let id = c.submit(json!({"command": "sleep 60"})).await.remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    let runner = c.runners[0].url();
    let kills = (0..6).map(|_| {
        let (http, url, secret) = (c.http.clone(), runner.clone(), c.opts.secret.clone());
        let body = json!({"task_id": id});
        async move {
            http.post(format!("{url}/api/kill"))
                .bearer_auth(secret)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let mut statuses = Vec::new();
    for k in kills.collect::<Vec<_>>() {
        statuses.push(tokio::spawn(k));
    }
    for s in statuses {
        assert_eq!(
            s.await.unwrap(),
            200,
            "every kill is answered, none fails writing state"
        );
    }
    assert_eq!(c.wait_final(&id).await["status"], "killed");
}
