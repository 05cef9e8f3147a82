//! `ferry-bench-events`: event fan-out, for docs/performance.md.
//!
//! S subscribers hold `GET /api/events` (SSE) open while a generator makes the host publish
//! about R events a second: `user`-role submits of five tasks each, every task giving
//! `task.submitted` and `approval.requested` (they wait for approval, so no container runs and
//! the events are the only work). Each subscriber takes the delivery latency of every event it
//! receives as its arrival time minus the event's `time` (stamped by the host when it publishes;
//! same clock, millisecond resolution). The host's CPU is read from `/proc/<pid>/stat` over
//! the timed window.
//!
//! Usage: `ferry-bench-events [subscribers] [events_per_s] [seconds]` (default 1000 500 20).
//! Prints a Markdown table.

use ferry_bench::{cpu_seconds, quantile, rss_kib};
use ferry_e2e::{Opts, TestCluster};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events one generator request makes the host publish: 5 tasks × (submitted, approval).
const TASKS_PER_SUBMIT: usize = 5;
const EVENTS_PER_SUBMIT: f64 = (TASKS_PER_SUBMIT * 2) as f64;

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    /// Delivery latency of each event received inside the timed window, in ms.
    latencies_ms: Vec<f64>,
    dropped: bool,
}

/// Reads one SSE stream until `stop`, timing the events stamped at or after `from_ms`.
async fn subscribe(
    resp: reqwest::Response,
    from_ms: Arc<AtomicU64>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Seen {
    const TIME: &[u8] = b"\"time\":\"";
    let mut resp = resp;
    let mut seen = Seen::default();
    // Bytes of an event cut by a chunk boundary, kept until the rest arrives.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let chunk = match tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            Ok(_) => break,
            Err(_) => continue,
        };
        let now = ferry_common::time::now_ms();
        carry.extend_from_slice(&chunk);
        let from = from_ms.load(Ordering::Relaxed) as i64;
        // Whole events end with a blank line; only those are read.
        let Some(end) = carry.windows(2).rposition(|w| w == b"\n\n") else {
            continue;
        };
        let whole = &carry[..end];
        if whole.windows(14).any(|w| w == b"stream.dropped") {
            seen.dropped = true;
        }
        let mut at = 0;
        while let Some(i) = whole[at..].windows(TIME.len()).position(|w| w == TIME) {
            let start = at + i + TIME.len();
            let stamp = whole[start..]
                .iter()
                .position(|&b| b == b'"')
                .and_then(|len| std::str::from_utf8(&whole[start..start + len]).ok())
                .and_then(ferry_common::time::parse_ms);
            if let Some(t) = stamp {
                if from > 0 && t >= from {
                    seen.latencies_ms.push((now - t).max(0) as f64);
                }
            }
            at = start;
        }
        carry.drain(..end + 2);
        if seen.dropped {
            break;
        }
    }
    seen
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: u64| -> u64 {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (subscribers, rate, seconds) = (arg(1, 1000) as usize, arg(2, 500), arg(3, 20));

    let mut c = TestCluster::new(Opts::default());
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let host_pid = c.host.as_ref().map(|h| h.pid()).unwrap_or(0);
    let (_, user_token) = c.user_account("benchuser", "user").await;
    let admin_token = c.token.clone().unwrap_or_default();

    // Every subscriber is a viewer of everything (the admin's token): each sees every event.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let url = format!("{}/api/events?topics=task,approval", c.url());
    let from_ms = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let resp = http.get(&url).bearer_auth(&admin_token).send().await?;
        anyhow::ensure!(resp.status() == 200, "subscribe: {}", resp.status());
        readers.push(tokio::spawn(subscribe(
            resp,
            from_ms.clone(),
            stop_rx.clone(),
        )));
    }
    let rss_before = rss_kib(host_pid);

    // The generator: one submit every 1/(rate/10) s, open loop, each on its own task so a slow
    // answer does not hold back the next.
    let submit_every = Duration::from_secs_f64(EVENTS_PER_SUBMIT / rate.max(1) as f64);
    let body = json!({"command": "true", "targets": vec!["node-1"; TASKS_PER_SUBMIT]});
    let submit_url = format!("{}/api/submit", c.url());
    let started = Instant::now();
    from_ms.store(ferry_common::time::now_ms() as u64, Ordering::Relaxed);
    let cpu_before = cpu_seconds(host_pid);
    let mut ticker = tokio::time::interval(submit_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut submits = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        let (http, url, token, body) = (
            http.clone(),
            submit_url.clone(),
            user_token.clone(),
            body.clone(),
        );
        submits.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let window = started.elapsed().as_secs_f64();
    let cpu_used = cpu_seconds(host_pid) - cpu_before;
    let rss_after = rss_kib(host_pid);
    let mut accepted = 0usize;
    for s in submits {
        if s.await? == 202 {
            accepted += 1;
        }
    }
    // Let the last events arrive, then stop the readers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(true)?;
    let mut all: Vec<f64> = Vec::new();
    let (mut dropped, mut least, mut most) = (0usize, usize::MAX, 0usize);
    for r in readers {
        let seen = r.await?;
        dropped += usize::from(seen.dropped);
        least = least.min(seen.latencies_ms.len());
        most = most.max(seen.latencies_ms.len());
        all.extend(seen.latencies_ms);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let published = accepted as f64 * EVENTS_PER_SUBMIT;

    println!("| measure | value |");
    println!("|---|---|");
    println!("| subscribers (SSE, all topics' task and approval events) | {subscribers} |");
    println!(
        "| events published | {published:.0} in {window:.1} s ({:.0}/s; {accepted} submits of {TASKS_PER_SUBMIT} tasks accepted) |",
        published / window
    );
    println!(
        "| deliveries | {} ({:.0}/s); per subscriber {least} to {most} |",
        all.len(),
        all.len() as f64 / window
    );
    println!("| subscribers dropped as too slow | {dropped} |");
    println!(
        "| delivery latency p50 / p95 / p99 / max | {} / {} / {} / {} ms |",
        quantile(&all, 0.50),
        quantile(&all, 0.95),
        quantile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| host CPU over the window | {:.0} % of one core |",
        cpu_used / window * 100.0
    );
    println!(
        "| host RSS with the subscribers, before / after | {:.1} / {:.1} MiB |",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    Ok(())
}
