//! What a web page in the operator's browser can and cannot make the host do: forged requests
//! from other sites, DNS rebinding, and the dashboard behind a reverse proxy that must still
//! work.

use ferry_e2e::*;
use reqwest::header::{CONTENT_TYPE, COOKIE, HOST, ORIGIN};
use serde_json::{json, Value};

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .expect("client")
}

async fn answer(rb: reqwest::RequestBuilder) -> (u16, String) {
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["detail"].as_str().unwrap_or("").to_string())
}

const TASK: &str = r#"{"command": "echo forged"}"#;

#[tokio::test]
async fn with_auth_off_no_other_site_can_run_a_task() {
    let mut c = TestCluster::new(Opts {
        host_args: vec!["--auth-enabled".into(), "false".into()],
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let submit = format!("{}/api/submit", c.url());
    let port = c.host_port;

    // fetch(url, {mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}) from a page.
    let (status, detail) = answer(
        c.http
            .post(&submit)
            .header(ORIGIN, "http://evil.example")
            .header("sec-fetch-site", "cross-site")
            .header(CONTENT_TYPE, "text/plain")
            .body(TASK),
    )
    .await;
    assert_eq!(status, 403, "{detail}");
    assert!(detail.contains("Cross-site request refused"), "{detail}");

    // The same body without a browser's headers is still not JSON by its own account.
    let (status, detail) = answer(
        c.http
            .post(&submit)
            .header(CONTENT_TYPE, "text/plain")
            .body(TASK),
    )
    .await;
    assert_eq!(status, 415, "{detail}");
    assert!(detail.contains("Content-Type"), "{detail}");
    let (status, _) = answer(c.http.post(&submit).body(TASK)).await;
    assert_eq!(status, 415, "no Content-Type at all");

    // A page that rebinds its own name to 127.0.0.1 is same-origin to the browser: its Host
    // header gives it away, for reads as well as writes.
    let rebound = format!("evil.example:{port}");
    let (status, detail) = answer(
        c.http
            .get(format!("{}/api/tasks", c.url()))
            .header(HOST, &rebound),
    )
    .await;
    assert_eq!(status, 403, "{detail}");
    assert!(detail.contains("allowed_hosts"), "{detail}");
    let (status, _) = answer(
        c.http
            .post(&submit)
            .header(HOST, &rebound)
            .header(ORIGIN, format!("http://{rebound}"))
            .header(CONTENT_TYPE, "application/json")
            .body(TASK),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(c.task_count().await, 0, "nothing was submitted");

    // The host's own names and pages still work.
    let (status, _) = answer(
        c.http
            .get(format!("{}/api/tasks", c.url()))
            .header(HOST, format!("localhost:{port}")),
    )
    .await;
    assert_eq!(status, 200);
    let (status, detail) = answer(
        c.http
            .post(&submit)
            .header(ORIGIN, c.url())
            .header("sec-fetch-site", "same-origin")
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(TASK),
    )
    .await;
    assert_eq!(status, 202, "{detail}");
    assert_eq!(c.task_count().await, 1);
}

/// The original's dashboard is served by Vite, whose proxy rewrites `Host` to the API's and
/// keeps the page's `Origin`; nginx keeps `Host` in `X-Forwarded-Host`.
#[tokio::test]
async fn a_dashboard_behind_a_proxy_signs_in_and_submits_but_a_foreign_page_does_not() {
    let mut c = TestCluster::new(Opts {
        host_args: vec![
            "--trusted-origins".into(),
            "http://localhost:5173".into(),
            "--trusted-proxies".into(),
            "127.0.0.2".into(),
        ],
        ..Opts::default()
    });
    c.start_host().await;
    c.start_runner("node-1", &[]);
    c.wait_node_online("node-1").await;
    let login = format!("{}/api/auth/login", c.url());
    let submit = format!("{}/api/submit", c.url());
    let credentials = json!({"username": "admin", "password": c.opts.admin_password}).to_string();
    let from_page = |rb: reqwest::RequestBuilder, origin: &str| {
        rb.header(ORIGIN, origin)
            .header("sec-fetch-site", "same-origin")
            .header(CONTENT_TYPE, "application/json")
    };

    // Signing in from a foreign page (login CSRF) is refused too.
    let (status, _) =
        answer(from_page(c.http.post(&login), "http://evil.example").body(credentials.clone()))
            .await;
    assert_eq!(status, 403);

    // Vite: the page's origin is trusted by configuration.
    let r = from_page(c.http.post(&login), "http://localhost:5173")
        .body(credentials.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = session_cookie(&r);
    let (status, detail) = answer(
        from_page(c.http.post(&submit), "http://localhost:5173")
            .header(COOKIE, &cookie)
            .body(TASK),
    )
    .await;
    assert_eq!(status, 202, "{detail}");

    // A foreign page with the same cookie is refused.
    let (status, _) = answer(
        from_page(c.http.post(&submit), "http://evil.example")
            .header(COOKIE, &cookie)
            .body(TASK),
    )
    .await;
    assert_eq!(status, 403);

    // nginx on 127.0.0.2 (a trusted proxy) passes the name the browser used.
    let nginx = client_from([127, 0, 0, 2]);
    let (status, detail) = answer(
        from_page(nginx.post(&submit), "https://dash.lab:8443")
            .header("x-forwarded-host", "dash.lab:8443")
            .header(COOKIE, &cookie)
            .body(TASK),
    )
    .await;
    assert_eq!(status, 202, "{detail}");
    // The same header from anyone else is not believed.
    let (status, _) = answer(
        from_page(
            client_from([127, 0, 0, 3]).post(&submit),
            "https://dash.lab:8443",
        )
        .header("x-forwarded-host", "dash.lab:8443")
        .header(COOKIE, &cookie)
        .body(TASK),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(c.task_count().await, 2, "the two accepted submissions only");
}

#[tokio::test]
async fn with_auth_on_the_host_list_applies_only_when_configured() {
    let mut open = TestCluster::new(Opts::default());
    open.start_host().await;
    let (status, _) = answer(
        open.request(reqwest::Method::GET, "/api/nodes")
            .header(HOST, "ferry.example.org"),
    )
    .await;
    assert_eq!(status, 200, "a token caller under any name");

    let mut listed = TestCluster::new(Opts {
        host_args: vec!["--allowed-hosts".into(), "ferry.lab".into()],
        ..Opts::default()
    });
    listed.start_host().await;
    let (status, detail) = answer(
        listed
            .request(reqwest::Method::GET, "/api/nodes")
            .header(HOST, "ferry.example.org"),
    )
    .await;
    assert_eq!(status, 403, "{detail}");
    let (status, _) = answer(
        listed
            .request(reqwest::Method::GET, "/api/nodes")
            .header(HOST, "ferry.lab:8000"),
    )
    .await;
    assert_eq!(status, 200);
}
