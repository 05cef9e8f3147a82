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
//!
//! Each stream writes its own frames to the socket (one shared sink, taken in turn): a DATA
//! frame lives only until it is written, so the stream reads the next one into the same
//! allocation, and the loop reading the client's frames wakes only when the client sends.

use axum::extract::ws::{Message, WebSocket};
use bytes::{BufMut, BytesMut};
use ferry_common::tunnel::{Frame, FrameKind, Proto, HEADER, INITIAL_WINDOW};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex, Semaphore};

/// The socket's sending half, shared by the streams and the loop serving the client (boxed:
/// the unit tests put a channel there).
type Sink = Arc<Mutex<Pin<Box<dyn futures_util::Sink<Message, Error = axum::Error> + Send>>>>;

/// Sends one frame; `false` when the socket is gone.
async fn send(sink: &Sink, m: Message) -> bool {
    sink.lock().await.send(m).await.is_ok()
}

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
    /// Tells this stream from a later one under the same `client_id`.
    generation: u64,
    to_target: ToTarget,
    /// With flow control: the room the client may still use towards the target (the stream
    /// adds what reached the target before it says so in a WINDOW frame).
    client_room: Arc<AtomicU64>,
    /// With flow control: the room the client granted us towards it.
    our_room: Option<Arc<Semaphore>>,
    /// Target to client; `None` once it ended by itself.
    reader: Option<tokio::task::JoinHandle<()>>,
    /// Client to target.
    writer: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.writer.abort();
        if let Some(r) = &self.reader {
            r.abort();
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
pub async fn serve(ws: WebSocket, netns: PathBuf, default_port: u16, credit: bool) {
    let (sink, mut from_client) = ws.split();
    let sink: Sink = Arc::new(Mutex::new(Box::pin(sink)));
    if !send(&sink, Message::Text("CONNECTED".into())).await {
        return;
    }
    // A stream whose target closed says so here (with its generation) before its CLOSE goes
    // out, so the id is free again before the client can reuse it.
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<(u32, u64)>();
    let mut opened = Opened {
        streams: HashMap::new(),
        generations: 0,
        ended: ended_tx,
    };
    let mut ping = tokio::time::interval(super::terminal::PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            biased;
            Some((id, generation)) = ended.recv() => {
                if opened.streams.get(&id).is_some_and(|s| s.generation == generation) {
                    // Its reader still has the CLOSE to send: let it finish.
                    if let Some(mut s) = opened.streams.remove(&id) {
                        s.reader.take();
                    }
                }
            }
            msg = from_client.next() => {
                let bytes = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // A text frame, a close or an error ends the session.
                    _ => break,
                };
                let f = match Frame::decode(&bytes) {
                    Ok(f) => f,
                    Err(e) => {
                        let error = frame(FrameKind::Error, Proto::Tcp, 0, 0, e.to_string().into_bytes());
                        if !send(&sink, error).await {
                            break;
                        }
                        continue;
                    }
                };
                if !on_client_frame(&sink, f, &mut opened, &netns, default_port, credit).await {
                    break;
                }
            }
            _ = ping.tick() => {
                if !send(&sink, Message::Ping(Default::default())).await {
                    break;
                }
            }
        }
    }
    opened.streams.clear();
}

/// The streams of one socket.
struct Opened {
    streams: HashMap<u32, Stream>,
    generations: u64,
    ended: mpsc::UnboundedSender<(u32, u64)>,
}

/// Handles one frame from the client; `false` when the socket is gone.
async fn on_client_frame(
    sink: &Sink,
    f: Frame,
    opened: &mut Opened,
    netns: &std::path::Path,
    default_port: u16,
    credit: bool,
) -> bool {
    let streams = &mut opened.streams;
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
                return send(sink, error(&f, why.into())).await;
            }
            let port = if f.port == 0 { default_port } else { f.port };
            let proto = f.proto;
            let ns = netns.to_path_buf();
            let dialled =
                tokio::task::spawn_blocking(move || open_in_namespace(ns, proto, port)).await;
            let reply = match dialled {
                Ok(Ok(sock)) => {
                    opened.generations += 1;
                    let ends = StreamEnd {
                        generation: opened.generations,
                        ended: opened.ended.clone(),
                    };
                    let id = f.client_id;
                    match start_stream(sock, id, port, proto, sink.clone(), ends, credit) {
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
            send(sink, reply).await
        }
        FrameKind::Data => {
            let Some(s) = streams.get_mut(&f.client_id) else {
                return true;
            };
            let gone = match &s.to_target {
                ToTarget::Bounded(tx) => tx.send(f.payload).await.is_err(),
                ToTarget::Credited(tx) => {
                    // Only this loop takes room away, so a check then a subtraction holds.
                    let n = f.payload.len() as u64;
                    if n > s.client_room.load(Ordering::Acquire) {
                        let why = "flow control: more data than the window allows".to_string();
                        let _ = send(sink, error(&f, why)).await;
                        true
                    } else {
                        s.client_room.fetch_sub(n, Ordering::AcqRel);
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
        FrameKind::Ping => {
            let pong = frame(FrameKind::Pong, f.proto, f.client_id, f.port, f.payload);
            send(sink, pong).await
        }
        FrameKind::Pong | FrameKind::Connected | FrameKind::Error => true,
    }
}

/// How a stream whose target closed tells the socket's loop.
struct StreamEnd {
    generation: u64,
    ended: mpsc::UnboundedSender<(u32, u64)>,
}

/// Starts the two halves of a stream: target -> client DATA, client DATA -> target.
fn start_stream(
    sock: Socket,
    id: u32,
    port: u16,
    proto: Proto,
    sink: Sink,
    ends: StreamEnd,
    credit: bool,
) -> std::io::Result<Stream> {
    let generation = ends.generation;
    let client_room = Arc::new(AtomicU64::new(u64::from(INITIAL_WINDOW)));
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
    // DATA frames are read straight into the frame's own buffer after its header (no zeroing,
    // no copy); once the socket task has written a frame out, its allocation is reused.
    let mut header = [0u8; HEADER];
    header[0] = FrameKind::Data as u8;
    header[1] = proto as u8;
    header[2..6].copy_from_slice(&id.to_be_bytes());
    header[6..8].copy_from_slice(&port.to_be_bytes());
    let start_frame = move |buf: &mut BytesMut| {
        buf.reserve(HEADER + CHUNK);
        buf.put_slice(&header);
    };
    let (reader, writer) = match sock {
        Socket::Tcp(s) => {
            let s = tokio::net::TcpStream::from_std(s)?;
            let (mut rd, mut wr) = s.into_split();
            let (sink2, room) = (sink.clone(), our_room.clone());
            let reader = tokio::spawn(async move {
                let mut buf = BytesMut::new();
                loop {
                    start_frame(&mut buf);
                    match rd.read_buf(&mut (&mut buf).limit(CHUNK)).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let frame = Message::Binary(buf.split().freeze());
                            if !room_for(&room, n).await || !send(&sink2, frame).await {
                                return;
                            }
                        }
                    }
                }
                let _ = ends.ended.send((id, ends.generation));
                send(&sink2, frame(FrameKind::Close, proto, id, port, Vec::new())).await;
            });
            let room = client_room.clone();
            let writer = tokio::spawn(async move {
                while let Some(bytes) = from_client.recv().await {
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                    if credit {
                        room.fetch_add(bytes.len() as u64, Ordering::AcqRel);
                        if !send(&sink, window(bytes.len())).await {
                            break;
                        }
                    }
                }
                let _ = wr.shutdown().await;
            });
            (reader, writer)
        }
        Socket::Udp(s) => {
            let s = Arc::new(tokio::net::UdpSocket::from_std(s)?);
            let (rs, sink2, room) = (s.clone(), sink.clone(), our_room.clone());
            let reader = tokio::spawn(async move {
                let mut buf = BytesMut::new();
                loop {
                    buf.clear();
                    start_frame(&mut buf);
                    let n = match rs.recv_buf(&mut (&mut buf).limit(CHUNK)).await {
                        Ok(n) => n,
                        // Nothing listened when a datagram arrived (ICMP port unreachable):
                        // UDP has no connection to lose, so the stream stays and waits.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                        Err(_) => return,
                    };
                    let frame = Message::Binary(buf.split().freeze());
                    if !room_for(&room, n).await || !send(&sink2, frame).await {
                        return;
                    }
                }
            });
            let room = client_room.clone();
            let writer = tokio::spawn(async move {
                while let Some(bytes) = from_client.recv().await {
                    let sent = match s.send(&bytes).await {
                        // As above: a datagram nobody took is lost, not the stream.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => true,
                        other => other.is_ok(),
                    };
                    if !sent {
                        break;
                    }
                    if credit {
                        room.fetch_add(bytes.len() as u64, Ordering::AcqRel);
                        if !send(&sink, window(bytes.len())).await {
                            break;
                        }
                    }
                }
            });
            (reader, writer)
        }
    };
    Ok(Stream {
        generation,
        to_target,
        client_room,
        our_room,
        reader: Some(reader),
        writer,
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
        let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
        let sink = futures_util::sink::unfold(out_tx, |tx, m: Message| async move {
            tx.send(m).await.map_err(axum::Error::new)?;
            Ok::<_, axum::Error>(tx)
        });
        let sink: Sink = Arc::new(Mutex::new(Box::pin(sink)));
        let (ended, _ended_rx) = mpsc::unbounded_channel();
        let ends = StreamEnd {
            generation: 1,
            ended,
        };
        let stream = start_stream(sock, 7, port, proto, sink, ends, credit).unwrap();
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
