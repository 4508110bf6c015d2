//! Rejects chat messages whose body is not the expected JSON shape, with a reason that
//! names the path and the problem, so the publisher can fix its payload:
//!
//! ```text
//! {"user": string of 1 to 64 characters,
//!  "text": string of 1 to 2000 characters,
//!  "reply_to": integer >= 1, optional}        and no other field
//! ```
//!
//! ```text
//!  message ──▶ parse JSON ──error──▶ Reject("not JSON: expected value at line 1 column 1")
//!                 │ ok
//!                 ▼
//!          check against SHAPE ──problem──▶ Reject("$.user: expected a string of 1 to 64
//!                 │ ok                              characters, found number")
//!                 ▼
//!               Pass
//! ```
//!
//! The shape is a table ([`SHAPE`]) rather than code, so adding a field is one line.
//! Characters are Unicode scalar values, as a user counts them, not bytes. The first
//! problem found is reported: unknown fields first (in key order), then the fields of
//! [`SHAPE`] in order.
//!
//! What it does not do: validate nested objects or arrays (the chat shape has none),
//! look at the content type (every body on the bound channel must be this shape), or
//! change the message.

use serde_json::{Map, Value};
use tern_function::{Action, Message};

/// What a field's value must be.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A string of `min..=max` characters.
    Text {
        /// Fewest characters.
        min: usize,
        /// Most characters.
        max: usize,
    },
    /// An integer of at least `min`.
    Integer {
        /// The smallest value allowed.
        min: u64,
    },
}

/// One field of the expected object.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Its key.
    pub name: &'static str,
    /// What its value must be.
    pub kind: Kind,
    /// Whether it must be present.
    pub required: bool,
}

/// The chat message shape: every field the object may have.
pub const SHAPE: &[Field] = &[
    Field {
        name: "user",
        kind: Kind::Text { min: 1, max: 64 },
        required: true,
    },
    Field {
        name: "text",
        kind: Kind::Text { min: 1, max: 2000 },
        required: true,
    },
    Field {
        name: "reply_to",
        kind: Kind::Integer { min: 1 },
        required: false,
    },
];

/// How much of an unknown key a reason quotes: a hostile key cannot make the NACK
/// reason large.
const MAX_QUOTED_KEY_CHARS: usize = 64;

/// Checks `body` against [`SHAPE`]; the error is the reason given to the publisher.
pub fn validate(body: &[u8]) -> Result<(), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
    check(&value)
}

/// Checks a parsed body against [`SHAPE`].
pub fn check(value: &Value) -> Result<(), String> {
    let Value::Object(object) = value else {
        return Err(format!("$: expected an object, found {}", describe(value)));
    };
    if let Some(key) = object
        .keys()
        .find(|key| !SHAPE.iter().any(|field| field.name == *key))
    {
        let allowed: Vec<&str> = SHAPE.iter().map(|field| field.name).collect();
        return Err(format!(
            "{}: unknown field (allowed: {})",
            path(key),
            allowed.join(", ")
        ));
    }
    SHAPE
        .iter()
        .try_for_each(|field| check_field(object, field))
}

fn check_field(object: &Map<String, Value>, field: &Field) -> Result<(), String> {
    let expected = expectation(field.kind);
    let Some(value) = object.get(field.name) else {
        if field.required {
            return Err(format!(
                "{}: missing; expected {expected}",
                path(field.name)
            ));
        }
        return Ok(());
    };
    let fits = match (field.kind, value) {
        (Kind::Text { min, max }, Value::String(text)) => {
            (min..=max).contains(&text.chars().count())
        }
        (Kind::Integer { min }, Value::Number(number)) => {
            number.as_u64().is_some_and(|number| number >= min)
        }
        _ => false,
    };
    if fits {
        return Ok(());
    }
    Err(format!(
        "{}: expected {expected}, found {}",
        path(field.name),
        describe(value)
    ))
}

/// What a field must be, as the reason says it.
fn expectation(kind: Kind) -> String {
    match kind {
        Kind::Text { min, max } => format!("a string of {min} to {max} characters"),
        Kind::Integer { min } => format!("an integer of at least {min}"),
    }
}

/// What a value is, as the reason says it: its type, and what made it wrong when the
/// type was right. Bounded in length whatever the value.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "boolean".into(),
        Value::Number(number) if number.is_i64() || number.is_u64() => format!("number {number}"),
        Value::Number(_) => "non-integer number".into(),
        Value::String(text) => match text.chars().count() {
            1 => "string of 1 character".into(),
            count => format!("string of {count} characters"),
        },
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

/// The JSONPath of a top-level key: `$.user`, or `$["odd key"]` for a key that is not
/// an identifier (quoted as JSON, cut to [`MAX_QUOTED_KEY_CHARS`]).
fn path(key: &str) -> String {
    let identifier = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let short: String = key.chars().take(MAX_QUOTED_KEY_CHARS).collect();
    let cut = if short.len() < key.len() { "…" } else { "" };
    if identifier {
        format!("$.{short}{cut}")
    } else {
        format!("$[{}{cut}]", Value::String(short))
    }
}

/// Passes a well-shaped chat message; rejects anything else with the first problem.
pub fn handle(message: Message) -> Action {
    match validate(message.data()) {
        Ok(()) => Action::Pass,
        Err(reason) => Action::Reject(reason),
    }
}

tern_function::function!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use tern_function::testing::run;

    fn reason(body: &str) -> String {
        match run(handle, Message::new("chat:lobby", body)).action {
            Action::Reject(reason) => reason,
            other => panic!("{body} was not rejected: {other:?}"),
        }
    }

    #[test]
    fn a_well_shaped_message_passes() {
        for body in [
            r#"{"user": "ana", "text": "hi"}"#,
            r#"{"user": "ana", "text": "hi", "reply_to": 1}"#,
            r#"{"text": "hi", "user": "ana", "reply_to": 18446744073709551615}"#,
            r#"  {"user": "日本", "text": "é"}  "#,
        ] {
            let outcome = run(handle, Message::new("chat:lobby", body));
            assert_eq!(outcome.action, Action::Pass, "{body}");
        }
    }

    #[test]
    fn a_wrong_type_names_the_path_and_both_types() {
        assert_eq!(
            reason(r#"{"user": 42, "text": "hi"}"#),
            "$.user: expected a string of 1 to 64 characters, found number 42"
        );
        assert_eq!(
            reason(r#"{"user": "ana", "text": null}"#),
            "$.text: expected a string of 1 to 2000 characters, found null"
        );
        assert_eq!(
            reason(r#"{"user": "ana", "text": ["hi"]}"#),
            "$.text: expected a string of 1 to 2000 characters, found array"
        );
        assert_eq!(
            reason(r#"{"user": {}, "text": "hi"}"#),
            "$.user: expected a string of 1 to 64 characters, found object"
        );
        assert_eq!(
            reason(r#"{"user": "ana", "text": "hi", "reply_to": "7"}"#),
            "$.reply_to: expected an integer of at least 1, found string of 1 character"
        );
        assert_eq!(
            reason(r#"{"user": true, "text": "hi"}"#),
            "$.user: expected a string of 1 to 64 characters, found boolean"
        );
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        let at_limit = format!(r#"{{"user": "{}", "text": "hi"}}"#, "é".repeat(64));
        assert_eq!(validate(at_limit.as_bytes()), Ok(()));
        let over = format!(r#"{{"user": "{}", "text": "hi"}}"#, "é".repeat(65));
        assert_eq!(
            reason(&over),
            "$.user: expected a string of 1 to 64 characters, found string of 65 characters"
        );
        assert_eq!(
            reason(r#"{"user": "", "text": "hi"}"#),
            "$.user: expected a string of 1 to 64 characters, found string of 0 characters"
        );
        let long_text = format!(r#"{{"user": "ana", "text": "{}"}}"#, "x".repeat(2001));
        assert_eq!(
            reason(&long_text),
            "$.text: expected a string of 1 to 2000 characters, found string of 2001 characters"
        );
    }

    #[test]
    fn reply_to_must_be_a_positive_integer() {
        for (value, found) in [
            ("0", "number 0"),
            ("-3", "number -3"),
            ("1.5", "non-integer number"),
            ("1e3", "non-integer number"),
        ] {
            let body = format!(r#"{{"user": "ana", "text": "hi", "reply_to": {value}}}"#);
            assert_eq!(
                reason(&body),
                format!("$.reply_to: expected an integer of at least 1, found {found}")
            );
        }
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        assert_eq!(
            reason(r#"{"text": "hi"}"#),
            "$.user: missing; expected a string of 1 to 64 characters"
        );
        assert_eq!(
            reason(r#"{"user": "ana", "text": "hi", "color": "red"}"#),
            "$.color: unknown field (allowed: user, text, reply_to)"
        );
        assert_eq!(
            reason(r#"{"user": "ana", "text": "hi", "my key\"": 1}"#),
            r#"$["my key\""]: unknown field (allowed: user, text, reply_to)"#
        );
    }

    #[test]
    fn a_huge_unknown_key_is_cut_in_the_reason() {
        let body = format!(r#"{{"{}": 1}}"#, "k".repeat(10_000));
        let reason = reason(&body);
        assert!(reason.len() < 200, "{reason}");
        assert!(reason.starts_with(&format!("$.{}…: unknown field", "k".repeat(64))));
    }

    #[test]
    fn the_top_level_must_be_an_object() {
        assert_eq!(reason("[1, 2]"), "$: expected an object, found array");
        assert_eq!(
            reason("\"hi\""),
            "$: expected an object, found string of 2 characters"
        );
    }

    #[test]
    fn not_json_is_rejected_with_the_position() {
        assert_eq!(
            reason(""),
            "not JSON: EOF while parsing a value at line 1 column 0"
        );
        assert_eq!(
            reason("{\"user\": \"ana\",\n \"text\": hi}"),
            "not JSON: expected value at line 2 column 10"
        );
        assert_eq!(
            reason(r#"{"user": "ana", "text": "hi"} trailing"#),
            "not JSON: trailing characters at line 1 column 31"
        );
    }

    #[test]
    fn binary_data_is_rejected_as_not_json() {
        let outcome = run(handle, Message::new("chat:lobby", vec![0xff, 0xfe]));
        assert_eq!(
            outcome.action,
            Action::Reject("not JSON: expected value at line 1 column 1".into())
        );
    }
}
