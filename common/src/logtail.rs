//! Reads the last N lines of a log without reading the whole file (the original read every
//! byte on each poll): it walks backwards from the end in blocks until it has N line breaks.

use std::io::{self, Read, Seek, SeekFrom};

const BLOCK: u64 = 64 * 1024;

/// Returns the last `lines` lines of `r` (all of it when `lines` is `None`), capped at
/// `max_bytes` from the end so one huge line cannot exhaust memory.
pub fn tail<R: Read + Seek>(
    r: &mut R,
    lines: Option<usize>,
    max_bytes: u64,
) -> io::Result<Vec<u8>> {
    let len = r.seek(SeekFrom::End(0))?;
    let floor = len.saturating_sub(max_bytes);
    let Some(want) = lines else {
        r.seek(SeekFrom::Start(floor))?;
        let mut out = Vec::with_capacity((len - floor) as usize);
        r.take(len - floor).read_to_end(&mut out)?;
        return Ok(out);
    };
    if want == 0 || len == 0 {
        return Ok(Vec::new());
    }
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let next = start.saturating_sub(BLOCK).max(floor);
        let mut block = vec![0u8; (start - next) as usize];
        r.seek(SeekFrom::Start(next))?;
        r.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        start = next;
        // A trailing newline ends the last line; it does not start a new one.
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let breaks: Vec<usize> = body
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        if breaks.len() >= want {
            let cut = breaks[breaks.len() - want] + 1;
            return Ok(buf[cut..].to_vec());
        }
        if start == floor {
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn t(s: &str, n: Option<usize>) -> String {
        String::from_utf8(tail(&mut Cursor::new(s.as_bytes().to_vec()), n, 1 << 30).unwrap())
            .unwrap()
    }

    #[test]
    fn last_lines() {
        assert_eq!(t("a\nb\nc\n", Some(2)), "b\nc\n");
        assert_eq!(t("a\nb\nc", Some(2)), "b\nc");
        assert_eq!(t("a\nb\nc\n", Some(10)), "a\nb\nc\n");
        assert_eq!(t("a\nb\nc\n", None), "a\nb\nc\n");
        assert_eq!(t("a\nb\n", Some(0)), "");
        assert_eq!(t("", Some(3)), "");
    }

    #[test]
    fn spans_blocks() {
        let big: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(t(&big, Some(3)), "line 49997\nline 49998\nline 49999\n");
    }

    #[test]
    fn caps_bytes() {
        let out = tail(&mut Cursor::new(b"0123456789".to_vec()), None, 4).unwrap();
        assert_eq!(out, b"6789");
    }
}
