//! Timestamps: stored as milliseconds since the Unix epoch, written as RFC 3339 in UTC with an
//! explicit `+00:00` offset (the original's zone-less local times are ambiguous across machines;
//! Python's `datetime.fromisoformat` reads this form since 3.7).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-02-10T12:34:56.789+00:00`.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let s = humantime::format_rfc3339_millis(t).to_string();
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}+00:00"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_with_offset() {
        assert_eq!(super::format_ms(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(
            super::format_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123+00:00"
        );
    }
}

/// Reads a timestamp written by [`format_ms`] (or any RFC 3339 UTC time ending in `Z`).
pub fn parse_ms(s: &str) -> Option<i64> {
    let t = s.trim();
    let zulu = match t.strip_suffix("+00:00") {
        Some(base) => format!("{base}Z"),
        None => t.to_string(),
    };
    let st = humantime::parse_rfc3339_weak(zulu.trim_end_matches('Z')).ok()?;
    st.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

#[cfg(test)]
mod parse_tests {
    #[test]
    fn round_trips() {
        let ms = 1_700_000_000_123;
        assert_eq!(super::parse_ms(&super::format_ms(ms)), Some(ms));
        assert_eq!(
            super::parse_ms("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(super::parse_ms("yesterday"), None);
    }
}
