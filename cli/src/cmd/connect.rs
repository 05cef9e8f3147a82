//! `ferry connect`: an interactive terminal in a running task over `/ws/task/{id}/terminal`.
//! The local terminal is put in raw mode for the session and always restored (on the shell's
//! exit, on an error, on a broken connection); window size changes are sent on SIGWINCH.

use crate::failure::{CliResult, Failure};
use crate::session::{task_id, Session};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::Write;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The session ends when the shell exits (type `exit` or Ctrl-D).\n\n\
    Examples:\n  ferry connect 7531058213185585152"
)]
pub struct ConnectArgs {
    /// The task or VPS (its id)
    #[arg(value_parser = task_id)]
    pub id: String,
}

pub async fn run(s: Session, a: ConnectArgs) -> CliResult {
    terminal(&s, &format!("/ws/task/{}/terminal", a.id)).await
}

/// Runs a terminal session over the socket at `path` (task terminals and environment shells
/// speak the same frames).
pub async fn terminal(s: &Session, path: &str) -> CliResult {
    let socket = crate::ws::connect(s, path).await?;
    let (mut tx, mut rx) = socket.split();
    let (rows, cols) = crate::tty::size();
    tx.send(Message::text(
        json!({"type":"resize","rows":rows,"cols":cols}).to_string(),
    ))
    .await
    .map_err(|e| Failure::Failed(format!("terminal: {e}")))?;
    let raw = crate::tty::RawMode::enter();
    let result = session(&mut tx, &mut rx).await;
    drop(raw);
    let _ = tx.close().await;
    result
}

async fn session<Tx, Rx>(tx: &mut Tx, rx: &mut Rx) -> CliResult
where
    Tx: futures_util::Sink<Message> + Unpin,
    Tx::Error: std::fmt::Display,
    Rx: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut winch = signal(SignalKind::window_change())
        .map_err(|e| Failure::Failed(format!("cannot watch the window size: {e}")))?;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 4096];
    // Bytes of a character split between two reads of stdin.
    let mut carry: Vec<u8> = Vec::new();
    let mut stdin_open = true;
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("output") => {
                            let data = v["data"].as_str().unwrap_or("");
                            let _ = out.write_all(data.as_bytes());
                            let _ = out.flush();
                        }
                        Some("error") => {
                            return Err(Failure::Failed(v["data"].as_str().unwrap_or("terminal error").to_string()));
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) if u16::from(f.code) != 1000 && !f.reason.is_empty() => {
                            Err(Failure::Failed(format!("terminal closed: {}", f.reason)))
                        }
                        _ => Ok(()),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Failure::Failed(format!("terminal connection broke: {e}"))),
                None => return Ok(()),
            },
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => {
                    // Input ended (a pipe): the shell reads EOF as Ctrl-D would give it.
                    stdin_open = false;
                    send(tx, json!({"type":"input","data":"\u{4}"})).await?;
                }
                Ok(n) => {
                    carry.extend_from_slice(&buf[..n]);
                    let text = take_utf8(&mut carry);
                    if !text.is_empty() {
                        send(tx, json!({"type":"input","data":text})).await?;
                    }
                }
            },
            _ = winch.recv() => {
                let (rows, cols) = crate::tty::size();
                send(tx, json!({"type":"resize","rows":rows,"cols":cols})).await?;
            }
        }
    }
}

async fn send<Tx>(tx: &mut Tx, v: Value) -> CliResult
where
    Tx: futures_util::Sink<Message> + Unpin,
    Tx::Error: std::fmt::Display,
{
    tx.send(Message::text(v.to_string()))
        .await
        .map_err(|e| Failure::Failed(format!("terminal connection broke: {e}")))
}

/// The longest valid UTF-8 prefix of `carry` (invalid bytes become U+FFFD); an incomplete
/// character at the end stays for the next read.
fn take_utf8(carry: &mut Vec<u8>) -> String {
    match std::str::from_utf8(carry) {
        Ok(s) => {
            let s = s.to_string();
            carry.clear();
            s
        }
        Err(e) if e.error_len().is_none() => {
            let valid = e.valid_up_to();
            let s = String::from_utf8_lossy(&carry[..valid]).to_string();
            carry.drain(..valid);
            s
        }
        Err(_) => {
            let s = String::from_utf8_lossy(carry).to_string();
            carry.clear();
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_rest() {
        let mut c = "aé".as_bytes()[..2].to_vec();
        assert_eq!(take_utf8(&mut c), "a");
        assert_eq!(c, vec![0xc3]);
        c.push(0xa9);
        assert_eq!(take_utf8(&mut c), "é");
        let mut bad = vec![b'x', 0xff, b'y'];
        assert_eq!(take_utf8(&mut bad), "x\u{fffd}y");
    }
}
