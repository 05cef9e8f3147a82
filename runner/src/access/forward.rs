//! Port forwarding over a WebSocket (`/ws/forward/{id}/{port}?proto=tcp|udp`), in the
//! original's frames ([`ferry_common::tunnel`]): the client opens streams with CONNECT (its own
//! `client_id`, the container port), sends DATA and CLOSE; the runner answers CONNECTED,
//! DATA, CLOSE and ERROR. The runner first says `CONNECTED` as text.
//!
//! Each connection is opened from inside the container's network namespace: a short-lived
//! thread enters it (`setns`) and creates the socket there, so no agent runs in the image and
//! the service needs no published port. The socket then serves from the runtime as any
//! other. A stream whose target does not read fills its queue and then stalls the socket,
//! as in the original.

use axum::extract::ws::{Message, WebSocket};
use ferry_common::tunnel::{Frame, FrameKind, Proto};
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Most streams one socket holds open.
const MAX_STREAMS: usize = 1024;
/// Frames queued towards one stream's target.
const STREAM_QUEUE: usize = 64;
/// Largest DATA payload sent.
const CHUNK: usize = 64 * 1024;

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

/// One open stream: where its client's DATA goes.
struct Stream {
    to_target: mpsc::Sender<Vec<u8>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves one forward socket for the container whose network namespace is `netns`.
/// Each CONNECT frame says the stream's protocol and port (0: the socket's `default_port`).
pub async fn serve(mut ws: WebSocket, netns: PathBuf, default_port: u16) {
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
                match f.kind {
                    FrameKind::Connect => {
                        if streams.contains_key(&f.client_id) || streams.len() >= MAX_STREAMS {
                            let why = if streams.len() >= MAX_STREAMS { "too many streams" } else { "client_id already in use" };
                            let _ = ws.send(frame(FrameKind::Error, f.proto, f.client_id, f.port, why.as_bytes().to_vec())).await;
                            continue;
                        }
                        let port = if f.port == 0 { default_port } else { f.port };
                        let proto = f.proto;
                        let netns = netns.clone();
                        let opened = tokio::task::spawn_blocking(move || open_in_namespace(netns, proto, port)).await;
                        match opened {
                            Ok(Ok(sock)) => match start_stream(sock, f.client_id, port, proto, out_tx.clone()) {
                                Ok(stream) => {
                                    streams.insert(f.client_id, stream);
                                    if ws.send(frame(FrameKind::Connected, proto, f.client_id, port, Vec::new())).await.is_err() {
                                        break;
                                    }
                                }
                                Err(e) => {
                                    let _ = ws.send(frame(FrameKind::Error, proto, f.client_id, port, e.to_string().into_bytes())).await;
                                }
                            },
                            Ok(Err(e)) => {
                                let why = format!("cannot connect to port {port} in the container: {e}");
                                let _ = ws.send(frame(FrameKind::Error, proto, f.client_id, port, why.into_bytes())).await;
                            }
                            Err(e) => {
                                let _ = ws.send(frame(FrameKind::Error, proto, f.client_id, port, e.to_string().into_bytes())).await;
                            }
                        }
                    }
                    FrameKind::Data => {
                        if let Some(s) = streams.get(&f.client_id) {
                            if s.to_target.send(f.payload).await.is_err() {
                                streams.remove(&f.client_id);
                            }
                        }
                    }
                    FrameKind::Close => {
                        streams.remove(&f.client_id);
                    }
                    FrameKind::Ping => {
                        if ws.send(frame(FrameKind::Pong, f.proto, f.client_id, f.port, f.payload)).await.is_err() {
                            break;
                        }
                    }
                    FrameKind::Pong | FrameKind::Connected | FrameKind::Error => {}
                }
            }
            out = out_rx.recv() => {
                let Some(out) = out else { break };
                // A stream that ended by itself says CLOSE: forget it.
                if let Message::Binary(b) = &out {
                    if let Ok(f) = Frame::decode(b) {
                        if f.kind == FrameKind::Close {
                            streams.remove(&f.client_id);
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

/// Starts the two halves of a stream: target -> client DATA, client DATA -> target.
fn start_stream(
    sock: Socket,
    id: u32,
    port: u16,
    proto: Proto,
    out: mpsc::Sender<Message>,
) -> std::io::Result<Stream> {
    let (to_target, mut from_client) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    let tasks = match sock {
        Socket::Tcp(s) => {
            let s = tokio::net::TcpStream::from_std(s)?;
            let (mut rd, mut wr) = s.into_split();
            let out2 = out.clone();
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out2
                                .send(frame(FrameKind::Data, proto, id, port, buf[..n].to_vec()))
                                .await
                                .is_err()
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
                while let Some(data) = from_client.recv().await {
                    if wr.write_all(&data).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            });
            vec![reader, writer]
        }
        Socket::Udp(s) => {
            let s = std::sync::Arc::new(tokio::net::UdpSocket::from_std(s)?);
            let rs = s.clone();
            let reader = tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                while let Ok(n) = rs.recv(&mut buf).await {
                    if out
                        .send(frame(FrameKind::Data, proto, id, port, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let writer = tokio::spawn(async move {
                while let Some(data) = from_client.recv().await {
                    if s.send(&data).await.is_err() {
                        break;
                    }
                }
            });
            vec![reader, writer]
        }
    };
    Ok(Stream { to_target, tasks })
}
