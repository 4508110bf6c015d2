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
        /// The server's id for this connection: the same after a resumed reconnect.
        connection_id: String,
        /// True when the server resumed the previous connection (same id; publishes
        /// in flight resent with their msg_serials). False for the first connection
        /// and when a resume was refused (the reason is logged); channels continue
        /// from their positions either way, or say `ContinuityLost`.
        resumed: bool,
        /// The URL connected to: the primary or a fallback.
        url: String,
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
