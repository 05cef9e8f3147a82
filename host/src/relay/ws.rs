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
/// Most bytes one read from either socket asks for. Tungstenite zeroes what it offers to each
/// read (and each read attempt), so a large value costs a large memset per frame; 128 KiB
/// measured as fast as 1 MiB (docs/performance.md).
pub const READ_BUFFER: usize = 128 << 10;
/// Frames are gathered up to this size before a write to either socket.
pub const WRITE_BUFFER: usize = 1 << 20;

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
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(4 * WRITE_BUFFER);
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

type ClientTx = futures_util::stream::SplitSink<WebSocket, Message>;
type ClientRx = futures_util::stream::SplitStream<WebSocket>;
type UpTx = futures_util::stream::SplitSink<Upstream, tungstenite::Message>;
type UpRx = futures_util::stream::SplitStream<Upstream>;

/// Relays until either side closes; returns how the session ended (for the audit log).
///
/// Each direction is its own task (a pump), woken only by its own socket: polling the idle
/// side again for every frame of the busy one costs a read attempt each time, and the two
/// pumps use both cores. A pump that ends stops the other, which hands its sink back so both
/// sides get a close.
pub async fn relay(client: WebSocket, upstream: Upstream, allowed: ClientFrames) -> &'static str {
    let (client_tx, client_rx) = client.split();
    let (up_tx, up_rx) = upstream.split();
    let (stop_down, stop_down_rx) = tokio::sync::oneshot::channel();
    let (stop_up, stop_up_rx) = tokio::sync::oneshot::channel();
    let mut down = tokio::spawn(pump_down(up_rx, client_tx, stop_down_rx));
    let mut up = tokio::spawn(pump_up(client_rx, up_tx, allowed, stop_up_rx));
    // Should this future be dropped, the pumps go with it.
    let _pumps = [
        AbortOnDrop(down.abort_handle()),
        AbortOnDrop(up.abort_handle()),
    ];
    // A pump that panicked hands nothing back: its side just drops.
    let (ended, mut client_tx, mut up_tx) = tokio::select! {
        d = &mut down => {
            let _ = stop_up.send(());
            let u = up.await.ok();
            match d {
                Ok((why, tx)) => (why, Some(tx), u.map(|u| u.1)),
                Err(_) => ("the relay failed", None, u.map(|u| u.1)),
            }
        }
        u = &mut up => {
            let _ = stop_down.send(());
            let d = down.await.ok();
            match u {
                Ok((why, tx)) => (why, d.map(|d| d.1), Some(tx)),
                Err(_) => ("the relay failed", d.map(|d| d.1), None),
            }
        }
    };
    if let Some(tx) = up_tx.as_mut() {
        let _ = tx.send(tungstenite::Message::Close(None)).await;
    }
    if let Some(tx) = client_tx.as_mut() {
        let _ = tx.send(Message::Close(None)).await;
    }
    ended
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runner to client, with a ping to the client every [`PING_EVERY`].
async fn pump_down(
    mut from: UpRx,
    mut to: ClientTx,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (&'static str, ClientTx) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let ended = loop {
        tokio::select! {
            msg = from.next() => {
                let Some(Ok(msg)) = msg else { break "runner gone" };
                if let tungstenite::Message::Close(frame) = &msg {
                    let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1000);
                    let reason = frame.as_ref().map(|f| f.reason.as_str().to_string()).unwrap_or_default();
                    let _ = to
                        .send(Message::Close(Some(CloseFrame { code, reason: reason.into() })))
                        .await;
                    break "runner closed";
                }
                // Pongs to our pings stay here.
                if matches!(msg, tungstenite::Message::Pong(_)) {
                    continue;
                }
                let Some(m) = to_client(msg) else { continue };
                if to.send(m).await.is_err() {
                    break "client gone";
                }
            }
            _ = ping.tick() => {
                if to.send(Message::Ping(Default::default())).await.is_err() {
                    break "the client stopped answering";
                }
            }
            _ = &mut stop => break "stopped",
        }
    };
    (ended, to)
}

/// Client to runner, with a ping to the runner every [`PING_EVERY`].
async fn pump_up(
    mut from: ClientRx,
    mut to: UpTx,
    allowed: ClientFrames,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (&'static str, UpTx) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let ended = loop {
        tokio::select! {
            msg = from.next() => {
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
                if to.send(m).await.is_err() {
                    break "runner gone";
                }
            }
            _ = ping.tick() => {
                if to.send(tungstenite::Message::Ping(Default::default())).await.is_err() {
                    break "the runner stopped answering";
                }
            }
            _ = &mut stop => break "stopped",
        }
    };
    (ended, to)
}
