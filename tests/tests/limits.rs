//! Size and count limits on what callers and runners control: targets per submit, GPUs shared
//! in a batch, priority, concurrent output reads, runner replies, and the audit log's age.

use ferry_e2e::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_submit_names_at_most_max_targets_and_a_batch_shares_no_gpu() {
    let c = TestCluster::with_runner(&[]).await;
    let targets: Vec<&str> = vec!["node-1"; 257];
    let (status, v) = c
        .post_json(
            "/api/submit",
            &json!({"command": "true", "targets": targets}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["detail"], "targets: at most 256 per request, got 257");
    let (status, v) = c
        .post_json(
            "/api/submit",
            &json!({"command": "true", "targets": ["node-1", "node-1"], "required_gpus": [[0], [0]]}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("required_gpus[1]: GPU 0 of node-1"),
        "{v}"
    );
    assert_eq!(c.task_count().await, 0, "nothing was created");
    // The same node twice is two tasks side by side.
    let ids = c
        .submit(json!({"command": "echo twin", "targets": ["node-1", "node-1"]}))
        .await;
    assert_eq!(ids.len(), 2);
}

#[tokio::test]
async fn users_cannot_jump_the_queue_but_operators_can() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, inv) = c
        .post_json(
            "/api/auth/invitations",
            &json!({"role": "user", "max_usage": 1, "expires_hours": 1}),
        )
        .await;
    let r = c
        .http
        .post(format!("{}/api/auth/register", c.url()))
        .json(&json!({"username": "pat", "password": "password123", "invitation": inv["token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = session_cookie(&r);
    let r = c
        .http
        .post(format!("{}/api/submit", c.url()))
        .header("cookie", cookie)
        .json(&json!({"command": "true", "priority": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .starts_with("priority: at most 0"),
        "{v}"
    );
    let ids = c.submit(json!({"command": "true", "priority": 10})).await;
    assert_eq!(c.task(&ids[0]).await["priority"], 10, "the admin may");
}

#[tokio::test]
async fn output_reads_beyond_max_log_reads_get_503() {
    let mut c = TestCluster::new(Opts::default());
    let shared = c.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    c.opts.host_args = vec![
        "--max-log-reads".into(),
        "1".into(),
        "--shared-dir".into(),
        shared.display().to_string(),
    ];
    c.start_host().await;
    c.start_runner("node-1", &["--shared-dir", shared.to_str().unwrap()]);
    c.wait_node_online("node-1").await;
    let id = c.submit(echo_task("hello")).await.remove(0);
    c.wait_final(&id).await;
    // A log that never finishes opening (a FIFO with no writer) holds the one read slot.
    let log = shared.join("logs").join(&id).join("stdout.log");
    std::fs::remove_file(&log).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&log)
        .status()
        .unwrap();
    assert!(made.success());
    let held = tokio::spawn({
        let rb = c.request(reqwest::Method::GET, &format!("/api/tasks/{id}/stdout"));
        async move { rb.send().await.unwrap().status().as_u16() }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = c.get_text("/metrics").await;
        if metrics.contains("ferry_log_reads_in_progress 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the read never started: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, v) = c.get_json(&format!("/api/tasks/{id}/stderr")).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("Too many output reads"),
        "{v}"
    );
    // Let the held read finish: open the FIFO for writing and close it.
    let path = log.clone();
    tokio::task::spawn_blocking(move || drop(std::fs::OpenOptions::new().write(true).open(path)))
        .await
        .unwrap();
    // That read ends (a FIFO cannot be tailed: 503 "cannot read"); what matters is its slot.
    assert_eq!(held.await.unwrap(), 503);
    let (status, _) = c.get_text(&format!("/api/tasks/{id}/stderr")).await;
    assert_eq!(status, 200, "the slot is back");
}

/// A runner that accepts every task and answers log reads with an endless body.
async fn endless_runner() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if head.starts_with("GET /api/tasks/") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n")
                        .await;
                    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                    while s.write_all(chunk.as_bytes()).await.is_ok() {}
                } else {
                    let body = r#"{"message": "accepted"}"#;
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                }
            });
        }
    });
    (url, handle)
}

#[tokio::test]
async fn an_endless_runner_reply_is_cut_off_not_buffered() {
    let mut c = TestCluster::new(Opts::default());
    c.start_host().await;
    let (url, _server) = endless_runner().await;
    let (status, v) = c
        .runner_post(
            "/api/register",
            &json!({"hostname": "endless", "url": url, "total_cores": 2, "total_ram_bytes": 1u64 << 30}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let ids = c
        .submit(json!({"command": "true", "targets": ["endless"]}))
        .await;
    let (status, v) = c.get_json(&format!("/api/tasks/{}/stdout", ids[0])).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("larger than"), "{v}");
    let (status, _) = c.get_json("/health").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn audit_entries_expire_after_the_retention() {
    let mut c = TestCluster::new(Opts {
        host_args: vec!["--audit-retention".into(), "2s".into()],
        ..Opts::default()
    });
    c.start_host().await;
    let (_, first) = c.get_json("/api/audit").await;
    assert!(
        first["total"].as_i64().unwrap() >= 2,
        "bootstrap and login: {first}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = c.get_json("/api/audit").await;
        let actions: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        if !actions.contains(&"user.bootstrap") {
            break;
        }
        assert!(Instant::now() < deadline, "never expired: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
