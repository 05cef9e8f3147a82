//! How the daemons treat their own secrets and logs: short secrets refused, a secret on the
//! command line warned about, no colour codes in log files, and what the runner's metrics show
//! without the secret.

use ferry_e2e::*;
use std::time::{Duration, Instant};

fn start_fails(binary: &str, args: &[&str], secret: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin(binary))
        .args(args)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .env("FERRY_CLUSTER_SECRET", secret)
        .env_remove("FERRY_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test]
async fn a_secret_shorter_than_32_bytes_is_refused_by_both_daemons() {
    let err = start_fails("ferry-host", &["--listen", "127.0.0.1:0"], "hunter2");
    assert!(
        err.contains("cluster_secret: 7 bytes is too short"),
        "{err}"
    );
    let err = start_fails("ferry-runner", &["--listen", "127.0.0.1:0"], "hunter2");
    assert!(
        err.contains("cluster_secret: 7 bytes is too short"),
        "{err}"
    );
}

#[tokio::test]
async fn a_secret_on_the_command_line_is_warned_about_and_logs_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("host.log");
    let mut child = std::process::Command::new(bin("ferry-host"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--cluster-secret",
            "0123456789abcdef0123456789abcdef",
            "--ssh-relay-listen",
            "off",
        ])
        .env("FERRY_ADMIN_PASSWORD", "admin-test-password")
        .env_remove("FERRY_CONFIG")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("ferry-host listening") {
            break text;
        }
        assert!(Instant::now() < deadline, "never started: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("--cluster-secret on the command line is visible"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI escapes in a log file: {text:?}"
    );
}

#[tokio::test]
async fn the_runners_metrics_are_public_aggregate_counts() {
    let c = TestCluster::with_runner(&[]).await;
    let id = c.submit(echo_task("counted")).await.remove(0);
    c.wait_final(&id).await;
    let r = c
        .http
        .get(format!("{}/metrics", c.runners[0].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "no secret needed, as documented");
    let text = r.text().await.unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("ferry_runner_"), "{line}");
    }
    assert!(!text.contains(&id), "no task ids: {text}");
    // Its other routes still need the secret.
    let r = c
        .http
        .get(format!("{}/api/tasks/{id}/stdout", c.runners[0].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
