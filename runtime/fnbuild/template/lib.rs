//! {{name}}: a Tern message function.
//!
//! `tern fn build` turns this crate into a WebAssembly component; `cargo test` runs
//! the unit tests below natively and `tests/host.rs` against the real component.

use tern_function::{Action, Level, Message};

/// Decides each message's fate. This example refuses empty messages, upper-cases
/// text and passes anything else (binary data) on unchanged.
pub fn handle(mut message: Message) -> Action {
    // Each accessor reads that field from the edge on first use: read only what you need.
    if message.data().is_empty() {
        // At ingress, the publisher gets a NACK carrying this reason.
        return Action::Reject("empty messages are not allowed".into());
    }
    let Some(text) = message.text() else {
        // Not UTF-8: pass it on as it is (the cheapest answer).
        return Action::Pass;
    };
    let upper = text.to_uppercase();
    // A line in the edge's log, tagged with this function's name.
    tern_function::log(Level::Debug, &format!("{} bytes upper-cased", upper.len()));
    message.set_data(upper);
    Action::Replace(message)
}

// Exports `handle` (and a batched form of it) as the component's handler.
tern_function::function!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use tern_function::testing::run;

    #[test]
    fn upper_cases_text() {
        let outcome = run(handle, Message::new("chat:1", "hello"));
        assert_eq!(
            outcome.action,
            Action::Replace(Message::new("chat:1", "HELLO"))
        );
        assert_eq!(outcome.logs.len(), 1);
    }

    #[test]
    fn rejects_empty_messages() {
        let outcome = run(handle, Message::new("chat:1", ""));
        assert_eq!(
            outcome.action,
            Action::Reject("empty messages are not allowed".into())
        );
    }

    #[test]
    fn passes_binary_data() {
        let outcome = run(handle, Message::new("chat:1", vec![0xff, 0xfe]));
        assert_eq!(outcome.action, Action::Pass);
    }
}
