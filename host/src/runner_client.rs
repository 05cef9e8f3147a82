//! Calls from the host to runners. [`RunnerApi`] is the seam (the scheduler and the task
//! services see only it, so their logic is unit-tested with a recording fake);
//! [`RunnerClient`] is the real one: HTTP, each call carrying the cluster secret, one shared
//! client (connection reuse) with per-call timeouts.

use ferry_common::runner_proto::{ControlRequest, ExecuteRequest};
use ferry_common::{ErrorBody, TaskId};
use futures_util::future::BoxFuture;
use std::fmt;
use std::time::Duration;

/// What the host may ask a runner to do to a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Kill,
    Pause,
    Resume,
    /// A VPS: snapshot (if the runner is set to), graceful stop, removal.
    Stop,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Kill => "kill",
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Stop => "stop",
        }
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runner protocol as the host uses it; `base` is the runner's URL.
pub trait RunnerApi: Send + Sync + 'static {
    fn execute<'a>(
        &'a self,
        base: &'a str,
        req: &'a ExecuteRequest,
    ) -> BoxFuture<'a, Result<serde_json::Value, RunnerError>>;

    fn control<'a>(
        &'a self,
        base: &'a str,
        action: Control,
        id: TaskId,
    ) -> BoxFuture<'a, Result<serde_json::Value, RunnerError>>;

    /// Any other runner route (`method` `path`, JSON `body`), answered as JSON: the VPS
    /// snapshot routes the host passes through.
    fn call<'a>(
        &'a self,
        _base: &'a str,
        method: &'a str,
        path: &'a str,
        _body: Option<&'a serde_json::Value>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<serde_json::Value, RunnerError>> {
        Box::pin(async move {
            Err(RunnerError::Unreachable(format!(
                "{method} {path}: not offered by this runner client"
            )))
        })
    }

    /// Passes a request through to the runner unchanged (`path` with its query, a JSON
    /// `body`) and returns its status and body as they came: the file routes.
    fn forward<'a>(
        &'a self,
        _base: &'a str,
        method: &'a str,
        path: &'a str,
        _body: Option<bytes::Bytes>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(u16, bytes::Bytes), RunnerError>> {
        Box::pin(async move {
            Err(RunnerError::Unreachable(format!(
                "{method} {path}: not offered by this runner client"
            )))
        })
    }

    /// The last `lines` lines of a task's `stream` (`stdout`/`stderr`) in attempt `run`;
    /// `Ok(None)` when the runner has no such log.
    fn logs<'a>(
        &'a self,
        base: &'a str,
        id: TaskId,
        run: u32,
        stream: &'a str,
        lines: Option<usize>,
    ) -> BoxFuture<'a, Result<Option<String>, RunnerError>>;

    /// Follows a task's `stream` as it is written: the open response, whose body ends when
    /// the runner has sent all of the task's output. Starts at the last `lines` lines, or at
    /// byte `offset` (resuming).
    fn follow_logs<'a>(
        &'a self,
        base: &'a str,
        id: TaskId,
        run: u32,
        stream: &'a str,
        lines: Option<usize>,
        offset: Option<u64>,
    ) -> BoxFuture<'a, Result<reqwest::Response, RunnerError>> {
        let _ = (base, id, run, lines, offset);
        Box::pin(async move {
            Err(RunnerError::Unreachable(format!(
                "following {stream}: not offered by this runner client"
            )))
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The runner could not be reached (or did not answer in time).
    #[error("runner unreachable: {0}")]
    Unreachable(String),
    /// The runner answered with an error status.
    #[error("runner refused ({status}): {detail}")]
    Refused { status: u16, detail: String },
    #[error("runner reply larger than {0} bytes: not read")]
    TooLarge(usize),
}

/// How long a VPS stop may take on the runner (snapshot, then the grace period).
const STOP_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest JSON reply read from a runner: its answers are a few hundred bytes.
const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// Largest log reply: the runner sends at most the last 16 MiB, plus room for a marker line.
const MAX_LOG_REPLY_BYTES: usize = 16 * 1024 * 1024 + 64 * 1024;

/// Reads a reply body, giving up past `max` bytes, so a broken or hostile runner cannot make
/// the host buffer without end.
async fn read_limited(resp: reqwest::Response, max: usize) -> Result<String, RunnerError> {
    let body = read_limited_bytes(resp, max).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// [`read_limited`], as bytes.
async fn read_limited_bytes(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<bytes::Bytes, RunnerError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(RunnerError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| RunnerError::Unreachable(e.to_string()))?
    {
        if body.len() + chunk.len() > max {
            return Err(RunnerError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

#[derive(Clone)]
pub struct RunnerClient {
    http: reqwest::Client,
    secret: String,
    timeout: Duration,
}

impl RunnerClient {
    pub fn new(secret: String, timeout: Duration) -> RunnerClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        RunnerClient {
            http,
            secret,
            timeout,
        }
    }

    async fn post<B: serde::Serialize>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<serde_json::Value, RunnerError> {
        self.post_within(url, body, self.timeout).await
    }

    async fn post_within<B: serde::Serialize>(
        &self,
        url: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<serde_json::Value, RunnerError> {
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.secret)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| RunnerError::Unreachable(e.to_string()))?;
        Self::json_or_error(resp).await
    }

    async fn json_or_error(resp: reqwest::Response) -> Result<serde_json::Value, RunnerError> {
        let status = resp.status();
        let text = read_limited(resp, MAX_REPLY_BYTES).await?;
        if status.is_success() {
            Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
        } else {
            let detail = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.detail)
                .unwrap_or(text);
            Err(RunnerError::Refused {
                status: status.as_u16(),
                detail,
            })
        }
    }

    /// Sends one request to a runner route, with the cluster secret.
    async fn request(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<(&str, bytes::Bytes)>,
        timeout: Duration,
    ) -> Result<reqwest::Response, RunnerError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| RunnerError::Unreachable(e.to_string()))?;
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.secret)
            .timeout(timeout);
        if let Some((content_type, b)) = body {
            req = req.header("content-type", content_type).body(b);
        }
        req.send()
            .await
            .map_err(|e| RunnerError::Unreachable(e.to_string()))
    }

    async fn get_logs(
        &self,
        base: &str,
        id: TaskId,
        run: u32,
        stream: &str,
        lines: Option<usize>,
    ) -> Result<Option<String>, RunnerError> {
        let mut req = self
            .http
            .get(format!("{base}/api/tasks/{id}/{stream}"))
            .bearer_auth(&self.secret)
            .timeout(self.timeout)
            .query(&[("attempt", run)]);
        if let Some(n) = lines {
            req = req.query(&[("lines", n)]);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| RunnerError::Unreachable(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Self::json_or_error(resp).await.map(|_| None);
        }
        read_limited(resp, MAX_LOG_REPLY_BYTES).await.map(Some)
    }
}

impl RunnerApi for RunnerClient {
    fn execute<'a>(
        &'a self,
        base: &'a str,
        req: &'a ExecuteRequest,
    ) -> BoxFuture<'a, Result<serde_json::Value, RunnerError>> {
        Box::pin(async move { self.post(&format!("{base}/api/execute"), req).await })
    }

    fn control<'a>(
        &'a self,
        base: &'a str,
        action: Control,
        id: TaskId,
    ) -> BoxFuture<'a, Result<serde_json::Value, RunnerError>> {
        Box::pin(async move {
            if action == Control::Stop {
                // A snapshot of a large VPS and the stop's grace period take a while.
                let url = format!("{base}/api/vps/stop/{id}");
                return self
                    .post_within(&url, &serde_json::json!({}), STOP_TIMEOUT)
                    .await;
            }
            let body = ControlRequest {
                task_id: id,
                container_name: None,
            };
            self.post(&format!("{base}/api/{action}"), &body).await
        })
    }

    fn forward<'a>(
        &'a self,
        base: &'a str,
        method: &'a str,
        path: &'a str,
        body: Option<bytes::Bytes>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(u16, bytes::Bytes), RunnerError>> {
        Box::pin(async move {
            let body = body.map(|b| ("application/json", b));
            let resp = self.request(base, method, path, body, timeout).await?;
            let status = resp.status().as_u16();
            let text = read_limited_bytes(resp, MAX_LOG_REPLY_BYTES).await?;
            Ok((status, text))
        })
    }

    fn call<'a>(
        &'a self,
        base: &'a str,
        method: &'a str,
        path: &'a str,
        body: Option<&'a serde_json::Value>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<serde_json::Value, RunnerError>> {
        Box::pin(async move {
            let body = match body {
                Some(b) => Some((
                    "application/json",
                    bytes::Bytes::from(serde_json::to_vec(b).map_err(|e| {
                        RunnerError::Unreachable(format!("cannot encode the request: {e}"))
                    })?),
                )),
                None => None,
            };
            let resp = self.request(base, method, path, body, timeout).await?;
            Self::json_or_error(resp).await
        })
    }

    fn logs<'a>(
        &'a self,
        base: &'a str,
        id: TaskId,
        run: u32,
        stream: &'a str,
        lines: Option<usize>,
    ) -> BoxFuture<'a, Result<Option<String>, RunnerError>> {
        Box::pin(self.get_logs(base, id, run, stream, lines))
    }

    fn follow_logs<'a>(
        &'a self,
        base: &'a str,
        id: TaskId,
        run: u32,
        stream: &'a str,
        lines: Option<usize>,
        offset: Option<u64>,
    ) -> BoxFuture<'a, Result<reqwest::Response, RunnerError>> {
        Box::pin(async move {
            // No overall timeout: the response lasts as long as the task.
            let mut req = self
                .http
                .get(format!("{base}/api/tasks/{id}/{stream}"))
                .bearer_auth(&self.secret)
                .query(&[("follow", "true")])
                .query(&[("attempt", run)]);
            if let Some(n) = lines {
                req = req.query(&[("lines", n)]);
            }
            if let Some(o) = offset {
                req = req.query(&[("offset", o)]);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| RunnerError::Unreachable(e.to_string()))?;
            if !resp.status().is_success() {
                return Self::json_or_error(resp)
                    .await
                    .and_then(|_| Err(RunnerError::Unreachable("no log".into())));
            }
            Ok(resp)
        })
    }
}
