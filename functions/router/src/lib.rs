//! Copies alerts to a channel of their own, so an on-call dashboard subscribes to
//! `alerts:*` instead of every chat: a message named `alert`, or whose JSON body has
//! `"priority": "high"`, is published again to `alerts:<its channel>`. The original
//! always passes.
//!
//! ```text
//!  message on chat:ops ──▶ alert? ──no──────────────────────────────────▶ Pass
//!                            │ yes
//!                            ▼
//!        publish(alerts:chat:ops, copy + header x-source-id) ──error──▶ log(warn)
//!                            │                                            │
//!                            ▼                                            ▼
//!                          Pass                                         Pass
//! ```
//!
//! The copy is published only if the call succeeds (the edge's rule for
//! `tern_function::publish`), and carries the original's name, body, content type and
//! headers, plus `x-source-id` (the original's id) so a consumer can find it.
//!
//! What it does not do: route messages already on an `alerts:` channel (a binding on
//! `*` would otherwise copy its own copies forever), parse bodies that do not start
//! with `{`, or fail the original when the copy cannot be published: losing an alert
//! copy is logged, losing the chat message would be worse.

use serde_json::Value;
use tern_function::{Action, Level, Message, Outgoing};

/// The event name that marks a message as an alert.
pub const ALERT_NAME: &str = "alert";
/// What the copy's channel starts with; the rest is the original channel.
pub const ALERTS_PREFIX: &str = "alerts:";
/// The header on the copy that holds the original message's id.
pub const SOURCE_ID_HEADER: &str = "x-source-id";

/// Whether `message` is an alert: named [`ALERT_NAME`], or a JSON object body with
/// `"priority": "high"`.
pub fn is_alert(message: &Message) -> bool {
    if message.name() == Some(ALERT_NAME) {
        return true;
    }
    // Only an object can have the field: skip parsing anything else.
    let object = message
        .data()
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        == Some(&b'{');
    // A `Value` rather than a derived struct: 67 KiB of component instead of 114 KiB.
    object
        && message
            .json::<Value>()
            .is_ok_and(|body| body.get("priority").and_then(Value::as_str) == Some("high"))
}

/// The channel an alert on `channel` is copied to.
pub fn alerts_channel(channel: &str) -> String {
    format!("{ALERTS_PREFIX}{channel}")
}

/// Copies an alert with `publish` (the host's, or a test's), then passes the original.
pub fn route(message: Message, publish: fn(&str, Outgoing) -> Result<(), String>) -> Action {
    if message.channel().starts_with(ALERTS_PREFIX) || !is_alert(&message) {
        return Action::Pass;
    }
    let channel = alerts_channel(message.channel());
    let mut copy = Outgoing::from_message(&message);
    copy.headers
        .push((SOURCE_ID_HEADER.to_owned(), message.id().to_owned()));
    if let Err(error) = publish(&channel, copy) {
        tern_function::log(
            Level::Warn,
            &format!(
                "could not copy message {:?} to {channel:?}: {error}",
                message.id()
            ),
        );
    }
    Action::Pass
}

/// Copies an alert to `alerts:<channel>` and passes every message.
pub fn handle(message: Message) -> Action {
    route(message, tern_function::publish)
}

tern_function::function!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use tern_function::testing::{Outcome, run};

    fn message(channel: &str, name: Option<&str>, body: &str) -> Message {
        Message::new(channel, body)
            .with_id("m1")
            .with_name(name.map(str::to_owned))
            .with_content_type("application/json".to_owned())
            .with_header("app", "1")
    }

    fn routed(outcome: &Outcome) -> Vec<&str> {
        outcome
            .published
            .iter()
            .map(|(channel, _)| channel.as_str())
            .collect()
    }

    #[test]
    fn a_message_named_alert_is_copied_and_passes() {
        let original = message("chat:ops", Some("alert"), "disk full");
        let outcome = run(handle, original.clone());
        assert_eq!(outcome.action, Action::Pass);
        assert_eq!(routed(&outcome), ["alerts:chat:ops"]);
        let mut expected = Outgoing::from_message(&original);
        expected.headers.push(("x-source-id".into(), "m1".into()));
        assert_eq!(outcome.published[0].1, expected);
    }

    #[test]
    fn a_high_priority_json_body_is_copied() {
        for body in [
            r#"{"priority": "high", "text": "db down"}"#,
            r#"  {"text": {"nested": [1, 2]}, "priority": "high"}"#,
        ] {
            let outcome = run(handle, message("chat:ops", None, body));
            assert_eq!(outcome.action, Action::Pass);
            assert_eq!(routed(&outcome), ["alerts:chat:ops"], "{body}");
        }
    }

    #[test]
    fn other_messages_pass_without_a_copy() {
        for (name, body) in [
            (None, r#"{"priority": "low"}"#),
            (None, r#"{"priority": "HIGH"}"#),
            (None, r#"{"priority": 1}"#),
            (None, r#"{"text": "priority high"}"#),
            (None, r#"["priority", "high"]"#),
            (None, r#"{"priority": "high""#),
            (None, "priority: high"),
            (Some("alerts"), "x"),
            (Some("chat"), ""),
        ] {
            let outcome = run(handle, message("chat:ops", name, body));
            assert_eq!(outcome.action, Action::Pass);
            assert!(outcome.published.is_empty(), "{name:?} {body}");
        }
        let binary = Message::new("chat:ops", vec![b'{', 0xff]);
        assert!(run(handle, binary).published.is_empty());
    }

    #[test]
    fn messages_on_alert_channels_are_not_copied_again() {
        let outcome = run(handle, message("alerts:chat:ops", Some("alert"), "x"));
        assert_eq!(outcome.action, Action::Pass);
        assert!(outcome.published.is_empty());
    }

    fn refusing_publish(_: &str, _: Outgoing) -> Result<(), String> {
        Err("quota exceeded".into())
    }

    #[test]
    fn a_publish_error_is_logged_and_the_original_passes() {
        let outcome = run(
            |message| route(message, refusing_publish),
            message("chat:ops", Some("alert"), "x"),
        );
        assert_eq!(outcome.action, Action::Pass);
        assert_eq!(
            outcome.logs,
            vec![(
                Level::Warn,
                "could not copy message \"m1\" to \"alerts:chat:ops\": quota exceeded".into()
            )]
        );
    }
}
