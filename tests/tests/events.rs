//! Live events: `GET /api/events` (Server-Sent Events) and `/ws/events` against the real
//! host and runner: a task's whole life in order, a reconnect that loses nothing, what a
//! `user` may see, bad filters.

use ferry_e2e::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An open SSE stream, parsed into events as they arrive.
struct Sse {
    resp: reqwest::Response,
    pending: String,
}

impl Sse {
    /// Subscribes with `query` (e.g. `topics=task`), as the holder of `token`.
    async fn open(c: &TestCluster, token: &str, query: &str, last_id: Option<u64>) -> Sse {
        // No overall timeout: the stream stays open.
        let mut rb = reqwest::Client::new()
            .get(format!("{}/api/events?{query}", c.url()))
            .bearer_auth(token);
        if let Some(id) = last_id {
            rb = rb.header("last-event-id", id.to_string());
        }
        let resp = rb.send().await.expect("subscribe");
        assert_eq!(resp.status().as_u16(), 200, "subscribe");
        let kind = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Sse {
            resp,
            pending: String::new(),
        }
    }

    /// The next event (its `data` as JSON), waiting up to `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let v: Value = serde_json::from_str(&data).expect("event data is JSON");
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id:"))
                    .map(|s| s.trim().to_string());
                assert_eq!(id, Some(v["index"].to_string()), "SSE id is the index");
                return Some(v);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.pending.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Events until one for which `last` holds (that one included).
    async fn until(&mut self, what: &str, last: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let e = self
                .next(Duration::from_secs(30))
                .await
                .unwrap_or_else(|| panic!("no event {what}; saw {seen:#?}"));
            let done = last(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

/// A command task's events from submit to a clean end.
const LIFE: [&str; 5] = [
    "task.submitted",
    "task.placed",
    "status:assigning",
    "status:running",
    "status:completed",
];

fn kinds_of(events: &[Value], task: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["task_id"] == task)
        .map(|e| match e["status"].as_str() {
            Some(s) if e["type"] == "task.status" => format!("status:{s}"),
            _ => e["type"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

fn indexes(events: &[Value]) -> Vec<u64> {
    events.iter().filter_map(|e| e["index"].as_u64()).collect()
}

fn ended(task: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["task_id"] == task && e["type"] == "task.status" && e["status"] == "completed"
}

#[tokio::test]
async fn a_subscriber_sees_a_tasks_life_in_order_and_a_reconnect_loses_nothing() {
    let c = TestCluster::with_runner(&[]).await;
    let token = c.token.clone().expect("admin token");
    let mut sse = Sse::open(&c, &token, "topics=task", None).await;
    let id = c.submit(echo_task("hello")).await.remove(0);
    let mut seen = sse.until("of the task's end", ended(&id)).await;
    assert_eq!(kinds_of(&seen, &id), LIFE, "{seen:#?}");
    let idx = indexes(&seen);
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "{idx:?}");
    let done = seen.last().cloned().unwrap_or_default();
    assert_eq!(done["previous_status"], "running", "{done}");
    assert_eq!(done["node"], "node-1", "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");

    // Stop reading after the second task's first event; resume from it: nothing is lost.
    let second = c.submit(echo_task("again")).await.remove(0);
    let first = sse
        .until("of the second task", |e| e["task_id"] == second)
        .await;
    let resume_from = first.last().and_then(|e| e["index"].as_u64()).unwrap();
    drop(sse);
    let mut again = Sse::open(&c, &token, "topics=task", Some(resume_from)).await;
    let rest = again
        .until("of the second task's end", ended(&second))
        .await;
    assert_eq!(
        rest[0]["index"].as_u64(),
        Some(resume_from + 1),
        "{rest:#?}"
    );
    seen = first;
    seen.extend(rest);
    assert_eq!(kinds_of(&seen, &second), LIFE, "{seen:#?}");

    // An index from before anything kept: told to list again, then events follow.
    let mut old = Sse::open(&c, &token, "topics=task", Some(1)).await;
    let e = old
        .next(Duration::from_secs(10))
        .await
        .expect("a stream event");
    assert_eq!(e["type"], "stream.too_old", "{e}");
    assert!(
        e["reason"].as_str().unwrap_or_default().contains("list"),
        "{e}"
    );
}

#[tokio::test]
async fn a_user_subscriber_sees_only_their_own_tasks() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, alice) = c.user_account("alice", "user").await;
    let (_, bob) = c.user_account("bob", "user").await;
    let mut sse = Sse::open(&c, &alice, "", None).await;
    let submit_as = |token: String, text: &'static str| {
        let c = &c;
        async move {
            let r = c
                .http
                .post(format!("{}/api/submit", c.url()))
                .bearer_auth(token)
                .json(&echo_task(text))
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["task_ids"][0].as_str().unwrap().to_string()
        }
    };
    let bobs = submit_as(bob.clone(), "bob's").await;
    let alices = submit_as(alice.clone(), "alice's").await;
    for id in [&bobs, &alices] {
        let (status, v) = c.post_json(&format!("/api/approve/{id}"), &json!({})).await;
        assert_eq!(status, 200, "{v}");
    }
    c.wait_final(&bobs).await;
    let seen = sse.until("of alice's task's end", ended(&alices)).await;
    assert!(
        seen.iter().all(|e| e["task_id"] != bobs.as_str()),
        "alice saw bob's task: {seen:#?}"
    );
    let kinds = kinds_of(&seen, &alices);
    assert_eq!(kinds[0], "task.submitted", "{seen:#?}");
    assert!(
        seen.iter()
            .any(|e| e["type"] == "approval.approved" && e["task_id"] == alices.as_str()),
        "{seen:#?}"
    );
    assert!(kinds.contains(&"status:running".to_string()), "{kinds:?}");
}

#[tokio::test]
async fn node_events_and_the_websocket_stream() {
    let mut c = TestCluster::with_host().await;
    let mut ws = c.ws("/ws/events?topics=node").await;
    c.start_runner("node-1", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let registered = loop {
        let text = tokio::time::timeout(Duration::from_secs(30), ws_text(&mut ws))
            .await
            .ok()
            .flatten()
            .expect("an event frame");
        let v: Value = serde_json::from_str(&text).expect("JSON frame");
        if v["type"] == "node.registered" {
            break v;
        }
        assert!(Instant::now() < deadline, "no node.registered");
    };
    assert_eq!(registered["topic"], "node");
    assert_eq!(registered["node"], "node-1");
}

#[tokio::test]
async fn bad_filters_name_the_field() {
    let c = TestCluster::with_host().await;
    for (query, field) in [
        ("topics=task,weather", "topics"),
        ("task_id=abc", "task_id"),
        ("since=-1", "since"),
        ("bogus=1", "bogus"),
    ] {
        let (status, v) = c.get_json(&format!("/api/events?{query}")).await;
        assert_eq!(status, 422, "{query}: {v}");
        assert!(
            v["detail"].as_str().unwrap_or_default().contains(field),
            "{query}: {v}"
        );
    }
    let r = c
        .request(reqwest::Method::GET, "/api/events")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    // Without a credential: refused before anything streams.
    let r = reqwest::Client::new()
        .get(format!("{}/api/events", c.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn a_timeline_shows_a_task_queued_placed_lost_recovered_and_killed() {
    use nix::sys::signal::Signal;
    let mut c = TestCluster::new(Opts {
        node_timeout: "2s",
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &["--cores", "2"]);
    c.wait_node_online("node-1").await;
    let long = json!({"command": "sleep 60", "required_cores": 2});
    let first = c.submit(long.clone()).await.remove(0);
    c.wait_status(&first, &["running"], Duration::from_secs(30))
        .await;
    let id = c.submit(long).await.remove(0);
    let waiting = c.task(&id).await;
    assert_eq!(waiting["status"], "pending");
    assert_eq!(
        waiting["waiting_reason"], "needs 2 cores; largest free 0 on node-1",
        "{waiting}"
    );
    let (status, _) = c.post_json(&format!("/api/kill/{first}"), &json!({})).await;
    assert_eq!(status, 202);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    c.runners[0].signal(Signal::SIGSTOP);
    c.wait_status(&id, &["lost"], Duration::from_secs(15)).await;
    c.runners[0].signal(Signal::SIGCONT);
    c.wait_status(&id, &["running"], Duration::from_secs(15))
        .await;
    let (status, _) = c.post_json(&format!("/api/kill/{id}"), &json!({})).await;
    assert_eq!(status, 202);
    let t = c.wait_final(&id).await;
    assert!(t.get("waiting_reason").is_none(), "only while pending: {t}");

    // Its cores are freed once the runner confirms the container is gone: the last step.
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (status, v) = c.get_json(&format!("/api/tasks/{id}/events")).await;
        assert_eq!(status, 200, "{v}");
        let last = v["events"].as_array().and_then(|e| e.last()).cloned();
        if last.is_some_and(|l| l["event"] == "released") {
            break v;
        }
        assert!(Instant::now() < deadline, "never released: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let steps = v["events"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["event"].as_str()).collect();
    assert_eq!(
        names,
        vec![
            "submitted",
            "placed",
            "dispatched",
            "started",
            "lost",
            "recovered",
            "kill_requested",
            "finished",
            "released"
        ],
        "{v:#}"
    );
    let step = |name: &str| steps.iter().find(|s| s["event"] == name).cloned().unwrap();
    assert_eq!(step("submitted")["detail"], "queued");
    assert_eq!(step("placed")["node"], "node-1");
    assert_eq!(step("placed")["attempt"], 1);
    assert!(
        step("lost")["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("offline"),
        "{v:#}"
    );
    assert_eq!(step("finished")["status"], "killed");
    let times: Vec<&str> = steps.iter().filter_map(|s| s["time"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Someone who may not read the task may not read its timeline either.
    let (_, bob) = c.user_account("bob", "user").await;
    let r = c
        .http
        .get(format!("{}/api/tasks/{id}/events", c.url()))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (status, _) = c.get_json("/api/tasks/123/events").await;
    assert_eq!(status, 404);
}
