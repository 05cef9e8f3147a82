//! Who is assigned to which VPS (`vps_assignments`): assignment lets a user reach a VPS they
//! do not own (its status, snapshots, and the terminal, files and forwards).

use super::StoreError;
use ferry_common::TaskId;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

/// One assigned user as the API shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignee {
    pub user_id: i64,
    pub username: String,
    pub display_name: Option<String>,
    pub assigned_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("User {0} not found.")]
    NoSuchUser(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for AssignError {
    fn from(e: rusqlite::Error) -> Self {
        AssignError::Store(e.into())
    }
}

/// Assigns `users` to `task` (each checked first; nothing is written if one is missing).
/// Users already assigned are skipped. Returns how many were added.
pub fn assign(
    conn: &Connection,
    task: TaskId,
    users: &[i64],
    at: i64,
) -> Result<usize, AssignError> {
    let mut exists = conn.prepare_cached("SELECT 1 FROM users WHERE id = ?1")?;
    for u in users {
        if exists.query_row([u], |_| Ok(())).optional()?.is_none() {
            return Err(AssignError::NoSuchUser(*u));
        }
    }
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO vps_assignments (task_id, user_id, assigned_at) VALUES (?1, ?2, ?3)",
    )?;
    let mut added = 0;
    for u in users {
        added += insert.execute(params![task.0 as i64, u, at])?;
    }
    Ok(added)
}

/// Removes one assignment; `false` when there was none.
pub fn unassign(conn: &Connection, task: TaskId, user: i64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "DELETE FROM vps_assignments WHERE task_id = ?1 AND user_id = ?2",
        params![task.0 as i64, user],
    )?;
    Ok(n > 0)
}

/// The users assigned to each of `tasks` (one query), in assignment order.
pub fn assignees(
    conn: &Connection,
    tasks: &[TaskId],
) -> Result<HashMap<TaskId, Vec<Assignee>>, StoreError> {
    let list = serde_json::to_string(&tasks.iter().map(|i| i.0 as i64).collect::<Vec<_>>())
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT a.task_id, a.user_id, u.username, u.display_name, a.assigned_at
           FROM vps_assignments a JOIN users u ON u.id = a.user_id
          WHERE a.task_id IN (SELECT value FROM json_each(?1))
          ORDER BY a.assigned_at, a.user_id",
    )?;
    let rows = stmt.query_map([list], |r| {
        Ok((
            TaskId(r.get::<_, i64>(0)? as u64),
            Assignee {
                user_id: r.get(1)?,
                username: r.get(2)?,
                display_name: r.get(3)?,
                assigned_at: r.get(4)?,
            },
        ))
    })?;
    let mut out: HashMap<TaskId, Vec<Assignee>> = HashMap::new();
    for row in rows {
        let (id, a) = row?;
        out.entry(id).or_default().push(a);
    }
    Ok(out)
}

/// Whether `user` is assigned to `task`.
pub fn is_assigned(conn: &Connection, task: TaskId, user: i64) -> Result<bool, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT 1 FROM vps_assignments WHERE task_id = ?1 AND user_id = ?2")?;
    Ok(stmt
        .query_row(params![task.0 as i64, user], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The VPSes `user` is assigned to.
pub fn assigned_to(conn: &Connection, user: i64) -> Result<Vec<TaskId>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT task_id FROM vps_assignments WHERE user_id = ?1 ORDER BY task_id DESC",
    )?;
    let rows = stmt.query_map([user], |r| Ok(TaskId(r.get::<_, i64>(0)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tasks::{insert_batch, tests::vps_sample};

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut c).unwrap();
        for (id, name) in [(1, "ann"), (2, "bob")] {
            c.execute(
                "INSERT INTO users (id, username, password_hash, role, created_at)
                 VALUES (?1, ?2, 'x', 'user', 0)",
                params![id, name],
            )
            .unwrap();
        }
        c
    }

    #[test]
    fn assignments_are_checked_kept_once_and_removed() {
        let c = db();
        insert_batch(&c, &[vps_sample(10)]).unwrap();
        assert!(matches!(
            assign(&c, TaskId(10), &[1, 99], 5),
            Err(AssignError::NoSuchUser(99))
        ));
        assert!(
            assignees(&c, &[TaskId(10)]).unwrap().is_empty(),
            "nothing half-written"
        );
        assert_eq!(assign(&c, TaskId(10), &[1, 2], 5).unwrap(), 2);
        assert_eq!(
            assign(&c, TaskId(10), &[1], 6).unwrap(),
            0,
            "duplicates skipped"
        );
        let got = assignees(&c, &[TaskId(10)]).unwrap();
        let names: Vec<&str> = got[&TaskId(10)]
            .iter()
            .map(|a| a.username.as_str())
            .collect();
        assert_eq!(names, vec!["ann", "bob"]);
        assert!(is_assigned(&c, TaskId(10), 2).unwrap());
        assert_eq!(assigned_to(&c, 1).unwrap(), vec![TaskId(10)]);
        assert!(unassign(&c, TaskId(10), 2).unwrap());
        assert!(!unassign(&c, TaskId(10), 2).unwrap());
        assert!(!is_assigned(&c, TaskId(10), 2).unwrap());
    }
}
