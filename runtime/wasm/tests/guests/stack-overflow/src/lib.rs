//! Hostile test function: recurses without bound on a message named `deep`, passes the rest.

use tern_function::{Action, Message};

/// Recurses forever; `black_box` on the argument and the result keeps the compiler
/// from turning the recursion into a loop.
#[allow(unconditional_recursion)] // the point of this function
fn descend(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 16]);
    std::hint::black_box(descend(frame[7].wrapping_add(1))).wrapping_add(frame[3])
}

/// Overflows the stack when `message.name` is `deep`, else passes.
pub fn handle(message: Message) -> Action {
    if message.name.as_deref() == Some("deep") {
        let depth = descend(0);
        return Action::Drop(format!("reached depth {depth}"));
    }
    Action::Pass
}

tern_function::function!(handle);
