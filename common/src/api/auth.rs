//! Accounts: `/api/auth/*` and `/api/audit` bodies and replies.

use crate::task::Role;
use serde::{Deserialize, Serialize};

/// Name of the session cookie login and registration set (the original's name).
pub const SESSION_COOKIE: &str = "kohakuriver_session";

/// Reply of `GET /api/auth/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthStatus {
    pub auth_enabled: bool,
    /// Session lifetime in hours; null when authentication is off.
    pub session_expire_hours: Option<u64>,
}

/// A user as the API shows it (`/api/auth/me`, user lists, login replies).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    /// -1 for the anonymous caller, 0 when authentication is off.
    pub id: i64,
    pub username: String,
    pub display_name: Option<String>,
    pub is_active: bool,
    pub role: Role,
    pub created_at: Option<String>,
}

/// Body of `POST /api/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// Reply of login and registration (the session cookie comes in `Set-Cookie`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    pub message: String,
    pub user: UserInfo,
}

/// Body of `POST /api/auth/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignupRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// The invitation code; preferred over `?token=` so it stays out of access logs.
    #[serde(default)]
    pub invitation: Option<String>,
}

/// Body of `POST /api/auth/password`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub last_used: Option<String>,
    pub created_at: String,
    /// Ferry: when the token stops working (`null`: never).
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// Body of `POST /api/auth/tokens/create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    pub name: String,
    /// Ferry: days until the token stops working (1 to 3650); absent: it never expires.
    #[serde(default)]
    pub expires_days: Option<u32>,
}

/// Reply of `POST /api/auth/tokens/create`: the secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    pub token: String,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// Body of `PATCH /api/auth/users/{user_id}` (admin); absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct UserPatch {
    pub display_name: Option<String>,
    /// A role name; checked by the host so a bad one gets its own message.
    pub role: Option<String>,
    pub is_active: Option<bool>,
    /// A new password (for a user who forgot theirs); ends all their sessions.
    pub password: Option<String>,
}

/// Body of `POST /api/auth/invitations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct InvitationRequest {
    /// A role name; checked by the host so a bad one gets its own message.
    pub role: String,
    pub max_usage: i64,
    pub expires_hours: i64,
}

impl Default for InvitationRequest {
    fn default() -> Self {
        InvitationRequest {
            role: Role::User.as_str().to_string(),
            max_usage: 1,
            expires_hours: 72,
        }
    }
}

/// An invitation; `token` is set only in the reply that creates it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvitationInfo {
    pub id: i64,
    pub token: Option<String>,
    pub role: Role,
    /// Groups do not exist in Ferry: always null, kept for the original's clients.
    pub group_id: Option<i64>,
    pub max_usage: i64,
    pub usage_count: i64,
    pub remaining_uses: i64,
    pub expires_at: String,
    pub is_valid: bool,
    pub created_by_id: Option<i64>,
    pub created_at: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor_id: Option<i64>,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub address: Option<String>,
}

/// Reply of `GET /api/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}
