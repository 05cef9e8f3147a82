//! `ferry-bench-vps`: VPS figures for docs/performance.md, on the local Docker engine with the
//! sshd test image (`scripts/build-vps-test-image.sh`).
//!
//! - create -> first SSH login (upload mode, through the host's SSH relay), next to the floor:
//!   the same image made reachable by hand (`docker create`, key files copied in,
//!   `docker start`, first login on the published port), interleaved;
//! - snapshot time of a VPS holding a 100 MiB change.
//!
//! Usage: `ferry-bench-vps [rounds]` (default 10). Prints a Markdown table.

use ferry_bench::median;
use ferry_e2e::{relay_forward, ssh_keygen, ssh_run, TestCluster, SSHD_IMAGE};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Logs in until it works (at most 30 s).
async fn first_login(port: u16, key: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ssh_run(port, Some(key), "true").await.0 == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "no SSH login within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ferry_vps(c: &TestCluster, key: &Path, public: &str) -> anyhow::Result<(f64, String)> {
    let start = Instant::now();
    let (status, v) = c
        .post_json(
            "/api/vps/create",
            &json!({"ssh_key_mode": "upload", "ssh_public_key": public, "registry_image": SSHD_IMAGE}),
        )
        .await;
    anyhow::ensure!(status == 200, "create: {status} {v}");
    let id = v["task_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no task id: {v}"))?
        .to_string();
    let local = relay_forward(c.relay_port, &id).await;
    first_login(local, key).await?;
    Ok((ms(start.elapsed()), id))
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The floor: the same image with sshd made reachable by hand, to the first login.
async fn docker_vps(n: usize, key: &Path, public: &str) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let (host_key, _) = ssh_keygen(&format!("host{n}"));
    let root_ssh = dir.path().join(".ssh");
    std::fs::create_dir(&root_ssh)?;
    std::fs::write(root_ssh.join("authorized_keys"), format!("{public}\n"))?;
    let name = format!("ferry-bench-floor-{n}");
    let start = Instant::now();
    docker(&[
        "create",
        "--name",
        &name,
        "--init",
        "-p",
        "127.0.0.1::22",
        SSHD_IMAGE,
        "/usr/sbin/sshd",
        "-D",
        "-e",
        "-h",
        "/etc/ssh/ssh_host_ed25519_key",
    ])?;
    let key_path = host_key.to_string_lossy().to_string();
    docker(&[
        "cp",
        &key_path,
        &format!("{name}:/etc/ssh/ssh_host_ed25519_key"),
    ])?;
    docker(&["cp", &root_ssh.to_string_lossy(), &format!("{name}:/root/")])?;
    docker(&["start", &name])?;
    let published = docker(&["port", &name, "22"])?;
    let port: u16 = published
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no published port: {published}"))?;
    let logged_in = first_login(port, key).await;
    let elapsed = ms(start.elapsed());
    let _ = docker(&["rm", "-f", &name]);
    logged_in.map(|()| elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let bin_dir = std::env::var("FERRY_BIN_DIR").unwrap_or_else(|_| "target/debug".into());
    let c = TestCluster::with_runner(&[]).await;
    let (key, public) = ssh_keygen("bench");
    // Warm-up: image and connection caches.
    let (_, warm) = ferry_vps(&c, &key, &public).await?;
    docker_vps(0, &key, &public).await?;
    let mut ferry = Vec::new();
    let mut floor = Vec::new();
    let mut ids = vec![warm];
    for n in 1..=rounds {
        let (t, id) = ferry_vps(&c, &key, &public).await?;
        ferry.push(t);
        ids.push(id);
        floor.push(docker_vps(n, &key, &public).await?);
        // One VPS at a time on the node (a core each): stop the ones measured.
        for id in ids.drain(..) {
            let _ = c
                .post_json(&format!("/api/vps/stop/{id}"), &json!({}))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Snapshot of a 100 MiB change.
    let (_, id) = ferry_vps(&c, &key, &public).await?;
    docker(&[
        "exec",
        &format!("kohakuriver-vps-{id}"),
        "sh",
        "-c",
        "dd if=/dev/urandom of=/root/big bs=1M count=100 2>/dev/null && sync",
    ])?;
    let start = Instant::now();
    let (status, v) = c
        .post_json(&format!("/api/vps/snapshots/{id}"), &json!({}))
        .await;
    let snapshot = ms(start.elapsed());
    anyhow::ensure!(status == 200, "snapshot: {status} {v}");
    let (fm, dm) = (median(&mut ferry), median(&mut floor));
    println!("binaries: {bin_dir}; rounds: {rounds}; image: {SSHD_IMAGE}\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| VPS create -> first SSH login through the relay, median | {fm:.0} ms |");
    println!("| same image by hand (create, copy keys, start, first login), median | {dm:.0} ms |");
    println!("| Ferry over the floor (medians) | {:+.0} ms |", fm - dm);
    println!("| snapshot of a VPS with a 100 MiB change | {snapshot:.0} ms |");
    Ok(())
}
