//! Bad requests get a 4xx `{"detail": ...}` naming the problem, and leave no row behind.

use ferry_e2e::*;
use serde_json::json;

#[tokio::test]
async fn each_bad_submission_is_refused_and_writes_nothing() {
    let c = TestCluster::with_runner(&["--cores", "2"]).await;
    let before = c.task_count().await;
    let cases = vec![
        (
            json!({"command": "echo", "targets": ["no-such-node"]}),
            "no-such-node",
        ),
        (
            json!({"command": "echo", "targets": ["node-1", "no-such-node"]}),
            "no-such-node",
        ),
        (
            json!({"command": "echo", "required_cores": -1}),
            "required_cores",
        ),
        (
            json!({"command": "echo", "required_memory_bytes": 0}),
            "required_memory_bytes",
        ),
        (
            json!({"command": "echo", "required_memory_bytes": -5}),
            "required_memory_bytes",
        ),
        (json!({"command": ""}), "command"),
        (json!({"command": "   "}), "command"),
        (json!({"arguments": ["x"]}), "command"),
        (
            json!({"command": "echo", "required_cores": "two"}),
            "required_cores",
        ),
        (json!({"command": "echo", "targets": "node-1"}), "targets"),
        (
            json!({"command": "echo", "targets": ["node-1::0"]}),
            "targets[0]",
        ),
        (
            json!({"command": "echo", "targets": ["node-1:77"]}),
            "NUMA node 77",
        ),
        (json!({"command": "echo", "required_cores": 64}), "cores"),
        (
            json!({"command": "echo", "required_memory_bytes": 1u64 << 50}),
            "memory",
        ),
        (
            json!({"command": "echo", "targets": ["node-1"], "required_gpus": [[0]]}),
            "GPU",
        ),
        (
            json!({"command": "echo", "task_type": "nonsense"}),
            "task_type",
        ),
    ];
    for (body, needle) in cases {
        let (status, v) = c.post_json("/api/submit", &body).await;
        assert!((400..500).contains(&status), "{body} -> {status} {v}");
        let detail = v["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}: no string detail in {v}"));
        assert!(
            detail.contains(needle),
            "{body}: detail {detail:?} should mention {needle}"
        );
    }
    for raw in ["{not json", "", "[1,2]", "null"] {
        let (status, v) = c.post_raw("/api/submit", raw).await;
        assert_eq!(status, 422, "{raw:?} -> {v}");
        assert!(v["detail"].is_string(), "{v}");
    }
    assert_eq!(
        c.task_count().await,
        before,
        "a refused request must not leave a task"
    );
}

#[tokio::test]
async fn bad_ids_and_queries_are_422_and_unknown_ids_404() {
    let c = TestCluster::with_runner(&[]).await;
    for path in ["/api/status/abc", "/api/status/-1", "/api/tasks/xyz/stdout"] {
        let (status, v) = c.get_json(path).await;
        assert_eq!(status, 422, "{path} -> {v}");
        assert!(
            v["detail"].as_str().unwrap_or_default().contains("task_id"),
            "{v}"
        );
    }
    let (status, v) = c.post_json("/api/kill/12abc", &json!({})).await;
    assert_eq!(status, 422, "{v}");
    let (status, v) = c.get_json("/api/status/123456789").await;
    assert_eq!(status, 404, "{v}");
    let (status, _) = c.post_json("/api/kill/123456789", &json!({})).await;
    assert_eq!(status, 404);
    let (status, v) = c.get_json("/api/tasks?status=sleeping").await;
    assert_eq!(status, 422, "{v}");
    assert!(v["detail"].as_str().unwrap_or_default().contains("status"));
    let (status, _) = c.get_json("/api/tasks?limit=-1").await;
    assert_eq!(status, 422);
    let (status, _) = c.get_json("/api/tasks?limit=ten").await;
    assert_eq!(status, 422);
    let (status, v) = c.get_json("/api/no/such/route").await;
    assert_eq!(status, 404);
    assert!(v["detail"].is_string());
}
