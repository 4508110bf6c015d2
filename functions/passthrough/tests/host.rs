//! Runs the real passthrough component in the edge's WebAssembly host.
//!
//! `cargo test -p passthrough --test host`

use tern_function::{Action, Message};
use tern_function_test::Component;

#[test]
fn the_component_passes_every_message() {
    let component = Component::build(env!("CARGO_MANIFEST_DIR"));
    let text = Message::new("chat:1", "hello");
    let binary = Message::new("chat:1", vec![0xff; 256]);
    assert_eq!(component.call(text.clone()).action, Action::Pass);
    assert_eq!(
        component.call_batch(vec![text, binary]),
        [Action::Pass, Action::Pass]
    );
}
