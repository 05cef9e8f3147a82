//! Environments on the host: environment containers made from a local image on the host's
//! own Docker engine, their lifecycle and terminal, bad names, and a host without Docker.

use ferry_e2e::*;
use serde_json::{json, Value};

/// Removes the environment's container when the test ends, however it ends.
struct EnvGuard(String);

impl Drop for EnvGuard {
    fn drop(&mut self) {
        docker(&["rm", "-f", &format!("kohakuriver-env-{}", self.0)]);
        docker(&["rmi", "-f", &format!("kohakuriver/{}:base", self.0)]);
    }
}

/// Waits until the environment's packaging job is done (a failure fails the test); its view.
async fn packaged(c: &TestCluster, env: &str) -> Value {
    let view = packaging_ended(c, env).await;
    assert_eq!(
        view["packaging"]["state"], "done",
        "packaging failed: {view}"
    );
    view
}

fn sha256_of(path: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn packaging_saves_a_checked_tarball_in_the_background_and_keeps_two_versions() {
    let c = TestCluster::with_host().await;
    let (env, _guard) = env_name("pack");
    create_env(&c, &env).await;
    // Prepared through the host's terminal, as an operator would.
    let mut ws = c
        .ws(&format!("/ws/docker/host/containers/{env}/terminal"))
        .await;
    send_json(&mut ws, json!({"type": "resize", "rows": 24, "cols": 80})).await;
    ws_text(&mut ws).await;
    send_json(
        &mut ws,
        json!({"type": "input", "data": "echo v1 > /root/marker && echo written\n"}),
    )
    .await;
    read_output_until(&mut ws, "written").await;
    drop(ws);

    let (status, v) = c
        .post_json(&format!("/api/docker/create_tar/{env}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["env_name"], env.as_str());
    let path = v["tarball_path"].as_str().unwrap_or_default().to_string();
    assert!(
        path.ends_with(".tar") && path.contains(&format!("/{env}-")),
        "{v}"
    );
    let view = packaged(&c, &env).await;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(size > 100_000, "{path}: {size} bytes");
    assert_eq!(view["packaging"]["bytes_written"], size, "{view}");
    assert_eq!(view["versions"][0]["tarball"], path.as_str());
    // The checksum beside it is the file's.
    let recorded = std::fs::read_to_string(format!("{path}.sha256")).unwrap_or_default();
    assert_eq!(
        recorded.split_whitespace().next(),
        Some(sha256_of(&path).as_str())
    );
    // The tarball holds the environment: an untagged image whose files include the marker.
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&path)
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(listing.contains("manifest.json"), "{listing}");
    // Running again, as it was.
    assert_eq!(
        container_state(&format!("kohakuriver-env-{env}")),
        "running"
    );
    let (_, list) = c.get_json("/api/docker/list").await;
    assert_eq!(list[&env]["latest_tarball"], path.as_str(), "{list}");

    // Packaging twice more keeps the newest two.
    for _ in 0..2 {
        let (status, v) = c
            .post_json(&format!("/api/docker/create_tar/{env}"), &json!({}))
            .await;
        assert_eq!(status, 202, "{v}");
        packaged(&c, &env).await;
    }
    let (_, list) = c.get_json("/api/docker/list").await;
    let versions = list[&env]["all_versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(versions.len(), 2, "{list}");
    assert!(
        !std::path::Path::new(&path).exists(),
        "the oldest was pruned"
    );
    assert!(versions[0]["timestamp"].as_i64() > versions[1]["timestamp"].as_i64());

    // Downloads: whole, a range, and by a runner with the cluster secret.
    let newest = versions[0]["tarball"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let on_disk = std::fs::read(&newest).expect("the newest tarball");
    let r = c
        .request(
            reqwest::Method::GET,
            &format!("/api/docker/container/{env}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.content_length(), Some(on_disk.len() as u64));
    let sum = r.headers()["x-ferry-sha256"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap_or_default()
        .contains("attachment"));
    let body = r.bytes().await.unwrap();
    assert!(body == on_disk, "the download is the file");
    assert_eq!(sum, sha256_of(&newest));
    let r = c
        .request(
            reqwest::Method::GET,
            &format!("/api/docker/container/{env}"),
        )
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert!(
        r.bytes().await.unwrap() == on_disk[1000..2000],
        "the range is that slice"
    );
    let runner_route = format!("{}/api/runner/environments/{env}", c.url());
    let http = reqwest::Client::new();
    let r = http
        .get(&runner_route)
        .bearer_auth(&c.opts.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.content_length(), Some(on_disk.len() as u64));
    let r = http.get(&runner_route).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "no secret, no tarball");
    let old = versions[1]["timestamp"].as_i64().unwrap_or_default();
    let r = c
        .request(
            reqwest::Method::GET,
            &format!("/api/docker/container/{env}?timestamp={old}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-ferry-timestamp"].to_str().ok(),
        Some(old.to_string().as_str())
    );

    let (status, v) = c.delete_json(&format!("/api/docker/container/{env}")).await;
    assert_eq!(status, 200, "{v}");
    let (_, list) = c.get_json("/api/docker/list").await;
    assert!(list.get(&env).is_none(), "{list}");
    let (status, _) = c.delete_json(&format!("/api/docker/container/{env}")).await;
    assert_eq!(status, 404);
    // Packaging what does not exist.
    let (status, v) = c
        .post_json("/api/docker/create_tar/no-such-env", &json!({}))
        .await;
    assert_eq!(status, 404, "{v}");
}

/// Waits until the environment's packaging job has ended, however it ended; its view then.
async fn packaging_ended(c: &TestCluster, env: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (status, view) = c.get_json(&format!("/api/docker/env/{env}")).await;
        assert_eq!(status, 200, "{view}");
        if matches!(view["packaging"]["state"].as_str(), Some("done" | "failed")) {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still packaging: {view}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Stops the host and starts it again with `args`.
async fn restart_host_with(c: &mut TestCluster, args: Vec<String>) {
    c.host_mut().terminate();
    c.host = None;
    c.opts.host_args = args;
    c.start_host().await;
}

#[tokio::test]
async fn a_store_at_its_cap_refuses_new_tarballs_and_one_outgrowing_it_is_stopped() {
    let mut c = TestCluster::with_host().await;
    let (env, _guard) = env_name("cap");
    create_env(&c, &env).await;
    let (status, v) = c
        .post_json(&format!("/api/docker/create_tar/{env}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    packaged(&c, &env).await;
    let (_, store) = c.get_json("/api/docker/store").await;
    let size = store["used_bytes"].as_u64().unwrap_or(0);
    assert!(size > 0, "{store}");

    // A store already at its cap refuses at once.
    restart_host_with(&mut c, vec!["--max-env-store".into(), size.to_string()]).await;
    let (status, v) = c
        .post_json(&format!("/api/docker/create_tar/{env}"), &json!({}))
        .await;
    assert_eq!(status, 507, "{v}");
    assert!(
        v["detail"].as_str().unwrap_or("").contains("max_env_store"),
        "{v}"
    );

    // Room for half a tarball: the packaging starts, is stopped when it outgrows the room,
    // and leaves nothing behind.
    let cap = size + size / 2;
    restart_host_with(&mut c, vec!["--max-env-store".into(), cap.to_string()]).await;
    let (status, v) = c
        .post_json(&format!("/api/docker/create_tar/{env}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    let view = packaging_ended(&c, &env).await;
    assert_eq!(view["packaging"]["state"], "failed", "{view}");
    let why = view["packaging"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("max_env_store"), "{view}");
    let (_, store) = c.get_json("/api/docker/store").await;
    assert_eq!(store["used_bytes"].as_u64(), Some(size), "{store}");
    assert_eq!(store["tarballs"], 1, "{store}");
    assert_eq!(store["limit_bytes"].as_u64(), Some(cap), "{store}");
    assert_eq!(store["packaging_bytes"], 0, "{store}");
    let dir = store["path"].as_str().unwrap_or_default();
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .expect("store dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no partial tarball left: {leftovers:?}"
    );
}

/// A name no other test (or run) uses.
fn env_name(what: &str) -> (String, EnvGuard) {
    let name = format!("t{}-{what}", std::process::id());
    (name.clone(), EnvGuard(name))
}

/// Creates environment `env` from the test image; the create's reply.
async fn create_env(c: &TestCluster, env: &str) -> Value {
    let (status, made) = c
        .post_json(
            "/api/docker/host/create",
            &json!({"image_name": TEST_IMAGE, "container_name": env}),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    made
}

fn listed(list: &Value, env: &str) -> Option<Value> {
    list.as_array()?
        .iter()
        .find(|c| c["env_name"] == env)
        .cloned()
}

#[tokio::test]
async fn an_environment_container_is_created_entered_stopped_started_and_deleted() {
    let c = TestCluster::with_host().await;
    let (env, _guard) = env_name("life");
    let made = create_env(&c, &env).await;
    assert_eq!(made["container_name"], format!("kohakuriver-env-{env}"));
    assert_eq!(made["env_name"], env.as_str());
    assert_eq!(made["status"], "running");
    assert_eq!(
        container_state(&format!("kohakuriver-env-{env}")),
        "running"
    );
    // Capped at a share of the host.
    let cpus = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.NanoCpus}}",
        &format!("kohakuriver-env-{env}"),
    ]);
    assert!(cpus.parse::<i64>().unwrap_or(0) > 0, "NanoCpus {cpus}");

    let (status, list) = c.get_json("/api/docker/host/containers").await;
    assert_eq!(status, 200, "{list}");
    let item = listed(&list, &env).unwrap_or_else(|| panic!("{env} not in {list}"));
    assert_eq!(item["status"], "running");
    assert_eq!(item["image"], TEST_IMAGE);
    assert_eq!(item["id"].as_str().map(str::len), Some(12), "{item}");

    // The same name again: 409, and nothing changes.
    let (status, again) = c
        .post_json(
            "/api/docker/host/create",
            &json!({"image_name": TEST_IMAGE, "container_name": env}),
        )
        .await;
    assert_eq!(status, 409, "{again}");

    // A terminal served by the host itself.
    let mut ws = c
        .ws(&format!("/ws/docker/host/containers/{env}/terminal"))
        .await;
    send_json(&mut ws, json!({"type": "resize", "rows": 30, "cols": 90})).await;
    let ready: Value = serde_json::from_str(&ws_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(ready, json!({"type": "output", "data": ""}));
    send_json(
        &mut ws,
        json!({"type": "input", "data": "echo env-$((6*7)); stty size\n"}),
    )
    .await;
    let seen = read_output_until(&mut ws, "30 90").await;
    assert!(seen.contains("env-42"), "{seen}");
    drop(ws);

    let (status, v) = c
        .post_json(&format!("/api/docker/host/stop/{env}"), &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["message"],
        format!("Environment '{env}' stopped successfully.")
    );
    assert_eq!(container_state(&format!("kohakuriver-env-{env}")), "exited");
    // A stopped environment has no terminal: an error frame, then close.
    let mut ws = c
        .ws(&format!("/ws/docker/host/containers/{env}/terminal"))
        .await;
    let frame: Value = serde_json::from_str(&ws_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(frame["type"], "error", "{frame}");
    assert!(
        frame["data"].as_str().unwrap_or("").contains("not running"),
        "{frame}"
    );
    assert_eq!(ws_text(&mut ws).await, None);

    let (status, v) = c
        .post_json(
            &format!("/api/docker/host/start/kohakuriver-env-{env}"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "the prefixed name works too: {v}");
    assert_eq!(
        container_state(&format!("kohakuriver-env-{env}")),
        "running"
    );

    let (status, v) = c
        .post_json(&format!("/api/docker/host/delete/{env}"), &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(container_state(&format!("kohakuriver-env-{env}")), "");
    let (_, list) = c.get_json("/api/docker/host/containers").await;
    assert!(listed(&list, &env).is_none(), "{list}");
    let (_, audit) = c.get_json("/api/audit?limit=50").await;
    assert!(audit.to_string().contains("env.create"), "{audit}");
}

#[tokio::test]
async fn bad_names_unknown_environments_and_missing_images_are_refused_with_the_reason() {
    let c = TestCluster::with_host().await;
    for bad in ["a/b", "..", "../etc", "x..y", "UPPER", ""] {
        let (status, v) = c
            .post_json(
                "/api/docker/host/create",
                &json!({"image_name": TEST_IMAGE, "container_name": bad}),
            )
            .await;
        assert_eq!(status, 422, "{bad:?}: {v}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap_or("")
                .contains("container_name"),
            "{v}"
        );
    }
    let (status, v) = c
        .post_json("/api/docker/host/start/no-such-env", &json!({}))
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["detail"], "Environment 'no-such-env' not found.");
    let (status, v) = c.post_json("/api/docker/host/stop/x..y", &json!({})).await;
    assert_eq!(status, 422, "{v}");
    let (env, _guard) = env_name("noimage");
    let (status, v) = c
        .post_json(
            "/api/docker/host/create",
            &json!({"image_name": "ferry-test/absent:none", "container_name": env}),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or("")
            .contains("ferry-test/absent:none"),
        "{v}"
    );
    assert_eq!(container_state(&format!("kohakuriver-env-{env}")), "");
    // Not a container of the host daemon outside the environments: a task's container is
    // never reached through these routes.
    let (status, _) = c
        .post_json("/api/docker/host/stop/kohakuriver-task-1", &json!({}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_host_without_docker_says_so_on_environment_routes_and_serves_the_rest() {
    let mut c = TestCluster::new(Opts {
        host_env: vec![("DOCKER_HOST", "unix:///nonexistent/docker.sock".into())],
        ..Default::default()
    });
    c.start_host().await;
    let (status, v) = c.get_json("/api/docker/host/containers").await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or("")
            .contains("Docker is not reachable on the host"),
        "{v}"
    );
    let (status, v) = c.get_json("/api/nodes").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = c.get_json("/api/tasks").await;
    assert_eq!(status, 200, "{v}");
    let mut ws = c.ws("/ws/docker/host/containers/dev/terminal").await;
    let frame: Value = serde_json::from_str(&ws_text(&mut ws).await.unwrap()).unwrap();
    assert_eq!(frame["type"], "error", "{frame}");
    assert!(
        frame["data"]
            .as_str()
            .unwrap_or("")
            .contains("Docker is not reachable"),
        "{frame}"
    );
}

#[tokio::test]
async fn files_in_an_environment_round_trip_and_never_leave_its_container() {
    let c = TestCluster::with_host().await;
    let (env, _guard) = env_name("files");
    create_env(&c, &env).await;
    let base = format!("/api/fs/container/{env}");
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&data)
    };
    let (status, v) = c
        .post_json(
            &format!("{base}/write"),
            &json!({"path": "/root/in/data.bin", "content": b64, "encoding": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    let (status, v) = c
        .get_json(&format!(
            "{base}/read?path=/root/in/data.bin&encoding=base64"
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"], b64.as_str(), "binary-safe");
    let (status, v) = c.get_json(&format!("{base}/list?path=/root/in")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["entries"][0]["name"], "data.bin", "{v}");
    assert_eq!(v["entries"][0]["size"], 70_000, "{v}");
    let (status, v) = c
        .post_json(
            &format!("{base}/rename"),
            &json!({"source": "/root/in/data.bin", "destination": "/root/in/moved.bin"}),
        )
        .await;
    assert_eq!((status, v["success"].clone()), (200, json!(true)), "{v}");
    let (status, v) = c
        .get_json(&format!("{base}/stat?path=/root/in/moved.bin"))
        .await;
    assert_eq!((status, v["type"].clone()), (200, json!("file")), "{v}");
    // The file is really in the container.
    assert_eq!(
        docker(&[
            "exec",
            &format!("kohakuriver-env-{env}"),
            "wc",
            "-c",
            "/root/in/moved.bin"
        ]),
        "70000 /root/in/moved.bin"
    );

    // A marker on the host machine, and links inside the container pointing out of it.
    let marker = format!("/tmp/ferry-env-marker-{}", std::process::id());
    std::fs::write(&marker, "host secret").unwrap();
    let name = format!("kohakuriver-env-{env}");
    docker(&["exec", &name, "ln", "-s", "/", "/root/up"]);
    docker(&["exec", &name, "ln", "-s", &marker, "/root/direct"]);
    for path in [
        format!("/../../../..{marker}"),
        format!("/root/up{marker}"),
        "/root/direct".to_string(),
        format!("/proc/self/root{marker}"),
    ] {
        let (status, v) = c
            .get_json(&format!("{base}/read?path={}", urlencode(&path)))
            .await;
        assert!(
            !v.to_string().contains("host secret"),
            "{path}: the host's file leaked: {v}"
        );
        assert_ne!(status, 200, "{path}: {v}");
    }
    let (status, v) = c
        .delete_json(&format!(
            "{base}/delete?path={}&recursive=true",
            urlencode("/root/up")
        ))
        .await;
    assert_eq!(status, 200, "a link is removed, never followed: {v}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "host secret",
        "untouched"
    );
    let _ = std::fs::remove_file(&marker);

    // Bad input and a stopped environment.
    let (status, v) = c
        .get_json(&format!("{base}/read?path=/x&encoding=latin1"))
        .await;
    assert_eq!(status, 422, "{v}");
    let (status, v) = c.get_json("/api/fs/container/no-such/list").await;
    assert_eq!(status, 404, "{v}");
    c.post_json(&format!("/api/docker/host/stop/{env}"), &json!({}))
        .await;
    let (status, v) = c.get_json(&format!("{base}/list")).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["detail"].as_str().unwrap_or("").contains("not running"),
        "{v}"
    );
}

#[tokio::test]
async fn a_container_made_before_the_naming_rule_is_adopted_with_its_files() {
    let c = TestCluster::with_host().await;
    let (env, _guard) = env_name("legacy");
    // The bare container, as an older host made it.
    struct Bare(String);
    impl Drop for Bare {
        fn drop(&mut self) {
            docker(&["rm", "-f", &self.0]);
        }
    }
    let _bare = Bare(env.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &env,
        TEST_IMAGE,
        "tail",
        "-f",
        "/dev/null",
    ]);
    docker(&["exec", &env, "sh", "-c", "echo kept > /root/old-work"]);
    // Not reachable by its bare name before it is adopted.
    let (status, _) = c.get_json(&format!("/api/fs/container/{env}/list")).await;
    assert_eq!(status, 404);
    let (status, v) = c
        .post_json(&format!("/api/docker/host/migrate/{env}"), &json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["new_name"], format!("kohakuriver-env-{env}"));
    assert_eq!(v["image"], format!("kohakuriver/{env}:base"));
    assert_eq!(container_state(&env), "", "the old container is gone");
    assert_eq!(
        docker(&[
            "exec",
            &format!("kohakuriver-env-{env}"),
            "cat",
            "/root/old-work"
        ]),
        "kept"
    );
    let (status, v) = c
        .post_json(&format!("/api/docker/host/migrate/{env}"), &json!({}))
        .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = c
        .post_json(
            &format!("/api/docker/host/migrate/kohakuriver-env-{env}"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
}

/// Writes `text` to /root/marker in the environment, packages it and waits until done.
async fn package_with_marker(c: &TestCluster, env: &str, text: &str) {
    let (status, v) = c
        .post_json(
            &format!("/api/fs/container/{env}/write"),
            &json!({"path": "/root/marker", "content": text}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = c
        .post_json(&format!("/api/docker/create_tar/{env}"), &json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    packaged(c, env).await;
    // Host and runner share this machine's engine: take away the image the packaging left,
    // so the runner must load the tarball itself.
    docker(&["rmi", "-f", &format!("kohakuriver/{env}:base")]);
}

/// Runs `cat /root/marker` in the environment; the final record and its output.
async fn marker_task(c: &TestCluster, env: &str) -> (Value, String) {
    let id = c
        .submit(json!({"command": "cat /root/marker", "container_name": env}))
        .await
        .remove(0);
    let t = c.wait_final(&id).await;
    let (_, out) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
    (t, out)
}

fn loads_in(c: &TestCluster) -> usize {
    c.logs().matches("environment loaded").count()
}

#[tokio::test]
async fn a_runner_without_a_shared_dir_fetches_checks_and_loads_the_newest_version_once() {
    let mut c = TestCluster::new(Opts {
        host_args: vec!["--env-keep".into(), "1".into()],
        ..Default::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let (env, _guard) = env_name("sync");
    create_env(&c, &env).await;
    package_with_marker(&c, &env, "version-one").await;
    let (t, out) = marker_task(&c, &env).await;
    assert_eq!(t["status"], "completed", "{t}\n{}", c.logs());
    assert_eq!(out.trim(), "version-one");
    assert_eq!(loads_in(&c), 1, "one load");

    // A new version: the next task sees it, and the old tarball is gone (env_keep 1).
    let (_, before) = c.get_json("/api/docker/list").await;
    let first = before[&env]["latest_tarball"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    package_with_marker(&c, &env, "version-two").await;
    assert!(!std::path::Path::new(&first).exists(), "{first} pruned");
    // Three tasks at once: one load between them.
    let ids: Vec<String> = futures_util::future::join_all(
        (0..3).map(|_| c.submit(json!({"command": "cat /root/marker", "container_name": env}))),
    )
    .await
    .into_iter()
    .map(|mut v| v.remove(0))
    .collect();
    for id in &ids {
        let t = c.wait_final(id).await;
        assert_eq!(t["status"], "completed", "{t}");
        let (_, out) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
        assert_eq!(out.trim(), "version-two");
    }
    assert_eq!(loads_in(&c), 2, "one more load for the three tasks");
}

#[tokio::test]
async fn a_damaged_tarball_fails_the_task_clearly_and_tags_nothing() {
    let c = TestCluster::with_runner(&[]).await;
    let (env, _guard) = env_name("cut");
    create_env(&c, &env).await;
    package_with_marker(&c, &env, "whole").await;
    let (_, list) = c.get_json("/api/docker/list").await;
    let path = list[&env]["latest_tarball"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let (t, _) = marker_task(&c, &env).await;
    assert_eq!(t["status"], "failed", "{t}");
    let why = t["error_message"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("damaged") && why.contains(&env), "{t}");
    assert_eq!(
        docker(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            &format!("kohakuriver/{env}:base")
        ]),
        "",
        "no image under the environment's name"
    );
    // A good version again: the next task runs.
    package_with_marker(&c, &env, "mended").await;
    let (t, out) = marker_task(&c, &env).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(out.trim(), "mended");
}

#[tokio::test]
async fn with_a_shared_dir_the_runner_reads_the_tarball_where_the_host_wrote_it() {
    let mut c = TestCluster::new(Opts::default());
    let shared = c.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    c.opts.host_args = vec!["--shared-dir".into(), shared.display().to_string()];
    c.start_host().await;
    c.start_runner("node-1", &["--shared-dir", shared.to_str().unwrap()]);
    c.wait_node_online("node-1").await;
    let (env, _guard) = env_name("nfs");
    create_env(&c, &env).await;
    package_with_marker(&c, &env, "from-nfs").await;
    let (_, list) = c.get_json("/api/docker/list").await;
    let path = list[&env]["latest_tarball"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        path.starts_with(&format!("{}/kohakuriver-containers/", shared.display())),
        "{path}"
    );
    let (t, out) = marker_task(&c, &env).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(out.trim(), "from-nfs");
    let logs = c.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("loading environment") && l.contains("the shared dir")),
        "{logs}"
    );
    assert!(
        std::path::Path::new(&path).exists(),
        "read in place, not moved"
    );
}

#[tokio::test]
async fn a_packaging_cut_off_by_a_stop_leaves_no_partial_tarball_after_the_next_start() {
    let mut c = TestCluster::new(Opts::default());
    let store = c.dir.path().join("host").join("environments");
    std::fs::create_dir_all(&store).unwrap();
    let partial = store.join(".dev-1733200000.tar.partial");
    let kept = store.join("dev-1733200000.tar");
    std::fs::write(&partial, b"half of a tarball").unwrap();
    std::fs::write(&kept, b"a finished one").unwrap();
    c.start_host().await;
    assert!(!partial.exists(), "the partial is removed at start");
    assert!(kept.exists(), "finished tarballs stay");
    let (_, list) = c.get_json("/api/docker/list").await;
    assert_eq!(
        list["dev"]["all_versions"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
}

#[tokio::test]
async fn a_broken_off_download_is_resumed_and_a_stale_partial_is_fetched_again_whole() {
    let c = TestCluster::with_runner(&[]).await;
    let (env, _guard) = env_name("resume");
    create_env(&c, &env).await;
    package_with_marker(&c, &env, "resumed").await;
    let (_, list) = c.get_json("/api/docker/list").await;
    let tarball = list[&env]["latest_tarball"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let bytes = std::fs::read(&tarball).expect("the tarball");
    let file = std::path::Path::new(&tarball)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cache = c.dir.path().join("runner-node-1").join("environments");
    std::fs::create_dir_all(&cache).unwrap();
    let partial = cache.join(format!("{file}.partial"));

    // The first half already here, as a download cut off by a runner restart leaves it.
    std::fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();
    let (t, out) = marker_task(&c, &env).await;
    assert_eq!(t["status"], "completed", "{t}\n{}", c.logs());
    assert_eq!(out.trim(), "resumed");
    let logs = c.logs();
    let from = format!("from_byte={}", bytes.len() / 2);
    assert!(
        logs.contains("resuming a download") && logs.contains(&from),
        "the rest was fetched, not all of it: {logs}"
    );
    assert!(!logs.contains("fetching it whole"), "{logs}");

    // A partial of some other copy: the resumed file fails its checksum, is fetched whole.
    docker(&["rmi", "-f", &format!("kohakuriver/{env}:base")]);
    std::fs::write(&partial, vec![0u8; bytes.len() / 2]).unwrap();
    let (t, out) = marker_task(&c, &env).await;
    assert_eq!(t["status"], "completed", "{t}\n{}", c.logs());
    assert_eq!(out.trim(), "resumed");
    assert!(c.logs().contains("fetching it whole"), "{}", c.logs());
    assert!(!partial.exists(), "nothing left in the cache");
}

/// A TCP proxy in front of the host for a runner's calls that, once the runner asks for an
/// environment tarball, passes the first `pass` bytes of the reply and holds the rest until
/// `release` is sent; everything else passes at once.
struct TarballHoldingProxy {
    port: u16,
    /// Where it passes calls to (set once the host's port is known).
    upstream: std::sync::Arc<std::sync::Mutex<String>>,
    release: tokio::sync::watch::Sender<bool>,
}

impl TarballHoldingProxy {
    /// Started before the cluster is made, so the cluster never picks the proxy's port.
    async fn start(pass: usize) -> TarballHoldingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (release, released) = tokio::sync::watch::channel(false);
        let upstream = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let to = upstream.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = to.lock().expect("upstream").clone();
                let mut released = released.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    // Set once the tarball's GET went up: what comes down after it is its reply.
                    let (asked, mut asked_rx) = tokio::sync::watch::channel(false);
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let text = String::from_utf8_lossy(&buf[..n]);
                            if text.contains("GET /api/runner/environments/") {
                                let _ = asked.send(true);
                            }
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_server.shutdown().await;
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut passed_after_ask = 0usize;
                        loop {
                            let n = match from_server.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let mut chunk = &buf[..n];
                            if *asked_rx.borrow_and_update() && !*released.borrow() {
                                let room = pass.saturating_sub(passed_after_ask).min(chunk.len());
                                if to_client.write_all(&chunk[..room]).await.is_err() {
                                    break;
                                }
                                passed_after_ask += room;
                                chunk = &chunk[room..];
                                if !chunk.is_empty() {
                                    let _ = released.wait_for(|r| *r).await;
                                }
                            }
                            if to_client.write_all(chunk).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        TarballHoldingProxy {
            port,
            upstream,
            release,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The task's record once `ok` holds for it (or a panic naming what it last was).
async fn task_when(c: &TestCluster, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let t = c.task(id).await;
        if ok(&t) {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task never {what}: {t}\n{}",
            c.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_task_waiting_for_its_environment_shows_the_download_and_the_node_shows_the_disk_it_takes(
) {
    let proxy = TarballHoldingProxy::start(64 * 1024).await;
    let mut c = TestCluster::new(Opts::default());
    *proxy.upstream.lock().expect("upstream") = format!("127.0.0.1:{}", c.host_port);
    c.opts.runner_host_url = Some(proxy.url());
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let (env, _guard) = env_name("progress");
    create_env(&c, &env).await;
    package_with_marker(&c, &env, "worth-the-wait").await;
    let (_, list) = c.get_json("/api/docker/list").await;
    let size = list[&env]["all_versions"][0]["size_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        size > 128 * 1024,
        "a tarball bigger than what passes: {list}"
    );

    // The host's store says what it holds.
    let (status, store) = c.get_json("/api/docker/store").await;
    assert_eq!(status, 200, "{store}");
    assert_eq!(store["used_bytes"].as_u64(), Some(size), "{store}");
    assert_eq!(store["tarballs"], 1, "{store}");
    assert_eq!(store["environments"], 1, "{store}");
    assert!(store["limit_bytes"].is_null(), "no cap by default: {store}");

    let id = c
        .submit(json!({"command": "cat /root/marker", "container_name": env}))
        .await
        .remove(0);
    let waiting = task_when(&c, &id, "showed its download", |t| {
        t["preparing"]["stage"] == "downloading" && t["preparing"]["bytes_done"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(waiting["status"], "assigning", "{waiting}");
    assert_eq!(
        waiting["preparing"]["environment"],
        env.as_str(),
        "{waiting}"
    );
    assert_eq!(
        waiting["preparing"]["bytes_total"].as_u64(),
        Some(size),
        "{waiting}"
    );
    let done = waiting["preparing"]["bytes_done"].as_u64().unwrap_or(0);
    assert!(done <= 64 * 1024, "no more than passed: {waiting}");

    proxy.release.send(true).expect("release");
    let t = c.wait_final(&id).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert!(
        t.get("preparing").is_none(),
        "nothing left to wait for: {t}"
    );
    let (_, out) = c.get_text(&format!("/api/tasks/{id}/stdout")).await;
    assert_eq!(out.trim(), "worth-the-wait");

    // The node view counts the loaded environment image (other tests' may be there too:
    // host and runner share this machine's engine).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, nodes) = c.get_json("/api/nodes").await;
        let disk = &nodes[0]["disk_usage"];
        if disk["environment_images"].as_u64() >= Some(1)
            && disk["environment_images_bytes"].as_u64() >= Some(size / 2)
        {
            assert_eq!(
                disk["environment_downloads_bytes"], 0,
                "the downloaded tarball is removed once loaded: {disk}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node view never counted the environment: {nodes}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
