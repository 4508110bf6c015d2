//! Identifiers and positions shared by the edge and the log.
//!
//! Every value here is parsed once at the boundary ("parse, don't validate"): a
//! [`ChannelName`] that exists is valid, a [`Serial`] is never zero.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest channel name, in bytes of UTF-8.
pub const MAX_CHANNEL_NAME_BYTES: usize = 255;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelNameError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_NAME_BYTES`].
    #[error("channel name is {0} bytes; the limit is {MAX_CHANNEL_NAME_BYTES}")]
    TooLong(usize),
    /// The name holds a control or whitespace character.
    #[error("channel name holds a control or whitespace character at byte {0}")]
    BadCharacter(usize),
}

/// A channel name: 1 to 255 bytes of UTF-8 without control or whitespace characters.
///
/// Names starting with `$` are system channels (for example `$functions`); the log
/// stores them like any other, the edge keeps clients away from them.
/// Cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Parses a channel name.
    pub fn parse(name: &str) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > MAX_CHANNEL_NAME_BYTES {
            return Err(ChannelNameError::TooLong(name.len()));
        }
        if let Some((at, _)) = name
            .char_indices()
            .find(|(_, c)| c.is_control() || c.is_whitespace())
        {
            return Err(ChannelNameError::BadCharacter(at));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for system channels (names starting with `$`).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ChannelName {
    type Err = ChannelNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The sequencer generation of a channel's history.
///
/// Positions from different epochs are only comparable through the log's epoch
/// history: a position is trusted only if the log still has that exact
/// `(epoch, serial)`. See `tern-log`'s crate docs for when the epoch changes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A message's place in its channel: dense, starting at 1, never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Serial(std::num::NonZeroU64);

impl Serial {
    /// The first serial of every channel.
    pub const FIRST: Serial = Serial(std::num::NonZeroU64::MIN);

    /// `Some` unless `n` is zero.
    pub fn new(n: u64) -> Option<Self> {
        std::num::NonZeroU64::new(n).map(Self)
    }

    /// The serial as a number.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// The serial after this one.
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl TryFrom<u64> for Serial {
    type Error = &'static str;
    fn try_from(n: u64) -> Result<Self, Self::Error> {
        Self::new(n).ok_or("serial 0 does not exist; serials start at 1")
    }
}

impl From<Serial> for u64 {
    fn from(s: Serial) -> u64 {
        s.get()
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a message sits in its channel: `(epoch, serial)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The sequencer generation that assigned `serial`.
    pub epoch: Epoch,
    /// Dense per channel.
    pub serial: Serial,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_checked() {
        assert!(ChannelName::parse("chat:lobby").is_ok());
        assert!(ChannelName::parse("$functions").is_ok_and(|c| c.is_system()));
        assert_eq!(ChannelName::parse(""), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::parse(&"x".repeat(256)),
            Err(ChannelNameError::TooLong(256))
        );
        assert_eq!(
            ChannelName::parse("a b"),
            Err(ChannelNameError::BadCharacter(1))
        );
        assert_eq!(
            ChannelName::parse("a\u{0}"),
            Err(ChannelNameError::BadCharacter(1))
        );
    }

    #[test]
    fn serial_zero_is_refused() {
        assert!(Serial::new(0).is_none());
        assert_eq!(Serial::FIRST.next().get(), 2);
        assert!(postcard::from_bytes::<Serial>(&[0]).is_err());
    }
}
