//! What the host grants a function (`tern:function/host@0.1.0`) and the per-instance
//! state those imports and the memory limiter work on.
//!
//! Imports never trap on the guest's behalf: a refused publish is an `Err(text)` the
//! guest sees, a log line over quota is counted. Quotas are per message (scaled by
//! the batch size in a batch call) and reset by [`CallState::begin`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tern_link::ChannelName;
use wasmtime::component::{Linker, WasmStr};
use wasmtime::{ResourceLimiter, StoreContextMut};

use crate::check::HOST;
use crate::config::{EdgeInfo, Limits};
use crate::deadline::Deadline;
use crate::lent::Lent;
use crate::message::{Level, Outgoing};

/// Longest log line written, in bytes; longer lines are cut (at a character boundary).
const MAX_LOG_LINE_BYTES: usize = 4096;
/// Most table elements an instance may grow to (the pool's slot size).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 20_000;

/// The data of one instance's `Store`.
pub(crate) struct CallState {
    function: Arc<str>,
    edge: Arc<EdgeInfo>,
    memory_cap: usize,
    /// Set when the limiter refused a memory growth during the current call.
    pub(crate) memory_refused: bool,
    /// The current call's deadline (epoch interruption only).
    pub(crate) deadline: Deadline,
    /// The messages lent to the current call.
    pub(crate) lent: Lent,
    publish_quota: usize,
    publish_bytes_left: usize,
    publishes: Vec<(String, Outgoing)>,
    log_quota: usize,
    log_lines: usize,
    logs_suppressed: usize,
}

impl CallState {
    pub(crate) fn new(function: Arc<str>, edge: Arc<EdgeInfo>, limits: &Limits) -> Self {
        Self {
            function,
            edge,
            memory_cap: limits.memory_bytes,
            memory_refused: false,
            deadline: Deadline::default(),
            lent: Lent::default(),
            publish_quota: 0,
            publish_bytes_left: 0,
            publishes: Vec::new(),
            log_quota: 0,
            log_lines: 0,
            logs_suppressed: 0,
        }
    }

    /// Resets the per-call counters for a call over `messages` messages.
    pub(crate) fn begin(&mut self, limits: &Limits, messages: usize) {
        self.memory_refused = false;
        self.publish_quota = limits.max_publishes.saturating_mul(messages);
        // What a call may hand the edge to publish: no more than its own memory cap
        // per message, so a guest cannot make the host hold more than it could itself.
        self.publish_bytes_left = limits.memory_bytes.saturating_mul(messages);
        self.publishes.clear();
        self.log_quota = limits.max_log_lines.saturating_mul(messages);
        self.log_lines = 0;
        self.logs_suppressed = 0;
    }

    /// Ends a call: reports suppressed log lines, hands over what was published.
    pub(crate) fn finish(&mut self) -> Vec<(String, Outgoing)> {
        if self.logs_suppressed > 0 {
            tracing::warn!(
                target: "tern::function",
                function = %self.function,
                suppressed = self.logs_suppressed,
                "log lines over the per-call quota were not written"
            );
            self.logs_suppressed = 0;
        }
        std::mem::take(&mut self.publishes)
    }

    fn publish(&mut self, channel: String, message: Outgoing) -> Result<(), String> {
        if self.publishes.len() >= self.publish_quota {
            return Err(format!(
                "publish refused: this call has published its quota of {} already",
                self.publish_quota
            ));
        }
        let name = ChannelName::parse(&channel).map_err(|e| format!("publish refused: {e}"))?;
        if name.is_system() {
            return Err(format!(
                "publish refused: {channel} is a system channel (names starting with `$`)"
            ));
        }
        let size = message.data.len()
            + message.name.as_ref().map_or(0, String::len)
            + message.content_type.as_ref().map_or(0, String::len)
            + message
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let Some(left) = self.publish_bytes_left.checked_sub(size) else {
            return Err(format!(
                "publish refused: {size} bytes is more than the {} this call may still publish",
                self.publish_bytes_left
            ));
        };
        self.publish_bytes_left = left;
        self.publishes.push((channel, message));
        Ok(())
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Defines `tern:function/host@0.1.0` in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let mut host = linker.instance(HOST)?;
    host.func_wrap(
        "publish",
        |mut cx: StoreContextMut<'_, CallState>, (channel, message): (String, Outgoing)| {
            Ok((cx.data_mut().publish(channel, message),))
        },
    )?;
    host.func_wrap(
        "log",
        |mut cx: StoreContextMut<'_, CallState>, (level, text): (Level, WasmStr)| {
            let state = cx.data_mut();
            if state.log_lines >= state.log_quota {
                state.logs_suppressed += 1;
                return Ok(());
            }
            state.log_lines += 1;
            let text = text.to_str(&cx)?;
            let text = cut(&text, MAX_LOG_LINE_BYTES);
            let function = &cx.data().function;
            match level {
                Level::Debug => {
                    tracing::debug!(target: "tern::function", function = %function, "{text}")
                }
                Level::Info => {
                    tracing::info!(target: "tern::function", function = %function, "{text}")
                }
                Level::Warn => {
                    tracing::warn!(target: "tern::function", function = %function, "{text}")
                }
                Level::Error => {
                    tracing::error!(target: "tern::function", function = %function, "{text}")
                }
            }
            Ok(())
        },
    )?;
    host.func_wrap("now-ms", |_cx: StoreContextMut<'_, CallState>, (): ()| {
        Ok((now_ms(),))
    })?;
    host.func_wrap("edge", |cx: StoreContextMut<'_, CallState>, (): ()| {
        Ok((Arc::clone(&cx.data().edge),))
    })?;
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }

    #[test]
    fn publish_checks_names_and_quota() {
        let limits = Limits {
            max_publishes: 2,
            ..Limits::default()
        };
        let mut state = CallState::new("f".into(), Arc::default(), &limits);
        state.begin(&limits, 1);
        assert!(state.publish(String::new(), Outgoing::default()).is_err());
        assert!(
            state
                .publish("$functions".into(), Outgoing::default())
                .is_err()
        );
        assert!(state.publish("a b".into(), Outgoing::default()).is_err());
        assert!(state.publish("x".repeat(256), Outgoing::default()).is_err());
        assert_eq!(state.publish("a".into(), Outgoing::default()), Ok(()));
        assert_eq!(state.publish("b".into(), Outgoing::default()), Ok(()));
        let refused = state.publish("c".into(), Outgoing::default());
        assert!(refused.is_err_and(|e| e.contains("quota of 2")));
        assert_eq!(state.finish().len(), 2);
    }

    #[test]
    fn publish_bytes_are_capped_by_the_memory_limit() {
        let limits = Limits {
            memory_bytes: 10,
            ..Limits::default()
        };
        let mut state = CallState::new("f".into(), Arc::default(), &limits);
        state.begin(&limits, 1);
        let big = |n| Outgoing {
            data: vec![0; n],
            ..Outgoing::default()
        };
        assert_eq!(state.publish("a".into(), big(6)), Ok(()));
        assert!(state.publish("a".into(), big(6)).is_err());
        assert_eq!(state.publish("a".into(), big(4)), Ok(()));
    }
}
