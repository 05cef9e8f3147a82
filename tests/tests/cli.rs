//! The `ferry` CLI against a real host and runner: what a user at a terminal sees (output,
//! exit codes, files written), with the real binary.

use ferry_e2e::{bin, free_port, TestCluster};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A `ferry` command with its own config file, talking to the cluster (as the admin unless
/// the caller sets FERRY_TOKEN itself).
fn ferry(c: &TestCluster, config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin("ferry"));
    cmd.args(args)
        .env("FERRY_HOST", c.url())
        .env("FERRY_CONFIG", config)
        .env_remove("FERRY_CONTEXT")
        .env("FERRY_TOKEN", c.token.clone().unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: tokio::process::Command) -> Out {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("ferry finished within 2 minutes")
        .expect("ferry runs");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn config_in(c: &TestCluster) -> PathBuf {
    c.dir.path().join("ferry-config.toml")
}

#[tokio::test]
async fn submit_wait_exits_with_the_tasks_own_exit_code() {
    let c = TestCluster::one_node(false).await;
    let cfg = config_in(&c);
    let ok = run(ferry(
        &c,
        &cfg,
        &["task", "submit", "--wait", "--", "echo", "hello from ferry"],
    ))
    .await;
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    let failed = run(ferry(
        &c,
        &cfg,
        &["task", "submit", "--wait", "--", "sh", "-c", "exit 7"],
    ))
    .await;
    assert_eq!(failed.code, 7, "{}{}", failed.stdout, failed.stderr);
    assert!(
        failed.stderr.contains("failed (exit code 7)"),
        "{}",
        failed.stderr
    );
    // --follow prints the task's output on stdout and still exits with its code.
    let followed = run(ferry(
        &c,
        &cfg,
        &[
            "task",
            "submit",
            "--follow",
            "--",
            "sh",
            "-c",
            "echo out-line; exit 3",
        ],
    ))
    .await;
    assert_eq!(
        (followed.code, followed.stdout.as_str()),
        (3, "out-line\n"),
        "{}",
        followed.stderr
    );
}

#[tokio::test]
async fn logs_follow_prints_lines_as_they_are_printed_and_exits_when_the_task_ends() {
    let c = TestCluster::one_node(false).await;
    let cfg = config_in(&c);
    let id = c
        .submit(json!({"command": "echo first; sleep 4; echo second"}))
        .await
        .remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    let mut child = ferry(&c, &cfg, &["task", "logs", "-f", &id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the first line arrives while the task runs")
        .expect("read");
    assert_eq!(first.as_deref(), Some("first"));
    // Printed before the task ended: it is still running now.
    assert_eq!(c.task(&id).await["status"], "running");
    let second = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the second line arrives")
        .expect("read");
    assert_eq!(second.as_deref(), Some("second"));
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("logs -f exits once the task has ended")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    assert_eq!(c.task(&id).await["status"], "completed");
}

#[tokio::test]
async fn json_output_is_the_apis_own_and_yaml_says_the_same() {
    let c = TestCluster::one_node(false).await;
    let cfg = config_in(&c);
    let id = c.submit(json!({"command": "echo json"})).await.remove(0);
    c.wait_final(&id).await;
    let out = run(ferry(&c, &cfg, &["-o", "json", "task", "status", &id])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let from_cli: Value = serde_json::from_str(&out.stdout).expect("-o json parses");
    let (_, from_api) = c.get_json(&format!("/api/status/{id}")).await;
    assert_eq!(from_cli, from_api);
    let out = run(ferry(
        &c,
        &cfg,
        &["-o", "json", "task", "list", "--limit", "5"],
    ))
    .await;
    let list: Value = serde_json::from_str(&out.stdout).expect("list parses");
    assert_eq!(list[0]["task_id"], id.as_str(), "{list}");
    let out = run(ferry(&c, &cfg, &["-o", "json", "task", "events", &id])).await;
    let (_, timeline) = c.get_json(&format!("/api/tasks/{id}/events")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).expect("parses"),
        timeline
    );
    let out = run(ferry(&c, &cfg, &["-o", "yaml", "task", "status", &id])).await;
    assert!(
        out.stdout.lines().any(|l| l == "status: completed"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().any(|l| l == format!("task_id: '{id}'")),
        "{}",
        out.stdout
    );
    // The table is for people: aligned columns with the id and state.
    let out = run(ferry(&c, &cfg, &["task", "list"])).await;
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_default();
    assert!(
        row.contains("completed") && row.contains("node-1"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn login_stores_a_private_token_and_logout_revokes_it() {
    let c = TestCluster::with_host().await;
    let cfg = config_in(&c);
    let mut cmd = ferry(&c, &cfg, &["login", "-u", "admin", "--password-stdin"]);
    cmd.env_remove("FERRY_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{}\n", c.opts.admin_password).as_bytes())
        .await
        .expect("password");
    drop(stdin);
    let out = child.wait_with_output().await.expect("login");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&cfg)
        .expect("config written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&cfg).expect("config");
    assert!(
        text.contains("token = ") && text.contains(&c.url()),
        "{text}"
    );

    let signed_in = |args: &'static [&'static str]| {
        let mut cmd = ferry(&c, &cfg, args);
        cmd.env_remove("FERRY_TOKEN");
        run(cmd)
    };
    let me = signed_in(&["whoami"]).await;
    assert_eq!(me.code, 0, "{}", me.stderr);
    assert!(me.stdout.starts_with("admin (admin)"), "{}", me.stdout);
    let (_, tokens) = c.get_json("/api/auth/tokens").await;
    assert!(tokens.to_string().contains("ferry-cli@"), "{tokens}");

    let out = signed_in(&["logout"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (_, tokens) = c.get_json("/api/auth/tokens").await;
    assert!(
        !tokens.to_string().contains("ferry-cli@"),
        "revoked on the host: {tokens}"
    );
    // Signed out: a command that needs an account says so, with exit code 4.
    let out = signed_in(&["task", "list"]).await;
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("ferry login"), "{}", out.stderr);
}

#[tokio::test]
async fn exit_codes_say_what_kind_of_failure_it_was() {
    let c = TestCluster::with_host().await;
    let cfg = config_in(&c);
    let missing = run(ferry(&c, &cfg, &["task", "status", "123456"])).await;
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("Task not found"),
        "{}",
        missing.stderr
    );
    let usage = run(ferry(&c, &cfg, &["task", "status", "not-an-id"])).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let mut bad_token = ferry(&c, &cfg, &["task", "list"]);
    bad_token.env("FERRY_TOKEN", "not-a-token");
    let out = run(bad_token).await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    let mut nowhere = ferry(&c, &cfg, &["node", "list"]);
    let url = format!("http://127.0.0.1:{}", free_port());
    nowhere.env("FERRY_HOST", &url);
    let out = run(nowhere).await;
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("cannot reach ferry-host at {url}: is it running?")),
        "{}",
        out.stderr
    );
}

/// A task that runs until killed, and is running.
async fn sleeper(c: &TestCluster, command: &str) -> String {
    let id = c.submit(json!({ "command": command })).await.remove(0);
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;
    id
}

#[tokio::test]
async fn cp_round_trips_a_binary_file() {
    let c = TestCluster::one_node(false).await;
    let cfg = config_in(&c);
    let id = sleeper(&c, "sleep 600").await;
    let original: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let local = c.dir.path().join("blob.bin");
    std::fs::write(&local, &original).expect("write");
    let up = run(ferry(
        &c,
        &cfg,
        &[
            "cp",
            local.to_str().unwrap_or_default(),
            &format!("{id}:/tmp/in/blob.bin"),
        ],
    ))
    .await;
    assert_eq!(up.code, 0, "{}", up.stderr);
    let back = c.dir.path().join("back.bin");
    let down = run(ferry(
        &c,
        &cfg,
        &[
            "cp",
            &format!("{id}:/tmp/in/blob.bin"),
            back.to_str().unwrap_or_default(),
        ],
    ))
    .await;
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert_eq!(std::fs::read(&back).expect("copied back"), original);
    let ls = run(ferry(&c, &cfg, &["ls", &format!("{id}:/tmp/in")])).await;
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.contains("200000") && l.ends_with("blob.bin")),
        "{}",
        ls.stdout
    );
    let missing = run(ferry(
        &c,
        &cfg,
        &[
            "cp",
            &format!("{id}:/tmp/nope"),
            back.to_str().unwrap_or_default(),
        ],
    ))
    .await;
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    c.post_json(&format!("/api/kill/{id}"), &json!({})).await;
}

#[tokio::test]
async fn forward_serves_a_container_port_on_a_local_port() {
    let c = TestCluster::one_node(false).await;
    let cfg = config_in(&c);
    // httpd on the container's own loopback: reachable only through the forward.
    let id = sleeper(
        &c,
        "mkdir -p /www && echo hello-through-ferry > /www/index.html && httpd -f -p 127.0.0.1:8080 -h /www",
    )
    .await;
    let port = free_port();
    let local = format!("127.0.0.1:{port}");
    let mut fwd = ferry(&c, &cfg, &["forward", &id, "8080", "--local", &local])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forward");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                &format!("http://{local}/index.html"),
            ])
            .output()
            .await
            .expect("curl runs");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "curl never got through: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(body, "hello-through-ferry\n");
    // Several connections over the one socket, at once.
    let mut fetches = Vec::new();
    for _ in 0..5 {
        fetches.push(
            tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    &format!("http://{local}/index.html"),
                ])
                .output(),
        );
    }
    for out in futures_util::future::join_all(fetches).await {
        let out = out.expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello-through-ferry\n"
        );
    }
    let _ = fwd.start_kill();
    c.post_json(&format!("/api/kill/{id}"), &json!({})).await;
}

#[tokio::test]
async fn docs_cli_md_is_what_the_binary_prints() {
    let out = tokio::process::Command::new(bin("ferry"))
        .arg("docs")
        .output()
        .await
        .expect("ferry docs");
    let printed = String::from_utf8_lossy(&out.stdout);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        printed == committed,
        "docs/cli.md is stale: run `target/debug/ferry docs > docs/cli.md`"
    );
}

/// Sets a pty's window size (on its master: the kernel then signals the terminal's
/// foreground process group with SIGWINCH, as a terminal emulator's resize does).
fn set_size(fd: &std::os::fd::OwnedFd, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let ws = libc_winsize(rows, cols);
    // SAFETY: TIOCSWINSZ reads one winsize from the struct we pass.
    let rc = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::TIOCSWINSZ, &ws) };
    assert_eq!(rc, 0, "TIOCSWINSZ");
}

fn libc_winsize(rows: u16, cols: u16) -> nix::libc::winsize {
    nix::libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Reads the pty's output into `seen` until `want` shows up after byte `from`, for at most
/// `limit`; whether it did.
async fn read_for(
    master: &mut tokio::fs::File,
    seen: &mut String,
    from: usize,
    want: &str,
    limit: Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while !seen[from.min(seen.len())..].contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, master.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(_) => panic!("the terminal closed before {want:?} appeared: {seen:?}"),
            Err(_) => return false,
        }
    }
    true
}

async fn read_until(master: &mut tokio::fs::File, seen: &mut String, want: &str) {
    let from = seen.len();
    if !read_for(master, seen, from, want, Duration::from_secs(30)).await {
        panic!("{want:?} never appeared: {seen:?}");
    }
}

#[tokio::test]
async fn connect_in_a_real_pty_runs_commands_follows_resizes_and_restores_the_terminal() {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let c = TestCluster::one_node(false).await;
    let cfg = config_in(&c);
    let id = sleeper(&c, "sleep 600").await;
    let pty = nix::pty::openpty(Some(&libc_winsize(30, 100)), None).expect("openpty");
    let before = tcgetattr(&pty.slave).expect("termios");
    assert!(before
        .local_flags
        .contains(LocalFlags::ECHO | LocalFlags::ICANON));
    let slave_fd = pty.slave.as_raw_fd();
    let mut cmd = std::process::Command::new(bin("ferry"));
    cmd.args(["connect", &id])
        .env("FERRY_HOST", c.url())
        .env("FERRY_CONFIG", &cfg)
        .env("FERRY_TOKEN", c.token.clone().unwrap_or_default())
        .stdin(pty.slave.try_clone().expect("dup"))
        .stdout(pty.slave.try_clone().expect("dup"))
        .stderr(pty.slave.try_clone().expect("dup"));
    // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
    // controlling terminal is the pty, as a terminal emulator starts a shell.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::setsid() < 0 || nix::libc::ioctl(slave_fd, nix::libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn ferry connect");
    let mut master =
        tokio::fs::File::from_std(std::fs::File::from(pty.master.try_clone().expect("dup")));
    let mut seen = String::new();
    // Raw mode is on while connected: the local terminal no longer echoes by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = tcgetattr(&pty.slave).expect("termios");
        if !now.local_flags.contains(LocalFlags::ECHO) {
            break;
        }
        assert!(Instant::now() < deadline, "raw mode never set");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    master
        .write_all(b"echo sum-$((6*7))\r")
        .await
        .expect("type");
    read_until(&mut master, &mut seen, "sum-42").await;
    master.write_all(b"stty size\r").await.expect("type");
    read_until(&mut master, &mut seen, "30 100").await;
    set_size(&pty.master, 40, 120);
    // The resize reaches the shell's terminal in the container.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mark = seen.len();
        master.write_all(b"stty size\r").await.expect("type");
        if read_for(
            &mut master,
            &mut seen,
            mark,
            "40 120",
            Duration::from_secs(1),
        )
        .await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resize never arrived: {seen:?}"
        );
    }
    master.write_all(b"exit\r").await.expect("type");
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("connect exits when the shell does")
    .expect("join")
    .expect("wait");
    assert!(status.success(), "{status:?}: {seen:?}");
    let after = tcgetattr(&pty.slave).expect("termios");
    assert!(
        after
            .local_flags
            .contains(LocalFlags::ECHO | LocalFlags::ICANON),
        "the terminal is left in raw mode"
    );
    assert_eq!(after.local_flags, before.local_flags);
    c.post_json(&format!("/api/kill/{id}"), &json!({})).await;
}

#[tokio::test]
async fn ssh_reaches_a_vps_through_the_relay_with_ferry_as_proxy_command() {
    let c = TestCluster::one_node(false).await;
    let cfg = config_in(&c);
    let (key, public) = ferry_e2e::ssh_keygen("cli");
    let (status, vps) = c
        .post_json(
            "/api/vps/create",
            &json!({"ssh_key_mode": "upload", "ssh_public_key": public, "registry_image": "ferry-test/sshd:latest"}),
        )
        .await;
    assert_eq!(status, 200, "{vps}");
    let id = vps["task_id"].as_str().unwrap_or_default().to_string();
    let relay = format!("127.0.0.1:{}", c.relay_port);
    let known = c.dir.path().join("known_hosts");
    let known_opt = format!("UserKnownHostsFile={}", known.display());
    let key_s = key.display().to_string();
    let args = [
        "ssh",
        "--relay",
        &relay,
        "-i",
        &key_s,
        "--ssh-option",
        &known_opt,
        "--ssh-option",
        "BatchMode=yes",
        &id,
        "--",
        "echo",
        "inside-$((40+2))",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = run(ferry(&c, &cfg, &args)).await;
        // sshd may still be starting in a VPS that reports running.
        if out.code == 0 || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "inside-42\n"),
        "{}",
        out.stderr
    );
    // The VPS's host key was recorded under its own alias, not the relay's address.
    let found = std::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("ferry-vps-{id}"))
        .arg("-f")
        .arg(&known)
        .output()
        .expect("ssh-keygen -F");
    assert!(
        found.status.success() && !found.stdout.is_empty(),
        "{found:?}"
    );
    // An unknown VPS: the relay's refusal, as exit code 3 from the proxy and 255 from ssh.
    let out = run(ferry(
        &c,
        &cfg,
        &["ssh", "--proxy", "--relay", &relay, "999"],
    ))
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("VPS 999 not found"), "{}", out.stderr);
    c.post_json(&format!("/api/vps/stop/{id}"), &json!({}))
        .await;
}

#[tokio::test]
async fn task_list_watch_prints_each_change_as_it_happens() {
    let c = TestCluster::one_node(false).await;
    let cfg = config_in(&c);
    let mut child = ferry(&c, &cfg, &["task", "list", "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // The (empty) table's header comes first; the stream is open once it is printed.
    let header = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the table")
        .expect("read")
        .unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("STATUS"),
        "{header}"
    );
    let id = c.submit(json!({"command": "echo watched"})).await.remove(0);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen
        .iter()
        .any(|l: &String| l.contains(&id) && l.contains("running -> completed"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(l))) => seen.push(l),
            other => panic!("no completion line for {id}: {other:?} after {seen:#?}"),
        }
    }
    // Its whole life, in order.
    let at = |step: &str| {
        seen.iter()
            .position(|l| l.contains(&id) && l.contains(step))
            .unwrap_or_else(|| panic!("no {step:?} line: {seen:#?}"))
    };
    assert!(at("task.submitted") < at("-> assigning"), "{seen:#?}");
    assert!(at("-> assigning") < at("-> running"), "{seen:#?}");
    assert!(at("-> running") < at("-> completed"), "{seen:#?}");
    let _ = child.start_kill();
}
