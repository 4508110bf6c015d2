//! Hostile test function: panics on every message (a panic is a trap in a component).

use tern_function::{Action, Message};

/// Panics, whatever the message.
pub fn handle(message: Message) -> Action {
    panic!("trapping on purpose on channel {}", message.channel())
}

tern_function::function!(handle);
