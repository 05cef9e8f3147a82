//! `ferry-bench-envs`: an environment of about 500 MiB packaged on the host and synced to a
//! runner with no shared dir, for docs/performance.md.
//!
//! - Package: the host stops, commits and saves the environment (MB/s of the tarball).
//! - Sync: a task naming it on a runner whose engine lacks the image (removed first: host and
//!   runner share this machine's engine): submit to running, with the runner's own split of
//!   the time between the HTTP transfer and the engine's load.
//!
//! Usage: `ferry-bench-envs [MiB]` (default 500). Prints a Markdown table.

use ferry_e2e::{docker, Opts, TestCluster, TEST_IMAGE};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let mut c = TestCluster::new(Opts::default());
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let env = format!("bench{}", std::process::id());
    let container = format!("kohakuriver-env-{env}");
    let image = format!("kohakuriver/{env}:base");
    let (status, v) = c
        .post_json(
            "/api/docker/host/create",
            &json!({"image_name": TEST_IMAGE, "container_name": env}),
        )
        .await;
    anyhow::ensure!(status == 200, "create: {v}");
    // Incompressible content, as a real environment's libraries mostly are.
    docker(&[
        "exec",
        &container,
        "sh",
        "-c",
        &format!("dd if=/dev/urandom of=/root/blob bs=1M count={mib} 2>/dev/null"),
    ]);
    let started = Instant::now();
    let (status, v) = c
        .post_json(&format!("/api/docker/create_tar/{env}"), &json!({}))
        .await;
    anyhow::ensure!(status == 202, "create_tar: {v}");
    let size = loop {
        let (_, view) = c.get_json(&format!("/api/docker/env/{env}")).await;
        match view["packaging"]["state"].as_str() {
            Some("done") => break view["versions"][0]["size_bytes"].as_u64().unwrap_or(0),
            Some("failed") => anyhow::bail!("packaging failed: {view}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let package_s = started.elapsed().as_secs_f64();
    docker(&["rmi", "-f", &image]);

    let started = Instant::now();
    let id = c
        .submit(json!({"command": "test -s /root/blob", "container_name": env}))
        .await
        .remove(0);
    c.wait_status(&id, &["running", "completed"], Duration::from_secs(600))
        .await;
    let to_running = started.elapsed().as_secs_f64();
    let t = c.wait_final(&id).await;
    anyhow::ensure!(t["status"] == "completed", "{t}");
    let logs = c.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("environment loaded"))
        .unwrap_or_default();
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let (fetch_ms, load_ms) = (field("fetch_ms"), field("load_ms"));
    let mb = size as f64 / 1e6;
    println!("environment of {mib} MiB random data; tarball {mb:.0} MB\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| package on the host (stop, commit, save) | {package_s:.1} s, {:.0} MB/s |",
        mb / package_s
    );
    println!(
        "| HTTP transfer host -> runner | {:.1} s, {:.0} MB/s |",
        fetch_ms / 1000.0,
        mb / (fetch_ms / 1000.0)
    );
    println!(
        "| SHA-256 check and load into the runner's engine | {:.1} s, {:.0} MB/s |",
        load_ms / 1000.0,
        mb / (load_ms / 1000.0)
    );
    println!("| submit -> running, environment not yet on the node | {to_running:.1} s |");
    docker(&["rm", "-f", &container]);
    docker(&["rmi", "-f", &image]);
    Ok(())
}
