//! The SSH relay (the original's `HOST_SSH_PROXY_PORT`): a client connects, sends
//! `REQUEST_TUNNEL <task_id>\n` within 10 s, and for a running or paused VPS with a published
//! SSH port on an online node the relay connects to `<node address>:<ssh_port>`, answers
//! `SUCCESS\n` and splices the bytes both ways. Anything else gets `ERROR <reason>\n` and the
//! connection is closed.
//!
//! The relay itself asks for no credential (the original's clients send none): SSH's own key
//! authentication, by the VPS's sshd, is what lets a user in. The relay only ever connects to
//! the published SSH port of a VPS the host placed, never to an address a client names.

use crate::store::tasks;
use crate::AppState;
use ferry_common::{TaskId, TaskKind, TaskStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Time a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to connect to the VPS's sshd.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest request line read (`REQUEST_TUNNEL ` and a 20-digit id fit easily).
const MAX_LINE: usize = 128;
/// Relayed connections at once; more wait to be accepted.
const MAX_SESSIONS: usize = 1024;

/// Serves the relay on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: AppState) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "SSH relay: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = session(client, &state).await {
                tracing::debug!(%peer, error = %e, "SSH relay session ended");
            }
        });
    }
}

async fn session(mut client: TcpStream, state: &AppState) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let line = match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut client)).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => return refuse(&mut client, "request line too long or not UTF-8").await,
        Ok(Err(e)) => return Err(e),
        Err(_) => return refuse(&mut client, "no REQUEST_TUNNEL line within 10s").await,
    };
    let id = match parse_request(&line) {
        Ok(id) => id,
        Err(why) => return refuse(&mut client, &why).await,
    };
    let target = match target_of(state, id).await {
        Ok(t) => t,
        Err(why) => return refuse(&mut client, &why).await,
    };
    let upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.as_str())).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return refuse(
                    &mut client,
                    &format!("cannot reach VPS {id} at {target}: {e}"),
                )
                .await
            }
            Err(_) => {
                return refuse(&mut client, &format!("VPS {id} at {target} did not answer")).await
            }
        };
    let _ = upstream.set_nodelay(true);
    client.write_all(b"SUCCESS\n").await?;
    tracing::info!(task_id = %id, %target, "SSH relay session started");
    let mut upstream = upstream;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

async fn refuse(client: &mut TcpStream, why: &str) -> std::io::Result<()> {
    // One line: the reason never carries a newline of its own.
    let why = why.replace(['\n', '\r'], " ");
    client
        .write_all(format!("ERROR {why}\n").as_bytes())
        .await?;
    client.shutdown().await
}

/// Reads one `\n`-terminated line byte by byte (nothing after it is consumed, so bytes the
/// client sends on at once reach the VPS). `None`: too long or not UTF-8.
async fn read_line(client: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let b = client.read_u8().await?;
        if b == b'\n' {
            break;
        }
        if line.len() >= MAX_LINE {
            return Ok(None);
        }
        line.push(b);
    }
    Ok(String::from_utf8(line)
        .ok()
        .map(|s| s.trim_end_matches('\r').to_string()))
}

/// The task id of a `REQUEST_TUNNEL <id>` line.
pub fn parse_request(line: &str) -> Result<TaskId, String> {
    let Some(rest) = line.strip_prefix("REQUEST_TUNNEL ") else {
        return Err("expected 'REQUEST_TUNNEL <task_id>'".into());
    };
    rest.trim()
        .parse::<TaskId>()
        .map_err(|e| format!("bad task id: {e}"))
}

/// `host:port` of the VPS's sshd, or why the relay will not connect.
async fn target_of(state: &AppState, id: TaskId) -> Result<String, String> {
    let t = state
        .db
        .read(move |c| tasks::get(c, id))
        .await
        .map_err(|e| e.to_string())?
        .filter(|t| t.definition.kind() == TaskKind::Vps)
        .ok_or_else(|| format!("VPS {id} not found"))?;
    if !matches!(t.status, TaskStatus::Running | TaskStatus::Paused) {
        return Err(format!("VPS {id} is {}", t.status));
    }
    let port = t
        .ssh_port
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("VPS {id} has no SSH port (ssh_key_mode disabled?)"))?;
    let node = t
        .assigned_node
        .ok_or_else(|| format!("VPS {id} has no node"))?;
    if !state.cluster.is_online(&node) {
        return Err(format!("node '{node}' of VPS {id} is offline"));
    }
    let url = state
        .cluster
        .url_of(&node)
        .ok_or_else(|| format!("node '{node}' is not registered"))?;
    let host = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .ok_or_else(|| format!("node '{node}' has no usable address ({url})"))?;
    // An IPv6 literal comes back bracketed from the URL, as a socket address wants it.
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(parse_request("REQUEST_TUNNEL 42"), Ok(TaskId(42)));
        assert_eq!(parse_request("REQUEST_TUNNEL 42 "), Ok(TaskId(42)));
        assert!(parse_request("REQUEST_TUNNEL").is_err());
        assert!(parse_request("REQUEST_TUNNEL abc").is_err());
        assert!(parse_request("GET / HTTP/1.1").is_err());
    }
}
