//! `stdout?follow=true`: a task's output as it is printed, through the host, ending after the
//! last byte once the task ends; with and without a shared dir; from `lines=N` back.

use ferry_e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Opens a follow of the task's stdout.
async fn open(c: &TestCluster, id: &str, query: &str) -> reqwest::Response {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/tasks/{id}/stdout?follow=true{query}",
            c.url()
        ))
        .bearer_auth(c.token.clone().unwrap_or_default())
        .send()
        .await
        .expect("follow");
    assert_eq!(resp.status().as_u16(), 200);
    resp
}

/// Reads the follow until `needle` has arrived; all read so far.
async fn read_until(resp: &mut reqwest::Response, got: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !got.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(b))) => got.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("no {needle:?} in time ({other:?}); got {got:?}"),
        }
    }
}

async fn each_line_arrives_as_printed_and_the_stream_ends_with_the_task(shared: bool) {
    let c = TestCluster::one_node(shared).await;
    let id = c
        .submit(json!({"command": "for i in 1 2 3 4; do echo line $i; sleep 1; done"}))
        .await
        .remove(0);
    let mut resp = open(&c, &id, "").await;
    let mut got = String::new();
    for i in 1..=3 {
        read_until(&mut resp, &mut got, &format!("line {i}\n")).await;
        // Printed a second apart: each arrives while the task still runs.
        assert_eq!(c.task(&id).await["status"], "running", "line {i}: {got:?}");
    }
    // The stream ends on its own, after the last line, once the task has ended.
    let rest = tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .expect("the follow ends after the task")
        .expect("body");
    got.push_str(&rest);
    assert_eq!(got, "line 1\nline 2\nline 3\nline 4\n");
    let t = c.task(&id).await;
    assert_eq!(
        t["status"], "completed",
        "ended only once the task had: {t}"
    );

    // From the last line back, then to the end.
    let id = c
        .submit(json!({"command": "echo a; echo b; echo c; sleep 2; echo d"}))
        .await
        .remove(0);
    let mut first = c.get_text(&format!("/api/tasks/{id}/stdout")).await.1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first.contains("c\n") {
        assert!(Instant::now() < deadline, "no output: {first:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        first = c.get_text(&format!("/api/tasks/{id}/stdout")).await.1;
    }
    let resp = open(&c, &id, "&lines=1").await;
    let all = tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .expect("ends")
        .expect("body");
    assert_eq!(all, "c\nd\n");
}

#[tokio::test]
async fn a_follow_through_the_runner_streams_lines_as_printed_and_ends_with_the_task() {
    each_line_arrives_as_printed_and_the_stream_ends_with_the_task(false).await;
}

#[tokio::test]
async fn a_follow_from_the_shared_dir_streams_lines_as_printed_and_ends_with_the_task() {
    each_line_arrives_as_printed_and_the_stream_ends_with_the_task(true).await;
}

#[tokio::test]
async fn a_follow_of_a_finished_task_sends_its_output_and_ends() {
    let c = TestCluster::one_node(false).await;
    let id = c.submit(echo_task("done already")).await.remove(0);
    c.wait_final(&id).await;
    let all = tokio::time::timeout(Duration::from_secs(30), open(&c, &id, "").await.text())
        .await
        .expect("ends at once")
        .expect("body");
    assert_eq!(all, "done already\n");
    // Someone else's task: refused before anything streams.
    let (_, bob) = c.user_account("bob", "user").await;
    let r = reqwest::Client::new()
        .get(format!("{}/api/tasks/{id}/stdout?follow=true", c.url()))
        .bearer_auth(bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}
