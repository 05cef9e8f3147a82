//! Harness for end-to-end tests: starts the real `ferry-host` and `ferry-runner` binaries
//! (from `target/debug`, or `FERRY_BIN_DIR`) on free loopback ports with their own data dirs,
//! talks to them over HTTP, and looks at the real Docker engine to check what happened.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TEST_IMAGE: &str = "ferry-test/busybox:latest";

/// States a task does not leave on its own (`lost` included: the tests wait for it too).
pub const ENDED: &[&str] = &[
    "completed",
    "failed",
    "killed",
    "killed_oom",
    "lost",
    "stopped",
    "timed_out",
];

pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("FERRY_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A daemon process, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    pub name: String,
    binary: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    starts: usize,
}

impl Daemon {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Stops the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Every start's log, oldest first.
    pub fn log_text(&self) -> String {
        (0..=self.starts)
            .map(|i| std::fs::read_to_string(self.log_path(i)).unwrap_or_default())
            .collect()
    }

    fn log_path(&self, start: usize) -> PathBuf {
        if start == 0 {
            self.log.clone()
        } else {
            self.log.with_extension(format!("{start}.log"))
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the same process again (same flags, port and data dir), after a kill.
    pub fn restart(&mut self) {
        self.kill();
        self.starts += 1;
        let log = self.log_path(self.starts);
        let env: Vec<(&str, String)> = self.env.iter().map(|(k, v)| (*k, v.clone())).collect();
        self.child = Some(spawn(&self.binary, &self.args, &env, &log));
    }

    fn start(
        binary: &str,
        args: Vec<String>,
        env: Vec<(&'static str, String)>,
        port: u16,
        log: PathBuf,
        name: &str,
    ) -> Daemon {
        let env_ref: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
        let child = spawn(binary, &args, &env_ref, &log);
        Daemon {
            child: Some(child),
            port,
            log,
            name: name.into(),
            binary: binary.into(),
            args,
            env,
            starts: 0,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(binary: &str, args: &[String], env: &[(&str, String)], log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("create log");
    let err = out.try_clone().expect("clone log");
    let mut cmd = Command::new(bin(binary));
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    cmd.env_remove("FERRY_CONFIG")
        .env("FERRY_LOG", "info,ferry_host=debug,ferry_runner=debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn daemon")
}

/// Options of a test cluster.
#[derive(Clone)]
pub struct Opts {
    pub secret: String,
    pub admin_password: String,
    pub node_timeout: &'static str,
    pub heartbeat: &'static str,
    /// More flags for the host (e.g. `--trusted-origins`).
    pub host_args: Vec<String>,
    /// The URL runners reach the host at, when not the user port (`--runner-listen`).
    pub runner_host_url: Option<String>,
    /// More environment for the host (e.g. `DOCKER_HOST`).
    pub host_env: Vec<(&'static str, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            secret: format!("test-secret-{:0>32}", std::process::id()),
            admin_password: "admin-test-password".into(),
            node_timeout: "5s",
            heartbeat: "500ms",
            host_args: Vec::new(),
            runner_host_url: None,
            host_env: Vec::new(),
        }
    }
}

/// A host (and runners) with their own temporary directory.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub opts: Opts,
    pub host_port: u16,
    /// The host's SSH relay port (each cluster its own, so tests run side by side).
    pub relay_port: u16,
    pub host: Option<Daemon>,
    pub runners: Vec<Daemon>,
    pub http: reqwest::Client,
    /// The admin's API token, sent with every helper request.
    pub token: Option<String>,
}

impl TestCluster {
    /// A cluster whose host is not started yet (see [`TestCluster::start_host`]).
    pub fn new(opts: Opts) -> TestCluster {
        TestCluster {
            dir: tempfile::tempdir().expect("tempdir"),
            opts,
            host_port: free_port(),
            relay_port: free_port(),
            host: None,
            runners: Vec::new(),
            token: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// A running host plus one runner `node-1` that has registered.
    /// A host alone, default options.
    pub async fn with_host() -> TestCluster {
        let mut c = TestCluster::new(Opts::default());
        c.start_host().await;
        c
    }

    pub async fn with_runner(extra_runner_args: &[&str]) -> TestCluster {
        let mut c = TestCluster::new(Opts::default());
        c.start_host().await;
        c.start_runner("node-1", extra_runner_args);
        c.wait_node_online("node-1").await;
        c
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.host_port)
    }

    pub fn host_mut(&mut self) -> &mut Daemon {
        self.host.as_mut().expect("host started")
    }

    /// SIGKILLs the host and starts it again on the same port and data dir.
    pub async fn crash_and_restart_host(&mut self) {
        self.host_mut().restart();
        self.wait_ready(&self.url()).await;
    }

    /// Lines of `<file>` in the runner's per-task scratch dirs,
    /// `<runner data>/local_temp/<task id>/<file>` (each task's `/local_temp`), in task-id
    /// order. A task's dir is deleted once the runner forgets the task (after its final report
    /// is acknowledged), so only tasks the runner still holds are seen.
    pub fn local_temp_lines(&self, runner: &str, file: &str) -> Vec<String> {
        let root = self
            .dir
            .path()
            .join(format!("runner-{runner}"))
            .join("local_temp");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        dirs.sort();
        dirs.iter()
            .flat_map(|d| {
                std::fs::read_to_string(d.join(file))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A runner-facing call to the host, with the cluster secret and the credential of the
    /// first runner (`node-1` in most tests), when it has one.
    pub async fn runner_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let credential = self
            .runners
            .first()
            .and_then(|r| self.runner_credential(&r.name));
        self.runner_post_as(path, body, credential.as_deref()).await
    }

    /// A runner-facing call with the cluster secret and, if given, a runner credential.
    pub async fn runner_post_as(
        &self,
        path: &str,
        body: &Value,
        credential: Option<&str>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.url()))
            .bearer_auth(&self.opts.secret)
            .json(body);
        if let Some(c) = credential {
            rb = rb.header("x-ferry-runner-credential", c);
        }
        let r = rb.send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The credential the host issued to runner `name` (from its data dir).
    pub fn runner_credential(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("runner-{name}"))
                .join("runner-credential"),
        )
        .ok()
        .map(|s| s.trim().to_string())
    }

    pub async fn start_host(&mut self) {
        let data = self.dir.path().join("host");
        let log = self.dir.path().join("host.log");
        let mut args = vec![
            "--listen".into(),
            format!("127.0.0.1:{}", self.host_port),
            "--data-dir".into(),
            data.display().to_string(),
            "--node-timeout".into(),
            self.opts.node_timeout.into(),
        ];
        if !self
            .opts
            .host_args
            .iter()
            .any(|a| a == "--ssh-relay-listen")
        {
            args.push("--ssh-relay-listen".into());
            args.push(format!("127.0.0.1:{}", self.relay_port));
        }
        args.extend(self.opts.host_args.iter().cloned());
        let mut env = vec![
            ("FERRY_CLUSTER_SECRET", self.opts.secret.clone()),
            ("FERRY_ADMIN_PASSWORD", self.opts.admin_password.clone()),
        ];
        env.extend(self.opts.host_env.iter().cloned());
        self.host = Some(Daemon::start(
            "ferry-host",
            args,
            env,
            self.host_port,
            log,
            "host",
        ));
        self.wait_ready(&self.url()).await;
        if self.token.is_none() && self.auth_enabled() {
            let password = self.opts.admin_password.clone();
            self.token = Some(self.login_token("admin", &password).await);
        }
    }

    /// Whether the host was told `--auth-enabled false`.
    pub fn auth_enabled(&self) -> bool {
        !self
            .opts
            .host_args
            .windows(2)
            .any(|w| w[0] == "--auth-enabled" && w[1] == "false")
    }

    pub fn start_runner(&mut self, name: &str, extra: &[&str]) -> usize {
        self.start_runner_with_secret(name, extra, &self.opts.secret.clone())
    }

    pub fn start_runner_with_secret(&mut self, name: &str, extra: &[&str], secret: &str) -> usize {
        let port = free_port();
        let data = self.dir.path().join(format!("runner-{name}"));
        let log = self
            .dir
            .path()
            .join(format!("runner-{name}-{}.log", self.runners.len()));
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--host-url".into(),
            self.opts
                .runner_host_url
                .clone()
                .unwrap_or_else(|| self.url()),
            "--name".into(),
            name.into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--heartbeat-interval".into(),
            self.opts.heartbeat.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let env = vec![("FERRY_CLUSTER_SECRET", secret.to_string())];
        self.runners
            .push(Daemon::start("ferry-runner", args, env, port, log, name));
        self.runners.len() - 1
    }

    pub async fn wait_ready(&self, base: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{base}/health")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{base} did not come up; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn nodes(&self) -> Vec<Value> {
        let v: Value = self.get_json("/api/nodes").await.1;
        v.as_array().cloned().unwrap_or_default()
    }

    pub async fn wait_node_online(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let online = self
                .nodes()
                .await
                .iter()
                .any(|n| n["hostname"] == name && n["status"] == "online");
            if online {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {name} never came online; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for d in self.host.iter().chain(self.runners.iter()) {
            let text = d.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            s.push_str(&format!(
                "--- {} ---\n{}\n",
                d.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        s
    }

    /// Creates an account of `role` through an admin invitation; returns (user id, API token).
    pub async fn user_account(&self, name: &str, role: &str) -> (i64, String) {
        let (status, inv) = self
            .post_json("/api/auth/invitations", &json!({"role": role}))
            .await;
        assert_eq!(status, 200, "{inv}");
        let code = inv["token"].as_str().expect("invitation code");
        let r = self
            .http
            .post(format!("{}/api/auth/register", self.url()))
            .json(&json!({"username": name, "password": "password-123", "invitation": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "register {name}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["user"]["role"], role);
        (
            v["user"]["id"].as_i64().unwrap(),
            self.login_token(name, "password-123").await,
        )
    }

    /// Signs in and creates an API token (through the typed client); panics on failure.
    pub async fn login_token(&self, username: &str, password: &str) -> String {
        let anon = ferry_client::Client::new(self.url()).expect("client");
        let signed_in = anon
            .login(username, password)
            .await
            .unwrap_or_else(|e| panic!("login as {username}: {e}"));
        anon.with_session(signed_in.session)
            .create_token("e2e")
            .await
            .unwrap_or_else(|e| panic!("create token for {username}: {e}"))
            .token
    }

    /// The typed client of the host, carrying the admin token when there is one.
    pub fn client(&self) -> ferry_client::Client {
        let c = ferry_client::Client::new(self.url()).expect("client");
        match &self.token {
            Some(t) => c.with_token(t.clone()),
            None => c,
        }
    }

    /// A request to the host carrying the admin token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.url()));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("GET");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn delete_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("DELETE");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Submits and returns the task ids; panics unless the answer is 202.
    pub async fn submit(&self, body: Value) -> Vec<String> {
        let (status, v) = self.post_json("/api/submit", &body).await;
        assert_eq!(status, 202, "submit {body} -> {v}\n{}", self.logs());
        v["task_ids"]
            .as_array()
            .expect("task_ids")
            .iter()
            .map(|i| i.as_str().expect("string id").to_string())
            .collect()
    }

    pub async fn task(&self, id: &str) -> Value {
        let (status, v) = self.get_json(&format!("/api/status/{id}")).await;
        assert_eq!(status, 200, "status {id} -> {v}");
        v
    }

    /// Waits until the task's status is one of `wanted`; returns the task.
    pub async fn wait_status(&self, id: &str, wanted: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.task(id).await;
            if wanted.iter().any(|w| t["status"] == *w) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never reached {wanted:?}; last: {t}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `check` holds for the task; returns the task.
    pub async fn wait_until(
        &self,
        id: &str,
        check: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.task(id).await;
            if check(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never met the condition; last: {t}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_final(&self, id: &str) -> Value {
        self.wait_status(id, ENDED, Duration::from_secs(60)).await
    }

    pub async fn task_count(&self) -> usize {
        let (_, v) = self.get_json("/api/tasks?task_type=all&limit=10000").await;
        v.as_array().map(|a| a.len()).unwrap_or(0)
    }
}

impl Drop for TestCluster {
    /// Stops the daemons, then removes whatever containers (and VPS snapshot images) this
    /// cluster's runners left (a test that failed, or a runner killed before it cleaned up), so
    /// runs leave nothing behind.
    fn drop(&mut self) {
        for r in self.runners.iter_mut() {
            r.kill();
        }
        for r in &self.runners {
            let id_file = self
                .dir
                .path()
                .join(format!("runner-{}", r.name))
                .join("runner-id");
            let Ok(id) = std::fs::read_to_string(id_file) else {
                continue;
            };
            let ids = docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=ferry.runner_id={}", id.trim()),
            ]);
            let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                docker(&args);
            }
            // VPS snapshots: commits carry the runner's labels.
            let images = docker(&[
                "images",
                "-q",
                "--filter",
                &format!("label=ferry.runner_id={}", id.trim()),
            ]);
            let mut images: Vec<&str> = images.lines().filter(|l| !l.is_empty()).collect();
            images.sort_unstable();
            images.dedup();
            if !images.is_empty() {
                let mut args = vec!["rmi", "-f"];
                args.extend(images);
                docker(&args);
            }
        }
    }
}

/// Lines of `<file>` in every user's `/shared` of runners started with `--shared-dir <shared>`
/// (`<shared>/shared_data/<user>/<file>`): a file that outlives the tasks that append to it.
pub fn shared_lines(shared: &Path, file: &str) -> Vec<String> {
    let mut users: Vec<PathBuf> = std::fs::read_dir(shared.join("shared_data"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    users.sort();
    users
        .iter()
        .flat_map(|u| {
            std::fs::read_to_string(u.join(file))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Output of `docker <args>` (the tests observe the engine directly).
/// The `name=value` of the session cookie a sign-in answer sets, ready for a `Cookie` header.
pub fn session_cookie(r: &reqwest::Response) -> String {
    r.headers()["set-cookie"]
        .to_str()
        .expect("a text cookie")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Containers (any state) labelled with this task id.
pub fn containers_of(task_id: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=ferry.task_id={task_id}"),
    ])
    .lines()
    .map(str::to_string)
    .filter(|l| !l.is_empty())
    .collect()
}

pub fn container_state(name: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Status}}", name])
}

pub fn echo_task(text: &str) -> Value {
    json!({"command": "echo", "arguments": [text]})
}

/// The VPS test image with an OpenSSH server (built by `scripts/build-vps-test-image.sh`).
pub const SSHD_IMAGE: &str = "ferry-test/sshd:latest";

/// A local port that reaches VPS `task_id`'s sshd through the host's SSH relay: each
/// connection to it sends `REQUEST_TUNNEL <task_id>`, checks the `SUCCESS` line and splices.
/// What `ssh -p <port> root@127.0.0.1` needs (the original CLI does the same in-process).
pub async fn relay_forward(relay_port: u16, task_id: &str) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind forwarder");
    let port = listener.local_addr().expect("addr").port();
    let id = task_id.to_string();
    tokio::spawn(async move {
        while let Ok((mut local, _)) = listener.accept().await {
            let id = id.clone();
            tokio::spawn(async move {
                let Ok(mut relay) = tokio::net::TcpStream::connect(("127.0.0.1", relay_port)).await
                else {
                    return;
                };
                if relay
                    .write_all(format!("REQUEST_TUNNEL {id}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut reader = tokio::io::BufReader::new(relay);
                let mut line = String::new();
                if reader.read_line(&mut line).await.is_err() || line != "SUCCESS\n" {
                    return;
                }
                let mut relay = reader.into_inner();
                let _ = tokio::io::copy_bidirectional(&mut local, &mut relay).await;
            });
        }
    });
    port
}

/// An OpenSSH ed25519 key pair made with `ssh-keygen` in a directory of its own (kept for the
/// process's life): (private key file, public key line).
pub fn ssh_keygen(name: &str) -> (PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let path = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen (package openssh-client)")
        .success();
    assert!(ok, "ssh-keygen failed");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("public key");
    (path, public.trim().to_string())
}

/// The first line the relay answers to `line`.
pub async fn relay_answer(relay_port: u16, line: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut relay = tokio::net::TcpStream::connect(("127.0.0.1", relay_port))
        .await
        .expect("relay");
    relay.write_all(line.as_bytes()).await.expect("write");
    let mut reader = tokio::io::BufReader::new(relay);
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), reader.read_line(&mut answer)).await;
    answer
}

/// Runs `command` in a VPS over SSH (`ssh -p port root@127.0.0.1`, no agent, no prompts),
/// with `key` as the identity (none: no key at all). Exit status and stdout.
pub async fn ssh_run(port: u16, key: Option<&Path>, command: &str) -> (i32, String) {
    let (code, out, _) = ssh_output(ssh_command(port, key, command)).await;
    (code, out)
}

fn ssh_command(port: u16, key: Option<&Path>, command: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "IdentityAgent=none",
        "-o",
        "LogLevel=ERROR",
        "-p",
        &port.to_string(),
    ]);
    match key {
        Some(k) => {
            cmd.arg("-o").arg("IdentitiesOnly=yes").arg("-i").arg(k);
        }
        None => {
            cmd.args(["-o", "PubkeyAuthentication=no"]);
        }
    }
    cmd.arg("root@127.0.0.1").arg(command);
    cmd
}

async fn ssh_output(mut cmd: tokio::process::Command) -> (i32, String, String) {
    let out = cmd.output().await.expect("ssh client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// `ssh_run` retried until it exits 0 (sshd may take a moment after the start, longer on a
/// loaded machine), at most 45 s; the failure names ssh's own last complaint.
pub async fn ssh_until_ok(port: u16, key: Option<&Path>, command: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (code, out) = ssh_run(port, key, command).await;
        if code == 0 {
            return out;
        }
        if Instant::now() >= deadline {
            let mut verbose = ssh_command(port, key, command);
            verbose.arg("-v");
            let (_, _, err) = ssh_output(verbose).await;
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            panic!(
                "ssh kept failing ({code}): {out}\nssh -v, last lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A WebSocket to the host.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl TestCluster {
    /// Opens a WebSocket on the host's `path` with these extra headers (e.g. `authorization`,
    /// `cookie`, `origin`); on refusal, the HTTP status of the refused upgrade.
    pub async fn ws_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://127.0.0.1:{}{path}", self.host_port);
        let mut req = url.into_client_request().expect("ws request");
        for (k, v) in headers {
            req.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                v.parse().expect("header value"),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("websocket to {path}: {e}"),
        }
    }

    /// Opens a WebSocket as the admin (its API token).
    pub async fn ws(&self, path: &str) -> Ws {
        let auth = format!("Bearer {}", self.token.clone().unwrap_or_default());
        self.ws_with(path, &[("authorization", &auth)])
            .await
            .unwrap_or_else(|status| panic!("websocket {path} refused: {status}"))
    }
}

impl TestCluster {
    /// A host and one runner, `node-1`, online; with `shared`, both use the directory
    /// `<dir>/shared` as their shared dir.
    pub async fn one_node(shared: bool) -> TestCluster {
        let mut c = TestCluster::new(Opts::default());
        let dir = c.dir.path().join("shared");
        let mut runner_args: Vec<String> = Vec::new();
        if shared {
            std::fs::create_dir_all(&dir).expect("shared dir");
            c.opts.host_args = vec!["--shared-dir".into(), dir.display().to_string()];
            runner_args = vec!["--shared-dir".into(), dir.display().to_string()];
        }
        c.start_host().await;
        let args: Vec<&str> = runner_args.iter().map(String::as_str).collect();
        c.start_runner("node-1", &args);
        c.wait_node_online("node-1").await;
        c
    }
}

/// Percent-encodes a query value (slashes kept, as paths read better).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `v` as a text frame.
pub async fn send_json(ws: &mut Ws, v: serde_json::Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        v.to_string().into(),
    ))
    .await
    .expect("send");
}

/// Reads a terminal's output frames until their text contains `needle`; all output read.
pub async fn read_output_until(ws: &mut Ws, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen.contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in {seen:?}");
        let Some(text) = ws_text(ws).await else {
            panic!("socket closed before {needle:?}; got {seen:?}")
        };
        let v: serde_json::Value = serde_json::from_str(&text).expect("a JSON frame");
        assert_eq!(v["type"], "output", "{v}");
        seen.push_str(v["data"].as_str().unwrap_or_default());
    }
    seen
}

/// The next text frame (pings and pongs skipped), or `None` when the socket closed; panics
/// after 15 s.
pub async fn ws_text(ws: &mut Ws) -> Option<String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Duration::from_secs(15);
    loop {
        match tokio::time::timeout(deadline, ws.next()).await {
            Err(_) => panic!("no frame within 15 s"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.as_str().to_string()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}
