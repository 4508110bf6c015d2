//! Hostile test function: on a message named `bomb`, allocates 1 MiB blocks until an
//! allocation fails (which aborts: a trap); passes the rest.

use tern_function::{Action, Message};

/// Allocates without bound when `message.name` is `bomb`, else passes.
pub fn handle(message: Message) -> Action {
    if message.name() == Some("bomb") {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch the block so it is really allocated, and black_box it so the
            // allocation is not elided.
            blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
    Action::Pass
}

tern_function::function!(handle);
