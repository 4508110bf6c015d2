//! Runs the real redact component in the edge's WebAssembly host and checks it
//! answers what the native function answers.
//!
//! `cargo test -p redact --test host`

use tern_function::testing::run;
use tern_function::{Action, Message};
use tern_function_test::Component;

fn component() -> Component {
    Component::build(env!("CARGO_MANIFEST_DIR"))
}

fn message(body: impl Into<Vec<u8>>) -> Message {
    let mut message = Message::new("chat:support", body);
    message.set_id("m1");
    message.set_header("app", "web");
    message
}

fn inputs() -> Vec<Message> {
    vec![
        message("nothing personal here, see you on 2024-01-15"),
        message("mail ana@example.com or call +1 (555) 123-4567 ✓"),
        message("card 4111 1111 1111 1111, not 4111 1111 1111 1112"),
        message(r#"{"text":"reach me at bo@mail.example.org"}"#),
        message(vec![
            0xff, b'5', b'5', b'5', b'1', b'2', b'3', b'4', b'5', b'6', b'7',
        ]),
    ]
}

#[test]
fn the_component_replaces_personal_data_and_counts_it() {
    let outcome = component().call(message("mail ana@example.com or call 555 123 4567"));
    let mut expected = message("mail [email] or call [phone]");
    expected.set_header("redacted", "2");
    assert_eq!(outcome.action, Action::Replace(expected));
}

#[test]
fn the_component_passes_a_message_without_personal_data() {
    let outcome = component().call(message("room 42 at 10:30"));
    assert_eq!(outcome.action, Action::Pass);
}

#[test]
fn the_component_agrees_with_the_native_function() {
    let component = component();
    for message in inputs() {
        let native = run(redact::handle, message.clone()).action;
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
        .map(|message| run(redact::handle, message.clone()).action)
        .collect();
    assert!(
        native
            .iter()
            .any(|action| matches!(action, Action::Replace(_)))
    );
    assert!(native.contains(&Action::Pass));
    assert_eq!(component().call_batch(messages), native);
}
