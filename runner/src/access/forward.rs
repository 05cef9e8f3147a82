//! Port forwarding over a WebSocket (`/ws/forward/{id}/{port}?proto=tcp|udp`), in the
//! original's frames ([`ferry_common::tunnel`]): the client opens streams with CONNECT (its own
//! `client_id`, the container port), sends DATA and CLOSE; the runner answers CONNECTED,
//! DATA, CLOSE and ERROR. The runner first says `CONNECTED` as text.
//!
//! Each connection is opened from inside the container's network namespace: a short-lived
//! thread enters it (`setns`) and creates the socket there, so no agent runs in the image and
//! the service needs no published port. The socket then serves from the runtime as any
//! other.
//!
//! Without flow control a stream whose target does not read fills its queue and then stalls
//! the socket, as in the original. With `?flow=credit` (Ferry's extension) each direction of
//! each stream has a window of [`INITIAL_WINDOW`] bytes, reopened by WINDOW frames: the
//! runner sends a stream's data only while the client has granted room, and grants the
//! client room as its data reaches the target; a stream out of room waits alone, and what the
//! runner holds per stream is bounded by the window.

use axum::extract::ws::{Message, WebSocket};
use ferry_common::tunnel::{Frame, FrameKind, Proto, HEADER, INITIAL_WINDOW};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

/// Most streams one socket holds open.
const MAX_STREAMS: usize = 1024;
/// Frames queued towards one stream's target (without flow control).
const STREAM_QUEUE: usize = 64;
/// Largest DATA payload sent (frames stay well under the relay's 1 MiB).
const CHUNK: usize = 256 * 1024;

/// Opens a TCP connection or a connected UDP socket to `127.0.0.1:port` inside the network
/// namespace `netns`.
fn open_in_namespace(netns: PathBuf, proto: Proto, port: u16) -> std::io::Result<Socket> {
    std::thread::spawn(move || -> std::io::Result<Socket> {
        let ns = std::fs::File::open(&netns)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        match proto {
            Proto::Tcp => {
                let s = std::net::TcpStream::connect_timeout(
                    &target,
                    std::time::Duration::from_secs(10),
                )?;
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(Socket::Tcp(s))
            }
            Proto::Udp => {
                let s = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
                s.connect(target)?;
                s.set_nonblocking(true)?;
                Ok(Socket::Udp(s))
            }
        }
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

enum Socket {
    Tcp(std::net::TcpStream),
    Udp(std::net::UdpSocket),
}

fn frame(kind: FrameKind, proto: Proto, id: u32, port: u16, payload: Vec<u8>) -> Message {
    Message::Binary(Frame::new(kind, proto, id, port, payload).encode().into())
}

fn window_of(payload: &[u8]) -> Option<u32> {
    payload
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Where a stream's client DATA goes: a bounded queue (no flow control), or one whose size the
/// client's window bounds.
enum ToTarget {
    Bounded(mpsc::Sender<Vec<u8>>),
    Credited(mpsc::UnboundedSender<Vec<u8>>),
}

enum FromClient {
    Bounded(mpsc::Receiver<Vec<u8>>),
    Credited(mpsc::UnboundedReceiver<Vec<u8>>),
}

impl FromClient {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        match self {
            FromClient::Bounded(rx) => rx.recv().await,
            FromClient::Credited(rx) => rx.recv().await,
        }
    }
}

/// One open stream.
struct Stream {
    to_target: ToTarget,
    /// With flow control: the room the client may still use towards the target.
    client_room: u64,
    /// With flow control: the room the client granted us towards it.
    our_room: Option<Arc<Semaphore>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Waits for room to send `n` bytes to the client (with flow control).
async fn room_for(room: &Option<Arc<Semaphore>>, n: usize) -> bool {
    match room {
        None => true,
        Some(sem) => match sem.acquire_many(n as u32).await {
            Ok(p) => {
                p.forget();
                true
            }
            Err(_) => false,
        },
    }
}

/// Serves one forward socket for the container whose network namespace is `netns`.
/// Each CONNECT frame says the stream's protocol and port (0: the socket's `default_port`);
/// `credit`: the `?flow=credit` flow control.
pub async fn serve(mut ws: WebSocket, netns: PathBuf, default_port: u16, credit: bool) {
    if ws.send(Message::Text("CONNECTED".into())).await.is_err() {
        return;
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
    let mut streams: HashMap<u32, Stream> = HashMap::new();
    let mut ping = tokio::time::interval(super::terminal::PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = ws.recv() => {
                let bytes = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // A text frame, a close or an error ends the session.
                    _ => break,
                };
                let f = match Frame::decode(&bytes) {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = ws.send(frame(FrameKind::Error, Proto::Tcp, 0, 0, e.to_string().into_bytes())).await;
                        continue;
                    }
                };
                if !on_client_frame(&mut ws, f, &mut streams, &netns, default_port, credit, &out_tx).await {
                    break;
                }
            }
            out = out_rx.recv() => {
                let Some(out) = out else { break };
                // A stream that ended by itself says CLOSE: forget it. A WINDOW we send gives the
                // client back the room its data took.
                // (Only those two are decoded: DATA passes without a copy.)
                let control = |b: &[u8]| {
                    matches!(b.first(), Some(k) if *k == FrameKind::Close as u8 || *k == FrameKind::Window as u8)
                };
                if let Message::Binary(b) = &out {
                    if let Some(f) = control(b).then(|| Frame::decode(b).ok()).flatten() {
                        match f.kind {
                            FrameKind::Close => {
                                streams.remove(&f.client_id);
                            }
                            FrameKind::Window => {
                                if let (Some(s), Some(n)) = (streams.get_mut(&f.client_id), window_of(&f.payload)) {
                                    s.client_room += u64::from(n);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                if ws.send(out).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    streams.clear();
}

/// Handles one frame from the client; `false` when the socket is gone.
async fn on_client_frame(
    ws: &mut WebSocket,
    f: Frame,
    streams: &mut HashMap<u32, Stream>,
    netns: &std::path::Path,
    default_port: u16,
    credit: bool,
    out_tx: &mpsc::Sender<Message>,
) -> bool {
    let error = |f: &Frame, why: String| {
        frame(
            FrameKind::Error,
            f.proto,
            f.client_id,
            f.port,
            why.into_bytes(),
        )
    };
    match f.kind {
        FrameKind::Connect => {
            if streams.len() >= MAX_STREAMS || streams.contains_key(&f.client_id) {
                let why = if streams.len() >= MAX_STREAMS {
                    "too many streams"
                } else {
                    "client_id already in use"
                };
                return ws.send(error(&f, why.into())).await.is_ok();
            }
            let port = if f.port == 0 { default_port } else { f.port };
            let proto = f.proto;
            let ns = netns.to_path_buf();
            let opened =
                tokio::task::spawn_blocking(move || open_in_namespace(ns, proto, port)).await;
            let reply = match opened {
                Ok(Ok(sock)) => {
                    match start_stream(sock, f.client_id, port, proto, out_tx.clone(), credit) {
                        Ok(stream) => {
                            streams.insert(f.client_id, stream);
                            // With credit, CONNECTED carries the client's first window.
                            let payload = if credit {
                                INITIAL_WINDOW.to_be_bytes().to_vec()
                            } else {
                                Vec::new()
                            };
                            frame(FrameKind::Connected, proto, f.client_id, port, payload)
                        }
                        Err(e) => error(&f, e.to_string()),
                    }
                }
                Ok(Err(e)) => error(
                    &f,
                    format!("cannot connect to port {port} in the container: {e}"),
                ),
                Err(e) => error(&f, e.to_string()),
            };
            ws.send(reply).await.is_ok()
        }
        FrameKind::Data => {
            let Some(s) = streams.get_mut(&f.client_id) else {
                return true;
            };
            let gone = match &s.to_target {
                ToTarget::Bounded(tx) => tx.send(f.payload).await.is_err(),
                ToTarget::Credited(tx) => {
                    let n = f.payload.len() as u64;
                    if n > s.client_room {
                        let why = "flow control: more data than the window allows".to_string();
                        let _ = ws.send(error(&f, why)).await;
                        true
                    } else {
                        s.client_room -= n;
                        tx.send(f.payload).is_err()
                    }
                }
            };
            if gone {
                streams.remove(&f.client_id);
            }
            true
        }
        FrameKind::Window => {
            if let (Some(s), Some(n)) = (streams.get(&f.client_id), window_of(&f.payload)) {
                if let Some(room) = &s.our_room {
                    room.add_permits(n as usize);
                }
            }
            true
        }
        FrameKind::Close => {
            streams.remove(&f.client_id);
            true
        }
        FrameKind::Ping => ws
            .send(frame(
                FrameKind::Pong,
                f.proto,
                f.client_id,
                f.port,
                f.payload,
            ))
            .await
            .is_ok(),
        FrameKind::Pong | FrameKind::Connected | FrameKind::Error => true,
    }
}

/// Starts the two halves of a stream: target -> client DATA, client DATA -> target.
fn start_stream(
    sock: Socket,
    id: u32,
    port: u16,
    proto: Proto,
    out: mpsc::Sender<Message>,
    credit: bool,
) -> std::io::Result<Stream> {
    let (to_target, mut from_client) = if credit {
        let (tx, rx) = mpsc::unbounded_channel();
        (ToTarget::Credited(tx), FromClient::Credited(rx))
    } else {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        (ToTarget::Bounded(tx), FromClient::Bounded(rx))
    };
    let our_room = credit.then(|| Arc::new(Semaphore::new(INITIAL_WINDOW as usize)));
    let window = move |n: usize| {
        frame(
            FrameKind::Window,
            proto,
            id,
            port,
            (n as u32).to_be_bytes().to_vec(),
        )
    };
    // A DATA frame built in the read buffer itself (the payload is read after room for the
    // header): one copy from the socket to the frame.
    let data = move |buf: &mut [u8], n: usize| {
        buf[0] = FrameKind::Data as u8;
        buf[1] = proto as u8;
        buf[2..6].copy_from_slice(&id.to_be_bytes());
        buf[6..8].copy_from_slice(&port.to_be_bytes());
        Message::Binary(bytes::Bytes::copy_from_slice(&buf[..HEADER + n]))
    };
    let (reader, writer) = match sock {
        Socket::Tcp(s) => {
            let s = tokio::net::TcpStream::from_std(s)?;
            let (mut rd, mut wr) = s.into_split();
            let (out2, room) = (out.clone(), our_room.clone());
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; HEADER + CHUNK];
                loop {
                    match rd.read(&mut buf[HEADER..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if !room_for(&room, n).await
                                || out2.send(data(&mut buf, n)).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                }
                let _ = out2
                    .send(frame(FrameKind::Close, proto, id, port, Vec::new()))
                    .await;
            });
            let writer = tokio::spawn(async move {
                while let Some(bytes) = from_client.recv().await {
                    if wr.write_all(&bytes).await.is_err()
                        || (credit && out.send(window(bytes.len())).await.is_err())
                    {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            });
            (reader, writer)
        }
        Socket::Udp(s) => {
            let s = Arc::new(tokio::net::UdpSocket::from_std(s)?);
            let (rs, out2, room) = (s.clone(), out.clone(), our_room.clone());
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; HEADER + CHUNK];
                loop {
                    let n = match rs.recv(&mut buf[HEADER..]).await {
                        Ok(n) => n,
                        // Nothing listened when a datagram arrived (ICMP port unreachable):
                        // UDP has no connection to lose, so the stream stays and waits.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                        Err(_) => return,
                    };
                    if !room_for(&room, n).await || out2.send(data(&mut buf, n)).await.is_err() {
                        return;
                    }
                }
            });
            let writer = tokio::spawn(async move {
                while let Some(bytes) = from_client.recv().await {
                    let sent = match s.send(&bytes).await {
                        // As above: a datagram nobody took is lost, not the stream.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => true,
                        other => other.is_ok(),
                    };
                    if !sent || (credit && out.send(window(bytes.len())).await.is_err()) {
                        break;
                    }
                }
            });
            (reader, writer)
        }
    };
    Ok(Stream {
        to_target,
        client_room: u64::from(INITIAL_WINDOW),
        our_room,
        tasks: vec![reader, writer],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream halves against real sockets in the test's own network namespace.
    async fn round_trip(proto: Proto, credit: bool) {
        let port = match proto {
            Proto::Tcp => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let port = l.local_addr().unwrap().port();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let (mut c, _) = l.accept().unwrap();
                    let mut b = [0u8; 4];
                    c.read_exact(&mut b).unwrap();
                    c.write_all(&b).unwrap();
                });
                port
            }
            Proto::Udp => {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let port = s.local_addr().unwrap().port();
                std::thread::spawn(move || {
                    let mut b = [0u8; 16];
                    let (n, from) = s.recv_from(&mut b).unwrap();
                    s.send_to(&b[..n], from).unwrap();
                });
                port
            }
        };
        let sock = tokio::task::spawn_blocking(move || {
            open_in_namespace("/proc/self/ns/net".into(), proto, port)
        })
        .await
        .unwrap()
        .unwrap();
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let stream = start_stream(sock, 7, port, proto, out_tx, credit).unwrap();
        match &stream.to_target {
            ToTarget::Bounded(tx) => tx.send(b"ping".to_vec()).await.unwrap(),
            ToTarget::Credited(tx) => tx.send(b"ping".to_vec()).unwrap(),
        }
        let mut got_data = false;
        let mut got_window = !credit;
        while !(got_data && got_window) {
            let msg = tokio::time::timeout(std::time::Duration::from_secs(5), out_rx.recv())
                .await
                .expect("a frame")
                .expect("open");
            let Message::Binary(b) = msg else { continue };
            let f = Frame::decode(&b).unwrap();
            assert_eq!(f.client_id, 7);
            match f.kind {
                FrameKind::Data => {
                    assert_eq!(f.payload, b"ping");
                    got_data = true;
                }
                FrameKind::Window => {
                    assert_eq!(
                        window_of(&f.payload),
                        Some(4),
                        "the room the data took comes back"
                    );
                    got_window = true;
                }
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn tcp_and_udp_streams_carry_data_both_ways() {
        round_trip(Proto::Tcp, false).await;
        round_trip(Proto::Udp, false).await;
        round_trip(Proto::Tcp, true).await;
        round_trip(Proto::Udp, true).await;
    }
}
