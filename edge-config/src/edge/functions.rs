//! Message functions in the edge config: the `[functions]` section, static functions,
//! and how one function is bound to channels ([`BindingSpec`]), the same whether it
//! comes from this file or from a live deploy.
//!
//! ```text
//! [[functions.static]]          tern deploy --bind … (JSON)
//!   name, path, bind, stage, …    bind, stage, policy, …
//!            │                           │
//!            ▼                           ▼
//!    RawStaticFunction ──────────▶ RawBindingSpec ──compile(path, max_memory)──▶ BindingSpec
//!                                        ▲                                          │
//!                                        └──────────────── to_raw() ◀───────────────┘
//! ```
//!
//! A [`BindingPattern`] is checked once, when the binding is compiled, and then matched
//! against every message's channel without allocating.
//!
//! This module does not open the `.wasm` files it names nor create `cache_dir`.

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tern_link::ChannelName;

use super::MIB;
use crate::check::{bytes_usize, count, duration};
use crate::error::{ConfigError, Problems};
use crate::units::{RawByteSize, to_usize};

/// Longest function name, in characters.
pub const MAX_FUNCTION_NAME_CHARS: usize = 64;
/// Most patterns in one binding.
pub const MAX_BINDING_PATTERNS: usize = 32;
/// Longest binding pattern, in bytes (the longest channel name).
pub const MAX_BINDING_PATTERN_BYTES: usize = tern_link::MAX_CHANNEL_NAME_BYTES;
/// Ceiling of a binding's memory when there is no `[functions] max_memory` to go by (a
/// binding compiled outside an edge, as `tern deploy` does): `max_memory`'s default.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 64 << 20;

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(2);
const TIMEOUT: RangeInclusive<Duration> = Duration::from_micros(100)..=Duration::from_secs(1);
const DEFAULT_MEMORY_BYTES: usize = 16 << 20;
const MIN_MEMORY_BYTES: u64 = MIB;
const DEFAULT_MAX_INSTANCES: u32 = 1000;
const MAX_INSTANCES: RangeInclusive<u64> = 1..=100_000;
const MAX_MEMORY: RangeInclusive<u64> = MIB..=4 * 1024 * MIB;

/// A function's name: 1 to 64 characters among `a`-`z`, `0`-`9`, `-` and `_`, starting
/// with a letter or a digit. One that exists is valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionName(String);

impl FunctionName {
    /// Parses a name, saying what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(first) = text.chars().next() else {
            return Err("function name is empty".into());
        };
        let chars = text.chars().count();
        if chars > MAX_FUNCTION_NAME_CHARS {
            return Err(format!(
                "function name is {chars} characters; at most {MAX_FUNCTION_NAME_CHARS} are allowed"
            ));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')))
        {
            return Err(format!(
                "function name {text:?} holds {bad:?}: use a-z, 0-9, `-` and `_`"
            ));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(format!(
                "function name {text:?} starts with {first:?}: start with a letter or a digit"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for FunctionName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FunctionName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The channels a binding applies to.
///
/// A pattern is split into segments on `:`. A segment `*` matches exactly one non-empty
/// segment, a last segment `#` matches zero or more segments, any other segment matches
/// itself:
///
/// ```text
/// chat:*      chat:room1                  not chat, chat:a:b, chat:
/// sensors:#   sensors, sensors:x, sensors:x:y   not sensorsx
/// #           every channel               not $functions (system)
/// $functions  $functions
/// ```
///
/// A pattern never matches a system channel (one starting with `$`) unless its first
/// segment starts with `$`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BindingPattern {
    text: String,
    /// No `*` or `#` segment: the pattern matches only the channel equal to it.
    literal: bool,
}

impl BindingPattern {
    /// Parses a pattern: 1 to 255 bytes without whitespace or control characters, no
    /// empty segment, `*` and `#` only as whole segments, `#` only as the last one.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_BINDING_PATTERN_BYTES {
            return Err(format!(
                "pattern is {} bytes; the limit is {MAX_BINDING_PATTERN_BYTES}",
                text.len()
            ));
        }
        ChannelName::parse(text).map_err(|error| format!("pattern {text:?}: {error}"))?;
        let count = text.split(':').count();
        let mut literal = true;
        for (index, segment) in text.split(':').enumerate() {
            match segment {
                "" => {
                    return Err(format!(
                        "pattern {text:?} has an empty segment (segments are separated by `:`)"
                    ));
                }
                "*" => literal = false,
                "#" if index + 1 == count => literal = false,
                "#" => {
                    return Err(format!(
                        "pattern {text:?}: `#` is only allowed as the last segment"
                    ));
                }
                _ if segment.contains(['*', '#']) => {
                    return Err(format!(
                        "pattern {text:?}: `*` and `#` must be a whole segment, like \"chat:*\" (found {segment:?})"
                    ));
                }
                _ => {}
            }
        }
        Ok(Self {
            text: text.to_owned(),
            literal,
        })
    }

    /// True if the pattern covers `channel`. Does not allocate.
    pub fn matches(&self, channel: &str) -> bool {
        if channel.starts_with('$') && !self.text.starts_with('$') {
            return false;
        }
        if self.literal {
            return channel == self.text;
        }
        let mut channel_segments = channel.split(':');
        for segment in self.text.split(':') {
            match segment {
                // Only ever the last segment: the rest of the channel, if any, matches.
                "#" => return true,
                "*" => match channel_segments.next() {
                    Some(part) if !part.is_empty() => {}
                    _ => return false,
                },
                literal => {
                    if channel_segments.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        channel_segments.next().is_none()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for BindingPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for BindingPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for BindingPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where in a message's path a function runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Once per published message, at the edge that received it, before the log.
    Ingress,
    /// Once per message per edge, before the edge fans it out to its clients.
    Egress,
}

impl Stage {
    /// The name used in config and the admin API: `"ingress"` or `"egress"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingress => "ingress",
            Stage::Egress => "egress",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a message when its function fails (traps, runs out of time or
/// memory, or cannot be instantiated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// The message is refused: the publisher gets a NACK carrying the error.
    #[default]
    FailClosed,
    /// The message goes on as if the function had passed it.
    FailOpen,
}

impl FailurePolicy {
    /// The name used in config and the admin API: `"fail-closed"` or `"fail-open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "fail-closed",
            FailurePolicy::FailOpen => "fail-open",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one function is bound, as written in TOML (`[[functions.static]]`) or sent as
/// JSON to the admin API. Every field but `bind` is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBindingSpec {
    /// Channel patterns (see [`BindingPattern`]), 1 to 32, no duplicates.
    pub bind: Vec<String>,
    /// `"ingress"` or `"egress"`. Default `"ingress"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// `"fail-closed"` or `"fail-open"`. Default `"fail-closed"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<FailurePolicy>,
    /// Time one call may take (duration). Default `"2ms"`; 100us..=1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Memory of one instance (byte size). Default `"16MiB"` (or the ceiling if that is
    /// lower); 1MiB..=the ceiling (`[functions] max_memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<RawByteSize>,
    /// Place in its chain: functions bound to a channel at a stage run in ascending
    /// `order`, then by name. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
}

/// How one function is bound: checked, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingSpec {
    /// The channels it applies to (a channel matching several is handled once).
    pub patterns: Vec<BindingPattern>,
    /// Where in a message's path it runs.
    pub stage: Stage,
    /// What happens to a message when it fails.
    pub policy: FailurePolicy,
    /// Time one call may take.
    pub timeout: Duration,
    /// Memory of one instance, in bytes.
    pub memory_bytes: usize,
    /// Place in its chain (ascending, then by function name).
    pub order: i32,
}

impl BindingSpec {
    /// True if any of the patterns covers `channel`.
    pub fn matches(&self, channel: &str) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(channel))
    }

    /// The canonical raw form, every field set (durations in whole `ms`, `us` or `ns`,
    /// memory in bytes), which compiles back to an equal spec under any ceiling at
    /// least `memory_bytes`.
    pub fn to_raw(&self) -> RawBindingSpec {
        RawBindingSpec {
            bind: self
                .patterns
                .iter()
                .map(|pattern| pattern.as_str().to_owned())
                .collect(),
            stage: Some(self.stage),
            policy: Some(self.policy),
            timeout: Some(canonical_duration(self.timeout)),
            memory: Some(RawByteSize::Count(
                i64::try_from(self.memory_bytes).unwrap_or(i64::MAX),
            )),
            order: Some(self.order),
        }
    }
}

/// `"2ms"`, `"1500us"` or `"100500ns"`: the largest of these units that is exact.
fn canonical_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1000) {
        format!("{}us", nanos / 1000)
    } else {
        format!("{nanos}ns")
    }
}

/// `path.key`, or `key` when `path` is empty.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl RawBindingSpec {
    /// Checks every field and fills in defaults, reporting every problem at once with
    /// paths under `path` (`"functions.static[0]"` gives
    /// `functions.static[0].timeout`; `""` gives `timeout`). `max_memory_bytes` is the
    /// ceiling of `memory`: the edge's `functions.max_memory_bytes`, or
    /// [`DEFAULT_MAX_MEMORY_BYTES`] outside an edge.
    pub fn compile(&self, path: &str, max_memory_bytes: usize) -> Result<BindingSpec, ConfigError> {
        let mut problems = Problems::default();
        let spec = self.compile_into(path, max_memory_bytes, &mut problems);
        problems.finish(spec)
    }

    /// [`RawBindingSpec::compile`], recording problems in `problems`; the result is
    /// only meaningful if none was recorded.
    fn compile_into(
        &self,
        path: &str,
        max_memory_bytes: usize,
        problems: &mut Problems,
    ) -> BindingSpec {
        let bind_path = join(path, "bind");
        if self.bind.is_empty() {
            problems.push(
                &bind_path,
                format!(
                    "is required: list 1 to {MAX_BINDING_PATTERNS} channel patterns, like [\"chat:*\"]"
                ),
            );
        } else if self.bind.len() > MAX_BINDING_PATTERNS {
            problems.push(
                &bind_path,
                format!(
                    "lists {} patterns; at most {MAX_BINDING_PATTERNS} are allowed",
                    self.bind.len()
                ),
            );
        }
        let mut patterns: Vec<BindingPattern> = Vec::with_capacity(self.bind.len());
        for (index, text) in self.bind.iter().enumerate() {
            let pattern_path = format!("{bind_path}[{index}]");
            if let Some(first) = self.bind[..index].iter().position(|other| other == text) {
                problems.push(
                    &pattern_path,
                    format!("{text:?} is also listed at {bind_path}[{first}]"),
                );
                continue;
            }
            match BindingPattern::parse(text) {
                Ok(pattern) => patterns.push(pattern),
                Err(message) => problems.push(&pattern_path, message),
            }
        }
        let timeout = duration(
            problems,
            &join(path, "timeout"),
            self.timeout.as_deref(),
            DEFAULT_TIMEOUT,
            TIMEOUT,
        );
        let ceiling = u64::try_from(max_memory_bytes).unwrap_or(u64::MAX);
        let memory_bytes = bytes_usize(
            problems,
            &join(path, "memory"),
            self.memory.as_ref(),
            DEFAULT_MEMORY_BYTES.min(max_memory_bytes),
            MIN_MEMORY_BYTES..=ceiling,
        );
        BindingSpec {
            patterns,
            stage: self.stage.unwrap_or(Stage::Ingress),
            policy: self.policy.unwrap_or_default(),
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            memory_bytes: memory_bytes.unwrap_or(DEFAULT_MEMORY_BYTES),
            order: self.order.unwrap_or(0),
        }
    }
}

/// Message functions on this edge (TOML: `[functions]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionsConfig {
    /// Where compiled components are cached. Default none: each start compiles again.
    pub cache_dir: Option<PathBuf>,
    /// Function instances alive at once on the edge. Default 1000; 1..=100 000.
    pub max_instances: u32,
    /// Ceiling of any binding's `memory`. Default 64 MiB; 1 MiB..=4 GiB.
    pub max_memory_bytes: usize,
    /// Functions loaded from files at start (TOML: `[[functions.static]]`), in file
    /// order, names unique.
    pub static_functions: Vec<StaticFunction>,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            static_functions: Vec::new(),
        }
    }
}

/// A function loaded from a file at start rather than deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticFunction {
    /// Its name, unique among static functions.
    pub name: FunctionName,
    /// The `.wasm` component (relative paths are relative to the edge's working
    /// directory); not opened by the config.
    pub path: PathBuf,
    /// How it is bound.
    pub binding: BindingSpec,
}

/// `[functions]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFunctionsConfig {
    /// Directory where compiled components are cached. Default none.
    pub cache_dir: Option<PathBuf>,
    /// Function instances alive at once. Default 1000; 1..=100000.
    pub max_instances: Option<i64>,
    /// Ceiling of any binding's memory (byte size). Default `"64MiB"`; 1MiB..=4GiB.
    pub max_memory: Option<RawByteSize>,
    /// `[[functions.static]]`, in file order. Default none.
    #[serde(default, rename = "static")]
    pub static_functions: Vec<RawStaticFunction>,
}

/// `[[functions.static]]`: a function's name and file, then the fields of
/// [`RawBindingSpec`]. `name`, `path` and `bind` are required (optional here so that a
/// missing one is reported with its path alongside every other problem).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticFunction {
    /// See [`FunctionName`]. Unique among static functions.
    pub name: Option<String>,
    /// The `.wasm` component.
    pub path: Option<PathBuf>,
    /// See [`RawBindingSpec::bind`].
    pub bind: Option<Vec<String>>,
    /// See [`RawBindingSpec::stage`].
    pub stage: Option<Stage>,
    /// See [`RawBindingSpec::policy`].
    pub policy: Option<FailurePolicy>,
    /// See [`RawBindingSpec::timeout`].
    pub timeout: Option<String>,
    /// See [`RawBindingSpec::memory`].
    pub memory: Option<RawByteSize>,
    /// See [`RawBindingSpec::order`].
    pub order: Option<i32>,
}

impl RawStaticFunction {
    /// The binding part of the entry.
    pub fn binding(&self) -> RawBindingSpec {
        RawBindingSpec {
            bind: self.bind.clone().unwrap_or_default(),
            stage: self.stage,
            policy: self.policy,
            timeout: self.timeout.clone(),
            memory: self.memory.clone(),
            order: self.order,
        }
    }
}

impl RawFunctionsConfig {
    pub(crate) fn compile(&self, problems: &mut Problems) -> FunctionsConfig {
        let defaults = FunctionsConfig::default();
        let cache_dir = match &self.cache_dir {
            Some(path) if path.as_os_str().is_empty() => {
                problems.push("functions.cache_dir", "must not be empty");
                None
            }
            other => other.clone(),
        };
        let max_instances = count(
            problems,
            "functions.max_instances",
            self.max_instances,
            to_usize(u64::from(defaults.max_instances)),
            MAX_INSTANCES,
        )
        .and_then(|n| u32::try_from(n).ok());
        let max_memory_bytes = bytes_usize(
            problems,
            "functions.max_memory",
            self.max_memory.as_ref(),
            defaults.max_memory_bytes,
            MAX_MEMORY,
        )
        .unwrap_or(defaults.max_memory_bytes);

        // Name → index of the entry that first used it.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut static_functions = Vec::with_capacity(self.static_functions.len());
        for (index, entry) in self.static_functions.iter().enumerate() {
            let path = format!("functions.static[{index}]");
            let name = match entry.name.as_deref() {
                None => {
                    problems.push(&format!("{path}.name"), "is required");
                    None
                }
                Some(text) => match FunctionName::parse(text) {
                    Ok(name) => match seen.get(text) {
                        Some(first) => {
                            problems.push(
                                &format!("{path}.name"),
                                format!("{text:?} is also the name of functions.static[{first}]"),
                            );
                            None
                        }
                        None => {
                            seen.insert(text, index);
                            Some(name)
                        }
                    },
                    Err(message) => {
                        problems.push(&format!("{path}.name"), message);
                        None
                    }
                },
            };
            let file = match &entry.path {
                None => {
                    problems.push(&format!("{path}.path"), "is required: the .wasm component");
                    None
                }
                Some(file) if file.as_os_str().is_empty() => {
                    problems.push(&format!("{path}.path"), "must not be empty");
                    None
                }
                Some(file) => Some(file.clone()),
            };
            let binding = entry
                .binding()
                .compile_into(&path, max_memory_bytes, problems);
            if let (Some(name), Some(path)) = (name, file) {
                static_functions.push(StaticFunction {
                    name,
                    path,
                    binding,
                });
            }
        }
        FunctionsConfig {
            cache_dir,
            max_instances: max_instances.unwrap_or(defaults.max_instances),
            max_memory_bytes,
            static_functions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::parse_edge_config;

    fn pattern(text: &str) -> BindingPattern {
        BindingPattern::parse(text).expect("valid pattern in tests")
    }

    #[test]
    fn patterns_match_by_segment() {
        // (pattern, channel, matches)
        let table: &[(&str, &str, bool)] = &[
            ("chat:*", "chat:room1", true),
            ("chat:*", "chat", false),
            ("chat:*", "chat:", false),
            ("chat:*", "chat:a:b", false),
            ("chat:*", "chatx:room1", false),
            ("chat:*", "news:chat", false),
            ("chat:*", "chat:$x", true),
            ("*:lobby", "chat:lobby", true),
            ("*:lobby", "chat:lobby:2", false),
            ("*:lobby", ":lobby", false),
            ("*", "news", true),
            ("*", "news:1", false),
            ("*:*", "a:b", true),
            ("*:*", "a", false),
            ("sensors:#", "sensors", true),
            ("sensors:#", "sensors:x", true),
            ("sensors:#", "sensors:x:y", true),
            ("sensors:#", "sensorsx", false),
            ("sensors:#", "other:sensors", false),
            ("a:*:#", "a", false),
            ("a:*:#", "a:b", true),
            ("a:*:#", "a:b:c:d", true),
            ("#", "news", true),
            ("#", "a:b:c", true),
            ("#", "$functions", false),
            ("*", "$functions", false),
            ("chat:room1", "chat:room1", true),
            ("chat:room1", "chat:room12", false),
            ("chat:room1", "chat:room1:x", false),
            ("$functions", "$functions", true),
            ("$functions", "functions", false),
            ("$functions:#", "$functions:profanity", true),
            ("$functions:*", "$functions:profanity", true),
            ("$functions:*", "$other:profanity", false),
        ];
        for (text, channel, want) in table {
            assert_eq!(
                pattern(text).matches(channel),
                *want,
                "{text:?} on {channel:?}"
            );
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "channel name is empty"),
            ("chat:", "empty segment"),
            (":chat", "empty segment"),
            ("chat::room", "empty segment"),
            ("ch*at", "must be a whole segment"),
            ("chat:*x", "must be a whole segment"),
            ("$*", "must be a whole segment"),
            ("sensors:#x", "must be a whole segment"),
            ("**", "must be a whole segment"),
            ("#:sensors", "only allowed as the last segment"),
            ("a:#:b", "only allowed as the last segment"),
            ("chat room", "whitespace character at byte 4"),
        ];
        for (text, want) in cases {
            let error = BindingPattern::parse(text).expect_err(text);
            assert!(error.contains(want), "{text:?}: {error}");
        }
        let long = format!("{}:*", "x".repeat(254));
        let error = BindingPattern::parse(&long).expect_err("256 bytes");
        assert!(error.contains("256 bytes; the limit is 255"), "{error}");
        let longest = format!("{}:#", "x".repeat(253));
        assert_eq!(pattern(&longest).as_str(), longest);
    }

    #[test]
    fn function_names() {
        for good in ["profanity", "a", "0", "pii-redactor_2", &"x".repeat(64)] {
            let name = FunctionName::parse(good).expect(good);
            assert_eq!(name.as_str(), good);
            assert_eq!(name.to_string(), good);
        }
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Profanity", "holds 'P'"),
            ("my fn", "holds ' '"),
            ("a.b", "holds '.'"),
            ("café", "holds 'é'"),
            ("-x", "starts with '-'"),
            ("_x", "starts with '_'"),
        ];
        for (text, want) in cases {
            let error = FunctionName::parse(text).expect_err(text);
            assert!(error.contains(want), "{text:?}: {error}");
        }
        let error = FunctionName::parse(&"x".repeat(65)).expect_err("too long");
        assert!(error.contains("65 characters; at most 64"), "{error}");
    }

    #[test]
    fn names_and_patterns_serialize_as_strings_and_validate_when_read() {
        let name: FunctionName = serde_json::from_str("\"router\"").expect("valid name");
        assert_eq!(
            serde_json::to_string(&name).expect("serializes"),
            "\"router\""
        );
        let error = serde_json::from_str::<FunctionName>("\"Router\"").expect_err("uppercase");
        assert!(error.to_string().contains("holds 'R'"), "{error}");
        let pattern: BindingPattern = serde_json::from_str("\"chat:*\"").expect("valid");
        assert!(pattern.matches("chat:x"));
        assert_eq!(
            serde_json::to_string(&pattern).expect("serializes"),
            "\"chat:*\""
        );
        let error = serde_json::from_str::<BindingPattern>("\"ch*t\"").expect_err("bad");
        assert!(error.to_string().contains("whole segment"), "{error}");
        assert_eq!(Stage::Egress.to_string(), "egress");
        assert_eq!(FailurePolicy::FailOpen.to_string(), "fail-open");
        assert_eq!(FailurePolicy::default(), FailurePolicy::FailClosed);
    }

    #[test]
    fn a_binding_compiles_with_defaults_and_from_json() {
        let raw: RawBindingSpec =
            serde_json::from_str(r#"{"bind": ["chat:*", "dm:*"]}"#).expect("valid JSON");
        let spec = raw
            .compile("", DEFAULT_MAX_MEMORY_BYTES)
            .expect("valid binding");
        assert_eq!(spec.patterns, [pattern("chat:*"), pattern("dm:*")]);
        assert_eq!(spec.stage, Stage::Ingress);
        assert_eq!(spec.policy, FailurePolicy::FailClosed);
        assert_eq!(spec.timeout, Duration::from_millis(2));
        assert_eq!(spec.memory_bytes, 16 << 20);
        assert_eq!(spec.order, 0);
        assert!(spec.matches("dm:1") && !spec.matches("news"));

        let raw: RawBindingSpec = serde_json::from_str(
            r##"{"bind": ["#"], "stage": "egress", "policy": "fail-open", "timeout": "1500us",
                "memory": "1MiB", "order": -3}"##,
        )
        .expect("valid JSON");
        let spec = raw.compile("", 1 << 20).expect("memory at the ceiling");
        assert_eq!(spec.stage, Stage::Egress);
        assert_eq!(spec.policy, FailurePolicy::FailOpen);
        assert_eq!(spec.timeout, Duration::from_micros(1500));
        assert_eq!(spec.memory_bytes, 1 << 20);
        assert_eq!(spec.order, -3);

        // The default memory is capped by a lower ceiling.
        let raw = RawBindingSpec {
            bind: vec!["x".into()],
            ..RawBindingSpec::default()
        };
        assert_eq!(
            raw.compile("", 8 << 20).map(|s| s.memory_bytes),
            Ok(8 << 20)
        );

        for bad in [
            r#"{"bind": ["x"], "stage": "middle"}"#,
            r#"{"bind": ["x"], "policy": "fail-maybe"}"#,
            r#"{"bind": ["x"], "extra": 1}"#,
            r#"{"stage": "egress"}"#,
        ] {
            assert!(
                serde_json::from_str::<RawBindingSpec>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_binding_problem_is_reported_with_its_path() {
        let raw = RawBindingSpec {
            bind: vec![
                "chat:*".into(),
                "ch*t".into(),
                "chat:*".into(),
                "#:x".into(),
            ],
            stage: None,
            policy: None,
            timeout: Some("50us".into()),
            memory: Some(RawByteSize::Text("128MiB".into())),
            order: None,
        };
        let error = raw.compile("binding", 64 << 20).expect_err("four problems");
        let found: Vec<String> = error.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "binding.bind[1]: pattern \"ch*t\": `*` and `#` must be a whole segment, like \"chat:*\" (found \"ch*t\")",
                "binding.bind[2]: \"chat:*\" is also listed at binding.bind[0]",
                "binding.bind[3]: pattern \"#:x\": `#` is only allowed as the last segment",
                "binding.timeout: 50us is below the minimum of 100us",
                "binding.memory: 134217728 is above the maximum of 67108864",
            ]
        );
        let empty = RawBindingSpec::default().compile("", DEFAULT_MAX_MEMORY_BYTES);
        let error = empty.expect_err("no pattern");
        assert_eq!(error.problems.len(), 1);
        assert_eq!(error.problems[0].path, "bind");
        assert!(error.problems[0].message.starts_with("is required"));
        let many = RawBindingSpec {
            bind: (0..33).map(|i| format!("c{i}")).collect(),
            timeout: Some("2s".into()),
            memory: Some(RawByteSize::Count(1000)),
            ..RawBindingSpec::default()
        };
        let error = many
            .compile("", DEFAULT_MAX_MEMORY_BYTES)
            .expect_err("too many");
        let found: Vec<String> = error.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "bind: lists 33 patterns; at most 32 are allowed",
                "timeout: 2s is above the maximum of 1s",
                "memory: 1000 is below the minimum of 1048576",
            ]
        );
    }

    #[test]
    fn to_raw_compiles_back_to_the_same_spec() {
        let timeouts = [
            Duration::from_millis(2),
            Duration::from_micros(1500),
            Duration::from_micros(100),
            Duration::from_nanos(100_500),
            Duration::from_secs(1),
        ];
        for (i, timeout) in timeouts.into_iter().enumerate() {
            let spec = BindingSpec {
                patterns: vec![
                    pattern("chat:*"),
                    pattern("sensors:#"),
                    pattern("$functions"),
                ],
                stage: if i % 2 == 0 {
                    Stage::Ingress
                } else {
                    Stage::Egress
                },
                policy: if i % 2 == 0 {
                    FailurePolicy::FailOpen
                } else {
                    FailurePolicy::FailClosed
                },
                timeout,
                memory_bytes: (1 << 20) + i * 4096,
                order: i32::MIN + i32::try_from(i).expect("small"),
            };
            let raw = spec.to_raw();
            assert_eq!(raw.compile("", DEFAULT_MAX_MEMORY_BYTES), Ok(spec.clone()));
            // Through JSON too, as the admin API carries it.
            let json = serde_json::to_string(&raw).expect("serializes");
            let back: RawBindingSpec = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, raw, "{json}");
        }
        let spec = RawBindingSpec {
            bind: vec!["x".into()],
            ..RawBindingSpec::default()
        }
        .compile("", DEFAULT_MAX_MEMORY_BYTES)
        .expect("valid");
        let raw = spec.to_raw();
        assert_eq!(raw.timeout.as_deref(), Some("2ms"));
        assert_eq!(raw.memory, Some(RawByteSize::Count(16 << 20)));
        assert_eq!(raw.stage, Some(Stage::Ingress));
        assert_eq!(raw.policy, Some(FailurePolicy::FailClosed));
    }

    #[test]
    fn static_functions_compile() {
        let text = r#"
            [functions]
            cache_dir = "/var/cache/tern/functions"
            max_instances = 100000
            max_memory = "32MiB"
            [[functions.static]]
            name = "profanity"
            path = "functions/profanity.wasm"
            bind = ["chat:*"]
            [[functions.static]]
            name = "router"
            path = "router.wasm"
            bind = ["orders:#", "$audit"]
            stage = "egress"
            policy = "fail-open"
            timeout = "10ms"
            memory = "32MiB"
            order = -1
        "#;
        let config = parse_edge_config(text).expect("valid");
        let functions = &config.functions;
        assert_eq!(
            functions.cache_dir,
            Some(PathBuf::from("/var/cache/tern/functions"))
        );
        assert_eq!(functions.max_instances, 100_000);
        assert_eq!(functions.max_memory_bytes, 32 << 20);
        let [profanity, router] = functions.static_functions.as_slice() else {
            panic!("two static functions: {functions:?}");
        };
        assert_eq!(profanity.name.as_str(), "profanity");
        assert_eq!(profanity.path, PathBuf::from("functions/profanity.wasm"));
        assert_eq!(profanity.binding.memory_bytes, 16 << 20);
        assert_eq!(profanity.binding.stage, Stage::Ingress);
        assert_eq!(router.name.as_str(), "router");
        assert_eq!(
            router.binding.patterns,
            [pattern("orders:#"), pattern("$audit")]
        );
        assert_eq!(router.binding.stage, Stage::Egress);
        assert_eq!(router.binding.policy, FailurePolicy::FailOpen);
        assert_eq!(router.binding.timeout, Duration::from_millis(10));
        assert_eq!(router.binding.memory_bytes, 32 << 20);
        assert_eq!(router.binding.order, -1);
    }

    #[test]
    fn every_problem_of_a_config_is_reported_at_once_with_its_path() {
        let text = r#"
            [edge]
            region = "eu west"
            [functions]
            cache_dir = ""
            max_instances = 0
            max_memory = "8GiB"
            [[functions.static]]
            name = "profanity"
            path = "profanity.wasm"
            bind = ["chat:*"]
            memory = "128MiB"
            [[functions.static]]
            name = "profanity"
            path = ""
            bind = ["chat:", "chat:*:#"]
            timeout = "5s"
            [[functions.static]]
            name = "-bad"
            [[functions.static]]
            bind = ["x"]
            timeout = "soon"
            memory = "1MiB"
            [[keys]]
            key = "shop.web:0123456789abcdef"
            capabilities = { "*" = ["subscribe"] }
            [[admin_keys]]
            key = "ops.web:fedcba9876543210"
            [[admin_keys]]
            key = "ops.deploy:short"
            [[admin_keys]]
            secret = "x"
        "#;
        // An unknown key stops at serde: it is the one problem reported alone.
        let error = parse_edge_config(text).expect_err("unknown key");
        assert_eq!(error.problems.len(), 1);
        assert!(
            error.problems[0].message.contains("unknown field `secret`"),
            "{error}"
        );

        let text = text.replace("secret = \"x\"", "");
        let error = parse_edge_config(&text).expect_err("many problems");
        let found: Vec<String> = error.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "edge.region: \"eu west\" holds ' ': use ASCII letters, digits, `-`, `_` and `.`",
                "functions.cache_dir: must not be empty",
                "functions.max_instances: 0 is below the minimum of 1",
                "functions.max_memory: 8589934592 is above the maximum of 4294967296",
                // The ceiling falls back to the default 64MiB when max_memory is invalid.
                "functions.static[0].memory: 134217728 is above the maximum of 67108864",
                "functions.static[1].name: \"profanity\" is also the name of functions.static[0]",
                "functions.static[1].path: must not be empty",
                "functions.static[1].bind[0]: pattern \"chat:\" has an empty segment (segments are separated by `:`)",
                "functions.static[1].timeout: 5s is above the maximum of 1s",
                "functions.static[2].name: function name \"-bad\" starts with '-': start with a letter or a digit",
                "functions.static[2].path: is required: the .wasm component",
                "functions.static[2].bind: is required: list 1 to 32 channel patterns, like [\"chat:*\"]",
                "functions.static[3].name: is required",
                "functions.static[3].path: is required: the .wasm component",
                "functions.static[3].timeout: \"soon\" is not a duration (expected number at 0): use a number and a unit like \"10ms\", \"30s\" or \"24h\"",
                "admin_keys[0].key: key id \"web\" is also used by keys[0]",
                "admin_keys[1].key: the secret is 5 characters; at least 16 are required",
                "admin_keys[2].key: is required: \"app.keyid:secret\"",
            ]
        );
        assert!(!error.to_string().contains("fedcba9876543210"), "{error}");
    }

    #[test]
    fn wrong_values_for_stage_and_policy_are_located() {
        let text = "[[functions.static]]\nname = \"f\"\npath = \"f.wasm\"\nbind = [\"x\"]\nstage = \"middle\"";
        let error = parse_edge_config(text).expect_err("unknown stage");
        assert_eq!(error.problems.len(), 1);
        assert_eq!(error.problems[0].path, "line 5, column 9");
        assert!(error.problems[0].message.contains("ingress"), "{error}");
    }
}
