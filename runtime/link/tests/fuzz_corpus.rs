//! A deterministic, bounded mutation test of the link codec, run by plain `cargo test`.
//!
//! It is the always-on little brother of the `link_codec` cargo-fuzz target
//! (`scripts/fuzz.sh`): valid frames of every [`Frame`] variant are encoded, mutated
//! (bit flips, byte edits, truncation, splicing, insertion, deletion, length-field and
//! version edits) and fed to a [`FrameDecoder`] in random chunkings. It checks that
//!
//! - nothing panics and no output depends on how the stream was cut into reads;
//! - every error is classified, and only `TooLarge`/`UnsupportedVersion` are fatal;
//! - no frame comes out after a fatal error;
//! - every decoded frame re-encodes and decodes back to an equal frame;
//! - valid streams round-trip exactly, and a corrupt body costs one frame, not the stream.
//!
//! The PRNG is seeded with a constant, so a failure names an iteration that replays.
//! `write_fuzz_seeds` (ignored; run by `scripts/fuzz.sh`) writes these frames as the
//! fuzzer's seed corpus.

#[path = "support/codec_checks.rs"]
mod codec_checks;

use bytes::Bytes;
use codec_checks::{Event, check_events, check_round_trip, run};
use tern_link::{
    Continuity, DecodeError, Epoch, ErrorCode, Frame, Outcome, PROTOCOL_VERSION, Position,
    PublishMessage, Serial, StoredMessage, SubscribeFrom, WireError, encode_frame, encode_to_vec,
};

/// Mutated inputs tried by [`mutated_streams_never_panic_and_errors_are_classified`].
const ITERATIONS: u64 = 20_000;
/// Decoder limit for most runs: every sample fits, a random length mostly does not.
const MAX_FRAME_BYTES: usize = 4096;
/// Length prefix plus version byte: where a frame's body starts.
const HEADER_BYTES: usize = 5;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`; `n` must be non-zero.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }
}

fn position(epoch: u64, serial: u64) -> Position {
    Position {
        epoch: Epoch(epoch),
        serial: Serial::new(serial).expect("sample serials are non-zero"),
    }
}

fn stored(serial: u64, payload: &'static [u8]) -> StoredMessage {
    StoredMessage {
        position: position(2, serial),
        timestamp_ms: 1_700_000_000_000 + serial,
        idempotency_key: Bytes::from(format!("key-{serial}")),
        headers: vec![("content-type".into(), "text/plain".into())],
        payload: Bytes::from_static(payload),
    }
}

/// Valid frames covering every variant, with empty, large and non-ASCII fields.
fn samples() -> Vec<Frame> {
    vec![
        Frame::Publish {
            request_id: 1,
            messages: vec![
                PublishMessage {
                    channel: "chat:lobby".into(),
                    idempotency_key: Bytes::from_static(b"conn-1:1"),
                    headers: vec![("h".into(), "v".into()), ("ü".into(), String::new())],
                    payload: Bytes::from(vec![0xAB; 200]),
                },
                PublishMessage {
                    channel: "$functions".into(),
                    idempotency_key: Bytes::new(),
                    headers: vec![],
                    payload: Bytes::new(),
                },
            ],
        },
        Frame::Publish {
            request_id: u64::MAX,
            messages: vec![],
        },
        Frame::PublishResult {
            request_id: 1,
            outcomes: vec![
                Outcome::Appended(position(1, 1)),
                Outcome::Duplicate(position(u64::MAX, u64::MAX)),
                Outcome::Rejected(WireError::new(ErrorCode::InvalidChannel, "bad name")),
            ],
        },
        Frame::Read {
            request_id: 2,
            channel: "chat:lobby".into(),
            from_serial: 1,
            limit: u32::MAX,
        },
        Frame::ReadSince {
            request_id: 2,
            channel: "chat:lobby".into(),
            since_ms: 1_767_225_600_123,
            limit: 100,
        },
        Frame::ReadResult {
            request_id: 2,
            channel: "chat:lobby".into(),
            messages: vec![stored(1, b"hello"), stored(2, b"")],
            first_serial: Some(1),
            more: true,
            last: Some(position(7, 9)),
        },
        Frame::ReadResult {
            request_id: 3,
            channel: "empty".into(),
            messages: vec![],
            first_serial: None,
            more: true,
            last: None,
        },
        Frame::RequestFailed {
            request_id: 4,
            error: WireError::new(ErrorCode::StorageFull, "disk full"),
        },
        Frame::Subscribe {
            channel: "chat:lobby".into(),
            from: SubscribeFrom::After(position(3, 42)),
        },
        Frame::Subscribe {
            channel: "ticker".into(),
            from: SubscribeFrom::Start,
        },
        Frame::Subscribe {
            channel: "$functions".into(),
            from: SubscribeFrom::Latest,
        },
        Frame::Subscribed {
            channel: "chat:lobby".into(),
            next_serial: 43,
            previous: Some(position(3, 42)),
            last: Some(position(3, 50)),
            continuity: Continuity::Kept,
        },
        Frame::Subscribed {
            channel: "ticker".into(),
            next_serial: 7,
            previous: None,
            last: None,
            continuity: Continuity::Lost {
                reason: "retention removed 1..=6".into(),
            },
        },
        Frame::Unsubscribe {
            channel: "ticker".into(),
        },
        Frame::Unsubscribed {
            channel: "ticker".into(),
        },
        Frame::Messages {
            channel: "chat:lobby".into(),
            messages: vec![stored(43, b"live"), stored(44, b"tail")],
        },
        Frame::Ping { nonce: 0 },
        Frame::Pong { nonce: u64::MAX },
        Frame::Error(WireError::new(ErrorCode::ShuttingDown, "bye").fatal()),
        Frame::Error(WireError::new(ErrorCode::MalformedFrame, "")),
    ]
}

/// Random reads: mostly a few bytes, sometimes a larger run, sometimes all the rest.
fn random_cuts(rng: &mut Rng) -> impl FnMut(usize) -> usize + '_ {
    move |remaining| match rng.below(8) {
        0 => remaining,
        1 => 1 + rng.below(512),
        _ => 1 + rng.below(8),
    }
}

/// Encodes 1 to 4 random samples back to back; returns the frames, the stream and
/// where each frame starts.
fn random_stream(rng: &mut Rng, wires: &[(Frame, Vec<u8>)]) -> (Vec<Frame>, Vec<u8>, Vec<usize>) {
    let mut frames = Vec::new();
    let mut stream = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let (frame, wire) = &wires[rng.below(wires.len())];
        starts.push(stream.len());
        stream.extend_from_slice(wire);
        frames.push(frame.clone());
    }
    (frames, stream, starts)
}

/// Applies one random mutation. `starts` are the original frame starts; after an
/// earlier mutation they may no longer line up, which only makes the input stranger.
fn mutate(rng: &mut Rng, stream: &mut Vec<u8>, starts: &[usize], wires: &[(Frame, Vec<u8>)]) {
    let len = stream.len();
    let at = |rng: &mut Rng| rng.below(len.max(1));
    match rng.below(10) {
        0 if len > 0 => {
            let i = at(rng);
            stream[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = at(rng);
            stream[i] = match rng.below(4) {
                0 => 0x00,
                1 => 0xFF,
                2 => 0x80,
                _ => rng.byte(),
            };
        }
        2 => stream.truncate(rng.below(len + 1)),
        3 => {
            // Splice a slice of another encoded frame over a slice of this stream.
            let donor = &wires[rng.below(wires.len())].1;
            let from = rng.below(donor.len());
            let piece = &donor[from..from + rng.below(donor.len() - from + 1)];
            let start = rng.below(len + 1);
            let end = start + rng.below(len - start + 1);
            stream.splice(start..end, piece.iter().copied());
        }
        4 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            stream.splice(i..i, bytes);
        }
        5 if len > 0 => {
            let start = at(rng);
            let end = start + rng.below(len - start + 1);
            stream.drain(start..end);
        }
        6 if len > 0 => {
            // Repeat a slice.
            let start = at(rng);
            let end = start + rng.below(len - start + 1);
            let copy = stream[start..end].to_vec();
            stream.splice(end..end, copy);
        }
        7 | 8 => {
            // Edit a length prefix.
            let start = starts[rng.below(starts.len())];
            if start + 4 <= stream.len() {
                let mut prefix = [0u8; 4];
                prefix.copy_from_slice(&stream[start..start + 4]);
                let old = u32::from_be_bytes(prefix);
                let new = match rng.below(7) {
                    0 => 0,
                    1 => 1,
                    2 => old.wrapping_add(1 + rng.below(4) as u32),
                    3 => old.wrapping_sub(1 + rng.below(4) as u32),
                    4 => u32::MAX,
                    5 => (MAX_FRAME_BYTES as u32 - 4).wrapping_add(rng.below(3) as u32),
                    _ => rng.next_u64() as u32,
                };
                stream[start..start + 4].copy_from_slice(&new.to_be_bytes());
            }
        }
        _ => {
            // Edit a version byte.
            let start = starts[rng.below(starts.len())];
            if let Some(version) = stream.get_mut(start + 4) {
                *version = match rng.below(4) {
                    0 => 0,
                    1 => PROTOCOL_VERSION + 1,
                    2 => 0xFF,
                    _ => rng.byte(),
                };
            }
        }
    }
}

fn encoded_samples() -> Vec<(Frame, Vec<u8>)> {
    samples()
        .into_iter()
        .map(|frame| {
            let wire = encode_to_vec(&frame, MAX_FRAME_BYTES).expect("samples are small");
            (frame, wire)
        })
        .collect()
}

#[test]
fn samples_cover_every_variant() {
    let mut names: Vec<&str> = samples().iter().map(|frame| frame.kind()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 14, "a Frame variant has no sample: {names:?}");
}

#[test]
fn valid_streams_round_trip_in_any_chunking() {
    let wires = encoded_samples();
    let mut rng = Rng::new(1);
    for iteration in 0..2_000 {
        let (frames, stream, _) = random_stream(&mut rng, &wires);
        let expected: Vec<Event> = frames.into_iter().map(Event::Frame).collect();
        let (events, buffered) = run(&stream, MAX_FRAME_BYTES, random_cuts(&mut rng));
        assert_eq!(events, expected, "iteration {iteration}");
        assert_eq!(buffered, 0, "iteration {iteration}");
        check_events(&events, MAX_FRAME_BYTES);
    }
}

#[test]
fn mutated_streams_never_panic_and_errors_are_classified() {
    let wires = encoded_samples();
    let mut rng = Rng::new(2);
    let mut errors = [0usize; 3];
    for iteration in 0..ITERATIONS {
        let (frames, mut stream, starts) = random_stream(&mut rng, &wires);
        let mutations = rng.below(4);
        for _ in 0..mutations {
            mutate(&mut rng, &mut stream, &starts, &wires);
        }
        let max = if rng.chance(1, 8) {
            rng.below(300)
        } else {
            MAX_FRAME_BYTES
        };

        let whole = run(&stream, max, |remaining| remaining);
        let chunked = run(&stream, max, random_cuts(&mut rng));
        assert_eq!(
            chunked, whole,
            "iteration {iteration}: output depends on reads"
        );
        check_events(&whole.0, max);
        for event in &whole.0 {
            match event {
                Event::Error(DecodeError::TooLarge { .. }) => errors[0] += 1,
                Event::Error(DecodeError::UnsupportedVersion(_)) => errors[1] += 1,
                Event::Error(_) => errors[2] += 1,
                Event::Frame(_) => {}
            }
        }
        if mutations == 0 && max == MAX_FRAME_BYTES {
            let expected: Vec<Event> = frames.into_iter().map(Event::Frame).collect();
            assert_eq!(whole, (expected, 0), "iteration {iteration}");
        }
    }
    // The mutations must reach every kind of error, or this test checks little.
    assert!(errors.iter().all(|&n| n > 100), "errors seen: {errors:?}");
}

#[test]
fn corrupt_body_is_skipped_and_stream_stays_in_sync() {
    let wires = encoded_samples();
    let mut rng = Rng::new(3);
    for iteration in 0..2_000 {
        let (frames, mut stream, starts) = random_stream(&mut rng, &wires);
        let victim = rng.below(frames.len());
        let start = starts[victim] + HEADER_BYTES;
        let end = starts.get(victim + 1).copied().unwrap_or(stream.len());
        if start < end {
            for _ in 0..1 + rng.below(3) {
                let i = start + rng.below(end - start);
                stream[i] = rng.byte();
            }
        }
        let (events, buffered) = run(&stream, MAX_FRAME_BYTES, random_cuts(&mut rng));
        assert_eq!(
            events.len(),
            frames.len(),
            "iteration {iteration}: {events:?}"
        );
        assert_eq!(buffered, 0, "iteration {iteration}");
        for (i, (event, frame)) in events.iter().zip(&frames).enumerate() {
            match event {
                Event::Frame(got) if i != victim => assert_eq!(got, frame, "iteration {iteration}"),
                Event::Frame(got) => check_round_trip(got, MAX_FRAME_BYTES),
                Event::Error(error) => {
                    assert_eq!(i, victim, "iteration {iteration}: {error:?}");
                    assert!(matches!(error, DecodeError::Malformed(_)), "{error:?}");
                }
            }
        }
    }
}

/// Writes the samples as the `link_codec` fuzz target's seed corpus into the folder
/// named by `TERN_FUZZ_SEED_DIR`. Each seed is the target's two header bytes (chunking
/// seed, small limit) followed by a stream. Run by `scripts/fuzz.sh`.
#[test]
#[ignore = "a tool: writes the fuzz seed corpus; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let dir = std::env::var_os("TERN_FUZZ_SEED_DIR").expect("TERN_FUZZ_SEED_DIR names the folder");
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).expect("seed folder can be created");
    let write = |name: String, header: [u8; 2], stream: &[u8]| {
        let mut seed = header.to_vec();
        seed.extend_from_slice(stream);
        std::fs::write(dir.join(name), seed).expect("seed can be written");
    };
    let mut all = Vec::new();
    for (i, frame) in samples().iter().enumerate() {
        let name = frame.kind();
        let wire = encode_to_vec(frame, MAX_FRAME_BYTES).expect("samples are small");
        write(format!("{i:02}-{name}"), [i as u8, 0xFF], &wire);
        encode_frame(frame, &mut all, MAX_FRAME_BYTES).expect("samples are small");
    }
    write("all-frames".into(), [0x5A, 0xFF], &all);
    write("all-frames-small-limit".into(), [0xA5, 0x10], &all);
}
