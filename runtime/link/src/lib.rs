//! `tern-link`: what the edge and the log say to each other, and how it is framed.
//!
//! This crate is sans-IO: it knows nothing of QUIC, sockets or tasks. It holds
//!
//! - the identifiers every part of Tern shares: [`ChannelName`], [`Epoch`],
//!   [`Serial`] and [`Position`];
//! - the [`Frame`]s of the link protocol (publish batches and their durable
//!   outcomes, reads, subscriptions with replay then live tail or live tail only
//!   ([`SubscribeFrom`]), ping);
//! - the [`codec`]: a length-prefixed, versioned framing with a postcard body, and a
//!   [`FrameDecoder`] that turns untrusted bytes into frames without panicking.
//!
//! ```text
//! edge ── Publish{request_id, messages} ─────────────▶ log
//! edge ◀──────────── PublishResult{request_id, outcomes} ─ (after fsync)
//! edge ── Subscribe{channel, from: Start | After(p) | Latest} ─▶ log
//! edge ◀── Subscribed{next_serial, previous, last, continuity} ── Messages{…} …
//! ```
//!
//! It does not run anything: the QUIC drivers live in `tern-log` (server and client).

pub mod codec;
pub mod frame;
pub mod ids;

pub use codec::{
    DEFAULT_MAX_FRAME_BYTES, DecodeError, EncodeError, FrameDecoder, PROTOCOL_VERSION, decode_all,
    encode_frame, encode_to_vec,
};
pub use frame::{
    Continuity, ErrorCode, Frame, Outcome, PublishMessage, StoredMessage, SubscribeFrom, WireError,
};
pub use ids::{
    ChannelName, ChannelNameError, Epoch, MAX_CHANNEL_NAME_BYTES, MAX_IDEMPOTENCY_KEY_BYTES,
    Position, Serial,
};
