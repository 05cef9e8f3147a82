//! Time limits: `timeout_seconds` ends a task `timed_out` at its deadline, counted from its
//! start, also across a runner restart; bad limits are refused naming the field.

use ferry_common::time::parse_ms;
use ferry_e2e::*;
use serde_json::{json, Value};
use std::time::Duration;

fn ms(t: &Value, key: &str) -> i64 {
    t[key]
        .as_str()
        .and_then(parse_ms)
        .unwrap_or_else(|| panic!("{key} in {t}"))
}

#[tokio::test]
async fn a_task_past_its_limit_ends_timed_out_with_the_limit_in_its_message() {
    let c = TestCluster::with_runner(&[]).await;
    let id = c
        .submit(json!({"command": "sleep 60", "timeout_seconds": 2}))
        .await
        .remove(0);
    let t = c.wait_final(&id).await;
    assert_eq!(t["status"], "timed_out", "{t}");
    assert_eq!(t["timeout_seconds"], 2, "{t}");
    let why = t["error_message"].as_str().unwrap_or_default();
    assert!(why.contains("timeout_seconds=2"), "{t}");
    let ran = ms(&t, "completed_at") - ms(&t, "started_at");
    assert!(ran >= 2000, "killed at its deadline, not before: {ran} ms");
    // Within the limit: untouched.
    let ok = c
        .submit(json!({"command": "echo quick", "timeout_seconds": 30}))
        .await
        .remove(0);
    assert_eq!(c.wait_final(&ok).await["status"], "completed");
    let (_, steps) = c.get_json(&format!("/api/tasks/{id}/events")).await;
    let finished = steps["events"]
        .as_array()
        .and_then(|e| e.iter().find(|s| s["event"] == "finished").cloned())
        .unwrap_or_default();
    assert_eq!(finished["status"], "timed_out", "{steps}");
}

#[tokio::test]
async fn the_deadline_holds_across_a_runner_restart() {
    let mut c = TestCluster::with_runner(&[]).await;
    let limit_s = 3;
    let id = c
        .submit(json!({"command": "sleep 60", "timeout_seconds": limit_s}))
        .await
        .remove(0);
    let t = c
        .wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    let started = ms(&t, "started_at");
    c.runners[0].kill();
    // Keep the runner down until its deadline has passed: the limit counts from the start,
    // not from when a runner next looks at the task.
    let past = started + limit_s * 1000 + 500 - ferry_common::time::now_ms();
    tokio::time::sleep(Duration::from_millis(past.max(0) as u64)).await;
    let back_at = ferry_common::time::now_ms();
    c.runners[0].restart();
    let t = c.wait_final(&id).await;
    assert_eq!(t["status"], "timed_out", "{t}\n{}", c.logs());
    let after_restart = ms(&t, "completed_at") - back_at;
    assert!(
        after_restart < limit_s * 1000,
        "killed at once after the restart, not {limit_s} s later: {after_restart} ms"
    );
}

#[tokio::test]
async fn bad_time_limits_are_refused_naming_the_field() {
    let c = TestCluster::with_host().await;
    // Out of range: refused by the checks (400); not a whole number: by the parser (422).
    for (bad, want) in [
        (json!(-1), 400),
        (json!(0), 400),
        (json!(100_000_000), 400),
        (json!("soon"), 422),
        (json!(1.5), 422),
    ] {
        let (status, v) = c
            .post_json(
                "/api/submit",
                &json!({"command": "true", "timeout_seconds": bad}),
            )
            .await;
        assert_eq!(status, want, "{bad}: {v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("timeout_seconds"),
            "{bad}: {v}"
        );
    }
    assert_eq!(c.task_count().await, 0, "nothing was created");
}
