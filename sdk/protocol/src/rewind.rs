//! ATTACH's `rewind`: the last N messages (`"rewind": 10`), or those stored within a
//! span of time before the attach (`"rewind": "2m"`).
//!
//! A span is a whole number and a unit with nothing between: `ms`, `s`, `m` or `h`
//! (`"500ms"`, `"30s"`, `"15m"`, `"2h"`). Anything else is not a `rewind`, so the
//! frame is `Malformed`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Where ATTACH's history starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewind {
    /// The last N stored messages. On the wire: the number.
    Messages(u32),
    /// The messages stored within this long before the attach. On the wire: a
    /// string such as `"90s"` (see the module docs).
    Span(Duration),
}

impl Rewind {
    /// True when it asks for nothing (0 messages, or a span of 0): the same as no
    /// `rewind`.
    pub fn is_nothing(self) -> bool {
        match self {
            Rewind::Messages(n) => n == 0,
            Rewind::Span(span) => span.is_zero(),
        }
    }
}

const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parses a span: digits then `ms`, `s`, `m` or `h`.
pub fn parse_span(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let (_, per_unit) = UNITS.iter().find(|(name, _)| *name == unit)?;
    number.checked_mul(*per_unit).map(Duration::from_millis)
}

/// The shortest way to write `span` (whole milliseconds; less is dropped).
pub fn format_span(span: Duration) -> String {
    let ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
    let (unit, per_unit) = UNITS
        .iter()
        .find(|(_, per_unit)| ms % per_unit == 0 && ms > 0)
        .unwrap_or(&("ms", 1));
    format!("{}{unit}", ms / per_unit)
}

impl Serialize for Rewind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Rewind::Messages(n) => serializer.serialize_u32(*n),
            Rewind::Span(span) => serializer.serialize_str(&format_span(*span)),
        }
    }
}

impl<'de> Deserialize<'de> for Rewind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RewindVisitor)
    }
}

struct RewindVisitor;

impl Visitor<'_> for RewindVisitor {
    type Value = Rewind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message count (u32) or a span such as \"30s\", \"5m\", \"2h\", \"500ms\"")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Rewind, E> {
        u32::try_from(n)
            .map(Rewind::Messages)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Rewind, E> {
        u64::try_from(n)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            .and_then(|n| self.visit_u64(n))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Rewind, E> {
        parse_span(text)
            .map(Rewind::Span)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print_in_their_shortest_form() {
        for (text, ms, shortest) in [
            ("500ms", 500, "500ms"),
            ("1000ms", 1_000, "1s"),
            ("90s", 90_000, "90s"),
            ("120s", 120_000, "2m"),
            ("15m", 900_000, "15m"),
            ("2h", 7_200_000, "2h"),
            ("0s", 0, "0ms"),
        ] {
            let span = parse_span(text).expect(text);
            assert_eq!(span, Duration::from_millis(ms), "{text}");
            assert_eq!(format_span(span), shortest, "{text}");
        }
        for bad in [
            "",
            "s",
            "10",
            "10 s",
            "1.5s",
            "-1s",
            "10d",
            "5M",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_span(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_count_is_a_number_and_a_span_a_string_in_both_formats() {
        let count: Rewind = serde_json::from_str("10").expect("count");
        assert_eq!(count, Rewind::Messages(10));
        let span: Rewind = serde_json::from_str("\"2m\"").expect("span");
        assert_eq!(span, Rewind::Span(Duration::from_secs(120)));
        assert_eq!(serde_json::to_string(&span).expect("encodes"), "\"2m\"");
        for bad in ["-1", "4294967296", "\"2 days\"", "1.5", "true"] {
            assert!(serde_json::from_str::<Rewind>(bad).is_err(), "{bad}");
        }
        for rewind in [
            Rewind::Messages(7),
            Rewind::Span(Duration::from_millis(1500)),
        ] {
            let bytes = rmp_serde::to_vec(&rewind).expect("encodes");
            assert_eq!(
                rmp_serde::from_slice::<Rewind>(&bytes).expect("decodes"),
                rewind
            );
        }
    }
}
