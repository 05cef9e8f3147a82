//! What every task's container is held to, on the real Docker engine: limits (memory, pids,
//! log size), reduced privileges, its own scratch space, and a runner that adopts only its own
//! containers.

use ferry_e2e::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn container(id: &str) -> String {
    format!("kohakuriver-task-{id}")
}

/// `docker inspect` of a container's HostConfig.
fn host_config(name: &str) -> Value {
    let text = docker(&["inspect", "-f", "{{json .HostConfig}}", name]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect {name}: {e}: {text:?}"))
}

/// Waits until `check` holds, polling; panics with `what` at the deadline.
async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stdout_of(c: &TestCluster, id: &str) -> String {
    let (status, out) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
    assert_eq!(status, 200, "stdout of {id}: {out}");
    out
}

async fn stderr_of(c: &TestCluster, id: &str) -> String {
    let (status, out) = c.get_text(&format!("/api/tasks/{id}/stderr")).await;
    assert_eq!(status, 200, "stderr of {id}: {out}");
    out
}

async fn kill(c: &TestCluster, id: &str) {
    let (status, v) = c.post_json(&format!("/api/kill/{id}"), &json!({})).await;
    assert_eq!(status, 202, "kill {id}: {v}");
}

const MIB: i64 = 1 << 20;

#[tokio::test]
async fn every_container_starts_with_limits_and_fewer_privileges() {
    // 4 cores and 1 GiB offered: a 1-core task's default share is 256 MiB.
    let c = TestCluster::with_runner(&["--cores", "4", "--memory", "1G"]).await;
    let one = c.submit(json!({"command": "sleep 300"})).await.remove(0);
    let none = c
        .submit(json!({"command": "sleep 300", "required_cores": 0}))
        .await
        .remove(0);
    let two = c
        .submit(json!({"command": "sleep 300", "required_cores": 2}))
        .await
        .remove(0);
    for id in [&one, &none, &two] {
        c.wait_status(id, &["running"], Duration::from_secs(30))
            .await;
    }
    for (id, memory) in [(&one, 256 * MIB), (&none, 1024 * MIB), (&two, 512 * MIB)] {
        let hc = host_config(&container(id));
        assert_eq!(hc["Memory"], memory, "task {id}: {hc}");
        assert_eq!(hc["MemorySwap"], memory, "no swap beyond the limit: {hc}");
        assert_eq!(hc["PidsLimit"], 4096, "{hc}");
        assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges"]), "{hc}");
        assert_eq!(hc["CapDrop"], json!(["NET_RAW", "MKNOD"]), "{hc}");
        assert!(hc["CapAdd"].is_null(), "{hc}");
        assert_eq!(hc["Privileged"], false, "{hc}");
        assert_eq!(hc["LogConfig"]["Type"], "json-file", "{hc}");
        assert_eq!(
            hc["LogConfig"]["Config"],
            json!({"max-size": (64 * MIB).to_string(), "max-file": "1"}),
            "{hc}"
        );
    }
    for id in [&one, &none, &two] {
        kill(&c, id).await;
    }

    // What a task sees: no privilege gain, no raw sockets, no device nodes.
    let id = c
        .submit(json!({"command": "grep NoNewPrivs /proc/self/status; ping -c 1 -W 1 127.0.0.1; echo ping=$?; mknod /tmp/null c 1 3; echo mknod=$?"}))
        .await
        .remove(0);
    let t = c.wait_final(&id).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(
        stdout_of(&c, &id).await,
        "NoNewPrivs:\t1\nPING 127.0.0.1 (127.0.0.1): 56 data bytes\nping=1\nmknod=1\n"
    );
    let err = stderr_of(&c, &id).await;
    assert!(err.contains("ping: permission denied"), "{err}");
    assert!(
        err.contains("mknod: /tmp/null: Operation not permitted"),
        "{err}"
    );
}

#[tokio::test]
async fn runner_settings_change_the_limits() {
    let c = TestCluster::with_runner(&[
        "--default-memory",
        "100M",
        "--pids-limit",
        "100",
        "--cap-add",
        "NET_RAW",
        "--max-log-size",
        "2M",
    ])
    .await;
    let id = c.submit(json!({"command": "sleep 300"})).await.remove(0);
    let own = c
        .submit(json!({"command": "sleep 300", "required_memory_bytes": 64 * MIB}))
        .await
        .remove(0);
    for id in [&id, &own] {
        c.wait_status(id, &["running"], Duration::from_secs(30))
            .await;
    }
    let hc = host_config(&container(&id));
    assert_eq!(hc["Memory"], 100 * MIB, "{hc}");
    assert_eq!(hc["PidsLimit"], 100, "{hc}");
    assert_eq!(hc["CapAdd"], json!(["NET_RAW"]), "{hc}");
    assert_eq!(hc["CapDrop"], json!(["MKNOD"]), "{hc}");
    assert_eq!(hc["LogConfig"]["Config"]["max-size"], (2 * MIB).to_string());
    // A task's own memory figure beats the default.
    assert_eq!(host_config(&container(&own))["Memory"], 64 * MIB);
    kill(&c, &id).await;
    kill(&c, &own).await;
    // NET_RAW given back: ping works.
    let ping = c
        .submit(json!({"command": "ping -c 1 -W 5 127.0.0.1 >/dev/null && echo pong"}))
        .await
        .remove(0);
    let t = c.wait_final(&ping).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(stdout_of(&c, &ping).await, "pong\n");
}

#[tokio::test]
async fn a_fork_bomb_is_held_at_its_pids_limit_and_the_node_runs_on() {
    let c = TestCluster::with_runner(&["--pids-limit", "64"]).await;
    // Every looper forks sleepers and more loopers until forks fail: the container fills up
    // to its limit and stays full (PID 1 is exec'd into sleep, so it needs no fork itself).
    let bomb = c
        .submit(json!({"command": "f() { while true; do sleep 1000 & f & done; }; f & exec sleep 1000"}))
        .await
        .remove(0);
    c.wait_status(&bomb, &["running"], Duration::from_secs(30))
        .await;
    let name = container(&bomb);
    let pids = || -> i64 {
        docker(&["stats", "--no-stream", "--format", "{{.PIDs}}", &name])
            .parse()
            .unwrap_or(-1)
    };
    let mut most = 0;
    wait_for(
        "the bomb to fill its container",
        Duration::from_secs(60),
        || {
            let n = pids();
            most = most.max(n);
            n == 64
        },
    )
    .await;
    // The runner answers, and an ordinary task runs to completion beside the bomb.
    let health = c
        .http
        .get(format!("{}/health", c.runners[0].url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("runner /health answers during the bomb");
    assert_eq!(health.status().as_u16(), 200);
    let ok = c.submit(echo_task("still working")).await.remove(0);
    let t = c.wait_final(&ok).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(stdout_of(&c, &ok).await, "still working\n");
    assert_eq!(c.task(&bomb).await["status"], "running");
    let n = pids();
    assert!(
        n <= 64 && most <= 64,
        "over the limit: now {n}, at most {most}"
    );
    kill(&c, &bomb).await;
    let t = c
        .wait_until(
            &bomb,
            |t| t["status"] == "killed" && !t["exit_code"].is_null(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(t["exit_code"], 137, "{t}");
    // What its owner reads: the forks that the limit refused.
    let err = stderr_of(&c, &bomb).await;
    assert!(
        err.contains("can't fork: Resource temporarily unavailable"),
        "{err}"
    );
    let health = c
        .http
        .get(format!("{}/health", c.runners[0].url()))
        .send()
        .await
        .expect("runner /health answers after the bomb");
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn a_task_allocating_without_end_is_killed_oom_by_its_default_share() {
    // 4 cores and 128 MiB offered: a 1-core task that names no memory gets 32 MiB.
    let c = TestCluster::with_runner(&["--cores", "4", "--memory", "128M"]).await;
    // The shell variable doubles until the kernel stops it.
    let hog = c
        .submit(json!({"command": "x=a; while true; do x=\"$x$x\"; done"}))
        .await
        .remove(0);
    let other = c
        .submit(json!({"command": "sleep 1; echo unharmed"}))
        .await
        .remove(0);
    let t = c.wait_final(&hog).await;
    assert_eq!(t["status"], "killed_oom", "{t}");
    assert_eq!(t["exit_code"], 137, "{t}");
    let t = c.wait_final(&other).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(stdout_of(&c, &other).await, "unharmed\n");
    // And one started after it.
    let after = c.submit(echo_task("after")).await.remove(0);
    assert_eq!(c.wait_final(&after).await["status"], "completed");
    assert_eq!(stdout_of(&c, &after).await, "after\n");
}

#[tokio::test]
async fn output_past_max_log_size_is_cut_and_says_so() {
    let c = TestCluster::with_runner(&["--max-log-size", "1M"]).await;
    let cap = 1 << 20;
    let marker = "[ferry: output cut at 1.0 MiB (max_log_size)]\n";
    // 3 MB of lines on stdout, a little on stderr.
    let id = c
        .submit(json!({"command": "yes 'ferry output line' | head -c 3000000; echo small >&2"}))
        .await
        .remove(0);
    let t = c.wait_final(&id).await;
    assert_eq!(t["status"], "completed", "{t}");
    let out = stdout_of(&c, &id).await;
    assert!(
        out.ends_with(marker),
        "tail: {:?}",
        &out[out.len().saturating_sub(200)..]
    );
    // At most the cap, a newline if the cut fell mid-line, and the marker line.
    assert!(
        out.len() <= cap + 1 + marker.len(),
        "{} bytes kept of a {cap} cap",
        out.len()
    );
    let kept = &out[..out.len() - marker.len()];
    assert!(kept.len() >= cap, "cut early: {} bytes", kept.len());
    assert!(kept.starts_with("ferry output line\n"));
    let lines: Vec<&str> = kept.lines().collect();
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|l| *l == "ferry output line"));
    // The tail a user asks for says it was cut.
    let (_, last) = c.get_text(&format!("/api/tasks/{id}/stdout?lines=1")).await;
    assert_eq!(last, marker);
    // The other stream is not cut.
    assert_eq!(stderr_of(&c, &id).await, "small\n");
    // Ferry's own file on the runner stopped growing at the cap too.
    let file = c
        .dir
        .path()
        .join("runner-node-1/logs")
        .join(&id)
        .join("stdout.log");
    let len = std::fs::metadata(&file).expect("runner log file").len() as usize;
    assert_eq!(len, out.len());
}

/// Removes a container when dropped, so a failing test leaves nothing behind.
struct Foreign(String);

impl Drop for Foreign {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.0]);
    }
}

#[tokio::test]
async fn a_container_holding_the_task_name_that_is_not_ours_is_left_alone() {
    // One core, taken by a blocker: the task waits in the queue, so its container name is
    // known before the runner acts on it.
    let c = TestCluster::with_runner(&["--cores", "1"]).await;
    let blocker = c.submit(json!({"command": "sleep 300"})).await.remove(0);
    c.wait_status(&blocker, &["running"], Duration::from_secs(30))
        .await;
    let id = c.submit(echo_task("should not run")).await.remove(0);
    assert_eq!(c.task(&id).await["status"], "pending");
    let name = container(&id);
    let _cleanup = Foreign(name.clone());
    let foreign_id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("ferry.task_id={id}"),
        TEST_IMAGE,
        "sleep",
        "300",
    ]);
    assert!(
        !foreign_id.is_empty(),
        "could not start the foreign container"
    );
    let started_at = docker(&["inspect", "-f", "{{.State.StartedAt}}", &name]);
    kill(&c, &blocker).await;
    let t = c.wait_final(&id).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(
        t["error_message"],
        format!(
            "a container named {name} exists and was not started by this runner; remove it or rename it"
        ),
        "{t}"
    );
    // Untouched: the same container, still running, never restarted or relabelled.
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &name]), foreign_id);
    assert_eq!(container_state(&name), "running");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &name]),
        started_at
    );
    let labels: Value = serde_json::from_str(&docker(&[
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &name,
    ]))
    .expect("labels");
    assert_eq!(labels["ferry.task_id"], id.as_str(), "{labels}");
    assert!(labels.get("ferry.runner_id").is_none(), "{labels}");
    // The runner's next task on the node runs normally.
    let next = c.submit(echo_task("fine")).await.remove(0);
    assert_eq!(c.wait_final(&next).await["status"], "completed");
    assert_eq!(stdout_of(&c, &next).await, "fine\n");
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn each_task_has_its_own_local_temp_removed_when_it_is_done() {
    let c = TestCluster::with_runner(&[]).await;
    let data = c.dir.path().join("runner-node-1");
    let local_temp = data.join("local_temp");
    // Each writes a file, waits for the test's go-ahead, then lists what it can see.
    let cmd = "echo $FERRY_TASK_ID > /local_temp/own; \
               while [ ! -e /local_temp/go ]; do sleep 0.1; done; ls -A /local_temp; cat /local_temp/own";
    let body = json!({"command": cmd, "env_vars": {"API_TOKEN": "hunter2-secret"}});
    let a = c.submit(body.clone()).await.remove(0);
    let b = c.submit(body).await.remove(0);
    wait_for(
        "both tasks to write their file",
        Duration::from_secs(30),
        || local_temp.join(&a).join("own").exists() && local_temp.join(&b).join("own").exists(),
    )
    .await;
    // The runner's record of a task holds its environment: only the runner's user reads it.
    let record = data.join("tasks").join(format!("{a}.json"));
    let text = std::fs::read_to_string(&record).expect("task record");
    assert!(text.contains("hunter2-secret"), "{text}");
    assert_eq!(mode(&record), 0o600, "{}", record.display());
    assert_eq!(mode(&data.join("tasks")), 0o700);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&local_temp.join(&a)), 0o700);
    for id in [&a, &b] {
        std::fs::write(local_temp.join(id).join("go"), b"").unwrap();
    }
    for id in [&a, &b] {
        let t = c.wait_final(id).await;
        assert_eq!(t["status"], "completed", "{t}");
        // Its own two files, not the other task's.
        assert_eq!(stdout_of(&c, id).await, format!("go\nown\n{id}\n"));
    }
    wait_for("the scratch dirs to go", Duration::from_secs(30), || {
        std::fs::read_dir(&local_temp).is_ok_and(|d| d.count() == 0)
    })
    .await;
    assert!(!record.exists(), "record kept after the task was forgotten");
}

/// Starts a task on the runner directly, as the host would, with `owner` beside the request.
async fn execute_on_runner(c: &TestCluster, id: u64, command: &str, owner: &str) -> (u16, Value) {
    let r = c
        .http
        .post(format!("{}/api/execute", c.runners[0].url()))
        .bearer_auth(&c.opts.secret)
        .json(&json!({"task_id": id, "command": command, "owner": owner}))
        .send()
        .await
        .expect("execute");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until the runner has run and forgotten task `id`; its stdout, from the runner.
async fn runner_task_output(c: &TestCluster, id: u64) -> String {
    let scratch = c
        .dir
        .path()
        .join("runner-node-1/local_temp")
        .join(id.to_string());
    let record = c.dir.path().join(format!("runner-node-1/tasks/{id}.json"));
    wait_for(
        &format!("task {id} to end"),
        Duration::from_secs(60),
        || containers_of(&id.to_string()).is_empty() && !record.exists() && !scratch.exists(),
    )
    .await;
    let r = c
        .http
        .get(format!("{}/api/tasks/{id}/stdout", c.runners[0].url()))
        .bearer_auth(&c.opts.secret)
        .send()
        .await
        .expect("stdout");
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap_or_default()
}

#[tokio::test]
async fn shared_is_each_owners_own_directory() {
    let mut c = TestCluster::new(Opts::default());
    c.start_host().await;
    let shared = c.dir.path().join("shared");
    let shared_arg = shared.display().to_string();
    c.start_runner("node-1", &["--shared-dir", &shared_arg]);
    c.wait_node_online("node-1").await;
    let data = shared.join("shared_data");
    // Ids of their own (the host never made these tasks), distinct per test process.
    let base = 7_000_000_000 + u64::from(std::process::id()) * 10;
    let (status, v) =
        execute_on_runner(&c, base + 1, "echo from-alice > /shared/note; pwd", "alice").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(runner_task_output(&c, base + 1).await, "/shared\n");
    assert_eq!(
        std::fs::read_to_string(data.join("alice/note")).expect("alice's note"),
        "from-alice\n"
    );
    // Bob sees his own (empty) directory, not alice's.
    let (status, v) = execute_on_runner(&c, base + 2, "ls -A /shared; echo end", "bob").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(runner_task_output(&c, base + 2).await, "end\n");
    assert!(data.join("bob").is_dir());
    // Alice's next task finds what her first one left.
    let (status, v) = execute_on_runner(&c, base + 3, "cat /shared/note", "alice").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(runner_task_output(&c, base + 3).await, "from-alice\n");
    // A name that is not one path component is refused before anything runs.
    for bad in ["../alice", "alice/..", ".."] {
        let (status, v) = execute_on_runner(&c, base + 4, "true", bad).await;
        assert_eq!(status, 422, "{bad}: {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with("owner: "), "{detail}");
    }
    assert!(containers_of(&(base + 4).to_string()).is_empty());
    // Through the host, which sends the owner: the admin's own directory.
    let id = c
        .submit(json!({"command": "echo via-host > /shared/file"}))
        .await
        .remove(0);
    assert_eq!(c.wait_final(&id).await["status"], "completed");
    assert_eq!(
        std::fs::read_to_string(data.join("admin/file")).expect("the owner's file"),
        "via-host\n"
    );
}

#[tokio::test]
async fn shared_mount_whole_shows_all_of_shared_data() {
    let mut c = TestCluster::new(Opts::default());
    c.start_host().await;
    let shared = c.dir.path().join("shared");
    std::fs::create_dir_all(shared.join("shared_data/alice")).unwrap();
    std::fs::write(shared.join("shared_data/alice/note"), b"hi\n").unwrap();
    let shared_arg = shared.display().to_string();
    c.start_runner(
        "node-1",
        &["--shared-dir", &shared_arg, "--shared-mount", "whole"],
    );
    c.wait_node_online("node-1").await;
    let id = c
        .submit(json!({"command": "cat /shared/alice/note"}))
        .await
        .remove(0);
    assert_eq!(c.wait_final(&id).await["status"], "completed");
    assert_eq!(stdout_of(&c, &id).await, "hi\n");
}
