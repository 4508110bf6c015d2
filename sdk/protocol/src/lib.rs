//! `tern-protocol`: Tern's client protocol v1 — the frames a client and an edge
//! exchange, their error codes, and the JSON and MessagePack codecs. Sans-IO: no
//! sockets, no runtime; the edge, the Rust client and the benchmarks all use it.
//!
//! `docs/protocol.md` is the normative description (a client in another language is
//! written from it alone); this crate is its Rust form.
//!
//! ```text
//!  WebSocket message ──decode::<ClientFrame>──▶ [Ok(ClientFrame) | Err(FrameError)]…
//!  ServerFrame ──encode──▶ bytes ──join (several frames, one message)──▶ WebSocket
//! ```
//!
//! Key types: [`ClientFrame`] and [`ServerFrame`] (one struct per frame),
//! [`Message`] with its [`Data`], [`Position`], [`ErrorCode`] / [`ErrorInfo`],
//! [`Format`]. Not here: sessions, authentication, transports (see `tern-edge` and
//! `tern-client`).

mod codec;
mod error;
mod frames;
mod message;
mod rewind;

pub use codec::{
    Format, FrameError, Frames, Parser, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, decode, encode,
    encode_all, join,
};
pub use error::{ErrorCode, ErrorInfo};
pub use frames::{
    Ack, Attach, Attached, ClientFrame, Close, Closed, Connect, Connected, Detach, Detached,
    Disconnected, ErrorFrame, Heartbeat, Limits, MessageFrame, Nack, Operation, Publish,
    PublishResult, Reconnect, ServerFrame,
};
pub use message::{Data, Message, Position};
pub use rewind::{Rewind, format_span, parse_span};

/// Longest channel name, in bytes of UTF-8.
pub const MAX_CHANNEL_NAME_BYTES: usize = 255;
/// Longest message id, in bytes of UTF-8.
pub const MAX_MESSAGE_ID_BYTES: usize = 255;

/// Checks a channel name as a client may use it: 1 to 255 bytes, no control or
/// whitespace characters, not starting with `$` (system channels).
pub fn check_channel_name(name: &str) -> Result<(), ErrorInfo> {
    let fail = |why: String| Err(ErrorInfo::new(ErrorCode::InvalidChannel, why));
    if name.is_empty() {
        return fail("channel name is empty".into());
    }
    if name.len() > MAX_CHANNEL_NAME_BYTES {
        return fail(format!(
            "channel name is {} bytes; the limit is {MAX_CHANNEL_NAME_BYTES}",
            name.len()
        ));
    }
    if name.starts_with('$') {
        return fail(format!(
            "channel {name:?}: names starting with $ are reserved"
        ));
    }
    if let Some((at, _)) = name
        .char_indices()
        .find(|(_, c)| c.is_control() || c.is_whitespace())
    {
        return fail(format!(
            "channel name holds a control or whitespace character at byte {at}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(check_channel_name("chat:room-1").is_ok());
        for bad in ["", "a b", "$functions", "tab\t", &"x".repeat(256)] {
            assert_eq!(
                check_channel_name(bad).expect_err(bad).code,
                ErrorCode::InvalidChannel
            );
        }
    }
}
