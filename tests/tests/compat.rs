//! What the original's web dashboard sends and expects, where Ferry once answered otherwise.

use ferry_e2e::*;
use serde_json::json;
use std::time::Duration;

/// The dashboard's submit form sends `required_cores: 0` by default: the original's "no CPU
/// limit, none booked".
#[tokio::test]
async fn zero_cores_runs_without_a_cpu_limit_and_books_nothing() {
    let c = TestCluster::with_runner(&[]).await;
    let ids = c
        .submit(json!({"command": "sleep 30", "required_cores": 0}))
        .await;
    let t = c
        .wait_status(&ids[0], &["running"], Duration::from_secs(30))
        .await;
    assert_eq!(t["required_cores"], 0);
    let name = format!("kohakuriver-task-{}", ids[0]);
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", &name]),
        "0",
        "no CPU limit on the container"
    );
    let (_, nodes) = c.get_json("/api/nodes").await;
    assert_eq!(nodes[0]["cores_in_use"], 0, "{nodes}");
    assert_eq!(nodes[0]["tasks_holding"], 1, "{nodes}");
    let (status, _) = c
        .post_json(&format!("/api/kill/{}", ids[0]), &json!({}))
        .await;
    assert_eq!(status, 202);
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "killed");
}

/// A `limit` above the cap returns what the cap allows, and says so in a header.
#[tokio::test]
async fn a_limit_above_the_cap_is_clamped_and_says_so() {
    let c = TestCluster::with_runner(&[]).await;
    let ids = c.submit(echo_task("one")).await;
    c.wait_final(&ids[0]).await;
    let r = c
        .request(reqwest::Method::GET, "/api/tasks?limit=50000")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()
            .get("x-ferry-limit-clamped")
            .and_then(|v| v.to_str().ok()),
        Some("50000 -> 10000")
    );
    let tasks: serde_json::Value = r.json().await.expect("json");
    assert_eq!(tasks.as_array().map(Vec::len), Some(1));
    // Within the cap: no header.
    let r = c
        .request(reqwest::Method::GET, "/api/tasks?limit=10000")
        .send()
        .await
        .expect("GET");
    assert!(r.headers().get("x-ferry-limit-clamped").is_none());
}
