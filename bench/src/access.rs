//! `ferry-bench-access`: terminal echo latency and port-forward throughput, for
//! docs/performance.md.
//!
//! - Terminal: 1,000 keystrokes into a shell on a busybox task, each timed until its echo
//!   comes back, through the host (host + runner) and straight to the runner (runner only);
//!   the difference is what the host's relay adds.
//! - Forward: one TCP stream fetching a 256 MiB file from busybox `httpd` in the container:
//!   straight to the container's address (direct), through the runner's socket, and through
//!   the host's; the three alternate, best of 5 each.
//!
//! Usage: `ferry-bench-access [terminal|forward]` (default both). Prints a Markdown table.

use ferry_bench::pct;
use ferry_e2e::{TestCluster, Ws};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const FILE_MIB: usize = 256;

async fn runner_ws(c: &TestCluster, path: &str) -> anyhow::Result<Ws> {
    let url = format!("{}{path}", c.runners[0].url().replace("http://", "ws://"));
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", c.opts.secret).parse()?,
    );
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

/// Echo latency of each of `n` keystrokes, in milliseconds.
async fn keystrokes(mut ws: Ws, n: usize) -> anyhow::Result<Vec<f64>> {
    let send = |v: serde_json::Value| Message::Text(v.to_string().into());
    ws.send(send(json!({"type": "resize", "rows": 24, "cols": 200})))
        .await?;
    let mut times = Vec::with_capacity(n);
    // The ready frame, then the prompt.
    ws.next().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..n {
        if i % 100 == 0 {
            // Clear the line (Ctrl-U) so it never grows long, and let the redraw pass.
            ws.send(send(json!({"type": "input", "data": "\u{15}"})))
                .await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), ws.next()).await
            {
            }
        }
        let start = Instant::now();
        ws.send(send(json!({"type": "input", "data": "x"}))).await?;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("terminal closed"))??;
            if let Message::Text(t) = msg {
                if t.as_str().contains('x') {
                    break;
                }
            }
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

fn fwd(kind: u8, id: u32, port: u16, payload: &[u8]) -> Message {
    let mut b = vec![kind, 0];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(payload);
    Message::Binary(b.into())
}

/// MB/s of one HTTP fetch of the big file through a forward socket.
async fn through(mut ws: Ws) -> anyhow::Result<f64> {
    let first = ws.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
    anyhow::ensure!(
        matches!(&first, Message::Text(t) if t.as_str() == "CONNECTED"),
        "{first:?}"
    );
    ws.send(fwd(1, 1, 8080, b"")).await?;
    let start = Instant::now();
    let mut bytes = 0usize;
    loop {
        let msg = ws.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
        let Message::Binary(b) = msg else { continue };
        match b[0] {
            2 => {
                ws.send(fwd(3, 1, 8080, b"GET /big HTTP/1.0\r\n\r\n"))
                    .await?
            }
            3 => bytes += b.len() - 8,
            4 => break,
            5 => anyhow::bail!("{}", String::from_utf8_lossy(&b[8..])),
            _ => {}
        }
    }
    anyhow::ensure!(bytes >= FILE_MIB << 20, "only {bytes} bytes came");
    Ok(bytes as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// MB/s of the same fetch straight from the container's address.
async fn direct(ip: &str) -> anyhow::Result<f64> {
    let mut s = tokio::net::TcpStream::connect((ip, 8080)).await?;
    let start = Instant::now();
    s.write_all(b"GET /big HTTP/1.0\r\n\r\n").await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0usize;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        bytes += n;
    }
    Ok(bytes as f64 / 1e6 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin_dir = std::env::var("FERRY_BIN_DIR").unwrap_or_else(|_| "target/debug".into());
    let c = TestCluster::with_runner(&[]).await;
    let cmd = format!(
        "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count={FILE_MIB} 2>/dev/null && httpd -f -p 8080 -h /www"
    );
    let id = c.submit(json!({"command": cmd})).await.remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(60))
        .await;
    let container = format!("kohakuriver-task-{id}");
    let ip = ferry_e2e::docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &container,
    ]);
    // httpd is up once the file is written.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let part = std::env::args().nth(1).unwrap_or_default();
    println!("binaries: {bin_dir}; 1000 keystrokes; one TCP stream, {FILE_MIB} MiB, best of 5\n");
    println!("| measure | value |");
    println!("|---|---|");
    if part != "forward" {
        let term = format!("/ws/task/{id}/terminal");
        let via_host = keystrokes(c.ws(&term).await, 1000).await?;
        let via_runner = keystrokes(runner_ws(&c, &term).await?, 1000).await?;
        let (h50, h99) = (pct(&via_host, 0.5), pct(&via_host, 0.99));
        let (r50, r99) = (pct(&via_runner, 0.5), pct(&via_runner, 0.99));
        println!(
            "| terminal echo through host and runner, p50 (p99) | {h50:.2} ms ({h99:.2} ms) |"
        );
        println!("| terminal echo straight to the runner, p50 (p99) | {r50:.2} ms ({r99:.2} ms) |");
        println!("| added by the host's relay, p50 | {:+.2} ms |", h50 - r50);
    }
    if part == "terminal" {
        return Ok(());
    }
    let fwd_path = format!("/ws/forward/{id}/8080");
    let mut direct_mb = Vec::new();
    let mut runner_mb = Vec::new();
    let mut host_mb = Vec::new();
    for _ in 0..5 {
        direct_mb.push(direct(&ip).await?);
        runner_mb.push(through(runner_ws(&c, &fwd_path).await?).await?);
        host_mb.push(through(c.ws(&fwd_path).await).await?);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "| forward, direct to the container | {:.0} MB/s |",
        best(&direct_mb)
    );
    println!(
        "| forward through the runner only | {:.0} MB/s |",
        best(&runner_mb)
    );
    println!(
        "| forward through host and runner | {:.0} MB/s |",
        best(&host_mb)
    );
    Ok(())
}
