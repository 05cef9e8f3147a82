//! `ferry-bench`: the performance harness behind docs/performance.md.
//!
//! Starts a real host and runner (the binaries in `FERRY_BIN_DIR`, default `target/debug`;
//! use `target/release` for published figures) against the local Docker engine and measures:
//! idle RSS of both daemons, and the submit->completed latency of an `echo` task next to the
//! floor, a plain `docker run --rm` of the same image, interleaved in the same run.
//!
//! Usage: `ferry-bench [rounds]` (default 30). Prints a Markdown table.

use ferry_bench::{median, pct, rss_kib};
use ferry_client::{SubmitRequest, TaskStatus};
use ferry_e2e::{TestCluster, TEST_IMAGE};
use std::time::{Duration, Instant};

async fn ferry_echo(c: &TestCluster) -> anyhow::Result<f64> {
    let api = c.client();
    let request = SubmitRequest {
        command: "echo hello".into(),
        registry_image: Some(TEST_IMAGE.into()),
        ..Default::default()
    };
    let start = Instant::now();
    let reply = api.submit(&request).await?;
    let id = *reply
        .task_ids
        .first()
        .ok_or_else(|| anyhow::anyhow!("submit returned no task id"))?;
    loop {
        let t = api.task(id).await?;
        match t.status {
            TaskStatus::Completed => return Ok(start.elapsed().as_secs_f64() * 1000.0),
            s if s.is_final() || s == TaskStatus::Lost => {
                anyhow::bail!("echo task ended {s}: {:?}", t.error_message)
            }
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

fn docker_run_echo() -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", TEST_IMAGE, "echo", "hello"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let bin_dir = std::env::var("FERRY_BIN_DIR").unwrap_or_else(|_| "target/debug".into());
    let c = TestCluster::with_runner(&[]).await;
    // Idle: registered, heartbeating, nothing to do.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let host_pid = c.host.as_ref().map(|h| h.pid()).unwrap_or(0);
    let runner_pid = c.runners[0].pid();
    let (host_idle, runner_idle) = (rss_kib(host_pid), rss_kib(runner_pid));

    // Warm-up (image cache, connection pools), then interleave the two measurements.
    ferry_echo(&c).await?;
    docker_run_echo()?;
    let (mut ferry, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ferry.push(ferry_echo(&c).await?);
        floor.push(tokio::task::spawn_blocking(docker_run_echo).await??);
    }
    let (host_after, runner_after) = (rss_kib(host_pid), rss_kib(runner_pid));
    let (fm, dm) = (median(&mut ferry), median(&mut floor));
    println!("binaries: {bin_dir}; rounds: {rounds}; image: {TEST_IMAGE}\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| host idle RSS | {:.1} MiB |", host_idle as f64 / 1024.0);
    println!(
        "| runner idle RSS | {:.1} MiB |",
        runner_idle as f64 / 1024.0
    );
    println!(
        "| host RSS after {rounds} tasks | {:.1} MiB |",
        host_after as f64 / 1024.0
    );
    println!(
        "| runner RSS after {rounds} tasks | {:.1} MiB |",
        runner_after as f64 / 1024.0
    );
    println!(
        "| echo submit->completed, median (p90) | {fm:.1} ms ({:.1} ms) |",
        pct(&ferry, 0.9)
    );
    println!(
        "| `docker run --rm` echo, median (p90) | {dm:.1} ms ({:.1} ms) |",
        pct(&floor, 0.9)
    );
    println!("| Ferry over the floor (medians) | {:+.1} ms |", fm - dm);
    Ok(())
}
