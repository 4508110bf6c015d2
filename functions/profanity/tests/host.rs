//! Runs the real profanity component in the edge's WebAssembly host and checks it
//! answers what the native function answers.
//!
//! `cargo test -p profanity --test host`

use tern_function::testing::run;
use tern_function::{Action, Message};
use tern_function_test::Component;

fn component() -> Component {
    Component::build(env!("CARGO_MANIFEST_DIR"))
}

/// Inputs covering each path: clean, blocked (any case, any punctuation), binary,
/// letters outside ASCII, a 256-byte message.
fn inputs() -> Vec<Message> {
    let long_clean = "the quick brown fox jumps over the lazy dog ".repeat(6);
    let long_blocked = format!("{}damn", &long_clean[..252]);
    vec![
        Message::new("chat:lobby", "hello there"),
        Message::new("chat:lobby", "well DAMN, that hurt"),
        Message::new("chat:lobby", "“crap”"),
        Message::new("chat:lobby", "damnation is a word"),
        Message::new("chat:lobby", "craé 日本語"),
        Message::new("chat:lobby", vec![0xff, b' ', b'c', b'r', b'a', b'p']),
        Message::new("chat:lobby", ""),
        Message::new("chat:lobby", long_clean[..256].to_owned()),
        Message::new("chat:lobby", long_blocked),
    ]
}

#[test]
fn the_component_rejects_a_blocked_word_and_names_it() {
    let outcome = component().call(Message::new("chat:lobby", "well DAMN, that hurt"));
    assert_eq!(
        outcome.action,
        Action::Reject("message contains a blocked word: \"damn\"".into())
    );
    assert!(outcome.published.is_empty());
}

#[test]
fn the_component_passes_clean_and_binary_messages() {
    let component = component();
    assert_eq!(
        component.call(Message::new("chat:lobby", "hi")).action,
        Action::Pass
    );
    let binary = Message::new("chat:lobby", vec![0xff, 0xfe, 0x00]);
    assert_eq!(component.call(binary).action, Action::Pass);
}

#[test]
fn the_component_agrees_with_the_native_function() {
    let component = component();
    for message in inputs() {
        let native = run(profanity::handle, message.clone()).action;
        assert_eq!(
            component.call(message.clone()).action,
            native,
            "{message:?}"
        );
    }
}

#[test]
fn a_batch_answers_what_single_calls_answer() {
    let messages = inputs();
    let native: Vec<Action> = messages
        .iter()
        .map(|message| run(profanity::handle, message.clone()).action)
        .collect();
    assert!(native.contains(&Action::Pass));
    assert!(
        native
            .iter()
            .any(|action| matches!(action, Action::Reject(_)))
    );
    assert_eq!(component().call_batch(messages), native);
}
