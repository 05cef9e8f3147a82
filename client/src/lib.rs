//! `ferry-client`: a typed async client of the Ferry host's user API.
//!
//! One [`Client`] per host; it is cheap to clone (the connection pool is shared) and every call
//! returns the route's reply type from [`ferry_common::api`] or one [`Error`]. The e2e tests, the benchmarks and
//! the `ferry` CLI talk to the host through it; it depends on `ferry-common` only.
//!
//! ```no_run
//! # async fn demo() -> ferry_client::Result<()> {
//! use ferry_client::{Client, SubmitRequest};
//! let anon = Client::new("http://127.0.0.1:8000")?;
//! let signed_in = anon.login("admin", "secret").await?;
//! let admin = anon.with_session(signed_in.session);
//! let token = admin.create_token("laptop").await?.token;
//! let api = anon.with_token(token);
//! let reply = api
//!     .submit(&SubmitRequest { command: "echo hi".into(), ..Default::default() })
//!     .await?;
//! let task = api.task(reply.task_ids[0]).await?;
//! println!("{}: {}", task.task_id, task.status);
//! # Ok(()) }
//! ```
//!
//! Credentials: an API token (`Authorization: Bearer`) or a session cookie value as
//! [`Client::login`] returns it; the cookie is kept explicitly (no cookie jar) because the host
//! sets exactly one. Timeouts: 30 s per request and 10 s to connect unless the
//! [`ClientBuilder`] says otherwise.
//!
//! For calls the typed methods cannot make (malformed bodies, odd methods, headers to look at),
//! [`Client::raw`] gives a `reqwest::RequestBuilder` with the credentials applied, and
//! [`send_raw`] / [`Client::raw_json`] read any reply as `(status, JSON)`.

mod error;

pub use error::{Error, Result};
pub use ferry_common::api::{
    MessageResponse, NodeInfo, NodeRef, QueuedTask, SubmitRequest, SubmitResponse, TaskResponse,
};
pub use ferry_common::{TaskId, TaskStatus};
pub use reqwest::{Method, StatusCode};

use ferry_common::api::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Default longest wait for a whole request (connect, send, reply).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest wait for the TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request is sent with.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: the anonymous caller (enough for `/health`, `/ready` and signing in).
    #[default]
    None,
    /// An API token (or, for the runner routes, the cluster secret): `Authorization: Bearer`.
    Token(String),
    /// The value of the session cookie set at sign-in.
    Session(String),
}

/// Never prints the secret itself.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Token(_) => f.write_str("Token(..)"),
            Credentials::Session(_) => f.write_str("Session(..)"),
        }
    }
}

/// Options of a [`Client`]; see [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    credentials: Credentials,
    timeout: Duration,
    connect_timeout: Duration,
    local_address: Option<std::net::IpAddr>,
}

impl ClientBuilder {
    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Credentials::Token(token.into());
        self
    }

    /// Sends the session cookie with this value with every request.
    pub fn session(mut self, value: impl Into<String>) -> Self {
        self.credentials = Credentials::Session(value.into());
        self
    }

    /// Longest wait for a whole request (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest wait for the connection (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Local address to connect from (a machine with several; tests use `127.0.0.x`).
    pub fn local_address(mut self, address: std::net::IpAddr) -> Self {
        self.local_address = Some(address);
        self
    }

    pub fn build(self) -> Result<Client> {
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| Error::Config(format!("base URL {:?}: {e}", self.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err(Error::Config(format!(
                "base URL {:?}: must be http(s)://host[:port][/prefix]",
                self.base_url
            )));
        }
        let mut http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("ferry-client/", env!("CARGO_PKG_VERSION")));
        if let Some(a) = self.local_address {
            http = http.local_address(a);
        }
        let http = http
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: url.as_str().trim_end_matches('/').to_string(),
            credentials: self.credentials,
        })
    }
}

/// The result of signing in or registering: the reply and the session it opened.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub reply: LoginResponse,
    /// The session cookie's value; use it with [`Client::with_session`].
    pub session: String,
}

/// Which tasks `GET /api/tasks` lists; `TaskType::All` for every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskType {
    Command,
    Vps,
    All,
}

/// Filters and page of `GET /api/tasks` and `GET /api/tasks/my`; what is left out takes the
/// host's default (command tasks, 100 rows, from the newest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TaskQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_type: Option<TaskType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

impl TaskQuery {
    pub fn status(mut self, status: TaskStatus) -> Self {
        self.status = Some(status);
        self
    }
    pub fn task_type(mut self, task_type: TaskType) -> Self {
        self.task_type = Some(task_type);
        self
    }
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
    pub fn offset(mut self, offset: u32) -> Self {
        self.offset = Some(offset);
        self
    }
}

/// A page of a paginated list (`pending-approval`, `audit`); `Page::default()` is the host's
/// first page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Page {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

impl Page {
    pub fn limit(limit: u32) -> Page {
        Page {
            limit: Some(limit),
            offset: None,
        }
    }
}

/// A client of one host. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Without a trailing slash; paths start with one.
    base: String,
    credentials: Credentials,
}

impl Client {
    /// A client with the default options and no credentials.
    pub fn new(base_url: impl Into<String>) -> Result<Client> {
        Client::builder(base_url).build()
    }

    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            credentials: Credentials::None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            local_address: None,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The same host and connection pool with other credentials.
    pub fn with_credentials(&self, credentials: Credentials) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            credentials,
        }
    }

    /// The same host with an API token.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        self.with_credentials(Credentials::Token(token.into()))
    }

    /// The same host with a session (the value [`Client::login`] returned).
    pub fn with_session(&self, session: impl Into<String>) -> Client {
        self.with_credentials(Credentials::Session(session.into()))
    }

    /// The same host without credentials.
    pub fn anonymous(&self) -> Client {
        self.with_credentials(Credentials::None)
    }

    // ----- the escape hatch -----

    /// A request to `path` (which starts with `/`, query included if any) with this client's
    /// credentials; send it yourself. For what the typed methods cannot express.
    pub fn raw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.credentials {
            Credentials::None => rb,
            Credentials::Token(t) => rb.bearer_auth(t),
            Credentials::Session(s) => {
                rb.header(reqwest::header::COOKIE, format!("{SESSION_COOKIE}={s}"))
            }
        }
    }

    /// Sends a raw request, with `body` as JSON when given, and reads the reply with
    /// [`send_raw`]. Any status is `Ok`; only a request without an answer is an error.
    pub async fn raw_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut rb = self.raw(method, path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        send_raw(rb).await
    }

    // ----- the process -----

    /// `GET /health`: the process answers (also on a runner).
    pub async fn health(&self) -> Result<StatusResponse> {
        self.get("/health").json().await
    }

    /// `GET /ready`: database and scheduler work; an [`Error::Http`] 503 when not.
    pub async fn ready(&self) -> Result<ReadyResponse> {
        self.get("/ready").json().await
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        self.get("/metrics").text().await
    }

    // ----- accounts -----

    /// `GET /api/auth/status`.
    pub async fn auth_status(&self) -> Result<AuthStatus> {
        self.get("/api/auth/status").json().await
    }

    /// `POST /api/auth/login`: opens a session (this client's credentials are not changed).
    pub async fn login(&self, username: &str, password: &str) -> Result<SignedIn> {
        let body = LoginRequest {
            username: username.into(),
            password: password.into(),
        };
        self.post("/api/auth/login").body(&body).signed_in().await
    }

    /// `POST /api/auth/register` with an invitation code; opens a session as the new user.
    pub async fn register(&self, request: &SignupRequest) -> Result<SignedIn> {
        self.post("/api/auth/register")
            .body(request)
            .signed_in()
            .await
    }

    /// `GET /api/auth/me`: who this client is (the anonymous user without credentials).
    pub async fn me(&self) -> Result<UserInfo> {
        self.get("/api/auth/me").json().await
    }

    /// `POST /api/auth/logout`: ends this client's session.
    pub async fn logout(&self) -> Result<MessageResponse> {
        self.post("/api/auth/logout").json().await
    }

    /// `POST /api/auth/password`: also signs out the user's other sessions.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<MessageResponse> {
        let body = PasswordChange {
            current_password: current.into(),
            new_password: new.into(),
        };
        self.post("/api/auth/password").body(&body).json().await
    }

    /// `GET /api/auth/tokens`: the caller's API tokens.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        self.get("/api/auth/tokens").json().await
    }

    /// `POST /api/auth/tokens/create`: the reply holds the token, shown this once.
    pub async fn create_token(&self, name: &str) -> Result<CreatedToken> {
        let body = TokenRequest {
            name: name.into(),
            expires_days: None,
        };
        self.post("/api/auth/tokens/create")
            .body(&body)
            .json()
            .await
    }

    /// `DELETE /api/auth/tokens/{token_id}`.
    pub async fn revoke_token(&self, token_id: i64) -> Result<MessageResponse> {
        self.delete(&format!("/api/auth/tokens/{token_id}"))
            .json()
            .await
    }

    /// `GET /api/auth/users` (operators and admins).
    pub async fn users(&self) -> Result<Vec<UserInfo>> {
        self.get("/api/auth/users").json().await
    }

    /// `PATCH /api/auth/users/{user_id}` (admins): the user as changed.
    pub async fn patch_user(&self, user_id: i64, patch: &UserPatch) -> Result<UserInfo> {
        self.request(Method::PATCH, &format!("/api/auth/users/{user_id}"))
            .body(patch)
            .json()
            .await
    }

    /// `DELETE /api/auth/users/{user_id}` (admins).
    pub async fn delete_user(&self, user_id: i64) -> Result<MessageResponse> {
        self.delete(&format!("/api/auth/users/{user_id}"))
            .json()
            .await
    }

    /// `GET /api/auth/invitations` (admins).
    pub async fn invitations(&self) -> Result<Vec<InvitationInfo>> {
        self.get("/api/auth/invitations").json().await
    }

    /// `POST /api/auth/invitations` (operators invite viewers and users, admins anyone): the
    /// reply's `token` is the code to register with.
    pub async fn create_invitation(&self, request: &InvitationRequest) -> Result<InvitationInfo> {
        self.post("/api/auth/invitations")
            .body(request)
            .json()
            .await
    }

    /// `DELETE /api/auth/invitations/{invitation_id}` (admins).
    pub async fn delete_invitation(&self, invitation_id: i64) -> Result<MessageResponse> {
        self.delete(&format!("/api/auth/invitations/{invitation_id}"))
            .json()
            .await
    }

    /// `GET /api/audit` (admins): the security log, newest first.
    pub async fn audit(&self, page: Page) -> Result<AuditPage> {
        self.get("/api/audit").query(&page).json().await
    }

    // ----- the cluster -----

    /// `GET /api/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.get("/api/nodes").json().await
    }

    /// `GET /api/health`: the last minute of node and cluster health.
    pub async fn cluster_health(&self) -> Result<HealthHistory> {
        self.get("/api/health").json().await
    }

    /// `GET /api/health?hostname=`: one node's current health; 404 for an unknown node.
    pub async fn node_health(&self, hostname: &str) -> Result<NodeHealth> {
        let req = self.get("/api/health").query(&[("hostname", hostname)]);
        let (method, path) = (req.method.clone(), req.path.clone());
        let nodes: Vec<NodeHealth> = req.json().await?;
        nodes.into_iter().next().ok_or_else(|| Error::Decode {
            method,
            path,
            expected: "one node".into(),
            reason: "the list is empty".into(),
        })
    }

    // ----- tasks -----

    /// `POST /api/submit`: one task, or one per target; 202 with their ids.
    pub async fn submit(&self, request: &SubmitRequest) -> Result<SubmitResponse> {
        self.post("/api/submit").body(request).json().await
    }

    /// `GET /api/status/{task_id}`.
    pub async fn task(&self, id: TaskId) -> Result<TaskResponse> {
        self.get(&format!("/api/status/{id}")).json().await
    }

    /// `GET /api/tasks`: newest first; a `user` sees only their own.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<Vec<TaskResponse>> {
        self.get("/api/tasks").query(query).json().await
    }

    /// `GET /api/tasks/my`: the caller's own tasks.
    pub async fn my_tasks(&self, query: &TaskQuery) -> Result<Vec<TaskResponse>> {
        self.get("/api/tasks/my").query(query).json().await
    }

    /// `GET /api/tasks/{task_id}/stdout`: all of it, or its last `lines` lines.
    pub async fn stdout(&self, id: TaskId, lines: Option<u32>) -> Result<String> {
        self.log(id, "stdout", lines).await
    }

    /// `GET /api/tasks/{task_id}/stderr`: all of it, or its last `lines` lines.
    pub async fn stderr(&self, id: TaskId, lines: Option<u32>) -> Result<String> {
        self.log(id, "stderr", lines).await
    }

    async fn log(&self, id: TaskId, stream: &str, lines: Option<u32>) -> Result<String> {
        let mut req = self.get(&format!("/api/tasks/{id}/{stream}"));
        if let Some(n) = lines {
            req = req.query(&[("lines", n)]);
        }
        req.text().await
    }

    /// `POST /api/kill/{task_id}`: the task is `killed` when this returns.
    pub async fn kill(&self, id: TaskId) -> Result<MessageResponse> {
        self.post(&format!("/api/kill/{id}")).json().await
    }

    /// `POST /api/command/{task_id}/pause`.
    pub async fn pause(&self, id: TaskId) -> Result<MessageResponse> {
        self.post(&format!("/api/command/{id}/pause")).json().await
    }

    /// `POST /api/command/{task_id}/resume`.
    pub async fn resume(&self, id: TaskId) -> Result<MessageResponse> {
        self.post(&format!("/api/command/{id}/resume")).json().await
    }

    /// `GET /api/tasks/pending-approval` (operators).
    pub async fn pending_approval(&self, page: Page) -> Result<Vec<TaskResponse>> {
        self.get("/api/tasks/pending-approval")
            .query(&page)
            .json()
            .await
    }

    /// `POST /api/approve/{task_id}` (operators): the task joins the queue.
    pub async fn approve(&self, id: TaskId) -> Result<TaskMessage> {
        self.post(&format!("/api/approve/{id}")).json().await
    }

    /// `POST /api/reject/{task_id}` (operators), with an optional reason the owner sees.
    pub async fn reject(&self, id: TaskId, reason: Option<&str>) -> Result<RejectResponse> {
        let body = RejectRequest {
            reason: reason.map(str::to_string),
        };
        self.post(&format!("/api/reject/{id}"))
            .body(&body)
            .json()
            .await
    }

    // ----- plumbing -----

    fn request(&self, method: Method, path: &str) -> Call {
        Call {
            rb: self.raw(method.clone(), path),
            method,
            path: path.to_string(),
        }
    }

    fn get(&self, path: &str) -> Call {
        self.request(Method::GET, path)
    }

    fn post(&self, path: &str) -> Call {
        self.request(Method::POST, path)
    }

    fn delete(&self, path: &str) -> Call {
        self.request(Method::DELETE, path)
    }
}

/// One typed call being prepared: the request and what to name in errors.
struct Call {
    rb: reqwest::RequestBuilder,
    method: Method,
    path: String,
}

impl Call {
    fn body(mut self, body: &impl Serialize) -> Call {
        self.rb = self.rb.json(body);
        self
    }

    fn query(mut self, query: &impl Serialize) -> Call {
        self.rb = self.rb.query(query);
        self
    }

    /// Sends; a non-2xx reply becomes [`Error::Http`].
    async fn send(self) -> Result<(reqwest::Response, Method, String)> {
        let Call { rb, method, path } = self;
        let resp = rb.send().await.map_err(|e| transport(&method, &path, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok((resp, method, path));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport(&method, &path, e))?;
        Err(Error::Http {
            detail: detail_of(status, &body),
            method,
            path,
            status,
        })
    }

    async fn json<T: DeserializeOwned>(self) -> Result<T> {
        let (resp, method, path) = self.send().await?;
        decode(resp, method, path).await
    }

    async fn text(self) -> Result<String> {
        let (resp, method, path) = self.send().await?;
        resp.text().await.map_err(|e| transport(&method, &path, e))
    }

    /// A sign-in reply and the session cookie it set.
    async fn signed_in(self) -> Result<SignedIn> {
        let (resp, method, path) = self.send().await?;
        let session = session_cookie(resp.headers());
        let reply: LoginResponse = decode(resp, method.clone(), path.clone()).await?;
        let session = session.ok_or_else(|| Error::Decode {
            method,
            path,
            expected: format!("a {SESSION_COOKIE} cookie"),
            reason: "no Set-Cookie header carries it".into(),
        })?;
        Ok(SignedIn { reply, session })
    }
}

fn transport(method: &Method, path: &str, source: reqwest::Error) -> Error {
    Error::Transport {
        method: method.clone(),
        path: path.to_string(),
        source,
    }
}

async fn decode<T: DeserializeOwned>(
    resp: reqwest::Response,
    method: Method,
    path: String,
) -> Result<T> {
    let body = resp
        .bytes()
        .await
        .map_err(|e| transport(&method, &path, e))?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| Error::Decode {
        method,
        path,
        expected: short_type_name::<T>(),
        reason: e.to_string(),
    })
}

/// The `detail` of `{"detail": "..."}`, else the body itself (cut short), else the reason
/// phrase of the status.
fn detail_of(status: StatusCode, body: &[u8]) -> String {
    if let Ok(e) = serde_json::from_slice::<ferry_common::ErrorBody>(body) {
        return e.detail;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("no detail").to_string();
    }
    const MAX: usize = 1000;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// Value of the session cookie among the `Set-Cookie` headers; `None` when absent or emptied
/// (as logout does).
fn session_cookie(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// `Vec<TaskResponse>` rather than `alloc::vec::Vec<ferry_common::api::TaskResponse>`.
fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(word.rsplit("::").next().unwrap_or(word));
        word.clear();
    };
    for ch in full.chars() {
        if ch.is_alphanumeric() || ch == '_' || ch == ':' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Sends a request made with [`Client::raw`] (or any `reqwest` request) and returns the
/// status and the body: as JSON, `Null` when empty, a JSON string holding the text when it is
/// not JSON. Any status is `Ok`; only a request that cannot be built or gets no answer is an
/// error.
pub async fn send_raw(rb: reqwest::RequestBuilder) -> Result<(u16, Value)> {
    let (http, req) = rb.build_split();
    let req = req.map_err(|e| Error::Config(format!("request: {e}")))?;
    let (method, path) = (req.method().clone(), req.url().path().to_string());
    let resp = http
        .execute(req)
        .await
        .map_err(|e| transport(&method, &path, e))?;
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .map_err(|e| transport(&method, &path, e))?;
    let value = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    };
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        let c = Client::new("http://127.0.0.1:8000/").expect("valid");
        assert_eq!(c.base_url(), "http://127.0.0.1:8000");
        let c = Client::new("http://h:1/prefix/").expect("valid");
        assert_eq!(c.base_url(), "http://h:1/prefix");
        for bad in ["127.0.0.1:8000", "ftp://h", "http://h/?a=1", ""] {
            assert!(
                matches!(Client::new(bad), Err(Error::Config(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn details_come_from_the_house_shape_or_the_body() {
        let s = StatusCode::CONFLICT;
        assert_eq!(
            detail_of(s, br#"{"detail":"already paused"}"#),
            "already paused"
        );
        assert_eq!(detail_of(s, b"  plain words \n"), "plain words");
        assert_eq!(detail_of(s, b""), "Conflict");
        assert_eq!(
            detail_of(s, "é".repeat(1500).as_bytes()).chars().count(),
            1003
        );
    }

    #[test]
    fn the_session_is_read_from_set_cookie() {
        let mut h = reqwest::header::HeaderMap::new();
        h.append(
            reqwest::header::SET_COOKIE,
            "other=1; Path=/".parse().expect("header"),
        );
        assert_eq!(session_cookie(&h), None);
        h.append(
            reqwest::header::SET_COOKIE,
            "kohakuriver_session=abc; Max-Age=60; HttpOnly"
                .parse()
                .expect("header"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        let mut cleared = reqwest::header::HeaderMap::new();
        cleared.append(
            reqwest::header::SET_COOKIE,
            "kohakuriver_session=; Max-Age=0".parse().expect("header"),
        );
        assert_eq!(session_cookie(&cleared), None);
    }

    #[test]
    fn type_names_are_short() {
        assert_eq!(short_type_name::<Vec<TaskResponse>>(), "Vec<TaskResponse>");
        assert_eq!(short_type_name::<Option<u32>>(), "Option<u32>");
    }

    #[test]
    fn queries_leave_out_what_is_unset() {
        let q = TaskQuery::default()
            .status(TaskStatus::PendingApproval)
            .limit(5);
        let url = reqwest::Client::new()
            .get("http://h/api/tasks")
            .query(&q)
            .build()
            .expect("request");
        assert_eq!(url.url().query(), Some("status=pending_approval&limit=5"));
        let q = TaskQuery::default().task_type(TaskType::All);
        let url = reqwest::Client::new()
            .get("http://h/api/tasks")
            .query(&q)
            .query(&Page::default())
            .build()
            .expect("request");
        assert_eq!(url.url().query(), Some("task_type=all"));
    }

    #[test]
    fn credentials_are_applied_and_never_printed() {
        let c = Client::builder("http://h:1")
            .bearer_token("tok")
            .build()
            .expect("client");
        let req = c.raw(Method::GET, "/api/nodes").build().expect("request");
        assert_eq!(req.headers()["authorization"], "Bearer tok");
        let s = c.with_session("sess");
        let req = s.raw(Method::GET, "/x").build().expect("request");
        assert_eq!(req.headers()["cookie"], "kohakuriver_session=sess");
        assert!(req.headers().get("authorization").is_none());
        let shown = format!("{c:?} {s:?}");
        assert!(
            shown.contains("Token(..)") && shown.contains("Session(..)"),
            "{shown}"
        );
        assert!(
            !shown.contains("tok\"") && !shown.contains("sess\""),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_host_is_a_transport_error_naming_the_call() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let c = Client::new(format!("http://127.0.0.1:{port}")).expect("client");
        let e = c.nodes().await.expect_err("nothing listens");
        assert!(matches!(e, Error::Transport { .. }), "{e:?}");
        assert!(e.to_string().starts_with("GET /api/nodes: "), "{e}");
        assert_eq!(e.status(), None);
    }
}
