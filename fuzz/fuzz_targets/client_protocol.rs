//! Fuzzes the client protocol decoders: arbitrary bytes as one WebSocket message,
//! through `decode::<ClientFrame>` and `decode::<ServerFrame>` in both formats
//! (`tern.v1.json` and `tern.v1.msgpack`). Run: `scripts/fuzz.sh [SECONDS]`.
//!
//! Input layout: the message itself, no header (seeds in `corpus/client_protocol` are
//! frames of every type in both encodings, alone and several to a message).
//!
//! Checked on every input (see `sdk/protocol/tests/support/frame_checks.rs`):
//! - nothing panics;
//! - every error is `Malformed` or `UnknownFrame`, the latter exactly for an unknown
//!   `type`;
//! - every decoded frame re-encodes in both formats, alone and joined with the other
//!   frames of the message, and decodes back to an equal frame.
#![no_main]

#[path = "../../sdk/protocol/tests/support/frame_checks.rs"]
mod frame_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|message: &[u8]| {
    frame_checks::check_message(message);
});
