//! Hostile test function: publishes a copy of every message to its own channel 1000
//! times and logs 100 lines, then replaces the message's data with a tally `published=N refused=M
//! first-error=...` so a test can see what the host allowed.

use tern_function::{Action, Level, Message, Outgoing};

/// Publishes to `message.channel` 1000 times, logs 100 lines, and reports how many
/// publishes were accepted.
pub fn handle(mut message: Message) -> Action {
    for line in 0..100 {
        tern_function::log(Level::Info, &format!("chatty line {line}"));
    }
    let (mut published, mut refused) = (0u32, 0u32);
    let mut first_error = String::new();
    for _ in 0..1000 {
        let copy = Outgoing {
            name: message.name().map(str::to_owned),
            data: message.data().to_vec(),
            content_type: message.content_type().map(str::to_owned),
            headers: Vec::new(),
        };
        match tern_function::publish(message.channel(), copy) {
            Ok(()) => published += 1,
            Err(error) => {
                if refused == 0 {
                    first_error = error;
                }
                refused += 1;
            }
        }
    }
    message.set_data(format!(
        "published={published} refused={refused} first-error={first_error}"
    ));
    Action::Replace(message)
}

tern_function::function!(handle);
