//! Error codes: numeric, stable, documented in `docs/protocol.md`.
//!
//! A code is five digits; its first three are the HTTP status the REST API answers
//! with (`40300` → 403). Codes are never reused or renumbered: a client may match on
//! them. New codes may appear in later versions; a client that does not know a code
//! treats it by its HTTP class (4xx: fix the request, 5xx: retry later) and by the
//! `retryable` flag that travels with it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, $retryable:literal; )*) => {
        /// A protocol error code. Unknown codes received from a newer server are kept
        /// as [`ErrorCode::Other`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
            /// A code this version does not know.
            Other(u32),
        }

        impl ErrorCode {
            /// Every code this version knows, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The numeric value on the wire.
            pub fn as_u32(self) -> u32 {
                match self {
                    $( ErrorCode::$name => $value, )*
                    ErrorCode::Other(value) => value,
                }
            }

            /// The code for a numeric value.
            pub fn from_u32(value: u32) -> Self {
                match value {
                    $( $value => ErrorCode::$name, )*
                    other => ErrorCode::Other(other),
                }
            }

            /// Whether the same request may succeed later, unchanged.
            pub fn is_retryable(self) -> bool {
                match self {
                    $( ErrorCode::$name => $retryable, )*
                    ErrorCode::Other(value) => value >= 50000,
                }
            }

            /// The code's name as written in `docs/protocol.md`.
            pub fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => stringify!($name), )*
                    ErrorCode::Other(_) => "Other",
                }
            }
        }
    };
}

error_codes! {
    /// A WebSocket message or HTTP body that is not valid JSON / MessagePack, or a
    /// frame missing a field or carrying one of the wrong type.
    Malformed = 40000, false;
    /// A frame whose `type` this server does not know.
    UnknownFrame = 40001, false;
    /// A channel name that is empty, longer than 255 bytes, holds control or
    /// whitespace characters, or names a system channel (`$…`).
    InvalidChannel = 40002, false;
    /// A field value out of its range (both `from` and `rewind` in one ATTACH, an
    /// empty PUBLISH, a message id longer than 255 bytes, a bad query parameter).
    InvalidValue = 40003, false;
    /// CONNECT on a connection that is already connected.
    AlreadyConnected = 40004, false;
    /// A frame other than CONNECT, HEARTBEAT or CLOSE before CONNECT.
    NotConnected = 40005, false;
    /// PUBLISH to, or DETACH from, a channel this connection has not attached for
    /// that purpose (publishing does not require attaching; see docs).
    NotAttached = 40006, false;
    /// A WebSocket message or HTTP body larger than the `max_frame_bytes` limit.
    FrameTooLarge = 40009, false;
    /// One message larger than the `max_message_bytes` limit.
    MessageTooLarge = 40010, false;
    /// More messages in one PUBLISH than `max_messages_per_publish`.
    TooManyMessages = 40011, false;
    /// More attached channels than `max_channels_per_connection`.
    TooManyChannels = 40012, false;
    /// More unacknowledged PUBLISH frames than `max_inflight_publishes`.
    TooManyInflight = 40013, true;
    /// No API key (or token) given.
    Unauthorized = 40100, false;
    /// The key's id is unknown or its secret is wrong.
    InvalidCredentials = 40101, false;
    /// The key's capabilities do not allow this operation on this channel.
    Forbidden = 40300, false;
    /// No such HTTP route.
    NotFound = 40400, false;
    /// The HTTP route exists but not with this method.
    MethodNotAllowed = 40500, false;
    /// A message function bound to the channel rejected the message; the error's
    /// message is the function's reason. Nothing of the PUBLISH was stored.
    FunctionRejected = 42200, false;
    /// A message function bound to the channel with the `fail-closed` policy failed on
    /// the message (trapped, ran out of time or memory, or answered wrongly). Nothing
    /// of the PUBLISH was stored.
    FunctionFailed = 50010, false;
    /// The position an ATTACH asked to continue from cannot be continued from
    /// (retention removed what followed it, or its epoch was replaced); delivery
    /// continues from the position given with this error instead. Carried in
    /// ATTACHED's `error`, never silently.
    ContinuityLost = 41000, false;
    /// CONNECT's `resume` could not be honoured: the connection key is not one this
    /// cluster signed, expired (the state TTL passed since the drop), or belongs to
    /// another API key or client id. Carried in CONNECTED's `error`; the session is
    /// new, with a new connection id (channels in CONNECT are attached all the same).
    ResumeFailed = 41001, false;
    /// The client sent nothing (not even a HEARTBEAT) for longer than the idle
    /// timeout, or did not CONNECT in time.
    IdleTimeout = 40800, true;
    /// The server has too many connections.
    TooManyConnections = 42900, true;
    /// The connection's outbound queue exceeded its byte budget: the client read too
    /// slowly. Nothing is lost: re-attach from the last position received.
    SlowConsumer = 42910, true;
    /// A bug in the server.
    Internal = 50000, true;
    /// The channel's log node cannot be reached; nothing was stored.
    LogUnavailable = 50300, true;
    /// The edge is shutting down; reconnect (to another edge).
    ShuttingDown = 50301, true;
    /// The log did not answer in time: the message may or may not be stored. Retrying
    /// with the same message id (or msg-serial on a resumed connection) is safe.
    LogTimeout = 50400, true;
    /// The log refused to store the message (for example, its disk is full).
    LogRejected = 50700, true;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_u32(), self.name())
    }
}

impl ErrorCode {
    /// The HTTP status the REST API answers with for this code.
    pub fn http_status(self) -> u16 {
        u16::try_from(self.as_u32() / 100)
            .ok()
            .filter(|status| (400..600).contains(status))
            .unwrap_or(500)
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.as_u32())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u32::deserialize(deserializer).map(ErrorCode::from_u32)
    }
}

/// An error as it travels to a client: in ERROR, NACK, DETACHED, DISCONNECTED and
/// CONNECTED frames and in REST error bodies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorInfo {
    /// What kind of error, for programs.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
    /// Whether sending the same request later may succeed.
    pub retryable: bool,
}

impl ErrorInfo {
    /// An error with `code`'s retryability.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retryable: code.is_retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.as_u32()), "{code} twice");
            assert_eq!(ErrorCode::from_u32(code.as_u32()), code);
            assert!((400..600).contains(&code.http_status()), "{code}");
        }
        assert_eq!(ErrorCode::from_u32(49999), ErrorCode::Other(49999));
        assert!(ErrorCode::Other(50999).is_retryable());
        assert_eq!(ErrorCode::Forbidden.http_status(), 403);
    }

    /// `docs/protocol.md` §11 has one row `| code | Name | Retryable | …` per code,
    /// and no row for a code this crate does not know.
    #[test]
    fn every_code_is_documented() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
        let doc = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
        let rows: Vec<(u32, &str, &str)> = doc
            .lines()
            .filter_map(|line| {
                let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
                let code = cells.next()?;
                if code.len() != 5 {
                    return None;
                }
                let code = code.parse().ok()?;
                Some((code, cells.next()?, cells.next()?))
            })
            .collect();
        for &code in ErrorCode::ALL {
            let retryable = if code.is_retryable() { "yes" } else { "no" };
            assert!(
                rows.contains(&(code.as_u32(), code.name(), retryable)),
                "docs/protocol.md has no row `| {} | {} | {retryable} |`",
                code.as_u32(),
                code.name()
            );
        }
        for (code, name, _) in &rows {
            assert_eq!(
                ErrorCode::from_u32(*code).name(),
                *name,
                "docs/protocol.md documents code {code} as {name}"
            );
        }
        assert_eq!(rows.len(), ErrorCode::ALL.len(), "one row per code");
    }
}
