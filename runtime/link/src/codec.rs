//! Length-prefixed, versioned framing for [`Frame`]s (sans-IO).
//!
//! ```text
//! ┌────────────────┬─────────┬──────────────────────────────┐
//! │ len: u32 (BE)  │ version │ body: postcard(Frame)        │
//! │ = 1 + body len │  u8 = 1 │ enum tag (varint) + fields   │
//! └────────────────┴─────────┴──────────────────────────────┘
//! ```
//!
//! The decoder never trusts the peer: the length is checked against a limit before
//! any byte of the body is buffered, a body that does not parse or has trailing bytes
//! is refused, and nothing here can panic on input. A malformed frame is consumed
//! whole, so the stream stays in sync and the caller may answer and carry on; an
//! oversized frame or an unknown version ends the stream.

use bytes::{Buf, BytesMut};

use crate::frame::Frame;

/// The link protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 3;
/// Default largest frame accepted, in bytes (length field included).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
const LEN_BYTES: usize = 4;
/// Most the decoder reserves ahead of bytes that have arrived.
const RESERVE_STEP: usize = 64 * 1024;

/// Why bytes from a peer could not be turned into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces more than the limit; the stream cannot continue.
    #[error("frame of {announced} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes announced by the prefix.
        announced: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The frame is of a protocol version this build does not speak.
    #[error("link protocol version {0} is not supported (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The frame's length was fine but its body is not a valid frame; the frame was
    /// skipped and the stream may continue.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// True when the stream cannot be read any further.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, DecodeError::Malformed(_))
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the limit the peer accepts.
    #[error("encoded frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The serializer failed (a bug: every frame is serializable).
    #[error("frame could not be serialized: {0}")]
    Serialize(String),
}

/// Appends the encoding of `frame` to `out`, refusing frames over `max_frame_bytes`.
/// On `TooLarge`, `out` is left as it was.
pub fn encode_frame(
    frame: &Frame,
    out: &mut Vec<u8>,
    max_frame_bytes: usize,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    out.push(PROTOCOL_VERSION);
    let mut body = std::mem::take(out);
    body = match postcard::to_extend(frame, body) {
        Ok(body) => body,
        Err(e) => {
            // `to_extend` consumed the buffer; nothing sensible to restore but length.
            return Err(EncodeError::Serialize(e.to_string()));
        }
    };
    *out = body;
    let size = out.len() - start;
    if size > max_frame_bytes {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            size,
            limit: max_frame_bytes,
        });
    }
    let len = u32::try_from(size - LEN_BYTES).map_err(|_| EncodeError::TooLarge {
        size,
        limit: max_frame_bytes,
    })?;
    out[start..start + LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Encodes one frame into a fresh buffer.
pub fn encode_to_vec(frame: &Frame, max_frame_bytes: usize) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_frame(frame, &mut out, max_frame_bytes)?;
    Ok(out)
}

/// Turns a byte stream into frames. Feed it bytes with [`FrameDecoder::extend`], take
/// frames with [`FrameDecoder::next_frame`] until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_bytes: usize,
    /// Set by a fatal error, returned again by every later call.
    failed: Option<DecodeError>,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max_frame_bytes` (length prefix included).
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame_bytes: max_frame_bytes.max(LEN_BYTES + 1),
            failed: None,
        }
    }

    /// Adds bytes read from the peer.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. After a fatal
    /// error every further call returns that kind of error again.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < LEN_BYTES {
            return Ok(None);
        }
        let mut len_bytes = [0u8; LEN_BYTES];
        len_bytes.copy_from_slice(&self.buf[..LEN_BYTES]);
        let len = u32::from_be_bytes(len_bytes) as usize;
        let total = len.saturating_add(LEN_BYTES);
        if total > self.max_frame_bytes {
            return Err(self.fail(DecodeError::TooLarge {
                announced: total,
                limit: self.max_frame_bytes,
            }));
        }
        if self.buf.len() < total {
            // Grow with what arrives, never by what a peer merely announces: a
            // 4-byte prefix must not reserve 16 MiB.
            self.buf.reserve((total - self.buf.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        self.buf.advance(LEN_BYTES);
        let body = self.buf.split_to(len);
        let Some((&version, body)) = body.split_first() else {
            return Err(DecodeError::Malformed("empty frame".into()));
        };
        if version != PROTOCOL_VERSION {
            return Err(self.fail(DecodeError::UnsupportedVersion(version)));
        }
        match postcard::take_from_bytes::<Frame>(body) {
            Ok((frame, [])) => Ok(Some(frame)),
            Ok((_, rest)) => Err(DecodeError::Malformed(format!(
                "{} trailing bytes after the frame body",
                rest.len()
            ))),
            Err(e) => Err(DecodeError::Malformed(e.to_string())),
        }
    }
}

impl FrameDecoder {
    fn fail(&mut self, error: DecodeError) -> DecodeError {
        self.buf.clear();
        self.failed = Some(error.clone());
        error
    }
}

/// Decodes every frame in `bytes`, stopping at the first error. Used by the fuzz
/// target and tests; drivers use [`FrameDecoder`].
pub fn decode_all(bytes: &[u8], max_frame_bytes: usize) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    decoder.extend(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Outcome, PublishMessage};
    use crate::ids::{Epoch, Position, Serial};
    use bytes::Bytes;

    fn sample() -> Vec<Frame> {
        vec![
            Frame::Publish {
                request_id: 7,
                messages: vec![PublishMessage {
                    channel: "chat:a".into(),
                    idempotency_key: Bytes::from_static(b"k1"),
                    headers: vec![("h".into(), "v".into())],
                    payload: Bytes::from(vec![1u8; 300]),
                }],
            },
            Frame::PublishResult {
                request_id: 7,
                outcomes: vec![Outcome::Appended(Position {
                    epoch: Epoch(3),
                    serial: Serial::FIRST,
                })],
            },
            Frame::Ping { nonce: u64::MAX },
        ]
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let mut wire = Vec::new();
        for f in sample() {
            encode_frame(&f, &mut wire, DEFAULT_MAX_FRAME_BYTES).expect("small frame");
        }
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        let mut got = Vec::new();
        for b in &wire {
            decoder.extend(std::slice::from_ref(b));
            while let Some(f) = decoder.next_frame().expect("valid stream") {
                got.push(f);
            }
        }
        assert_eq!(got, sample());
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&(1u32 << 30).to_be_bytes());
        let err = decoder.next_frame().expect_err("too large");
        assert!(err.is_fatal());
        assert!(matches!(err, DecodeError::TooLarge { .. }));
        assert_eq!(decoder.buffered(), 0);
        decoder.extend(&[0, 0, 0, 1, PROTOCOL_VERSION]);
        assert_eq!(decoder.next_frame(), Err(err), "a fatal error sticks");
        let big = Frame::Publish {
            request_id: 1,
            messages: vec![PublishMessage {
                channel: "c".into(),
                idempotency_key: Bytes::new(),
                headers: vec![],
                payload: Bytes::from(vec![0u8; 2048]),
            }],
        };
        let mut out = vec![9];
        assert!(matches!(
            encode_frame(&big, &mut out, 1024),
            Err(EncodeError::TooLarge { .. })
        ));
        assert_eq!(out, vec![9]);
    }

    #[test]
    fn unknown_version_is_fatal() {
        let mut wire = encode_to_vec(&Frame::Ping { nonce: 1 }, 1024).expect("encodes");
        wire[LEN_BYTES] = 9;
        let err = decode_all(&wire, 1024).expect_err("bad version");
        assert_eq!(err, DecodeError::UnsupportedVersion(9));
        assert!(err.is_fatal());
    }

    #[test]
    fn malformed_frame_is_skipped_and_stream_continues() {
        let mut wire = vec![0, 0, 0, 3, PROTOCOL_VERSION, 0xff, 0xff];
        encode_frame(&Frame::Ping { nonce: 5 }, &mut wire, 1024).expect("encodes");
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&wire);
        let err = decoder.next_frame().expect_err("garbage body");
        assert!(!err.is_fatal());
        assert_eq!(
            decoder.next_frame().expect("next frame is fine"),
            Some(Frame::Ping { nonce: 5 })
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut wire = encode_to_vec(&Frame::Ping { nonce: 1 }, 1024).expect("encodes");
        wire.push(0);
        let len = u32::try_from(wire.len() - LEN_BYTES).expect("small");
        wire[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode_all(&wire, 1024),
            Err(DecodeError::Malformed(_))
        ));
    }
}
