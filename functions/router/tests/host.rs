//! Runs the real router component in the edge's WebAssembly host: what it publishes
//! goes through the host's `publish` import (and its channel-name checks).
//!
//! `cargo test -p router --test host`

use tern_function::testing::run;
use tern_function::{Action, Message, Outgoing};
use tern_function_test::Component;

fn component() -> Component {
    Component::build(env!("CARGO_MANIFEST_DIR"))
}

fn message(channel: &str, name: Option<&str>, body: &str) -> Message {
    Message::new(channel, body)
        .with_id("m1")
        .with_name(name.map(str::to_owned))
        .with_content_type("application/json".to_owned())
        .with_header("app", "web")
}

fn inputs() -> Vec<Message> {
    vec![
        message("chat:ops", Some("alert"), "disk full"),
        message(
            "chat:ops",
            None,
            r#"{"priority": "high", "text": "db down"}"#,
        ),
        message("chat:ops", None, r#"{"priority": "low"}"#),
        message("chat:ops", Some("chat"), "hello"),
        message("alerts:chat:ops", Some("alert"), "already a copy"),
    ]
}

#[test]
fn the_component_copies_an_alert_and_passes_the_original() {
    let original = message("chat:ops", Some("alert"), "disk full");
    let outcome = component().call(original.clone());
    assert_eq!(outcome.action, Action::Pass);
    let mut copy = Outgoing::from_message(&original);
    copy.headers.push(("x-source-id".into(), "m1".into()));
    assert_eq!(outcome.published, [("alerts:chat:ops".to_owned(), copy)]);
}

#[test]
fn the_component_passes_other_messages_without_a_copy() {
    let outcome = component().call(message("chat:ops", None, r#"{"priority": "low"}"#));
    assert_eq!(outcome.action, Action::Pass);
    assert!(outcome.published.is_empty());
}

#[test]
fn a_copy_the_host_refuses_still_passes_the_original() {
    // "alerts:" + 250 bytes is over the 255-byte channel name limit: the host's
    // publish refuses it, the router logs that and passes the original.
    let channel = "c".repeat(250);
    let outcome = component().call(message(&channel, Some("alert"), "x"));
    assert_eq!(outcome.action, Action::Pass);
    assert!(outcome.published.is_empty());
}

#[test]
fn the_component_agrees_with_the_native_function() {
    let component = component();
    for message in inputs() {
        let native = run(router::handle, message.clone());
        let outcome = component.call(message.clone());
        assert_eq!(outcome.action, native.action, "{message:?}");
        assert_eq!(outcome.published, native.published, "{message:?}");
    }
}

#[test]
fn a_batch_passes_every_message() {
    let messages = inputs();
    let native: Vec<Action> = messages
        .iter()
        .map(|message| run(router::handle, message.clone()).action)
        .collect();
    assert_eq!(component().call_batch(messages), native);
}
