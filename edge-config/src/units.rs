//! Byte sizes and durations as operators write them, and their parsing.
//!
//! Raw structs keep these values unparsed ([`RawByteSize`], `String`) so that a bad unit
//! is reported by `compile()` with its key path, alongside every other problem, rather
//! than aborting deserialization at the first one.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};

/// A byte size as written in TOML: an integer count of bytes, or a string with a unit.
///
/// Units: `B`, decimal `kB` `MB` `GB` `TB` (powers of 1000) and binary `KiB` `MiB` `GiB`
/// `TiB` (powers of 1024), case-insensitive, optionally separated from the number by
/// spaces: `65536`, `"64KiB"`, `"500kB"` (500 000), `"1 GiB"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawByteSize {
    /// A TOML integer: a count of bytes (negative counts are rejected by `compile()`).
    Count(i64),
    /// A TOML string: a count with an optional unit, or a keyword such as `"off"` where
    /// the key documents one.
    Text(String),
}

impl<'de> Deserialize<'de> for RawByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = RawByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size: an integer, or a string with a unit like \"64MiB\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawByteSize::Count(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(RawByteSize::Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawByteSize::Text(v.to_owned()))
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// Written back as it was read: an integer, or a string.
impl Serialize for RawByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Count(n) => serializer.serialize_i64(*n),
            Self::Text(text) => serializer.serialize_str(text),
        }
    }
}

/// Accepted units, lower-cased, with their multipliers.
const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

impl RawByteSize {
    /// The number of bytes, or why there is none.
    pub(crate) fn to_bytes(&self) -> Result<u64, String> {
        match self {
            Self::Count(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
            Self::Text(text) => parse_byte_size(text),
        }
    }
}

/// Parses `"64KiB"`, `"500kB"`, `"1 GiB"`, `"4096"` into a count of bytes.
pub(crate) fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a byte size: expected an integer with an optional unit, like \"64MiB\""
        ));
    }
    if unit.starts_with(['.', ',']) {
        return Err(format!(
            "{text:?} is not a whole number of bytes: write it in a smaller unit, like \"1536MiB\""
        ));
    }
    let unit = unit.trim_start().to_ascii_lowercase();
    let Some(&(_, multiplier)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "{text:?} has an unknown unit: use B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
        ));
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a humantime duration (`"10ms"`, `"30s"`, `"24h"`, `"7days"`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|error| {
        format!("{text:?} is not a duration ({error}): use a number and a unit like \"10ms\", \"30s\" or \"24h\"")
    })
}

/// How a duration is shown in messages: `10ms`, `30s`, `31days 1h`.
///
/// Whole days are counted as days: humantime would show 31 days as `1month 13h 26m 24s`
/// (its month is 30.44 days), which is not what an operator wrote.
pub(crate) fn show_duration(duration: Duration) -> String {
    const DAY_SECS: u64 = 24 * 60 * 60;
    let days = duration.as_secs() / DAY_SECS;
    let rest = duration.saturating_sub(Duration::from_secs(days * DAY_SECS));
    let unit = if days == 1 { "day" } else { "days" };
    match (days, rest.is_zero()) {
        (0, _) => humantime::format_duration(duration).to_string(),
        (_, true) => format!("{days}{unit}"),
        (_, false) => format!("{days}{unit} {}", humantime::format_duration(rest)),
    }
}

/// Byte limits that fit in any supported `usize` (all are at most 1 GiB).
pub(crate) fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).expect("byte limits are at most 1 GiB, which fits in usize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_with_and_without_units() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("512B", 512),
            ("64KiB", 64 * 1024),
            ("128MiB", 128 * 1024 * 1024),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("500kB", 500_000),
            ("3MB", 3_000_000),
            ("1GB", 1_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("64 kib", 64 * 1024),
            ("  16MiB ", 16 << 20),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_byte_size(text), Ok(*bytes), "{text}");
        }
    }

    #[test]
    fn bad_byte_sizes_say_why() {
        let unit = parse_byte_size("12 parsecs").expect_err("not a unit");
        assert!(unit.contains("unknown unit"), "{unit}");
        let number = parse_byte_size("MiB").expect_err("no number");
        assert!(number.contains("not a byte size"), "{number}");
        let fraction = parse_byte_size("1.5GiB").expect_err("fractions are not accepted");
        assert!(fraction.contains("whole number"), "{fraction}");
        let large = parse_byte_size("99999999999TiB").expect_err("overflows u64");
        assert!(large.contains("too large"), "{large}");
        let large = parse_byte_size("99999999999999999999999").expect_err("overflows u64");
        assert!(large.contains("too large"), "{large}");
        let negative = RawByteSize::Count(-1).to_bytes().expect_err("negative");
        assert!(negative.contains("negative"), "{negative}");
    }

    #[test]
    fn raw_byte_size_deserializes_from_integer_or_string() {
        #[derive(serde::Deserialize)]
        struct Holder {
            size: RawByteSize,
        }
        let int: Holder = toml::from_str("size = 65536").expect("integer");
        assert_eq!(int.size, RawByteSize::Count(65536));
        let text: Holder = toml::from_str("size = \"64KiB\"").expect("string");
        assert_eq!(text.size, RawByteSize::Text("64KiB".into()));
        let error = toml::from_str::<Holder>("size = true")
            .err()
            .expect("a boolean is not a size");
        assert!(error.message().contains("a byte size"), "{error}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7days"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        let error = parse_duration("soon").expect_err("not a duration");
        assert!(error.contains("not a duration"), "{error}");
        let error = parse_duration("10").expect_err("a unit is required");
        assert!(error.contains("not a duration"), "{error}");
        assert_eq!(show_duration(Duration::from_millis(10)), "10ms");
        assert_eq!(show_duration(Duration::from_secs(86_400)), "1day");
        assert_eq!(show_duration(Duration::from_secs(31 * 86_400)), "31days");
        assert_eq!(
            show_duration(Duration::from_secs(400 * 86_400 + 3_600)),
            "400days 1h"
        );
        let shown = show_duration(Duration::from_secs(45 * 86_400 + 90));
        assert_eq!(
            parse_duration(&shown),
            Ok(Duration::from_secs(45 * 86_400 + 90))
        );
    }
}
