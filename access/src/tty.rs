//! The seam between the terminal and whatever opens a TTY: a session's output, input and the
//! handle that resizes and ends it.

use futures_util::future::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    /// The container engine refused or failed (its message).
    #[error("{0}")]
    Engine(String),
    /// None of the shells asked for exists in the container.
    #[error("no shell in the container (tried {0})")]
    NoShell(String),
}

/// An interactive shell on a TTY inside a running container.
pub struct TtySession {
    pub output: futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    pub control: Box<dyn TtyControl>,
}

/// Resizing and ending a [`TtySession`].
pub trait TtyControl: Send + Sync {
    fn resize(&self, rows: u16, cols: u16) -> BoxFuture<'_, Result<(), TtyError>>;
    /// Ends the shell and everything it started (hang-up, then kill).
    fn close(&self) -> BoxFuture<'_, ()>;
}
