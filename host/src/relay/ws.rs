//! WebSocket relaying: a user's socket (accepted by axum) spliced to the task's runner (dialled
//! with tokio-tungstenite, carrying the cluster secret). Frames pass through as they come,
//! binary ones without a copy; either side closing closes the other; both sides are pinged
//! every 20 s so proxies do not drop an idle session.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

pub const PING_EVERY: Duration = Duration::from_secs(20);
/// Time to reach the runner's socket.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame relayed either way.
pub const MAX_FRAME: usize = 1 << 20;
/// Socket buffer size on both sides of the relay.
pub const BUFFER: usize = 1 << 20;

pub type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Which frames a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFrames {
    /// Text only: a binary frame ends the session (the terminal).
    Text,
    /// Binary only: a text frame ends the session (port forwards).
    Binary,
    /// Both.
    Any,
}

/// Dials `path` (with its query) on the runner at `base` (`http://...`).
pub async fn dial(base: &str, path: &str, secret: &str) -> Result<Upstream, String> {
    let url = match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}{path}"),
        None => format!("ws://{}{path}", base.trim_start_matches("http://")),
    };
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad runner address {url}: {e}"))?;
    let auth = format!("Bearer {secret}")
        .parse()
        .map_err(|_| "the cluster secret is not a header value".to_string())?;
    req.headers_mut().insert("authorization", auth);
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_frame_size(Some(MAX_FRAME))
        .max_message_size(Some(MAX_FRAME))
        // Forwarded streams move whole 256 KiB frames: read and write in buffers that hold them.
        .read_buffer_size(BUFFER)
        .write_buffer_size(BUFFER)
        .max_write_buffer_size(4 * BUFFER);
    let dialled = tokio::time::timeout(
        DIAL_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(req, Some(config), true),
    )
    .await
    .map_err(|_| format!("runner at {base} did not answer"))?;
    dialled
        .map(|(s, _)| s)
        .map_err(|e| format!("cannot reach the runner at {base}: {e}"))
}

/// Sends a text frame and a close with `code` to the client.
pub async fn close_with(mut client: WebSocket, text: Option<String>, code: u16, reason: &str) {
    if let Some(t) = text {
        let _ = client.send(Message::Text(t.into())).await;
    }
    let _ = client
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.chars().take(120).collect::<String>().into(),
        })))
        .await;
}

fn to_upstream(m: Message) -> Option<tungstenite::Message> {
    Some(match m {
        Message::Text(t) => tungstenite::Message::Text(t.as_str().into()),
        Message::Binary(b) => tungstenite::Message::Binary(b),
        Message::Ping(b) => tungstenite::Message::Ping(b),
        Message::Pong(b) => tungstenite::Message::Pong(b),
        Message::Close(_) => return None,
    })
}

fn to_client(m: tungstenite::Message) -> Option<Message> {
    Some(match m {
        tungstenite::Message::Text(t) => Message::Text(t.as_str().into()),
        tungstenite::Message::Binary(b) => Message::Binary(b),
        tungstenite::Message::Ping(b) => Message::Ping(b),
        tungstenite::Message::Pong(b) => Message::Pong(b),
        tungstenite::Message::Close(_) | tungstenite::Message::Frame(_) => return None,
    })
}

/// Relays until either side closes; returns how the session ended (for the audit log).
pub async fn relay(client: WebSocket, upstream: Upstream, allowed: ClientFrames) -> &'static str {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let ended = loop {
        tokio::select! {
            msg = client_rx.next() => {
                let Some(Ok(msg)) = msg else { break "client gone" };
                let refused = matches!(
                    (&msg, allowed),
                    (Message::Binary(_), ClientFrames::Text) | (Message::Text(_), ClientFrames::Binary)
                );
                if refused {
                    break "client sent a frame of the wrong kind";
                }
                // Pongs to our pings stay here; the runner pings on its own.
                if matches!(msg, Message::Pong(_)) {
                    continue;
                }
                let Some(m) = to_upstream(msg) else { break "client closed" };
                if up_tx.send(m).await.is_err() {
                    break "runner gone";
                }
            }
            msg = up_rx.next() => {
                let Some(Ok(msg)) = msg else { break "runner gone" };
                if let tungstenite::Message::Close(frame) = &msg {
                    let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1000);
                    let reason = frame.as_ref().map(|f| f.reason.as_str().to_string()).unwrap_or_default();
                    let _ = client_tx
                        .send(Message::Close(Some(CloseFrame { code, reason: reason.into() })))
                        .await;
                    break "runner closed";
                }
                if matches!(msg, tungstenite::Message::Pong(_)) {
                    continue;
                }
                let Some(m) = to_client(msg) else { continue };
                if client_tx.send(m).await.is_err() {
                    break "client gone";
                }
            }
            _ = ping.tick() => {
                let a = client_tx.send(Message::Ping(Default::default())).await;
                let b = up_tx.send(tungstenite::Message::Ping(Default::default())).await;
                if a.is_err() || b.is_err() {
                    break "a side stopped answering";
                }
            }
        }
    };
    let _ = up_tx.send(tungstenite::Message::Close(None)).await;
    let _ = client_tx.send(Message::Close(None)).await;
    ended
}
