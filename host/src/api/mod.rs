//! The HTTP surface. [`ROUTES`] is the one list of routes: each entry carries its method,
//! path, the access it requires, what it reads and answers, and its handler. The router and
//! the OpenAPI document ([`openapi`]) are both built from it, so a route cannot exist without
//! an entry (and the matrix test in `tests/` calls every entry as every role). Handlers only
//! parse, authorise, call a service and map its error.

mod approval;
mod audit;
mod auth;
mod envs;
pub mod error;
mod events;
mod files;
mod nodes;
pub mod openapi;
mod ops;
mod runner;
mod tasks;
mod vps;
mod ws;

use crate::auth::{Access, Role};
use crate::AppState;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;
use error::ApiError;
use ferry_common::api::*;
use ferry_common::runner_proto::{
    Heartbeat, HeartbeatResponse, RegisterRequest, RegisterResponse, TaskUpdate,
};
use openapi::{list, one, Reply, SchemaFn};
use std::time::Duration;
use tower_http::trace::TraceLayer;

/// One route: how it is called, who may call it, what it takes and answers (for the OpenAPI
/// document) and the handler that serves it.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// The JSON body it reads, if any.
    pub body: Option<SchemaFn>,
    pub reply: Reply,
    pub handler: fn() -> MethodRouter<AppState>,
}

impl RouteSpec {
    const fn at(
        method: &'static str,
        path: &'static str,
        access: Access,
        summary: &'static str,
        handler: fn() -> MethodRouter<AppState>,
    ) -> RouteSpec {
        RouteSpec {
            method,
            path,
            access,
            summary,
            body: None,
            reply: Reply::Json(200, one::<MessageResponse>),
            handler,
        }
    }

    /// Answers `T` as JSON with 200.
    const fn json<T: utoipa::ToSchema>(mut self) -> RouteSpec {
        self.reply = Reply::Json(200, one::<T>);
        self
    }

    /// Answers a list of `T`.
    const fn list_of<T: utoipa::ToSchema>(mut self) -> RouteSpec {
        self.reply = Reply::Json(200, list::<T>);
        self
    }

    /// Answers `T` with 202 Accepted.
    const fn accepted<T: utoipa::ToSchema>(mut self) -> RouteSpec {
        self.reply = Reply::Json(202, one::<T>);
        self
    }

    /// Answers plain text of this content type.
    const fn text(mut self, content_type: &'static str) -> RouteSpec {
        self.reply = Reply::Text(content_type);
        self
    }

    /// Reads a JSON body `T`.
    const fn body<T: utoipa::ToSchema>(mut self) -> RouteSpec {
        self.body = Some(one::<T>);
        self
    }
}

use Access::{Anyone, ClusterSecret, Public};
const VIEWER: Access = Access::Role(Role::Viewer);
const USER: Access = Access::Role(Role::User);
const OPERATOR: Access = Access::Role(Role::Operator);
const ADMIN: Access = Access::Role(Role::Admin);
/// Every route, who may call it and what it answers; the router and `/openapi.json` are both
/// built from this list, so neither can miss a route. Ownership (a `user` acts only on their
/// own tasks) is checked in the services on top of this.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec::at("GET", "/health", Public, "The process answers", || {
        get(ops::health)
    })
    .json::<StatusResponse>(),
    RouteSpec::at(
        "GET",
        "/ready",
        Public,
        "Database and scheduler work",
        || get(ops::ready),
    )
    .json::<ReadyResponse>(),
    RouteSpec::at(
        "GET",
        "/metrics",
        Public,
        "Prometheus metrics (aggregate counts only)",
        || get(ops::metrics),
    )
    .text("text/plain; version=0.0.4"),
    RouteSpec::at("GET", "/openapi.json", Public, "This document", || {
        get(openapi::serve)
    })
    .text("application/json"),
    // Accounts.
    RouteSpec::at(
        "GET",
        "/api/auth/status",
        Public,
        "Whether sign-in is required",
        || get(auth::status),
    )
    .json::<AuthStatus>(),
    RouteSpec::at(
        "POST",
        "/api/auth/login",
        Public,
        "Sign in; sets the session cookie",
        || post(auth::login),
    )
    .body::<LoginRequest>()
    .json::<LoginResponse>(),
    RouteSpec::at(
        "POST",
        "/api/auth/register",
        Public,
        "Create an account with an invitation",
        || post(auth::register),
    )
    .body::<SignupRequest>()
    .json::<LoginResponse>(),
    RouteSpec::at("GET", "/api/auth/me", Anyone, "The caller", || {
        get(auth::me)
    })
    .json::<UserInfo>(),
    RouteSpec::at(
        "POST",
        "/api/auth/logout",
        Anyone,
        "End the session",
        || post(auth::logout),
    ),
    RouteSpec::at(
        "POST",
        "/api/auth/password",
        VIEWER,
        "Change one's password",
        || post(auth::change_password),
    )
    .body::<PasswordChange>(),
    RouteSpec::at(
        "GET",
        "/api/auth/tokens",
        VIEWER,
        "One's API tokens",
        || get(auth::list_tokens),
    )
    .list_of::<TokenInfo>(),
    RouteSpec::at(
        "POST",
        "/api/auth/tokens/create",
        VIEWER,
        "Create an API token (shown once)",
        || post(auth::create_token),
    )
    .body::<TokenRequest>()
    .json::<CreatedToken>(),
    RouteSpec::at(
        "DELETE",
        "/api/auth/tokens/{token_id}",
        VIEWER,
        "Revoke an API token",
        || delete(auth::revoke_token),
    ),
    RouteSpec::at("GET", "/api/auth/users", OPERATOR, "Every user", || {
        get(auth::list_users)
    })
    .list_of::<UserInfo>(),
    RouteSpec::at(
        "PATCH",
        "/api/auth/users/{user_id}",
        ADMIN,
        "Change a user",
        || patch(auth::patch_user),
    )
    .body::<UserPatch>()
    .json::<UserInfo>(),
    RouteSpec::at(
        "DELETE",
        "/api/auth/users/{user_id}",
        ADMIN,
        "Delete a user",
        || delete(auth::delete_user),
    ),
    RouteSpec::at(
        "GET",
        "/api/auth/invitations",
        ADMIN,
        "Every invitation",
        || get(auth::list_invitations),
    )
    .list_of::<InvitationInfo>(),
    RouteSpec::at(
        "POST",
        "/api/auth/invitations",
        OPERATOR,
        "Invite someone (code shown once)",
        || post(auth::create_invitation),
    )
    .body::<InvitationRequest>()
    .json::<InvitationInfo>(),
    RouteSpec::at(
        "DELETE",
        "/api/auth/invitations/{invitation_id}",
        ADMIN,
        "Revoke an invitation",
        || delete(auth::delete_invitation),
    ),
    RouteSpec::at(
        "GET",
        "/api/audit",
        ADMIN,
        "The security log, newest first",
        || get(audit::list),
    )
    .json::<AuditPage>(),
    // Runners.
    RouteSpec::at(
        "POST",
        "/api/register",
        ClusterSecret,
        "A runner registers",
        || post(runner::register),
    )
    .body::<RegisterRequest>()
    .json::<RegisterResponse>(),
    RouteSpec::at(
        "GET",
        "/api/runner/environments/{name}",
        ClusterSecret,
        "A runner fetches an environment's tarball (?timestamp=; Range)",
        || get(envs::download),
    )
    .text("application/x-tar"),
    RouteSpec::at(
        "PUT",
        "/api/heartbeat/{hostname}",
        ClusterSecret,
        "A runner's heartbeat",
        || put(runner::heartbeat),
    )
    .body::<Heartbeat>()
    .json::<HeartbeatResponse>(),
    RouteSpec::at(
        "POST",
        "/api/update",
        ClusterSecret,
        "A runner reports a task's status",
        || post(runner::update),
    )
    .body::<TaskUpdate>(),
    // Cluster and tasks.
    RouteSpec::at("GET", "/api/nodes", VIEWER, "Every node", || {
        get(nodes::list)
    })
    .list_of::<NodeInfo>(),
    RouteSpec::at(
        "DELETE",
        "/api/nodes/{hostname}",
        OPERATOR,
        "Forget a node and its runner credential",
        || delete(nodes::remove),
    ),
    RouteSpec::at(
        "GET",
        "/api/health",
        VIEWER,
        "Node health history, or one node's",
        || get(nodes::health),
    )
    .json::<HealthResponse>(),
    RouteSpec::at(
        "GET",
        "/api/events",
        VIEWER,
        "Live events (Server-Sent Events; ?topics=task,vps,node,approval&task_id=&owner=&node=&since=, or Last-Event-ID)",
        || get(events::sse),
    )
    .text("text/event-stream"),
    RouteSpec::at(
        "GET",
        "/ws/events",
        VIEWER,
        "Live events (WebSocket; one JSON text frame per event; the query of /api/events)",
        || get(events::ws),
    )
    .text("websocket"),
    RouteSpec::at(
        "GET",
        "/api/tasks",
        VIEWER,
        "Tasks, newest first (a user sees their own)",
        || get(tasks::list),
    )
    .list_of::<TaskResponse>(),
    RouteSpec::at("GET", "/api/status/{task_id}", VIEWER, "One task", || {
        get(tasks::status)
    })
    .json::<TaskResponse>(),
    RouteSpec::at(
        "GET",
        "/api/tasks/{task_id}/events",
        VIEWER,
        "A task's timeline: every step of its life, oldest first",
        || get(tasks::timeline),
    )
    .json::<TaskTimeline>(),
    RouteSpec::at("GET", "/api/tasks/my", USER, "The caller's tasks", || {
        get(tasks::list_mine)
    })
    .list_of::<TaskResponse>(),
    RouteSpec::at("POST", "/api/submit", USER, "Submit command tasks", || {
        post(tasks::submit)
    })
    .body::<SubmitRequest>()
    .accepted::<SubmitResponse>(),
    RouteSpec::at(
        "GET",
        "/api/tasks/{task_id}/stdout",
        USER,
        "A task's standard output",
        || get(tasks::stdout),
    )
    .text("text/plain; charset=utf-8"),
    RouteSpec::at(
        "GET",
        "/api/tasks/{task_id}/stderr",
        USER,
        "A task's standard error",
        || get(tasks::stderr),
    )
    .text("text/plain; charset=utf-8"),
    RouteSpec::at("POST", "/api/kill/{task_id}", USER, "Kill a task", || {
        post(tasks::kill)
    })
    .accepted::<MessageResponse>(),
    RouteSpec::at(
        "POST",
        "/api/tasks/{task_id}/retry",
        USER,
        "Run an ended task again as its next attempt",
        || post(tasks::retry),
    )
    .accepted::<TaskResponse>(),
    RouteSpec::at(
        "GET",
        "/api/tasks/{task_id}/attempts",
        VIEWER,
        "Every attempt of a task with its exit code and where its output is",
        || get(tasks::attempts),
    )
    .json::<TaskAttempts>(),
    RouteSpec::at(
        "POST",
        "/api/command/{task_id}/{command}",
        USER,
        "Pause or resume a task",
        || post(tasks::command),
    ),
    // Into a running task or VPS (the owner, a VPS's assignees, operators).
    RouteSpec::at(
        "GET",
        "/ws/task/{task_id}/terminal",
        USER,
        "A terminal in a running task (WebSocket; JSON frames)",
        || get(ws::terminal),
    )
    .text("websocket"),
    RouteSpec::at(
        "GET",
        "/ws/forward/{task_id}/{port}",
        USER,
        "Streams to a port of a running task (WebSocket; ?proto=tcp|udp; 8-byte framed)",
        || get(ws::forward),
    )
    .text("websocket"),
    RouteSpec::at(
        "GET",
        "/ws/fs/{task_id}/watch",
        Access::FileRead,
        "Changes in a running task's directories (WebSocket; ?paths=/shared,/local_temp)",
        || get(ws::watch),
    )
    .text("websocket"),
    RouteSpec::at(
        "GET",
        "/api/fs/{task_id}/list",
        Access::FileRead,
        "List a directory in a running task (?path=/&show_hidden=false)",
        || get(files::read_op),
    ),
    RouteSpec::at(
        "GET",
        "/api/fs/{task_id}/read",
        Access::FileRead,
        "Read a file in a running task (?path=&encoding=utf-8|base64&limit=)",
        || get(files::read_op),
    ),
    RouteSpec::at(
        "GET",
        "/api/fs/{task_id}/stat",
        Access::FileRead,
        "A path's metadata in a running task (?path=)",
        || get(files::read_op),
    ),
    RouteSpec::at(
        "POST",
        "/api/fs/{task_id}/write",
        USER,
        "Write a file in a running task (up to 50 MiB)",
        || post(files::write_op).layer(DefaultBodyLimit::max(files::MAX_WRITE_BODY)),
    ),
    RouteSpec::at(
        "POST",
        "/api/fs/{task_id}/mkdir",
        USER,
        "Create a directory in a running task",
        || post(files::write_op),
    ),
    RouteSpec::at(
        "POST",
        "/api/fs/{task_id}/rename",
        USER,
        "Rename or move a path in a running task",
        || post(files::write_op),
    ),
    RouteSpec::at(
        "DELETE",
        "/api/fs/{task_id}/delete",
        USER,
        "Delete a path in a running task (?path=&recursive=false)",
        || delete(files::read_op),
    ),
    // Environments: containers an operator prepares on the host.
    RouteSpec::at(
        "GET",
        "/api/docker/host/containers",
        OPERATOR,
        "The host's environment containers",
        || get(envs::list),
    )
    .list_of::<EnvContainer>(),
    RouteSpec::at(
        "POST",
        "/api/docker/host/create",
        OPERATOR,
        "Create and start an environment container from a local image",
        || post(envs::create),
    )
    .body::<EnvCreateRequest>()
    .json::<EnvCreateResponse>(),
    RouteSpec::at(
        "POST",
        "/api/docker/host/start/{name}",
        OPERATOR,
        "Start an environment container",
        || post(envs::start),
    ),
    RouteSpec::at(
        "POST",
        "/api/docker/host/stop/{name}",
        OPERATOR,
        "Stop an environment container",
        || post(envs::stop),
    ),
    RouteSpec::at(
        "POST",
        "/api/docker/host/delete/{name}",
        OPERATOR,
        "Delete an environment container",
        || post(envs::delete),
    ),
    RouteSpec::at(
        "POST",
        "/api/docker/host/migrate/{name}",
        OPERATOR,
        "Adopt a container made before the naming rule as kohakuriver-env-<name>",
        || post(envs::migrate),
    )
    .json::<EnvMigrateResponse>(),
    RouteSpec::at(
        "GET",
        "/api/docker/list",
        OPERATOR,
        "Every environment's tarballs, newest first",
        || get(envs::tarballs),
    )
    .json::<std::collections::BTreeMap<String, EnvVersions>>(),
    RouteSpec::at(
        "GET",
        "/api/docker/store",
        OPERATOR,
        "What the environment store holds, and its cap",
        || get(envs::store_usage),
    )
    .json::<EnvStoreUsage>(),
    RouteSpec::at(
        "POST",
        "/api/docker/create_tar/{name}",
        OPERATOR,
        "Package an environment into a new tarball (in the background; 202)",
        || post(envs::package),
    )
    .accepted::<EnvPackageResponse>(),
    RouteSpec::at(
        "GET",
        "/api/docker/env/{name}",
        OPERATOR,
        "An environment: its container, versions and packaging progress",
        || get(envs::view),
    )
    .json::<EnvView>(),
    RouteSpec::at(
        "GET",
        "/api/docker/container/{name}",
        OPERATOR,
        "Download an environment's newest tarball (?timestamp= for one version; Range)",
        || get(envs::download),
    )
    .text("application/x-tar"),
    RouteSpec::at(
        "DELETE",
        "/api/docker/container/{name}",
        OPERATOR,
        "Delete every tarball of an environment",
        || delete(envs::delete_tarballs),
    ),
    RouteSpec::at(
        "GET",
        "/api/fs/container/{name}/list",
        OPERATOR,
        "List a directory in a running environment container (?path=/&show_hidden=false)",
        || get(envs::file_op),
    ),
    RouteSpec::at(
        "GET",
        "/api/fs/container/{name}/read",
        OPERATOR,
        "Read a file in a running environment container (?path=&encoding=utf-8|base64&limit=)",
        || get(envs::file_op),
    ),
    RouteSpec::at(
        "GET",
        "/api/fs/container/{name}/stat",
        OPERATOR,
        "A path's metadata in a running environment container (?path=)",
        || get(envs::file_op),
    ),
    RouteSpec::at(
        "POST",
        "/api/fs/container/{name}/write",
        OPERATOR,
        "Write a file in a running environment container (up to 50 MiB)",
        || post(envs::file_op).layer(DefaultBodyLimit::max(files::MAX_WRITE_BODY)),
    ),
    RouteSpec::at(
        "POST",
        "/api/fs/container/{name}/mkdir",
        OPERATOR,
        "Create a directory in a running environment container",
        || post(envs::file_op),
    ),
    RouteSpec::at(
        "POST",
        "/api/fs/container/{name}/rename",
        OPERATOR,
        "Rename or move a path in a running environment container",
        || post(envs::file_op),
    ),
    RouteSpec::at(
        "DELETE",
        "/api/fs/container/{name}/delete",
        OPERATOR,
        "Delete a path in a running environment container (?path=&recursive=false)",
        || delete(envs::file_op),
    ),
    RouteSpec::at(
        "GET",
        "/ws/docker/host/containers/{name}/terminal",
        OPERATOR,
        "A terminal in a running environment container (WebSocket; JSON frames)",
        || get(envs::terminal),
    )
    .text("websocket"),
    // VPS sessions.
    RouteSpec::at(
        "POST",
        "/api/vps/create",
        Access::VpsCreate,
        "Create a VPS (operators; users too with user_vps, after approval)",
        || post(vps::create),
    )
    .body::<VpsCreateRequest>()
    .json::<VpsCreateResponse>(),
    RouteSpec::at(
        "POST",
        "/api/vps/stop/{task_id}",
        USER,
        "Stop a VPS (its owner or an operator); snapshot first by default",
        || post(vps::stop),
    )
    .accepted::<MessageResponse>(),
    RouteSpec::at(
        "POST",
        "/api/vps/restart/{task_id}",
        USER,
        "Start a VPS again from its newest snapshot (its owner or an operator)",
        || post(vps::restart),
    )
    .accepted::<VpsActionResponse>(),
    RouteSpec::at("GET", "/api/vps", VIEWER, "Every VPS", || {
        get(vps::list_all)
    })
    .list_of::<VpsItem>(),
    RouteSpec::at(
        "GET",
        "/api/vps/status",
        VIEWER,
        "VPSes pending, starting, running or paused",
        || get(vps::list_active),
    )
    .list_of::<VpsItem>(),
    RouteSpec::at(
        "GET",
        "/api/vps/my",
        USER,
        "The caller's VPSes: owned or assigned",
        || get(vps::list_mine),
    )
    .list_of::<VpsItem>(),
    RouteSpec::at(
        "POST",
        "/api/vps/{task_id}/assign",
        OPERATOR,
        "Assign users (a JSON array of user ids) to a VPS",
        || post(vps::assign),
    )
    .json::<AssignResponse>(),
    RouteSpec::at(
        "DELETE",
        "/api/vps/{task_id}/assign/{user_id}",
        OPERATOR,
        "Unassign a user from a VPS",
        || delete(vps::unassign),
    ),
    RouteSpec::at(
        "GET",
        "/api/vps/{task_id}/assignments",
        OPERATOR,
        "Users assigned to a VPS",
        || get(vps::assignments),
    )
    .json::<AssignmentsResponse>(),
    RouteSpec::at(
        "GET",
        "/api/vps/snapshots/{task_id}",
        USER,
        "A VPS's snapshots, newest first (owner, assignee or operator)",
        || get(vps::snapshots_list),
    )
    .json::<SnapshotList>(),
    RouteSpec::at(
        "POST",
        "/api/vps/snapshots/{task_id}",
        USER,
        "Snapshot a running VPS (?message=)",
        || post(vps::snapshot_create),
    )
    .json::<SnapshotCreated>(),
    RouteSpec::at(
        "DELETE",
        "/api/vps/snapshots/{task_id}",
        USER,
        "Delete every snapshot of a VPS",
        || delete(vps::snapshots_delete_all),
    )
    .json::<SnapshotsDeleted>(),
    RouteSpec::at(
        "GET",
        "/api/vps/snapshots/{task_id}/latest",
        USER,
        "A VPS's newest snapshot",
        || get(vps::snapshot_latest),
    )
    .json::<LatestSnapshot>(),
    RouteSpec::at(
        "DELETE",
        "/api/vps/snapshots/{task_id}/{timestamp}",
        USER,
        "Delete one snapshot",
        || delete(vps::snapshot_delete),
    ),
    RouteSpec::at(
        "GET",
        "/api/tasks/pending-approval",
        OPERATOR,
        "Tasks waiting for approval",
        || get(approval::pending),
    )
    .list_of::<TaskResponse>(),
    RouteSpec::at(
        "POST",
        "/api/approve/{task_id}",
        OPERATOR,
        "Approve a task",
        || post(approval::approve),
    )
    .json::<TaskMessage>(),
    RouteSpec::at(
        "POST",
        "/api/reject/{task_id}",
        OPERATOR,
        "Reject a task",
        || post(approval::reject),
    )
    .body::<RejectRequest>()
    .json::<RejectResponse>(),
];

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

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// Every route (one listen address for users and runners).
    All,
    /// Every route but the runners' (when `runner_listen` is set).
    Users,
    /// The runners' routes and the health probes (on `runner_listen`).
    Runners,
}

/// Probes answer under any load: they take no user-request slot.
pub const PROBES: &[&str] = &["/health", "/ready", "/metrics"];

impl Serves {
    fn includes(self, spec: &RouteSpec) -> bool {
        let probe = matches!(spec.path, "/health" | "/ready");
        match self {
            Serves::All => true,
            Serves::Users => spec.access != Access::ClusterSecret,
            Serves::Runners => spec.access == Access::ClusterSecret || probe,
        }
    }
}

pub fn router(state: AppState, serves: Serves) -> Router {
    let mut router = Router::new();
    for spec in ROUTES.iter().filter(|s| serves.includes(s)) {
        let layer = axum::middleware::from_fn_with_state(
            (state.clone(), spec.access),
            crate::auth::authorize,
        );
        router = router.route(spec.path, (spec.handler)().route_layer(layer));
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
    fn every_route_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for spec in ROUTES {
            let _ = (spec.handler)();
            assert!(
                seen.insert((spec.method, spec.path)),
                "{} {} listed twice",
                spec.method,
                spec.path
            );
        }
    }
}
