//! Human units in configuration and requests: sizes (`512M`, `4G`, `1.5GiB`, plain bytes) and
//! durations (`500ms`, `5s`, `2m`). Sizes use binary multiples for the short forms (`4G` =
//! 4 GiB), as Docker's `--memory` does.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("{0:?} is not a size (examples: 512M, 4G, 1048576)")]
    Size(String),
    #[error("{0:?} is not a duration (examples: 500ms, 5s, 2m)")]
    Duration(String),
}

/// Parses a byte size. Short suffixes (`K`, `M`, `G`, `T`) are binary; `KB`/`MB` are decimal and
/// `KiB`/`MiB` binary, as in the bytesize crate.
pub fn parse_size(raw: &str) -> Result<u64, UnitError> {
    let s = raw.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    let short = ["K", "M", "G", "T"];
    let normalised = match short.iter().find(|u| upper.ends_with(*u)) {
        Some(u) => format!("{}{}iB", &s[..s.len() - 1], u),
        None => s.to_string(),
    };
    normalised
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| UnitError::Size(raw.to_string()))
}

pub fn parse_duration(raw: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(raw.trim()).map_err(|_| UnitError::Duration(raw.to_string()))
}

/// A duration in its largest whole unit (`90days`, `720h` as `30days`, `15s`, `500ms`), so
/// printed configs read as they are written; mixed ones fall back to humantime's form.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("days", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{ms}ms");
    }
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        for (d, text) in [
            (Duration::from_secs(90 * 86_400), "90days"),
            (Duration::from_secs(720 * 3600), "30days"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text} reads back");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-5M").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5").is_err());
    }
}
