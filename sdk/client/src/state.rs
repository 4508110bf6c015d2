//! The connection's state, as the application sees it.

use std::time::Duration;

use crate::error::ClientError;

/// Where the client's connection stands; watch it with
/// [`Client::state`](crate::Client::state).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Opening a connection (the first, or a reconnect after a backoff).
    Connecting,
    /// CONNECTED: channels are (being) re-attached and publishes flow.
    Connected {
        /// The server's id for this connection (a new one after every reconnect).
        connection_id: String,
    },
    /// The connection broke; the next attempt starts after `retry_in`.
    Reconnecting {
        /// Attempts since the last successful connection.
        attempt: u32,
        /// Why the connection broke or the last attempt failed.
        error: String,
        /// The backoff before the next attempt.
        retry_in: Duration,
    },
    /// Stopped for good: closed by the application (`error` is `None`), refused by
    /// the server, or the first connection failed.
    Closed {
        /// Why, when it was not the application's choice.
        error: Option<ClientError>,
    },
}
