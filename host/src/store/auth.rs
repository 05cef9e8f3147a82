//! Users, sessions, API tokens, invitations and the audit log. Secrets (session ids, tokens,
//! invitation codes) are stored only as SHA-256 hashes; passwords as argon2id hashes.

use super::StoreError;
use rusqlite::{params, Connection, OptionalExtension, Row};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub display_name: Option<String>,
    pub password_hash: String,
    pub role: String,
    pub is_active: bool,
    pub created_at: i64,
}

const USER_COLUMNS: &str = "id, username, display_name, password_hash, role, is_active, created_at";

fn user(r: &Row) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        password_hash: r.get(3)?,
        role: r.get(4)?,
        is_active: r.get(5)?,
        created_at: r.get(6)?,
    })
}

pub fn count_users(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
}

/// Inserts a user; `None` when the username is taken (the UNIQUE constraint decides, so two
/// concurrent registrations of one name cannot both succeed).
pub fn insert_user(
    conn: &Connection,
    username: &str,
    display_name: Option<&str>,
    password_hash: &str,
    role: &str,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    match conn.execute(
        "INSERT INTO users (username, display_name, password_hash, role, is_active, created_at) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
        params![username, display_name, password_hash, role, now],
    ) {
        Ok(_) => Ok(Some(conn.last_insert_rowid())),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn user_by_name(conn: &Connection, username: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
            [username],
            user,
        )
        .optional()?)
}

pub fn user_by_id(conn: &Connection, id: i64) -> Result<Option<UserRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
            [id],
            user,
        )
        .optional()?)
}

pub fn list_users(conn: &Connection) -> Result<Vec<UserRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY id DESC"
    ))?;
    let rows = stmt.query_map([], user)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn update_user(
    conn: &Connection,
    id: i64,
    display_name: Option<&str>,
    role: Option<&str>,
    is_active: Option<bool>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE users SET display_name = COALESCE(?2, display_name), role = COALESCE(?3, role),
                          is_active = COALESCE(?4, is_active) WHERE id = ?1",
        params![id, display_name, role, is_active],
    )?;
    Ok(())
}

pub fn set_password(conn: &Connection, id: i64, password_hash: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE users SET password_hash = ?2 WHERE id = ?1",
        params![id, password_hash],
    )?;
    Ok(())
}

pub fn delete_user(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM users WHERE id = ?1", [id])? > 0)
}

// --- sessions ---

pub fn insert_session(
    conn: &Connection,
    id_hash: &str,
    user_id: i64,
    now: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO sessions (id_hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![id_hash, user_id, now, expires_at],
    )?;
    Ok(())
}

/// The active user behind an unexpired session.
pub fn session_user(
    conn: &Connection,
    id_hash: &str,
    now: i64,
) -> Result<Option<UserRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {} FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.id_hash = ?1 AND s.expires_at > ?2 AND u.is_active = 1",
                USER_COLUMNS
                    .split(", ")
                    .map(|c| format!("u.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            params![id_hash, now],
            user,
        )
        .optional()?)
}

pub fn delete_session(conn: &Connection, id_hash: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?;
    Ok(())
}

/// Ends every session of a user (password change, disable), except `keep`.
pub fn delete_sessions_of(
    conn: &Connection,
    user_id: i64,
    keep: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND id_hash IS NOT ?2",
        params![user_id, keep],
    )?;
    Ok(())
}

pub fn purge_expired_sessions(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    Ok(conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?)
}

// --- API tokens ---

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used: Option<i64>,
    pub expires_at: Option<i64>,
}

pub fn insert_token(
    conn: &Connection,
    user_id: i64,
    name: &str,
    token_hash: &str,
    now: i64,
    expires_at: Option<i64>,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO api_tokens (user_id, name, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, name, token_hash, now, expires_at],
    )?;
    Ok(conn.last_insert_rowid())
}

/// A token's owner, the token's id, its stored hash and when it was last used.
pub type TokenOwner = (UserRow, i64, String, Option<i64>);

/// The active user owning a token, and the token's id and stored hash.
pub fn token_user(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> Result<Option<TokenOwner>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {}, t.id, t.token_hash, t.last_used FROM api_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = ?1 AND u.is_active = 1
                   AND (t.expires_at IS NULL OR t.expires_at > ?2)",
                USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
            ),
            params![token_hash, now],
            |r| Ok((user(r)?, r.get(7)?, r.get(8)?, r.get(9)?)),
        )
        .optional()?)
}

pub fn touch_token(conn: &Connection, id: i64, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE api_tokens SET last_used = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

pub fn list_tokens(conn: &Connection, user_id: i64) -> Result<Vec<TokenRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, user_id, name, created_at, last_used, expires_at FROM api_tokens WHERE user_id = ?1 ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(TokenRow {
            id: r.get(0)?,
            user_id: r.get(1)?,
            name: r.get(2)?,
            created_at: r.get(3)?,
            last_used: r.get(4)?,
            expires_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes every API token of a user (password change or reset), except `keep`.
pub fn delete_tokens_of(
    conn: &Connection,
    user_id: i64,
    keep: Option<i64>,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM api_tokens WHERE user_id = ?1 AND id IS NOT ?2",
        params![user_id, keep],
    )?)
}

/// Deletes a token of `user_id`; returns its name, `None` when it is not theirs or absent.
pub fn delete_token(
    conn: &Connection,
    user_id: i64,
    id: i64,
) -> Result<Option<String>, StoreError> {
    let name: Option<String> = conn
        .query_row(
            "SELECT name FROM api_tokens WHERE id = ?1 AND user_id = ?2",
            params![id, user_id],
            |r| r.get(0),
        )
        .optional()?;
    if name.is_some() {
        conn.execute("DELETE FROM api_tokens WHERE id = ?1", [id])?;
    }
    Ok(name)
}

// --- invitations ---

#[derive(Debug, Clone)]
pub struct InvitationRow {
    pub id: i64,
    pub role: String,
    pub max_usage: i64,
    pub usage_count: i64,
    pub expires_at: i64,
    pub created_by: Option<i64>,
    pub created_at: i64,
}

pub fn insert_invitation(
    conn: &Connection,
    token_hash: &str,
    role: &str,
    max_usage: i64,
    expires_at: i64,
    created_by: Option<i64>,
    now: i64,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO invitations (token_hash, role, max_usage, usage_count, expires_at, created_by, created_at)
         VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
        params![token_hash, role, max_usage, expires_at, created_by, now],
    )?;
    Ok(conn.last_insert_rowid())
}

fn invitation(r: &Row) -> rusqlite::Result<InvitationRow> {
    Ok(InvitationRow {
        id: r.get(0)?,
        role: r.get(1)?,
        max_usage: r.get(2)?,
        usage_count: r.get(3)?,
        expires_at: r.get(4)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
    })
}

const INVITATION_COLUMNS: &str =
    "id, role, max_usage, usage_count, expires_at, created_by, created_at";

/// Uses one slot of a valid invitation, in one conditional UPDATE: of two concurrent uses of
/// the last slot, exactly one succeeds. Returns the invitation as it was.
/// Whether an invitation with this digest could admit one more account now.
pub fn invitation_usable(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM invitations
             WHERE token_hash = ?1 AND usage_count < max_usage AND expires_at > ?2",
            params![token_hash, now],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub fn claim_invitation(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> Result<Option<InvitationRow>, StoreError> {
    let changed = conn.execute(
        "UPDATE invitations SET usage_count = usage_count + 1
         WHERE token_hash = ?1 AND usage_count < max_usage AND expires_at > ?2",
        params![token_hash, now],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            &format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = ?1"),
            [token_hash],
            invitation,
        )
        .optional()?)
}

pub fn list_invitations(conn: &Connection) -> Result<Vec<InvitationRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations ORDER BY id DESC"
    ))?;
    let rows = stmt.query_map([], invitation)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn delete_invitation(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM invitations WHERE id = ?1", [id])? > 0)
}

// --- audit ---

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor_id: Option<i64>,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub address: Option<String>,
}

/// Removes entries made before `before` (ms); returns how many.
pub fn purge_audit(conn: &Connection, before: i64) -> Result<usize, StoreError> {
    Ok(conn.execute("DELETE FROM audit WHERE at < ?1", [before])?)
}

pub fn insert_audit(conn: &Connection, e: &AuditRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit (at, actor_id, actor, action, target, detail, address) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![e.at, e.actor_id, e.actor, e.action, e.target, e.detail, e.address],
    )?;
    Ok(())
}

pub fn list_audit(
    conn: &Connection,
    limit: u32,
    offset: u32,
) -> Result<(Vec<AuditRow>, i64), StoreError> {
    let total: i64 = conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, actor_id, actor, action, target, detail, address FROM audit ORDER BY id DESC LIMIT ?1 OFFSET ?2",
    )?;
    let rows = stmt.query_map(params![limit, offset], |r| {
        Ok(AuditRow {
            id: r.get(0)?,
            at: r.get(1)?,
            actor_id: r.get(2)?,
            actor: r.get(3)?,
            action: r.get(4)?,
            target: r.get(5)?,
            detail: r.get(6)?,
            address: r.get(7)?,
        })
    })?;
    Ok((rows.collect::<Result<_, _>>()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_stops_working_at_its_expiry() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        let user = insert_user(&conn, "ann", None, "hash", "user", 0)
            .unwrap()
            .unwrap();
        insert_token(&conn, user, "short", "digest-a", 0, Some(10_000)).unwrap();
        insert_token(&conn, user, "long", "digest-b", 0, None).unwrap();
        assert!(token_user(&conn, "digest-a", 9_999).unwrap().is_some());
        assert!(token_user(&conn, "digest-a", 10_000).unwrap().is_none());
        assert!(token_user(&conn, "digest-b", i64::MAX).unwrap().is_some());
        assert_eq!(delete_tokens_of(&conn, user, None).unwrap(), 2);
    }
}
