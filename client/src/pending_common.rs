//! Wire types of the routes whose replies the host still builds with an ad-hoc `json!`
//! (accounts, tokens, invitations, audit, approval, health). Each is shaped after what the host
//! sends today; they move to `ferry_common::api` with issue 12 item 1, after which this module
//! only re-exports them.

use ferry_common::TaskId;
use serde::{Deserialize, Serialize};

// moves to ferry_common::api with issue 12 item 1
/// Name of the session cookie the host sets at sign-in (the original's name, kept for its
/// clients).
pub const SESSION_COOKIE: &str = "kohakuriver_session";

// moves to ferry_common::api with issue 12 item 1
/// Roles, lowest first; each includes the rights of those below. `anony` is the caller who sent
/// no credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Anony,
    Viewer,
    User,
    Operator,
    Admin,
}

// moves to ferry_common::api with issue 12 item 1
/// `GET /health` (host and runner): the process answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
    pub version: String,
}

// moves to ferry_common::api with issue 12 item 1
/// `GET /ready` (host and runner): `{"status": "ready"}`; 503 when not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyResponse {
    pub status: String,
}

// moves to ferry_common::api with issue 12 item 1
/// `GET /api/auth/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthStatus {
    pub auth_enabled: bool,
    /// Lifetime of a session in hours; null when sign-in is off.
    pub session_expire_hours: Option<u64>,
}

// moves to ferry_common::api with issue 12 item 1
/// Body of `POST /api/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

// moves to ferry_common::api with issue 12 item 1
/// Body of `POST /api/auth/register`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The invitation code (the host also takes it as `?token=`, which ends up in access logs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation: Option<String>,
}

// moves to ferry_common::api with issue 12 item 1
/// A user as `/api/auth/me`, `/api/auth/users` and the sign-in replies show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// -1 for the anonymous caller, 0 when sign-in is off.
    pub id: i64,
    pub username: String,
    pub display_name: Option<String>,
    pub is_active: bool,
    pub role: Role,
    pub created_at: Option<String>,
}

// moves to ferry_common::api with issue 12 item 1
/// Reply of `POST /api/auth/login` and `POST /api/auth/register` (which also set the session
/// cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthResponse {
    pub message: String,
    pub user: UserInfo,
}

// moves to ferry_common::api with issue 12 item 1
/// Body of `POST /api/auth/password`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

// moves to ferry_common::api with issue 12 item 1
/// An API token as `GET /api/auth/tokens` lists it (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub last_used: Option<String>,
    pub created_at: String,
}

// moves to ferry_common::api with issue 12 item 1
/// Body of `POST /api/auth/tokens/create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub name: String,
}

// moves to ferry_common::api with issue 12 item 1
/// Reply of `POST /api/auth/tokens/create`: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    pub token: String,
    pub created_at: String,
}

// moves to ferry_common::api with issue 12 item 1
/// Body of `PATCH /api/auth/users/{user_id}`: only the fields given change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    /// A new password (for a user who forgot theirs); ends all their sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

// moves to ferry_common::api with issue 12 item 1
/// Body of `POST /api/auth/invitations`; what is left out takes the host's default (role
/// `user`, one use, 72 hours).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InvitationRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_usage: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_hours: Option<i64>,
}

// moves to ferry_common::api with issue 12 item 1
/// An invitation as its creation and `GET /api/auth/invitations` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: i64,
    /// The code to register with: only in the reply of its creation.
    pub token: Option<String>,
    pub role: Role,
    pub group_id: Option<i64>,
    pub max_usage: i64,
    pub usage_count: i64,
    pub remaining_uses: i64,
    pub expires_at: String,
    pub is_valid: bool,
    pub created_by_id: Option<i64>,
    pub created_at: String,
}

// moves to ferry_common::api with issue 12 item 1
/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor_id: Option<i64>,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    /// Address of the caller, when known.
    pub address: Option<String>,
}

// moves to ferry_common::api with issue 12 item 1
/// Reply of `GET /api/audit`: one page, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

// moves to ferry_common::api with issue 12 item 1
/// Reply of `POST /api/approve/{task_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalResponse {
    pub message: String,
    pub task_id: TaskId,
}

// moves to ferry_common::api with issue 12 item 1
/// Body of `POST /api/reject/{task_id}` (the host also takes `?reason=`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RejectRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// moves to ferry_common::api with issue 12 item 1
/// Reply of `POST /api/reject/{task_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionResponse {
    pub message: String,
    pub task_id: TaskId,
    pub reason: Option<String>,
}

// moves to ferry_common::api with issue 12 item 1
/// One node in `GET /api/health`. The figures are the runner's last heartbeat's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub hostname: String,
    /// `online` or `offline`.
    pub status: String,
    pub last_heartbeat: Option<String>,
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub total_cores: u32,
    pub numa_topology: serde_json::Value,
    pub current_avg_temp: Option<f64>,
    pub current_max_temp: Option<f64>,
    pub gpu_info: serde_json::Value,
}

// moves to ferry_common::api with issue 12 item 1
/// The cluster as a whole in one sample of `GET /api/health` (camelCase, as the original).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    pub total_nodes: u64,
    pub online_nodes: u64,
    pub total_cores: u64,
    pub total_mem_bytes: u64,
    pub used_mem_bytes: u64,
    pub avg_cpu_percent: f64,
    pub avg_mem_percent: f64,
    pub max_avg_cpu_temp: f64,
    pub max_max_cpu_temp: f64,
    pub last_updated: String,
}

// moves to ferry_common::api with issue 12 item 1
/// Reply of `GET /api/health` without `hostname`: one sample a second, oldest first, up to a
/// minute; `nodes[i]` and `aggregate[i]` are the same sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthHistory {
    pub nodes: Vec<Vec<NodeHealth>>,
    pub aggregate: Vec<ClusterHealth>,
}
