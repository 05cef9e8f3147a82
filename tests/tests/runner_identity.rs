//! Each runner has an identity of its own: the cluster secret lets a machine join, but only the
//! runner holding a node's credential may speak for that node.

use ferry_e2e::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[tokio::test]
async fn a_stolen_secret_cannot_take_over_another_runners_node() {
    let c = TestCluster::with_runner(&[]).await;
    let own = c
        .runner_credential("node-1")
        .expect("the runner kept its credential");
    let file = c.dir.path().join("runner-node-1/runner-credential");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let real_url = c.nodes().await[0]["url"].clone();

    // Re-registering node-1 elsewhere with the secret alone is refused and changes nothing.
    let hijack = json!({"hostname": "node-1", "url": "http://127.0.0.1:9", "total_cores": 64});
    let (status, v) = c.runner_post_as("/api/register", &hijack, None).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("DELETE /api/nodes/node-1"),
        "{v}"
    );
    assert_eq!(c.nodes().await[0]["url"], real_url);

    // A second runner joins under its own name and gets its own credential...
    let (status, reg) = c
        .runner_post_as(
            "/api/register",
            &json!({"hostname": "intruder", "url": "http://127.0.0.1:9", "total_cores": 1}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reg}");
    let intruder = reg["credential"].as_str().expect("issued once").to_string();
    assert_ne!(intruder, own);
    // ...which does not speak for node-1: not in heartbeats...
    let beat = |cred: Option<String>| {
        let mut rb = c
            .http
            .put(format!("{}/api/heartbeat/node-1", c.url()))
            .bearer_auth(&c.opts.secret)
            .json(&json!({"running_tasks": []}));
        if let Some(cred) = cred {
            rb = rb.header("x-ferry-runner-credential", cred);
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(beat(None).await, 401, "the secret alone");
    assert_eq!(
        beat(Some(intruder.clone())).await,
        403,
        "another node's credential"
    );
    // ...nor in reports on node-1's task.
    let id = c
        .submit(json!({"command": "sleep 3; echo real"}))
        .await
        .remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    let forged = json!({"task_id": id, "status": "completed", "exit_code": 0, "seq": 99});
    let (status, v) = c
        .runner_post_as("/api/update", &forged, Some(&intruder))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["message"],
        "Task ID not recognized or invalid state transition."
    );
    let (status, _) = c.runner_post_as("/api/update", &forged, None).await;
    assert_eq!(status, 401, "a report without a credential");
    assert_eq!(c.task(&id).await["status"], "running");
    // Even node-1's own credential may not say `pending` (which would place the task again).
    let (status, v) = c
        .runner_post_as(
            "/api/update",
            &json!({"task_id": id, "status": "pending", "seq": 100}),
            Some(&own),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("status:"), "{v}");
    let done = c.wait_final(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, out) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
    assert_eq!(out, "real\n");
}

#[tokio::test]
async fn an_operator_releases_a_name_for_a_runner_that_lost_its_credential() {
    let mut c = TestCluster::with_runner(&[]).await;
    // The machine is rebuilt: same name, empty data dir, so no credential.
    c.runners[0].kill();
    std::fs::remove_dir_all(c.dir.path().join("runner-node-1")).unwrap();
    c.start_runner("node-1", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !c.runners[1]
        .log_text()
        .contains("the host refuses this runner the name")
    {
        assert!(std::time::Instant::now() < deadline, "{}", c.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.runner_credential("node-1").is_none());
    let r = c
        .request(reqwest::Method::DELETE, "/api/nodes/node-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The runner's next attempt takes the name and a new credential.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while c.runner_credential("node-1").is_none() {
        assert!(std::time::Instant::now() < deadline, "{}", c.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.wait_node_online("node-1").await;
    let id = c.submit(echo_task("again")).await.remove(0);
    assert_eq!(c.wait_final(&id).await["status"], "completed");
    let (_, audit) = c.get_json("/api/audit?limit=20").await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "node.remove" && e["target"] == "node-1"),
        "{audit}"
    );
}
