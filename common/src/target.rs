//! Target syntax of `/api/submit`: `hostname` or `hostname:numa`. The CLI-only GPU suffix
//! `::g1,g2` is refused here with a message saying where GPUs go instead.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub hostname: String,
    pub numa_node: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("target is empty")]
    Empty,
    #[error("target {0:?}: the hostname is empty")]
    EmptyHostname(String),
    #[error("target {0:?}: GPU indices go in required_gpus, not in the target")]
    GpuSuffix(String),
    #[error("target {0:?}: the NUMA node after ':' must be a non-negative integer")]
    BadNuma(String),
    #[error("target {0:?}: expected hostname or hostname:numa_id")]
    TooManyParts(String),
    #[error("target {0:?}: the hostname may contain only letters, digits, '.', '-' and '_'")]
    BadHostname(String),
}

impl Target {
    pub fn parse(raw: &str) -> Result<Target, TargetError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if s.contains("::") {
            return Err(TargetError::GpuSuffix(raw.to_string()));
        }
        let mut parts = s.split(':');
        let host = parts.next().unwrap_or_default();
        let numa = parts.next();
        if parts.next().is_some() {
            return Err(TargetError::TooManyParts(raw.to_string()));
        }
        if host.is_empty() {
            return Err(TargetError::EmptyHostname(raw.to_string()));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(TargetError::BadHostname(raw.to_string()));
        }
        let numa_node = match numa {
            None => None,
            Some(n) => Some(
                n.parse::<u32>()
                    .map_err(|_| TargetError::BadNuma(raw.to_string()))?,
            ),
        };
        Ok(Target {
            hostname: host.to_string(),
            numa_node,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.numa_node {
            Some(n) => write!(f, "{}:{}", self.hostname, n),
            None => f.write_str(&self.hostname),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_numa_targets() {
        assert_eq!(
            Target::parse("node-1").unwrap(),
            Target {
                hostname: "node-1".into(),
                numa_node: None
            }
        );
        assert_eq!(
            Target::parse(" gpu.lab:1 ").unwrap(),
            Target {
                hostname: "gpu.lab".into(),
                numa_node: Some(1)
            }
        );
        assert_eq!(Target::parse("a:0").unwrap().to_string(), "a:0");
    }

    #[test]
    fn malformed_targets_are_refused_with_a_reason() {
        assert_eq!(Target::parse(""), Err(TargetError::Empty));
        assert_eq!(
            Target::parse(":1"),
            Err(TargetError::EmptyHostname(":1".into()))
        );
        assert_eq!(
            Target::parse("a::0,1"),
            Err(TargetError::GpuSuffix("a::0,1".into()))
        );
        assert_eq!(
            Target::parse("a:x"),
            Err(TargetError::BadNuma("a:x".into()))
        );
        assert_eq!(
            Target::parse("a:-1"),
            Err(TargetError::BadNuma("a:-1".into()))
        );
        assert_eq!(
            Target::parse("a:1:2"),
            Err(TargetError::TooManyParts("a:1:2".into()))
        );
        assert_eq!(
            Target::parse("a b"),
            Err(TargetError::BadHostname("a b".into()))
        );
    }
}
