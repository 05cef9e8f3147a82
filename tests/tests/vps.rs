//! Docker VPSes end to end, on a real engine: create in each SSH mode, the lists, stop and
//! restart (with and without a snapshot on stop), snapshots and their retention, the SSH
//! relay with real `ssh`, a runner crash under a live VPS, assignments, and bad requests.

use ferry_e2e::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

/// Creates a VPS; returns the reply (status must be 200).
async fn create(c: &TestCluster, body: Value) -> Value {
    let (status, v) = c.post_json("/api/vps/create", &body).await;
    assert_eq!(status, 200, "create {body}: {v}");
    v
}

/// Creates a VPS; returns its id.
async fn create_id(c: &TestCluster, body: Value) -> String {
    let v = create(c, body).await;
    v["task_id"].as_str().expect("a string id").to_string()
}

fn vps_container(id: &str) -> String {
    format!("kohakuriver-vps-{id}")
}

/// Runs `sh -c script` in a container; its stdout.
fn exec(container: &str, script: &str) -> String {
    docker(&["exec", container, "sh", "-c", script])
}

/// Waits until `check` holds, for up to 30 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn call(c: &TestCluster, method: Method, path: &str) -> (u16, Value) {
    let r = c.request(method, path).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_terminal_only_vps_runs_is_listed_stopped_and_restarted() {
    let c = TestCluster::with_runner(&[]).await;
    let v = create(&c, json!({"name": "dev", "required_cores": 1})).await;
    assert_eq!(v["message"], "VPS created successfully.", "{v}");
    assert_eq!(v["status"], "running");
    assert_eq!(v["ssh_key_mode"], "disabled");
    assert_eq!(v["ssh_port"], 0);
    assert_eq!(v["assigned_node"]["hostname"], "node-1");
    let id = v["task_id"].as_str().expect("string id").to_string();
    let name = vps_container(&id);
    assert_eq!(container_state(&name), "running");
    // Under init, so the session's PID 1 is not the shell's `tail`.
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.Init}}", &name]),
        "true"
    );
    let t = c.task(&id).await;
    assert_eq!(
        (t["task_type"].as_str(), t["command"].as_str()),
        (Some("vps"), Some("vps"))
    );
    assert_eq!(t["name"], "dev");
    for list in ["/api/vps", "/api/vps/status", "/api/vps/my"] {
        let (status, items) = c.get_json(list).await;
        assert_eq!(status, 200, "{list}: {items}");
        let item = items
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["task_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{list} lists the VPS: {items}"));
        assert_eq!(item["status"], "running");
        assert_eq!(item["assignees"], json!([]));
    }
    // Its booking shows: one core of node-1 is taken.
    let (_, nodes) = c.get_json("/api/nodes").await;
    assert_eq!(
        nodes[0]["available_cores"],
        nodes[0]["total_cores"].as_u64().unwrap() - 1
    );

    let started = Instant::now();
    let (status, v) = c
        .post_json(&format!("/api/vps/stop/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        v["message"],
        format!("VPS {id} stop requested. VPS marked as stopped.")
    );
    assert_eq!(c.task(&id).await["status"], "stopped");
    eventually("the container is removed", || containers_of(&id).is_empty()).await;
    // A stop under init does not sit out the 10 s grace period.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let (_, active) = c.get_json("/api/vps/status").await;
    assert!(!active
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["task_id"] == id.as_str()));
    // Stopping again is a conflict.
    let (status, _) = c
        .post_json(&format!("/api/vps/stop/{id}"), &json!({}))
        .await;
    assert_eq!(status, 409);

    let (status, v) = c
        .post_json(&format!("/api/vps/restart/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(container_state(&name), "running");
    let t = c.task(&id).await;
    assert_eq!(t["status"], "running");
    assert_eq!(t["assigned_node"], "node-1");
    // Restart of a running VPS: stopped, then started again.
    let (status, v) = c
        .post_json(&format!("/api/vps/restart/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(c.task(&id).await["status"], "running");
    // Kill removes the container too.
    let (status, _) = c.post_json(&format!("/api/kill/{id}"), &json!({})).await;
    assert_eq!(status, 202);
    eventually("killed VPS removed", || containers_of(&id).is_empty()).await;
    assert_eq!(c.task(&id).await["status"], "killed");
}

#[tokio::test]
async fn snapshots_are_taken_listed_pruned_and_restored_on_restart() {
    let c = TestCluster::with_runner(&[
        "--snapshot-on-stop",
        "false",
        "--max-snapshots-per-vps",
        "2",
    ])
    .await;
    let id = create_id(&c, json!({})).await;
    let name = vps_container(&id);
    exec(&name, "echo one > /root/state");
    let path = format!("/api/vps/snapshots/{id}");
    let (status, v) = c
        .post_json(&format!("{path}?message=first"), &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    let first = v["tag"].as_str().unwrap().to_string();
    assert!(
        first.starts_with(&format!("kohakuriver-snapshot/vps-{id}:")),
        "{first}"
    );
    // The container was frozen only for the commit.
    assert_eq!(container_state(&name), "running");
    exec(&name, "echo two > /root/state");
    // Two more at once: distinct tags, and retention keeps the newest two.
    let (s2, v2) = c.post_json(&path, &json!({})).await;
    let (s3, v3) = c.post_json(&path, &json!({})).await;
    assert_eq!((s2, s3), (200, 200), "{v2} {v3}");
    assert_ne!(v2["tag"], v3["tag"]);
    let (status, list) = c.get_json(&path).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 2, "{list}");
    let tags: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tag"].as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        vec![v3["tag"].as_str().unwrap(), v2["tag"].as_str().unwrap()]
    );
    assert!(!tags.contains(&first.as_str()), "the oldest was dropped");
    // The node view counts them (other tests' snapshots may be on this engine too). Each
    // adds at least the file written before it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, nodes) = c.get_json("/api/nodes").await;
        let disk = &nodes[0]["disk_usage"];
        if disk["snapshots"].as_u64() >= Some(2) && disk["snapshot_bytes"].as_u64() > Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "snapshots not counted: {nodes}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, latest) = c.get_json(&format!("{path}/latest")).await;
    assert_eq!(latest["tag"], v3["tag"]);
    // Delete the newest one: the restart comes back to the one before (holding "two").
    let newest_ts = list["snapshots"][0]["timestamp"].as_i64().unwrap();
    let (status, v) = call(&c, Method::DELETE, &format!("{path}/{newest_ts}")).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = call(&c, Method::DELETE, &format!("{path}/{newest_ts}")).await;
    assert_eq!(status, 404, "already gone");
    exec(&name, "echo three > /root/state");
    let (status, v) = c
        .post_json(&format!("/api/vps/restart/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    // snapshot_on_stop is off: the change after the snapshot is gone, the snapshot's is back.
    assert_eq!(exec(&name, "cat /root/state"), "two");
    // Delete all.
    let (status, v) = call(&c, Method::DELETE, &path).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["deleted_count"], 1);
    let (_, list) = c.get_json(&path).await;
    assert_eq!(list["count"], 0);
}

#[tokio::test]
async fn with_snapshot_on_stop_a_restart_keeps_the_users_files() {
    let c = TestCluster::with_runner(&[]).await;
    let id = create_id(&c, json!({})).await;
    let name = vps_container(&id);
    exec(&name, "echo kept > /root/notes");
    let (status, v) = c
        .post_json(&format!("/api/vps/stop/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    eventually("stopped and removed", || containers_of(&id).is_empty()).await;
    let (_, list) = c.get_json(&format!("/api/vps/snapshots/{id}")).await;
    assert_eq!(list["count"], 1, "the stop took a snapshot: {list}");
    let (status, v) = c
        .post_json(&format!("/api/vps/restart/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(exec(&name, "cat /root/notes"), "kept");
    let (status, v) = call(&c, Method::DELETE, &format!("/api/vps/snapshots/{id}")).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn bad_vps_requests_name_the_field_and_create_nothing() {
    let c = TestCluster::with_runner(&[]).await;
    let cases = [
        (json!({"ssh_key_mode": "password"}), 400, "ssh_key_mode"),
        (json!({"ssh_key_mode": "upload"}), 400, "ssh_public_key"),
        (
            json!({"ssh_key_mode": "upload", "ssh_public_key": "ssh-ed25519 AAAAnotakey"}),
            400,
            "ssh_public_key",
        ),
        (json!({"ssh_key_mode": "none"}), 400, "ssh_key_mode"),
        (json!({"vps_backend": "qemu"}), 400, "vps_backend"),
        (json!({"required_cores": -1}), 400, "required_cores"),
        (json!({"required_cores": 64}), 400, "required_cores"),
        (json!({"target_hostname": "nope"}), 400, "target_hostname"),
        (json!({"required_cores": "two"}), 422, "required_cores"),
    ];
    for (body, code, field) in cases {
        let (status, v) = c.post_json("/api/vps/create", &body).await;
        assert_eq!(status, code, "{body}: {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{body}: {detail}");
    }
    let (_, all) = c.get_json("/api/vps").await;
    assert_eq!(all, json!([]), "nothing was created");
    // An image without sshd: the VPS fails with the image named, no container is left.
    let key = ssh_keygen("k").1;
    let (status, v) = c
        .post_json(
            "/api/vps/create",
            &json!({"ssh_key_mode": "upload", "ssh_public_key": key}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("container_name: kohakuriver/kohakuriver-base:base has no OpenSSH"),
        "{detail}"
    );
    let (_, all) = c.get_json("/api/vps").await;
    let id = all[0]["task_id"].as_str().unwrap();
    assert_eq!(all[0]["status"], "failed");
    assert!(containers_of(id).is_empty());
    // No room now: refused at once with what is short, unless asked to queue.
    let (_, nodes) = c.get_json("/api/nodes").await;
    let cores = nodes[0]["total_cores"].as_u64().unwrap();
    let big = create(&c, json!({"required_cores": cores})).await;
    let (status, v) = c
        .post_json("/api/vps/create", &json!({"required_cores": 1}))
        .await;
    assert_eq!(status, 503, "{v}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("node-1") && detail.contains("cores free"),
        "{detail}"
    );
    let queued = create(&c, json!({"required_cores": 1, "queue": true})).await;
    assert_eq!(queued["status"], "pending", "{queued}");
    assert_eq!(queued["queue_position"], 1);
    let qid = queued["task_id"].as_str().unwrap();
    assert_eq!(c.task(qid).await["queue_position"], 1);
    // It starts once the big one stops.
    let big_id = big["task_id"].as_str().unwrap();
    let (status, _) = c
        .post_json(&format!("/api/vps/stop/{big_id}"), &json!({}))
        .await;
    assert_eq!(status, 202);
    c.wait_status(qid, &["running"], Duration::from_secs(30))
        .await;
}

#[tokio::test]
async fn assignment_lets_a_user_reach_a_vps_and_unassignment_takes_it_back() {
    let c = TestCluster::with_runner(&[]).await;
    let (uid, token) = c.user_account("ursula", "user").await;
    let id = create_id(&c, json!({})).await;
    let as_user = |method: Method, path: String| {
        let token = token.clone();
        let c = &c;
        async move {
            let r = c
                .http
                .request(method, format!("{}{path}", c.url()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, _) = as_user(Method::GET, format!("/api/status/{id}")).await;
    assert_eq!(status, 403, "not theirs, not assigned");
    let (status, _) = as_user(Method::GET, format!("/api/vps/snapshots/{id}")).await;
    assert_eq!(status, 403);
    let (_, mine) = as_user(Method::GET, "/api/vps/my".into()).await;
    assert_eq!(mine, json!([]));

    let (status, v) = c
        .post_json(&format!("/api/vps/{id}/assign"), &json!([uid, uid]))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["task_id"],
        id.parse::<u64>().unwrap(),
        "a number here, as the original"
    );
    let (status, v) = c
        .post_json(&format!("/api/vps/{id}/assign"), &json!([999999]))
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["detail"], "User 999999 not found.");
    let (_, v) = c.get_json(&format!("/api/vps/{id}/assignments")).await;
    assert_eq!(v["assignments"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["assignments"][0]["username"], "ursula");
    let (status, _) = as_user(Method::GET, format!("/api/status/{id}")).await;
    assert_eq!(status, 200);
    let (status, v) = as_user(Method::GET, format!("/api/vps/snapshots/{id}")).await;
    assert_eq!(status, 200, "{v}");
    let (_, mine) = as_user(Method::GET, "/api/vps/my".into()).await;
    assert_eq!(mine[0]["task_id"], id.as_str());
    let (_, all) = c.get_json("/api/vps").await;
    assert_eq!(all[0]["assignees"][0]["username"], "ursula");
    // Assignment grants access, not control: stopping stays the owner's or an operator's.
    let (status, _) = as_user(Method::POST, format!("/api/vps/stop/{id}")).await;
    assert_eq!(status, 403);

    let (status, v) = call(&c, Method::DELETE, &format!("/api/vps/{id}/assign/{uid}")).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = call(&c, Method::DELETE, &format!("/api/vps/{id}/assign/{uid}")).await;
    assert_eq!(status, 404);
    let (status, _) = as_user(Method::GET, format!("/api/vps/snapshots/{id}")).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn an_uploaded_key_logs_in_through_the_relay_and_a_wrong_one_does_not() {
    let c = TestCluster::with_runner(&[]).await;
    let (key, public) = ssh_keygen("right");
    let v = create(
        &c,
        json!({"ssh_key_mode": "upload", "ssh_public_key": public, "registry_image": SSHD_IMAGE}),
    )
    .await;
    let port = v["ssh_port"].as_u64().unwrap();
    assert!(port > 0, "the real published port: {v}");
    let id = v["task_id"].as_str().unwrap().to_string();
    assert_eq!(c.task(&id).await["ssh_port"], port);
    let local = relay_forward(c.relay_port, &id).await;
    assert_eq!(ssh_until_ok(local, Some(&key), "echo $((6*7))").await, "42");
    // The key is root's only one, written as a file (0600 in a 0700 directory).
    assert_eq!(
        ssh_until_ok(
            local,
            Some(&key),
            "stat -c %a /root/.ssh /root/.ssh/authorized_keys"
        )
        .await,
        "700\n600"
    );
    // The ProxyCommand script docs/api.md gives for plain OpenSSH works as written.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md");
    let script = docs
        .split("saved as `ferry-relay.py`:\n\n```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the relay script in docs/api.md");
    let dir = tempfile::tempdir().unwrap();
    let script_path = dir.path().join("ferry-relay.py");
    std::fs::write(&script_path, script).unwrap();
    let proxy = format!(
        "ProxyCommand=python3 {} 127.0.0.1 {} {id}",
        script_path.display(),
        c.relay_port
    );
    let out = tokio::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o"])
        .args([
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(["-o", &proxy, "-i"])
        .arg(&key)
        .args(["root@vps", "echo via-docs"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "via-docs",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (wrong, _) = ssh_keygen("wrong");
    let (code, _) = ssh_run(local, Some(&wrong), "true").await;
    assert_eq!(code, 255, "another key is refused");
    let (code, _) = ssh_run(local, None, "true").await;
    assert_eq!(code, 255, "no password login");
    // The relay says why it will not connect.
    assert_eq!(
        relay_answer(c.relay_port, "REQUEST_TUNNEL 12345\n").await,
        "ERROR VPS 12345 not found\n"
    );
    let answer = relay_answer(c.relay_port, "HELLO\n").await;
    assert!(
        answer.starts_with("ERROR expected 'REQUEST_TUNNEL"),
        "{answer}"
    );
    let disabled = create(&c, json!({})).await;
    let did = disabled["task_id"].as_str().unwrap();
    let answer = relay_answer(c.relay_port, &format!("REQUEST_TUNNEL {did}\n")).await;
    assert!(answer.contains("has no SSH port"), "{answer}");
    // Restart keeps the mode and the key (the original came back as passwordless root).
    let (status, v) = c
        .post_json(&format!("/api/vps/restart/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    let local = relay_forward(c.relay_port, &id).await;
    assert_eq!(ssh_until_ok(local, Some(&key), "echo back").await, "back");
    let (code, _) = ssh_run(local, None, "true").await;
    assert_eq!(code, 255);
    // A stopped VPS is refused by the relay.
    let (status, _) = c
        .post_json(&format!("/api/vps/stop/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202);
    let answer = relay_answer(c.relay_port, &format!("REQUEST_TUNNEL {id}\n")).await;
    assert_eq!(answer, format!("ERROR VPS {id} is stopped\n"));
}

#[tokio::test]
async fn a_generated_key_is_returned_once_and_logs_in() {
    let c = TestCluster::with_runner(&[]).await;
    let v = create(
        &c,
        json!({"ssh_key_mode": "generate", "registry_image": SSHD_IMAGE}),
    )
    .await;
    let private = v["ssh_private_key"]
        .as_str()
        .expect("the private key, once");
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let public = v["ssh_public_key"].as_str().unwrap();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    let id = v["task_id"].as_str().unwrap().to_string();
    // Kept nowhere: the task shows no key.
    let t = c.task(&id).await;
    assert!(!t.to_string().contains("PRIVATE KEY"), "{t}");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    std::fs::write(&key, private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let local = relay_forward(c.relay_port, &id).await;
    assert_eq!(
        ssh_until_ok(local, Some(&key), "hostname >/dev/null && echo in").await,
        "in"
    );
}

#[tokio::test]
async fn a_vps_survives_a_runner_crash_and_a_host_restart() {
    let mut c = TestCluster::with_runner(&[]).await;
    let (key, public) = ssh_keygen("k");
    let v = create(
        &c,
        json!({"ssh_key_mode": "upload", "ssh_public_key": public, "registry_image": SSHD_IMAGE}),
    )
    .await;
    let id = v["task_id"].as_str().unwrap().to_string();
    let name = vps_container(&id);
    let before = docker(&["inspect", "-f", "{{.Id}}", &name]);
    let local = relay_forward(c.relay_port, &id).await;
    ssh_until_ok(local, Some(&key), "echo before > /root/mark").await;
    c.runners[0].kill();
    c.runners[0].restart();
    c.wait_node_online("node-1").await;
    // Re-adopted by label: the same container, still running, still reachable.
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &name]), before);
    assert_eq!(c.task(&id).await["status"], "running");
    assert_eq!(
        ssh_until_ok(local, Some(&key), "cat /root/mark").await,
        "before"
    );
    c.crash_and_restart_host().await;
    c.wait_node_online("node-1").await;
    assert_eq!(c.task(&id).await["status"], "running");
    assert_eq!(
        ssh_until_ok(local, Some(&key), "cat /root/mark").await,
        "before"
    );
    // And it is still followed: a stop after both restarts works as usual.
    let (status, _) = c
        .post_json(&format!("/api/vps/stop/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202);
    eventually("stopped after the restarts", || {
        containers_of(&id).is_empty()
    })
    .await;
}

#[tokio::test]
async fn passwordless_root_needs_the_host_to_allow_it() {
    let mut c = TestCluster::new(Opts {
        host_args: vec!["--allow-passwordless-vps".into(), "true".into()],
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let v = create(
        &c,
        json!({"ssh_key_mode": "none", "registry_image": SSHD_IMAGE}),
    )
    .await;
    let id = v["task_id"].as_str().unwrap().to_string();
    let local = relay_forward(c.relay_port, &id).await;
    assert_eq!(ssh_until_ok(local, None, "id -u").await, "0");
    // Its node goes silent: the relay says so instead of hanging.
    c.runners[0].kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = relay_answer(c.relay_port, &format!("REQUEST_TUNNEL {id}\n")).await;
        if answer.starts_with("ERROR") {
            assert!(
                answer.contains("offline") || answer.contains("is lost"),
                "{answer}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay still tunnels to a dead node"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_vps_pauses_and_resumes_like_a_task() {
    let c = TestCluster::with_runner(&[]).await;
    let id = create_id(&c, json!({})).await;
    let name = vps_container(&id);
    let (status, v) = c
        .post_json(&format!("/api/command/{id}/pause"), &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(container_state(&name), "paused");
    assert_eq!(c.task(&id).await["status"], "paused");
    // A paused VPS stops too (thawed first, so SIGTERM is handled).
    let (status, v) = c
        .post_json(&format!("/api/command/{id}/resume"), &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(container_state(&name), "running");
    let (status, _) = c
        .post_json(&format!("/api/command/{id}/pause"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = c
        .post_json(&format!("/api/vps/stop/{id}"), &json!({}))
        .await;
    assert_eq!(status, 202);
    eventually("a paused VPS stopped", || containers_of(&id).is_empty()).await;
}

#[tokio::test]
async fn users_create_vpses_only_when_allowed_and_then_after_approval() {
    let closed = TestCluster::with_runner(&[]).await;
    let (_, token) = closed.user_account("uma", "user").await;
    let r = closed
        .http
        .post(format!("{}/api/vps/create", closed.url()))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "operators only by default");
    drop(closed);

    let mut c = TestCluster::new(Opts {
        host_args: vec!["--user-vps".into(), "true".into()],
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let (uid, token) = c.user_account("uma", "user").await;
    let r = c
        .http
        .post(format!("{}/api/vps/create", c.url()))
        .bearer_auth(&token)
        .json(&json!({"name": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "pending_approval", "{v}");
    let id = v["task_id"].as_str().unwrap().to_string();
    assert!(
        containers_of(&id).is_empty(),
        "nothing runs before approval"
    );
    let t = c.task(&id).await;
    assert_eq!(t["owner_id"], uid);
    let (status, v) = c.post_json(&format!("/api/approve/{id}"), &json!({})).await;
    assert_eq!(status, 200, "{v}");
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    // The owner sees it as theirs and may stop it.
    let r = c
        .http
        .post(format!("{}/api/vps/stop/{id}", c.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}
