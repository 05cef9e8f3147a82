//! The `nodes` table: one row per runner ever registered, kept across restarts.

use super::StoreError;
use rusqlite::{params, Connection};

#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub hostname: String,
    pub url: String,
    pub total_cores: u32,
    pub memory_total_bytes: Option<u64>,
    pub numa_topology: serde_json::Value,
    pub gpu_info: Vec<serde_json::Value>,
    pub online: bool,
    pub last_heartbeat: Option<i64>,
    pub metrics: Option<serde_json::Value>,
    pub runner_version: Option<String>,
    pub heartbeat_interval_ms: Option<u64>,
}

/// Inserts or refreshes a node; returns whether it was new.
pub fn upsert(conn: &Connection, n: &NodeRow, now_ms: i64) -> Result<bool, StoreError> {
    let existed: bool = conn.query_row(
        "SELECT COUNT(*) FROM nodes WHERE hostname = ?1",
        [&n.hostname],
        |r| r.get::<_, i64>(0),
    )? > 0;
    conn.execute(
        "INSERT INTO nodes (hostname, url, total_cores, memory_total_bytes, numa_topology, gpu_info,
                            status, last_heartbeat, metrics, runner_version, heartbeat_interval_ms, registered_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(hostname) DO UPDATE SET url = ?2, total_cores = ?3, memory_total_bytes = ?4,
             numa_topology = ?5, gpu_info = ?6, status = ?7, last_heartbeat = ?8,
             runner_version = ?10, heartbeat_interval_ms = ?11",
        params![
            n.hostname,
            n.url,
            n.total_cores,
            n.memory_total_bytes.map(|m| m as i64),
            n.numa_topology.to_string(),
            serde_json::Value::from(n.gpu_info.clone()).to_string(),
            if n.online { "online" } else { "offline" },
            n.last_heartbeat,
            n.metrics.as_ref().map(|m| m.to_string()),
            n.runner_version,
            n.heartbeat_interval_ms.map(|m| m as i64),
            now_ms,
        ],
    )?;
    Ok(!existed)
}

/// Every node's runner-credential digest (nodes without one are left out).
pub fn credentials(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT hostname, credential_hash FROM nodes WHERE credential_hash IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_credential(conn: &Connection, hostname: &str, digest: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE nodes SET credential_hash = ?2 WHERE hostname = ?1",
        params![hostname, digest],
    )?;
    Ok(())
}

/// Forgets a node (an operator's `DELETE /api/nodes/{hostname}`); returns whether it existed.
pub fn delete(conn: &Connection, hostname: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM nodes WHERE hostname = ?1", [hostname])? > 0)
}

pub fn set_status(conn: &Connection, hostname: &str, online: bool) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE nodes SET status = ?2 WHERE hostname = ?1",
        params![hostname, if online { "online" } else { "offline" }],
    )?;
    Ok(())
}

pub fn record_heartbeat(
    conn: &Connection,
    hostname: &str,
    at_ms: i64,
    metrics: &serde_json::Value,
    gpu_info: &[serde_json::Value],
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE nodes SET last_heartbeat = ?2, metrics = ?3, gpu_info = ?4, status = 'online' WHERE hostname = ?1",
        params![hostname, at_ms, metrics.to_string(), serde_json::Value::from(gpu_info.to_vec()).to_string()],
    )?;
    Ok(())
}

pub fn all(conn: &Connection) -> Result<Vec<NodeRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT hostname, url, total_cores, memory_total_bytes, numa_topology, gpu_info, status,
                last_heartbeat, metrics, runner_version, heartbeat_interval_ms
         FROM nodes ORDER BY hostname",
    )?;
    let rows = stmt.query_map([], |r| {
        let parse =
            |idx: usize, text: Option<String>| -> rusqlite::Result<Option<serde_json::Value>> {
                text.map(|t| serde_json::from_str(&t))
                    .transpose()
                    .map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            idx,
                            rusqlite::types::Type::Text,
                            Box::new(e),
                        )
                    })
            };
        let gpus = parse(5, r.get(5)?)?;
        Ok(NodeRow {
            hostname: r.get(0)?,
            url: r.get(1)?,
            total_cores: r.get(2)?,
            memory_total_bytes: r.get::<_, Option<i64>>(3)?.map(|m| m as u64),
            numa_topology: parse(4, r.get(4)?)?.unwrap_or_else(|| serde_json::json!({})),
            gpu_info: match gpus {
                Some(serde_json::Value::Array(a)) => a,
                _ => Vec::new(),
            },
            online: r.get::<_, String>(6)? == "online",
            last_heartbeat: r.get(7)?,
            metrics: parse(8, r.get(8)?)?,
            runner_version: r.get(9)?,
            heartbeat_interval_ms: r.get::<_, Option<i64>>(10)?.map(|m| m as u64),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
