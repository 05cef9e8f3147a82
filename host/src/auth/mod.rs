//! Who is calling and what they may do.
//!
//! Credentials, first match wins: the session cookie (`kohakuriver_session`), then
//! `Authorization: Bearer <API token>`. No credentials means anonymous; credentials that are
//! presented but bad (unknown, expired, revoked, disabled user) are refused with 401 — never
//! silently treated as anonymous. Each route declares an [`Access`] level in the route table
//! (`api::routes`), enforced by [`authorize`] before the handler runs; ownership of a task is
//! checked in the services.

pub mod origin;
pub mod password;
pub mod ratelimit;
pub mod secrets;
pub mod service;

use crate::api::error::ApiError;
use crate::store::auth as store;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

pub use ferry_common::api::SESSION_COOKIE;

pub use ferry_common::Role;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential processing at all (health probes, login, registration).
    Public,
    /// Anyone, but credentials that are presented must be valid.
    Anyone,
    /// A signed-in user of at least this role.
    Role(Role),
    /// Runners only: the cluster secret.
    ClusterSecret,
    /// Creating a VPS: operators, or users too when the host's `user_vps` allows it.
    VpsCreate,
    /// Listing and reading a task's files: users (their own), viewers too when the host's
    /// `viewer_file_access` allows it.
    FileRead,
}

impl Access {
    /// The access a route needs under this host's configuration.
    pub fn resolved(self, config: &crate::config::HostConfig) -> Access {
        match self {
            Access::VpsCreate if config.user_vps => Access::Role(Role::User),
            Access::VpsCreate => Access::Role(Role::Operator),
            Access::FileRead if config.viewer_file_access => Access::Role(Role::Viewer),
            Access::FileRead => Access::Role(Role::User),
            other => other,
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    /// Authentication is disabled by configuration: everyone acts as an administrator.
    AuthDisabled,
    /// A session; the SHA-256 of its id.
    Session(String),
    /// An API token; its row id.
    Token(i64),
}

/// The caller, as handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Option<i64>,
    pub username: String,
    pub display_name: Option<String>,
    pub role: Role,
    pub credential: Credential,
    pub created_at: Option<i64>,
    /// The client's address, for the audit log and rate limits.
    pub address: Option<String>,
}

impl Caller {
    pub fn anonymous(address: Option<String>) -> Caller {
        Caller {
            user_id: None,
            username: "_anonymous".into(),
            display_name: Some("Anonymous".into()),
            role: Role::Anony,
            credential: Credential::Anonymous,
            created_at: None,
            address,
        }
    }

    fn system(address: Option<String>) -> Caller {
        Caller {
            user_id: None,
            username: "_system".into(),
            display_name: Some("System (Auth Disabled)".into()),
            role: Role::Admin,
            credential: Credential::AuthDisabled,
            created_at: None,
            address,
        }
    }

    fn from_user(
        u: store::UserRow,
        credential: Credential,
        address: Option<String>,
    ) -> Result<Caller, ApiError> {
        let role = u
            .role
            .parse::<Role>()
            .map_err(|e| ApiError::internal(format!("user {}: {e}", u.username)))?;
        Ok(Caller {
            user_id: Some(u.id),
            username: u.username,
            display_name: u.display_name,
            role,
            credential,
            created_at: Some(u.created_at),
            address,
        })
    }

    pub fn at_least(&self, role: Role) -> bool {
        self.role >= role
    }

    /// Whether the caller may act on something owned by `owner` (owners, and operators up).
    pub fn may_touch(&self, owner: Option<i64>) -> bool {
        self.at_least(Role::Operator) || (owner.is_some() && owner == self.user_id)
    }
}

fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn client_address(req: &Request) -> Option<String> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// Resolves the caller of a request (see the module docs for the rules).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    address: Option<String>,
) -> Result<Caller, ApiError> {
    if !state.config.auth_enabled {
        return Ok(Caller::system(address));
    }
    let now = ferry_common::time::now_ms();
    let cookie = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie_value(h, SESSION_COOKIE).map(str::to_string))
        .filter(|v| !v.is_empty());
    if let Some(session) = cookie {
        let hash = secrets::digest(&session);
        let h = hash.clone();
        let user = state
            .db
            .read(move |c| store::session_user(c, &h, now))
            .await?;
        return match user {
            Some(u) => Caller::from_user(u, Credential::Session(hash), address),
            None => Err(ApiError::unauthorized(
                "Session expired or invalid: log in again",
            )),
        };
    }
    let bearer = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Some(value) = bearer {
        let Some(token) = value
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err(ApiError::unauthorized(
                "Authorization header must be 'Bearer <token>'",
            ));
        };
        let hash = secrets::digest(token);
        let h = hash.clone();
        let found = state
            .db
            .read(move |c| store::token_user(c, &h, now))
            .await?;
        let Some((user, token_id, stored, last_used)) =
            found.filter(|(_, _, stored, _)| secrets::equal(stored, &hash))
        else {
            return Err(ApiError::unauthorized("Invalid or revoked API token"));
        };
        debug_assert!(secrets::equal(&stored, &hash));
        // Record use at most once a minute per token, not on every request.
        if last_used.is_none_or(|t| now - t > 60_000) {
            let _ = state
                .db
                .write(move |c| store::touch_token(c, token_id, now))
                .await;
        }
        return Caller::from_user(user, Credential::Token(token_id), address);
    }
    Ok(Caller::anonymous(address))
}

fn peer_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The browser-facing checks of [`origin`]: the `Host` allow-list, then (for unsafe methods
/// without a bearer credential) the cross-site check. Runners' routes skip both: they need the
/// cluster secret, which no web page has.
fn check_origin(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let policy = &state.config.origin;
    let host = policy.effective_host(req.headers(), peer_ip(req));
    let refuse = |e: origin::OriginError| ApiError::forbidden(e.to_string());
    policy.check_host(host.as_deref()).map_err(refuse)?;
    if !origin::has_bearer(req.headers()) {
        policy
            .check_same_origin(req.method(), req.headers(), host.as_deref())
            .map_err(refuse)?;
    }
    Ok(())
}

/// Route middleware: resolves the caller, checks the route's [`Access`], and hands the caller
/// to the handler as a request extension.
pub async fn authorize(
    State((state, access)): State<(AppState, Access)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let access = access.resolved(&state.config);
    // Runners' routes are never refused for load: heartbeats must get through a flood.
    let probe = crate::api::PROBES.contains(&req.uri().path());
    let _slot = if access != Access::ClusterSecret && !probe {
        let slot = state.user_slots.clone().try_acquire_owned().map_err(|_| {
            let mut e = ApiError::unavailable(
                "The host has too many requests in progress; try again shortly",
            );
            e.retry_after = Some(1);
            e
        })?;
        Some(slot)
    } else {
        None
    };
    if access != Access::ClusterSecret {
        check_origin(&state, &req)?;
    }
    match access {
        Access::Public => {
            let caller = Caller::anonymous(client_address(&req));
            req.extensions_mut().insert(caller);
        }
        Access::ClusterSecret => {
            let header = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if !ferry_common::secret::bearer_matches(header, &state.config.cluster_secret) {
                return Err(ApiError::unauthorized(
                    "runner calls need the cluster secret (Authorization: Bearer <cluster_secret>)",
                ));
            }
        }
        Access::Anyone => {
            let caller = authenticate(&state, req.headers(), client_address(&req)).await?;
            req.extensions_mut().insert(caller);
        }
        // Resolved above.
        Access::VpsCreate | Access::FileRead => {
            return Err(ApiError::internal("route access not resolved"))
        }
        Access::Role(min) => {
            let caller = authenticate(&state, req.headers(), client_address(&req)).await?;
            if caller.role == Role::Anony {
                return Err(ApiError::unauthorized("Not authenticated"));
            }
            if caller.role < min {
                return Err(ApiError::forbidden(format!(
                    "Insufficient permissions. Required role: {min}"
                )));
            }
            req.extensions_mut().insert(caller);
        }
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(
            Role::Admin > Role::Operator
                && Role::Operator > Role::User
                && Role::User > Role::Viewer
        );
        assert!(Role::Viewer > Role::Anony);
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn reads_the_session_cookie() {
        assert_eq!(
            cookie_value("a=1; kohakuriver_session=abc; b=2", SESSION_COOKIE),
            Some("abc")
        );
        assert_eq!(
            cookie_value("kohakuriver_sessionx=abc", SESSION_COOKIE),
            None
        );
    }
}
