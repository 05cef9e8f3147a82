//! The `task_events` table: each task's timeline (see `tasks::timeline` for what a step is),
//! appended in the transaction of the change it records, read oldest first, deleted with the
//! task.

use super::StoreError;
use crate::tasks::model::Task;
use crate::tasks::timeline::Step;
use ferry_common::api::TimelineEntry;
use ferry_common::time::format_ms;
use ferry_common::{TaskId, TaskStatus};
use rusqlite::{params, Connection};

/// Steps kept per task: a task that flaps (lost and back, again and again) cannot grow its
/// timeline without bound; the first steps, which say how it began, are kept.
pub const MAX_STEPS: i64 = 500;

/// Appends `steps`, each about `t` as it is now.
pub fn record(conn: &Connection, t: &Task, at_ms: i64, steps: &[Step]) -> Result<(), StoreError> {
    if steps.is_empty() {
        return Ok(());
    }
    let room = (MAX_STEPS - held(conn, t.id)?).max(0) as usize;
    for s in steps.iter().take(room) {
        insert(
            conn,
            t.id,
            at_ms,
            s,
            (t.status, t.assigned_node.as_deref(), t.attempt, t.run),
        )?;
    }
    Ok(())
}

/// Appends one step of task `id` (in `status`, on `node`, in placement `attempt` of run
/// `run`) written outside a change: the host sending a placed task to its runner.
pub fn append(
    conn: &Connection,
    id: TaskId,
    at_ms: i64,
    step: &Step,
    (status, node, attempt, run): (TaskStatus, &str, u32, u32),
) -> Result<(), StoreError> {
    if held(conn, id)? < MAX_STEPS {
        insert(conn, id, at_ms, step, (status, Some(node), attempt, run))?;
    }
    Ok(())
}

/// Steps the task has.
fn held(conn: &Connection, id: TaskId) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM task_events WHERE task_id = ?1")?
        .query_row([id.0 as i64], |r| r.get(0))?)
}

fn insert(
    conn: &Connection,
    id: TaskId,
    at_ms: i64,
    step: &Step,
    (status, node, attempt, run): (TaskStatus, Option<&str>, u32, u32),
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO task_events (task_id, at, event, status, node, attempt, detail, run)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id.0 as i64,
        at_ms,
        step.event,
        status.as_str(),
        node,
        attempt,
        step.detail,
        run
    ])?;
    Ok(())
}

/// A user's name, for "approved by".
pub fn username(conn: &Connection, id: Option<i64>) -> Result<Option<String>, StoreError> {
    let Some(id) = id else { return Ok(None) };
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached("SELECT username FROM users WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// A task's timeline, oldest first.
pub fn list(conn: &Connection, id: TaskId) -> Result<Vec<TimelineEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, event, status, node, attempt, detail, run FROM task_events
         WHERE task_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([id.0 as i64], |r| {
        Ok(TimelineEntry {
            time: format_ms(r.get(0)?),
            event: r.get(1)?,
            status: r.get(2)?,
            node: r.get(3)?,
            placement: r.get(4)?,
            detail: r.get(5)?,
            attempt: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
