//! Hostile test function: recurses without bound on a message named `deep`, passes the rest.

use tern_function::{Action, Message};

/// Recurses until the wasm call stack is exhausted: the first recursive call is not
/// in tail position, and nothing lives in linear memory, so it is the engine's stack
/// limit that stops it (not the guest's own shadow stack).
#[inline(never)]
fn descend(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    descend(depth + 1)
        .wrapping_add(descend(depth ^ 1))
        .wrapping_mul(3)
}

/// Overflows the stack when `message.name` is `deep`, else passes.
pub fn handle(message: Message) -> Action {
    if message.name() == Some("deep") {
        // black_box: the start is unknown to the compiler, so nothing is precomputed.
        let depth = descend(std::hint::black_box(0));
        return Action::Drop(format!("reached depth {depth}"));
    }
    Action::Pass
}

tern_function::function!(handle);
