//! ExaBGP-style hysteresis over probe reports (sans-IO: time is an argument).
//!
//! An edge starts [`HealthState::Down`] and must pass `rise` probes in a row before it
//! is [`HealthState::Up`]; once up, `fall` failed probes in a row take it down. A
//! single good probe resets the failure streak and a single bad one resets the success
//! streak, so an edge that flaps every other probe never changes state. A drain file
//! overrides everything: while it is present the edge is [`HealthState::Disabled`] and
//! probes are ignored; when it goes, the edge is `Down` and must rise again from zero.
//! A shutdown disables the edge for good.
//!
//! ```text
//!            rise good probes in a row              drain file present
//!   Down ───────────────────────────────▶ Up        (from any state)
//!    ▲ ◀──────────────────────────────── │     ─────────────────────▶ Disabled
//!    │       fall bad probes in a row                                    │
//!    └──────────────────── drain file removed ◀──────────────────────────┘
//! ```

use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// Where an edge stands, as its anycast announcement sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Healthy: the edge announces.
    Up,
    /// Not (yet) proven healthy: the edge withdraws or de-prefers.
    Down,
    /// Drained by the operator (drain file present): the edge withdraws, probes ignored.
    Disabled,
}

impl HealthState {
    /// Lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Down => "down",
            HealthState::Disabled => "disabled",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one named check inside a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name (`websocket`, `link`, `load`, …), stable across probes.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it saw: an error message on failure, a short summary on success.
    pub detail: String,
    /// How long the check took.
    pub elapsed: Duration,
}

impl CheckResult {
    /// A check that passed.
    pub fn passed(name: impl Into<String>, detail: impl Into<String>, elapsed: Duration) -> Self {
        CheckResult {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            elapsed,
        }
    }

    /// A check that failed.
    pub fn failed(name: impl Into<String>, detail: impl Into<String>, elapsed: Duration) -> Self {
        CheckResult {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            elapsed,
        }
    }
}

/// One probe: the results of every check it ran.
///
/// A probe is good when it ran at least one check and every check passed; a probe
/// that ran nothing proves nothing and counts as bad.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeReport {
    checks: Vec<CheckResult>,
}

impl ProbeReport {
    /// A report of `checks`.
    pub fn new(checks: Vec<CheckResult>) -> Self {
        ProbeReport { checks }
    }

    /// Adds a check's result.
    pub fn push(&mut self, check: CheckResult) {
        self.checks.push(check);
    }

    /// Every check's result, in the order they were added.
    pub fn checks(&self) -> &[CheckResult] {
        &self.checks
    }

    /// Whether the probe is good: at least one check, all passed.
    pub fn is_healthy(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.ok)
    }

    /// `name: detail` of every failed check, joined with `; ` (or why the probe is bad
    /// without a failed check).
    fn failure_summary(&self) -> String {
        if self.checks.is_empty() {
            return "no checks ran".to_owned();
        }
        let parts: Vec<String> = self
            .failures()
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        parts.join("; ")
    }

    /// The names of every check, joined with `, `.
    fn check_names(&self) -> String {
        let names: Vec<&str> = self.checks.iter().map(|c| c.name.as_str()).collect();
        names.join(", ")
    }
}

/// A change of [`HealthState`], with why it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: HealthState,
    /// The state after.
    pub to: HealthState,
    /// When (the `now` of the input that caused it).
    pub at: Instant,
    /// A sentence for the log: which checks failed or how many probes passed.
    pub reason: String,
}

/// How many transitions went to each state since the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransitionCounts {
    /// Transitions to [`HealthState::Up`].
    pub up: u64,
    /// Transitions to [`HealthState::Down`].
    pub down: u64,
    /// Transitions to [`HealthState::Disabled`].
    pub disabled: u64,
}

/// The hysteresis state machine.
#[derive(Clone, Debug)]
pub struct Hysteresis {
    rise: NonZeroU32,
    fall: NonZeroU32,
    state: HealthState,
    /// Good probes in a row (counts toward `rise` while down).
    good_streak: u32,
    /// Bad probes in a row (counts toward `fall` while up).
    bad_streak: u32,
    /// Set by [`Hysteresis::handle_shutdown`]: disabled for good.
    leaving: bool,
    transitions: TransitionCounts,
}

impl Hysteresis {
    /// A machine that starts [`HealthState::Down`]: an edge proves itself before it
    /// announces.
    pub fn new(rise: NonZeroU32, fall: NonZeroU32) -> Self {
        Hysteresis {
            rise,
            fall,
            state: HealthState::Down,
            good_streak: 0,
            bad_streak: 0,
            leaving: false,
            transitions: TransitionCounts::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Transitions so far, by the state they went to.
    pub fn transitions_total(&self) -> TransitionCounts {
        self.transitions
    }

    /// Takes one probe's report. Ignored while [`HealthState::Disabled`].
    pub fn handle_probe(&mut self, now: Instant, report: &ProbeReport) -> Option<Transition> {
        if self.state == HealthState::Disabled {
            return None;
        }
        if report.is_healthy() {
            self.good_streak = self.good_streak.saturating_add(1);
            self.bad_streak = 0;
        } else {
            self.bad_streak = self.bad_streak.saturating_add(1);
            self.good_streak = 0;
        }
        match self.state {
            HealthState::Down if self.good_streak >= self.rise.get() => {
                let reason = format!(
                    "{} probes in a row passed ({})",
                    self.good_streak,
                    report.check_names()
                );
                Some(self.transition(now, HealthState::Up, reason))
            }
            HealthState::Up if self.bad_streak >= self.fall.get() => {
                let reason = format!(
                    "{} probes in a row failed; last: {}",
                    self.bad_streak,
                    report.failure_summary()
                );
                Some(self.transition(now, HealthState::Down, reason))
            }
            HealthState::Down | HealthState::Up | HealthState::Disabled => None,
        }
    }

    /// Takes whether the drain file is present now. Present: [`HealthState::Disabled`]
    /// at once, whatever the probes say. Removed: [`HealthState::Down`], to rise again
    /// from zero.
    pub fn handle_drain(&mut self, now: Instant, present: bool) -> Option<Transition> {
        if self.leaving {
            return None;
        }
        match (present, self.state) {
            (true, HealthState::Disabled) | (false, HealthState::Up | HealthState::Down) => None,
            (true, HealthState::Up | HealthState::Down) => {
                Some(self.transition(now, HealthState::Disabled, "drain file present".to_owned()))
            }
            (false, HealthState::Disabled) => {
                let reason = format!(
                    "drain file removed; {} good probes in a row needed to rise",
                    self.rise
                );
                Some(self.transition(now, HealthState::Down, reason))
            }
        }
    }

    /// The edge is shutting down (SIGTERM): [`HealthState::Disabled`] at once and for
    /// good; neither probes nor the drain file change it again.
    pub fn handle_shutdown(&mut self, now: Instant) -> Option<Transition> {
        self.leaving = true;
        (self.state != HealthState::Disabled).then(|| {
            self.transition(
                now,
                HealthState::Disabled,
                "the edge is shutting down".to_owned(),
            )
        })
    }

    fn transition(&mut self, now: Instant, to: HealthState, reason: String) -> Transition {
        let from = self.state;
        self.state = to;
        self.good_streak = 0;
        self.bad_streak = 0;
        match to {
            HealthState::Up => self.transitions.up += 1,
            HealthState::Down => self.transitions.down += 1,
            HealthState::Disabled => self.transitions.disabled += 1,
        }
        tracing::info!(%from, %to, %reason, "health state changed");
        Transition {
            from,
            to,
            at: now,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).expect("test counts are non-zero")
    }

    fn good() -> ProbeReport {
        ProbeReport::new(vec![
            CheckResult::passed("websocket", "101 in 2 ms", 2 * MS),
            CheckResult::passed("link", "rtt 1 ms", MS),
        ])
    }

    fn bad() -> ProbeReport {
        ProbeReport::new(vec![
            CheckResult::passed("websocket", "101 in 2 ms", 2 * MS),
            CheckResult::failed("link", "connection refused", MS),
        ])
    }

    /// Virtual time: probe `i` happens at `start + i` seconds.
    struct Sim {
        start: Instant,
        step: u64,
        machine: Hysteresis,
    }

    impl Sim {
        fn new(rise: u32, fall: u32) -> Self {
            Sim {
                start: Instant::now(),
                step: 0,
                machine: Hysteresis::new(n(rise), n(fall)),
            }
        }

        fn now(&self) -> Instant {
            self.start + Duration::from_secs(self.step)
        }

        fn probe(&mut self, report: &ProbeReport) -> Option<Transition> {
            self.step += 1;
            let now = self.now();
            self.machine.handle_probe(now, report)
        }

        fn drain(&mut self, present: bool) -> Option<Transition> {
            self.step += 1;
            let now = self.now();
            self.machine.handle_drain(now, present)
        }

        /// Feeds `reports`; returns the index and transition of each change.
        fn run(&mut self, reports: &[ProbeReport]) -> Vec<(usize, Transition)> {
            reports
                .iter()
                .enumerate()
                .filter_map(|(i, r)| self.probe(r).map(|t| (i, t)))
                .collect()
        }
    }

    #[test]
    fn starts_down_and_rises_after_exactly_rise_good_probes() {
        let mut sim = Sim::new(3, 2);
        assert_eq!(sim.machine.state(), HealthState::Down);
        assert_eq!(sim.probe(&good()), None);
        assert_eq!(sim.probe(&good()), None);
        let t = sim.probe(&good()).expect("third good probe rises");
        assert_eq!((t.from, t.to), (HealthState::Down, HealthState::Up));
        assert_eq!(t.at, sim.now());
        assert!(
            t.reason.contains("3 probes in a row passed"),
            "{}",
            t.reason
        );
        assert!(t.reason.contains("websocket, link"), "{}", t.reason);
        assert_eq!(sim.machine.state(), HealthState::Up);
    }

    #[test]
    fn falls_after_exactly_fall_bad_probes_and_names_the_failing_check() {
        let mut sim = Sim::new(1, 2);
        assert!(sim.probe(&good()).is_some());
        assert_eq!(sim.probe(&bad()), None);
        let t = sim.probe(&bad()).expect("second bad probe falls");
        assert_eq!((t.from, t.to), (HealthState::Up, HealthState::Down));
        assert!(
            t.reason.contains("2 probes in a row failed"),
            "{}",
            t.reason
        );
        assert!(
            t.reason.contains("link: connection refused"),
            "{}",
            t.reason
        );
        assert!(!t.reason.contains("websocket"), "{}", t.reason);
    }

    #[test]
    fn a_bad_probe_resets_the_rise_and_a_good_one_the_fall() {
        let mut sim = Sim::new(3, 3);
        let changes = sim.run(&[good(), good(), bad(), good(), good(), good()]);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].0, 5,
            "rises on the third good probe after the bad one"
        );
        let changes = sim.run(&[bad(), bad(), good(), bad(), bad(), bad()]);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].0, 5,
            "falls on the third bad probe after the good one"
        );
        assert_eq!(changes[0].1.to, HealthState::Down);
    }

    #[test]
    fn flapping_never_transitions() {
        let mut sim = Sim::new(2, 2);
        let flapping: Vec<ProbeReport> = (0..100)
            .map(|i| if i % 2 == 0 { good() } else { bad() })
            .collect();
        assert!(sim.run(&flapping).is_empty(), "down stays down");
        sim.run(&[good(), good()]);
        assert_eq!(sim.machine.state(), HealthState::Up);
        assert!(sim.run(&flapping).is_empty(), "up stays up");
        assert_eq!(
            sim.machine.transitions_total(),
            TransitionCounts {
                up: 1,
                down: 0,
                disabled: 0
            }
        );
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_probe() {
        let mut sim = Sim::new(1, 1);
        let changes = sim.run(&[good(), bad(), good(), good(), bad()]);
        let to: Vec<HealthState> = changes.iter().map(|(_, t)| t.to).collect();
        assert_eq!(
            to,
            [
                HealthState::Up,
                HealthState::Down,
                HealthState::Up,
                HealthState::Down
            ]
        );
    }

    #[test]
    fn an_empty_probe_is_bad() {
        let mut sim = Sim::new(1, 1);
        assert!(!ProbeReport::default().is_healthy());
        assert_eq!(sim.probe(&ProbeReport::default()), None);
        assert!(sim.probe(&good()).is_some());
        let t = sim.probe(&ProbeReport::default()).expect("falls");
        assert!(t.reason.contains("no checks ran"), "{}", t.reason);
    }

    #[test]
    fn drain_overrides_everything_and_rising_starts_over() {
        let mut sim = Sim::new(2, 2);
        sim.run(&[good(), good()]);
        assert_eq!(sim.machine.state(), HealthState::Up);

        let t = sim.drain(true).expect("drain disables at once");
        assert_eq!((t.from, t.to), (HealthState::Up, HealthState::Disabled));
        assert_eq!(t.reason, "drain file present");
        assert_eq!(sim.drain(true), None, "still present: no change");
        assert!(sim.run(&[good(), good(), good(), good()]).is_empty());
        assert!(sim.run(&[bad(), bad(), bad()]).is_empty());
        assert_eq!(sim.machine.state(), HealthState::Disabled);

        sim.run(&[good(), good(), good()]);
        let t = sim.drain(false).expect("removal goes down");
        assert_eq!((t.from, t.to), (HealthState::Disabled, HealthState::Down));
        assert!(t.reason.contains("2 good probes"), "{}", t.reason);
        assert_eq!(sim.drain(false), None);
        assert_eq!(
            sim.probe(&good()),
            None,
            "good probes while drained do not count"
        );
        assert_eq!(sim.probe(&good()).map(|t| t.to), Some(HealthState::Up));
        assert_eq!(
            sim.machine.transitions_total(),
            TransitionCounts {
                up: 2,
                down: 1,
                disabled: 1
            }
        );
    }

    #[test]
    fn shutdown_disables_for_good() {
        let mut sim = Sim::new(1, 1);
        sim.probe(&good());
        sim.step += 1;
        let t = sim
            .machine
            .handle_shutdown(sim.now())
            .expect("shutdown disables");
        assert_eq!((t.from, t.to), (HealthState::Up, HealthState::Disabled));
        assert_eq!(t.reason, "the edge is shutting down");
        assert_eq!(sim.drain(false), None, "no drain file: still disabled");
        assert_eq!(sim.probe(&good()), None);
        assert_eq!(sim.machine.handle_shutdown(sim.now()), None);
        assert_eq!(sim.machine.state(), HealthState::Disabled);

        // Drained first: already disabled, and the file's removal no longer counts.
        let mut sim = Sim::new(1, 1);
        sim.drain(true);
        assert_eq!(sim.machine.handle_shutdown(sim.now()), None);
        assert_eq!(sim.drain(false), None);
        assert_eq!(sim.machine.state(), HealthState::Disabled);
    }

    #[test]
    fn drain_while_down_disables_and_removal_returns_down() {
        let mut sim = Sim::new(3, 2);
        sim.probe(&good());
        let t = sim.drain(true).expect("disables");
        assert_eq!(t.from, HealthState::Down);
        let t = sim.drain(false).expect("back down");
        assert_eq!(t.to, HealthState::Down);
        assert_eq!(sim.probe(&good()), None);
        assert_eq!(sim.probe(&good()), None);
        assert!(sim.probe(&good()).is_some(), "three fresh good probes rise");
    }
}
