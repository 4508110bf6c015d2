//! Runs the real validator component in the edge's WebAssembly host and checks it
//! answers what the native function answers.
//!
//! `cargo test -p validator --test host`

use tern_function::testing::run;
use tern_function::{Action, Message};
use tern_function_test::Component;

fn component() -> Component {
    Component::build(env!("CARGO_MANIFEST_DIR"))
}

fn message(body: impl Into<Vec<u8>>) -> Message {
    Message::new("chat:lobby", body)
}

/// One body per path: valid, each kind of problem, not JSON, binary.
fn inputs() -> Vec<Message> {
    vec![
        message(r#"{"user": "ana", "text": "hi", "reply_to": 7}"#),
        message(r#"{"user": 42, "text": "hi"}"#),
        message(format!(r#"{{"user": "{}", "text": "hi"}}"#, "é".repeat(65))),
        message(r#"{"user": "ana", "text": "hi", "reply_to": 0}"#),
        message(r#"{"user": "ana"}"#),
        message(r#"{"user": "ana", "text": "hi", "color": "red"}"#),
        message("[1, 2]"),
        message("{\"user\": \"ana\",\n \"text\": hi}"),
        message(vec![0xff, 0xfe]),
    ]
}

#[test]
fn the_component_passes_a_well_shaped_message() {
    let outcome = component().call(message(r#"{"user": "ana", "text": "hi"}"#));
    assert_eq!(outcome.action, Action::Pass);
}

#[test]
fn the_component_names_the_path_and_the_problem() {
    let component = component();
    assert_eq!(
        component
            .call(message(r#"{"user": 42, "text": "hi"}"#))
            .action,
        Action::Reject("$.user: expected a string of 1 to 64 characters, found number 42".into())
    );
    assert_eq!(
        component
            .call(message("{\"user\": \"ana\",\n \"text\": hi}"))
            .action,
        Action::Reject("not JSON: expected value at line 2 column 10".into())
    );
}

#[test]
fn the_component_agrees_with_the_native_function() {
    let component = component();
    for message in inputs() {
        let native = run(validator::handle, message.clone()).action;
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
        .map(|message| run(validator::handle, message.clone()).action)
        .collect();
    assert_eq!(native[0], Action::Pass);
    assert_eq!(component().call_batch(messages), native);
}
