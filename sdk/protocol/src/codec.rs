//! The two encodings of protocol v1 and how several frames share one WebSocket
//! message.
//!
//! - `tern.v1.json` (text messages): one frame object, or an array of frame objects.
//! - `tern.v1.msgpack` (binary messages): one or more frame maps back to back.
//!
//! Decoding is two-level so that one bad frame costs only itself: a message that
//! cannot be split into frames at all is one [`FrameError`]; otherwise each frame
//! decodes (or fails) on its own. A failed PUBLISH still yields its `msg_serial`
//! when it can be read, so the server can NACK it instead of leaving it unanswered.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{ErrorCode, ErrorInfo};
use crate::frames::{
    Ack, Attach, Attached, ClientFrame, Close, Closed, Connect, Connected, Detach, Detached,
    Disconnected, ErrorFrame, Heartbeat, MessageFrame, Nack, Publish, ServerFrame,
};

/// The WebSocket subprotocol of the JSON encoding.
pub const SUBPROTOCOL_JSON: &str = "tern.v1.json";
/// The WebSocket subprotocol of the MessagePack encoding.
pub const SUBPROTOCOL_MSGPACK: &str = "tern.v1.msgpack";

/// Most nesting accepted in a MessagePack frame (JSON's parser stops at 128).
const MAX_MSGPACK_DEPTH: usize = 64;

/// An encoding of protocol v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `tern.v1.json`, sent as WebSocket text messages.
    Json,
    /// `tern.v1.msgpack`, sent as WebSocket binary messages.
    MsgPack,
}

impl Format {
    /// Both formats, the preferred one first.
    pub const ALL: [Format; 2] = [Format::Json, Format::MsgPack];

    /// The format a WebSocket subprotocol names.
    pub fn from_subprotocol(name: &str) -> Option<Format> {
        match name.trim() {
            SUBPROTOCOL_JSON => Some(Format::Json),
            SUBPROTOCOL_MSGPACK => Some(Format::MsgPack),
            _ => None,
        }
    }

    /// The WebSocket subprotocol of this format.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Format::Json => SUBPROTOCOL_JSON,
            Format::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    /// True when messages of this format are WebSocket text messages.
    pub fn is_text(self) -> bool {
        self == Format::Json
    }
}

/// A frame (or a whole message) that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    /// [`ErrorCode::Malformed`] or [`ErrorCode::UnknownFrame`].
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
    /// The frame's `type`, when it could be read.
    pub frame_type: Option<String>,
    /// The `msg_serial` of a PUBLISH that failed to decode, when it could be read.
    pub msg_serial: Option<u64>,
    /// The `channel` of the frame, when it could be read.
    pub channel: Option<String>,
}

impl FrameError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Malformed,
            message: message.into(),
            frame_type: None,
            msg_serial: None,
            channel: None,
        }
    }

    /// The error as it is sent to the peer.
    pub fn info(&self) -> ErrorInfo {
        ErrorInfo::new(self.code, self.message.clone())
    }
}

/// A set of frames one side decodes: [`ClientFrame`] (on servers) or
/// [`ServerFrame`] (on clients).
pub trait Frames: Sized + Serialize {
    /// Builds the frame of wire type `kind` with `parse`, or `None` for an unknown type.
    #[doc(hidden)]
    fn parse_as<P: Parser>(kind: &str, parser: P) -> Option<Result<Self, String>>;
}

/// Turns one frame's encoded form into a typed struct.
#[doc(hidden)]
pub trait Parser {
    /// Parses the whole frame as `T`.
    fn parse<T: DeserializeOwned>(self) -> Result<T, String>;
}

struct JsonParser<'a>(&'a str);

impl Parser for JsonParser<'_> {
    fn parse<T: DeserializeOwned>(self) -> Result<T, String> {
        serde_json::from_str(self.0).map_err(|e| e.to_string())
    }
}

struct MsgPackParser<'a>(&'a [u8]);

impl Parser for MsgPackParser<'_> {
    fn parse<T: DeserializeOwned>(self) -> Result<T, String> {
        rmp_serde::from_slice(self.0).map_err(|e| e.to_string())
    }
}

macro_rules! frame_set {
    ($set:ident { $($kind:literal => $variant:ident($ty:ty),)* }) => {
        impl Frames for $set {
            fn parse_as<P: Parser>(kind: &str, parser: P) -> Option<Result<Self, String>> {
                match kind {
                    $( $kind => Some(parser.parse::<$ty>().map($set::$variant)), )*
                    _ => None,
                }
            }
        }
    };
}

frame_set!(ClientFrame {
    "CONNECT" => Connect(Connect),
    "ATTACH" => Attach(Attach),
    "DETACH" => Detach(Detach),
    "PUBLISH" => Publish(Publish),
    "HEARTBEAT" => Heartbeat(Heartbeat),
    "CLOSE" => Close(Close),
});

frame_set!(ServerFrame {
    "CONNECTED" => Connected(Connected),
    "ATTACHED" => Attached(Attached),
    "DETACHED" => Detached(Detached),
    "MESSAGE" => Message(MessageFrame),
    "ACK" => Ack(Ack),
    "NACK" => Nack(Nack),
    "HEARTBEAT" => Heartbeat(Heartbeat),
    "ERROR" => Error(ErrorFrame),
    "DISCONNECTED" => Disconnected(Disconnected),
    "CLOSED" => Closed(Closed),
});

/// The fields read before the frame itself, leniently (wrong types read as absent).
#[derive(Deserialize, Default)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient")]
    msg_serial: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    channel: Option<String>,
}

fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Maybe<T> {
        Is(T),
        Not(serde::de::IgnoredAny),
    }
    Ok(match Maybe::<T>::deserialize(deserializer)? {
        Maybe::Is(value) => Some(value),
        Maybe::Not(_) => None,
    })
}

fn finish<F: Frames>(
    kind: Option<Cow<'_, str>>,
    msg_serial: Option<u64>,
    channel: Option<String>,
    parser: impl Parser,
) -> Result<F, FrameError> {
    let fail = |code, message: String, frame_type: Option<String>| FrameError {
        code,
        message,
        frame_type,
        msg_serial,
        channel: channel.clone(),
    };
    let Some(kind) = kind else {
        return Err(fail(
            ErrorCode::Malformed,
            "frame has no string \"type\" field".into(),
            None,
        ));
    };
    match F::parse_as(&kind, parser) {
        Some(Ok(frame)) => Ok(frame),
        Some(Err(error)) => Err(fail(
            ErrorCode::Malformed,
            format!("malformed {kind} frame: {error}"),
            Some(kind.into_owned()),
        )),
        None => Err(fail(
            ErrorCode::UnknownFrame,
            format!("unknown frame type {kind:?}"),
            Some(kind.into_owned()),
        )),
    }
}

fn decode_json_frame<F: Frames>(raw: &str) -> Result<F, FrameError> {
    let envelope: Envelope<'_> = serde_json::from_str(raw).map_err(|e| {
        FrameError::malformed(format!(
            "a frame must be a JSON object with a \"type\": {e}"
        ))
    })?;
    finish(
        envelope.kind,
        envelope.msg_serial,
        envelope.channel,
        JsonParser(raw),
    )
}

/// `bytes` is exactly the encoding of `value`: the value was read to find the
/// frame's end and its envelope fields; serde then parses the bytes again.
fn decode_msgpack_frame<F: Frames>(value: &rmpv::Value, bytes: &[u8]) -> Result<F, FrameError> {
    let rmpv::Value::Map(entries) = value else {
        return Err(FrameError::malformed("a frame must be a MessagePack map"));
    };
    let field = |name: &str| {
        entries
            .iter()
            .find(|(key, _)| key.as_str() == Some(name))
            .map(|(_, value)| value)
    };
    let kind = field("type")
        .and_then(rmpv::Value::as_str)
        .map(|kind| Cow::Owned(kind.to_owned()));
    let msg_serial = field("msg_serial").and_then(rmpv::Value::as_u64);
    let channel = field("channel")
        .and_then(rmpv::Value::as_str)
        .map(str::to_owned);
    finish(kind, msg_serial, channel, MsgPackParser(bytes))
}

/// Decodes one WebSocket message into its frames. The outer error means nothing in
/// the message could be read; otherwise each frame decodes or fails on its own.
pub fn decode<F: Frames>(
    format: Format,
    message: &[u8],
) -> Result<Vec<Result<F, FrameError>>, FrameError> {
    match format {
        Format::Json => {
            let text = std::str::from_utf8(message)
                .map_err(|e| FrameError::malformed(format!("message is not UTF-8: {e}")))?;
            let trimmed = text.trim_start();
            if trimmed.starts_with('[') {
                let parts: Vec<&RawValue> = serde_json::from_str(trimmed)
                    .map_err(|e| FrameError::malformed(format!("malformed JSON: {e}")))?;
                if parts.is_empty() {
                    // As in MessagePack: a message without a frame is an error the
                    // sender hears about, not silence.
                    return Err(FrameError::malformed(
                        "empty array: a message holds a frame",
                    ));
                }
                Ok(parts
                    .into_iter()
                    .map(|raw| decode_json_frame(raw.get()))
                    .collect())
            } else {
                // Check the syntax of the whole message first so that a broken one
                // is one error, not a frame error with a misleading type.
                let raw: &RawValue = serde_json::from_str(trimmed)
                    .map_err(|e| FrameError::malformed(format!("malformed JSON: {e}")))?;
                Ok(vec![decode_json_frame(raw.get())])
            }
        }
        Format::MsgPack => {
            let mut rest = message;
            let mut frames = Vec::new();
            if rest.is_empty() {
                return Err(FrameError::malformed("empty message"));
            }
            while !rest.is_empty() {
                let before = rest;
                let value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_MSGPACK_DEPTH)
                    .map_err(|e| {
                    FrameError::malformed(format!("malformed MessagePack: {e}"))
                })?;
                let used = before.len() - rest.len();
                frames.push(decode_msgpack_frame(&value, &before[..used]));
            }
            Ok(frames)
        }
    }
}

/// Encodes one frame on its own (a WebSocket message by itself, or a part for
/// [`join`]).
pub fn encode<F: Serialize>(format: Format, frame: &F) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(frame).expect("frames always serialise to JSON"),
        Format::MsgPack => {
            rmp_serde::to_vec_named(frame).expect("frames always serialise to MessagePack")
        }
    }
}

/// Joins frames encoded with [`encode`] into one WebSocket message. A single part is
/// returned as it is; this lets a server encode a MESSAGE once and share the bytes
/// among every subscriber.
pub fn join<P: AsRef<[u8]>>(format: Format, parts: &[P]) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.as_ref().len() + 1).sum();
    let mut out = Vec::with_capacity(total + 2);
    match (format, parts) {
        (_, [one]) => out.extend_from_slice(one.as_ref()),
        (Format::Json, parts) => {
            out.push(b'[');
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(part.as_ref());
            }
            out.push(b']');
        }
        (Format::MsgPack, parts) => {
            for part in parts {
                out.extend_from_slice(part.as_ref());
            }
        }
    }
    out
}

/// Encodes several frames as one WebSocket message.
pub fn encode_all<F: Serialize>(format: Format, frames: &[F]) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = frames.iter().map(|f| encode(format, f)).collect();
    join(format, &parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{Limits, Operation, PublishResult, Reconnect};
    use crate::message::{Data, Message, Position};

    fn samples() -> (Vec<ClientFrame>, Vec<ServerFrame>) {
        let mut message = Message::new(Data::Binary(vec![0, 1, 2, 255].into()));
        message.id = Some("m-1".into());
        message.name = Some("greeting".into());
        message.headers.insert("k".into(), "v".into());
        let text = Message::new("hello");
        let position = Position {
            epoch: 7,
            serial: 42,
        };
        let error = ErrorInfo::new(ErrorCode::Forbidden, "no");
        let client = vec![
            ClientFrame::Connect(Connect {
                key: Some("app.k:secret".into()),
                client_id: Some("c".into()),
                ..Connect::default()
            }),
            ClientFrame::Attach(Attach {
                channel: "chat".into(),
                from: Some(position),
                rewind: None,
            }),
            ClientFrame::Detach(Detach {
                channel: "chat".into(),
            }),
            ClientFrame::Publish(Publish {
                msg_serial: 3,
                channel: "chat".into(),
                messages: vec![message.clone(), text.clone()],
            }),
            ClientFrame::Heartbeat(Heartbeat {
                id: Some(9),
                connection_key: None,
            }),
            ClientFrame::Close(Close {}),
        ];
        let server = vec![
            ServerFrame::Connected(Connected {
                connection_id: "c1".into(),
                connection_key: "k".into(),
                heartbeat_interval_ms: 15_000,
                idle_timeout_ms: 45_000,
                limits: Limits {
                    max_frame_bytes: 1,
                    ..Limits::default()
                },
                error: Some(error.clone()),
                ..Connected::default()
            }),
            ServerFrame::Attached(Attached {
                channel: "chat".into(),
                position: Some(position),
                resumed: true,
                granted: vec![Operation::Publish, Operation::Subscribe],
                error: None,
            }),
            ServerFrame::Detached(Detached {
                channel: "chat".into(),
                error: Some(error.clone()),
            }),
            ServerFrame::Message(MessageFrame {
                channel: "chat".into(),
                position,
                message,
            }),
            ServerFrame::Message(MessageFrame {
                channel: "chat".into(),
                position,
                message: text,
            }),
            ServerFrame::Ack(Ack {
                msg_serial: 3,
                results: vec![PublishResult {
                    position,
                    duplicate: true,
                    dropped: None,
                }],
            }),
            ServerFrame::Nack(Nack {
                msg_serial: 4,
                error: error.clone(),
            }),
            ServerFrame::Heartbeat(Heartbeat::default()),
            ServerFrame::Error(ErrorFrame {
                error: error.clone(),
                channel: None,
            }),
            ServerFrame::Disconnected(Disconnected {
                error,
                reconnect: Reconnect::Elsewhere,
            }),
            ServerFrame::Closed(Closed {}),
        ];
        (client, server)
    }

    #[test]
    fn every_frame_round_trips_alone_and_together() {
        let (client, server) = samples();
        for format in Format::ALL {
            for frame in &client {
                let decoded =
                    decode::<ClientFrame>(format, &encode(format, frame)).expect("decodes");
                assert_eq!(decoded, vec![Ok(frame.clone())], "{format:?}");
            }
            for frame in &server {
                let decoded =
                    decode::<ServerFrame>(format, &encode(format, frame)).expect("decodes");
                assert_eq!(decoded, vec![Ok(frame.clone())], "{format:?}");
            }
            let all = decode::<ServerFrame>(format, &encode_all(format, &server)).expect("decodes");
            assert_eq!(all, server.iter().cloned().map(Ok).collect::<Vec<_>>());
        }
    }

    #[test]
    fn json_shape_is_the_documented_one() {
        let frame = ClientFrame::Publish(Publish {
            msg_serial: 0,
            channel: "chat".into(),
            messages: vec![Message::new("hi"), Message::new(vec![1u8, 2])],
        });
        let text = String::from_utf8(encode(Format::Json, &frame)).expect("utf8");
        assert_eq!(
            text,
            r#"{"type":"PUBLISH","msg_serial":0,"channel":"chat","messages":[{"data":"hi"},{"data":{"base64":"AQI="}}]}"#
        );
    }

    #[test]
    fn msgpack_binary_data_is_bin_and_enums_are_strings() {
        let frame = ServerFrame::Disconnected(Disconnected {
            error: ErrorInfo::new(ErrorCode::SlowConsumer, "slow"),
            reconnect: Reconnect::Retry,
        });
        let value =
            rmpv::decode::read_value(&mut &encode(Format::MsgPack, &frame)[..]).expect("value");
        let map = value.as_map().expect("map");
        let get = |k: &str| {
            map.iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("type")
                .and_then(|v| v.as_str().map(str::to_owned))
                .as_deref(),
            Some("DISCONNECTED")
        );
        assert_eq!(
            get("reconnect")
                .and_then(|v| v.as_str().map(str::to_owned))
                .as_deref(),
            Some("retry")
        );

        let publish = ClientFrame::Publish(Publish {
            msg_serial: 1,
            channel: "c".into(),
            messages: vec![Message::new(vec![9u8])],
        });
        let bytes = encode(Format::MsgPack, &publish);
        let value = rmpv::decode::read_value(&mut &bytes[..]).expect("value");
        let text = format!("{value}");
        assert!(text.contains("[9]") || text.contains("\\x09"), "{text}");
        assert!(!text.contains("base64"), "{text}");
    }

    #[test]
    fn errors_are_classified_and_keep_what_could_be_read() {
        let bad =
            decode::<ClientFrame>(Format::Json, b"{\"type\":\"PUBLISH\",").expect_err("broken");
        assert_eq!(bad.code, ErrorCode::Malformed);

        let frames = decode::<ClientFrame>(
            Format::Json,
            br#"[{"type":"NOPE"},{"type":"PUBLISH","msg_serial":5,"channel":"c","messages":"x"},{"type":"HEARTBEAT"},7]"#,
        )
        .expect("splits");
        assert_eq!(frames.len(), 4);
        let unknown = frames[0].clone().expect_err("unknown");
        assert_eq!(unknown.code, ErrorCode::UnknownFrame);
        assert_eq!(unknown.frame_type.as_deref(), Some("NOPE"));
        let publish = frames[1].clone().expect_err("malformed publish");
        assert_eq!(publish.code, ErrorCode::Malformed);
        assert_eq!(publish.msg_serial, Some(5));
        assert_eq!(publish.channel.as_deref(), Some("c"));
        assert_eq!(
            frames[2],
            Ok(ClientFrame::Heartbeat(Heartbeat {
                id: None,
                connection_key: None
            }))
        );
        assert_eq!(
            frames[3].clone().expect_err("not an object").code,
            ErrorCode::Malformed
        );

        let not_map = rmp_serde::to_vec(&[1, 2, 3]).expect("encode");
        let frames = decode::<ClientFrame>(Format::MsgPack, &not_map).expect("splits");
        assert_eq!(
            frames[0].clone().expect_err("array").code,
            ErrorCode::Malformed
        );
        let refused = |format, bytes: &[u8]| match decode::<ClientFrame>(format, bytes) {
            Err(_) => true,
            Ok(frames) => frames.iter().all(Result::is_err),
        };
        assert!(refused(Format::MsgPack, &[0xc1]));
        assert!(refused(Format::MsgPack, &[]));
        // Declared lengths far beyond the message must fail, not allocate.
        assert!(refused(Format::MsgPack, &[0xdd, 0xff, 0xff, 0xff, 0xff]));
        assert!(refused(Format::MsgPack, &[0xdf, 0xff, 0xff, 0xff, 0xff]));
        assert!(refused(Format::MsgPack, &[0xc6, 0xff, 0xff, 0xff, 0xff]));
        assert!(refused(Format::Json, &[0xff, 0xfe]));
        assert!(refused(Format::Json, b" [ ] "));
    }

    #[test]
    fn bad_data_and_positions_are_malformed() {
        for text in [
            r#"{"type":"PUBLISH","msg_serial":1,"channel":"c","messages":[{"data":{"base64":"%%"}}]}"#,
            r#"{"type":"PUBLISH","msg_serial":1,"channel":"c","messages":[{"data":{"other":1}}]}"#,
            r#"{"type":"PUBLISH","msg_serial":1,"channel":"c","messages":[{"data":12}]}"#,
            r#"{"type":"ATTACH","channel":"c","from":{"epoch":1}}"#,
            r#"{"type":"PUBLISH","msg_serial":-1,"channel":"c","messages":[]}"#,
        ] {
            let frames = decode::<ClientFrame>(Format::Json, text.as_bytes()).expect("splits");
            assert_eq!(
                frames[0].clone().expect_err(text).code,
                ErrorCode::Malformed,
                "{text}"
            );
        }
    }
}
