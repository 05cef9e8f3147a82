//! The `task_attempts` table: each ended attempt of a task that was run again (its status,
//! node, exit and times as it ended), written in the transaction that started the next one.
//! The attempt under way is the task's own row.

use super::StoreError;
use crate::tasks::model::Task;
use ferry_common::{TaskId, TaskStatus};
use rusqlite::{named_params, Connection};

/// An attempt as it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedAttempt {
    pub run: u32,
    pub status: TaskStatus,
    pub node: Option<String>,
    pub exit_code: Option<i64>,
    pub error_message: Option<String>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
}

/// Keeps `t`'s current attempt as it is now (ended).
pub fn record(conn: &Connection, t: &Task) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO task_attempts (task_id, run, status, node, exit_code,
            error_message, started_at, completed_at)
         VALUES (:task_id, :run, :status, :node, :exit_code, :error_message, :started_at,
            :completed_at)",
    )?
    .execute(named_params! {
        ":task_id": t.id.0 as i64,
        ":run": t.run,
        ":status": t.status.as_str(),
        ":node": t.assigned_node,
        ":exit_code": t.exit_code,
        ":error_message": t.error_message,
        ":started_at": t.started_at,
        ":completed_at": t.completed_at,
    })?;
    Ok(())
}

/// The ended attempts of task `id`, oldest first.
pub fn list(conn: &Connection, id: TaskId) -> Result<Vec<EndedAttempt>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT run, status, node, exit_code, error_message, started_at, completed_at
         FROM task_attempts WHERE task_id = ?1 ORDER BY run",
    )?;
    let rows = stmt.query_map([id.0 as i64], |r| {
        let status: String = r.get(1)?;
        Ok((
            r.get::<_, u32>(0)?,
            status,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (run, status, node, exit_code, error_message, started_at, completed_at) = row?;
        let status = status
            .parse()
            .map_err(|e: ferry_common::status::BadStatus| StoreError::Corrupt(e.to_string()))?;
        out.push(EndedAttempt {
            run,
            status,
            node,
            exit_code,
            error_message,
            started_at,
            completed_at,
        });
    }
    Ok(out)
}

/// The node attempt `run` of task `id` ran on, if it ended and had one.
pub fn node_of(conn: &Connection, id: TaskId, run: u32) -> Result<Option<String>, StoreError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached("SELECT node FROM task_attempts WHERE task_id = ?1 AND run = ?2")?
        .query_row(rusqlite::params![id.0 as i64, run], |r| r.get(0))
        .optional()?
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::model::tests::sample;

    #[test]
    fn ended_attempts_are_kept_in_order_with_their_node_and_exit() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        let mut t = sample(3);
        super::super::tasks::insert(&c, &t).unwrap();
        for run in [2, 1] {
            t.run = run;
            t.status = TaskStatus::Failed;
            t.assigned_node = Some(format!("n{run}"));
            t.exit_code = Some(run as i64);
            record(&c, &t).unwrap();
        }
        let got = list(&c, TaskId(3)).unwrap();
        assert_eq!(got.iter().map(|a| a.run).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(got[1].exit_code, Some(2));
        assert_eq!(node_of(&c, TaskId(3), 1).unwrap().as_deref(), Some("n1"));
        assert_eq!(node_of(&c, TaskId(3), 9).unwrap(), None);
    }
}
