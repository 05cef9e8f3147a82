//! The `tasks` table: [`Task`]s in and out, read and written by column name, and
//! [`apply`], which runs a [`Change`] through the model's pure transition function and
//! persists what it decides. The definition is one JSON column (the same document the runner
//! receives); the life of the task (status, node, booking, exit) has a column per field so it
//! can be filtered and indexed.

use super::StoreError;
use crate::tasks::model::{self, Approval, Change, Task, TransitionError};
use crate::tasks::timeline;
use ferry_common::task::{ApprovalStatus, TaskDefinition, TaskKind};
use ferry_common::{TaskId, TaskStatus};
use rusqlite::{named_params, Connection, OptionalExtension, Row};

/// `SELECT ... FROM` with owner and approver names joined in (one query, no look-up per row).
const SELECT: &str =
    "SELECT t.*, ou.username AS owner_username, au.username AS approved_by_username
    FROM tasks t
    LEFT JOIN users ou ON ou.id = t.owner_id LEFT JOIN users au ON au.id = t.approved_by_id";

fn bad_column(name: &str, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    tracing::error!(column = name, error = %e, "unreadable task column");
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn parsed<T: std::str::FromStr>(r: &Row, name: &str) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = r.get(name)?;
    text.parse().map_err(|e| bad_column(name, e))
}

fn parsed_opt<T: std::str::FromStr>(r: &Row, name: &str) -> rusqlite::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: Option<String> = r.get(name)?;
    text.map(|t| t.parse().map_err(|e| bad_column(name, e)))
        .transpose()
}

fn id_opt(r: &Row, name: &str) -> rusqlite::Result<Option<TaskId>> {
    Ok(r.get::<_, Option<i64>>(name)?.map(|v| TaskId(v as u64)))
}

fn from_row(r: &Row) -> rusqlite::Result<Task> {
    let definition: String = r.get("definition")?;
    let definition: TaskDefinition =
        serde_json::from_str(&definition).map_err(|e| bad_column("definition", e))?;
    Ok(Task {
        id: TaskId(r.get::<_, i64>("task_id")? as u64),
        batch_id: id_opt(r, "batch_id")?,
        name: r.get("name")?,
        owner_id: r.get("owner_id")?,
        definition,
        target_node: r.get("target_node")?,
        priority: r.get("priority")?,
        approval: Approval {
            status: parsed_opt::<ApprovalStatus>(r, "approval_status")?,
            by: r.get("approved_by_id")?,
            at: r.get("approved_at")?,
            rejection_reason: r.get("rejection_reason")?,
        },
        status: parsed(r, "status")?,
        assigned_node: r.get("assigned_node")?,
        booked: r.get("booked")?,
        exit_code: r.get("exit_code")?,
        error_message: r.get("error_message")?,
        submitted_at: r.get("submitted_at")?,
        started_at: r.get("started_at")?,
        completed_at: r.get("completed_at")?,
        last_seq: r.get::<_, i64>("last_seq")? as u64,
        attempt: r.get("attempt")?,
        run: r.get("run")?,
        retry_at: r.get("retry_at")?,
        ssh_port: r.get("ssh_port")?,
        vm_ip: r.get("vm_ip")?,
        owner_username: r.get("owner_username")?,
        approved_by_username: r.get("approved_by_username")?,
    })
}

fn definition_json(t: &Task) -> Result<String, StoreError> {
    serde_json::to_string(&t.definition).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn insert(conn: &Connection, t: &Task) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO tasks (task_id, task_type, batch_id, name, owner_id, approval_status,
            approved_by_id, approved_at, rejection_reason, definition, target_node, priority,
            status, assigned_node, booked, exit_code, error_message, submitted_at, started_at,
            completed_at, last_seq, attempt, run, retry_at, ssh_port, vm_ip)
         VALUES (:task_id, :task_type, :batch_id, :name, :owner_id, :approval_status,
            :approved_by_id, :approved_at, :rejection_reason, :definition, :target_node, :priority,
            :status, :assigned_node, :booked, :exit_code, :error_message, :submitted_at,
            :started_at, :completed_at, :last_seq, :attempt, :run, :retry_at, :ssh_port, :vm_ip)",
    )?;
    stmt.execute(named_params! {
        ":task_id": t.id.0 as i64,
        ":task_type": t.definition.kind().as_str(),
        ":batch_id": t.batch_id.map(|b| b.0 as i64),
        ":name": t.name,
        ":owner_id": t.owner_id,
        ":approval_status": t.approval.status.map(|s| s.as_str()),
        ":approved_by_id": t.approval.by,
        ":approved_at": t.approval.at,
        ":rejection_reason": t.approval.rejection_reason,
        ":definition": definition_json(t)?,
        ":target_node": t.target_node,
        ":priority": t.priority,
        ":status": t.status.as_str(),
        ":assigned_node": t.assigned_node,
        ":booked": t.booked,
        ":exit_code": t.exit_code,
        ":error_message": t.error_message,
        ":submitted_at": t.submitted_at,
        ":started_at": t.started_at,
        ":completed_at": t.completed_at,
        ":last_seq": t.last_seq as i64,
        ":attempt": t.attempt,
        ":run": t.run,
        ":retry_at": t.retry_at,
        ":ssh_port": t.ssh_port,
        ":vm_ip": t.vm_ip,
    })
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(format!("task {} already exists", t.id))
        }
        other => other.into(),
    })?;
    super::timeline::record(conn, t, t.submitted_at, &timeline::submitted(t))?;
    Ok(())
}

/// Writes the parts of a task that change over its life (never its definition).
fn save(conn: &Connection, t: &Task) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE tasks SET approval_status = :approval_status, approved_by_id = :approved_by_id,
            approved_at = :approved_at, rejection_reason = :rejection_reason, status = :status,
            assigned_node = :assigned_node, booked = :booked, exit_code = :exit_code,
            error_message = :error_message, started_at = :started_at,
            completed_at = :completed_at, last_seq = :last_seq, attempt = :attempt,
            run = :run, retry_at = :retry_at, ssh_port = :ssh_port,
            vm_ip = :vm_ip
         WHERE task_id = :task_id",
    )?;
    stmt.execute(named_params! {
        ":task_id": t.id.0 as i64,
        ":approval_status": t.approval.status.map(|s| s.as_str()),
        ":approved_by_id": t.approval.by,
        ":approved_at": t.approval.at,
        ":rejection_reason": t.approval.rejection_reason,
        ":status": t.status.as_str(),
        ":assigned_node": t.assigned_node,
        ":booked": t.booked,
        ":exit_code": t.exit_code,
        ":error_message": t.error_message,
        ":started_at": t.started_at,
        ":completed_at": t.completed_at,
        ":last_seq": t.last_seq as i64,
        ":attempt": t.attempt,
        ":run": t.run,
        ":retry_at": t.retry_at,
        ":ssh_port": t.ssh_port,
        ":vm_ip": t.vm_ip,
    })?;
    Ok(())
}

/// Inserts a batch all or nothing (in a nested savepoint, so it composes with the writer's).
pub fn insert_batch(conn: &Connection, rows: &[Task]) -> Result<(), StoreError> {
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

pub fn get(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("{SELECT} WHERE t.task_id = ?1"))?;
    Ok(stmt.query_row([id.0 as i64], from_row).optional()?)
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<TaskStatus>,
    /// `None`: every kind.
    pub task_type: Option<TaskKind>,
    pub node: Option<String>,
    /// Only tasks of this owner.
    pub owner: Option<i64>,
    pub limit: u32,
    pub offset: u32,
}

/// Newest first.
pub fn list(conn: &Connection, f: &ListFilter) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE (:status IS NULL OR t.status = :status)
           AND (:task_type IS NULL OR t.task_type = :task_type)
           AND (:node IS NULL OR t.assigned_node = :node)
           AND (:owner IS NULL OR t.owner_id = :owner)
         ORDER BY t.task_id DESC LIMIT :limit OFFSET :offset"
    ))?;
    let rows = stmt.query_map(
        named_params! {
            ":status": f.status.map(|s| s.as_str()),
            ":task_type": f.task_type.map(|k| k.as_str()),
            ":node": f.node,
            ":owner": f.owner,
            ":limit": f.limit,
            ":offset": f.offset,
        },
        from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Tasks the scheduler must know about at start: those queued and those holding resources.
pub fn active(conn: &Connection) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT} WHERE t.status = 'pending' OR t.booked = 1 ORDER BY t.task_id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A task holding resources on a node, as heartbeats reconcile it.
#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    pub id: TaskId,
    pub status: TaskStatus,
    pub started: bool,
    pub attempt: u32,
}

/// Tasks booked on `node`.
pub fn booked_on(conn: &Connection, node: &str) -> Result<Vec<Booking>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT task_id, status, started_at IS NOT NULL AS started, attempt FROM tasks
         WHERE assigned_node = ?1 AND booked = 1",
    )?;
    let rows = stmt.query_map([node], |r| {
        Ok(Booking {
            id: TaskId(r.get::<_, i64>("task_id")? as u64),
            status: parsed(r, "status")?,
            started: r.get("started")?,
            attempt: r.get("attempt")?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many tasks are in each status.
pub fn count_by_status(conn: &Connection) -> Result<Vec<(TaskStatus, u64)>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status")?;
    let rows = stmt.query_map([], |r| {
        Ok((parsed(r, "status")?, r.get::<_, i64>("n")? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Where the host has a task a runner says it runs: what fences that runner's copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub id: TaskId,
    pub status: TaskStatus,
    pub node: Option<String>,
    pub attempt: u32,
    /// Still booked: its end has not been confirmed by its runner.
    pub booked: bool,
}

/// Status, node and attempt of the given tasks (those that exist), in one query.
pub fn placements(conn: &Connection, ids: &[TaskId]) -> Result<Vec<Placed>, StoreError> {
    let list = serde_json::to_string(&ids.iter().map(|i| i.0 as i64).collect::<Vec<_>>())
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT task_id, status, assigned_node, attempt, booked FROM tasks
         WHERE task_id IN (SELECT value FROM json_each(?1))",
    )?;
    let rows = stmt.query_map([list], |r| {
        Ok(Placed {
            id: TaskId(r.get::<_, i64>("task_id")? as u64),
            status: parsed(r, "status")?,
            node: r.get("assigned_node")?,
            attempt: r.get("attempt")?,
            booked: r.get("booked")?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A task before and after a change that was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub before: Task,
    pub after: Task,
    /// The attempt that ended on the way, as it ended, when the task was retried at once.
    pub ended_attempt: Option<Task>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Changed(Box<Transition>),
    Refused(TransitionError),
    NotFound,
}

/// Applies `change` to task `id` as the model decides, and persists the result.
pub fn apply(
    conn: &Connection,
    id: TaskId,
    change: &Change,
    now_ms: i64,
) -> Result<Applied, StoreError> {
    let Some(before) = get(conn, id)? else {
        return Ok(Applied::NotFound);
    };
    match model::apply_outcome(&before, change, now_ms) {
        Ok(model::Outcome {
            task: after,
            ended_attempt,
        }) => {
            save(conn, &after)?;
            let approver = match change.innermost() {
                Change::Approve { by } => super::timeline::username(conn, *by)?,
                _ => None,
            };
            match &ended_attempt {
                Some(ended) => {
                    super::attempts::record(conn, ended)?;
                    let steps = timeline::attempt_ended(&before, ended, change);
                    super::timeline::record(conn, ended, now_ms, &steps)?;
                    super::timeline::record(conn, &after, now_ms, &timeline::retried(&after))?;
                }
                None => {
                    if let Change::Retry { .. } = change.innermost() {
                        super::attempts::record(conn, &before)?;
                    }
                    let steps = timeline::changed(&before, &after, change, approver.as_deref());
                    super::timeline::record(conn, &after, now_ms, &steps)?;
                }
            }
            Ok(Applied::Changed(Box::new(Transition {
                before,
                after,
                ended_attempt,
            })))
        }
        Err(e) => {
            // A refused report still counts, so a stale duplicate is recognised next time.
            if let (TransitionError::NotAllowed { .. }, Change::Report(r)) = (&e, change) {
                if let Some(seq) = r.seq.filter(|s| *s > before.last_seq) {
                    conn.execute(
                        "UPDATE tasks SET last_seq = ?2 WHERE task_id = ?1",
                        [id.0 as i64, seq as i64],
                    )?;
                }
            }
            Ok(Applied::Refused(e))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tasks::model::tests::sample;
    use crate::tasks::model::Report;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        c
    }

    /// A Docker VPS task in the queue.
    pub fn vps_sample(id: u64) -> Task {
        let mut t = sample(id);
        t.definition.spec =
            ferry_common::task::TaskSpec::Vps(ferry_common::task::VpsSpec::default());
        t
    }

    #[test]
    fn round_trips_a_task() {
        let c = db();
        let mut t = sample(5);
        t.definition.env_vars.insert("A".into(), "b".into());
        t.definition.resources.required_memory_bytes = Some(1 << 20);
        t.approval.status = Some(ApprovalStatus::Approved);
        t.priority = 3;
        insert(&c, &t).unwrap();
        assert_eq!(get(&c, TaskId(5)).unwrap().unwrap(), t);
        assert!(get(&c, TaskId(6)).unwrap().is_none());
        assert!(matches!(insert(&c, &t), Err(StoreError::Conflict(_))));
    }

    #[test]
    fn applied_changes_persist_and_refused_reports_still_count() {
        let c = db();
        insert(&c, &sample(5)).unwrap();
        let placed = apply(&c, TaskId(5), &Change::Place { node: "n1".into() }, 10).unwrap();
        assert!(matches!(placed, Applied::Changed(_)));
        assert_eq!(booked_on(&c, "n1").unwrap().len(), 1);
        let bad = Change::Report(Report {
            status: Some(TaskStatus::Paused),
            seq: Some(7),
            ..Default::default()
        });
        assert!(matches!(
            apply(&c, TaskId(5), &bad, 20).unwrap(),
            Applied::Refused(TransitionError::NotAllowed { .. })
        ));
        assert_eq!(get(&c, TaskId(5)).unwrap().unwrap().last_seq, 7);
        assert_eq!(
            apply(&c, TaskId(9), &Change::Released, 20).unwrap(),
            Applied::NotFound
        );
    }

    #[test]
    fn lists_filter_by_kind_owner_and_status() {
        let c = db();
        for id in 1..=4 {
            let mut t = sample(id);
            t.owner_id = Some((id % 2) as i64);
            insert(&c, &t).unwrap();
        }
        let f = ListFilter {
            owner: Some(1),
            task_type: Some(TaskKind::Command),
            limit: 10,
            ..Default::default()
        };
        let ids: Vec<u64> = list(&c, &f).unwrap().iter().map(|t| t.id.0).collect();
        assert_eq!(ids, vec![3, 1]);
        let f = ListFilter {
            task_type: Some(TaskKind::Vps),
            limit: 10,
            ..Default::default()
        };
        assert!(list(&c, &f).unwrap().is_empty());
    }

    /// A database written by the previous schema (one column per definition field) reads
    /// back as the same tasks after the upgrade.
    #[test]
    fn upgrades_tasks_from_schema_2() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate_to(&mut c, 2).unwrap();
        c.execute_batch(
            r#"INSERT INTO tasks (task_id, task_type, batch_id, command, arguments, env_vars,
                required_cores, required_gpus, required_memory_bytes, target_node,
                target_numa_node_id, status, assigned_node, container_name, docker_image_name,
                registry_image, working_dir, privileged, mounts, priority, submitted_at, last_seq)
               VALUES (7, 'command', 7, 'echo hi', '["a b"]', '{"K":"v"}', 2, '[1]', 1048576,
                'n1', 0, 'running', 'n1', 'base', 'kohakuriver/base:base', NULL, '/w', 0, '[]',
                5, 1000, 3);"#,
        )
        .unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        let t = get(&c, TaskId(7)).unwrap().unwrap();
        let cmd = t.definition.spec.as_command().unwrap();
        assert_eq!(cmd.command, "echo hi");
        assert_eq!(cmd.arguments, vec!["a b".to_string()]);
        assert_eq!(cmd.working_dir.as_deref(), Some("/w"));
        assert_eq!(t.definition.resources.required_cores, 2);
        assert_eq!(t.definition.resources.required_gpus, vec![1]);
        assert_eq!(t.definition.resources.required_memory_bytes, Some(1 << 20));
        assert_eq!(t.definition.resources.target_numa_node_id, Some(0));
        assert_eq!(t.definition.image.container_name.as_deref(), Some("base"));
        assert_eq!(
            t.definition.env_vars.get("K").map(String::as_str),
            Some("v")
        );
        assert_eq!(t.status, TaskStatus::Running);
        assert!(
            t.booked,
            "a running task keeps its booking across the upgrade"
        );
        assert_eq!((t.priority, t.last_seq), (5, 3));
    }
}
