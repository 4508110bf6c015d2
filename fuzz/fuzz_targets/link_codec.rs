//! Fuzzes the link codec: arbitrary bytes through `FrameDecoder` in arbitrary chunkings
//! and through `decode_all` with a small limit. Run: `scripts/fuzz.sh [SECONDS]`.
//!
//! Input layout (seeds in `corpus/link_codec` follow it):
//!
//! ```text
//! ┌─────────────┬───────────────────────────┬───────────────────────────┐
//! │ chunk seed  │ small limit               │ stream: frames as on wire │
//! │ u8          │ u8: 5 + 4·n bytes         │ ...                       │
//! └─────────────┴───────────────────────────┴───────────────────────────┘
//! ```
//!
//! Checked on every input:
//! - nothing panics;
//! - the decoder's output does not depend on how the stream was cut into reads;
//! - every error is classified, and only `TooLarge`/`UnsupportedVersion` are fatal;
//! - after a fatal error no frame ever comes out;
//! - every decoded frame re-encodes within the limit it was decoded under and
//!   decodes back to an equal frame;
//! - `decode_all` agrees with the incremental decoder.
#![no_main]

#[path = "../../runtime/link/tests/support/codec_checks.rs"]
mod codec_checks;

use codec_checks::{Event, MIN_LIMIT, check_events, run};
use libfuzzer_sys::fuzz_target;
use tern_link::decode_all;

/// Limit for the incremental decoder: large enough that most frames fit, small enough
/// that a huge announced length is refused without a large reservation.
const MAX_FRAME_BYTES: usize = 1 << 20;

/// Cuts the stream into reads: mostly a few bytes, sometimes larger, sometimes the rest.
struct Chunker(u32);

impl Chunker {
    fn new(seed: u8) -> Self {
        Self(u32::from(seed).wrapping_mul(0x9E37_79B9) | 1)
    }

    fn next(&mut self, remaining: usize) -> usize {
        // xorshift32
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        let r = self.0 as usize;
        let size = match r % 8 {
            0 => remaining,
            1 => 1 + (r >> 3) % 256,
            _ => 1 + (r >> 3) % 8,
        };
        size.min(remaining)
    }
}

fuzz_target!(|data: &[u8]| {
    let [chunk_seed, small, stream @ ..] = data else {
        return;
    };
    let small_max = MIN_LIMIT + 4 * usize::from(*small);

    let whole = run(stream, MAX_FRAME_BYTES, |remaining| remaining);
    check_events(&whole.0, MAX_FRAME_BYTES);
    let mut chunker = Chunker::new(*chunk_seed);
    let chunked = run(stream, MAX_FRAME_BYTES, |remaining| chunker.next(remaining));
    assert_eq!(chunked, whole, "output depends on how the stream was read");

    let (small_events, _) = run(stream, small_max, |remaining| remaining);
    check_events(&small_events, small_max);
    let expected = match small_events.iter().find_map(|event| match event {
        Event::Error(error) => Some(error.clone()),
        Event::Frame(_) => None,
    }) {
        Some(error) => Err(error),
        None => Ok(small_events
            .into_iter()
            .filter_map(|event| match event {
                Event::Frame(frame) => Some(frame),
                Event::Error(_) => None,
            })
            .collect::<Vec<_>>()),
    };
    assert_eq!(decode_all(stream, small_max), expected);
});
