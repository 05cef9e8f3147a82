//! Anonymous callers against accounts: floods of registrations and logins must not stall the
//! host, and a stranger's wrong passwords must not lock the owner out.

use ferry_e2e::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn client_from(ip: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Runs every request at once and collects the answers.
async fn join_all<T: Send + 'static>(
    jobs: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        set.spawn(job);
    }
    set.join_all().await
}

/// Polls the node view until `stop`, recording whether `node-1` was ever seen other than
/// online or a read failed.
fn watch_node(c: &TestCluster, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    let rb = c.request(reqwest::Method::GET, "/api/nodes");
    tokio::spawn(async move {
        let mut trouble = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match rb.try_clone().expect("clonable").send().await {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    if v[0]["status"] != "online" {
                        trouble.push(format!("node seen as {}", v[0]["status"]));
                    }
                }
                Ok(r) => trouble.push(format!("/api/nodes answered {}", r.status())),
                Err(e) => trouble.push(format!("/api/nodes failed: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        trouble
    })
}

#[tokio::test]
async fn a_registration_flood_is_refused_cheaply_and_the_node_stays_online() {
    let c = TestCluster::with_runner(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_node(&c, stop.clone());

    // 200 sign-ups with made-up invitations from one address, all at once.
    let url = format!("{}/api/auth/register", c.url());
    let one = client_from([127, 0, 0, 2].into());
    let flood = (0..200).map(|i| {
        let rb = one.post(&url).json(&json!({
            "username": format!("bot{i}"),
            "password": "password123",
            "invitation": format!("guess-{i}"),
        }));
        async move { rb.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    let answers = join_all(flood).await;
    let refused = answers.iter().filter(|s| **s == 400).count();
    let limited = answers.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (refused, limited),
        (10, 190),
        "ten bad invitations are told so, then the address is limited: {answers:?}"
    );

    // From many addresses: each gets its answer without a password being hashed.
    let many = (0..60u8).map(|i| {
        let rb = client_from([127, 0, 1, i + 1].into())
            .post(&url)
            .json(&json!({
                "username": format!("spray{i}"),
                "password": "password123",
                "invitation": "made-up",
            }));
        async move { rb.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    let answers = join_all(many).await;
    assert!(answers.iter().all(|s| *s == 400), "{answers:?}");

    stop.store(true, Ordering::SeqCst);
    let trouble = watcher.await.unwrap();
    assert!(trouble.is_empty(), "{trouble:?}\n{}", c.logs());

    // A real invitation still works, from a limited address's neighbour.
    let (_, inv) = c
        .post_json(
            "/api/auth/invitations",
            &json!({"role": "user", "max_usage": 1, "expires_hours": 1}),
        )
        .await;
    let r = client_from([127, 0, 0, 3].into())
        .post(&url)
        .json(
            &json!({"username": "newcomer", "password": "password123", "invitation": inv["token"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn a_login_flood_from_many_addresses_leaves_reads_and_heartbeats_served() {
    let c = TestCluster::with_runner(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_node(&c, stop.clone());
    let url = format!("{}/api/auth/login", c.url());
    // Every attempt checks a password (a decoy hash for unknown users): 80 at once.
    let flood = (0..80u8).map(|i| {
        let rb = client_from([127, 0, 2, i + 1].into())
            .post(&url)
            .json(&json!({"username": format!("nobody{i}"), "password": "wrong-password"}));
        async move {
            let r = rb.send().await.expect("login");
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (status, v["detail"].as_str().unwrap_or("").to_string())
        }
    });
    let answers = join_all(flood).await;
    stop.store(true, Ordering::SeqCst);
    let trouble = watcher.await.unwrap();
    assert!(trouble.is_empty(), "{trouble:?}\n{}", c.logs());
    // What callers see: a wrong password, or (when hashing is saturated) a clear "busy".
    for (status, detail) in &answers {
        match status {
            401 => assert_eq!(detail, "Invalid username or password"),
            503 => assert!(detail.contains("busy checking passwords"), "{detail}"),
            other => panic!("unexpected {other}: {detail}"),
        }
    }
    assert!(answers.iter().any(|(s, _)| *s == 401));
}

#[tokio::test]
async fn wrong_passwords_from_strangers_do_not_lock_the_owner_out() {
    let c = TestCluster::with_runner(&[]).await;
    // The harness signed in as admin from 127.0.0.1 at start.
    let login = |ip: [u8; 4], password: &str| {
        let rb = client_from(ip.into())
            .post(format!("{}/api/auth/login", c.url()))
            .json(&json!({"username": "admin", "password": password}));
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    for i in 0..5u8 {
        assert_eq!(login([127, 0, 3, i + 1], "not-the-password").await, 401);
    }
    assert_eq!(
        login([127, 0, 3, 100], "not-the-password").await,
        429,
        "strangers are slowed down"
    );
    assert_eq!(
        login([127, 0, 0, 1], &c.opts.admin_password).await,
        200,
        "the owner, from an address that signed in before, is not locked out"
    );
}
