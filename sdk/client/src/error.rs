//! The client's errors: one enum for the connection and channels, one for publishes.

use std::time::Duration;

use tern_protocol::{ErrorCode, ErrorInfo};

/// Why connecting, attaching or the connection as a whole failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is unusable (the application's fault; retrying is pointless).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The first connection could not be opened or broke before CONNECTED (network,
    /// wrong address, not a Tern edge). Later breaks are retried automatically.
    #[error("could not connect: {0}")]
    Transport(String),
    /// The server refused a request (a DETACHED with an error for an ATTACH, or a
    /// DISCONNECTED answering CONNECT).
    #[error("refused by the server: {0}")]
    Refused(ErrorInfo),
    /// The server ended the session and said not to reconnect (`reconnect: never`).
    #[error("disconnected by the server: {0}")]
    Disconnected(ErrorInfo),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The channel is already attached by this client; detach it (or drop its
    /// stream) first.
    #[error("channel {0:?} is already attached by this client")]
    AlreadyAttached(String),
    /// The client was closed (by [`crate::Client::close`] or because it stopped
    /// after a fatal error).
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// The protocol error code behind this error, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused(info) | ClientError::Disconnected(info) => Some(info.code),
            _ => None,
        }
    }
}

/// Why a publish did not resolve to positions.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The client refused the publish before sending it (invalid channel name, no
    /// messages, too many publishes waiting); the code says which, as the server
    /// would have.
    #[error("publish refused by the client: {0}")]
    Invalid(ErrorInfo),
    /// The server answered NACK: nothing was stored, unless the code says the outcome
    /// is unknown (`LogTimeout`) or the log rejected only some messages
    /// (`LogRejected`); publishing the same messages again is safe either way when
    /// they carry ids.
    #[error("publish refused by the server: {0}")]
    Nack(ErrorInfo),
    /// No answer within the request timeout; the messages may or may not be stored.
    #[error("no answer to the publish within {0:?}; the messages may or may not be stored")]
    Timeout(Duration),
    /// The client closed (or stopped for good) before the publish was answered; the
    /// messages may or may not be stored.
    #[error("publish not answered: {0}")]
    Closed(ClientError),
}

impl PublishError {
    /// The protocol error code, when there is one (always for `Invalid` and `Nack`).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            PublishError::Invalid(info) | PublishError::Nack(info) => Some(info.code),
            PublishError::Closed(error) => error.code(),
            PublishError::Timeout(_) => None,
        }
    }

    /// Whether publishing the same messages again may succeed (timeouts included:
    /// the message ids make a retry safe).
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::Invalid(info) | PublishError::Nack(info) => info.retryable,
            PublishError::Timeout(_) => true,
            PublishError::Closed(_) => false,
        }
    }
}
