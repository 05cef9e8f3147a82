//! The one error type of the client.

use reqwest::{Method, StatusCode};

/// What can go wrong with a call. Every variant that concerns a request names its method and
/// path, so a message printed as is says which call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client or a raw request could not be set up (a base URL that is not
    /// `http(s)://...`, a TLS backend that failed to start, a header that is not valid).
    #[error("client configuration: {0}")]
    Config(String),
    /// The request did not get an answer: connection refused or reset, timeout, a body that
    /// could not be read.
    #[error("{method} {path}: {}", chain(source))]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// The host answered with a status other than 2xx. `detail` is the `detail` of the house
    /// error shape `{"detail": "..."}`, or the raw body when the reply is not in that shape.
    #[error("{method} {path}: {status}: {detail}")]
    Http {
        method: Method,
        path: String,
        status: StatusCode,
        detail: String,
    },
    /// A 2xx reply whose body is not what the route answers with.
    #[error("{method} {path}: the reply is not {expected}: {reason}")]
    Decode {
        method: Method,
        path: String,
        /// The type that was expected, e.g. `Vec<TaskResponse>`.
        expected: String,
        reason: String,
    },
}

impl Error {
    /// The HTTP status of an [`Error::Http`], as a number.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(status.as_u16()),
            _ => None,
        }
    }

    /// The host's explanation of an [`Error::Http`].
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::Http { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

/// `reqwest::Error` alone says "error sending request"; its sources say why.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
