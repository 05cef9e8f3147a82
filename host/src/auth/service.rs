//! Account operations behind the `/api/auth/*` routes, the first-admin bootstrap and the audit
//! log. Every security-relevant event is written to the audit table.

use super::{password, secrets, Caller, Credential, Role};
use crate::api::error::ApiError;
use crate::store::auth::{self as store, AuditRow, InvitationRow, UserRow};
use crate::AppState;
use ferry_common::api::{CreatedToken, InvitationInfo, TokenInfo, UserInfo, UserPatch};
use ferry_common::time::{format_ms, now_ms};
use std::path::Path;

/// A stored role name; one this host does not know grants nothing.
fn stored_role(name: &str) -> Role {
    name.parse().unwrap_or(Role::Anony)
}

pub fn user_info(u: &UserRow) -> UserInfo {
    UserInfo {
        id: u.id,
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        is_active: u.is_active,
        role: stored_role(&u.role),
        created_at: Some(format_ms(u.created_at)),
    }
}

pub fn caller_info(c: &Caller) -> UserInfo {
    UserInfo {
        id: c
            .user_id
            .unwrap_or(if c.role == Role::Anony { -1 } else { 0 }),
        username: c.username.clone(),
        display_name: c.display_name.clone(),
        is_active: true,
        role: c.role,
        created_at: c.created_at.map(format_ms),
    }
}

pub fn token_info(t: &store::TokenRow) -> TokenInfo {
    TokenInfo {
        id: t.id,
        name: t.name.clone(),
        last_used: t.last_used.map(format_ms),
        created_at: format_ms(t.created_at),
        expires_at: t.expires_at.map(format_ms),
    }
}

/// Appends to the audit log; a failure to do so is logged, not fatal to the request.
pub async fn audit(
    state: &AppState,
    caller: Option<&Caller>,
    action: &str,
    target: Option<String>,
    detail: Option<String>,
) {
    let row = AuditRow {
        id: 0,
        at: now_ms(),
        actor_id: caller.and_then(|c| c.user_id),
        actor: caller.map(|c| c.username.clone()),
        action: action.to_string(),
        target,
        detail,
        address: caller.and_then(|c| c.address.clone()),
    };
    tracing::info!(action, actor = ?row.actor, target = ?row.target, "audit");
    if let Err(e) = state.db.write(move |c| store::insert_audit(c, &row)).await {
        tracing::error!(error = %e, "cannot write audit log");
    }
}

fn validate_username(name: &str) -> Result<(), ApiError> {
    let ok = (3..=50).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "username: 3 to 50 characters: letters, digits, '.', '_', '-' (not starting with '_')",
        ))
    }
}

fn validate_password(pw: &str) -> Result<(), ApiError> {
    if pw.chars().count() < 8 || pw.len() > 1024 {
        return Err(ApiError::unprocessable(
            "password: must be 8 to 1024 characters",
        ));
    }
    Ok(())
}

/// Deletes audit entries older than `retention`, at start and then regularly (a quarter of
/// the retention, between 1 s and 1 h), so the log cannot grow without end.
pub async fn expire_audit_forever(db: crate::store::Db, retention: std::time::Duration) {
    let period = (retention / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    loop {
        let before = now_ms() - retention.as_millis() as i64;
        match db.write(move |c| store::purge_audit(c, before)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired audit log entries"),
            Err(e) => tracing::warn!(error = %e, "cannot expire audit log entries"),
        }
        tokio::time::sleep(period).await;
    }
}

/// On a host with no users, creates `admin` with `FERRY_ADMIN_PASSWORD` or a generated
/// password, printed once and written to `<data_dir>/initial-admin-password` (0600).
pub async fn bootstrap_admin(state: &AppState, data_dir: &Path) -> anyhow::Result<()> {
    if state.db.read(store::count_users).await? > 0 {
        return Ok(());
    }
    let (password, generated) = match std::env::var("FERRY_ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (secrets::generate()[..24].to_string(), true),
    };
    validate_password(&password)
        .map_err(|e| anyhow::anyhow!("FERRY_ADMIN_PASSWORD: {}", e.detail))?;
    let hash = password::hash(password.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    let now = now_ms();
    state
        .db
        .write(move |c| store::insert_user(c, "admin", Some("Administrator"), &hash, "admin", now))
        .await?;
    if generated {
        // Only a generated password is written down; one given in the environment is the
        // operator's to keep.
        let path = data_dir.join("initial-admin-password");
        crate::write_private(&path, &format!("{password}\n"))?;
        eprintln!(
            "\nferry-host: created the first administrator.\n  username: admin\n  password: {password}\n  (also in {}; change it with POST /api/auth/password)\n",
            path.display()
        );
    }
    tracing::warn!(generated, "created the first administrator 'admin'");
    audit(state, None, "user.bootstrap", Some("admin".into()), None).await;
    Ok(())
}

/// Verifies a password login; returns the user and a new session id (to put in the cookie).
pub async fn login(
    state: &AppState,
    username: &str,
    pw: &str,
    address: Option<String>,
) -> Result<(UserRow, String), ApiError> {
    if let Some(wait) = state.limiter.check(username, address.as_deref()) {
        return Err(ApiError::too_many(
            format!(
                "Too many failed logins; try again in {} s",
                wait.as_secs().max(1)
            ),
            wait,
        ));
    }
    let name = username.to_string();
    let user = state
        .db
        .read(move |c| store::user_by_name(c, &name))
        .await?;
    let ok = match password::verify(
        pw.to_string(),
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await
    {
        Ok(ok) => ok,
        Err(e) => {
            // Not checked, so not a failure: give the attempt back.
            state.limiter.abandoned(username, address.as_deref());
            return Err(e.into());
        }
    };
    let anon = Caller::anonymous(address.clone());
    let Some(user) = user.filter(|_| ok) else {
        state.limiter.failed(username, address.as_deref());
        audit(
            state,
            Some(&anon),
            "login.failed",
            Some(username.to_string()),
            None,
        )
        .await;
        return Err(ApiError::unauthorized("Invalid username or password"));
    };
    if !user.is_active {
        audit(
            state,
            Some(&anon),
            "login.disabled",
            Some(username.to_string()),
            None,
        )
        .await;
        return Err(ApiError::forbidden("Account is disabled"));
    }
    state.limiter.succeeded(username, address.as_deref());
    let session = new_session(state, user.id).await?;
    let caller = Caller::from_user(user.clone(), Credential::Anonymous, address)?;
    audit(
        state,
        Some(&caller),
        "login",
        Some(user.username.clone()),
        None,
    )
    .await;
    Ok((user, session))
}

async fn new_session(state: &AppState, user_id: i64) -> Result<String, ApiError> {
    let session = secrets::generate();
    let hash = secrets::digest(&session);
    let now = now_ms();
    let expires = now + state.config.session_ttl.as_millis() as i64;
    state
        .db
        .write(move |c| {
            store::purge_expired_sessions(c, now)?;
            store::insert_session(c, &hash, user_id, now, expires)
        })
        .await?;
    Ok(session)
}

pub async fn logout(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    if let Credential::Session(hash) = &caller.credential {
        let h = hash.clone();
        state
            .db
            .write(move |c| store::delete_session(c, &h))
            .await?;
        audit(
            state,
            Some(caller),
            "logout",
            Some(caller.username.clone()),
            None,
        )
        .await;
    }
    Ok(())
}

/// Creates an account from an invitation and signs it in. The invitation's use is claimed in
/// the same transaction as the insert, so it admits exactly as many accounts as it allows.
pub async fn register(
    state: &AppState,
    invitation: &str,
    username: &str,
    pw: &str,
    display_name: Option<String>,
    address: Option<String>,
) -> Result<(UserRow, String), ApiError> {
    validate_username(username)?;
    validate_password(pw)?;
    if display_name
        .as_ref()
        .is_some_and(|d| d.chars().count() > 100)
    {
        return Err(ApiError::unprocessable(
            "display_name: at most 100 characters",
        ));
    }
    if let Some(wait) = state.limiter.check_register(address.as_deref()) {
        return Err(ApiError::too_many(
            format!(
                "Too many registration attempts from this address; try again in {} s",
                wait.as_secs().max(1)
            ),
            wait,
        ));
    }
    let inv_hash = secrets::digest(invitation);
    // The cheap check first: a bad invitation costs one indexed read, never a hash. The use is
    // still claimed atomically below; this only spares the work for codes that cannot succeed.
    let (h, now) = (inv_hash.clone(), now_ms());
    if !state
        .db
        .read(move |c| store::invitation_usable(c, &h, now))
        .await?
    {
        return Err(ApiError::bad_request(
            "Invalid, expired or used-up invitation",
        ));
    }
    let name = username.to_string();
    if state
        .db
        .read(move |c| store::user_by_name(c, &name))
        .await?
        .is_some()
    {
        return Err(ApiError::conflict("Username already taken"));
    }
    let hash = password::hash(pw.to_string()).await?;
    let (name, display) = (
        username.to_string(),
        display_name.unwrap_or_else(|| username.to_string()),
    );
    let now = now_ms();
    #[derive(Debug)]
    enum Outcome {
        BadInvitation,
        Taken,
        Created(UserRow),
    }
    let outcome = state
        .db
        .write(move |c| {
            let Some(inv) = store::claim_invitation(c, &inv_hash, now)? else {
                return Ok(Outcome::BadInvitation);
            };
            match store::insert_user(c, &name, Some(&display), &hash, &inv.role, now)? {
                Some(id) => Ok(Outcome::Created(
                    store::user_by_id(c, id)?.ok_or(crate::store::StoreError::WriterGone)?,
                )),
                // Roll back the claim: the writer keeps a job's writes only when it succeeds.
                None => Err(crate::store::StoreError::Conflict(
                    "Username already taken".into(),
                )),
            }
        })
        .await
        .or_else(|e| match e {
            crate::store::StoreError::Conflict(_) => Ok(Outcome::Taken),
            other => Err(other),
        })?;
    let user = match outcome {
        Outcome::BadInvitation => {
            return Err(ApiError::bad_request(
                "Invalid, expired or used-up invitation",
            ))
        }
        Outcome::Taken => return Err(ApiError::conflict("Username already taken")),
        Outcome::Created(u) => u,
    };
    state.limiter.register_succeeded(address.as_deref());
    let session = new_session(state, user.id).await?;
    let caller = Caller::from_user(user.clone(), Credential::Anonymous, address)?;
    audit(
        state,
        Some(&caller),
        "user.register",
        Some(user.username.clone()),
        Some(format!("role {}", user.role)),
    )
    .await;
    Ok((user, session))
}

/// Changes the caller's password and ends every other session of theirs.
pub async fn change_password(
    state: &AppState,
    caller: &Caller,
    current: &str,
    new: &str,
) -> Result<(), ApiError> {
    let id = caller
        .user_id
        .ok_or_else(|| ApiError::bad_request("this account has no password"))?;
    validate_password(new)?;
    let user = state
        .db
        .read(move |c| store::user_by_id(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?;
    if !password::verify(current.to_string(), Some(user.password_hash)).await? {
        audit(
            state,
            Some(caller),
            "password.change_failed",
            Some(caller.username.clone()),
            None,
        )
        .await;
        return Err(ApiError::bad_request("current_password: wrong password"));
    }
    let hash = password::hash(new.to_string()).await?;
    // Whoever knew the old password may hold other sessions and tokens: end all but the
    // credential making this change.
    let (keep_session, keep_token) = match &caller.credential {
        Credential::Session(h) => (Some(h.clone()), None),
        Credential::Token(t) => (None, Some(*t)),
        _ => (None, None),
    };
    state
        .db
        .write(move |c| {
            store::set_password(c, id, &hash)?;
            store::delete_sessions_of(c, id, keep_session.as_deref())?;
            store::delete_tokens_of(c, id, keep_token).map(drop)
        })
        .await?;
    audit(
        state,
        Some(caller),
        "password.change",
        Some(caller.username.clone()),
        None,
    )
    .await;
    Ok(())
}

pub async fn create_token(
    state: &AppState,
    caller: &Caller,
    name: &str,
    expires_days: Option<u32>,
) -> Result<CreatedToken, ApiError> {
    let user_id = caller
        .user_id
        .ok_or_else(|| ApiError::bad_request("authentication is disabled: there are no tokens"))?;
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(ApiError::unprocessable("name: 1 to 100 characters"));
    }
    if expires_days.is_some_and(|d| !(1..=3650).contains(&d)) {
        return Err(ApiError::unprocessable(
            "expires_days: 1 to 3650, or leave it out for a token that does not expire",
        ));
    }
    let token = secrets::generate();
    let hash = secrets::digest(&token);
    let (n, now) = (name.to_string(), now_ms());
    let expires_at = expires_days.map(|d| now + i64::from(d) * 86_400_000);
    let id = state
        .db
        .write(move |c| store::insert_token(c, user_id, &n, &hash, now, expires_at))
        .await?;
    audit(
        state,
        Some(caller),
        "token.create",
        Some(format!("token {id}")),
        Some(name.to_string()),
    )
    .await;
    Ok(CreatedToken {
        id,
        name: name.to_string(),
        token,
        created_at: format_ms(now),
        expires_at: expires_at.map(format_ms),
    })
}

pub async fn revoke_token(state: &AppState, caller: &Caller, id: i64) -> Result<String, ApiError> {
    let user_id = caller
        .user_id
        .ok_or_else(|| ApiError::not_found("Token not found"))?;
    let name = state
        .db
        .write(move |c| store::delete_token(c, user_id, id))
        .await?;
    let name = name.ok_or_else(|| ApiError::not_found("Token not found"))?;
    audit(
        state,
        Some(caller),
        "token.revoke",
        Some(format!("token {id}")),
        Some(name.clone()),
    )
    .await;
    Ok(name)
}

pub fn invitation_info(i: &InvitationRow, token: Option<&str>) -> InvitationInfo {
    let now = now_ms();
    InvitationInfo {
        id: i.id,
        token: token.map(str::to_string),
        role: stored_role(&i.role),
        group_id: None,
        max_usage: i.max_usage,
        usage_count: i.usage_count,
        remaining_uses: (i.max_usage - i.usage_count).max(0),
        expires_at: format_ms(i.expires_at),
        is_valid: i.usage_count < i.max_usage && i.expires_at > now,
        created_by_id: i.created_by,
        created_at: format_ms(i.created_at),
    }
}

/// Operators may invite viewers and users; admins anyone up to admin.
pub async fn create_invitation(
    state: &AppState,
    caller: &Caller,
    role: &str,
    max_usage: i64,
    expires_hours: i64,
) -> Result<InvitationInfo, ApiError> {
    let role: Role = role.parse().map_err(|e: ferry_common::task::UnknownName| {
        ApiError::unprocessable(format!("role: {e}"))
    })?;
    if role == Role::Anony {
        return Err(ApiError::unprocessable(
            "role: an invitation must grant at least viewer",
        ));
    }
    if !caller.at_least(Role::Admin) && role > Role::User {
        return Err(ApiError::forbidden(
            "Operators can only invite viewers and users",
        ));
    }
    if !(1..=1000).contains(&max_usage) {
        return Err(ApiError::unprocessable(
            "max_usage: must be between 1 and 1000",
        ));
    }
    if !(1..=720).contains(&expires_hours) {
        return Err(ApiError::unprocessable(
            "expires_hours: must be between 1 and 720",
        ));
    }
    let token = secrets::generate();
    let hash = secrets::digest(&token);
    let now = now_ms();
    let expires = now + expires_hours * 3_600_000;
    let by = caller.user_id;
    let role_s = role.as_str();
    let id = state
        .db
        .write(move |c| store::insert_invitation(c, &hash, role_s, max_usage, expires, by, now))
        .await?;
    audit(
        state,
        Some(caller),
        "invitation.create",
        Some(format!("invitation {id}")),
        Some(format!("role {role}, {max_usage} use(s)")),
    )
    .await;
    let row = InvitationRow {
        id,
        role: role.to_string(),
        max_usage,
        usage_count: 0,
        expires_at: expires,
        created_by: by,
        created_at: now,
    };
    Ok(invitation_info(&row, Some(&token)))
}

/// Admin changes to a user; refuses to demote, disable or delete oneself.
pub async fn patch_user(
    state: &AppState,
    caller: &Caller,
    id: i64,
    p: UserPatch,
) -> Result<UserInfo, ApiError> {
    let UserPatch {
        display_name,
        role,
        is_active,
        password: new_password,
    } = p;
    let new_hash = match &new_password {
        None => None,
        Some(pw) => {
            validate_password(pw)?;
            Some(password::hash(pw.clone()).await?)
        }
    };
    let role = match role {
        None => None,
        Some(r) => {
            let parsed: Role = r.parse().map_err(|e: ferry_common::task::UnknownName| {
                ApiError::unprocessable(format!("role: {e}"))
            })?;
            if parsed == Role::Anony {
                return Err(ApiError::unprocessable(
                    "role: a user must be at least viewer",
                ));
            }
            Some(parsed)
        }
    };
    if caller.user_id == Some(id) {
        if role.is_some_and(|r| r < Role::Admin) {
            return Err(ApiError::bad_request("Cannot demote yourself"));
        }
        if is_active == Some(false) {
            return Err(ApiError::bad_request("Cannot disable yourself"));
        }
    }
    if display_name
        .as_ref()
        .is_some_and(|d| d.chars().count() > 100)
    {
        return Err(ApiError::unprocessable(
            "display_name: at most 100 characters",
        ));
    }
    let (dn, r) = (display_name.clone(), role.map(|r| r.as_str()));
    let user = state
        .db
        .write(move |c| {
            if store::user_by_id(c, id)?.is_none() {
                return Ok(None);
            }
            store::update_user(c, id, dn.as_deref(), r, is_active)?;
            if let Some(h) = &new_hash {
                store::set_password(c, id, h)?;
            }
            if is_active == Some(false) || new_hash.is_some() {
                store::delete_sessions_of(c, id, None)?;
            }
            if new_hash.is_some() {
                store::delete_tokens_of(c, id, None)?;
            }
            store::user_by_id(c, id)
        })
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?;
    let detail = format!(
        "role={:?} active={:?} display_name={:?} password_reset={}",
        role.map(|r| r.as_str()),
        is_active,
        display_name,
        new_password.is_some()
    );
    audit(
        state,
        Some(caller),
        "user.update",
        Some(user.username.clone()),
        Some(detail),
    )
    .await;
    Ok(user_info(&user))
}

pub async fn delete_user(state: &AppState, caller: &Caller, id: i64) -> Result<String, ApiError> {
    if caller.user_id == Some(id) {
        return Err(ApiError::bad_request("Cannot delete yourself"));
    }
    let user = state
        .db
        .write(move |c| {
            let u = store::user_by_id(c, id)?;
            if u.is_some() {
                store::delete_user(c, id)?;
            }
            Ok(u)
        })
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?;
    audit(
        state,
        Some(caller),
        "user.delete",
        Some(user.username.clone()),
        None,
    )
    .await;
    Ok(user.username)
}

/// Revokes an invitation (admin).
pub async fn delete_invitation(state: &AppState, caller: &Caller, id: i64) -> Result<(), ApiError> {
    if !state
        .db
        .write(move |c| store::delete_invitation(c, id))
        .await?
    {
        return Err(ApiError::not_found("Invitation not found"));
    }
    audit(
        state,
        Some(caller),
        "invitation.revoke",
        Some(format!("invitation {id}")),
        None,
    )
    .await;
    Ok(())
}

/// The audit log, newest first, and how many entries it holds.
pub async fn audit_page(
    state: &AppState,
    limit: u32,
    offset: u32,
) -> Result<(Vec<ferry_common::api::AuditEntry>, i64), ApiError> {
    let (rows, total) = state
        .db
        .read(move |c| store::list_audit(c, limit, offset))
        .await?;
    let items = rows
        .into_iter()
        .map(|e| ferry_common::api::AuditEntry {
            id: e.id,
            at: format_ms(e.at),
            actor_id: e.actor_id,
            actor: e.actor,
            action: e.action,
            target: e.target,
            detail: e.detail,
            address: e.address,
        })
        .collect();
    Ok((items, total))
}
