//! The frames exchanged on an edge ↔ log link.
//!
//! Channel names travel as plain strings and are parsed by the receiver, so one bad
//! name in a publish batch is refused on its own ([`Outcome::Rejected`]) instead of
//! failing the whole frame.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::Position;

/// One frame on a link stream. Each stream carries requests from the edge and the
/// log's answers to them; requests are matched to answers by `request_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Frame {
    /// Edge → log: append these messages. Answered by [`Frame::PublishResult`] (one
    /// outcome per message, in order, sent only once the outcomes are durable) or
    /// [`Frame::RequestFailed`].
    Publish {
        /// Chosen by the edge; echoed in the answer.
        request_id: u64,
        /// The messages, in the order they should be sequenced.
        messages: Vec<PublishMessage>,
    },
    /// Log → edge: the durable outcome of every message of a [`Frame::Publish`].
    PublishResult {
        /// The request answered.
        request_id: u64,
        /// One per message, in request order.
        outcomes: Vec<Outcome>,
    },
    /// Edge → log: read up to `limit` stored messages of `channel` from `from_serial` on.
    Read {
        /// Chosen by the edge; echoed in the answer.
        request_id: u64,
        /// The channel to read.
        channel: String,
        /// First serial wanted (inclusive).
        from_serial: u64,
        /// At most this many messages (the log may cap it).
        limit: u32,
    },
    /// Edge → log: read up to `limit` stored messages of `channel` from the first one
    /// stored at or after `since_ms` (milliseconds since the Unix epoch; the log's
    /// timestamps never decrease along a channel). Answered by [`Frame::ReadResult`]
    /// (no messages when nothing was stored since) or [`Frame::RequestFailed`];
    /// later pages are plain [`Frame::Read`]s.
    ReadSince {
        /// Chosen by the edge; echoed in the answer.
        request_id: u64,
        /// The channel to read.
        channel: String,
        /// The point in time.
        since_ms: u64,
        /// At most this many messages (the log may cap it).
        limit: u32,
    },
    /// Log → edge: the answer to [`Frame::Read`] or [`Frame::ReadSince`].
    ReadResult {
        /// The request answered.
        request_id: u64,
        /// The channel read.
        channel: String,
        /// The messages, in serial order.
        messages: Vec<StoredMessage>,
        /// The first serial still stored for the channel, if any (retention may have
        /// removed older ones).
        first_serial: Option<u64>,
        /// True when more durable messages follow the last one sent (the answer was
        /// cut at the limit or at the frame size): read again after it.
        more: bool,
        /// The channel's last durable position when it was read (`None`: nothing
        /// stored yet). A read from past it answers just this and `first_serial`.
        last: Option<Position>,
    },
    /// Log → edge: a request could not be carried out at all.
    RequestFailed {
        /// The request that failed.
        request_id: u64,
        /// Why.
        error: WireError,
    },
    /// Edge → log: send the stored messages of `channel` that `from` selects, then
    /// keep sending new ones as they become durable. Answered by
    /// [`Frame::Subscribed`].
    Subscribe {
        /// The channel to follow.
        channel: String,
        /// Where delivery starts.
        from: SubscribeFrom,
    },
    /// Log → edge: the subscription is in place; messages follow from `next_serial`.
    ///
    /// Also sent again mid-stream, with [`Continuity::Lost`], when retention removed
    /// messages before they could be replayed; `previous` then names the (removed)
    /// message right before the new `next_serial`.
    Subscribed {
        /// The channel subscribed to.
        channel: String,
        /// The serial of the next message this stream will deliver.
        next_serial: u64,
        /// The position the log assigned to serial `next_serial - 1`, even if
        /// retention removed that message since. `None` only when `next_serial` is
        /// 1 (nothing came before).
        /// An edge following from [`SubscribeFrom::Latest`] uses it as the position
        /// it has "already delivered".
        previous: Option<Position>,
        /// The channel's last durable position when the subscription took effect
        /// (`None`: nothing stored yet). Delivered up to there, the subscriber has
        /// caught up with what the channel held when it subscribed.
        last: Option<Position>,
        /// Whether the starting point asked for could be honoured exactly (always
        /// [`Continuity::Kept`] for [`SubscribeFrom::Start`] and
        /// [`SubscribeFrom::Latest`]).
        continuity: Continuity,
    },
    /// Edge → log: stop following `channel`.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Log → edge: `channel` is no longer followed; nothing more will arrive for it.
    Unsubscribed {
        /// The channel.
        channel: String,
    },
    /// Log → edge: durable messages of one subscribed channel, in serial order,
    /// contiguous with what this stream sent before.
    Messages {
        /// The channel.
        channel: String,
        /// The messages.
        messages: Vec<StoredMessage>,
    },
    /// Either way: are you there?
    Ping {
        /// Echoed in the [`Frame::Pong`].
        nonce: u64,
    },
    /// Either way: the answer to [`Frame::Ping`].
    Pong {
        /// The nonce of the ping.
        nonce: u64,
    },
    /// Either way: something went wrong outside any one request. When `fatal`, the
    /// sender closes the stream after this frame.
    Error(WireError),
}

impl Frame {
    /// The name of the frame's kind, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Publish { .. } => "Publish",
            Frame::PublishResult { .. } => "PublishResult",
            Frame::Read { .. } => "Read",
            Frame::ReadSince { .. } => "ReadSince",
            Frame::ReadResult { .. } => "ReadResult",
            Frame::RequestFailed { .. } => "RequestFailed",
            Frame::Subscribe { .. } => "Subscribe",
            Frame::Subscribed { .. } => "Subscribed",
            Frame::Unsubscribe { .. } => "Unsubscribe",
            Frame::Unsubscribed { .. } => "Unsubscribed",
            Frame::Messages { .. } => "Messages",
            Frame::Ping { .. } => "Ping",
            Frame::Pong { .. } => "Pong",
            Frame::Error(_) => "Error",
        }
    }
}

/// A message to append.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishMessage {
    /// The channel (parsed by the log).
    pub channel: String,
    /// The idempotency key: the client's message id, else `connection-id:msg-serial`.
    pub idempotency_key: Bytes,
    /// Opaque headers, stored and delivered as given.
    pub headers: Vec<(String, String)>,
    /// The message body.
    pub payload: Bytes,
}

/// A durable message as the log delivers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Its position in its channel.
    pub position: Position,
    /// When the log stored it, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The idempotency key it was published with.
    pub idempotency_key: Bytes,
    /// Headers as published.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Bytes,
}

/// The durable outcome of one published message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Stored at this position.
    Appended(Position),
    /// The idempotency key was seen inside the dedupe window; the original position.
    Duplicate(Position),
    /// Not stored, and storing it again will fail the same way.
    Rejected(WireError),
}

/// Where a subscription starts delivering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubscribeFrom {
    /// From the first message the log still stores (older ones may have been removed
    /// by retention).
    Start,
    /// Right after this position, which the edge already has. If the log cannot
    /// continue exactly from it, the answer says [`Continuity::Lost`] and where
    /// delivery starts instead.
    After(Position),
    /// Only messages that become durable after the subscription is in place: nothing
    /// stored before is replayed. [`Frame::Subscribed`]'s `previous` names the last
    /// stored message at that moment.
    Latest,
}

impl From<Option<Position>> for SubscribeFrom {
    /// `None` is [`SubscribeFrom::Start`], `Some(p)` is [`SubscribeFrom::After`]:
    /// "everything after what I have".
    fn from(after: Option<Position>) -> Self {
        after.map_or(SubscribeFrom::Start, SubscribeFrom::After)
    }
}

/// How a subscription's starting point relates to what the edge asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Continuity {
    /// Delivery continues right after the requested position.
    Kept,
    /// The requested position cannot be continued from (retention removed messages
    /// after it, or it belongs to a history that a new epoch replaced); delivery
    /// starts at `next_serial` instead.
    Lost {
        /// Why, for people.
        reason: String,
    },
}

/// An error as it travels on the link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct WireError {
    /// What kind of error, for programs.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
    /// Whether sending the same request later may succeed.
    pub retryable: bool,
    /// When set, the sender closes the stream after this error.
    pub fatal: bool,
}

/// Stable error codes of the link protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A frame could not be decoded (bad length, bad body, unknown kind).
    MalformedFrame,
    /// A frame is larger than the receiver accepts.
    FrameTooLarge,
    /// The frame's protocol version is not spoken here.
    UnsupportedVersion,
    /// A channel name is not valid.
    InvalidChannel,
    /// A message is larger than the log accepts, or has too many headers.
    MessageTooLarge,
    /// An idempotency key is empty or too long.
    InvalidKey,
    /// The log could not write (disk full, file size limit): nothing of the request
    /// was stored; retry later or elsewhere.
    StorageFull,
    /// The log's storage failed; the node needs attention.
    StorageFailed,
    /// The subscriber fell too far behind and was dropped; resubscribe from the last
    /// delivered position.
    SlowConsumer,
    /// Too many requests in flight on this stream.
    TooManyRequests,
    /// The log is shutting down.
    ShuttingDown,
    /// A bug or unexpected condition inside the log.
    Internal,
}

impl WireError {
    /// An error for the whole stream (`fatal`) or one request.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let retryable = matches!(
            code,
            ErrorCode::StorageFull
                | ErrorCode::SlowConsumer
                | ErrorCode::TooManyRequests
                | ErrorCode::ShuttingDown
                | ErrorCode::Internal
        );
        Self {
            code,
            message: message.into(),
            retryable,
            fatal: false,
        }
    }

    /// Marks the error as closing the stream.
    pub fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Epoch, Serial};

    #[test]
    fn an_optional_position_means_start_or_after() {
        let p = Position {
            epoch: Epoch(4),
            serial: Serial::FIRST,
        };
        assert_eq!(SubscribeFrom::from(None), SubscribeFrom::Start);
        assert_eq!(SubscribeFrom::from(Some(p)), SubscribeFrom::After(p));
    }
}
