//! `GET /api/events` (Server-Sent Events) and `/ws/events` (WebSocket): the live event stream,
//! filtered to what the caller may read. Both resume after an index: `Last-Event-ID` (what
//! a browser's `EventSource` sends on reconnect) or `?since=`.

use super::error::{ApiError, ApiQuery};
use crate::auth::Caller;
use crate::events::subscription::{Filter, Reader};
use crate::events::Subscription;
use crate::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ferry_common::Role;
use serde::Deserialize;
use std::time::Duration;

/// Subscribers the host serves at once; more are refused with 503.
pub const MAX_SUBSCRIBERS: usize = 10_000;
/// A comment line this often keeps proxies and clients from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub topics: Option<String>,
    pub task_id: Option<String>,
    pub owner: Option<String>,
    pub node: Option<String>,
    pub since: Option<u64>,
}

/// The caller's subscription, or why not.
fn subscribe(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    q: &EventsQuery,
) -> Result<Subscription, ApiError> {
    let bus = state.scheduler.bus();
    if bus.subscribers() >= MAX_SUBSCRIBERS {
        return Err(ApiError::unavailable(format!(
            "the host serves {MAX_SUBSCRIBERS} event subscribers at most; try again later"
        )));
    }
    let reader = match caller.role {
        Role::User => Reader::Owner(caller.user_id),
        _ => Reader::All,
    };
    let filter = Filter::parse(
        q.topics.as_deref(),
        q.task_id.as_deref(),
        q.owner.as_deref(),
        q.node.as_deref(),
        reader,
    )
    .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let since = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::unprocessable("Last-Event-ID: not an event index".to_string())
                })?,
        ),
        None => q.since,
    };
    Ok(Subscription::new(bus, filter, since))
}

/// `GET /api/events`.
pub async fn sse(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let sub = subscribe(&state, &caller, &headers, &q)?;
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        let e = sub.next().await?;
        let frame = SseEvent::default()
            .id(e.index.to_string())
            .event(e.topic.as_str())
            .json_data(&*e)
            .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event"));
        Some((Ok::<_, std::convert::Infallible>(frame), sub))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// `/ws/events`: one JSON text frame per event; the client sends nothing (what it sends is
/// ignored; a close ends the stream).
pub async fn ws(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let sub = subscribe(&state, &caller, &headers, &q)?;
    Ok(ws
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| follow(socket, sub)))
}

async fn follow(mut socket: WebSocket, mut sub: Subscription) {
    let mut ping = tokio::time::interval(KEEP_ALIVE);
    ping.tick().await;
    loop {
        tokio::select! {
            e = sub.next() => {
                let Some(e) = e else { break };
                let Ok(text) = serde_json::to_string(&*e) else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
