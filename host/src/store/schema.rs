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
    // 3: a task's definition (what it runs and books, fixed at submission) becomes one JSON
    // document, the same one the runner receives; `booked` records that its resources are
    // held, which outlives its status when a kill has not been confirmed by the runner yet.
    r#"
    ALTER TABLE tasks ADD COLUMN definition TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE tasks ADD COLUMN booked INTEGER NOT NULL DEFAULT 0;
    UPDATE tasks SET
        definition = json_object(
            'task_type', task_type,
            'command', command,
            'arguments', json(arguments),
            'working_dir', working_dir,
            'vps_backend', vps_backend,
            'vm_image', vm_image,
            'vm_disk_size', vm_disk_size,
            'required_cores', required_cores,
            'required_gpus', json(required_gpus),
            'required_memory_bytes', required_memory_bytes,
            'target_numa_node_id', target_numa_node_id,
            'container_name', container_name,
            'registry_image', registry_image,
            'env_vars', json(env_vars),
            'privileged', json(CASE WHEN privileged THEN 'true' ELSE 'false' END),
            'mounts', json(mounts)),
        booked = status IN ('assigning', 'running', 'paused', 'lost');
    ALTER TABLE tasks DROP COLUMN command;
    ALTER TABLE tasks DROP COLUMN arguments;
    ALTER TABLE tasks DROP COLUMN env_vars;
    ALTER TABLE tasks DROP COLUMN required_cores;
    ALTER TABLE tasks DROP COLUMN required_gpus;
    ALTER TABLE tasks DROP COLUMN required_memory_bytes;
    ALTER TABLE tasks DROP COLUMN target_numa_node_id;
    ALTER TABLE tasks DROP COLUMN container_name;
    ALTER TABLE tasks DROP COLUMN docker_image_name;
    ALTER TABLE tasks DROP COLUMN registry_image;
    ALTER TABLE tasks DROP COLUMN working_dir;
    ALTER TABLE tasks DROP COLUMN privileged;
    ALTER TABLE tasks DROP COLUMN mounts;
    ALTER TABLE tasks DROP COLUMN vps_backend;
    ALTER TABLE tasks DROP COLUMN vm_image;
    ALTER TABLE tasks DROP COLUMN vm_disk_size;
    CREATE INDEX tasks_booked ON tasks(assigned_node) WHERE booked = 1;
    "#,
    // 4: audit entries expire (`audit_retention`): find old ones without a scan. API tokens
    // may carry an expiry (NULL: none). Each runner holds a credential of its own, bound to
    // its hostname (the SHA-256 digest is kept; NULL: not issued yet).
    r#"
    CREATE INDEX audit_by_time ON audit(at);
    ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
    ALTER TABLE nodes ADD COLUMN credential_hash TEXT;
    "#,
    // 5: each placement of a task is numbered (the fencing number runners echo back). Tasks
    // placed before this version stay at 0, which runners that never saw an attempt match.
    r#"
    ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
    "#,
    // 6: users assigned to a VPS (they may reach it as its owner does).
    r#"
    CREATE TABLE vps_assignments (
        task_id     INTEGER NOT NULL REFERENCES tasks(task_id),
        user_id     INTEGER NOT NULL REFERENCES users(id),
        assigned_at INTEGER NOT NULL,
        PRIMARY KEY (task_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX vps_assignments_by_user ON vps_assignments(user_id);
    "#,
    // 7: each task's timeline: every step of its life, written with the change that made it.
    r#"
    CREATE TABLE task_events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id  INTEGER NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
        at       INTEGER NOT NULL,
        event    TEXT NOT NULL,
        status   TEXT NOT NULL,
        node     TEXT,
        attempt  INTEGER NOT NULL,
        detail   TEXT
    );
    CREATE INDEX task_events_by_task ON task_events(task_id, id);
    "#,
    // 8: retries. A task's run (attempt) number and the end of its backoff; each ended attempt
    // kept with how it ended; each timeline step says which attempt it belongs to.
    r#"
    ALTER TABLE tasks ADD COLUMN run INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE tasks ADD COLUMN retry_at INTEGER;
    ALTER TABLE task_events ADD COLUMN run INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE task_attempts (
        task_id       INTEGER NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
        run           INTEGER NOT NULL,
        status        TEXT NOT NULL,
        node          TEXT,
        exit_code     INTEGER,
        error_message TEXT,
        started_at    INTEGER,
        completed_at  INTEGER,
        PRIMARY KEY (task_id, run)
    ) WITHOUT ROWID;
    "#,
];

/// Migrations up to `version` only (tests of an upgrade from an older schema).
#[cfg(test)]
pub fn migrate_to(conn: &mut Connection, version: usize) -> Result<(), StoreError> {
    for (i, sql) in MIGRATIONS.iter().enumerate().take(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

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
