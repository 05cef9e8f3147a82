//! `/api/auth/*`: sign-in, sessions, API tokens, invitations, user administration.

use super::error::{ApiError, ApiJson, ApiQuery};
use crate::auth::service::{self, caller_info, invitation_info, token_info, user_info};
use crate::auth::{Caller, SESSION_COOKIE};
use crate::store::auth as store;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::header::SET_COOKIE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferry_common::api::{
    AuthStatus, CreatedToken, InvitationInfo, InvitationRequest, LoginRequest, LoginResponse,
    MessageResponse, PasswordChange, SignupRequest, TokenInfo, TokenRequest, UserInfo, UserPatch,
};
use serde::Deserialize;

fn disabled(state: &AppState) -> Result<(), ApiError> {
    if state.config.auth_enabled {
        Ok(())
    } else {
        Err(ApiError::unavailable(
            "Authentication is disabled on this host",
        ))
    }
}

fn session_cookie(state: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Max-Age={max_age}; HttpOnly; SameSite=Lax; Path=/{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn message(text: impl Into<String>) -> Json<MessageResponse> {
    Json(MessageResponse {
        message: text.into(),
    })
}

fn with_cookie(body: impl serde::Serialize, cookie: HeaderValue) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(SET_COOKIE, cookie);
    resp
}

pub async fn status(State(state): State<AppState>) -> Json<AuthStatus> {
    let hours = state
        .config
        .auth_enabled
        .then(|| state.config.session_ttl.as_secs() / 3600);
    Json(AuthStatus {
        auth_enabled: state.config.auth_enabled,
        session_expire_hours: hours,
    })
}

pub async fn login(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    disabled(&state)?;
    if b.username.is_empty() || b.username.len() > 50 || b.password.is_empty() {
        return Err(ApiError::unprocessable(
            "username and password are required",
        ));
    }
    let (user, session) = service::login(&state, &b.username, &b.password, caller.address).await?;
    let cookie = session_cookie(&state, &session, state.config.session_ttl.as_secs());
    Ok(with_cookie(
        LoginResponse {
            message: "Login successful".into(),
            user: user_info(&user),
        },
        cookie,
    ))
}

pub async fn logout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    service::logout(&state, &caller).await?;
    Ok(with_cookie(
        MessageResponse {
            message: "Logged out successfully".into(),
        },
        session_cookie(&state, "", 0),
    ))
}

#[derive(Deserialize, Default)]
pub struct RegisterQuery {
    token: Option<String>,
}

pub async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<RegisterQuery>,
    ApiJson(b): ApiJson<SignupRequest>,
) -> Result<Response, ApiError> {
    disabled(&state)?;
    let invitation = b
        .invitation
        .or(q.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("invitation: an invitation code is required"))?;
    let (user, session) = service::register(
        &state,
        &invitation,
        &b.username,
        &b.password,
        b.display_name,
        caller.address,
    )
    .await?;
    let cookie = session_cookie(&state, &session, state.config.session_ttl.as_secs());
    Ok(with_cookie(
        LoginResponse {
            message: "Registration successful".into(),
            user: user_info(&user),
        },
        cookie,
    ))
}

/// 200 with the anonymous user when no credentials were sent (the original's clients rely on
/// that); bad credentials never reach here (401 in the middleware).
pub async fn me(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<UserInfo>, ApiError> {
    disabled(&state)?;
    Ok(Json(caller_info(&caller)))
}

pub async fn change_password(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<PasswordChange>,
) -> Result<Json<MessageResponse>, ApiError> {
    disabled(&state)?;
    service::change_password(&state, &caller, &b.current_password, &b.new_password).await?;
    Ok(message("Password changed; other sessions were signed out"))
}

pub async fn list_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    disabled(&state)?;
    let Some(uid) = caller.user_id else {
        return Ok(Json(Vec::new()));
    };
    let rows = state.db.read(move |c| store::list_tokens(c, uid)).await?;
    Ok(Json(rows.iter().map(token_info).collect()))
}

pub async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<TokenRequest>,
) -> Result<Json<CreatedToken>, ApiError> {
    disabled(&state)?;
    Ok(Json(
        service::create_token(&state, &caller, &b.name, b.expires_days).await?,
    ))
}

fn id_param(raw: &str, name: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| ApiError::unprocessable(format!("{name}: must be an integer, got {raw:?}")))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    disabled(&state)?;
    let name = service::revoke_token(&state, &caller, id_param(&id, "token_id")?).await?;
    Ok(message(format!("Token '{name}' revoked")))
}

pub async fn list_users(State(state): State<AppState>) -> Result<Json<Vec<UserInfo>>, ApiError> {
    let users = state.db.read(store::list_users).await?;
    Ok(Json(users.iter().map(user_info).collect()))
}

pub async fn patch_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<UserPatch>,
) -> Result<Json<UserInfo>, ApiError> {
    let id = id_param(&id, "user_id")?;
    Ok(Json(service::patch_user(&state, &caller, id, b).await?))
}

pub async fn delete_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    let name = service::delete_user(&state, &caller, id_param(&id, "user_id")?).await?;
    Ok(message(format!("User '{name}' deleted")))
}

pub async fn list_invitations(
    State(state): State<AppState>,
) -> Result<Json<Vec<InvitationInfo>>, ApiError> {
    let rows = state.db.read(store::list_invitations).await?;
    Ok(Json(
        rows.iter().map(|i| invitation_info(i, None)).collect(),
    ))
}

pub async fn create_invitation(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<InvitationRequest>,
) -> Result<Json<InvitationInfo>, ApiError> {
    Ok(Json(
        service::create_invitation(&state, &caller, &b.role, b.max_usage, b.expires_hours).await?,
    ))
}

pub async fn delete_invitation(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    let id = id_param(&id, "invitation_id")?;
    service::delete_invitation(&state, &caller, id).await?;
    Ok(message(format!("Invitation {id} revoked")))
}
