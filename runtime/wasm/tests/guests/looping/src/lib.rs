//! Hostile test function: loops forever on a message named `loop`, passes the rest.
//! A message named `spin` busy-loops for as many turns as its data says (decimal
//! text), then passes: bounded work for the deadline tests.

use tern_function::{Action, Message};

/// Loops forever when `message.name` is `loop`, spins when it is `spin`, else passes.
pub fn handle(message: Message) -> Action {
    match message.name() {
        Some("loop") => spin(u64::MAX),
        Some("spin") => {
            let turns = std::str::from_utf8(message.data())
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0);
            spin(turns);
        }
        _ => {}
    }
    Action::Pass
}

fn spin(turns: u64) {
    let mut done = 0u64;
    while done < turns {
        // black_box keeps the loop from being proven side-effect free.
        done = std::hint::black_box(done + 1);
    }
}

tern_function::function!(handle);
