//! Hostile test function: loops forever on a message named `loop`, passes the rest.

use tern_function::{Action, Message};

/// Loops forever when `message.name` is `loop`, else passes.
pub fn handle(message: Message) -> Action {
    if message.name.as_deref() == Some("loop") {
        let mut turns = 0u64;
        loop {
            // black_box keeps the loop from being proven side-effect free.
            turns = std::hint::black_box(turns.wrapping_add(1));
        }
    }
    Action::Pass
}

tern_function::function!(handle);
