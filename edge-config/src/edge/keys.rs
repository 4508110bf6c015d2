//! API keys and what they allow: channel patterns, operations, and the constant-time
//! secret check.
//!
//! A key is written `"app.keyid:secret"`. Its capabilities map channel patterns to
//! operations; what a key may do on a channel is the union of the operations of every
//! pattern that matches it:
//!
//! ```text
//! capabilities = { "*" = ["subscribe"], "chat:*" = ["publish", "subscribe", "history"] }
//!   granted("news")      = subscribe
//!   granted("chat:room") = publish + subscribe + history
//!   granted("$functions") = nothing ("*" does not reach system channels)
//! ```

use std::fmt;

use tern_link::{ChannelName, ChannelNameError};

use crate::token::constant_time_eq;

/// Shortest secret accepted, in characters.
pub const MIN_SECRET_CHARS: usize = 16;

/// Something a key may do on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Publish messages (client PUBLISH, REST `POST …/messages`).
    Publish,
    /// Attach and receive messages.
    Subscribe,
    /// Read stored messages (rewind, REST `GET …/messages`).
    History,
}

impl Operation {
    /// Every operation, in a stable order.
    pub const ALL: [Operation; 3] = [Operation::Publish, Operation::Subscribe, Operation::History];

    /// The name used in config files: `"publish"`, `"subscribe"` or `"history"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Publish => "publish",
            Operation::Subscribe => "subscribe",
            Operation::History => "history",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Operation::Publish => 1,
            Operation::Subscribe => 2,
            Operation::History => 4,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Operation`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Operations(u8);

impl Operations {
    /// No operation.
    pub const NONE: Operations = Operations(0);
    /// Every operation (`"*"` in config files).
    pub const ALL: Operations = Operations(1 | 2 | 4);

    /// True if `op` is in the set.
    pub fn contains(self, op: Operation) -> bool {
        self.0 & op.bit() != 0
    }

    /// True if the set holds no operation.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set with `op` added.
    pub fn with(self, op: Operation) -> Self {
        Self(self.0 | op.bit())
    }

    /// Both sets together.
    pub fn union(self, other: Operations) -> Self {
        Self(self.0 | other.0)
    }

    /// The operations in the set, in [`Operation::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Operation> {
        Operation::ALL
            .into_iter()
            .filter(move |op| self.contains(*op))
    }
}

impl From<Operation> for Operations {
    fn from(op: Operation) -> Self {
        Operations::NONE.with(op)
    }
}

impl FromIterator<Operation> for Operations {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        iter.into_iter().fold(Operations::NONE, Operations::with)
    }
}

impl std::ops::BitOr for Operations {
    type Output = Operations;
    fn bitor(self, other: Operations) -> Operations {
        self.union(other)
    }
}

impl fmt::Debug for Operations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Why a channel pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern is empty.
    #[error("pattern is empty: use \"*\" for every channel")]
    Empty,
    /// A `*` somewhere other than at the end.
    #[error("`*` is only allowed at the end of a pattern (found at byte {0})")]
    MisplacedStar(usize),
    /// The name (or the part before `*`) is not a valid channel name.
    #[error("{0}")]
    InvalidName(ChannelNameError),
}

/// Which channels a capability applies to: an exact channel name, or a name ending in
/// `*` that matches every channel starting with the part before the `*` (`"*"` alone
/// matches every channel, `"chat:*"` matches `chat:` and `chat:room1`).
///
/// A pattern never matches a system channel (a name starting with `$`) unless the
/// pattern itself starts with `$`: `"*"` does not grant `$functions`, `"$*"` does.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChannelPattern {
    /// The pattern as written; a prefix pattern when it ends in `*` (no other `*`).
    text: String,
}

impl ChannelPattern {
    /// Parses a pattern; the name (or the part before a final `*`) must be a valid
    /// channel name or prefix of one.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let name = text.strip_suffix('*').unwrap_or(text);
        if let Some(at) = name.find('*') {
            return Err(PatternError::MisplacedStar(at));
        }
        // A prefix of a valid name is itself valid (the rules are per character plus a
        // length cap), so the same check serves both kinds.
        if !name.is_empty() {
            ChannelName::parse(name).map_err(PatternError::InvalidName)?;
        }
        Ok(Self {
            text: text.to_owned(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True if the pattern covers `channel`.
    pub fn matches(&self, channel: &str) -> bool {
        if channel.starts_with('$') && !self.text.starts_with('$') {
            return false;
        }
        match self.text.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => channel == self.text,
        }
    }
}

impl fmt::Debug for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a key may do, per channel pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    grants: Vec<(ChannelPattern, Operations)>,
}

impl Capabilities {
    /// Capabilities granting `ops` on the channels each pattern matches.
    pub fn new(grants: impl IntoIterator<Item = (ChannelPattern, Operations)>) -> Self {
        Self {
            grants: grants.into_iter().collect(),
        }
    }

    /// Every operation granted on `channel`: the union over all matching patterns.
    pub fn granted(&self, channel: &str) -> Operations {
        self.grants
            .iter()
            .filter(|(pattern, _)| pattern.matches(channel))
            .fold(Operations::NONE, |all, (_, ops)| all | *ops)
    }

    /// True if `op` is granted on `channel`.
    pub fn allows(&self, channel: &str, op: Operation) -> bool {
        self.granted(channel).contains(op)
    }

    /// The patterns and what each grants, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (&ChannelPattern, Operations)> {
        self.grants.iter().map(|(pattern, ops)| (pattern, *ops))
    }
}

/// An API key clients authenticate with: `"app.keyid:secret"`.
///
/// `Debug` does not show the secret, so a config can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The application the key belongs to.
    pub app: String,
    /// The key's id, unique across the config; safe to log.
    pub key_id: String,
    /// The secret; compare it with [`ApiKey::secret_matches`], never with `==`.
    pub secret: String,
    /// What the key may do.
    pub capabilities: Capabilities,
}

impl ApiKey {
    /// True if `presented` is this key's secret. Takes the same time whatever the
    /// contents, so response times do not reveal how much of a guess was right; only
    /// a difference in length returns early (the length is not secret).
    pub fn secret_matches(&self, presented: &str) -> bool {
        constant_time_eq(self.secret.as_bytes(), presented.as_bytes())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("app", &self.app)
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

/// Splits `"app.keyid:secret"` at the first `.` and the first `:` after it. Says
/// what is wrong without quoting the text, which holds a secret.
pub(crate) fn split_key(text: &str) -> Result<(&str, &str, &str), String> {
    const FORMAT: &str = "must be \"app.keyid:secret\"";
    let Some((app, rest)) = text.split_once('.') else {
        return Err(format!("{FORMAT}: no `.` after the app"));
    };
    let Some((key_id, secret)) = rest.split_once(':') else {
        return Err(format!("{FORMAT}: no `:` after the key id"));
    };
    if app.is_empty() {
        return Err(format!("{FORMAT}: the app is empty"));
    }
    if app.contains(':') {
        return Err(format!("{FORMAT}: the app must not hold `:`"));
    }
    if key_id.is_empty() {
        return Err(format!("{FORMAT}: the key id is empty"));
    }
    if key_id.contains('.') {
        return Err(format!("{FORMAT}: the key id must not hold `.`"));
    }
    let chars = secret.chars().count();
    if chars < MIN_SECRET_CHARS {
        return Err(format!(
            "the secret is {chars} characters; at least {MIN_SECRET_CHARS} are required"
        ));
    }
    Ok((app, key_id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> ChannelPattern {
        ChannelPattern::parse(text).expect("valid pattern in tests")
    }

    #[test]
    fn exact_and_prefix_patterns() {
        assert!(pattern("chat:lobby").matches("chat:lobby"));
        assert!(!pattern("chat:lobby").matches("chat:lobby2"));
        assert!(!pattern("chat:lobby").matches("chat:"));
        assert!(pattern("chat:*").matches("chat:"));
        assert!(pattern("chat:*").matches("chat:room1"));
        assert!(!pattern("chat:*").matches("chat"));
        assert!(!pattern("chat:*").matches("news:chat:1"));
        assert!(pattern("*").matches("anything"));
        assert!(pattern("*").matches("a"));
    }

    #[test]
    fn system_channels_need_a_dollar_pattern() {
        assert!(!pattern("*").matches("$functions"));
        assert!(pattern("$*").matches("$functions"));
        assert!(pattern("$func*").matches("$functions"));
        assert!(pattern("$functions").matches("$functions"));
        assert!(!pattern("$*").matches("chat:room"));
        // A name with `$` later on is an ordinary channel.
        assert!(pattern("*").matches("chat:$x"));
        assert!(pattern("chat:*").matches("chat:$x"));
    }

    #[test]
    fn bad_patterns_say_why() {
        assert_eq!(ChannelPattern::parse(""), Err(PatternError::Empty));
        assert_eq!(
            ChannelPattern::parse("*:chat"),
            Err(PatternError::MisplacedStar(0))
        );
        assert_eq!(
            ChannelPattern::parse("chat:*:x*"),
            Err(PatternError::MisplacedStar(5))
        );
        assert_eq!(
            ChannelPattern::parse("**"),
            Err(PatternError::MisplacedStar(0))
        );
        assert!(matches!(
            ChannelPattern::parse("chat room"),
            Err(PatternError::InvalidName(ChannelNameError::BadCharacter(4)))
        ));
        assert!(matches!(
            ChannelPattern::parse(&format!("{}*", "x".repeat(256))),
            Err(PatternError::InvalidName(ChannelNameError::TooLong(256)))
        ));
    }

    #[test]
    fn granted_is_the_union_of_matching_patterns() {
        let caps = Capabilities::new([
            (pattern("*"), Operation::Subscribe.into()),
            (
                pattern("chat:*"),
                Operations::from_iter([Operation::Publish, Operation::History]),
            ),
            (pattern("$functions"), Operations::ALL),
        ]);
        assert_eq!(caps.granted("news"), Operation::Subscribe.into());
        assert_eq!(caps.granted("chat:room"), Operations::ALL);
        assert_eq!(caps.granted("$functions"), Operations::ALL);
        assert_eq!(caps.granted("$other"), Operations::NONE);
        assert!(caps.allows("chat:x", Operation::Publish));
        assert!(!caps.allows("news", Operation::Publish));
        assert!(!Capabilities::default().allows("news", Operation::Subscribe));
    }

    #[test]
    fn operation_sets() {
        let set = Operations::from(Operation::History).with(Operation::Publish);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Operation::Publish, Operation::History]
        );
        assert!(!set.contains(Operation::Subscribe));
        assert_eq!(format!("{set:?}"), "{Publish, History}");
        assert!(Operations::NONE.is_empty());
        assert_eq!(Operations::ALL.iter().count(), 3);
    }

    #[test]
    fn keys_are_split_and_checked_without_echoing_the_secret() {
        let secret = "0123456789abcdef";
        assert_eq!(
            split_key(&format!("app.k1:{secret}")),
            Ok(("app", "k1", secret))
        );
        // The secret may hold `.` and `:`.
        assert_eq!(
            split_key("app.k1:s3cr.t:with:colons"),
            Ok(("app", "k1", "s3cr.t:with:colons"))
        );
        let cases: &[(&str, &str)] = &[
            ("appk1:0123456789abcdef", "no `.`"),
            ("app.k10123456789abcdef", "no `:`"),
            (".k1:0123456789abcdef", "the app is empty"),
            ("app.:0123456789abcdef", "the key id is empty"),
            ("a:b.k1:0123456789abcdef", "the app must not hold `:`"),
            ("app.k.1:0123456789abcdef", "the key id must not hold `.`"),
            ("app.k1:short", "the secret is 5 characters"),
            ("app.k1:", "the secret is 0 characters"),
        ];
        for (text, want) in cases {
            let error = split_key(text).expect_err(text);
            assert!(error.contains(want), "{text}: {error}");
            assert!(!error.contains("0123456789abcdef"), "{error}");
        }
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        let key = ApiKey {
            app: "app".into(),
            key_id: "k1".into(),
            secret: "0123456789abcdef".into(),
            capabilities: Capabilities::default(),
        };
        assert!(key.secret_matches("0123456789abcdef"));
        assert!(!key.secret_matches("0123456789abcdeF"));
        assert!(!key.secret_matches("0123456789abcde"));
        assert!(!key.secret_matches(""));
        assert!(!format!("{key:?}").contains("0123456789abcdef"));
    }
}
