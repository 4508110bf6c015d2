//! A deterministic, bounded mutation test of the client protocol decoders, run by plain
//! `cargo test`.
//!
//! It is the always-on little brother of the `client_protocol` cargo-fuzz target
//! (`scripts/fuzz.sh`): valid frames of every client and server frame type are
//! encoded in both formats, alone or several to a message, then mutated — bytes
//! (flips, edits, truncation, splicing, insertion, deletion, repeats) or structure
//! (a field's value replaced by another type or an out-of-range number, a field
//! dropped, an unknown field added, the `type` changed) — and decoded as
//! [`ClientFrame`] and [`ServerFrame`] in both formats. The checks (shared with the
//! fuzz target, `support/frame_checks.rs`): nothing panics, errors are classified,
//! every frame that decodes round-trips through both formats.
//!
//! The PRNG is seeded with a constant, so a failure names an iteration that replays.
//! `write_fuzz_seeds` (ignored; run by `scripts/fuzz.sh`) writes the samples as the
//! fuzzer's seed corpus.

#[path = "support/frame_checks.rs"]
mod frame_checks;

use frame_checks::{CLIENT_KINDS, SERVER_KINDS, Tally, check_message};
use serde_json::{Value, json};
use tern_protocol::{
    Ack, Attach, Attached, ClientFrame, Close, Closed, Connect, Connected, Data, Detach, Detached,
    Disconnected, ErrorCode, ErrorFrame, ErrorInfo, Format, Heartbeat, Limits, Message,
    MessageFrame, Nack, Operation, Position, Publish, PublishResult, Reconnect, Rewind,
    ServerFrame, decode, encode, encode_all,
};

/// Mutated messages tried by [`mutated_messages_never_panic_and_errors_are_classified`].
const ITERATIONS: u64 = 20_000;

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

    fn byte(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn position(epoch: u64, serial: u64) -> Position {
    Position { epoch, serial }
}

fn rich_message() -> Message {
    let mut message = Message::new(Data::Binary(vec![0, 1, 2, 0xFF].into()));
    message.id = Some("order-17".into());
    message.name = Some("chat.message".into());
    message.content_type = Some("application/octet-stream".into());
    message.headers.insert("trace".into(), "abc".into());
    message.headers.insert("ü".into(), String::new());
    message.client_id = Some("alice".into());
    message.timestamp = Some(1_700_000_000_000);
    message
}

/// Client frames covering every type, with absent, empty, large and non-ASCII fields.
fn client_samples() -> Vec<ClientFrame> {
    vec![
        ClientFrame::Connect(Connect {
            key: Some("app.key1:0123456789abcdef".into()),
            client_id: Some("alice".into()),
            ..Connect::default()
        }),
        ClientFrame::Connect(Connect {
            token: Some("eyJ".into()),
            resume: Some("ck-1".into()),
            ..Connect::default()
        }),
        ClientFrame::Connect(Connect {
            key: Some("app.key1:0123456789abcdef".into()),
            resume: Some("AQ5lZGdlLWEtMDEyMzQ1Njc4OWFiY2RlZgNhcHA".into()),
            channels: [
                ("chat:lobby".to_owned(), position(3, 41)),
                ("ünï:côdé".to_owned(), position(0, 0)),
            ]
            .into_iter()
            .collect(),
            ..Connect::default()
        }),
        ClientFrame::Attach(Attach {
            channel: "chat:lobby".into(),
            from: Some(position(3, u64::MAX)),
            rewind: None,
        }),
        ClientFrame::Attach(Attach {
            channel: "ticker".into(),
            from: None,
            rewind: Some(Rewind::Messages(u32::MAX)),
        }),
        ClientFrame::Attach(Attach {
            channel: "ticker".into(),
            from: None,
            rewind: Some(Rewind::Span(std::time::Duration::from_secs(90))),
        }),
        ClientFrame::Detach(Detach {
            channel: "chat:lobby".into(),
        }),
        ClientFrame::Publish(Publish {
            msg_serial: 0,
            channel: "chat:lobby".into(),
            messages: vec![
                rich_message(),
                Message::new("héllo"),
                Message::new(Data::Binary(Vec::new().into())),
            ],
        }),
        ClientFrame::Publish(Publish {
            msg_serial: u64::MAX,
            channel: "c".into(),
            messages: vec![],
        }),
        ClientFrame::Heartbeat(Heartbeat {
            id: Some(7),
            connection_key: None,
        }),
        ClientFrame::Heartbeat(Heartbeat {
            id: None,
            connection_key: None,
        }),
        ClientFrame::Close(Close {}),
    ]
}

/// Server frames covering every type, with absent, empty, large and non-ASCII fields.
fn server_samples() -> Vec<ServerFrame> {
    let error = ErrorInfo::new(ErrorCode::Forbidden, "no subscribe on \"x\"");
    vec![
        ServerFrame::Connected(Connected {
            connection_id: "edge1-0123456789abcdef".into(),
            connection_key: "k".into(),
            resumed: true,
            client_id: Some("alice".into()),
            heartbeat_interval_ms: 15_000,
            idle_timeout_ms: 45_000,
            state_ttl_ms: 120_000,
            limits: Limits {
                max_frame_bytes: 1 << 20,
                max_message_bytes: 64 << 10,
                max_messages_per_publish: 100,
                max_inflight_publishes: 64,
                max_channels: 200,
            },
            error: Some(ErrorInfo::new(ErrorCode::ResumeFailed, "resume")),
        }),
        ServerFrame::Attached(Attached {
            channel: "chat:lobby".into(),
            position: Some(position(1, 41)),
            resumed: false,
            granted: vec![Operation::Publish, Operation::Subscribe, Operation::History],
            error: Some(ErrorInfo::new(ErrorCode::ContinuityLost, "continuity lost")),
        }),
        ServerFrame::Attached(Attached {
            channel: "ticker".into(),
            position: None,
            resumed: true,
            granted: vec![],
            error: None,
        }),
        ServerFrame::Detached(Detached {
            channel: "x".into(),
            error: Some(error.clone()),
        }),
        ServerFrame::Detached(Detached {
            channel: "chat:lobby".into(),
            error: None,
        }),
        ServerFrame::Message(MessageFrame {
            channel: "chat:lobby".into(),
            position: position(1, 42),
            message: rich_message(),
        }),
        ServerFrame::Message(MessageFrame {
            channel: "chat:lobby".into(),
            position: position(1, 43),
            message: Message::new("text"),
        }),
        ServerFrame::Ack(Ack {
            msg_serial: 0,
            results: vec![
                PublishResult {
                    position: position(1, 42),
                    duplicate: false,
                    dropped: None,
                },
                PublishResult {
                    position: position(1, 7),
                    duplicate: true,
                    dropped: None,
                },
            ],
        }),
        ServerFrame::Nack(Nack {
            msg_serial: 1,
            error: ErrorInfo::new(ErrorCode::LogTimeout, "log timeout"),
        }),
        ServerFrame::Heartbeat(Heartbeat {
            id: Some(u64::MAX),
            connection_key: None,
        }),
        ServerFrame::Heartbeat(Heartbeat {
            id: None,
            connection_key: None,
        }),
        ServerFrame::Heartbeat(Heartbeat {
            id: None,
            connection_key: Some("AQ5lZGdlLWEtMDEyMzQ1Njc4OWFiY2RlZgNhcHA".into()),
        }),
        ServerFrame::Error(ErrorFrame {
            error: ErrorInfo::new(ErrorCode::Other(49_999), "newer"),
            channel: Some("chat:lobby".into()),
        }),
        ServerFrame::Error(ErrorFrame {
            error: ErrorInfo::new(ErrorCode::UnknownFrame, "unknown frame type \"NOPE\""),
            channel: None,
        }),
        ServerFrame::Disconnected(Disconnected {
            error: ErrorInfo::new(ErrorCode::SlowConsumer, "slow"),
            reconnect: Reconnect::Retry,
        }),
        ServerFrame::Disconnected(Disconnected {
            error: ErrorInfo::new(ErrorCode::InvalidCredentials, "bad key"),
            reconnect: Reconnect::Never,
        }),
        ServerFrame::Closed(Closed {}),
    ]
}

/// Every sample, encoded alone in both formats.
fn encoded_samples() -> Vec<(Format, Vec<u8>)> {
    let mut out = Vec::new();
    for format in Format::ALL {
        out.extend(client_samples().iter().map(|f| (format, encode(format, f))));
        out.extend(server_samples().iter().map(|f| (format, encode(format, f))));
    }
    out
}

/// Every sample as a JSON value, for structural mutations.
fn sample_values() -> Vec<Value> {
    let mut out: Vec<Value> = client_samples()
        .iter()
        .map(|f| serde_json::to_value(f).expect("samples are JSON"))
        .collect();
    out.extend(
        server_samples()
            .iter()
            .map(|f| serde_json::to_value(f).expect("samples are JSON")),
    );
    out
}

/// Values that are wrong somewhere: other types, out-of-range numbers, odd strings.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(-1),
        2 => json!(1.5),
        3 => json!(u64::MAX),
        4 => json!(u64::from(u32::MAX) + 1),
        5 => json!(0),
        6 => json!(true),
        7 => json!(""),
        8 => json!("$system"),
        9 => json!("a b\u{0}"),
        10 => json!({}),
        11 => json!([]),
        12 => json!({"base64": "AAEC/w=="}),
        13 => json!({"base64": "%%"}),
        14 => json!({"epoch": 1, "serial": 2}),
        _ => json!([1, 2]),
    }
}

/// Changes one node of a frame's value tree.
fn mutate_value(rng: &mut Rng, value: &mut Value) {
    // Walk down a random path, stopping at a random depth.
    let mut node = value;
    loop {
        let children = match node {
            Value::Object(map) => map.len(),
            Value::Array(items) => items.len(),
            _ => 0,
        };
        if children == 0 || rng.below(3) == 0 {
            break;
        }
        let i = rng.below(children);
        node = match node {
            Value::Object(map) => map.values_mut().nth(i).expect("i < len"),
            Value::Array(items) => &mut items[i],
            _ => unreachable!("children > 0 only for objects and arrays"),
        };
    }
    match (rng.below(5), &mut *node) {
        (0, Value::Object(map)) if !map.is_empty() => {
            let key = map.keys().nth(rng.below(map.len())).cloned();
            if let Some(key) = key {
                map.remove(&key);
            }
        }
        (1, Value::Object(map)) => {
            map.insert("unknown_field".into(), odd_value(rng));
        }
        (2, Value::Object(map)) => {
            let client = CLIENT_KINDS[rng.below(CLIENT_KINDS.len())];
            let server = SERVER_KINDS[rng.below(SERVER_KINDS.len())];
            let kind = *rng.pick(&["NOPE", "connect", "", client, server]);
            map.insert("type".into(), json!(kind));
        }
        _ => *node = odd_value(rng),
    }
}

/// A message of 1 to 3 frames, in one format, as bytes.
fn structured_message(rng: &mut Rng, values: &[Value]) -> Vec<u8> {
    let format = *rng.pick(&Format::ALL);
    let mut frames: Vec<Value> = (0..1 + rng.below(3))
        .map(|_| rng.pick(values).clone())
        .collect();
    for _ in 0..1 + rng.below(2) {
        let i = rng.below(frames.len());
        mutate_value(rng, &mut frames[i]);
    }
    encode_all(format, &frames)
}

/// Applies one random byte-level mutation.
fn mutate_bytes(rng: &mut Rng, message: &mut Vec<u8>, donors: &[(Format, Vec<u8>)]) {
    let len = message.len();
    let at = |rng: &mut Rng| rng.below(len.max(1));
    match rng.below(8) {
        0 if len > 0 => {
            let i = at(rng);
            message[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = at(rng);
            // MessagePack markers and JSON punctuation that change the structure.
            message[i] = *rng.pick(&[
                0x00, 0xFF, 0xC0, 0xC1, 0xC4, 0xCF, 0xD9, 0xDC, 0xDE, 0x80, 0x90, 0xA0, b'"', b'{',
                b'}', b'[', b']', b',', b':', b'\\', b'-', b'9',
            ]);
        }
        2 => message.truncate(rng.below(len + 1)),
        3 => {
            let donor = &rng.pick(donors).1;
            let from = rng.below(donor.len());
            let piece = &donor[from..from + rng.below(donor.len() - from + 1)];
            let start = rng.below(len + 1);
            let end = start + rng.below(len - start + 1);
            message.splice(start..end, piece.iter().copied());
        }
        4 => {
            let i = rng.below(len + 1);
            let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.byte()).collect();
            message.splice(i..i, bytes);
        }
        5 if len > 0 => {
            let start = at(rng);
            let end = start + rng.below(len - start + 1);
            message.drain(start..end);
        }
        6 if len > 0 => {
            let start = at(rng);
            let end = start + rng.below(len - start + 1);
            let copy = message[start..end].to_vec();
            message.splice(end..end, copy);
        }
        _ => {
            // Append another encoded frame (several frames in one message).
            message.extend_from_slice(&rng.pick(donors).1);
        }
    }
}

#[test]
fn samples_cover_every_frame_type() {
    let mut client: Vec<&str> = client_samples().iter().map(ClientFrame::kind).collect();
    client.sort_unstable();
    client.dedup();
    let mut expected = CLIENT_KINDS.to_vec();
    expected.sort_unstable();
    assert_eq!(client, expected, "a client frame type has no sample");

    let mut server: Vec<&str> = server_samples().iter().map(ServerFrame::kind).collect();
    server.sort_unstable();
    server.dedup();
    let mut expected = SERVER_KINDS.to_vec();
    expected.sort_unstable();
    assert_eq!(server, expected, "a server frame type has no sample");
}

#[test]
fn valid_messages_decode_to_exactly_their_frames() {
    let clients = client_samples();
    let servers = server_samples();
    let mut rng = Rng::new(1);
    for iteration in 0..500 {
        let format = *rng.pick(&Format::ALL);
        let n = 1 + rng.below(4);
        let client: Vec<ClientFrame> = (0..n).map(|_| rng.pick(&clients).clone()).collect();
        let server: Vec<ServerFrame> = (0..n).map(|_| rng.pick(&servers).clone()).collect();
        let got = decode::<ClientFrame>(format, &encode_all(format, &client)).expect("readable");
        assert_eq!(
            got,
            client.iter().cloned().map(Ok).collect::<Vec<_>>(),
            "iteration {iteration}"
        );
        let got = decode::<ServerFrame>(format, &encode_all(format, &server)).expect("readable");
        assert_eq!(
            got,
            server.iter().cloned().map(Ok).collect::<Vec<_>>(),
            "iteration {iteration}"
        );
        // A server frame is no client frame (HEARTBEAT aside), and the other way round.
        for result in decode::<ClientFrame>(format, &encode_all(format, &server)).expect("readable")
        {
            if let Err(error) = result {
                assert_eq!(error.code, ErrorCode::UnknownFrame, "{error:?}");
            }
        }
    }
}

#[test]
fn mutated_messages_never_panic_and_errors_are_classified() {
    let donors = encoded_samples();
    let values = sample_values();
    let mut rng = Rng::new(2);
    let mut tally = Tally::default();
    for iteration in 0..ITERATIONS {
        let message = if rng.below(2) == 0 {
            structured_message(&mut rng, &values)
        } else {
            let (_, sample) = rng.pick(&donors);
            let mut message = sample.clone();
            for _ in 0..1 + rng.below(3) {
                mutate_bytes(&mut rng, &mut message, &donors);
            }
            message
        };
        let result = std::panic::catch_unwind(|| check_message(&message));
        match result {
            Ok(counted) => tally.add(counted),
            Err(panic) => {
                eprintln!("iteration {iteration}: message {message:?}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    // The mutations must reach every outcome, or this test checks little.
    for (what, n) in [
        ("unreadable messages", tally.unreadable),
        ("decoded frames", tally.frames),
        ("malformed frames", tally.malformed),
        ("unknown frames", tally.unknown),
    ] {
        assert!(n > 200, "only {n} {what}: {tally:?}");
    }
}

/// Writes the samples as the `client_protocol` fuzz target's seed corpus into the
/// folder named by `TERN_FUZZ_SEED_DIR`: every frame alone in both formats, and all
/// client and all server frames joined in one message per format. Run by
/// `scripts/fuzz.sh`.
#[test]
#[ignore = "a tool: writes the fuzz seed corpus; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let dir = std::env::var_os("TERN_FUZZ_SEED_DIR").expect("TERN_FUZZ_SEED_DIR names the folder");
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).expect("seed folder can be created");
    let write = |name: String, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).expect("seed can be written");
    };
    for format in Format::ALL {
        let ext = if format.is_text() { "json" } else { "msgpack" };
        for (i, frame) in client_samples().iter().enumerate() {
            write(
                format!("client-{i:02}-{}.{ext}", frame.kind()),
                &encode(format, frame),
            );
        }
        for (i, frame) in server_samples().iter().enumerate() {
            write(
                format!("server-{i:02}-{}.{ext}", frame.kind()),
                &encode(format, frame),
            );
        }
        write(
            format!("client-all.{ext}"),
            &encode_all(format, &client_samples()),
        );
        write(
            format!("server-all.{ext}"),
            &encode_all(format, &server_samples()),
        );
    }
}
