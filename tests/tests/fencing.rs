//! Fencing: a dispatch that reaches its runner after the host gave that placement up must not
//! leave a second copy of the task running. Between the host and the runner sits a small proxy
//! that holds the first task's deliveries until the test lets them through, as a congested or
//! partitioned network would.

use ferry_e2e::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// An HTTP proxy for host→runner calls that holds every `POST /api/execute` of the first task
/// it sees until `release` is sent, and passes everything else at once.
struct HoldingProxy {
    port: u16,
    upstream: Arc<Mutex<Option<String>>>,
    held_task: Arc<Mutex<Option<String>>>,
    held_count: Arc<Mutex<usize>>,
    release: watch::Sender<bool>,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HoldingProxy {
    async fn start() -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (release, released) = watch::channel(false);
        let proxy = HoldingProxy {
            port,
            upstream: Arc::default(),
            held_task: Arc::default(),
            held_count: Arc::default(),
            release,
        };
        let upstream = proxy.upstream.clone();
        let held_task = proxy.held_task.clone();
        let held_count = proxy.held_count.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while let Ok((conn, _)) = listener.accept().await {
                let cx = (
                    http.clone(),
                    upstream.clone(),
                    held_task.clone(),
                    held_count.clone(),
                    released.clone(),
                );
                tokio::spawn(async move {
                    let _ = serve(conn, cx).await;
                });
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn held(&self) -> usize {
        *self.held_count.lock().expect("lock")
    }
}

type Context = (
    reqwest::Client,
    Arc<Mutex<Option<String>>>,
    Arc<Mutex<Option<String>>>,
    Arc<Mutex<usize>>,
    watch::Receiver<bool>,
);

/// One request per connection (answered with `Connection: close`): enough for reqwest.
async fn serve(mut conn: TcpStream, cx: Context) -> std::io::Result<()> {
    let (http, upstream, held_task, held_count, mut released) = cx;
    let Some(req) = read_request(&mut conn).await? else {
        return Ok(());
    };
    if req.method == "POST" && req.path == "/api/execute" && !*released.borrow() {
        let id = task_id_of(&req.body);
        let hold = {
            let mut held = held_task.lock().expect("lock");
            if held.is_none() {
                *held = id.clone();
            }
            id.is_some() && *held == id
        };
        if hold {
            *held_count.lock().expect("lock") += 1;
            // The host may give up and close its side meanwhile: the request is delivered
            // anyway, as a packet already on the wire would be.
            let _ = released.wait_for(|r| *r).await;
        }
    }
    let Some(base) = upstream.lock().expect("lock").clone() else {
        return Ok(());
    };
    let mut rb = http.request(
        req.method.parse().unwrap_or(reqwest::Method::GET),
        format!("{base}{}", req.path),
    );
    for (k, v) in &req.headers {
        if !["host", "content-length", "connection"].contains(&k.to_ascii_lowercase().as_str()) {
            rb = rb.header(k, v);
        }
    }
    let (status, body) = match rb.body(req.body).send().await {
        Ok(r) => (
            r.status().as_u16(),
            r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
        ),
        Err(_) => (502, b"{}".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(&body).await?;
    conn.shutdown().await
}

async fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

/// The `task_id` of an execute body, as the text of its number.
fn task_id_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match &v["task_id"] {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

async fn wait_for(what: &str, c: &TestCluster, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} never happened\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_dispatch_delivered_after_the_host_gave_it_up_does_not_run_a_second_copy() {
    let proxy = HoldingProxy::start().await;
    let mut c = TestCluster::new(Opts::default());
    c.start_host().await;
    let advertise = proxy.url();
    let i = c.start_runner("node-1", &["--cores", "2", "--advertise-url", &advertise]);
    *proxy.upstream.lock().expect("lock") = Some(c.runners[i].url());
    c.wait_node_online("node-1").await;

    // T's delivery is held on the way; F waits behind T's booking.
    let t = c
        .submit(json!({"command": "sleep 60", "required_cores": 2}))
        .await
        .remove(0);
    wait_for("the first delivery of T being held", &c, || {
        proxy.held() > 0
    })
    .await;
    let f = c
        .submit(json!({"command": "sleep 60", "required_cores": 1, "targets": ["node-1"], "priority": 1}))
        .await
        .remove(0);

    // The runner never hears of T: after a few heartbeats the host queues T again, and F, first
    // in the queue, takes the node, so T cannot fit and waits.
    c.wait_status(&f, &["running"], Duration::from_secs(30))
        .await;
    let queued = c
        .wait_status(&t, &["pending"], Duration::from_secs(5))
        .await;
    assert_eq!(queued["placements"], 1, "{queued}");

    // The held delivery of T's first attempt now reaches the runner, which starts it...
    proxy.release.send(true).expect("release");
    wait_for("the late copy of T to start", &c, || {
        !containers_of(&t).is_empty()
    })
    .await;
    // ...and the host, which runs T nowhere, has that copy killed at the next heartbeat.
    wait_for("the late copy of T to be removed", &c, || {
        containers_of(&t).is_empty()
    })
    .await;
    let still = c.task(&t).await;
    assert_eq!(
        still["status"], "pending",
        "the late copy's end is not T's: {still}"
    );
    assert_eq!(c.task(&f).await["status"], "running");

    // Once F is killed, T is placed a second time (still its first run) and runs, its only copy.
    let (status, v) = c.post_json(&format!("/api/kill/{f}"), &json!({})).await;
    assert_eq!(status, 202, "{v}");
    let running = c
        .wait_status(&t, &["running"], Duration::from_secs(30))
        .await;
    assert_eq!(running["placements"], 2, "{running}");
    assert_eq!(running["assigned_node"], "node-1");
    assert_eq!(containers_of(&t).len(), 1, "one copy of T");
    let (status, v) = c.post_json(&format!("/api/kill/{t}"), &json!({})).await;
    assert_eq!(status, 202, "{v}");
    let ended = c.wait_final(&t).await;
    assert_eq!(ended["status"], "killed", "{ended}");
}
