//! BIRD's control-socket replies: a sans-IO decoder from bytes to [`Reply`]s.
//!
//! BIRD answers each command line with reply lines (BIRD's `nest/cli.c`): a
//! four-digit code, then `-` when more lines follow or a space on the last line, then
//! text. A line that starts with a single space continues the code of the line before
//! it. `0001` is the greeting, `0000` ends a successful listing, 8xxx are run-time
//! errors and 9xxx parse errors. Lines that start with `+` are spontaneous log echoes,
//! which belong to no reply (this client never asks for them) and are skipped.
//!
//! ```text
//!   2002-Name       Proto      Table      State  Since         Info     header, more follows
//!   1002-anycast4   Static     master4    up     16:52:05.778           code 1002, more follows
//!    uplink     BGP        ---        up     16:52:10.658  Established  continuation of 1002
//!   0000                                                               last line: reply done
//! ```
//!
//! Every line and every reply is bounded ([`MAX_LINE_BYTES`], [`MAX_REPLY_BYTES`]); a
//! stream that breaks the grammar or the bounds is an error, after which the decoder
//! refuses everything (the connection is out of step and must be dropped).

use std::collections::VecDeque;
use std::fmt;

/// Longest reply line accepted, newline excluded. BIRD formats lines into far
/// smaller buffers; this only bounds what a broken peer can make us hold.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Largest reply accepted, in bytes of its lines.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// A reply code: four decimal digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Code(u16);

impl Code {
    /// `0000`: the command succeeded (ends listings).
    pub const OK: Code = Code(0);
    /// `0001`: the greeting BIRD sends on connect.
    pub const WELCOME: Code = Code(1);

    /// The code from its four digits, if they are four ASCII digits.
    pub fn from_digits(digits: &[u8]) -> Option<Code> {
        if digits.len() != 4 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = digits
            .iter()
            .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
        Some(Code(value))
    }

    /// The number, `0..=9999`.
    pub fn value(self) -> u16 {
        self.0
    }

    /// 8xxx (run-time error) or 9xxx (parse error).
    pub fn is_error(self) -> bool {
        self.0 >= 8000
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

/// One line of a reply, continuation prefix resolved to its code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyLine {
    /// The line's code (for a continuation line, the code it continues).
    pub code: Code,
    /// The text after the code and separator (bytes that are not UTF-8 replaced).
    pub text: String,
}

/// A complete reply: every line of it, the last one included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    lines: Vec<ReplyLine>,
}

impl Reply {
    /// Every line, in order; never empty.
    pub fn lines(&self) -> &[ReplyLine] {
        &self.lines
    }

    /// The last line: the one whose code was followed by a space.
    pub fn last(&self) -> &ReplyLine {
        self.lines
            .last()
            .expect("a reply is only built once its last line arrived")
    }

    /// The first error line (8xxx or 9xxx), if BIRD refused or failed the command.
    pub fn error(&self) -> Option<&ReplyLine> {
        self.lines.iter().find(|l| l.code.is_error())
    }

    /// The lines carrying `code`.
    pub fn with_code(&self, code: u16) -> impl Iterator<Item = &ReplyLine> {
        self.lines.iter().filter(move |l| l.code.value() == code)
    }
}

/// Why a byte stream is not a sequence of BIRD replies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line longer than [`MAX_LINE_BYTES`].
    #[error("a reply line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// A reply longer than [`MAX_REPLY_BYTES`].
    #[error("a reply is longer than {MAX_REPLY_BYTES} bytes")]
    ReplyTooLong,
    /// A line that is neither `CCCC-text`, `CCCC text`, ` text` nor `+text`.
    #[error("malformed reply line {line:?}")]
    BadLine {
        /// The line's start, lossily decoded.
        line: String,
    },
    /// A continuation line (leading space) with no coded line before it in the reply.
    #[error("continuation line {line:?} with no line before it")]
    OrphanContinuation {
        /// The line's start, lossily decoded.
        line: String,
    },
    /// A complete reply whose content does not fit the command that was sent.
    #[error("unexpected reply: {what}")]
    Unexpected {
        /// What did not fit, with the offending text.
        what: String,
    },
    /// An earlier error put the stream out of step; nothing more is decoded.
    #[error("the reply stream broke earlier")]
    Broken,
}

impl ReplyError {
    /// An [`ReplyError::Unexpected`] naming `what` and the line it was found in.
    pub(crate) fn unexpected(what: &str, line: &str) -> ReplyError {
        ReplyError::Unexpected {
            what: format!("{what} in {:?}", excerpt(line.as_bytes())),
        }
    }
}

/// At most 120 bytes of `line`, lossily decoded, for error messages.
fn excerpt(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned()
}

/// Turns the bytes BIRD sends into replies.
///
/// `decoder.handle_bytes(&buf[..n])?; while let Some(reply) = decoder.poll_reply() { … }`
#[derive(Debug, Default)]
pub struct ReplyDecoder {
    /// Bytes of the line not yet ended by a newline.
    partial: Vec<u8>,
    /// Lines of the reply being assembled.
    lines: Vec<ReplyLine>,
    /// Bytes of the reply being assembled.
    reply_bytes: usize,
    /// Complete replies not yet polled.
    ready: VecDeque<Reply>,
    broken: bool,
}

impl ReplyDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        ReplyDecoder::default()
    }

    /// Takes bytes read from the socket. After an error every later call fails with
    /// [`ReplyError::Broken`]; replies completed before the error can still be polled.
    pub fn handle_bytes(&mut self, mut bytes: &[u8]) -> Result<(), ReplyError> {
        if self.broken {
            return Err(ReplyError::Broken);
        }
        while !bytes.is_empty() {
            let (chunk, ended) = match memchr_newline(bytes) {
                Some(at) => (&bytes[..at], Some(at + 1)),
                None => (bytes, None),
            };
            if self.partial.len() + chunk.len() > MAX_LINE_BYTES {
                return Err(self.break_with(ReplyError::LineTooLong));
            }
            self.partial.extend_from_slice(chunk);
            let Some(consumed) = ended else { break };
            bytes = &bytes[consumed..];
            let line = std::mem::take(&mut self.partial);
            if let Err(e) = self.handle_line(&line) {
                return Err(self.break_with(e));
            }
            self.partial = line;
            self.partial.clear();
        }
        Ok(())
    }

    /// The next complete reply, oldest first.
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.ready.pop_front()
    }

    /// Whether the decoder holds part of a reply (bytes or lines not yet complete).
    pub fn is_mid_reply(&self) -> bool {
        !self.partial.is_empty() || !self.lines.is_empty()
    }

    fn break_with(&mut self, error: ReplyError) -> ReplyError {
        self.broken = true;
        self.partial = Vec::new();
        self.lines = Vec::new();
        error
    }

    fn handle_line(&mut self, line: &[u8]) -> Result<(), ReplyError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (code, last, text) = match line.first() {
            // A log echo; never part of a reply.
            Some(b'+') => return Ok(()),
            Some(b' ') => {
                let code = self.lines.last().map(|l| l.code).ok_or_else(|| {
                    ReplyError::OrphanContinuation {
                        line: excerpt(line),
                    }
                })?;
                (code, false, &line[1..])
            }
            _ => {
                let bad = || ReplyError::BadLine {
                    line: excerpt(line),
                };
                let code = Code::from_digits(line.get(..4).ok_or_else(bad)?).ok_or_else(bad)?;
                let last = match line.get(4) {
                    Some(b' ') => true,
                    Some(b'-') => false,
                    _ => return Err(bad()),
                };
                (code, last, &line[5..])
            }
        };
        self.reply_bytes += line.len() + 1;
        if self.reply_bytes > MAX_REPLY_BYTES {
            return Err(ReplyError::ReplyTooLong);
        }
        self.lines.push(ReplyLine {
            code,
            text: String::from_utf8_lossy(text).into_owned(),
        });
        if last {
            self.reply_bytes = 0;
            self.ready.push_back(Reply {
                lines: std::mem::take(&mut self.lines),
            });
        }
        Ok(())
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut d = ReplyDecoder::new();
        d.handle_bytes(bytes)?;
        Ok(std::iter::from_fn(|| d.poll_reply()).collect())
    }

    fn texts(reply: &Reply) -> Vec<(u16, &str)> {
        reply
            .lines()
            .iter()
            .map(|l| (l.code.value(), l.text.as_str()))
            .collect()
    }

    #[test]
    fn greeting_is_one_line() {
        let replies = decode(b"0001 BIRD 2.0.12 ready.\n").expect("decodes");
        assert_eq!(replies.len(), 1);
        assert_eq!(texts(&replies[0]), [(1, "BIRD 2.0.12 ready.")]);
        assert_eq!(replies[0].last().code, Code::WELCOME);
        assert_eq!(replies[0].error(), None);
    }

    #[test]
    fn multi_line_reply_with_continuations() {
        let wire = concat!(
            "2002-Name       Proto      Table      State  Since         Info\n",
            "1002-device1    Device     ---        up     16:52:05.778  \n",
            " anycast4   Static     master4    up     16:52:05.778  \n",
            " uplink     BGP        ---        up     16:52:10.658  Established   \n",
            "0000 \n",
        )
        .as_bytes();
        let replies = decode(wire).expect("decodes");
        assert_eq!(replies.len(), 1);
        let lines = texts(&replies[0]);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0].0, 2002);
        assert_eq!(
            lines[2],
            (
                1002,
                "anycast4   Static     master4    up     16:52:05.778  "
            )
        );
        assert_eq!(lines[3].0, 1002);
        assert_eq!(lines[4], (0, ""));
        assert_eq!(replies[0].with_code(1002).count(), 3);
    }

    #[test]
    fn continuation_takes_the_code_of_the_line_before() {
        let wire = b"1007-Table master4:\n 203.0.113.10/32 blackhole [anycast4 1] * (200)\n\
1008-\tType: static univ\n1012-\tBGP.origin: IGP\n \tBGP.as_path: 65001\n0000 \n";
        let reply = decode(wire).expect("decodes").remove(0);
        let codes: Vec<u16> = reply.lines().iter().map(|l| l.code.value()).collect();
        assert_eq!(codes, [1007, 1007, 1008, 1012, 1012, 0]);
        assert_eq!(reply.lines()[4].text, "\tBGP.as_path: 65001");
    }

    #[test]
    fn errors_are_replies_with_an_error_code() {
        let replies = decode(b"8003 No protocols match\n9001 syntax error, unexpected GARBAGE\n")
            .expect("decodes");
        assert_eq!(replies.len(), 2);
        let e = replies[0].error().expect("8003 is an error");
        assert_eq!(
            (e.code.value(), e.text.as_str()),
            (8003, "No protocols match")
        );
        assert_eq!(replies[1].error().map(|l| l.code.value()), Some(9001));
        assert!(!Code::OK.is_error());
        assert!(Code(7999) < Code(8000) && Code(8000).is_error());
    }

    #[test]
    fn byte_at_a_time_gives_the_same_replies() {
        let wire = b"0009-anycast4: disabled\n0000 \n0011-anycast4: enabled\n0000 \n";
        let whole = decode(wire).expect("decodes");
        let mut d = ReplyDecoder::new();
        let mut split = Vec::new();
        for b in wire {
            d.handle_bytes(std::slice::from_ref(b)).expect("decodes");
            split.extend(std::iter::from_fn(|| d.poll_reply()));
        }
        assert_eq!(whole, split);
        assert_eq!(whole.len(), 2);
        assert!(!d.is_mid_reply());
    }

    #[test]
    fn partial_reply_waits_for_its_last_line() {
        let mut d = ReplyDecoder::new();
        d.handle_bytes(b"0009-anycast4: disabled\n00")
            .expect("decodes");
        assert!(d.poll_reply().is_none());
        assert!(d.is_mid_reply());
        d.handle_bytes(b"00 \n").expect("decodes");
        assert!(d.poll_reply().is_some());
    }

    #[test]
    fn log_echoes_and_carriage_returns_are_tolerated() {
        let replies = decode(b"+log line\r\n0009-x: disabled\r\n+another\n0000 \r\n").expect("ok");
        assert_eq!(texts(&replies[0]), [(9, "x: disabled"), (0, "")]);
    }

    #[test]
    fn malformed_lines_are_errors_and_break_the_stream() {
        for bad in [
            &b"hello\n"[..],
            b"000\n",
            b"0000\n",
            b"00a0 x\n",
            b"0000x\n",
            b"\n",
            b"-000 x\n",
        ] {
            let mut d = ReplyDecoder::new();
            let e = d.handle_bytes(bad).expect_err("malformed");
            assert!(matches!(e, ReplyError::BadLine { .. }), "{bad:?}: {e:?}");
            assert_eq!(d.handle_bytes(b"0000 \n"), Err(ReplyError::Broken));
        }
        assert!(matches!(
            decode(b" orphan\n"),
            Err(ReplyError::OrphanContinuation { .. })
        ));
        assert!(matches!(
            decode(b"0000 \n more\n"),
            Err(ReplyError::OrphanContinuation { .. })
        ));
    }

    #[test]
    fn replies_before_an_error_can_still_be_polled() {
        let mut d = ReplyDecoder::new();
        assert!(d.handle_bytes(b"0001 hello\nbad\n").is_err());
        assert!(d.poll_reply().is_some());
    }

    #[test]
    fn lines_and_replies_are_bounded() {
        let mut d = ReplyDecoder::new();
        let long = vec![b'1'; MAX_LINE_BYTES + 1];
        assert_eq!(d.handle_bytes(&long), Err(ReplyError::LineTooLong));

        let mut d = ReplyDecoder::new();
        let line = format!("1007-{}\n", "x".repeat(1000));
        let mut result = Ok(());
        for _ in 0..(MAX_REPLY_BYTES / line.len() + 1) {
            result = d.handle_bytes(line.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ReplyError::ReplyTooLong));
    }

    #[test]
    fn non_utf8_text_is_replaced_not_refused() {
        let replies = decode(b"1002-caf\xe9 Static\n0000 \n").expect("decodes");
        assert_eq!(replies[0].lines()[0].text, "caf\u{fffd} Static");
    }
}
