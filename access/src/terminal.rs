//! A terminal over a WebSocket, in the original's JSON frames:
//! client → server `{"type":"resize","rows","cols"}` (sent first; waited for up to 2 s) and
//! `{"type":"input","data"}`; server → client `{"type":"output","data"}` (an empty one first,
//! as the ready signal, then chunks of at most 4 KiB, cut on character boundaries) and
//! `{"type":"error","data"}`. Closing the socket ends the shell and its process group.

use super::utf8::{chunks, Utf8Stream};
use crate::tty::TtySession;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde::Deserialize;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Shells tried in order.
pub const SHELLS: &[&str] = &["/bin/bash", "/bin/sh"];
/// How long the first resize is waited for.
const FIRST_RESIZE: Duration = Duration::from_secs(2);
/// Largest output frame.
const MAX_FRAME: usize = 4096;
/// Pings keep proxies from dropping an idle terminal.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// Close codes of the protocol.
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_ERROR: u16 = 1011;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFrame {
    Input {
        data: String,
    },
    Resize {
        rows: u16,
        cols: u16,
    },
    #[serde(other)]
    Other,
}

fn frame(kind: &str, data: &str) -> Message {
    Message::Text(
        serde_json::json!({ "type": kind, "data": data })
            .to_string()
            .into(),
    )
}

/// Sends an error frame and closes with `code`.
pub async fn refuse(mut ws: WebSocket, code: u16, why: &str) {
    let _ = ws.send(frame("error", why)).await;
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: why.chars().take(120).collect::<String>().into(),
        })))
        .await;
}

/// Opens the session once the client's size is known: given rows and columns (a shell from
/// [`SHELLS`], e.g. [`crate::docker::open_first_shell`]).
pub type Opener<'a, E> =
    Box<dyn FnOnce(u16, u16) -> BoxFuture<'a, Result<TtySession, E>> + Send + 'a>;

/// Serves one terminal, opened by `open`, until either side ends it.
pub async fn serve<E: std::fmt::Display>(mut ws: WebSocket, open: Opener<'_, E>) {
    // The first frame should be the size; input that comes first is kept for the shell.
    let mut size = (24u16, 80u16);
    let mut early_input: Vec<String> = Vec::new();
    if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(FIRST_RESIZE, ws.recv()).await {
        match serde_json::from_str::<ClientFrame>(&text) {
            Ok(ClientFrame::Resize { rows, cols }) => size = (rows, cols),
            Ok(ClientFrame::Input { data }) => early_input.push(data),
            _ => {}
        }
    }
    let session = match open(size.0, size.1).await {
        Ok(s) => s,
        Err(e) => {
            refuse(ws, CLOSE_ERROR, &format!("cannot open a terminal: {e}")).await;
            return;
        }
    };
    let TtySession {
        mut output,
        mut input,
        control,
    } = session;
    for data in early_input {
        let _ = input.write_all(data.as_bytes()).await;
    }
    if ws.send(frame("output", "")).await.is_err() {
        control.close().await;
        return;
    }
    let mut text = Utf8Stream::default();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = ws.recv() => match msg {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ClientFrame>(&t) {
                    Ok(ClientFrame::Input { data }) => {
                        if input.write_all(data.as_bytes()).await.is_err() {
                            break;
                        }
                        let _ = input.flush().await;
                    }
                    Ok(ClientFrame::Resize { rows, cols }) => {
                        let _ = control.resize(rows, cols).await;
                    }
                    Ok(ClientFrame::Other) | Err(_) => {}
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // A binary frame, a close, an error or the end: the session is over.
                _ => break,
            },
            chunk = output.next() => match chunk {
                Some(Ok(bytes)) => {
                    let out = text.push(&bytes);
                    let mut gone = false;
                    for piece in chunks(&out, MAX_FRAME) {
                        if ws.send(frame("output", piece)).await.is_err() {
                            gone = true;
                            break;
                        }
                    }
                    if gone {
                        break;
                    }
                }
                // The shell exited.
                _ => {
                    let _ = ws.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
                    break;
                }
            },
            _ = ping.tick() => {
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    control.close().await;
}
