//! Environment names and tarball names, the same on host and runner: an environment `<env>`
//! is the image `kohakuriver/<env>:base` and the tarballs `<env>-<unix seconds>.tar`, as the
//! original names them.

/// Where a runner fetches an environment's tarball from the host (`{RUNNER_TARBALL_PATH}/<env>`,
/// `?timestamp=` for one version; `HEAD` for the newest's headers).
pub const RUNNER_TARBALL_PATH: &str = "/api/runner/environments";
/// Header of a tarball download: its SHA-256 as the host recorded it (hex).
pub const HEADER_SHA256: &str = "x-ferry-sha256";
/// Header of a tarball download: its number (Unix seconds).
pub const HEADER_TIMESTAMP: &str = "x-ferry-timestamp";

/// Longest environment name (Docker allows more; a tarball name carries it too).
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` is an environment name: lower-case letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit, never `..`, so it is a valid container and image name
/// and a safe file name.
pub fn is_valid_name(name: &str) -> bool {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && ok_chars
        && starts_well
        && !name.contains("..")
}

pub fn tarball_name(env: &str, timestamp: i64) -> String {
    format!("{env}-{timestamp}.tar")
}

/// `<env>-<10 or more digits>.tar` -> (env, timestamp).
pub fn parse_tarball_name(name: &str) -> Option<(String, i64)> {
    let stem = name.strip_suffix(".tar")?;
    let (env, digits) = stem.rsplit_once('-')?;
    if env.is_empty() || digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((env.to_string(), digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarball_names_are_the_originals_and_nothing_else() {
        assert_eq!(
            parse_tarball_name("my-env-1733200000.tar"),
            Some(("my-env".into(), 1733200000))
        );
        for bad in [
            "env-123.tar",
            "env-1733200000.tar.sha256",
            ".env-1733200000.tar.partial",
            "-1733200000.tar",
            "env-17332000x0.tar",
            "env.tar",
        ] {
            assert_eq!(parse_tarball_name(bad), None, "{bad}");
        }
        assert_eq!(tarball_name("a", 1733200000), "a-1733200000.tar");
    }
}
