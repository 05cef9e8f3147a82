//! Versioned migrations, tracked in SQLite's `user_version`. Each step runs once, in order, in
//! one transaction with the version bump; add new steps at the end, never edit old ones.

use super::StoreError;
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: nodes and tasks.
    r#"
    CREATE TABLE nodes (
        hostname              TEXT PRIMARY KEY,
        url                   TEXT NOT NULL,
        total_cores           INTEGER NOT NULL,
        memory_total_bytes    INTEGER,
        numa_topology         TEXT NOT NULL DEFAULT '{}',
        gpu_info              TEXT NOT NULL DEFAULT '[]',
        status                TEXT NOT NULL,
        last_heartbeat        INTEGER,
        metrics               TEXT,
        runner_version        TEXT,
        heartbeat_interval_ms INTEGER,
        registered_at         INTEGER NOT NULL
    );
    CREATE TABLE tasks (
        task_id               INTEGER PRIMARY KEY,
        task_type             TEXT NOT NULL,
        batch_id              INTEGER,
        name                  TEXT,
        owner_id              INTEGER,
        approval_status       TEXT,
        approved_by_id        INTEGER,
        approved_at           INTEGER,
        rejection_reason      TEXT,
        command               TEXT NOT NULL,
        arguments             TEXT NOT NULL,
        env_vars              TEXT NOT NULL,
        required_cores        INTEGER NOT NULL,
        required_gpus         TEXT NOT NULL,
        required_memory_bytes INTEGER,
        target_node           TEXT,
        target_numa_node_id   INTEGER,
        status                TEXT NOT NULL,
        assigned_node         TEXT,
        container_name        TEXT,
        docker_image_name     TEXT,
        registry_image        TEXT,
        working_dir           TEXT,
        privileged            INTEGER NOT NULL DEFAULT 0,
        mounts                TEXT NOT NULL DEFAULT '[]',
        priority              INTEGER NOT NULL DEFAULT 0,
        exit_code             INTEGER,
        error_message         TEXT,
        submitted_at          INTEGER NOT NULL,
        started_at            INTEGER,
        completed_at          INTEGER,
        last_seq              INTEGER NOT NULL DEFAULT 0,
        ssh_port              INTEGER,
        vps_backend           TEXT NOT NULL DEFAULT 'docker',
        vm_image              TEXT,
        vm_disk_size          TEXT,
        vm_ip                 TEXT
    );
    CREATE INDEX tasks_by_status ON tasks(status, task_id);
    CREATE INDEX tasks_by_node ON tasks(assigned_node, status);
    "#,
    // 2: users, sessions, API tokens, invitations, audit log.
    r#"
    CREATE TABLE users (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        username            TEXT NOT NULL UNIQUE,
        display_name        TEXT,
        password_hash       TEXT NOT NULL,
        role                TEXT NOT NULL,
        is_active           INTEGER NOT NULL DEFAULT 1,
        created_at          INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id_hash             TEXT PRIMARY KEY,
        user_id             INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at          INTEGER NOT NULL,
        expires_at          INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions(user_id);
    CREATE TABLE api_tokens (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id             INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name                TEXT NOT NULL,
        token_hash          TEXT NOT NULL UNIQUE,
        created_at          INTEGER NOT NULL,
        last_used           INTEGER
    );
    CREATE TABLE invitations (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        token_hash          TEXT NOT NULL UNIQUE,
        role                TEXT NOT NULL,
        max_usage           INTEGER NOT NULL,
        usage_count         INTEGER NOT NULL DEFAULT 0,
        expires_at          INTEGER NOT NULL,
        created_by          INTEGER REFERENCES users(id) ON DELETE SET NULL,
        created_at          INTEGER NOT NULL
    );
    CREATE TABLE audit (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        at                  INTEGER NOT NULL,
        actor_id            INTEGER,
        actor               TEXT,
        action              TEXT NOT NULL,
        target              TEXT,
        detail              TEXT,
        address             TEXT
    );
    "#,
];

pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer_schemas() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        migrate(&mut c).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        c.pragma_update(None, "user_version", 999).unwrap();
        assert!(matches!(migrate(&mut c), Err(StoreError::TooNew { .. })));
    }
}
