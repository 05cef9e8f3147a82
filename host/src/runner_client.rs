//! Calls from the host to runners, each carrying the cluster secret. One shared HTTP client
//! (connection reuse) with per-call timeouts.

use ferry_common::runner_proto::{ControlRequest, ExecuteRequest};
use ferry_common::{ErrorBody, TaskId};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The runner could not be reached (or did not answer in time).
    #[error("runner unreachable: {0}")]
    Unreachable(String),
    /// The runner answered with an error status.
    #[error("runner refused ({status}): {detail}")]
    Refused { status: u16, detail: String },
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
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.secret)
            .timeout(self.timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| RunnerError::Unreachable(e.to_string()))?;
        Self::json_or_error(resp).await
    }

    async fn json_or_error(resp: reqwest::Response) -> Result<serde_json::Value, RunnerError> {
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| RunnerError::Unreachable(e.to_string()))?;
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

    pub async fn execute(
        &self,
        base: &str,
        req: &ExecuteRequest,
    ) -> Result<serde_json::Value, RunnerError> {
        self.post(&format!("{base}/api/execute"), req).await
    }

    /// `action` is `kill`, `pause` or `resume`.
    pub async fn control(
        &self,
        base: &str,
        action: &str,
        id: TaskId,
    ) -> Result<serde_json::Value, RunnerError> {
        let body = ControlRequest {
            task_id: id,
            container_name: Some(ferry_common::task_container_name(id)),
        };
        self.post(&format!("{base}/api/{action}"), &body).await
    }

    /// The last `lines` lines of a task's `stream` (`stdout`/`stderr`); `Ok(None)` when the runner
    /// has no such log.
    pub async fn logs(
        &self,
        base: &str,
        id: TaskId,
        stream: &str,
        lines: Option<usize>,
    ) -> Result<Option<String>, RunnerError> {
        let mut req = self
            .http
            .get(format!("{base}/api/tasks/{id}/{stream}"))
            .bearer_auth(&self.secret)
            .timeout(self.timeout);
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
        resp.text()
            .await
            .map(Some)
            .map_err(|e| RunnerError::Unreachable(e.to_string()))
    }
}
