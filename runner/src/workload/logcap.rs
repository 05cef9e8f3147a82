//! Ferry's copy of a task's output is capped: each stream stops growing at `max_log_size` and
//! then ends with one line saying so, so a task printing without end cannot fill the runner's
//! disk, and the tail a user reads tells them the output was cut rather than ending silently.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A writer that keeps the first `limit` bytes written to it. When more arrives, it drops the
/// rest and writes [`marker`] once, on a line of its own.
pub struct Capped<W> {
    inner: W,
    limit: u64,
    written: u64,
    /// The last byte kept was a newline (or nothing was kept).
    at_line_start: bool,
    cut: bool,
}

impl<W: AsyncWrite + Unpin> Capped<W> {
    pub fn new(inner: W, limit: u64) -> Capped<W> {
        Capped {
            inner,
            limit,
            written: 0,
            at_line_start: true,
            cut: false,
        }
    }

    /// The cap was reached: everything written from now on is dropped.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.cut || bytes.is_empty() {
            return Ok(());
        }
        let room = self.limit.saturating_sub(self.written);
        let keep = usize::try_from(room).map_or(bytes.len(), |r| r.min(bytes.len()));
        if keep > 0 {
            self.inner.write_all(&bytes[..keep]).await?;
            self.written += keep as u64;
            self.at_line_start = bytes[keep - 1] == b'\n';
        }
        if keep < bytes.len() {
            self.cut = true;
            let mut tail = String::new();
            if !self.at_line_start {
                tail.push('\n');
            }
            tail.push_str(&marker(self.limit));
            self.inner.write_all(tail.as_bytes()).await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().await
    }
}

/// The line that ends a cut stream.
pub fn marker(limit: u64) -> String {
    format!(
        "[ferry: output cut at {} (max_log_size)]\n",
        format_size(limit)
    )
}

/// `64.0 MiB`, `512.0 KiB`, `100 B`: binary units, as the config's sizes are.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if bytes >= size {
            return format!("{:.1} {name}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn through(limit: u64, chunks: &[&[u8]]) -> (String, bool) {
        let mut w = Capped::new(Vec::new(), limit);
        for c in chunks {
            w.write(c).await.unwrap();
        }
        let cut = w.is_cut();
        (String::from_utf8(w.inner).unwrap(), cut)
    }

    #[tokio::test]
    async fn output_up_to_the_limit_is_kept_whole() {
        assert_eq!(
            through(8, &[b"abc\n", b"def\n"]).await,
            ("abc\ndef\n".into(), false)
        );
        assert_eq!(through(8, &[b""]).await, (String::new(), false));
    }

    #[tokio::test]
    async fn more_is_cut_with_a_marker_line_once() {
        let m = marker(8);
        assert_eq!(m, "[ferry: output cut at 8 B (max_log_size)]\n");
        // Cut mid-line: the marker still starts a line of its own.
        assert_eq!(
            through(8, &[b"abc\nde", b"fgh\n", b"more\n"]).await,
            (format!("abc\ndefg\n{m}"), true)
        );
        // Cut right after a newline: no blank line before the marker.
        assert_eq!(
            through(8, &[b"abcdefg\n", b"x"]).await,
            (format!("abcdefg\n{m}"), true)
        );
        // One write larger than the whole limit.
        assert_eq!(
            through(4, &[b"0123456789"]).await,
            (format!("0123\n{}", marker(4)), true)
        );
    }

    #[test]
    fn sizes_read_like_the_config() {
        assert_eq!(format_size(64 << 20), "64.0 MiB");
        assert_eq!(format_size(1 << 20), "1.0 MiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(3 << 30), "3.0 GiB");
        assert_eq!(format_size(100), "100 B");
    }
}
