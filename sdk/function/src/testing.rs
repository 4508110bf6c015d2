//! Running a function natively, without WebAssembly: for unit tests.
//!
//! [`run`] calls the function and records what it asked of the host (publishes, log
//! lines); [`set_now_ms`] and [`set_edge`] fix what [`crate::now_ms`] and
//! [`crate::edge`] return. State is per thread, as Rust's test runner gives each test
//! its own thread.
//!
//! Inside a component these host calls go to the edge instead; this module is then
//! only the recording of nothing.

use std::cell::RefCell;

use crate::{Action, EdgeInfo, Level, Message, Outgoing};

/// What one call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The function's answer.
    pub action: Action,
    /// `(channel, message)` for each [`crate::publish`], in order.
    pub published: Vec<(String, Outgoing)>,
    /// `(level, text)` for each [`crate::log`], in order.
    pub logs: Vec<(Level, String)>,
}

/// How many messages one call may publish; the edge's quota, so a native test fails
/// the way the edge would.
pub const MAX_PUBLISHES_PER_CALL: usize = 16;

#[derive(Default)]
struct Recorder {
    published: Vec<(String, Outgoing)>,
    logs: Vec<(Level, String)>,
    now_ms: Option<u64>,
    edge: Option<EdgeInfo>,
}

thread_local! {
    static RECORDER: RefCell<Recorder> = RefCell::new(Recorder::default());
}

/// Calls `handler` with `message` and returns its action with what it published and
/// logged.
pub fn run(handler: fn(Message) -> Action, message: Message) -> Outcome {
    RECORDER.with_borrow_mut(|recorder| {
        recorder.published.clear();
        recorder.logs.clear();
    });
    let action = handler(message);
    RECORDER.with_borrow_mut(|recorder| Outcome {
        action,
        published: std::mem::take(&mut recorder.published),
        logs: std::mem::take(&mut recorder.logs),
    })
}

/// Fixes what [`crate::now_ms`] returns on this thread.
pub fn set_now_ms(now_ms: u64) {
    RECORDER.with_borrow_mut(|recorder| recorder.now_ms = Some(now_ms));
}

/// Fixes what [`crate::edge`] returns on this thread.
pub fn set_edge(name: &str, region: &str) {
    RECORDER.with_borrow_mut(|recorder| {
        recorder.edge = Some(EdgeInfo {
            name: name.to_owned(),
            region: region.to_owned(),
        });
    });
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn record_publish(channel: &str, message: Outgoing) -> Result<(), String> {
    if channel.is_empty() || channel.starts_with('$') {
        return Err(format!(
            "{channel:?} is not a channel a function may publish to"
        ));
    }
    RECORDER.with_borrow_mut(|recorder| {
        if recorder.published.len() >= MAX_PUBLISHES_PER_CALL {
            return Err(format!(
                "a call may publish at most {MAX_PUBLISHES_PER_CALL} messages"
            ));
        }
        recorder.published.push((channel.to_owned(), message));
        Ok(())
    })
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn record_log(level: Level, text: &str) {
    RECORDER.with_borrow_mut(|recorder| recorder.logs.push((level, text.to_owned())));
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn now_ms() -> u64 {
    RECORDER
        .with_borrow(|recorder| recorder.now_ms)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as u64)
        })
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn edge() -> EdgeInfo {
    RECORDER.with_borrow(|recorder| {
        recorder.edge.clone().unwrap_or_else(|| EdgeInfo {
            name: "test".to_owned(),
            region: "local".to_owned(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(message: Message) -> Action {
        crate::log(Level::Info, "routing");
        let copy = Outgoing::from_message(&message);
        match crate::publish("audit", copy) {
            Ok(()) => Action::Pass,
            Err(reason) => Action::Reject(reason),
        }
    }

    #[test]
    fn run_records_publishes_and_logs_per_call() {
        let outcome = run(router, Message::new("chat:1", "hello"));
        assert_eq!(outcome.action, Action::Pass);
        assert_eq!(outcome.published.len(), 1);
        assert_eq!(outcome.published[0].0, "audit");
        assert_eq!(outcome.published[0].1.data, b"hello");
        assert_eq!(outcome.logs, vec![(Level::Info, "routing".to_owned())]);
        // A second call starts from nothing.
        assert_eq!(run(router, Message::new("chat:1", "x")).published.len(), 1);
    }

    fn flood(_: Message) -> Action {
        for _ in 0..MAX_PUBLISHES_PER_CALL {
            if let Err(reason) = crate::publish("other", Outgoing::default()) {
                return Action::Reject(reason);
            }
        }
        match crate::publish("other", Outgoing::default()) {
            Ok(()) => Action::Pass,
            Err(reason) => Action::Reject(reason),
        }
    }

    #[test]
    fn the_publish_quota_is_the_edges() {
        let outcome = run(flood, Message::new("a", ""));
        assert!(matches!(outcome.action, Action::Reject(ref r) if r.contains("at most 16")));
        assert_eq!(outcome.published.len(), MAX_PUBLISHES_PER_CALL);
    }

    #[test]
    fn clock_and_edge_can_be_fixed() {
        set_now_ms(42);
        set_edge("fra1", "eu");
        assert_eq!(crate::now_ms(), 42);
        assert_eq!(crate::edge().name, "fra1");
    }
}
