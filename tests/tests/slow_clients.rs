//! Slow and silent clients, connection floods and request floods: the host closes what does
//! not speak, and runners' heartbeats keep getting through.

use ferry_e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection that sends half a request header and then nothing.
async fn half_header(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /api/nodes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .expect("write");
    s
}

/// Reads until the server closes the connection; panics after `deadline`.
async fn wait_closed(mut s: TcpStream, deadline: Duration) {
    let mut buf = [0u8; 1024];
    let started = Instant::now();
    loop {
        match tokio::time::timeout(deadline.saturating_sub(started.elapsed()), s.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept a silent connection open past {deadline:?}"),
        }
    }
}

#[tokio::test]
async fn silent_connections_are_closed_on_both_daemons() {
    let mut c = TestCluster::new(Opts {
        host_args: vec!["--header-timeout".into(), "1s".into()],
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let host = format!("127.0.0.1:{}", c.host_port);
    let runner = format!("127.0.0.1:{}", c.runners[0].port);
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(half_header(&host).await);
    }
    let on_runner = half_header(&runner).await;
    for s in slow {
        wait_closed(s, Duration::from_secs(10)).await;
    }
    // The runner's timeout is its default (15 s).
    wait_closed(on_runner, Duration::from_secs(30)).await;
    // An idle keep-alive connection is closed as well, after its answer.
    let mut s = TcpStream::connect(&host).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    wait_closed(s, Duration::from_secs(10)).await;
    let nodes = c.nodes().await;
    assert_eq!(nodes[0]["status"], "online");
}

#[tokio::test]
async fn a_connection_flood_on_the_user_port_leaves_the_runner_port_served() {
    let runner_port = free_port();
    let mut c = TestCluster::new(Opts {
        host_args: vec![
            "--runner-listen".into(),
            format!("127.0.0.1:{runner_port}"),
            "--max-connections".into(),
            "8".into(),
            "--header-timeout".into(),
            "60s".into(),
        ],
        runner_host_url: Some(format!("http://127.0.0.1:{runner_port}")),
        node_timeout: "2s",
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;

    // Each port serves its own routes only.
    let (status, _) = c
        .runner_post("/api/update", &json!({"task_id": "1", "status": "running"}))
        .await;
    assert_eq!(status, 404, "runner routes are not on the user port");
    let r = c
        .http
        .get(format!("http://127.0.0.1:{runner_port}/api/nodes"))
        .bearer_auth(c.token.as_ref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "user routes are not on the runner port"
    );

    // Fill the user port's connections with silent clients.
    let host = format!("127.0.0.1:{}", c.host_port);
    let mut flood = Vec::new();
    for _ in 0..8 {
        flood.push(TcpStream::connect(&host).await.unwrap());
    }
    let waiting = tokio::spawn({
        // A new connection (the harness's client would reuse one it holds already).
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let rb = fresh
            .get(format!("{}/api/nodes", c.url()))
            .bearer_auth(c.token.clone().unwrap());
        async move { rb.send().await.map(|r| r.status().as_u16()) }
    });
    // Runner calls keep being served on their own port for several node timeouts.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let r = c
            .http
            .post(format!("http://127.0.0.1:{runner_port}/api/update"))
            .bearer_auth(&c.opts.secret)
            .json(&json!({"task_id": "424242", "status": "running", "hostname": "node-1"}))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("the runner port answers during the flood");
        assert_ne!(r.status().as_u16(), 503);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !c.logs().contains("node silent past the timeout"),
        "heartbeats kept arriving:\n{}",
        c.logs()
    );
    assert!(
        !waiting.is_finished(),
        "a ninth user connection waits for a free slot"
    );
    drop(flood);
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once the flood is gone")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn user_requests_past_the_limit_get_503_while_runner_routes_are_served() {
    let mut c = TestCluster::new(Opts {
        host_args: vec!["--max-user-requests".into(), "3".into()],
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let token = c.token.clone().unwrap();
    let host = format!("127.0.0.1:{}", c.host_port);
    // Three submits whose bodies never finish hold the three user slots.
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&host).await.unwrap();
        let head = format!(
            "POST /api/submit HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"command\": "
        );
        s.write_all(head.as_bytes()).await.unwrap();
        slow.push(s);
    }
    // Probes take no slot: wait until the host holds the three.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = c.get_text("/metrics").await;
        if metrics.contains("ferry_user_requests_in_progress 3") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, v) = c.get_json("/api/nodes").await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("too many requests"),
        "{v}"
    );
    // A runner's report is still taken (an unknown task: 404, not 503).
    let (status, v) = c
        .runner_post(
            "/api/update",
            &json!({"task_id": "424242", "status": "running", "hostname": "node-1"}),
        )
        .await;
    assert_ne!(status, 503, "{v}");
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = c.get_json("/api/nodes").await;
        if status == 200 {
            assert_eq!(v[0]["status"], "online");
            break;
        }
        assert!(Instant::now() < deadline, "slots come back: {status} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
