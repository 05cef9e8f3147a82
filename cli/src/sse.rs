//! Reading the host's Server-Sent Events (`/api/events`): one JSON object per event.

use serde_json::Value;

pub struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

/// Longest event accepted (the host's are well under a kilobyte).
const MAX_EVENT: usize = 1 << 20;

impl Events {
    pub fn new(resp: reqwest::Response) -> Events {
        Events {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next event's `data`, parsed; `None` when the stream ends. Comments (keep-alives)
    /// are skipped.
    pub async fn next(&mut self) -> Result<Option<Value>, String> {
        loop {
            if let Some(end) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..end).collect();
                if let Some(v) = data_of(&block) {
                    return Ok(Some(v));
                }
                continue;
            }
            if self.buf.len() > MAX_EVENT {
                return Err("an event of more than 1 MiB: not a ferry-host stream?".into());
            }
            match self.resp.chunk().await {
                Ok(Some(c)) => self.buf.extend_from_slice(&c),
                Ok(None) => return Ok(None),
                Err(e) => return Err(crate::failure::chain(&e)),
            }
        }
    }
}

/// End of the first event (after its blank line), `\n\n` or `\r\n\r\n`.
fn find_blank_line(b: &[u8]) -> Option<usize> {
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

fn data_of(block: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(block);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_and_comments_skipped() {
        let b = b": keep-alive\n\nid: 5\nevent: task\ndata: {\"index\":5}\n\nrest";
        let end = find_blank_line(b).expect("first block");
        assert_eq!(data_of(&b[..end]), None);
        let end2 = find_blank_line(&b[end..]).expect("second block") + end;
        assert_eq!(
            data_of(&b[end..end2]),
            Some(serde_json::json!({"index": 5}))
        );
        assert_eq!(find_blank_line(&b[end2..]), None);
    }
}
