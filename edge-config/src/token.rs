//! The shared secret of the health reports between edges and `tern dns`: a
//! [`ReportToken`], accepted by `tern dns` (`report_tokens`, several so that a token
//! can be rotated) and sent by each edge (`[health.dns] token`) as
//! `Authorization: Bearer TOKEN`.
//!
//! ```text
//!  edge ([health.dns] token) ──Authorization: Bearer TOKEN──▶ tern dns (report_tokens)
//!                                                             matches any? else 401
//! ```
//!
//! Problems about a token never quote it, and `Debug` hides it.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use crate::error::Problems;

/// Length of a report token, in bytes (all ASCII): at least 32, so that it cannot be
/// guessed (`openssl rand -hex 32` gives 64), at most 256, so that it fits a header.
pub const REPORT_TOKEN_BYTES: RangeInclusive<usize> = 32..=256;

/// A health report token. `Debug` does not show it; compare it with
/// [`ReportToken::matches`], never with `==` on what a request presented.
#[derive(Clone, PartialEq, Eq)]
pub struct ReportToken(String);

impl ReportToken {
    /// Checks `text` against the token rules: [`REPORT_TOKEN_BYTES`] long, visible
    /// ASCII (`!` to `~`, no space: it goes in a header after `Bearer `). The error
    /// says what is wrong without quoting the text.
    pub fn parse(text: &str) -> Result<ReportToken, String> {
        let len = text.len();
        if let Some(at) = text.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(format!(
                "holds a character other than visible ASCII at byte {at}: use letters, digits and punctuation, no spaces (like the output of `openssl rand -hex 32`)"
            ));
        }
        if !REPORT_TOKEN_BYTES.contains(&len) {
            return Err(format!(
                "is {len} characters; a token is {} to {} (like the output of `openssl rand -hex 32`)",
                REPORT_TOKEN_BYTES.start(),
                REPORT_TOKEN_BYTES.end()
            ));
        }
        Ok(ReportToken(text.to_owned()))
    }

    /// The token as it is sent (after `Bearer `).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True if `presented` is this token. Takes the same time whatever the contents,
    /// so response times do not reveal how much of a guess was right; only a
    /// difference in length returns early (the length is not secret).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

impl fmt::Debug for ReportToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReportToken(…)")
    }
}

/// Equality of two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// The token at `path`, or `None` with its problem recorded.
pub(crate) fn report_token(problems: &mut Problems, path: &str, text: &str) -> Option<ReportToken> {
    ReportToken::parse(text)
        .map_err(|message| problems.push(path, message))
        .ok()
}

/// Whether reports to or from `addr` may go without a token: only over loopback,
/// where nobody but this host's processes can send them.
pub(crate) fn loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_rules_and_messages_never_quote_the_token() {
        assert!(ReportToken::parse(GOOD).is_ok());
        assert!(ReportToken::parse(&"~".repeat(256)).is_ok());
        let short = &GOOD[1..];
        let long = "x".repeat(257);
        let spaced = format!("{GOOD} {GOOD}");
        let tabbed = format!("{GOOD}\t");
        let accented = format!("{GOOD}é");
        for (text, want) in [
            (short, "is 31 characters; a token is 32 to 256"),
            (long.as_str(), "is 257 characters"),
            ("", "is 0 characters"),
            (
                spaced.as_str(),
                "holds a character other than visible ASCII at byte 32",
            ),
            (
                tabbed.as_str(),
                "holds a character other than visible ASCII at byte 32",
            ),
            (
                accented.as_str(),
                "holds a character other than visible ASCII at byte 32",
            ),
        ] {
            let error = ReportToken::parse(text).expect_err(want);
            assert!(error.starts_with(want), "{error}");
            assert!(
                !error.contains("0123456789") && !error.contains("xxx"),
                "{error}"
            );
        }
    }

    #[test]
    fn matches_only_the_same_bytes_and_debug_hides_it() {
        let token = ReportToken::parse(GOOD).expect("valid");
        assert!(token.matches(GOOD.as_bytes()));
        let mut off = GOOD.as_bytes().to_vec();
        off[31] ^= 1;
        assert!(!token.matches(&off));
        assert!(!token.matches(&GOOD.as_bytes()[..31]));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "ReportToken(…)");
        assert_eq!(token.expose(), GOOD);
    }
}
