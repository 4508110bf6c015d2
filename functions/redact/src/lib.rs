//! Replaces personal data in a message's text with placeholders before anyone stores
//! or sees it: email addresses with `[email]`, card numbers with `[card]`, phone
//! numbers with `[phone]`, and says how many it replaced in the header `redacted`.
//!
//! ```text
//!  message ──▶ text? ──no (binary data)──────────────────────────────▶ Pass
//!                │ yes
//!                ▼
//!   find emails (around each '@') ─┐
//!   find digit runs (outside them) ┴▶ spans ──none──▶ Pass (nothing copied back)
//!                                       │ some
//!                                       ▼
//!            Replace(text with placeholders, header "redacted: <count>")
//! ```
//!
//! What counts as what (heuristics, tuned for chat text):
//! - **email**: `local@domain.tld`, local part of letters, digits and `._%+-`, a domain
//!   of labels of letters, digits and `-` separated by dots, ending in a label of 2 or
//!   more letters.
//! - **digit run**: starts with a digit, `+` or `(`, not glued to a letter or digit
//!   before it or after it; digits separated by at most two of ` -.()`
//!   (`+1 (555) 123-4567`, `4111 1111 1111 1111`). An ISO date (`2024-01-15`) is not one.
//! - **card**: a digit run of 13 to 19 digits that passes the Luhn check.
//! - **phone**: any other digit run of 7 or more digits.
//!
//! What it does not do: look at names, headers or binary bodies; recognise numbers
//! written out in words or spread over several messages; guarantee that nothing
//! personal remains (it is a filter, not a proof).

use tern_function::{Action, Message};

/// The header that says how many spans were replaced.
pub const COUNT_HEADER: &str = "redacted";

/// What a span of personal data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An email address.
    Email,
    /// A phone number (or another long number that is not a card).
    Phone,
    /// A card number (13 to 19 digits passing the Luhn check).
    Card,
}

impl Kind {
    /// What replaces a span of this kind.
    pub fn placeholder(self) -> &'static str {
        match self {
            Kind::Email => "[email]",
            Kind::Phone => "[phone]",
            Kind::Card => "[card]",
        }
    }
}

/// A text with its personal data replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redacted {
    /// The new text (UTF-8).
    pub data: Vec<u8>,
    /// How many spans were replaced (at least one).
    pub count: usize,
}

/// A span of `text`, in bytes; both ends are ASCII bytes, so character boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    kind: Kind,
}

/// `text` with its personal data replaced, or `None` when it has none.
pub fn redact(text: &str) -> Option<Redacted> {
    let bytes = text.as_bytes();
    let emails = find_emails(bytes);
    let numbers = find_numbers(bytes, &emails);
    if emails.is_empty() && numbers.is_empty() {
        return None;
    }
    let mut spans = emails;
    spans.extend(numbers);
    spans.sort_unstable_by_key(|span| span.start);
    let mut data = Vec::with_capacity(bytes.len());
    let mut copied = 0;
    for span in &spans {
        data.extend_from_slice(bytes.get(copied..span.start).unwrap_or_default());
        data.extend_from_slice(span.kind.placeholder().as_bytes());
        copied = span.end;
    }
    data.extend_from_slice(bytes.get(copied..).unwrap_or_default());
    Some(Redacted {
        data,
        count: spans.len(),
    })
}

fn is_local_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-')
}

/// Every email address, in order, not overlapping.
fn find_emails(bytes: &[u8]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut searched = 0;
    while let Some(at) = bytes
        .get(searched..)
        .and_then(|rest| rest.iter().position(|&b| b == b'@'))
        .map(|offset| searched + offset)
    {
        searched = at + 1;
        let floor = spans.last().map_or(0, |span: &Span| span.end);
        let local_start = (floor..at)
            .rev()
            .take_while(|&i| bytes.get(i).copied().is_some_and(is_local_byte))
            .last()
            .unwrap_or(at);
        // A local part does not start with a dot ("see.john@x.org" is fine, ".john" is not).
        let local_start = (local_start..at)
            .find(|&i| bytes.get(i) != Some(&b'.'))
            .unwrap_or(at);
        let domain_end = (at + 1..bytes.len())
            .take_while(|&i| bytes.get(i).copied().is_some_and(is_domain_byte))
            .last()
            .map_or(at + 1, |i| i + 1);
        // A sentence's full stop or dash after the address is not part of it.
        let domain_end = (at + 1..domain_end)
            .rev()
            .find(|&i| !matches!(bytes.get(i), Some(b'.' | b'-')))
            .map_or(at + 1, |i| i + 1);
        let domain = bytes.get(at + 1..domain_end).unwrap_or_default();
        if local_start < at && is_domain(domain) {
            spans.push(Span {
                start: local_start,
                end: domain_end,
                kind: Kind::Email,
            });
            searched = domain_end;
        }
    }
    spans
}

/// Whether `domain` is labels separated by dots, none empty, none starting or ending
/// with `-`, at least two of them, the last of 2 or more letters.
fn is_domain(domain: &[u8]) -> bool {
    let labels: Vec<&[u8]> = domain.split(|&b| b == b'.').collect();
    let well_formed = labels.iter().all(|label| {
        !label.is_empty() && label.first() != Some(&b'-') && label.last() != Some(&b'-')
    });
    let top_level = labels
        .last()
        .is_some_and(|label| label.len() >= 2 && label.iter().all(u8::is_ascii_alphabetic));
    labels.len() >= 2 && well_formed && top_level
}

fn is_number_separator(byte: u8) -> bool {
    matches!(byte, b' ' | b'-' | b'.' | b'(' | b')')
}

/// Every phone or card number outside `emails` (sorted, not overlapping), in order.
fn find_numbers(bytes: &[u8], emails: &[Span]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut emails = emails.iter().peekable();
    let mut at = 0;
    while at < bytes.len() {
        // Skip the email spans this position reached; the next one bounds a number.
        while emails.next_if(|email| email.end <= at).is_some() {}
        let limit = match emails.peek() {
            Some(email) if email.start <= at => {
                at = email.end;
                continue;
            }
            Some(email) => email.start,
            None => bytes.len(),
        };
        match number_at(bytes, at, limit) {
            Scan::Found(span) => {
                at = span.end;
                spans.push(span);
            }
            // A later start inside the same run would end where it ends, with fewer
            // digits: skipping it keeps the scan linear.
            Scan::NotANumber { run_end } => at = run_end.max(at + 1),
        }
    }
    spans
}

/// What [`number_at`] found.
enum Scan {
    /// A phone or card number.
    Found(Span),
    /// No number starts here; none starts before `run_end` either.
    NotANumber {
        /// Where the digit run that was looked at ends.
        run_end: usize,
    },
}

/// The phone or card number starting at `start` and ending before `limit`, if one does.
fn number_at(bytes: &[u8], start: usize, limit: usize) -> Scan {
    let nothing = Scan::NotANumber { run_end: start + 1 };
    let glued_before = start
        .checked_sub(1)
        .and_then(|before| bytes.get(before))
        .is_some_and(u8::is_ascii_alphanumeric);
    let Some(&first) = bytes.get(start) else {
        return nothing;
    };
    let opens =
        matches!(first, b'+' | b'(') && bytes.get(start + 1).is_some_and(u8::is_ascii_digit);
    if glued_before || !(first.is_ascii_digit() || opens) {
        return nothing;
    }
    let mut digits: Vec<u8> = Vec::new();
    let mut end = start;
    let mut separators = 0;
    for (i, &byte) in bytes.iter().enumerate().take(limit).skip(start) {
        if byte.is_ascii_digit() {
            digits.push(byte - b'0');
            end = i + 1;
            separators = 0;
        } else if (is_number_separator(byte) || (i == start && byte == b'+')) && separators < 2 {
            separators += 1;
        } else {
            break;
        }
    }
    let glued_after = bytes.get(end).is_some_and(u8::is_ascii_alphanumeric);
    let run = bytes.get(start..end).unwrap_or_default();
    let kind = match digits.len() {
        _ if glued_after || is_iso_date(run) => None,
        13..=19 if luhn(&digits) => Some(Kind::Card),
        7.. => Some(Kind::Phone),
        _ => None,
    };
    match kind {
        Some(kind) => Scan::Found(Span { start, end, kind }),
        None => Scan::NotANumber { run_end: end },
    }
}

/// `YYYY-MM-DD`, which looks like a digit run but is a date.
fn is_iso_date(run: &[u8]) -> bool {
    run.len() == 10
        && run.iter().enumerate().all(|(i, byte)| match i {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        })
}

/// The Luhn check over decimal digits (most significant first).
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &digit)| {
            let digit = u32::from(digit);
            match i % 2 {
                0 => digit,
                _ if digit * 2 > 9 => digit * 2 - 9,
                _ => digit * 2,
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Replaces personal data in a text message and counts it in a header; passes a
/// message with none (or with a binary body) unchanged.
pub fn handle(mut message: Message) -> Action {
    let Some(redacted) = message.text().and_then(redact) else {
        return Action::Pass;
    };
    message.set_data(redacted.data);
    message.set_header(COUNT_HEADER, redacted.count.to_string());
    Action::Replace(message)
}

tern_function::function!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use tern_function::testing::run;

    /// The text after redaction, or the text itself when nothing was replaced.
    fn redacted(text: &str) -> String {
        match redact(text) {
            Some(redacted) => String::from_utf8(redacted.data).expect("redaction keeps UTF-8"),
            None => text.to_owned(),
        }
    }

    #[test]
    fn a_message_without_personal_data_passes_untouched() {
        for text in [
            "hello there",
            "",
            "meet at 10:30 on 2024-01-15, room 42",
            "call me at five",
            "ids abc1234567 and 1234567xyz",
            "a@b, @home, user@, x@localhost, y@-a.com, z@a..com, w@a.c0m",
        ] {
            assert_eq!(redact(text), None, "{text}");
        }
        let outcome = run(handle, Message::new("chat:1", "nothing to see"));
        assert_eq!(outcome.action, Action::Pass);
    }

    #[test]
    fn email_addresses_are_replaced() {
        assert_eq!(redacted("mail ana@example.com now"), "mail [email] now");
        assert_eq!(redacted("a.b+tag@mail.example.co.uk."), "[email].");
        assert_eq!(redacted("<ana_1@x-y.io>, bo@z.org"), "<[email]>, [email]");
        assert_eq!(redacted(".ana@example.com"), ".[email]");
    }

    #[test]
    fn phone_numbers_are_replaced() {
        for (text, expected) in [
            ("call 5551234", "call [phone]"),
            ("call +1 (555) 123-4567 today", "call [phone] today"),
            ("(555) 123-4567", "[phone]"),
            ("+44 20 7946 0958.", "[phone]."),
            ("555.123.4567, or 55-1234", "[phone], or 55-1234"),
            ("x: 555 123 4567", "x: [phone]"),
        ] {
            assert_eq!(redacted(text), expected, "{text}");
        }
    }

    #[test]
    fn short_numbers_and_dates_stay() {
        for text in ["room 123456", "2024-01-15", "order #12-34", "1 2 3"] {
            assert_eq!(redact(text), None, "{text}");
        }
    }

    #[test]
    fn card_numbers_passing_luhn_are_cards_others_are_phones() {
        assert_eq!(redacted("card 4111 1111 1111 1111 ok"), "card [card] ok");
        assert_eq!(redacted("4111-1111-1111-1111"), "[card]");
        assert_eq!(redacted("378282246310005"), "[card]"); // 15 digits (Amex test number)
        // One digit off: not a card, still a long number.
        assert_eq!(redacted("4111 1111 1111 1112"), "[phone]");
    }

    #[test]
    fn luhn_matches_known_numbers() {
        let digits = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<u8>>();
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
        assert!(luhn(&digits("4111111111111111")));
        assert!(luhn(&digits("0")));
    }

    #[test]
    fn digits_inside_an_email_belong_to_the_email() {
        assert_eq!(redacted("5551234567@example.com"), "[email]");
        assert_eq!(redacted("555 1234567@example.com"), "555 [email]");
        assert_eq!(redacted("ana@example.com 555-123-4567"), "[email] [phone]");
    }

    #[test]
    fn the_replacement_counts_spans_and_keeps_the_rest() {
        let mut message = Message::new("chat:1", "mail ana@x.io or call 555 123 4567 ✓");
        message.set_header("app", "1");
        let outcome = run(handle, message.clone());
        message.set_data("mail [email] or call [phone] ✓");
        message.set_header(COUNT_HEADER, "2");
        assert_eq!(outcome.action, Action::Replace(message));
    }

    #[test]
    fn binary_data_passes() {
        let outcome = run(handle, Message::new("chat:1", vec![0xff, b'5', b'5', b'5']));
        assert_eq!(outcome.action, Action::Pass);
    }

    #[test]
    fn json_bodies_stay_json() {
        let body = r#"{"text":"reach me at ana@example.com or +1 555 123 4567"}"#;
        let out = redacted(body);
        assert_eq!(out, r#"{"text":"reach me at [email] or [phone]"}"#);
    }
}
