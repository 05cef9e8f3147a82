//! Runners joining the host, and the cluster secret on every host<->runner call.

use ferry_e2e::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_runner_started_before_the_host_joins_when_it_comes_up() {
    let mut c = TestCluster::new(Opts::default());
    c.start_runner("early", &[]);
    // The runner keeps retrying while nothing listens on the host port.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c.runners[0]
        .log_text()
        .matches("registration failed")
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "runner never retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.start_host().await;
    c.wait_node_online("early").await;
    let ids = c.submit(echo_task("joined")).await;
    let t = c.wait_final(&ids[0]).await;
    assert_eq!(t["status"], "completed", "{t}");
}

#[tokio::test]
async fn host_runner_calls_without_the_secret_are_refused() {
    let mut c = TestCluster::with_runner(&[]).await;
    let http = reqwest::Client::new();
    let register = json!({"hostname": "intruder", "url": "http://127.0.0.1:1", "total_cores": 64});
    // Host side: register, heartbeat and update need the secret.
    for auth in [None, Some("Bearer wrong"), Some("wrong")] {
        let mut req = http
            .post(format!("{}/api/register", c.url()))
            .json(&register);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "register with {auth:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["detail"].is_string());
    }
    let r = http
        .put(format!("{}/api/heartbeat/node-1", c.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(format!("{}/api/update", c.url()))
        .json(&json!({"task_id": "1", "status": "completed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(c.nodes().await.iter().all(|n| n["hostname"] != "intruder"));

    // Runner side: execute, kill and logs need the secret.
    let runner = c.runners[0].url();
    let r = http
        .post(format!("{runner}/api/execute"))
        .json(&json!({"task_id": 42, "command": "echo pwned"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(format!("{runner}/api/kill"))
        .bearer_auth("nope")
        .json(&json!({"task_id": 42}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(format!("{runner}/api/tasks/42/stdout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(containers_of("42").is_empty());

    // A runner with the wrong secret never joins.
    c.start_runner_with_secret("wrong-secret", &[], "not-the-secret-but-just-as-long-0000");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !c.runners[1].log_text().contains("401") {
        assert!(std::time::Instant::now() < deadline, "runner never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c
        .nodes()
        .await
        .iter()
        .all(|n| n["hostname"] != "wrong-secret"));
    assert!(
        c.runners[1].log_text().contains("401"),
        "runner should log the refusal"
    );
}

#[tokio::test]
async fn health_ready_and_node_view() {
    let c = TestCluster::with_runner(&[]).await;
    for base in [c.url(), c.runners[0].url()] {
        for path in ["/health", "/ready"] {
            let r = c.http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{base}{path}");
        }
    }
    let nodes = c.nodes().await;
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n["url"], c.runners[0].url());
    assert!(n["total_cores"].as_u64().unwrap() >= 1);
    assert!(n["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(n["last_heartbeat"].is_string());
    let (status, h) = c.get_json("/api/health?hostname=node-1").await;
    assert_eq!(status, 200);
    assert_eq!(h[0]["hostname"], "node-1");
    let (status, _) = c.get_json("/api/health?hostname=nope").await;
    assert_eq!(status, 404);
    // Prometheus metrics on both daemons, aggregate counts only (no token needed).
    let text = c
        .http
        .get(format!("{}/metrics", c.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ferry_nodes{status=\"online\"} 1"), "{text}");
    assert!(text.contains("ferry_tasks{status=\"completed\"}"), "{text}");
    let text = c
        .http
        .get(format!("{}/metrics", c.runners[0].url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ferry_runner_registered 1"), "{text}");
    // Runner errors use the same JSON shape as the host's.
    let r = c
        .http
        .get(format!(
            "{}/api/tasks/1/stdout?lines=many",
            c.runners[0].url()
        ))
        .bearer_auth(&c.opts.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    let (_, all) = c.get_json("/api/health").await;
    assert!(!all["aggregate"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_silent_runner_goes_offline() {
    let mut c = TestCluster::new(Opts {
        node_timeout: "2s",
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("quiet", &[]);
    c.wait_node_online("quiet").await;
    c.runners[0].kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let nodes = c.nodes().await;
        if nodes[0]["status"] == "offline" {
            assert_eq!(nodes[0]["available_cores"], 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node never went offline"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
