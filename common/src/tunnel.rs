//! The port-forward frame of `/ws/forward/{id}/{port}` (the original's tunnel protocol): an
//! 8-byte big-endian header `type:u8 proto:u8 client_id:u32 port:u16`, then the payload.
//! The client picks the `client_id` of each stream it opens and multiplexes them over one
//! socket.

/// What a frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Open a stream to `port` in the container.
    Connect = 1,
    Connected = 2,
    Data = 3,
    Close = 4,
    /// The payload is a UTF-8 reason.
    Error = 5,
    Ping = 6,
    Pong = 7,
    /// Ferry's `?flow=credit` extension: the payload is a big-endian `u32` of bytes the
    /// sender may now send more of on this stream.
    Window = 8,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Connect,
            2 => FrameKind::Connected,
            3 => FrameKind::Data,
            4 => FrameKind::Close,
            5 => FrameKind::Error,
            6 => FrameKind::Ping,
            7 => FrameKind::Pong,
            8 => FrameKind::Window,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp = 0,
    Udp = 1,
}

/// The credit each side starts with on a stream, with `?flow=credit`.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// Header length.
pub const HEADER: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub proto: Proto,
    pub client_id: u32,
    pub port: u16,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame shorter than its 8-byte header ({0} bytes)")]
    Short(usize),
    #[error("unknown frame type {0}")]
    Kind(u8),
    #[error("unknown protocol {0}")]
    Proto(u8),
}

impl Frame {
    pub fn new(
        kind: FrameKind,
        proto: Proto,
        client_id: u32,
        port: u16,
        payload: Vec<u8>,
    ) -> Frame {
        Frame {
            kind,
            proto,
            client_id,
            port,
            payload,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.push(self.kind as u8);
        out.push(self.proto as u8);
        out.extend_from_slice(&self.client_id.to_be_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() < HEADER {
            return Err(FrameError::Short(bytes.len()));
        }
        let kind = FrameKind::from_u8(bytes[0]).ok_or(FrameError::Kind(bytes[0]))?;
        let proto = match bytes[1] {
            0 => Proto::Tcp,
            1 => Proto::Udp,
            other => return Err(FrameError::Proto(other)),
        };
        let client_id = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        let port = u16::from_be_bytes([bytes[6], bytes[7]]);
        Ok(Frame {
            kind,
            proto,
            client_id,
            port,
            payload: bytes[HEADER..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_big_endian() {
        let f = Frame::new(
            FrameKind::Data,
            Proto::Udp,
            0x01020304,
            8080,
            b"hi".to_vec(),
        );
        let bytes = f.encode();
        assert_eq!(&bytes[..8], &[3, 1, 1, 2, 3, 4, 0x1f, 0x90]);
        assert_eq!(Frame::decode(&bytes).unwrap(), f);
        assert_eq!(Frame::decode(&[1, 0, 0]), Err(FrameError::Short(3)));
        assert_eq!(
            Frame::decode(&[9, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::Kind(9))
        );
        assert_eq!(
            Frame::decode(&[1, 7, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::Proto(7))
        );
    }
}
