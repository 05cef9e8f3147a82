//! The HTTP surface. [`ROUTES`] is the one authorisation matrix: every route with the access
//! it requires; the router is built from it, so a route cannot exist without an entry (and
//! the matrix test in `tests/` calls every entry as every role). Handlers only parse, call a
//! service and map its error.

mod approval;
mod audit;
mod auth;
pub mod error;
mod nodes;
mod ops;
mod runner;
mod tasks;

use crate::auth::{Access, Role};
use crate::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;
use error::ApiError;
use std::time::Duration;
use tower_http::trace::TraceLayer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn r(method: &'static str, path: &'static str, access: Access) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
    }
}

use Access::{Anyone, ClusterSecret, Public};
const VIEWER: Access = Access::Role(Role::Viewer);
const USER: Access = Access::Role(Role::User);
const OPERATOR: Access = Access::Role(Role::Operator);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every route and who may call it. Ownership (a `user` acts only on their own tasks) is
/// checked in the services on top of this.
pub const ROUTES: &[RouteSpec] = &[
    r("GET", "/health", Public),
    r("GET", "/ready", Public),
    r("GET", "/metrics", Public),
    // Accounts.
    r("GET", "/api/auth/status", Public),
    r("POST", "/api/auth/login", Public),
    r("POST", "/api/auth/register", Public),
    r("GET", "/api/auth/me", Anyone),
    r("POST", "/api/auth/logout", Anyone),
    r("POST", "/api/auth/password", VIEWER),
    r("GET", "/api/auth/tokens", VIEWER),
    r("POST", "/api/auth/tokens/create", VIEWER),
    r("DELETE", "/api/auth/tokens/{token_id}", VIEWER),
    r("GET", "/api/auth/users", OPERATOR),
    r("PATCH", "/api/auth/users/{user_id}", ADMIN),
    r("DELETE", "/api/auth/users/{user_id}", ADMIN),
    r("GET", "/api/auth/invitations", ADMIN),
    r("POST", "/api/auth/invitations", OPERATOR),
    r("DELETE", "/api/auth/invitations/{invitation_id}", ADMIN),
    r("GET", "/api/audit", ADMIN),
    // Runners.
    r("POST", "/api/register", ClusterSecret),
    r("PUT", "/api/heartbeat/{hostname}", ClusterSecret),
    r("POST", "/api/update", ClusterSecret),
    // Cluster and tasks.
    r("GET", "/api/nodes", VIEWER),
    r("GET", "/api/health", VIEWER),
    r("GET", "/api/tasks", VIEWER),
    r("GET", "/api/status/{task_id}", VIEWER),
    r("GET", "/api/tasks/my", USER),
    r("POST", "/api/submit", USER),
    r("GET", "/api/tasks/{task_id}/stdout", USER),
    r("GET", "/api/tasks/{task_id}/stderr", USER),
    r("POST", "/api/kill/{task_id}", USER),
    r("POST", "/api/command/{task_id}/{command}", USER),
    r("GET", "/api/tasks/pending-approval", OPERATOR),
    r("POST", "/api/approve/{task_id}", OPERATOR),
    r("POST", "/api/reject/{task_id}", OPERATOR),
];

fn handler(spec: &RouteSpec) -> MethodRouter<AppState> {
    match (spec.method, spec.path) {
        ("GET", "/health") => get(ops::health),
        ("GET", "/ready") => get(ops::ready),
        ("GET", "/metrics") => get(ops::metrics),
        ("GET", "/api/auth/status") => get(auth::status),
        ("POST", "/api/auth/login") => post(auth::login),
        ("POST", "/api/auth/register") => post(auth::register),
        ("GET", "/api/auth/me") => get(auth::me),
        ("POST", "/api/auth/logout") => post(auth::logout),
        ("POST", "/api/auth/password") => post(auth::change_password),
        ("GET", "/api/auth/tokens") => get(auth::list_tokens),
        ("POST", "/api/auth/tokens/create") => post(auth::create_token),
        ("DELETE", "/api/auth/tokens/{token_id}") => delete(auth::revoke_token),
        ("GET", "/api/auth/users") => get(auth::list_users),
        ("PATCH", "/api/auth/users/{user_id}") => patch(auth::patch_user),
        ("DELETE", "/api/auth/users/{user_id}") => delete(auth::delete_user),
        ("GET", "/api/auth/invitations") => get(auth::list_invitations),
        ("POST", "/api/auth/invitations") => post(auth::create_invitation),
        ("DELETE", "/api/auth/invitations/{invitation_id}") => delete(auth::delete_invitation),
        ("GET", "/api/audit") => get(audit::list),
        ("POST", "/api/register") => post(runner::register),
        ("PUT", "/api/heartbeat/{hostname}") => put(runner::heartbeat),
        ("POST", "/api/update") => post(runner::update),
        ("GET", "/api/nodes") => get(nodes::list),
        ("GET", "/api/health") => get(nodes::health),
        ("GET", "/api/tasks") => get(tasks::list),
        ("GET", "/api/status/{task_id}") => get(tasks::status),
        ("GET", "/api/tasks/my") => get(tasks::list_mine),
        ("POST", "/api/submit") => post(tasks::submit),
        ("GET", "/api/tasks/{task_id}/stdout") => get(tasks::stdout),
        ("GET", "/api/tasks/{task_id}/stderr") => get(tasks::stderr),
        ("POST", "/api/kill/{task_id}") => post(tasks::kill),
        ("POST", "/api/command/{task_id}/{command}") => post(tasks::command),
        ("GET", "/api/tasks/pending-approval") => get(approval::pending),
        ("POST", "/api/approve/{task_id}") => post(approval::approve),
        ("POST", "/api/reject/{task_id}") => post(approval::reject),
        (m, p) => panic!("route {m} {p} is in ROUTES but has no handler"),
    }
}

/// Longest a request may take before it is answered 408 (in the house error shape).
const REQUEST_TIME_LIMIT: Duration = Duration::from_secs(60);

async fn time_limit(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(REQUEST_TIME_LIMIT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "The request took too long and was abandoned",
        )
        .into_response(),
    }
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for spec in ROUTES {
        let layer = axum::middleware::from_fn_with_state(
            (state.clone(), spec.access),
            crate::auth::authorize,
        );
        router = router.route(spec.path, handler(spec).route_layer(layer));
    }
    let body_limit = state.config.max_body_bytes;
    router
        .fallback(|| async { ApiError::not_found("Not Found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(time_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_handler_and_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for spec in ROUTES {
            let _ = handler(spec);
            assert!(
                seen.insert((spec.method, spec.path)),
                "{} {} listed twice",
                spec.method,
                spec.path
            );
        }
    }
}
