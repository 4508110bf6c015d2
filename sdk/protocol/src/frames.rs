//! Every frame of protocol v1, client → server ([`ClientFrame`]) and server → client
//! ([`ServerFrame`]).
//!
//! On the wire a frame is a map whose `type` field names it (`"PUBLISH"`); the other
//! fields are those of the struct below, in snake_case. Optional fields may be left
//! out; unknown fields are ignored so that later versions can add fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ErrorInfo;
use crate::message::{Message, Position};
use crate::rewind::Rewind;

/// A frame sent by a client.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ClientFrame {
    /// Opens the session; must be the first frame (only HEARTBEAT and CLOSE are
    /// accepted before it).
    Connect(Connect),
    /// Subscribe to a channel.
    Attach(Attach),
    /// Stop receiving a channel.
    Detach(Detach),
    /// Publish messages to a channel.
    Publish(Publish),
    /// Liveness; answered with a HEARTBEAT carrying the same `id`.
    Heartbeat(Heartbeat),
    /// End the session; answered with CLOSED.
    Close(Close),
}

/// A frame sent by the server.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ServerFrame {
    /// The session is open.
    Connected(Connected),
    /// A channel is attached; MESSAGE frames follow.
    Attached(Attached),
    /// A channel is detached (asked for, or refused / ended with an error).
    Detached(Detached),
    /// One message of an attached channel.
    Message(MessageFrame),
    /// A PUBLISH is durable.
    Ack(Ack),
    /// A PUBLISH was not stored.
    Nack(Nack),
    /// Liveness.
    Heartbeat(Heartbeat),
    /// An error that ends nothing by itself.
    Error(ErrorFrame),
    /// The server ends the session; the transport closes after this frame.
    Disconnected(Disconnected),
    /// The answer to CLOSE; the transport closes after this frame.
    Closed(Closed),
}

/// CONNECT: authenticate and open the session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Connect {
    /// An API key, `app.keyid:secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A token instead of a key (reserved; servers of this version refuse it with
    /// `InvalidCredentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// An identity the application gives this client; stamped on its messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The latest connection key of an earlier connection (from its CONNECTED, or
    /// the newest HEARTBEAT that carried one), to resume it on any edge within
    /// `state_ttl_ms` of the drop: the new session takes over its connection id, so
    /// PUBLISH frames resent with their original `msg_serial` are stored once.
    /// CONNECTED says whether it was honoured (`resumed`, else `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// Channels to attach at once, each continuing right after the position given
    /// (the last one the client received, or its ATTACHED `position`): the same as
    /// one ATTACH with `from` per channel, answered by one ATTACHED each after
    /// CONNECTED. Usually sent with `resume`, but honoured without it too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, Position>,
    /// The heartbeat interval the client would like, both ways (long to save a
    /// phone's battery, short to notice a dead connection sooner). The server picks
    /// the nearest value it allows and answers it in CONNECTED's
    /// `heartbeat_interval_ms`, with `idle_timeout_ms` scaled to match. Without it,
    /// the server's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
}

/// ATTACH: start receiving a channel's messages.
///
/// Without `from` or `rewind`, delivery starts with the next message stored after
/// the attach. With `from`, it continues right after that position (a client
/// re-attaching after a reconnect passes the last position it received, or the
/// `position` of ATTACHED if no message came since; [`Position::BEFORE_FIRST`] asks
/// for every message from the channel's first). With `rewind`, the last N stored
/// messages, or those stored within a span of time, are delivered first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Attach {
    /// The channel.
    pub channel: String,
    /// Continue after this position (`0:0`: from the channel's first message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Position>,
    /// Deliver the last N stored messages, or those stored within a span of time
    /// before the attach, first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewind: Option<Rewind>,
}

/// DETACH: stop receiving a channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detach {
    /// The channel.
    pub channel: String,
}

/// PUBLISH: store messages on a channel, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// Chosen by the client, increasing by one per PUBLISH on a connection from 0;
    /// echoed in the ACK or NACK. Messages without an `id` get the idempotency key
    /// `<connection id>:<msg_serial>:<index>`.
    pub msg_serial: u64,
    /// The channel.
    pub channel: String,
    /// The messages, stored in this order (not necessarily next to each other).
    pub messages: Vec<Message>,
}

/// HEARTBEAT, either way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Set by whoever asks; the answer echoes it. A HEARTBEAT without `id` is not
    /// answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Server → client only: a fresh connection key that replaces the last one. A
    /// key is valid for a resume for a limited time after it was issued, so the
    /// server sends a new one every `state_ttl_ms / 4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_key: Option<String>,
}

/// CLOSE: the client ends the session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Close {}

/// CLOSED: the answer to CLOSE.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Closed {}

/// The server's limits, sent in CONNECTED.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest WebSocket message accepted, in bytes.
    pub max_frame_bytes: u64,
    /// Largest message (data + name + id + content type + headers), in bytes.
    pub max_message_bytes: u64,
    /// Most messages in one PUBLISH.
    pub max_messages_per_publish: u32,
    /// Most PUBLISH frames awaiting ACK/NACK at once.
    pub max_inflight_publishes: u32,
    /// Most channels attached at once.
    pub max_channels: u32,
}

/// CONNECTED: the session is open.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Connected {
    /// This connection's id, unique across the cluster (on a resume: the resumed
    /// connection's).
    pub connection_id: String,
    /// A key, signed by the cluster, that names this connection for a later resume
    /// (CONNECT `resume`). Replaced by the `connection_key` of later HEARTBEATs.
    pub connection_key: String,
    /// True when CONNECT's `resume` was honoured: this is the same connection.
    #[serde(default)]
    pub resumed: bool,
    /// The client id the session runs under, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The server sends a HEARTBEAT after this long without other traffic; a client
    /// that hears nothing for about twice this long should reconnect.
    pub heartbeat_interval_ms: u64,
    /// The server disconnects a client it has heard nothing from for this long.
    pub idle_timeout_ms: u64,
    /// How long the server keeps a dropped connection's state for a resume.
    pub state_ttl_ms: u64,
    /// The limits that apply to this session.
    pub limits: Limits,
    /// Why a requested resume could not be honoured (`ResumeFailed`): the session
    /// is new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// What a key allows on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// PUBLISH and `POST …/messages`.
    Publish,
    /// ATTACH.
    Subscribe,
    /// `rewind`, and `GET …/messages`.
    History,
}

/// ATTACHED: the channel is attached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attached {
    /// The channel.
    pub channel: String,
    /// Delivery continues right after this position; [`Position::BEFORE_FIRST`]
    /// (`0:0`) when nothing precedes the delivery point. A client keeps it as its last
    /// position. Always set by the server (an `Option` only so that a frame without it
    /// still decodes; a client reads its absence as `0:0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// True when the `from` position of the ATTACH is honoured exactly. False with
    /// `error` set when continuity is lost: `position` then says where delivery
    /// continues instead.
    pub resumed: bool,
    /// What the connection's key allows on this channel.
    pub granted: Vec<Operation>,
    /// Why `from` could not be honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// DETACHED: the channel is no longer attached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detached {
    /// The channel.
    pub channel: String,
    /// Why, when the server detached it (or refused the ATTACH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// MESSAGE: one stored message of an attached channel. Per channel, positions
/// arrive in increasing serial order without gaps or repeats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageFrame {
    /// The channel.
    pub channel: String,
    /// The message's position.
    pub position: Position,
    /// The message, with `id`, `timestamp` and (if known) `client_id` set.
    pub message: Message,
}

/// The outcome of one published message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResult {
    /// Where the message is stored.
    pub position: Position,
    /// True when the message's id was already stored: `position` is the original.
    #[serde(default)]
    pub duplicate: bool,
    /// Set when a message function dropped the message: nothing was stored,
    /// `position` is `0:0`, and this is the function's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
}

/// ACK: every message of a PUBLISH is durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The PUBLISH answered.
    pub msg_serial: u64,
    /// One per message, in PUBLISH order.
    pub results: Vec<PublishResult>,
}

/// NACK: the PUBLISH was not stored (none of its messages, unless the error says
/// the outcome is unknown: `LogTimeout`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nack {
    /// The PUBLISH answered.
    pub msg_serial: u64,
    /// Why.
    pub error: ErrorInfo,
}

/// ERROR: something went wrong that ends neither the session nor a channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// What.
    pub error: ErrorInfo,
    /// The channel concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// What a disconnected client should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reconnect {
    /// Reconnect (after a backoff) to any edge, this one included, and resume.
    Retry,
    /// Reconnect to another edge: this one is going away.
    Elsewhere,
    /// Do not reconnect with the same credentials: it would fail the same way.
    Never,
}

/// DISCONNECTED: the server ends the session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Disconnected {
    /// Why.
    pub error: ErrorInfo,
    /// What to do next.
    pub reconnect: Reconnect,
}

impl ClientFrame {
    /// The frame's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Connect(_) => "CONNECT",
            ClientFrame::Attach(_) => "ATTACH",
            ClientFrame::Detach(_) => "DETACH",
            ClientFrame::Publish(_) => "PUBLISH",
            ClientFrame::Heartbeat(_) => "HEARTBEAT",
            ClientFrame::Close(_) => "CLOSE",
        }
    }
}

impl ServerFrame {
    /// The frame's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Connected(_) => "CONNECTED",
            ServerFrame::Attached(_) => "ATTACHED",
            ServerFrame::Detached(_) => "DETACHED",
            ServerFrame::Message(_) => "MESSAGE",
            ServerFrame::Ack(_) => "ACK",
            ServerFrame::Nack(_) => "NACK",
            ServerFrame::Heartbeat(_) => "HEARTBEAT",
            ServerFrame::Error(_) => "ERROR",
            ServerFrame::Disconnected(_) => "DISCONNECTED",
            ServerFrame::Closed(_) => "CLOSED",
        }
    }
}
