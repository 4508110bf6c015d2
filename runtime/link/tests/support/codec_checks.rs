//! Codec checks shared by the bounded mutation test (`tests/fuzz_corpus.rs`) and
//! the coverage-guided fuzz target (`fuzz/fuzz_targets/link_codec.rs`), which include
//! this file with `#[path]`, so both hold the decoder to the same rules.

use tern_link::{DecodeError, Frame, FrameDecoder, PROTOCOL_VERSION, decode_all, encode_to_vec};

/// The decoder never applies a limit below a length prefix plus a version byte.
pub(crate) const MIN_LIMIT: usize = 5;

/// What the decoder produced, in order.
#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    Frame(Frame),
    Error(DecodeError),
}

/// Runs `stream` through a fresh decoder, one read per `cut`, taking every frame after
/// each read and stopping at the first fatal error. Returns the events and the bytes
/// left buffered.
pub(crate) fn run(
    stream: &[u8],
    max: usize,
    mut cut: impl FnMut(usize) -> usize,
) -> (Vec<Event>, usize) {
    let mut decoder = FrameDecoder::new(max);
    let mut events = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (read, tail) = rest.split_at(cut(rest.len()).clamp(1, rest.len()));
        rest = tail;
        decoder.extend(read);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => events.push(Event::Frame(frame)),
                Ok(None) => break,
                Err(e) => {
                    let fatal = e.is_fatal();
                    events.push(Event::Error(e));
                    if fatal {
                        decoder.extend(rest);
                        for _ in 0..3 {
                            assert!(
                                !matches!(decoder.next_frame(), Ok(Some(_))),
                                "a frame came out after a fatal error"
                            );
                        }
                        return (events, decoder.buffered());
                    }
                }
            }
        }
    }
    (events, decoder.buffered())
}

/// Checks that an error is one of the known kinds and classified right.
pub(crate) fn check_error(error: &DecodeError, max: usize) {
    match error {
        DecodeError::TooLarge { announced, limit } => {
            assert!(error.is_fatal(), "{error:?} must be fatal");
            assert_eq!(*limit, max.max(MIN_LIMIT));
            assert!(announced > limit, "{error:?}");
        }
        DecodeError::UnsupportedVersion(version) => {
            assert!(error.is_fatal(), "{error:?} must be fatal");
            assert_ne!(*version, PROTOCOL_VERSION);
        }
        DecodeError::Malformed(_) => assert!(!error.is_fatal(), "{error:?} must not be fatal"),
        other => panic!("unclassified decode error {other:?}"),
    }
}

pub(crate) fn check_round_trip(frame: &Frame, max: usize) {
    let wire = encode_to_vec(frame, max.max(MIN_LIMIT))
        .expect("a decoded frame re-encodes within the limit it was decoded under");
    let back = decode_all(&wire, max).expect("a re-encoded frame decodes");
    assert_eq!(back.as_slice(), std::slice::from_ref(frame));
}

pub(crate) fn check_events(events: &[Event], max: usize) {
    for event in events {
        match event {
            Event::Frame(frame) => check_round_trip(frame, max),
            Event::Error(error) => check_error(error, max),
        }
    }
}
