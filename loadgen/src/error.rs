//! Error types, one enum per layer: [`ClientError`] for what one simulated user's
//! connection ran into (counted by kind, never fatal to a run), [`LoadgenError`] for
//! what stops the load generator itself (a one-line message and a non-zero exit).

use std::io;

/// What one user's connection ran into. Counted by [`ClientError::kind`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("http: {0}")]
    Io(#[source] io::Error),
    #[error("status {status} for {path}")]
    Status { status: u16, path: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("websocket: {0}")]
    Ws(String),
    #[error("sse: {0}")]
    Sse(String),
    #[error("connection closed by the server")]
    Closed,
    #[error("no answer in time")]
    Timeout,
}

impl ClientError {
    /// An unexpected `status` for a request to `path`, named without its query.
    pub fn status(status: u16, path: &str) -> ClientError {
        ClientError::Status {
            status,
            path: path.split('?').next().unwrap_or(path).to_owned(),
        }
    }

    /// A short stable name for the error counts in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect(_) => "connect",
            ClientError::Http(_) | ClientError::Io(_) => "http",
            ClientError::Status { .. } => "status",
            ClientError::Protocol(_) => "protocol",
            ClientError::Ws(_) => "websocket",
            ClientError::Sse(_) => "sse",
            ClientError::Closed => "closed",
            ClientError::Timeout => "timeout",
        }
    }
}

/// What stops the load generator.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("bad flag: {0}")]
    BadFlag(String),
    #[error("target {target} is unreachable: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("target {target} does not speak the lab protocol: {reason}")]
    NotLab { target: String, reason: String },
    #[error("target {target} refuses the run: {reason}")]
    Refused { target: String, reason: String },
    #[error("nothing was measured: {0}")]
    NothingMeasured(String),
    #[error("{0}")]
    SomeRunsFailed(String),
    #[error("server process: {0}")]
    Server(String),
    #[error("worker thread: {0}")]
    Worker(String),
    // The OS error is part of the message, not a source as well: printed with its
    // chain (`{:#}`), it would be said twice.
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl LoadgenError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> LoadgenError {
        let context = context.into();
        move |error| LoadgenError::Io { context, error }
    }
}
