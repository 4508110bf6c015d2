//! Stamps every message with where and when the edge handled it, so subscribers can
//! show a trustworthy server time and see which POP served the publisher:
//!
//! | header        | value                                          |
//! |---------------|------------------------------------------------|
//! | `x-server-ms` | the edge's clock, ms since the Unix epoch      |
//! | `x-pop`       | the edge's name                                |
//! | `x-region`    | the edge's region                              |
//!
//! ```text
//!  message ──▶ set x-server-ms = now_ms(), x-pop = edge().name, x-region = edge().region
//!                 │ (a publisher's own values for these headers are overwritten)
//!                 ▼
//!              Replace(message)
//! ```
//!
//! Header names starting with `tern-` are reserved for the edge, hence the `x-`
//! prefix. Bound at `ingress`, the headers describe the edge the publisher reached; at
//! `egress`, each subscriber's edge.
//!
//! What it does not do: touch the body, or keep a publisher's values for these
//! headers (a client could otherwise forge a server time).

use tern_function::{Action, Message};

/// The header holding the edge's clock when it handled the message.
pub const SERVER_MS_HEADER: &str = "x-server-ms";
/// The header holding the edge's name (its POP).
pub const POP_HEADER: &str = "x-pop";
/// The header holding the edge's region.
pub const REGION_HEADER: &str = "x-region";

/// Adds the server time, POP and region headers.
pub fn handle(mut message: Message) -> Action {
    let edge = tern_function::edge();
    message.set_header(SERVER_MS_HEADER, tern_function::now_ms().to_string());
    message.set_header(POP_HEADER, edge.name);
    message.set_header(REGION_HEADER, edge.region);
    Action::Replace(message)
}

tern_function::function!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use tern_function::testing::{run, set_edge, set_now_ms};

    fn headers(action: Action) -> Vec<(String, String)> {
        match action {
            Action::Replace(message) => message.headers().to_vec(),
            other => panic!("expected a replacement, got {other:?}"),
        }
    }

    #[test]
    fn adds_time_pop_and_region() {
        set_now_ms(1_700_000_000_123);
        set_edge("fra1", "eu-central");
        let message = Message::new("chat:1", "hello");
        let outcome = run(handle, message.clone());
        let expected = message.with_headers(vec![
            ("x-pop".to_owned(), "fra1".to_owned()),
            ("x-region".to_owned(), "eu-central".to_owned()),
            ("x-server-ms".to_owned(), "1700000000123".to_owned()),
        ]);
        assert_eq!(outcome.action, Action::Replace(expected));
        assert!(outcome.published.is_empty() && outcome.logs.is_empty());
    }

    #[test]
    fn keeps_other_headers_sorted_and_overwrites_forged_ones() {
        set_now_ms(5);
        set_edge("sin1", "ap-southeast");
        let mut message = Message::new("chat:1", vec![0xff, 0x00]);
        message.set_header("a", "1");
        message.set_header("x-server-ms", "9999999999999");
        message.set_header("zz", "2");
        let headers = headers(run(handle, message).action);
        let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["a", "x-pop", "x-region", "x-server-ms", "zz"]);
        assert!(headers.contains(&("x-server-ms".into(), "5".into())));
    }

    #[test]
    fn the_body_is_untouched() {
        let message = Message::new("chat:1", vec![0xff, 0x00]);
        match run(handle, message).action {
            Action::Replace(replaced) => assert_eq!(replaced.data(), [0xff, 0x00]),
            other => panic!("expected a replacement, got {other:?}"),
        }
    }
}
