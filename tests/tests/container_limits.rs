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
