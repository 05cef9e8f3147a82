//! The `tasks` table: rows in and out, and the one guarded status update every state change
//! goes through (transition rules from `ferry_common::status`, report sequence numbers).

use super::StoreError;
use ferry_common::{TaskId, TaskStatus};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: TaskId,
    pub task_type: String,
    pub batch_id: Option<TaskId>,
    pub owner_id: Option<i64>,
    pub approval_status: Option<String>,
    pub approved_by_id: Option<i64>,
    pub approved_at: Option<i64>,
    pub rejection_reason: Option<String>,
    pub command: String,
    pub arguments: Vec<String>,
    pub env_vars: BTreeMap<String, String>,
    pub required_cores: u32,
    pub required_gpus: Vec<u32>,
    pub required_memory_bytes: Option<u64>,
    /// The node the submitter asked for; `None` = placed automatically.
    pub target_node: Option<String>,
    pub target_numa_node_id: Option<u32>,
    pub status: TaskStatus,
    pub assigned_node: Option<String>,
    pub container_name: Option<String>,
    pub docker_image_name: Option<String>,
    pub registry_image: Option<String>,
    pub working_dir: Option<String>,
    pub privileged: bool,
    pub mounts: Vec<String>,
    pub priority: i64,
    pub exit_code: Option<i64>,
    pub error_message: Option<String>,
    pub submitted_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub last_seq: u64,
    /// Read-only, joined from `users` (ignored on insert).
    pub owner_username: Option<String>,
    pub approved_by_username: Option<String>,
}

const COLUMNS: &str =
    "task_id, task_type, batch_id, owner_id, approval_status, command, arguments, \
    env_vars, required_cores, required_gpus, required_memory_bytes, target_node, \
    target_numa_node_id, status, assigned_node, container_name, docker_image_name, \
    registry_image, working_dir, privileged, mounts, priority, exit_code, error_message, \
    submitted_at, started_at, completed_at, last_seq, approved_by_id, approved_at, rejection_reason";

/// `SELECT ... FROM` with owner and approver names joined in (one query, no look-up per row).
fn select() -> String {
    let cols: Vec<String> = COLUMNS
        .split(',')
        .map(|c| format!("t.{}", c.trim()))
        .collect();
    format!(
        "SELECT {}, ou.username, au.username FROM tasks t
         LEFT JOIN users ou ON ou.id = t.owner_id LEFT JOIN users au ON au.id = t.approved_by_id",
        cols.join(", ")
    )
}

fn json_col<T: serde::de::DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn status_col(row: &Row, idx: usize) -> rusqlite::Result<TaskStatus> {
    let text: String = row.get(idx)?;
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn from_row(r: &Row) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: TaskId(r.get::<_, i64>(0)? as u64),
        task_type: r.get(1)?,
        batch_id: r.get::<_, Option<i64>>(2)?.map(|b| TaskId(b as u64)),
        owner_id: r.get(3)?,
        approval_status: r.get(4)?,
        command: r.get(5)?,
        arguments: json_col(r, 6)?,
        env_vars: json_col(r, 7)?,
        required_cores: r.get(8)?,
        required_gpus: json_col(r, 9)?,
        required_memory_bytes: r.get::<_, Option<i64>>(10)?.map(|m| m as u64),
        target_node: r.get(11)?,
        target_numa_node_id: r.get(12)?,
        status: status_col(r, 13)?,
        assigned_node: r.get(14)?,
        container_name: r.get(15)?,
        docker_image_name: r.get(16)?,
        registry_image: r.get(17)?,
        working_dir: r.get(18)?,
        privileged: r.get(19)?,
        mounts: json_col(r, 20)?,
        priority: r.get(21)?,
        exit_code: r.get(22)?,
        error_message: r.get(23)?,
        submitted_at: r.get(24)?,
        started_at: r.get(25)?,
        completed_at: r.get(26)?,
        last_seq: r.get::<_, i64>(27)? as u64,
        approved_by_id: r.get(28)?,
        approved_at: r.get(29)?,
        rejection_reason: r.get(30)?,
        owner_username: r.get(31)?,
        approved_by_username: r.get(32)?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub fn insert(conn: &Connection, t: &TaskRow) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO tasks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)"),
        params![
            t.id.0 as i64,
            t.task_type,
            t.batch_id.map(|b| b.0 as i64),
            t.owner_id,
            t.approval_status,
            t.command,
            to_json(&t.arguments),
            to_json(&t.env_vars),
            t.required_cores,
            to_json(&t.required_gpus),
            t.required_memory_bytes.map(|m| m as i64),
            t.target_node,
            t.target_numa_node_id,
            t.status.as_str(),
            t.assigned_node,
            t.container_name,
            t.docker_image_name,
            t.registry_image,
            t.working_dir,
            t.privileged,
            to_json(&t.mounts),
            t.priority,
            t.exit_code,
            t.error_message,
            t.submitted_at,
            t.started_at,
            t.completed_at,
            t.last_seq as i64,
            t.approved_by_id,
            t.approved_at,
            t.rejection_reason,
        ],
    )?;
    Ok(())
}

/// Inserts a batch all or nothing (in a nested savepoint, so it composes with the writer's).
pub fn insert_batch(conn: &Connection, rows: &[TaskRow]) -> Result<(), StoreError> {
    conn.execute_batch("SAVEPOINT insert_batch")?;
    match rows.iter().try_for_each(|t| insert(conn, t)) {
        Ok(()) => {
            conn.execute_batch("RELEASE insert_batch")?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO insert_batch; RELEASE insert_batch");
            Err(e)
        }
    }
}

pub fn get(conn: &Connection, id: TaskId) -> Result<Option<TaskRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("{} WHERE t.task_id = ?1", select()),
            [id.0 as i64],
            from_row,
        )
        .optional()?)
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<TaskStatus>,
    pub task_type: Option<String>,
    pub node: Option<String>,
    /// Only tasks of this owner.
    pub owner: Option<i64>,
    pub limit: u32,
    pub offset: u32,
}

/// Newest first.
pub fn list(conn: &Connection, f: &ListFilter) -> Result<Vec<TaskRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{} WHERE (?1 IS NULL OR t.status = ?1) AND (?2 IS NULL OR t.task_type = ?2)
           AND (?3 IS NULL OR t.assigned_node = ?3) AND (?6 IS NULL OR t.owner_id = ?6)
         ORDER BY t.task_id DESC LIMIT ?4 OFFSET ?5",
        select()
    ))?;
    let rows = stmt.query_map(
        params![
            f.status.map(|s| s.as_str()),
            f.task_type,
            f.node,
            f.limit,
            f.offset,
            f.owner
        ],
        from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Tasks the scheduler must know about at start: those holding resources and those queued.
pub fn active(conn: &Connection) -> Result<Vec<TaskRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{} WHERE t.status IN ('pending', 'assigning', 'running', 'paused', 'lost') ORDER BY t.task_id",
        select()
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Tasks placed on `node` that still hold resources there: (id, status, started?).
pub fn holding_on(
    conn: &Connection,
    node: &str,
) -> Result<Vec<(TaskId, TaskStatus, bool)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT task_id, status, started_at IS NOT NULL FROM tasks
         WHERE assigned_node = ?1 AND status IN ('assigning', 'running', 'paused', 'lost')",
    )?;
    let rows = stmt.query_map([node], |r| {
        Ok((
            TaskId(r.get::<_, i64>(0)? as u64),
            status_col(r, 1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many tasks are in each status.
pub fn count_by_status(conn: &Connection) -> Result<Vec<(TaskStatus, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM tasks GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((status_col(r, 0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Status of one task, if it exists.
pub fn status_of(conn: &Connection, id: TaskId) -> Result<Option<TaskStatus>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT status FROM tasks WHERE task_id = ?1",
            [id.0 as i64],
            |r| status_col(r, 0),
        )
        .optional()?)
}

/// Statuses of the given tasks (those that exist), in one query.
pub fn statuses(
    conn: &Connection,
    ids: &[TaskId],
) -> Result<Vec<(TaskId, TaskStatus)>, StoreError> {
    let list = serde_json::to_string(&ids.iter().map(|i| i.0 as i64).collect::<Vec<_>>())
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT task_id, status FROM tasks WHERE task_id IN (SELECT value FROM json_each(?1))",
    )?;
    let rows = stmt.query_map([list], |r| {
        Ok((TaskId(r.get::<_, i64>(0)? as u64), status_col(r, 1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A requested state change, as a runner report or a host decision.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub status: Option<TaskStatus>,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    /// Sequence number of a runner report; reports at or below the last applied are dropped.
    pub seq: Option<u64>,
    /// Set on placement.
    pub assigned_node: Option<String>,
    /// The node a runner report comes from; a report from another node than the task's is ignored.
    pub reporter: Option<String>,
    /// Set on approval or rejection: (approval status, by whom, rejection reason).
    pub approval: Option<(String, Option<i64>, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Changed {
        from: TaskStatus,
        to: TaskStatus,
        node: Option<String>,
    },
    Ignored(String),
    NotFound,
}

/// Applies `change` if the transition is allowed and the report is not stale. Timestamps:
/// `started_at` is kept once set; a final state gets `completed_at` (now when not given).
pub fn apply(
    conn: &Connection,
    id: TaskId,
    change: &Change,
    now_ms: i64,
) -> Result<Applied, StoreError> {
    let Some(cur) = get(conn, id)? else {
        return Ok(Applied::NotFound);
    };
    if let Some(seq) = change.seq {
        if seq <= cur.last_seq {
            return Ok(Applied::Ignored(format!(
                "report {seq} already applied (last {})",
                cur.last_seq
            )));
        }
    }
    if let (Some(from), Some(on)) = (&change.reporter, &cur.assigned_node) {
        if from != on {
            return Ok(Applied::Ignored(format!(
                "report from node {from}, but the task is on {on}"
            )));
        }
    }
    let Some(to) = change.status else {
        return Ok(Applied::Ignored("no status".into()));
    };
    if !cur.status.can_become(to) {
        // Still record the sequence so a stale duplicate is recognised next time.
        if let Some(seq) = change.seq {
            conn.execute(
                "UPDATE tasks SET last_seq = ?2 WHERE task_id = ?1",
                params![id.0 as i64, seq as i64],
            )?;
        }
        return Ok(Applied::Ignored(format!(
            "{} -> {} is not allowed",
            cur.status, to
        )));
    }
    let started_at = cur.started_at.or(change.started_at).or(match to {
        TaskStatus::Running => Some(now_ms),
        _ => None,
    });
    let completed_at = if to.is_final() {
        Some(change.completed_at.unwrap_or(now_ms))
    } else {
        None
    };
    let exit_code = if to.is_final() || to == TaskStatus::Lost {
        change.exit_code.or(cur.exit_code)
    } else {
        cur.exit_code
    };
    // A task back from `lost` sheds the "node went offline" message with the state.
    let message = if to.is_final() || to == TaskStatus::Lost || cur.status == TaskStatus::Lost {
        change.message.clone()
    } else {
        change.message.clone().or(cur.error_message.clone())
    };
    let node = change.assigned_node.clone().or(cur.assigned_node.clone());
    conn.execute(
        "UPDATE tasks SET status = ?2, exit_code = ?3, error_message = ?4, started_at = ?5,
            completed_at = ?6, assigned_node = ?7, last_seq = MAX(last_seq, ?8)
         WHERE task_id = ?1",
        params![
            id.0 as i64,
            to.as_str(),
            exit_code,
            message,
            started_at,
            completed_at,
            node,
            change.seq.unwrap_or(0) as i64,
        ],
    )?;
    if let Some((status, by, reason)) = &change.approval {
        conn.execute(
            "UPDATE tasks SET approval_status = ?2, approved_by_id = ?3, approved_at = ?4, rejection_reason = ?5
             WHERE task_id = ?1",
            params![id.0 as i64, status, by, now_ms, reason],
        )?;
    }
    Ok(Applied::Changed {
        from: cur.status,
        to,
        node,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(id: u64) -> TaskRow {
        TaskRow {
            id: TaskId(id),
            task_type: "command".into(),
            batch_id: Some(TaskId(id)),
            owner_id: None,
            approval_status: None,
            command: "echo".into(),
            arguments: vec!["hi".into()],
            env_vars: BTreeMap::from([("A".into(), "b".into())]),
            required_cores: 1,
            required_gpus: vec![],
            required_memory_bytes: Some(1 << 20),
            target_node: None,
            target_numa_node_id: None,
            status: TaskStatus::Pending,
            assigned_node: None,
            container_name: Some("kohakuriver-base".into()),
            docker_image_name: Some("kohakuriver/kohakuriver-base:base".into()),
            registry_image: None,
            working_dir: None,
            privileged: false,
            mounts: vec![],
            priority: 0,
            exit_code: None,
            error_message: None,
            submitted_at: 1000,
            started_at: None,
            completed_at: None,
            last_seq: 0,
            approved_by_id: None,
            approved_at: None,
            rejection_reason: None,
            owner_username: None,
            approved_by_username: None,
        }
    }

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c
    }

    #[test]
    fn round_trips_a_row() {
        let c = db();
        insert(&c, &sample(5)).unwrap();
        assert_eq!(get(&c, TaskId(5)).unwrap().unwrap(), sample(5));
        assert!(get(&c, TaskId(6)).unwrap().is_none());
    }

    #[test]
    fn first_final_state_wins_and_stale_reports_are_dropped() {
        let c = db();
        insert(&c, &sample(5)).unwrap();
        let place = Change {
            status: Some(TaskStatus::Assigning),
            assigned_node: Some("n1".into()),
            ..Default::default()
        };
        assert!(matches!(
            apply(&c, TaskId(5), &place, 10).unwrap(),
            Applied::Changed { .. }
        ));
        let run = Change {
            status: Some(TaskStatus::Running),
            seq: Some(1),
            ..Default::default()
        };
        apply(&c, TaskId(5), &run, 20).unwrap();
        let done = Change {
            status: Some(TaskStatus::Completed),
            exit_code: Some(0),
            seq: Some(2),
            ..Default::default()
        };
        apply(&c, TaskId(5), &done, 30).unwrap();
        // A duplicate of an older report and a later contradicting one change nothing.
        assert!(matches!(
            apply(&c, TaskId(5), &run, 40).unwrap(),
            Applied::Ignored(_)
        ));
        let killed = Change {
            status: Some(TaskStatus::Killed),
            seq: Some(3),
            ..Default::default()
        };
        assert!(matches!(
            apply(&c, TaskId(5), &killed, 50).unwrap(),
            Applied::Ignored(_)
        ));
        let t = get(&c, TaskId(5)).unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(t.exit_code, Some(0));
        assert_eq!(t.started_at, Some(20));
        assert_eq!(t.completed_at, Some(30));
        assert_eq!(t.assigned_node.as_deref(), Some("n1"));
    }
}
