//! `Component` against real components: the hostile guests of `tern-wasm`'s tests
//! (a function that fails must show up as the host's error text).
//!
//! `cargo test -p tern-function-test --test component`

use std::path::{Path, PathBuf};

use tern_function::{Action, Message};
use tern_function_test::{Component, TIMEOUT};

fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn guest(name: &str) -> Component {
    let dir = repository_path(&format!("runtime/wasm/tests/guests/{name}"));
    Component::try_build(&dir).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn a_trap_is_the_hosts_error_text() {
    let error = guest("trapping")
        .try_call(Message::new("chat:1", "x"))
        .expect_err("the guest traps on every message");
    assert!(error.starts_with("function trapped"), "{error}");
}

#[test]
#[should_panic(expected = "the call failed: function trapped")]
fn call_panics_with_the_error_when_the_call_fails() {
    guest("trapping").call(Message::new("chat:1", "x"));
}

#[test]
fn a_call_past_the_timeout_is_stopped() {
    let component = guest("looping");
    let looping = Message::new("chat:1", "x").with_name("loop".to_owned());
    let error = component.try_call(looping).expect_err("the guest loops");
    assert_eq!(
        error,
        format!("function ran longer than its {TIMEOUT:?} limit")
    );
    // The failed instance was dropped; the next call gets a fresh one.
    assert_eq!(
        component.call(Message::new("chat:1", "x")).action,
        Action::Pass
    );
}
