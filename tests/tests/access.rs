//! Into a running task through the host: the terminal (real Docker exec TTY, through host and
//! runner), and who may open it.

use ferry_e2e::*;
use ferry_e2e::{read_output_until as read_until, send_json as send};
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Processes in a container, as the node sees them.
fn processes(container: &str) -> usize {
    docker(&["top", container, "-o", "pid"])
        .lines()
        .skip(1)
        .count()
}

async fn running_task(c: &TestCluster) -> String {
    let id = c.submit(json!({"command": "sleep 300"})).await.remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    id
}

#[tokio::test]
async fn a_terminal_runs_commands_resizes_and_leaves_nothing_behind() {
    let c = TestCluster::with_runner(&[]).await;
    let id = running_task(&c).await;
    let container = format!("kohakuriver-task-{id}");
    let before = processes(&container);
    let mut ws = c.ws(&format!("/ws/task/{id}/terminal")).await;
    send(&mut ws, json!({"type": "resize", "rows": 40, "cols": 100})).await;
    let ready: Value = serde_json::from_str(&ws_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(
        ready,
        json!({"type": "output", "data": ""}),
        "the ready signal"
    );
    send(&mut ws, json!({"type": "input", "data": "stty size\n"})).await;
    read_until(&mut ws, "40 100").await;
    send(
        &mut ws,
        json!({"type": "input", "data": "echo hel''lo-$((6*7))\n"}),
    )
    .await;
    read_until(&mut ws, "hello-42").await;
    send(&mut ws, json!({"type": "resize", "rows": 50, "cols": 120})).await;
    send(&mut ws, json!({"type": "input", "data": "stty size\n"})).await;
    read_until(&mut ws, "50 120").await;
    // Multi-byte characters come out whole.
    send(
        &mut ws,
        json!({"type": "input", "data": "printf '\\342\\206\\222 done\\n'\n"}),
    )
    .await;
    read_until(&mut ws, "→ done").await;
    assert!(
        processes(&container) > before,
        "the shell runs in the container"
    );
    ws.close(None).await.expect("close");
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes(&container) > before {
        assert!(Instant::now() < deadline, "the shell outlived its terminal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The audit log names who opened it and for how long.
    let (_, audit) = c.get_json("/api/audit?limit=20").await;
    let text = audit.to_string();
    assert!(
        text.contains("terminal.open") && text.contains("terminal.close"),
        "{text}"
    );
}

#[tokio::test]
async fn only_the_owner_and_operators_open_a_terminal() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, alice) = c.user_account("alice", "user").await;
    let (_, bob) = c.user_account("bob", "user").await;
    let (_, vic) = c.user_account("vic", "viewer").await;
    let (_, otto) = c.user_account("otto", "operator").await;
    // alice's task, approved by the admin so it runs.
    let r = c
        .http
        .post(format!("{}/api/submit", c.url()))
        .bearer_auth(&alice)
        .json(&json!({"command": "sleep 300"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let id = v["task_ids"][0].as_str().unwrap().to_string();
    let (status, _) = c.post_json(&format!("/api/approve/{id}"), &json!({})).await;
    assert_eq!(status, 200);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    let path = format!("/ws/task/{id}/terminal");
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(c.ws_with(&path, &[]).await.err(), Some(401), "anonymous");
    assert_eq!(
        c.ws_with(&path, &[("authorization", "Bearer nope")])
            .await
            .err(),
        Some(401),
        "a bad token"
    );
    assert_eq!(
        c.ws_with(&path, &[("authorization", &bearer(&vic))])
            .await
            .err(),
        Some(403),
        "a viewer"
    );
    assert_eq!(
        c.ws_with(&path, &[("authorization", &bearer(&bob))])
            .await
            .err(),
        Some(403),
        "another user"
    );
    // A session cookie from another site's page: refused by the Origin check.
    let login = c
        .http
        .post(format!("{}/api/auth/login", c.url()))
        .json(&json!({"username": "alice", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(&login);
    assert_eq!(
        c.ws_with(
            &path,
            &[("cookie", &cookie), ("origin", "http://evil.example")]
        )
        .await
        .err(),
        Some(403),
        "cross-site"
    );
    for (who, headers) in [
        ("owner", vec![("authorization", bearer(&alice))]),
        (
            "owner's own page",
            vec![("cookie", cookie.clone()), ("origin", c.url())],
        ),
        ("operator", vec![("authorization", bearer(&otto))]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut ws = c
            .ws_with(&path, &headers)
            .await
            .unwrap_or_else(|s| panic!("{who}: refused {s}"));
        send(&mut ws, json!({"type": "resize", "rows": 24, "cols": 80})).await;
        let ready = ws_text(&mut ws).await.expect("ready");
        let v: Value = serde_json::from_str(&ready).unwrap();
        assert_eq!(v, json!({"type": "output", "data": ""}), "{who}");
    }
    // A task that is not running is refused in-band, as the original does.
    let done = c.submit(json!({"command": "true"})).await.remove(0);
    c.wait_final(&done).await;
    let mut ws = c.ws(&format!("/ws/task/{done}/terminal")).await;
    let v: Value = serde_json::from_str(&ws_text(&mut ws).await.expect("an error frame")).unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(v["data"].as_str().unwrap().contains("not running"), "{v}");
    assert_eq!(ws_text(&mut ws).await, None, "then closed");
}

async fn fs_get(c: &TestCluster, id: &str, op: &str, query: &str) -> (u16, Value) {
    c.get_json(&format!("/api/fs/{id}/{op}?{query}")).await
}

fn q(path: &str) -> String {
    format!("path={}", urlencode(path))
}

#[tokio::test]
async fn files_round_trip_and_never_leave_the_container() {
    use base64::Engine as _;
    let c = TestCluster::with_runner(&[]).await;
    let id = running_task(&c).await;
    let container = format!("kohakuriver-task-{id}");
    // Random bytes, every value: written as base64, read back identical.
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
    let (status, v) = c
        .post_json(
            &format!("/api/fs/{id}/write"),
            &json!({"path": "/work/deep/data.bin", "content": b64, "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["size"], data.len());
    let (status, v) = fs_get(
        &c,
        &id,
        "read",
        &format!("{}&encoding=base64", q("/work/deep/data.bin")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let back = base64::engine::general_purpose::STANDARD
        .decode(v["content"].as_str().unwrap())
        .unwrap();
    assert_eq!(back, data);
    // The task sees the same bytes.
    assert_eq!(
        docker(&[
            "exec",
            &container,
            "sh",
            "-c",
            "wc -c < /work/deep/data.bin"
        ])
        .trim(),
        data.len().to_string()
    );
    let (status, _) = c
        .post_json(
            &format!("/api/fs/{id}/write"),
            &json!({"path": "/work/notes.txt", "content": "héllo\n"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, v) = fs_get(&c, &id, "read", &q("/work/notes.txt")).await;
    assert_eq!(
        (v["content"].as_str(), v["encoding"].as_str()),
        (Some("héllo\n"), Some("utf-8"))
    );
    let (status, v) = c
        .post_json(
            &format!("/api/fs/{id}/mkdir"),
            &json!({"path": "/work/sub"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = fs_get(&c, &id, "list", &q("/work")).await;
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["deep", "sub", "notes.txt"], "{v}");
    let (status, v) = c
        .post_json(
            &format!("/api/fs/{id}/rename"),
            &json!({"source": "/work/notes.txt", "destination": "/work/sub/n.txt"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = fs_get(&c, &id, "stat", &q("/work/sub/n.txt")).await;
    assert_eq!(
        (v["type"].as_str(), v["size"].as_i64()),
        (Some("file"), Some(7))
    );
    let (status, _) = c
        .request(
            reqwest::Method::DELETE,
            &format!("/api/fs/{id}/delete?{}", q("/work")),
        )
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 400, "a directory needs recursive");
    let r = c
        .request(
            reqwest::Method::DELETE,
            &format!("/api/fs/{id}/delete?{}&recursive=true", q("/work")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, _) = fs_get(&c, &id, "stat", &q("/work")).await;
    assert_eq!(status, 404);

    // Escapes: a marker on the node, links planted inside the container pointing at it.
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("marker");
    std::fs::write(&marker, "node secret").unwrap();
    let m = marker.display().to_string();
    let md = marker_dir.path().display().to_string();
    docker(&["exec", &container, "sh", "-c", &format!(
        "ln -s / /tmp/root && ln -s /etc /tmp/etc && ln -s {md} /tmp/out && ln -s /tmp/out /tmp/chain"
    )]);
    let node_shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    for path in [
        format!("/tmp/root{m}"),
        "/tmp/out/marker".to_string(),
        "/tmp/chain/marker".to_string(),
        format!("/../../..{m}"),
        "/../../etc/shadow".to_string(),
        "/tmp/etc/shadow".to_string(),
        "/proc/self/root/etc/shadow".to_string(),
        "/proc/1/root/etc/passwd".to_string(),
    ] {
        let (status, v) = fs_get(&c, &id, "read", &q(&path)).await;
        let content = v["content"].as_str().unwrap_or_default();
        assert!(
            status != 200 || (content != "node secret" && content != node_shadow),
            "{path}: {status} {v}"
        );
        let _ = c
            .post_json(
                &format!("/api/fs/{id}/write"),
                &json!({"path": path, "content": "changed"}),
            )
            .await;
    }
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "node secret",
        "the node's file is untouched"
    );
    let (status, v) = fs_get(&c, &id, "read", &q("/proc/self/root/etc/passwd")).await;
    assert_eq!(status, 403, "{v}");
    // Too big: 413.
    let big = "a".repeat(50 * 1024 * 1024 + 1);
    let (status, _) = c
        .post_json(
            &format!("/api/fs/{id}/write"),
            &json!({"path": "/big", "content": big}),
        )
        .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn files_are_for_the_owner_and_operators() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, bob) = c.user_account("bob", "user").await;
    let (_, vic) = c.user_account("vic", "viewer").await;
    let id = running_task(&c).await;
    for (who, token, code) in [("another user", &bob, 403), ("a viewer", &vic, 403)] {
        let r = c
            .http
            .get(format!("{}/api/fs/{id}/list?path=/", c.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "{who}");
    }
    let (status, v) = fs_get(&c, &id, "list", "path=/").await;
    assert_eq!(status, 200, "{v}");
    let done = c.submit(json!({"command": "true"})).await.remove(0);
    c.wait_final(&done).await;
    let (status, v) = fs_get(&c, &done, "list", "path=/").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("not running"), "{v}");
}

/// The next JSON frame of a watch socket.
async fn next_json(ws: &mut Ws) -> Value {
    let text = ws_text(ws).await.expect("a frame, not a close");
    serde_json::from_str(&text).expect("JSON")
}

#[tokio::test]
async fn a_watch_sees_what_the_task_creates_even_in_new_directories() {
    let c = TestCluster::with_runner(&[]).await;
    let id = c
        .submit(json!({"command": "mkdir -p /data && sleep 3 && echo hi > /data/made-by-task && mkdir /data/d && sleep 1 && touch /data/d/inner && sleep 300"}))
        .await
        .remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    let mut ws = c.ws(&format!("/ws/fs/{id}/watch?paths=/data,/nope")).await;
    let err = next_json(&mut ws).await;
    assert_eq!(err["type"], "error", "{err}");
    assert!(err["message"].as_str().unwrap().contains("/nope"), "{err}");
    let watching = next_json(&mut ws).await;
    assert_eq!(
        watching,
        json!({"type": "watching", "paths": ["/data"], "method": "inotify"})
    );
    send(&mut ws, json!({"type": "ping"})).await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|v: &Value| v["path"] == "/data/d/inner") {
        assert!(Instant::now() < deadline, "changes so far: {seen:?}");
        let v = next_json(&mut ws).await;
        if v["type"] == "pong" {
            continue;
        }
        assert_eq!(v["type"], "change", "{v}");
        seen.push(v);
    }
    let created = |p: &str, dir: bool| {
        seen.iter()
            .any(|v| v["event"] == "CREATE" && v["path"] == p && v["is_dir"] == dir)
    };
    assert!(created("/data/made-by-task", false), "{seen:?}");
    assert!(created("/data/d", true), "{seen:?}");
    assert!(
        created("/data/d/inner", false),
        "a new directory is watched too: {seen:?}"
    );
    // Nothing but missing paths: an error, then the socket closes.
    let mut ws = c.ws(&format!("/ws/fs/{id}/watch?paths=/nope")).await;
    assert_eq!(next_json(&mut ws).await["type"], "error");
    assert_eq!(ws_text(&mut ws).await, None);
}

/// A forward-protocol frame: type, proto, client id, port, payload.
fn fwd_frame(kind: u8, id: u32, port: u16, payload: &[u8]) -> Message {
    let mut b = vec![kind, 0];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(payload);
    Message::Binary(b.into())
}

/// The next binary frame, decoded: (type, client id, payload).
async fn fwd_next(ws: &mut Ws) -> (u8, u32, Vec<u8>) {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a frame within 15 s")
            .expect("socket open")
            .expect("no error");
        if let Message::Binary(b) = msg {
            let id = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
            return (b[0], id, b[8..].to_vec());
        }
    }
}

#[tokio::test]
async fn a_forward_reaches_a_loopback_only_service_with_many_streams_at_once() {
    let c = TestCluster::with_runner(&[]).await;
    // httpd bound to the container's own loopback: reachable only from its namespace.
    let id = c
        .submit(json!({"command": "mkdir -p /www && echo hello-from-httpd > /www/index.html && httpd -f -p 127.0.0.1:8080 -h /www"}))
        .await
        .remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    let mut ws = c.ws(&format!("/ws/forward/{id}/8080?proto=tcp")).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("CONNECTED"));
    // 100 streams over the one socket, each a whole HTTP exchange.
    let streams = 100u32;
    for sid in 1..=streams {
        ws.send(fwd_frame(1, sid, 8080, b"")).await.unwrap();
    }
    let mut connected = 0;
    let mut bodies: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let mut closed = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while closed.len() < streams as usize {
        assert!(
            Instant::now() < deadline,
            "{} of {streams} streams done",
            closed.len()
        );
        let (kind, sid, payload) = fwd_next(&mut ws).await;
        match kind {
            2 => {
                connected += 1;
                ws.send(fwd_frame(3, sid, 8080, b"GET / HTTP/1.0\r\n\r\n"))
                    .await
                    .unwrap();
            }
            3 => bodies.entry(sid).or_default().extend_from_slice(&payload),
            4 => {
                closed.insert(sid);
            }
            5 => panic!("stream {sid}: {}", String::from_utf8_lossy(&payload)),
            _ => {}
        }
    }
    assert_eq!(connected, streams);
    for sid in 1..=streams {
        let body = String::from_utf8_lossy(&bodies[&sid]).into_owned();
        assert!(
            body.contains("200 OK") && body.contains("hello-from-httpd"),
            "stream {sid}: {body}"
        );
    }
    // The server closed each stream, so its id is free again: stream 1 opens anew.
    ws.send(fwd_frame(1, 1, 8080, b"")).await.unwrap();
    let mut again = Vec::new();
    loop {
        let (kind, sid, payload) = fwd_next(&mut ws).await;
        assert_eq!(sid, 1, "only stream 1 is open");
        match kind {
            2 => ws
                .send(fwd_frame(3, 1, 8080, b"GET / HTTP/1.0\r\n\r\n"))
                .await
                .unwrap(),
            3 => again.extend_from_slice(&payload),
            4 => break,
            other => panic!(
                "reused id: frame {other}: {}",
                String::from_utf8_lossy(&payload)
            ),
        }
    }
    assert!(
        String::from_utf8_lossy(&again).contains("hello-from-httpd"),
        "{again:?}"
    );
    // A port nothing listens on: an ERROR frame naming it, the socket stays usable.
    ws.send(fwd_frame(1, 500, 9, b"")).await.unwrap();
    let (kind, sid, payload) = fwd_next(&mut ws).await;
    assert_eq!((kind, sid), (5, 500));
    assert!(
        String::from_utf8_lossy(&payload).contains("port 9"),
        "{payload:?}"
    );
    // A text frame from the client ends the session.
    ws.send(Message::Text("bye".into())).await.unwrap();
    assert_eq!(ws_text(&mut ws).await, None);
    // Forwards are for the owner and operators, checked before the upgrade.
    let (_, vic) = c.user_account("vic", "viewer").await;
    assert_eq!(
        c.ws_with(
            &format!("/ws/forward/{id}/8080"),
            &[("authorization", &format!("Bearer {vic}"))]
        )
        .await
        .err(),
        Some(403)
    );
    let (_, audit) = c.get_json("/api/audit?limit=50").await;
    assert!(audit.to_string().contains("forward.open"), "{audit}");
}

#[tokio::test]
async fn with_credit_flow_control_a_stalled_stream_does_not_stop_the_others() {
    let c = TestCluster::with_runner(&[]).await;
    // Port 7000 accepts and never reads; port 8080 serves a page.
    let id = c
        .submit(json!({"command": "mkdir -p /www && echo hello > /www/index.html && (nc -l -p 7000 -e sleep 1000 &) && httpd -f -p 127.0.0.1:8080 -h /www"}))
        .await
        .remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    let mut ws = c.ws(&format!("/ws/forward/{id}/8080?flow=credit")).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("CONNECTED"));
    // Stream 1 to the listener that never reads (retried while `nc` is not listening yet).
    let deadline = Instant::now() + Duration::from_secs(15);
    let payload = loop {
        ws.send(fwd_frame(1, 1, 7000, b"")).await.unwrap();
        let (kind, sid, payload) = fwd_next(&mut ws).await;
        assert_eq!(sid, 1);
        if kind == 2 {
            break payload;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&payload)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let window = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    assert_eq!(window, 256 * 1024, "CONNECTED carries the first window");
    // Fill stream 1's whole window: its target never reads any of it.
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..window / chunk.len() {
        ws.send(fwd_frame(3, 1, 7000, &chunk)).await.unwrap();
    }
    // The other 99 streams still get their pages.
    for sid in 2..=100u32 {
        ws.send(fwd_frame(1, sid, 8080, b"")).await.unwrap();
    }
    let mut done = std::collections::HashSet::new();
    let mut bodies: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.len() < 99 {
        assert!(
            Instant::now() < deadline,
            "{} of 99 streams done",
            done.len()
        );
        let (kind, sid, payload) = fwd_next(&mut ws).await;
        match kind {
            2 if sid != 1 => ws
                .send(fwd_frame(3, sid, 8080, b"GET / HTTP/1.0\r\n\r\n"))
                .await
                .unwrap(),
            3 => bodies.entry(sid).or_default().extend_from_slice(&payload),
            4 => {
                done.insert(sid);
            }
            5 => panic!("stream {sid}: {}", String::from_utf8_lossy(&payload)),
            _ => {}
        }
    }
    for sid in 2..=100u32 {
        assert!(
            String::from_utf8_lossy(&bodies[&sid]).contains("hello"),
            "stream {sid}"
        );
    }
    // More than the window on stream 1 is refused with a reason, not queued without end.
    ws.send(fwd_frame(3, 1, 7000, &vec![b'y'; 512 * 1024]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "no flow-control error");
        let (kind, sid, payload) = fwd_next(&mut ws).await;
        if kind == 5 && sid == 1 {
            assert!(
                String::from_utf8_lossy(&payload).contains("window"),
                "{payload:?}"
            );
            break;
        }
    }
}

#[tokio::test]
async fn fifty_terminals_at_once_each_get_their_own_echo() {
    let c = TestCluster::with_runner(&[]).await;
    let id = running_task(&c).await;
    let path = format!("/ws/task/{id}/terminal");
    let mut sockets = Vec::new();
    for _ in 0..50 {
        sockets.push(c.ws(&path).await);
    }
    let sessions = sockets
        .into_iter()
        .enumerate()
        .map(|(n, mut ws)| async move {
            send(&mut ws, json!({"type": "resize", "rows": 24, "cols": 80})).await;
            let ready: Value =
                serde_json::from_str(&ws_text(&mut ws).await.expect("ready")).unwrap();
            assert_eq!(ready["type"], "output");
            send(
                &mut ws,
                json!({"type": "input", "data": format!("echo session-$(({n}+1000))\n")}),
            )
            .await;
            // Each sees its own answer (computed by its own shell), not another session's.
            read_until(&mut ws, &format!("session-{}", n + 1000)).await;
            ws
        });
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(sessions),
    )
    .await
    .expect("all 50 terminals answered within a minute");
    assert_eq!(done.len(), 50);
}

/// A forward frame with protocol `proto` (0 TCP, 1 UDP).
fn fwd_frame_proto(kind: u8, proto: u8, id: u32, port: u16, payload: &[u8]) -> Message {
    let mut b = vec![kind, proto];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(payload);
    Message::Binary(b.into())
}

#[tokio::test]
async fn a_udp_forward_reaches_an_echo_in_the_containers_namespace() {
    let c = TestCluster::with_runner(&[]).await;
    let id = running_task(&c).await;
    let container = format!("kohakuriver-task-{id}");
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &container]);
    // A UDP echo on the container's loopback: the node's python3 run inside the container's
    // network namespace (busybox has no UDP echo of its own).
    let script = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('127.0.0.1',9999))\nwhile True:\n    d,a=s.recvfrom(65536)\n    s.sendto(d.upper(),a)\n";
    let mut echo = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "python3", "-c", script])
        .spawn()
        .expect("nsenter and python3");
    let mut ws = c.ws(&format!("/ws/forward/{id}/9999?proto=udp")).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("CONNECTED"));
    ws.send(fwd_frame_proto(1, 1, 1, 9999, b"")).await.unwrap();
    let (kind, _, payload) = fwd_next(&mut ws).await;
    assert_eq!(kind, 2, "{}", String::from_utf8_lossy(&payload));
    // Datagrams sent before the echo binds are lost, as UDP's are: send until one answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    let answer = loop {
        ws.send(fwd_frame_proto(3, 1, 1, 9999, b"hello over udp"))
            .await
            .unwrap();
        use futures_util::StreamExt;
        if let Ok(Some(Ok(Message::Binary(b)))) =
            tokio::time::timeout(Duration::from_millis(300), ws.next()).await
        {
            break b.to_vec();
        }
        assert!(Instant::now() < deadline, "no echo over UDP");
    };
    let _ = echo.kill();
    let _ = echo.wait();
    let sid = u32::from_be_bytes([answer[2], answer[3], answer[4], answer[5]]);
    assert_eq!((answer[0], sid), (3, 1));
    assert_eq!(&answer[8..], b"HELLO OVER UDP");
}
