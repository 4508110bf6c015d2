//! [`HealthMetrics`]: what the health loop exports on the edge's `/metrics`.
//!
//! Atomics updated by the loop and read by the edge's `/metrics` route; every label
//! set is closed (the three states, the three [`Check`]s, the three
//! [`Announcement`]s), so the series are bounded. [`HealthMetrics::render`] appends
//! the Prometheus text format 0.0.4:
//!
//! | series | kind | what |
//! |--------|------|------|
//! | `tern_health_state{state}` | gauge | 1 for the current state, 0 for the others |
//! | `tern_health_transitions_total{to}` | counter | state changes, by the state entered |
//! | `tern_health_probes_total` | counter | probes run |
//! | `tern_health_probe_failures_total{check}` | counter | failed checks, by check |
//! | `tern_health_event_loop_lag_seconds` | gauge | worst timer lateness on the edge's runtime, as the edge reported it at the last probe (NaN: not known) |
//! | `tern_health_dns_reports_total` | counter | reports posted to tern dns (all URLs) |
//! | `tern_health_dns_report_failures_total` | counter | of those, the ones that failed |
//! | `tern_health_anycast_*` | | the [`AnycastMetrics`] of the last cycle, when `[health.bird]` is set |

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::anycast::{Announcement, AnycastMetrics};
use crate::hysteresis::{HealthState, ProbeReport};
use crate::probes::Check;

/// `lag_micros` before the edge reported its lag.
const LAG_UNKNOWN: u64 = u64::MAX;
const STATES: [HealthState; 3] = [HealthState::Up, HealthState::Down, HealthState::Disabled];
const ANNOUNCEMENTS: [Announcement; 3] = [
    Announcement::Announce,
    Announcement::Deprefer,
    Announcement::Withdraw,
];

fn state_index(state: HealthState) -> usize {
    match state {
        HealthState::Up => 0,
        HealthState::Down => 1,
        HealthState::Disabled => 2,
    }
}

/// The health loop's counters and gauges.
#[derive(Debug)]
pub struct HealthMetrics {
    /// Index in [`STATES`] of the current state.
    state: AtomicU64,
    transitions: [AtomicU64; 3],
    probes: AtomicU64,
    probe_failures: [AtomicU64; Check::ALL.len()],
    lag_micros: AtomicU64,
    dns_reports: AtomicU64,
    dns_report_failures: AtomicU64,
    /// Copied after each anycast cycle; `None` without `[health.bird]`. Held only to
    /// copy in or out, never across an await.
    anycast: Mutex<Option<AnycastMetrics>>,
}

impl Default for HealthMetrics {
    /// Down (where the loop starts), nothing counted.
    fn default() -> Self {
        HealthMetrics {
            state: AtomicU64::new(state_index(HealthState::Down) as u64),
            transitions: Default::default(),
            probes: AtomicU64::new(0),
            probe_failures: Default::default(),
            lag_micros: AtomicU64::new(LAG_UNKNOWN),
            dns_reports: AtomicU64::new(0),
            dns_report_failures: AtomicU64::new(0),
            anycast: Mutex::new(None),
        }
    }
}

impl HealthMetrics {
    /// The current state.
    pub fn state(&self) -> HealthState {
        let index = usize::try_from(self.state.load(Relaxed)).unwrap_or(1);
        STATES.get(index).copied().unwrap_or(HealthState::Down)
    }

    /// Sets the current state.
    pub fn set_state(&self, state: HealthState) {
        self.state.store(state_index(state) as u64, Relaxed);
    }

    /// Counts a transition into `to` (and sets the state).
    pub fn transition(&self, to: HealthState) {
        self.transitions[state_index(to)].fetch_add(1, Relaxed);
        self.set_state(to);
    }

    /// Transitions so far into `to`.
    pub fn transitions_into(&self, to: HealthState) -> u64 {
        self.transitions[state_index(to)].load(Relaxed)
    }

    /// Counts a probe and its failed checks; `lag` is the event-loop lag the edge
    /// reported, if it did.
    pub fn record_probe(&self, report: &ProbeReport, lag: Option<Duration>) {
        self.probes.fetch_add(1, Relaxed);
        for failure in report.failures() {
            if let Some(index) = Check::from_name(&failure.name)
                .and_then(|check| Check::ALL.iter().position(|c| *c == check))
            {
                self.probe_failures[index].fetch_add(1, Relaxed);
            }
        }
        let micros = lag.map_or(LAG_UNKNOWN, |lag| {
            u64::try_from(lag.as_micros()).unwrap_or(LAG_UNKNOWN - 1)
        });
        self.lag_micros.store(micros, Relaxed);
    }

    /// Probes run so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(Relaxed)
    }

    /// Failures of `check` so far.
    pub fn probe_failures(&self, check: Check) -> u64 {
        Check::ALL
            .iter()
            .position(|c| *c == check)
            .map_or(0, |i| self.probe_failures[i].load(Relaxed))
    }

    /// A report is being posted to one tern dns.
    pub fn dns_report_sent(&self) {
        self.dns_reports.fetch_add(1, Relaxed);
    }

    /// A report to one tern dns failed.
    pub fn dns_report_failed(&self) {
        self.dns_report_failures.fetch_add(1, Relaxed);
    }

    /// Reports posted and, of those, failed.
    pub fn dns_reports(&self) -> (u64, u64) {
        (
            self.dns_reports.load(Relaxed),
            self.dns_report_failures.load(Relaxed),
        )
    }

    /// Keeps a copy of the anycast controller's metrics.
    pub fn set_anycast(&self, metrics: &AnycastMetrics) {
        if let Ok(mut kept) = self.anycast.lock() {
            *kept = Some(metrics.clone());
        }
    }

    /// The last copy of the anycast controller's metrics.
    pub fn anycast(&self) -> Option<AnycastMetrics> {
        self.anycast.lock().ok().and_then(|kept| kept.clone())
    }

    /// Appends every series in the Prometheus text format 0.0.4.
    pub fn render(&self, out: &mut String) {
        let mut header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let current = self.state();
        let name = "tern_health_state";
        header(out, name, "gauge", "1 for the edge's current health state.");
        for state in STATES {
            let _ = writeln!(
                out,
                "{name}{{state=\"{state}\"}} {}",
                u8::from(state == current)
            );
        }
        let name = "tern_health_transitions_total";
        header(
            out,
            name,
            "counter",
            "Health state changes, by the state entered.",
        );
        for state in STATES {
            let _ = writeln!(
                out,
                "{name}{{to=\"{state}\"}} {}",
                self.transitions_into(state)
            );
        }
        let name = "tern_health_probes_total";
        header(out, name, "counter", "Health probes run.");
        let _ = writeln!(out, "{name} {}", self.probes());
        let name = "tern_health_probe_failures_total";
        header(out, name, "counter", "Failed health checks, by check.");
        for check in Check::ALL {
            let _ = writeln!(
                out,
                "{name}{{check=\"{}\"}} {}",
                check.as_str(),
                self.probe_failures(check)
            );
        }
        let name = "tern_health_event_loop_lag_seconds";
        header(
            out,
            name,
            "gauge",
            "Worst lateness of a timer on the edge's runtime, as the edge reported it at the last probe (NaN: not known).",
        );
        let _ = match self.lag_micros.load(Relaxed) {
            LAG_UNKNOWN => writeln!(out, "{name} NaN"),
            micros => writeln!(
                out,
                "{name} {}",
                Duration::from_micros(micros).as_secs_f64()
            ),
        };
        let (sent, failed) = self.dns_reports();
        let name = "tern_health_dns_reports_total";
        header(out, name, "counter", "Health reports posted to tern dns.");
        let _ = writeln!(out, "{name} {sent}");
        let name = "tern_health_dns_report_failures_total";
        header(
            out,
            name,
            "counter",
            "Health reports to tern dns that failed.",
        );
        let _ = writeln!(out, "{name} {failed}");
        if let Some(anycast) = self.anycast() {
            render_anycast(out, &anycast, &mut header);
        }
    }
}

fn render_anycast(
    out: &mut String,
    m: &AnycastMetrics,
    header: &mut impl FnMut(&mut String, &str, &str, &str),
) {
    let name = "tern_health_anycast_announcing";
    header(
        out,
        name,
        "gauge",
        "1 for what BIRD announces, as the last cycle that read it saw.",
    );
    for announcement in ANNOUNCEMENTS {
        let _ = writeln!(
            out,
            "{name}{{announcement=\"{announcement}\"}} {}",
            u8::from(m.announcing == Some(announcement))
        );
    }
    let counters: [(&str, &str, &str, u64); 6] = [
        (
            "tern_health_anycast_frozen",
            "gauge",
            "1 while the last anycast cycle failed (BIRD or the site count), changing nothing.",
            u64::from(m.frozen),
        ),
        (
            "tern_health_anycast_reconciles_total",
            "counter",
            "Anycast cycles run.",
            m.reconciles_total,
        ),
        (
            "tern_health_anycast_changes_total",
            "counter",
            "BIRD protocols enabled or disabled.",
            m.changes_total,
        ),
        (
            "tern_health_anycast_guard_holds_total",
            "counter",
            "Cycles in which the guard kept the announcement (too few sites would remain).",
            m.guard_holds_total,
        ),
        (
            "tern_health_anycast_bird_errors_total",
            "counter",
            "Cycles that failed on BIRD.",
            m.bird_errors_total,
        ),
        (
            "tern_health_anycast_site_count_errors_total",
            "counter",
            "Cycles that failed because the announcing site count was unknown.",
            m.site_count_errors_total,
        ),
    ];
    for (name, kind, help, value) in counters {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hysteresis::CheckResult;

    #[test]
    fn renders_every_series_once_with_bounded_labels() {
        let m = HealthMetrics::default();
        assert_eq!(m.state(), HealthState::Down);
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("tern_health_event_loop_lag_seconds NaN\n"));
        m.transition(HealthState::Up);
        m.record_probe(
            &ProbeReport::new(vec![
                CheckResult::failed("link", "down", Duration::ZERO),
                CheckResult::failed("someone-elses", "x", Duration::ZERO),
            ]),
            Some(Duration::from_millis(3)),
        );
        m.dns_report_sent();
        m.dns_report_failed();
        let mut text = String::new();
        m.render(&mut text);
        assert!(
            text.contains("tern_health_state{state=\"up\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("tern_health_state{state=\"down\"} 0\n"));
        assert!(text.contains("tern_health_transitions_total{to=\"up\"} 1\n"));
        assert!(text.contains("tern_health_probe_failures_total{check=\"link\"} 1\n"));
        assert!(!text.contains("someone-elses"));
        assert!(text.contains("tern_health_event_loop_lag_seconds 0.003\n"));
        assert!(text.contains("tern_health_dns_report_failures_total 1\n"));
        assert!(
            !text.contains("anycast"),
            "no [health.bird]: no anycast series"
        );

        m.set_anycast(&AnycastMetrics {
            announcing: Some(Announcement::Withdraw),
            guard_holds_total: 2,
            ..AnycastMetrics::default()
        });
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("tern_health_anycast_announcing{announcement=\"withdraw\"} 1\n"));
        assert!(text.contains("tern_health_anycast_guard_holds_total 2\n"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).expect("name");
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}
