//! Retries: `max_retries` runs a failing task again after a doubling backoff, each attempt
//! with its own exit code and output (`/stdout?attempt=N`, with and without a shared dir);
//! `POST /api/tasks/{id}/retry` runs an ended task again; a task lost with its node is run
//! again on another; bad retry policies are refused naming the field.

use ferry_common::time::parse_ms;
use ferry_e2e::*;
use serde_json::{json, Value};
use std::time::Duration;

fn ms(v: &Value, key: &str) -> i64 {
    v[key]
        .as_str()
        .and_then(parse_ms)
        .unwrap_or_else(|| panic!("{key} in {v}"))
}

fn events_of(timeline: &Value) -> Vec<String> {
    timeline["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|s| s["event"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

async fn each_attempt_keeps_its_own_exit_code_and_output(shared: bool) {
    let c = TestCluster::one_node(shared).await;
    let id = c
        .submit(json!({
            "command": "echo \"out of attempt $FERRY_TASK_ATTEMPT\"; echo \"err $FERRY_TASK_ATTEMPT\" >&2; exit $((10 + FERRY_TASK_ATTEMPT))",
            "max_retries": 2,
            "retry_backoff_seconds": 1,
        }))
        .await
        .remove(0);
    let t = c.wait_final(&id).await;
    assert_eq!(t["status"], "failed", "{t}\n{}", c.logs());
    assert_eq!(
        (t["attempt"].as_u64(), t["exit_code"].as_i64()),
        (Some(3), Some(13)),
        "{t}"
    );
    assert_eq!(t["max_retries"], 2, "{t}");
    assert_eq!(t["retry_on"], json!(["failed", "lost"]), "{t}");

    let (status, a) = c.get_json(&format!("/api/tasks/{id}/attempts")).await;
    assert_eq!(status, 200, "{a}");
    let list = a["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 3, "{a}");
    for (i, attempt) in list.iter().enumerate() {
        let n = i as i64 + 1;
        assert_eq!(attempt["attempt"], n, "{a}");
        assert_eq!(attempt["status"], "failed", "{a}");
        assert_eq!(attempt["exit_code"], 10 + n, "{a}");
        assert_eq!(attempt["node"], "node-1", "{a}");
        let (status, out) = c
            .get_text(&format!("/api/tasks/{id}/stdout?attempt={n}"))
            .await;
        assert_eq!(
            (status, out.as_str()),
            (200, format!("out of attempt {n}\n").as_str())
        );
        let (_, err) = c
            .get_text(&format!("/api/tasks/{id}/stderr?attempt={n}"))
            .await;
        assert_eq!(err, format!("err {n}\n"));
    }
    // Each retry waited out its backoff (1 s, then 2 s) after the attempt before it ended.
    for (before, (after, wait_ms)) in list.iter().zip(list.iter().skip(1).zip([1000, 2000])) {
        let gap = ms(after, "started_at") - ms(before, "completed_at");
        assert!(
            gap >= wait_ms,
            "attempt {} started {gap} ms after the one before",
            after["attempt"]
        );
    }
    // Without `attempt`: the latest. An attempt that never was: 404 naming it.
    let (_, latest) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
    assert_eq!(latest, "out of attempt 3\n");
    let (status, body) = c
        .get_text(&format!("/api/tasks/{id}/stdout?attempt=4"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("attempt"), "{body}");
    let (status, body) = c
        .get_text(&format!("/api/tasks/{id}/stdout?attempt=0"))
        .await;
    assert_eq!(status, 422, "{body}");
    // A follow of an attempt that is over ends at once with its output.
    let (status, old) = c
        .get_text(&format!("/api/tasks/{id}/stdout?attempt=1&follow=true"))
        .await;
    assert_eq!((status, old.as_str()), (200, "out of attempt 1\n"));

    let (_, timeline) = c.get_json(&format!("/api/tasks/{id}/events")).await;
    let steps = events_of(&timeline);
    let count = |e: &str| steps.iter().filter(|s| *s == e).count();
    assert_eq!(
        (count("attempt_ended"), count("retried"), count("finished")),
        (2, 2, 1),
        "{timeline}"
    );
    let last = timeline["events"]
        .as_array()
        .and_then(|e| e.last().cloned())
        .unwrap_or_default();
    assert_eq!(last["attempt"], 3, "{timeline}");
}

#[tokio::test]
async fn each_attempt_keeps_its_own_exit_code_and_output_in_a_shared_dir() {
    each_attempt_keeps_its_own_exit_code_and_output(true).await;
}

#[tokio::test]
async fn each_attempt_keeps_its_own_exit_code_and_output_on_its_runner() {
    each_attempt_keeps_its_own_exit_code_and_output(false).await;
}

#[tokio::test]
async fn a_retry_that_succeeds_ends_the_task_completed_and_a_follow_ends_with_its_attempt() {
    let c = TestCluster::one_node(false).await;
    // Fails on its first attempt only.
    let id = c
        .submit(json!({
            "command": "echo try $FERRY_TASK_ATTEMPT; sleep 2; [ \"$FERRY_TASK_ATTEMPT\" -ge 2 ]",
            "max_retries": 3,
            "retry_backoff_seconds": 0,
        }))
        .await
        .remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    // A follow opened during attempt 1 is attempt 1's: it ends when that attempt does.
    let resp = reqwest::Client::new()
        .get(format!("{}/api/tasks/{id}/stdout?follow=true", c.url()))
        .bearer_auth(c.token.clone().unwrap_or_default())
        .send()
        .await
        .expect("follow");
    let first = tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .expect("the follow ends with its attempt")
        .expect("body");
    assert_eq!(first, "try 1\n");
    let t = c.wait_final(&id).await;
    assert_eq!(
        (t["status"].as_str(), t["attempt"].as_u64()),
        (Some("completed"), Some(2)),
        "{t}"
    );
    let (_, a) = c.get_json(&format!("/api/tasks/{id}/attempts")).await;
    let statuses: Vec<&str> = a["attempts"]
        .as_array()
        .map(|l| l.iter().filter_map(|x| x["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, vec!["failed", "completed"], "{a}");
}

async fn post_as(c: &TestCluster, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = c
        .http
        .post(format!("{}{path}", c.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_ended_task_is_retried_on_request_by_its_owner_only() {
    let c = TestCluster::one_node(false).await;
    let (_, alice) = c.user_account("alice-retry", "user").await;
    let (_, bob) = c.user_account("bob-retry", "user").await;
    let (status, sub) = post_as(
        &c,
        &alice,
        "/api/submit",
        json!({"command": "echo hello $FERRY_TASK_ATTEMPT"}),
    )
    .await;
    assert_eq!(status, 202, "{sub}");
    let id = sub["task_ids"][0].as_str().unwrap_or_default().to_string();
    let (status, _) = c.post_json(&format!("/api/approve/{id}"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(c.wait_final(&id).await["status"], "completed");
    // Someone else's task: refused, nothing changes.
    let path = format!("/api/tasks/{id}/retry");
    let (status, body) = post_as(&c, &bob, &path, json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(c.task(&id).await["attempt"], 1);

    let (status, t) = post_as(&c, &alice, &path, json!({})).await;
    assert_eq!(status, 202, "{t}");
    assert_eq!(
        (t["attempt"].as_u64(), t["status"].as_str()),
        (Some(2), Some("pending")),
        "{t}"
    );
    let t = c.wait_final(&id).await;
    assert_eq!(
        (t["status"].as_str(), t["attempt"].as_u64()),
        (Some("completed"), Some(2)),
        "{t}"
    );
    let (_, one) = c
        .get_text(&format!("/api/tasks/{id}/stdout?attempt=1"))
        .await;
    let (_, two) = c
        .get_text(&format!("/api/tasks/{id}/stdout?attempt=2"))
        .await;
    assert_eq!((one.as_str(), two.as_str()), ("hello 1\n", "hello 2\n"));
    let (_, audit) = c.get_json("/api/audit?limit=50").await;
    assert!(audit.to_string().contains("task.retry"), "{audit}");

    // Running: not yet.
    let busy = c.submit(json!({"command": "sleep 30"})).await.remove(0);
    c.wait_status(&busy, &["running"], Duration::from_secs(30))
        .await;
    let (status, body) = c
        .post_json(&format!("/api/tasks/{busy}/retry"), &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("running"),
        "{body}"
    );
    let (status, _) = c.post_json("/api/tasks/999999/retry", &json!({})).await;
    assert_eq!(status, 404);
    c.post_json(&format!("/api/kill/{busy}"), &json!({})).await;
}

/// A node that dies (its runner and its containers gone): its task, allowed to retry when
/// lost, runs again on the other node. (The node stays dead: both test nodes share one
/// Docker engine and so one container name per task, which separate machines do not. A
/// node that comes back has its copy of the old attempt killed: see the runner's and the
/// cluster's unit tests.)
#[tokio::test]
async fn a_task_lost_with_its_node_runs_again_on_another() {
    let mut c = TestCluster::with_runner(&[]).await;
    let id = c
        .submit(json!({
            "command": "echo started $FERRY_TASK_ATTEMPT; sleep 300",
            "max_retries": 1,
            "retry_on": ["lost"],
            "retry_backoff_seconds": 0,
        }))
        .await
        .remove(0);
    let t = c
        .wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    assert_eq!(t["assigned_node"], "node-1");
    // Only now a second node, so the first attempt is on node-1.
    c.start_runner("node-2", &[]);
    c.wait_node_online("node-2").await;
    c.runners[0].kill();
    for name in containers_of(&id) {
        docker(&["rm", "-f", &name]);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let t = loop {
        let t = c.task(&id).await;
        if t["status"] == "running" && t["assigned_node"] == "node-2" {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not running on node-2: {t}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(t["attempt"], 2, "{t}");
    let (_, a) = c.get_json(&format!("/api/tasks/{id}/attempts")).await;
    let first = &a["attempts"][0];
    assert_eq!(
        (first["status"].as_str(), first["node"].as_str()),
        (Some("lost"), Some("node-1")),
        "{a}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
        if out == "started 2\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{out:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.post_json(&format!("/api/kill/{id}"), &json!({})).await;
    c.wait_final(&id).await;
}

#[tokio::test]
async fn bad_retry_policies_are_refused_naming_the_field() {
    let c = TestCluster::with_host().await;
    for (body, field, want) in [
        (json!({"max_retries": -1}), "max_retries", 400),
        (json!({"max_retries": 1000}), "max_retries", 400),
        (
            json!({"max_retries": 1, "retry_on": ["failed", "crashed"]}),
            "retry_on[1]",
            400,
        ),
        (
            json!({"max_retries": 1, "retry_on": "failed"}),
            "retry_on",
            422,
        ),
        (
            json!({"retry_backoff_seconds": -5}),
            "retry_backoff_seconds",
            400,
        ),
        (
            json!({"retry_backoff_seconds": 86_400}),
            "retry_backoff_seconds",
            400,
        ),
    ] {
        let mut req = body.clone();
        req["command"] = json!("true");
        let (status, v) = c.post_json("/api/submit", &req).await;
        assert_eq!(status, want, "{body}: {v}");
        assert!(
            v["detail"].as_str().unwrap_or_default().contains(field),
            "{body}: {v}"
        );
    }
    assert_eq!(c.task_count().await, 0, "nothing was created");
}
