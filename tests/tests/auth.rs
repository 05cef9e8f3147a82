//! Users, roles, tokens and approvals, against the real host (and a real runner where tasks
//! run). The matrix test calls every route of the host's `/openapi.json` as every kind of
//! caller, expecting what each operation's `x-ferry-access` says; the router and that document
//! are built from the same route list, so a route cannot escape the test.

use ferry_common::Role;
use ferry_e2e::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// Who may call a route, as `x-ferry-access` in `/openapi.json` says.
#[derive(Debug, Clone, Copy)]
enum Access {
    Public,
    Anyone,
    ClusterSecret,
    Role(Role),
}

/// Every (method, path, access) of the host's OpenAPI document.
async fn routes(c: &TestCluster) -> Vec<(String, String, Access)> {
    let (status, doc) = c.get_json("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let access = match op["x-ferry-access"].as_str().expect("x-ferry-access") {
                "public" => Access::Public,
                "anyone" => Access::Anyone,
                "cluster-secret" => Access::ClusterSecret,
                role => Access::Role(role.parse().expect("a role")),
            };
            out.push((method.to_uppercase(), path.clone(), access));
        }
    }
    // Not vacuous: the document lists the routes this test knows must be there.
    for (m, p) in [
        ("POST", "/api/submit"),
        ("GET", "/api/status/{task_id}"),
        ("PUT", "/api/heartbeat/{hostname}"),
    ] {
        assert!(
            out.iter().any(|(om, op, _)| om == m && op == p),
            "{m} {p} missing"
        );
    }
    out
}

/// Status and `detail` of a call with an empty JSON body (or none for GET/DELETE).
async fn call(c: &TestCluster, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = c.http.request(m.clone(), format!("{}{path}", c.url()));
    if let Some(b) = bearer {
        rb = rb.bearer_auth(b);
        // The cluster secret comes with node-1's own credential, as its runner sends it.
        if b == c.opts.secret {
            if let Some(cred) = c.runner_credential("node-1") {
                rb = rb.header("x-ferry-runner-credential", cred);
            }
        }
    }
    if m != Method::GET && m != Method::DELETE {
        rb = rb.json(&json!({}));
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    // An event stream never ends: its status is the answer.
    let streams = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let body: Value = match streams {
        true => Value::Null,
        false => r.json().await.unwrap_or(Value::Null),
    };
    (
        status,
        body["detail"].as_str().unwrap_or_default().to_string(),
    )
}

async fn as_user(
    c: &TestCluster,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = c
        .http
        .request(method, format!("{}{path}", c.url()))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_route_allows_and_denies_as_the_matrix_says() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, viewer) = c.user_account("vera", "viewer").await;
    let (_, user) = c.user_account("ulla", "user").await;
    let (_, operator) = c.user_account("otto", "operator").await;
    let (victim, _) = c.user_account("victim", "viewer").await;
    let admin = c.token.clone().unwrap();
    // A task of the `user`, so ownership does not blur the role checks.
    let (status, v) = as_user(
        &c,
        &user,
        Method::POST,
        "/api/submit",
        Some(json!({"command": "sleep 60"})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let task = v["task_ids"][0].as_str().unwrap().to_string();

    let concrete = |path: &str| {
        path.replace("{task_id}", &task)
            .replace("{hostname}", "node-1")
            .replace("{command}", "pause")
            .replace("{user_id}", &victim.to_string())
            .replace("{token_id}", "999999")
            .replace("{invitation_id}", "999999")
    };
    let secret = c.opts.secret.clone();
    let callers: Vec<(&str, Option<String>, Option<Role>)> = vec![
        ("anonymous", None, None),
        ("bad token", Some("not-a-real-token".to_string()), None),
        ("cluster secret", Some(secret.clone()), None),
        ("viewer", Some(viewer), Some(Role::Viewer)),
        ("user", Some(user), Some(Role::User)),
        ("operator", Some(operator), Some(Role::Operator)),
        ("admin", Some(admin), Some(Role::Admin)),
    ];
    let routes = routes(&c).await;
    let mut checked = 0;
    for (method, raw_path, access) in &routes {
        let path = concrete(raw_path);
        for (who, bearer, role) in &callers {
            let (status, detail) = call(&c, method, &path, bearer.as_deref()).await;
            let is_secret = *who == "cluster secret";
            let expected_denial: Option<u16> = match *access {
                Access::Public => None,
                Access::ClusterSecret => (!is_secret).then_some(401),
                Access::Anyone => match (who, role) {
                    (&"anonymous", _) => None,
                    (_, Some(_)) => None,
                    _ => Some(401),
                },
                Access::Role(min) => match role {
                    None => Some(401),
                    Some(r) if *r < min => Some(403),
                    Some(_) => None,
                },
            };
            match expected_denial {
                Some(code) => assert_eq!(status, code, "{method} {path} as {who}"),
                // Allowed: the handler ran and answered as a handler does (it may still say
                // 404 for an unknown id, 409, 422...), never a server error.
                // (A 503 that says no node has room, as `vps/create` answers by contract
                // when it would not wait, is an answer too.)
                None => assert!(
                    status != 401
                        && status != 403
                        && status != 405
                        && (status < 500
                            || (status == 503 && detail.starts_with("No suitable node")))
                        && !(status == 404 && detail == "Not Found"),
                    "{method} {path} as {who} should be allowed, got {status} {detail}"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * callers.len());
}

#[tokio::test]
async fn users_only_touch_their_own_tasks() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, alice) = c.user_account("alice", "user").await;
    let (_, bob) = c.user_account("bob", "user").await;
    let (_, viewer) = c.user_account("vic", "viewer").await;
    let (_, v) = as_user(
        &c,
        &alice,
        Method::POST,
        "/api/submit",
        Some(json!({"command": "sleep 30"})),
    )
    .await;
    let id = v["task_ids"][0].as_str().unwrap().to_string();
    c.post_json(&format!("/api/approve/{id}"), &json!({})).await;
    c.wait_status(&id, &["running"], Duration::from_secs(30))
        .await;

    for (method, path) in [
        (Method::GET, format!("/api/status/{id}")),
        (Method::GET, format!("/api/tasks/{id}/stdout")),
        (Method::POST, format!("/api/kill/{id}")),
        (Method::POST, format!("/api/command/{id}/pause")),
    ] {
        let (status, v) = as_user(&c, &bob, method.clone(), &path, None).await;
        assert_eq!(status, 403, "bob {method} {path}: {v}");
    }
    let (_, list) = as_user(&c, &bob, Method::GET, "/api/tasks", None).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t["task_id"] != id.as_str()),
        "bob sees alice's task"
    );
    // Viewers observe (metadata) but cannot read output or act.
    let (status, _) = as_user(&c, &viewer, Method::GET, &format!("/api/status/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = as_user(
        &c,
        &viewer,
        Method::GET,
        &format!("/api/tasks/{id}/stdout"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    // Alice herself can.
    let (status, t) = as_user(&c, &alice, Method::GET, &format!("/api/status/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(t["owner_username"], "alice");
    let (_, mine) = as_user(&c, &alice, Method::GET, "/api/tasks/my", None).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let (status, _) = as_user(&c, &alice, Method::POST, &format!("/api/kill/{id}"), None).await;
    assert_eq!(status, 202);
    assert_eq!(c.task(&id).await["status"], "killed");
}

#[tokio::test]
async fn revoked_tokens_and_ended_sessions_are_refused_at_once() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, token) = c.user_account("tim", "viewer").await;
    let (status, _) = as_user(&c, &token, Method::GET, "/api/nodes", None).await;
    assert_eq!(status, 200);
    let (_, tokens) = as_user(&c, &token, Method::GET, "/api/auth/tokens", None).await;
    let token_id = tokens[0]["id"].as_i64().unwrap();
    let (status, v) = as_user(
        &c,
        &token,
        Method::DELETE,
        &format!("/api/auth/tokens/{token_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = as_user(&c, &token, Method::GET, "/api/nodes", None).await;
    assert_eq!(status, 401, "revoked token still works: {v}");
    // Bad credentials on /auth/me are 401, not a silent anonymous 200.
    let (status, _) = as_user(&c, &token, Method::GET, "/api/auth/me", None).await;
    assert_eq!(status, 401);
    let r = c
        .http
        .get(format!("{}/api/auth/me", c.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["role"], "anony");

    // Sessions: the cookie works, then not after logout.
    let r = c
        .http
        .post(format!("{}/api/auth/login", c.url()))
        .json(&json!({"username": "tim", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let me = c
        .http
        .get(format!("{}/api/auth/me", c.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["username"], "tim");
    let r = c
        .http
        .post(format!("{}/api/auth/logout", c.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = c
        .http
        .get(format!("{}/api/nodes", c.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // A password change ends other sessions; a disabled user's token stops working.
    let (_, t2) = c.user_account("dana", "user").await;
    let (status, _) = c
        .request(Method::GET, "/api/auth/users")
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let (_, users) = c.get_json("/api/auth/users").await;
    let dana = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "dana")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = c
        .request(Method::PATCH, &format!("/api/auth/users/{dana}"))
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, _) = as_user(&c, &t2, Method::GET, "/api/nodes", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_invitation_used_twice_at_once_admits_one_account() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, inv) = c
        .post_json(
            "/api/auth/invitations",
            &json!({"role": "user", "max_usage": 1}),
        )
        .await;
    let code = inv["token"].as_str().unwrap().to_string();
    let register = |name: &'static str| {
        let (http, url, code) = (c.http.clone(), c.url(), code.clone());
        async move {
            http.post(format!("{url}/api/auth/register"))
                .json(&json!({"username": name, "password": "password-123", "invitation": code}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let results = futures_join(register("racer-a"), register("racer-b")).await;
    let mut sorted = [results.0, results.1];
    sorted.sort();
    assert_eq!(
        sorted,
        [200, 400],
        "exactly one registration wins: {results:?}"
    );
    let (_, users) = c.get_json("/api/auth/users").await;
    let racers = users
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["username"].as_str().unwrap().starts_with("racer"))
        .count();
    assert_eq!(racers, 1);
    // A taken username is a 409 and does not use up an invitation.
    let (_, inv) = c
        .post_json("/api/auth/invitations", &json!({"role": "viewer"}))
        .await;
    let r = c
        .http
        .post(format!("{}/api/auth/register", c.url()))
        .json(&json!({"username": "admin", "password": "password-123", "invitation": inv["token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let (_, invs) = c.get_json("/api/auth/invitations").await;
    let this = invs
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == inv["id"])
        .unwrap()
        .clone();
    assert_eq!(this["usage_count"], 0, "{this}");
    // Operators may only invite viewers and users.
    let (_, op) = c.user_account("oscar", "operator").await;
    let (status, _) = as_user(
        &c,
        &op,
        Method::POST,
        "/api/auth/invitations",
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 403);
}

async fn futures_join<
    A: std::future::Future<Output = u16>,
    B: std::future::Future<Output = u16>,
>(
    a: A,
    b: B,
) -> (u16, u16) {
    tokio::join!(a, b)
}

#[tokio::test]
async fn approval_flow_end_to_end() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, user) = c.user_account("ursula", "user").await;
    let (_, operator) = c.user_account("olga", "operator").await;
    let (status, v) = as_user(
        &c,
        &user,
        Method::POST,
        "/api/submit",
        Some(echo_task("approved!")),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let ok = v["task_ids"][0].as_str().unwrap().to_string();
    let (_, v) = as_user(
        &c,
        &user,
        Method::POST,
        "/api/submit",
        Some(echo_task("never")),
    )
    .await;
    let no = v["task_ids"][0].as_str().unwrap().to_string();
    let (_, v) = as_user(
        &c,
        &user,
        Method::POST,
        "/api/submit",
        Some(echo_task("withdrawn")),
    )
    .await;
    let gone = v["task_ids"][0].as_str().unwrap().to_string();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = c.task(&ok).await;
    assert_eq!(t["status"], "pending_approval");
    assert_eq!(t["approval_status"], "pending");
    assert!(
        containers_of(&ok).is_empty(),
        "nothing runs before approval"
    );
    // Users cannot approve; operators list and decide.
    let (status, _) = as_user(&c, &user, Method::POST, &format!("/api/approve/{ok}"), None).await;
    assert_eq!(status, 403);
    let (status, list) = as_user(
        &c,
        &operator,
        Method::GET,
        "/api/tasks/pending-approval",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 3);
    let (status, v) = as_user(
        &c,
        &operator,
        Method::POST,
        &format!("/api/approve/{ok}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = as_user(
        &c,
        &operator,
        Method::POST,
        &format!("/api/reject/{no}"),
        Some(json!({"reason": "not on my cluster"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = as_user(
        &c,
        &operator,
        Method::POST,
        &format!("/api/approve/{no}"),
        None,
    )
    .await;
    assert_eq!(status, 409, "a rejected task cannot be approved");
    // The owner may withdraw a task still waiting.
    let (status, _) = as_user(&c, &user, Method::POST, &format!("/api/kill/{gone}"), None).await;
    assert_eq!(status, 202);

    let t = c.wait_final(&ok).await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["approval_status"], "approved");
    assert_eq!(t["approved_by_username"], "olga");
    // The approved task really ran: its owner reads its output.
    let r = c
        .http
        .get(format!("{}/api/tasks/{ok}/stdout", c.url()))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "approved!\n");
    let (_, seen) = as_user(&c, &user, Method::GET, &format!("/api/status/{no}"), None).await;
    assert_eq!(seen["status"], "rejected");
    assert_eq!(seen["rejection_reason"], "not on my cluster");
    assert_eq!(c.task(&gone).await["status"], "killed");

    // The audit log has it all, for admins only.
    let (status, audit) = c.get_json("/api/audit?limit=200").await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "login",
        "token.create",
        "invitation.create",
        "user.register",
        "task.approve",
        "task.reject",
        "task.kill",
    ] {
        assert!(actions.contains(&a), "audit lacks {a}: {actions:?}");
    }
    let (status, _) = as_user(&c, &operator, Method::GET, "/api/audit", None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn failed_logins_are_limited_and_audited() {
    let c = TestCluster::with_runner(&[]).await;
    // An address that never signed in to admin (the harness signed in from 127.0.0.1).
    let stranger = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 9]))
        .build()
        .unwrap();
    let login = |password: &str| {
        stranger
            .post(format!("{}/api/auth/login", c.url()))
            .json(&json!({"username": "admin", "password": password}))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(login("wrong").await.unwrap().status().as_u16(), 401);
    }
    let r = login("wrong").await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    // From a new address even the right password waits out the window...
    let r = login(&c.opts.admin_password).await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    // ...but not from an address that signed in to the account before.
    let r = c
        .http
        .post(format!("{}/api/auth/login", c.url()))
        .json(&json!({"username": "admin", "password": c.opts.admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, audit) = c.get_json("/api/audit").await;
    let failed = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "login.failed")
        .count();
    assert_eq!(failed, 5);
}

#[tokio::test]
async fn first_start_writes_a_private_admin_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("host");
    let log = dir.path().join("host.log");
    let mut child = std::process::Command::new(bin("ferry-host"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.to_str().unwrap(),
            "--ssh-relay-listen",
            "off",
        ])
        .env("FERRY_CLUSTER_SECRET", "0123456789abcdef0123456789abcdef")
        .env_remove("FERRY_ADMIN_PASSWORD")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let file = data.join("initial-admin-password");
    for _ in 0..100 {
        if file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 16);
    // The file is written before the line is logged: give the host until it logs (it was
    // killed in between once, under load).
    for _ in 0..100 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&password)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        std::fs::read_to_string(&log).unwrap().contains(&password),
        "printed once at first start"
    );
}

#[tokio::test]
async fn auth_can_only_be_disabled_on_loopback_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("ferry-host"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--auth-enabled",
            "false",
        ])
        .env("FERRY_CLUSTER_SECRET", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_unauthenticated_network"));
}

#[tokio::test]
async fn login_limits_are_per_address_and_the_audit_log_names_it() {
    let c = TestCluster::with_runner(&[]).await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let attacker = from([127, 0, 0, 2]);
    for i in 0..20 {
        let r = attacker
            .post(format!("{}/api/auth/login", c.url()))
            .json(&json!({"username": format!("guess{i}"), "password": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let r = attacker
        .post(format!("{}/api/auth/login", c.url()))
        .json(&json!({"username": "guess99", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429, "that address is now limited");
    let r = from([127, 0, 0, 3])
        .post(format!("{}/api/auth/login", c.url()))
        .json(&json!({"username": "admin", "password": c.opts.admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "another address is not");
    let (_, audit) = c.get_json("/api/audit?limit=5").await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["address"] == "127.0.0.2"),
        "{audit}"
    );
}

#[tokio::test]
async fn an_admin_resets_a_forgotten_password_and_a_given_one_is_not_written_down() {
    let c = TestCluster::with_runner(&[]).await;
    assert!(
        !c.dir.path().join("host/initial-admin-password").exists(),
        "FERRY_ADMIN_PASSWORD stays out of the data dir"
    );
    let (id, token) = c.user_account("forgetful", "user").await;
    let r = c
        .request(Method::PATCH, &format!("/api/auth/users/{id}"))
        .json(&json!({"password": "short"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let r = c
        .request(Method::PATCH, &format!("/api/auth/users/{id}"))
        .json(&json!({"password": "brand-new-pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t2 = c.login_token("forgetful", "brand-new-pass").await;
    let (status, _) = as_user(&c, &t2, Method::GET, "/api/auth/me", None).await;
    assert_eq!(status, 200);
    // Whoever knew the old password may have made tokens: a reset revokes them.
    let (status, _) = as_user(&c, &token, Method::GET, "/api/auth/me", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn parallel_login_attempts_cannot_outrun_the_limit() {
    let c = TestCluster::with_runner(&[]).await;
    // From an address that never signed in, so the per-account limit applies.
    let stranger = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 9]))
        .build()
        .unwrap();
    let attempts = (0..30).map(|_| {
        let (http, url) = (stranger.clone(), c.url());
        tokio::spawn(async move {
            http.post(format!("{url}/api/auth/login"))
                .json(&json!({"username": "admin", "password": "wrong"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    });
    let mut codes = Vec::new();
    for a in attempts.collect::<Vec<_>>() {
        codes.push(a.await.unwrap());
    }
    let checked = codes.iter().filter(|c| **c == 401).count();
    assert_eq!(
        checked, 5,
        "only 5 passwords may be tried per account: {codes:?}"
    );
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 25);
}

#[tokio::test]
async fn cookie_requests_from_other_sites_are_refused_and_viewers_do_not_see_env_values() {
    let c = TestCluster::with_runner(&[]).await;
    let r = c
        .http
        .post(format!("{}/api/auth/login", c.url()))
        .json(&json!({"username": "admin", "password": c.opts.admin_password}))
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(&r);
    let submit = |origin: Option<String>| {
        let mut rb = c
            .http
            .post(format!("{}/api/submit", c.url()))
            .header("cookie", &cookie)
            .json(&json!({"command": "echo hi", "env_vars": {"API_KEY": "s3cr3t"}}));
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        rb.send()
    };
    let evil = submit(Some("http://evil.example".into())).await.unwrap();
    assert_eq!(evil.status().as_u16(), 403);
    let own = submit(Some(c.url())).await.unwrap();
    assert_eq!(own.status().as_u16(), 202);
    let id = own.json::<Value>().await.unwrap()["task_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        submit(None).await.unwrap().status().as_u16(),
        202,
        "non-browser clients send no Origin"
    );

    let (_, viewer) = c.user_account("val", "viewer").await;
    let (_, seen) = as_user(&c, &viewer, Method::GET, &format!("/api/status/{id}"), None).await;
    assert_eq!(seen["env_vars"]["API_KEY"], "[hidden]");
    assert_eq!(
        c.task(&id).await["env_vars"]["API_KEY"],
        "s3cr3t",
        "the owner sees it"
    );
}

#[tokio::test]
async fn a_password_change_revokes_the_other_tokens_and_tokens_may_expire() {
    let c = TestCluster::with_runner(&[]).await;
    let (_, first) = c.user_account("rotating", "user").await;
    let second = c.login_token("rotating", "password-123").await;
    let (status, _) = as_user(
        &c,
        &first,
        Method::POST,
        "/api/auth/password",
        Some(json!({"current_password": "password-123", "new_password": "password-456"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = as_user(&c, &first, Method::GET, "/api/auth/me", None).await;
    assert_eq!(status, 200, "the token that made the change stays");
    let (status, _) = as_user(&c, &second, Method::GET, "/api/auth/me", None).await;
    assert_eq!(status, 401, "every other token is revoked");

    let (status, v) = as_user(
        &c,
        &first,
        Method::POST,
        "/api/auth/tokens/create",
        Some(json!({"name": "ci", "expires_days": 7})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["expires_at"].is_string(), "{v}");
    let (_, list) = as_user(&c, &first, Method::GET, "/api/auth/tokens", None).await;
    let ci = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .cloned()
        .unwrap();
    assert_eq!(ci["expires_at"], v["expires_at"]);
    let (status, v) = as_user(
        &c,
        &first,
        Method::POST,
        "/api/auth/tokens/create",
        Some(json!({"name": "forever-and-more", "expires_days": 0})),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v["detail"].as_str().unwrap().starts_with("expires_days"),
        "{v}"
    );
}
