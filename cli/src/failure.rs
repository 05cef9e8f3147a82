//! Why a command failed, how that is said, and the exit code it maps to.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (with `--wait`: the task completed with exit code 0) |
//! | 1 | the host refused or the operation failed (with `--wait`: the task's own non-zero exit code, or 1 when it failed without one) |
//! | 2 | usage: a bad flag or argument, found before anything was sent |
//! | 3 | not found: no such task, VPS, node, user, file |
//! | 4 | not signed in, or not allowed |
//! | 5 | the host cannot be reached |

use ferry_client::Error as ClientError;

pub const OK: i32 = 0;
pub const FAILED: i32 = 1;
pub const USAGE: i32 = 2;
pub const NOT_FOUND: i32 = 3;
pub const AUTH: i32 = 4;
pub const UNREACHABLE: i32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A bad argument noticed after clap's own checks.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Auth(String),
    #[error("cannot reach ferry-host at {host}: is it running? ({reason})")]
    Unreachable { host: String, reason: String },
    /// Anything else that went wrong, said as is.
    #[error("{0}")]
    Failed(String),
    /// A waited-for task ended without success: exit with its code, message already printed.
    #[error("{message}")]
    Task { code: i32, message: String },
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) => USAGE,
            Failure::NotFound(_) => NOT_FOUND,
            Failure::Auth(_) => AUTH,
            Failure::Unreachable { .. } => UNREACHABLE,
            Failure::Failed(_) => FAILED,
            Failure::Task { code, .. } => *code,
        }
    }

    /// A client error, said for a person: what happened and what to do.
    pub fn from_client(host: &str, e: ClientError) -> Failure {
        match &e {
            ClientError::Transport { source, .. } if source.is_timeout() => Failure::Failed(format!(
                "{host} did not answer in time ({}); it may still be doing it: check with a list or status command",
                chain(source)
            )),
            ClientError::Transport { source, .. } => Failure::Unreachable {
                host: host.to_string(),
                reason: chain(source),
            },
            ClientError::Http { status, detail, .. } => match status.as_u16() {
                401 => Failure::Auth(format!(
                    "401: {detail}: run `ferry login` (or set FERRY_TOKEN)"
                )),
                403 => Failure::Auth(format!("403: {detail}")),
                404 => Failure::NotFound(format!("404: {detail}")),
                code => Failure::Failed(format!("{code}: {detail}")),
            },
            ClientError::Config(m) => Failure::Usage(m.clone()),
            ClientError::Decode { .. } => Failure::Failed(format!(
                "{e} (is {host} a ferry-host of a matching version?)"
            )),
        }
    }
}

pub type CliResult<T = ()> = Result<T, Failure>;

/// An error and its sources in one line (reqwest's own says only "error sending request").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_client::{Method, StatusCode};

    fn http(code: u16, detail: &str) -> ClientError {
        ClientError::Http {
            method: Method::GET,
            path: "/api/x".into(),
            status: StatusCode::from_u16(code).expect("status"),
            detail: detail.into(),
        }
    }

    #[test]
    fn statuses_map_to_documented_exit_codes() {
        let h = "http://h:8000";
        let f = Failure::from_client(h, http(401, "Not authenticated"));
        assert_eq!(f.exit_code(), AUTH);
        assert!(f.to_string().contains("ferry login"), "{f}");
        assert_eq!(Failure::from_client(h, http(403, "no")).exit_code(), AUTH);
        assert_eq!(
            Failure::from_client(h, http(404, "Task not found.")).exit_code(),
            NOT_FOUND
        );
        let f = Failure::from_client(h, http(409, "already paused"));
        assert_eq!(
            (f.exit_code(), f.to_string().as_str()),
            (FAILED, "409: already paused")
        );
    }
}
