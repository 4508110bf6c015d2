//! Decoder checks shared by the bounded mutation test (`tests/fuzz_corpus.rs`) and the
//! coverage-guided fuzz target (`fuzz/fuzz_targets/client_protocol.rs`), which include
//! this file with `#[path]`, so both hold the codecs to the same rules.
//!
//! For one WebSocket message, in both formats and for both directions:
//! - decoding never panics;
//! - every error is `Malformed` or `UnknownFrame`, and `UnknownFrame` exactly when the
//!   frame's `type` is readable and names no frame of that direction;
//! - every frame that decodes re-encodes (alone, and all together in one message),
//!   in either format, and decodes back to an equal frame. Values are compared, never
//!   bytes: an input may legitimately be non-canonical (key order, unknown fields,
//!   positions written as arrays, `{"base64": …}` data in MessagePack).

use tern_protocol::{
    ClientFrame, ErrorCode, Format, FrameError, Frames, ServerFrame, decode, encode, encode_all,
};

/// The `type` of every client frame.
pub(crate) const CLIENT_KINDS: [&str; 6] = [
    "CONNECT",
    "ATTACH",
    "DETACH",
    "PUBLISH",
    "HEARTBEAT",
    "CLOSE",
];

/// The `type` of every server frame.
pub(crate) const SERVER_KINDS: [&str; 10] = [
    "CONNECTED",
    "ATTACHED",
    "DETACHED",
    "MESSAGE",
    "ACK",
    "NACK",
    "HEARTBEAT",
    "ERROR",
    "DISCONNECTED",
    "CLOSED",
];

/// What decoding one message produced, counted for the mutation test's coverage check.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// The whole message was refused.
    pub(crate) unreadable: usize,
    /// Frames that decoded.
    pub(crate) frames: usize,
    /// Frames refused as `Malformed`.
    pub(crate) malformed: usize,
    /// Frames refused as `UnknownFrame`.
    pub(crate) unknown: usize,
}

impl Tally {
    pub(crate) fn add(&mut self, other: Tally) {
        self.unreadable += other.unreadable;
        self.frames += other.frames;
        self.malformed += other.malformed;
        self.unknown += other.unknown;
    }
}

/// A frame set with the list of its wire types.
pub(crate) trait Checked: Frames + Clone + PartialEq + std::fmt::Debug {
    const KINDS: &'static [&'static str];
    fn kind_of(&self) -> &'static str;
}

impl Checked for ClientFrame {
    const KINDS: &'static [&'static str] = &CLIENT_KINDS;
    fn kind_of(&self) -> &'static str {
        self.kind()
    }
}

impl Checked for ServerFrame {
    const KINDS: &'static [&'static str] = &SERVER_KINDS;
    fn kind_of(&self) -> &'static str {
        self.kind()
    }
}

/// Runs every check on `message`, in both formats and both directions.
pub(crate) fn check_message(message: &[u8]) -> Tally {
    let mut tally = Tally::default();
    for format in Format::ALL {
        tally.add(check::<ClientFrame>(format, message));
        tally.add(check::<ServerFrame>(format, message));
    }
    tally
}

/// Decodes `message` as frames `F` in `format` and checks the outcome.
pub(crate) fn check<F: Checked>(format: Format, message: &[u8]) -> Tally {
    let mut tally = Tally::default();
    let results = match decode::<F>(format, message) {
        Ok(results) => results,
        Err(error) => {
            assert_eq!(error.code, ErrorCode::Malformed, "{error:?}");
            assert_eq!(error.frame_type, None, "{error:?}");
            tally.unreadable += 1;
            return tally;
        }
    };
    assert!(!results.is_empty(), "a readable message holds a frame");
    let mut frames = Vec::new();
    for result in results {
        match result {
            Ok(frame) => {
                assert!(F::KINDS.contains(&frame.kind_of()));
                check_round_trip(&frame);
                frames.push(frame);
            }
            Err(error) => {
                check_error::<F>(&error);
                match error.code {
                    ErrorCode::UnknownFrame => tally.unknown += 1,
                    _ => tally.malformed += 1,
                }
            }
        }
    }
    tally.frames += frames.len();
    if !frames.is_empty() {
        for out in Format::ALL {
            let joined = decode::<F>(out, &encode_all(out, &frames))
                .expect("re-encoded frames are one readable message");
            let expected: Vec<Result<F, FrameError>> = frames.iter().cloned().map(Ok).collect();
            assert_eq!(joined, expected, "{out:?}: frames joined in one message");
        }
    }
    tally
}

/// A decoded frame re-encodes alone in either format and decodes to an equal frame.
pub(crate) fn check_round_trip<F: Checked>(frame: &F) {
    for out in Format::ALL {
        let bytes = encode(out, frame);
        let back = decode::<F>(out, &bytes).expect("a re-encoded frame is readable");
        assert_eq!(back, vec![Ok(frame.clone())], "{out:?} round trip");
    }
}

/// A frame error is classified: an unknown `type` is `UnknownFrame`, anything else
/// `Malformed`; the peer gets a message saying what was wrong.
pub(crate) fn check_error<F: Checked>(error: &FrameError) {
    assert!(!error.message.is_empty(), "{error:?}");
    match error.code {
        ErrorCode::UnknownFrame => {
            let kind = error.frame_type.as_deref().expect("unknown type is named");
            assert!(!F::KINDS.contains(&kind), "{kind} is known: {error:?}");
        }
        ErrorCode::Malformed => {
            if let Some(kind) = error.frame_type.as_deref() {
                assert!(F::KINDS.contains(&kind), "{kind} is unknown: {error:?}");
            }
        }
        other => panic!("unclassified frame error {other}: {error:?}"),
    }
    let info = error.info();
    assert_eq!(info.code, error.code);
    assert!(!info.retryable, "a frame error is not retryable");
}
