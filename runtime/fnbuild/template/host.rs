//! Runs the real component the way an edge does: `Component::build` builds this crate
//! with `tern fn build`'s library and loads it in the edge's WebAssembly host.

use tern_function::{Action, Message};
use tern_function_test::Component;

#[test]
fn the_component_upper_cases_text_and_rejects_empty_messages() {
    let component = Component::build(env!("CARGO_MANIFEST_DIR"));
    let outcome = component.call(Message::new("chat:1", "hello"));
    assert_eq!(
        outcome.action,
        Action::Replace(Message::new("chat:1", "HELLO"))
    );
    let outcome = component.call(Message::new("chat:1", ""));
    assert_eq!(
        outcome.action,
        Action::Reject("empty messages are not allowed".into())
    );
}
