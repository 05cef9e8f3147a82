//! `ferry forward`: a port of a task's container served on a local port. Every local
//! connection (or UDP peer) is one stream of one `/ws/forward/{id}/{port}` socket; TCP uses the
//! credit flow control, so a slow local reader or a slow service holds up only its own stream.

use crate::failure::{CliResult, Failure};
use crate::session::{task_id, Session};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ferry forward 7531058213185585152 8888          # http://127.0.0.1:8888\n  \
    ferry forward 7531058213185585152 80 --local 127.0.0.1:8080\n  \
    ferry forward 7531058213185585152 53 --udp"
)]
pub struct ForwardArgs {
    #[arg(value_parser = task_id)]
    pub id: String,
    /// The port in the container
    pub port: u16,
    /// Where to listen locally (default 127.0.0.1 and the same port)
    #[arg(long, value_name = "ADDR:PORT")]
    pub local: Option<SocketAddr>,
    /// Forward UDP datagrams instead of TCP
    #[arg(long)]
    pub udp: bool,
}

const CONNECT: u8 = 1;
const CONNECTED: u8 = 2;
const DATA: u8 = 3;
const CLOSE: u8 = 4;
const ERROR: u8 = 5;
const PING: u8 = 6;
const PONG: u8 = 7;
const WINDOW: u8 = 8;
const MAX_STREAMS: usize = 1024;
/// Largest DATA payload sent (the protocol allows 1 MiB).
const CHUNK: usize = 64 * 1024;

fn frame(kind: u8, proto: u8, id: u32, payload: &[u8]) -> Message {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.push(kind);
    f.push(proto);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&0u16.to_be_bytes());
    f.extend_from_slice(payload);
    Message::binary(f)
}

/// What the socket's reader hands a stream.
enum Event {
    Connected(u32),
    Data(Vec<u8>),
    Window(u32),
    Closed(Option<String>),
}

type Streams = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>>;

pub async fn run(s: Session, a: ForwardArgs) -> CliResult {
    let proto = if a.udp { "udp" } else { "tcp" };
    let flow = if a.udp { "" } else { "&flow=credit" };
    let path = format!("/ws/forward/{}/{}?proto={proto}{flow}", a.id, a.port);
    let local = a
        .local
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], a.port)));
    let socket = crate::ws::connect(&s, &path).await?;
    let (mut ws_tx, mut ws_rx) = socket.split();
    // The host says CONNECTED (or why not) before anything else.
    match ws_rx.next().await {
        Some(Ok(Message::Text(t))) if t.as_str() == "CONNECTED" => {}
        Some(Ok(Message::Text(t))) => return Err(Failure::Failed(t.to_string())),
        Some(Ok(Message::Close(Some(f)))) => return Err(Failure::Failed(f.reason.to_string())),
        other => {
            return Err(Failure::Failed(format!(
                "forward socket: unexpected {other:?}"
            )))
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if ws_tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let streams: Streams = Arc::default();
    let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
    let reader = {
        let streams = streams.clone();
        let out_tx = out_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = ws_rx.next().await {
                let Message::Binary(b) = m else {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                    continue;
                };
                if b.len() < 8 {
                    continue;
                }
                let id = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
                let payload = b[8..].to_vec();
                let u32_of = |p: &[u8]| {
                    p.get(..4)
                        .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
                        .unwrap_or(0)
                };
                let ev = match b[0] {
                    CONNECTED => Event::Connected(u32_of(&payload)),
                    DATA => Event::Data(payload),
                    WINDOW => Event::Window(u32_of(&payload)),
                    CLOSE => Event::Closed(None),
                    ERROR => Event::Closed(Some(String::from_utf8_lossy(&payload).to_string())),
                    PING => {
                        let _ = out_tx.send(frame(PONG, b[1], id, &payload)).await;
                        continue;
                    }
                    _ => continue,
                };
                let closing = matches!(ev, Event::Closed(_));
                let tx = {
                    let mut map = streams.lock().unwrap_or_else(|p| p.into_inner());
                    if closing {
                        map.remove(&id)
                    } else {
                        map.get(&id).cloned()
                    }
                };
                if let Some(tx) = tx {
                    let _ = tx.send(ev);
                }
            }
            // The socket is gone: every stream ends, and so does the forward.
            streams.lock().unwrap_or_else(|p| p.into_inner()).clear();
            let _ = closed_tx.send(true);
        })
    };
    eprintln!(
        "Forwarding {proto} {local} -> task {} port {} (Ctrl-C to stop)",
        a.id, a.port
    );
    let served = if a.udp {
        serve_udp(local, streams, out_tx, closed_rx).await
    } else {
        serve_tcp(local, streams, out_tx, closed_rx).await
    };
    reader.abort();
    writer.abort();
    served
}

async fn serve_tcp(
    local: SocketAddr,
    streams: Streams,
    out: mpsc::Sender<Message>,
    mut closed: tokio::sync::watch::Receiver<bool>,
) -> CliResult {
    let listener = tokio::net::TcpListener::bind(local)
        .await
        .map_err(|e| Failure::Failed(format!("cannot listen on {local}: {e}")))?;
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    let mut next_id: u32 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((conn, _)) = accepted else { continue };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // At the socket's stream limit: this connection is refused, the others go on.
                    drop(conn);
                    continue;
                };
                next_id = next_id.wrapping_add(1);
                let (tx, rx) = mpsc::unbounded_channel();
                streams.lock().unwrap_or_else(|p| p.into_inner()).insert(next_id, tx);
                let (out, streams) = (out.clone(), streams.clone());
                let id = next_id;
                tokio::spawn(async move {
                    tcp_stream(id, conn, rx, out).await;
                    streams.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    drop(slot);
                });
            }
            _ = out.closed() => return Err(Failure::Failed("the forward socket closed".into())),
            _ = closed.changed() => return Err(Failure::Failed("the host closed the forward socket (has the task ended?)".into())),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One local TCP connection as one stream, with credit both ways.
async fn tcp_stream(
    id: u32,
    conn: tokio::net::TcpStream,
    mut rx: mpsc::UnboundedReceiver<Event>,
    out: mpsc::Sender<Message>,
) {
    if out.send(frame(CONNECT, 0, id, &[])).await.is_err() {
        return;
    }
    let (mut credit, window): (u64, u64) = match rx.recv().await {
        Some(Event::Connected(w)) => (u64::from(w), u64::from(w)),
        Some(Event::Closed(Some(why))) => {
            eprintln!("connection {id}: {why}");
            return;
        }
        _ => return,
    };
    let (mut r, mut w) = conn.into_split();
    let mut buf = vec![0u8; CHUNK];
    let mut local_open = true;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Data(d)) => {
                    if w.write_all(&d).await.is_err() {
                        let _ = out.send(frame(CLOSE, 0, id, &[])).await;
                        return;
                    }
                    // Consumed: the runner may send that much more.
                    let _ = out.send(frame(WINDOW, 0, id, &(d.len() as u32).to_be_bytes())).await;
                }
                Some(Event::Window(n)) => {
                    credit += u64::from(n);
                    // Local side done and every byte it sent has reached the target.
                    if !local_open && credit >= window {
                        let _ = out.send(frame(CLOSE, 0, id, &[])).await;
                        return;
                    }
                }
                Some(Event::Connected(_)) => {}
                Some(Event::Closed(why)) => {
                    if let Some(why) = why {
                        eprintln!("connection {id}: {why}");
                    }
                    let _ = w.shutdown().await;
                    return;
                }
                None => return,
            },
            n = r.read(&mut buf[..(credit.min(CHUNK as u64) as usize).max(1)]), if local_open && credit > 0 => match n {
                Ok(0) | Err(_) => {
                    // The runner forgets a stream on CLOSE (and drops what it has not yet
                    // written to the target), so close once the data in flight has landed.
                    local_open = false;
                    if credit >= window {
                        let _ = out.send(frame(CLOSE, 0, id, &[])).await;
                        return;
                    }
                }
                Ok(n) => {
                    credit -= n as u64;
                    if out.send(frame(DATA, 0, id, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

async fn serve_udp(
    local: SocketAddr,
    streams: Streams,
    out: mpsc::Sender<Message>,
    mut closed: tokio::sync::watch::Receiver<bool>,
) -> CliResult {
    let sock = Arc::new(
        tokio::net::UdpSocket::bind(local)
            .await
            .map_err(|e| Failure::Failed(format!("cannot listen on udp {local}: {e}")))?,
    );
    let mut peers: HashMap<SocketAddr, u32> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut next_id: u32 = 0;
    loop {
        tokio::select! {
            got = sock.recv_from(&mut buf) => {
                let Ok((n, peer)) = got else { continue };
                let id = match peers.get(&peer) {
                    Some(id) => *id,
                    None => {
                        if peers.len() >= MAX_STREAMS {
                            continue;
                        }
                        next_id = next_id.wrapping_add(1);
                        let id = next_id;
                        peers.insert(peer, id);
                        let (tx, mut rx) = mpsc::unbounded_channel();
                        streams.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
                        let _ = out.send(frame(CONNECT, 1, id, &[])).await;
                        let sock = sock.clone();
                        tokio::spawn(async move {
                            while let Some(ev) = rx.recv().await {
                                match ev {
                                    Event::Data(d) => {
                                        let _ = sock.send_to(&d, peer).await;
                                    }
                                    Event::Closed(_) => break,
                                    _ => {}
                                }
                            }
                        });
                        id
                    }
                };
                let _ = out.send(frame(DATA, 1, id, &buf[..n])).await;
            }
            _ = out.closed() => return Err(Failure::Failed("the forward socket closed".into())),
            _ = closed.changed() => return Err(Failure::Failed("the host closed the forward socket (has the task ended?)".into())),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
