//! One module per noun of the command line; each defines its clap arguments and runs them.

pub mod admin;
pub mod auth;
pub mod connect;
pub mod env;
pub mod files;
pub mod forward;
pub mod node;
pub mod ssh;
pub mod task;
pub mod vps;

/// A duration as people write it (`90`, `90s`, `15m`, `1h30m`, `2d`), in whole seconds.
pub fn seconds(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return if n >= 0 {
            Ok(n)
        } else {
            Err(format!("'{s}' is negative"))
        };
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 90s, 15m or 1h30m: {e}"))
        .and_then(|d| i64::try_from(d.as_secs()).map_err(|_| format!("'{s}' is too long")))
}

/// Bytes as people write them (`512M`, `4G`, `1.5GiB`, `1000000`); `G` means GiB, as
/// Docker's `-m` reads it.
pub fn memory(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    // Docker's habit: a bare K/M/G/T suffix is binary.
    let normalised = match upper.strip_suffix('B').unwrap_or(&upper) {
        u if u.ends_with(['K', 'M', 'G', 'T']) && !u.ends_with("IB") => format!("{u}iB"),
        u => u.to_string(),
    };
    let n = normalised
        .parse::<bytesize::ByteSize>()
        .map_err(|_| format!("'{t}' is not a size like 512M or 4G"))?;
    i64::try_from(n.as_u64()).map_err(|_| format!("'{t}' is too large"))
}

/// `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        assert_eq!(seconds("90"), Ok(90));
        assert_eq!(seconds("1h30m"), Ok(5400));
        assert_eq!(seconds("2d"), Ok(172800));
        assert!(seconds("soon").is_err());
        assert!(seconds("-3").is_err());
        assert_eq!(memory("4G"), Ok(4 << 30));
        assert_eq!(memory("512m"), Ok(512 << 20));
        assert_eq!(memory("1.5GiB"), Ok(3 << 29));
        assert_eq!(memory("1000000"), Ok(1_000_000));
        assert!(memory("lots").is_err());
        assert_eq!(key_value("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(key_value("=x").is_err());
    }
}
