//! Runs the real enricher component in the edge's WebAssembly host: the headers come
//! from the host's clock and edge, and agree with the native function given the same
//! edge.
//!
//! `cargo test -p enricher --test host`

use tern_function::testing::{run, set_edge, set_now_ms};
use tern_function::{Action, Message};
use tern_function_test::{Component, EDGE_NAME, EDGE_REGION};

fn component() -> Component {
    Component::build(env!("CARGO_MANIFEST_DIR"))
}

fn replaced(action: Action) -> Message {
    match action {
        Action::Replace(message) => message,
        other => panic!("expected a replacement, got {other:?}"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[test]
fn the_component_adds_the_hosts_time_pop_and_region() {
    let mut message = Message::new("chat:1", "hello");
    message.set_header("a", "1");
    message.set_header("x-server-ms", "1");
    let before = now_ms();
    let enriched = replaced(component().call(message.clone()).action);
    let after = now_ms();

    assert_eq!(enriched.data(), message.data());
    assert_eq!(enriched.header("a"), Some("1"));
    assert_eq!(enriched.header("x-pop"), Some(EDGE_NAME));
    assert_eq!(enriched.header("x-region"), Some(EDGE_REGION));
    let stamped: u64 = enriched
        .header("x-server-ms")
        .and_then(|value| value.parse().ok())
        .expect("x-server-ms is a number");
    assert!(
        (before..=after).contains(&stamped),
        "{before} <= {stamped} <= {after}"
    );
}

/// The native answer for `message`, on the host's edge and at the time the component
/// stamped.
fn native(message: Message, stamped: &Message) -> Action {
    set_edge(EDGE_NAME, EDGE_REGION);
    let time = stamped
        .header("x-server-ms")
        .and_then(|value| value.parse().ok())
        .expect("x-server-ms is a number");
    set_now_ms(time);
    run(enricher::handle, message).action
}

#[test]
fn the_component_agrees_with_the_native_function() {
    let component = component();
    for message in [
        Message::new("chat:1", "hello"),
        Message::new("chat:1", vec![0xff, 0x00]),
        Message::new("chat:2", "")
            .with_name("typing".to_owned())
            .with_header("x-pop", "forged")
            .with_header("z", "2"),
    ] {
        let action = component.call(message.clone()).action;
        let stamped = replaced(action.clone());
        assert_eq!(action, native(message, &stamped));
    }
}

#[test]
fn a_batch_stamps_every_message() {
    let messages = vec![Message::new("chat:1", "a"), Message::new("chat:2", "b")];
    let actions = component().call_batch(messages.clone());
    assert_eq!(actions.len(), 2);
    for (message, action) in messages.into_iter().zip(actions) {
        let stamped = replaced(action.clone());
        assert_eq!(action, native(message, &stamped));
    }
}
