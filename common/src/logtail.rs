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
    tail_to_end(r, lines, max_bytes).map(|(bytes, _)| bytes)
}

/// [`tail`], with the offset its bytes end at: where a reader following the log goes on.
pub fn tail_to_end<R: Read + Seek>(
    r: &mut R,
    lines: Option<usize>,
    max_bytes: u64,
) -> io::Result<(Vec<u8>, u64)> {
    let len = r.seek(SeekFrom::End(0))?;
    let floor = len.saturating_sub(max_bytes);
    let Some(want) = lines else {
        r.seek(SeekFrom::Start(floor))?;
        let mut out = Vec::with_capacity((len - floor) as usize);
        r.take(len - floor).read_to_end(&mut out)?;
        return Ok((out, len));
    };
    if want == 0 || len == 0 {
        return Ok((Vec::new(), len));
    }
    // Walk back block by block, looking at each byte once, until `want` line starts are seen.
    // A trailing newline ends the last line; it does not start a new one.
    let mut end_of_scan = len;
    let mut last = [0u8; 1];
    r.seek(SeekFrom::Start(len - 1))?;
    r.read_exact(&mut last)?;
    if last[0] == b'\n' {
        end_of_scan = len - 1;
    }
    let mut start = end_of_scan;
    let mut seen = 0usize;
    let mut cut = floor;
    let mut block = vec![0u8; BLOCK as usize];
    'scan: while start > floor {
        let next = start.saturating_sub(BLOCK).max(floor);
        let chunk = &mut block[..(start - next) as usize];
        r.seek(SeekFrom::Start(next))?;
        r.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == want {
                    cut = next + i as u64 + 1;
                    break 'scan;
                }
            }
        }
        start = next;
    }
    r.seek(SeekFrom::Start(cut))?;
    let mut out = Vec::with_capacity((len - cut) as usize);
    r.take(len - cut).read_to_end(&mut out)?;
    Ok((out, len))
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
