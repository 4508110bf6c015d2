//! [`FunctionStats`]: what each deployed function did, for `/metrics` and
//! `tern fn list`. Counters are atomics; call durations go to an HDR histogram behind
//! a lock held only for one record (nanoseconds).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// How a message left a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Passed on unchanged.
    Pass,
    /// Replaced.
    Replace,
    /// Dropped.
    Drop,
    /// Rejected.
    Reject,
}

/// Why a call failed (the bounded label set of `tern_function_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Out of time.
    Timeout,
    /// Out of memory.
    Memory,
    /// A trap (panic, stack overflow, unreachable...).
    Trap,
    /// Anything else: instantiation failed, a wrong answer, a replacement over the
    /// size limit.
    Other,
}

impl Failure {
    pub(crate) const ALL: [Failure; 4] = [
        Failure::Timeout,
        Failure::Memory,
        Failure::Trap,
        Failure::Other,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Memory => "memory",
            Failure::Trap => "trap",
            Failure::Other => "other",
        }
    }
}

/// Counters and call durations of one function (kept across its versions).
#[derive(Debug)]
pub(crate) struct FunctionStats {
    invocations: AtomicU64,
    verdicts: [AtomicU64; 4],
    failures: [AtomicU64; 4],
    publishes: AtomicU64,
    durations: Mutex<Histogram<u64>>,
}

/// A copy of the numbers, as `tern fn list` shows them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub(crate) struct StatsSnapshot {
    /// Messages handed to the function.
    pub invocations: u64,
    /// Passed unchanged.
    pub passes: u64,
    /// Replaced.
    pub replaces: u64,
    /// Dropped.
    pub drops: u64,
    /// Rejected.
    pub rejects: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Calls that ran out of time.
    pub timeouts: u64,
    /// Calls that ran out of memory.
    pub memory_failures: u64,
    /// Other failures.
    pub other_failures: u64,
    /// Messages the function published.
    pub publishes: u64,
    /// Median call duration, microseconds.
    pub p50_us: f64,
    /// 99th percentile call duration, microseconds.
    pub p99_us: f64,
}

impl Default for FunctionStats {
    fn default() -> Self {
        Self {
            invocations: AtomicU64::new(0),
            verdicts: Default::default(),
            failures: Default::default(),
            publishes: AtomicU64::new(0),
            // 1 ns ..= 60 s at 2 significant digits: bounds are constants, valid.
            durations: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds"),
            ),
        }
    }
}

impl FunctionStats {
    /// One call over `messages` messages that took `duration`.
    pub(crate) fn record_call(&self, messages: usize, duration: Duration) {
        self.invocations.fetch_add(messages as u64, Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.durations.lock().saturating_record(nanos.max(1));
    }

    /// One message's fate.
    pub(crate) fn record_verdict(&self, verdict: Verdict) {
        self.verdicts[verdict as usize].fetch_add(1, Relaxed);
    }

    /// A failed call.
    pub(crate) fn record_failure(&self, failure: Failure) {
        self.failures[failure as usize].fetch_add(1, Relaxed);
    }

    /// Messages published by a call.
    pub(crate) fn record_publishes(&self, count: usize) {
        self.publishes.fetch_add(count as u64, Relaxed);
    }

    /// The numbers now.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let (p50, p99) = {
            let durations = self.durations.lock();
            (
                durations.value_at_quantile(0.5),
                durations.value_at_quantile(0.99),
            )
        };
        let verdict = |v: Verdict| self.verdicts[v as usize].load(Relaxed);
        let failure = |f: Failure| self.failures[f as usize].load(Relaxed);
        StatsSnapshot {
            invocations: self.invocations.load(Relaxed),
            passes: verdict(Verdict::Pass),
            replaces: verdict(Verdict::Replace),
            drops: verdict(Verdict::Drop),
            rejects: verdict(Verdict::Reject),
            traps: failure(Failure::Trap),
            timeouts: failure(Failure::Timeout),
            memory_failures: failure(Failure::Memory),
            other_failures: failure(Failure::Other),
            publishes: self.publishes.load(Relaxed),
            p50_us: p50 as f64 / 1000.0,
            p99_us: p99 as f64 / 1000.0,
        }
    }

    /// The count of one failure kind.
    pub(crate) fn failures(&self, failure: Failure) -> u64 {
        self.failures[failure as usize].load(Relaxed)
    }
}

/// Writes the Prometheus series of `functions` (name, stage, stats) to `out`. Label
/// sets are bounded by the deployed functions.
pub(crate) fn render(
    out: &mut String,
    functions: &[(String, tern_config::Stage, std::sync::Arc<FunctionStats>)],
) {
    use std::fmt::Write as _;
    if functions.is_empty() {
        return;
    }
    let snapshots: Vec<(&str, String, StatsSnapshot)> = functions
        .iter()
        .map(|(name, stage, stats)| (name.as_str(), stage.to_string(), stats.snapshot()))
        .collect();
    let _ = writeln!(
        out,
        "# HELP tern_function_invocations_total Messages handed to a function."
    );
    let _ = writeln!(out, "# TYPE tern_function_invocations_total counter");
    for (name, stage, s) in &snapshots {
        let _ = writeln!(
            out,
            "tern_function_invocations_total{{function=\"{name}\",stage=\"{stage}\"}} {}",
            s.invocations
        );
    }
    let _ = writeln!(
        out,
        "# HELP tern_function_verdicts_total What functions answered, per message."
    );
    let _ = writeln!(out, "# TYPE tern_function_verdicts_total counter");
    for (name, stage, s) in &snapshots {
        for (verdict, count) in [
            ("pass", s.passes),
            ("replace", s.replaces),
            ("drop", s.drops),
            ("reject", s.rejects),
        ] {
            let _ = writeln!(
                out,
                "tern_function_verdicts_total{{function=\"{name}\",stage=\"{stage}\",verdict=\"{verdict}\"}} {count}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP tern_function_failures_total Failed calls, by kind."
    );
    let _ = writeln!(out, "# TYPE tern_function_failures_total counter");
    for ((name, stage, _), (_, _, stats)) in snapshots.iter().zip(functions) {
        for failure in Failure::ALL {
            let _ = writeln!(
                out,
                "tern_function_failures_total{{function=\"{name}\",stage=\"{stage}\",kind=\"{}\"}} {}",
                failure.label(),
                stats.failures(failure)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP tern_function_publishes_total Messages functions published."
    );
    let _ = writeln!(out, "# TYPE tern_function_publishes_total counter");
    for (name, stage, s) in &snapshots {
        let _ = writeln!(
            out,
            "tern_function_publishes_total{{function=\"{name}\",stage=\"{stage}\"}} {}",
            s.publishes
        );
    }
    let _ = writeln!(
        out,
        "# HELP tern_function_call_seconds Call durations since the edge started."
    );
    let _ = writeln!(out, "# TYPE tern_function_call_seconds summary");
    for (name, stage, s) in &snapshots {
        for (quantile, us) in [("0.5", s.p50_us), ("0.99", s.p99_us)] {
            let _ = writeln!(
                out,
                "tern_function_call_seconds{{function=\"{name}\",stage=\"{stage}\",quantile=\"{quantile}\"}} {}",
                us / 1e6
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reports_what_was_recorded() {
        let stats = FunctionStats::default();
        stats.record_call(3, Duration::from_micros(10));
        stats.record_call(1, Duration::from_micros(1000));
        stats.record_verdict(Verdict::Pass);
        stats.record_verdict(Verdict::Reject);
        stats.record_failure(Failure::Timeout);
        stats.record_publishes(2);
        let s = stats.snapshot();
        assert_eq!(s.invocations, 4);
        assert_eq!((s.passes, s.rejects, s.drops, s.timeouts), (1, 1, 0, 1));
        assert_eq!(s.publishes, 2);
        assert!((9.0..=11.0).contains(&s.p50_us), "{}", s.p50_us);
        assert!((990.0..=1010.0).contains(&s.p99_us), "{}", s.p99_us);
    }
}
