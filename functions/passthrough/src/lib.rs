//! Passes every message unchanged: the cheapest function there is, used to measure
//! what calling a function costs.

use tern_function::{Action, Message};

/// Passes `message` on as it is.
pub fn handle(_message: Message) -> Action {
    Action::Pass
}

tern_function::function!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes() {
        let outcome = tern_function::testing::run(handle, Message::new("a", "x"));
        assert_eq!(outcome.action, Action::Pass);
    }
}
