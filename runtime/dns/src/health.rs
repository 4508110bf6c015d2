//! What the edges say about themselves, and how long it counts (sans-IO: time is an
//! argument).
//!
//! An edge reports its state (`up`, `down`, `disabled`) every probe cycle. The table
//! keeps the last report of each configured edge; an edge is answered only while its
//! last report says `up` and is no older than `report_ttl`. An edge that never
//! reported, or stopped reporting, is not answered: silence is not health.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::answer::{EdgeId, Topology};

/// Largest report body accepted, in bytes.
pub const MAX_REPORT_BYTES: usize = 1024;

/// The state an edge reports (JSON: `"up"`, `"down"`, `"disabled"`), the states of
/// tern-health's hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeState {
    /// Serving: answer it.
    Up,
    /// Failing its probes: do not answer it.
    Down,
    /// Drained by its operator: do not answer it.
    Disabled,
}

/// What the server makes of an edge now: its last report, aged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Reported up within `report_ttl`: the only state that is answered.
    Up,
    /// Reported down within `report_ttl`.
    Down,
    /// Reported disabled (drained) within `report_ttl`.
    Disabled,
    /// Last report older than `report_ttl`, whatever it said.
    Expired,
    /// No report since the server started.
    Unreported,
}

/// One health report: the JSON body of `POST /v1/health`,
/// `{"edge": "fra-1", "state": "up"}`. Unknown fields are refused, so a misspelt key is
/// an error rather than a report that silently says nothing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    /// The edge's name, as in the DNS config's `[[pops.edges]] name`.
    pub edge: String,
    /// What the edge says about itself.
    pub state: EdgeState,
}

/// Why a health report was not taken. The fault is the reporting edge's (or its
/// config's): retrying the same report gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The body is longer than [`MAX_REPORT_BYTES`] (HTTP 413).
    #[error("a report is at most {MAX_REPORT_BYTES} bytes")]
    TooLarge,
    /// The body is not a report: bad JSON, a missing or unknown field, a state other
    /// than `up`, `down` or `disabled` (HTTP 400).
    #[error(
        "not a health report ({0}): send {{\"edge\": NAME, \"state\": \"up\" | \"down\" | \"disabled\"}}"
    )]
    Malformed(String),
    /// The edge is not in the DNS config: its report cannot be answered (HTTP 404).
    #[error("edge {0:?} is not in the DNS config")]
    UnknownEdge(String),
    /// The token is one of another edge's own `report_tokens` (HTTP 403).
    #[error("this token may report only for its own edge, not for {0:?}")]
    NotYours(String),
}

impl HealthReport {
    /// Parses a report body.
    pub fn from_json(body: &[u8]) -> Result<Self, ReportError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge);
        }
        serde_json::from_slice(body).map_err(|error| ReportError::Malformed(error.to_string()))
    }
}

/// A report taken: which edge, and its health before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    /// The edge reported on.
    pub edge: EdgeId,
    /// Its health just before the report.
    pub before: Health,
    /// Its health with the report.
    pub after: Health,
}

/// The last report of every configured edge.
#[derive(Debug, Clone)]
pub struct HealthTable {
    report_ttl: Duration,
    ids: HashMap<String, EdgeId>,
    /// By edge id: the last state reported and when.
    last: Vec<Option<(EdgeState, Instant)>>,
}

impl HealthTable {
    /// A table for the edges of `topology`, none reported yet.
    pub fn new(topology: &Topology, report_ttl: Duration) -> Self {
        let ids = topology
            .edges()
            .map(|id| (topology.edge_name(id).to_owned(), id))
            .collect();
        Self {
            report_ttl,
            ids,
            last: vec![None; topology.edge_count()],
        }
    }

    /// Takes `report`, received at `now`.
    pub fn handle_report(
        &mut self,
        now: Instant,
        report: &HealthReport,
    ) -> Result<Reported, ReportError> {
        let edge = *self
            .ids
            .get(&report.edge)
            .ok_or_else(|| ReportError::UnknownEdge(report.edge.clone()))?;
        let before = self.health(now, edge);
        if let Some(slot) = self.last.get_mut(edge.index()) {
            *slot = Some((report.state, now));
        }
        Ok(Reported {
            edge,
            before,
            after: self.health(now, edge),
        })
    }

    /// The health of `edge` at `now`.
    pub fn health(&self, now: Instant, edge: EdgeId) -> Health {
        match self.last.get(edge.index()).copied().flatten() {
            None => Health::Unreported,
            Some((_, at)) if now.saturating_duration_since(at) > self.report_ttl => Health::Expired,
            Some((EdgeState::Up, _)) => Health::Up,
            Some((EdgeState::Down, _)) => Health::Down,
            Some((EdgeState::Disabled, _)) => Health::Disabled,
        }
    }

    /// Whether `edge` is answered at `now`.
    pub fn is_up(&self, now: Instant, edge: EdgeId) -> bool {
        self.health(now, edge) == Health::Up
    }

    /// The last report of `edge`: what it said and how long before `now`.
    pub fn last_report(&self, now: Instant, edge: EdgeId) -> Option<(EdgeState, Duration)> {
        self.last
            .get(edge.index())
            .copied()
            .flatten()
            .map(|(state, at)| (state, now.saturating_duration_since(at)))
    }

    /// How long a report counts.
    pub fn report_ttl(&self) -> Duration {
        self.report_ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::tests::topology;

    fn report(edge: &str, state: EdgeState) -> HealthReport {
        HealthReport {
            edge: edge.into(),
            state,
        }
    }

    #[test]
    fn reports_parse_from_json() {
        let parsed = HealthReport::from_json(br#"{"edge": "fra-1", "state": "up"}"#);
        assert_eq!(parsed, Ok(report("fra-1", EdgeState::Up)));
        let parsed = HealthReport::from_json(br#"{"state":"disabled","edge":"x"}"#);
        assert_eq!(parsed, Ok(report("x", EdgeState::Disabled)));
        let parsed = HealthReport::from_json(br#"{"edge": "x", "state": "down"}"#);
        assert_eq!(parsed, Ok(report("x", EdgeState::Down)));
    }

    #[test]
    fn bad_report_bodies_are_refused() {
        let long_name = format!(r#"{{"edge": "{}", "state": "up"}}"#, "e".repeat(1100));
        let malformed: &[&[u8]] = &[
            b"",
            b"   ",
            b"null",
            b"[]",
            b"\"up\"",
            b"{}",
            br#"{"edge": "fra-1"}"#,
            br#"{"state": "up"}"#,
            br#"{"edge": "fra-1", "state": "UP"}"#,
            br#"{"edge": "fra-1", "state": "healthy"}"#,
            br#"{"edge": "fra-1", "state": 1}"#,
            br#"{"edge": 7, "state": "up"}"#,
            br#"{"edge": null, "state": "up"}"#,
            br#"{"edge": "fra-1", "state": "up", "reason": "x"}"#,
            br#"{"edge": "fra-1", "state": "up"} trailing"#,
            br#"{"edge": "fra-1", "state": "up""#,
            b"\xff\xfe{}",
        ];
        for body in malformed {
            match HealthReport::from_json(body) {
                Err(ReportError::Malformed(message)) => assert!(!message.is_empty()),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        assert_eq!(
            HealthReport::from_json(long_name.as_bytes()),
            Err(ReportError::TooLarge)
        );
        // Every prefix of a good body is refused, none panics.
        let good = br#"{"edge": "fra-1", "state": "disabled"}"#;
        for end in 0..good.len() {
            assert!(HealthReport::from_json(&good[..end]).is_err(), "{end}");
        }
    }

    #[test]
    fn silence_is_not_health() {
        let topology = topology();
        let table = HealthTable::new(&topology, Duration::from_secs(3));
        let now = Instant::now();
        for id in topology.edges() {
            assert_eq!(table.health(now, id), Health::Unreported);
            assert!(!table.is_up(now, id));
            assert_eq!(table.last_report(now, id), None);
        }
    }

    #[test]
    fn reports_count_for_report_ttl() {
        let topology = topology();
        let ttl = Duration::from_secs(3);
        let mut table = HealthTable::new(&topology, ttl);
        let t0 = Instant::now();
        let taken = table
            .handle_report(t0, &report("fra-1", EdgeState::Up))
            .expect("known edge");
        let fra1 = topology.edge_id("fra-1").expect("configured");
        assert_eq!(
            taken,
            Reported {
                edge: fra1,
                before: Health::Unreported,
                after: Health::Up
            }
        );
        assert!(
            table.is_up(t0 + ttl, fra1),
            "exactly report_ttl old still counts"
        );
        assert_eq!(
            table.last_report(t0 + ttl, fra1),
            Some((EdgeState::Up, ttl))
        );
        let later = t0 + ttl + Duration::from_millis(1);
        assert_eq!(table.health(later, fra1), Health::Expired);
        assert!(!table.is_up(later, fra1));
        // A fresh report brings it back.
        let taken = table
            .handle_report(later, &report("fra-1", EdgeState::Up))
            .expect("known edge");
        assert_eq!((taken.before, taken.after), (Health::Expired, Health::Up));
        // A time before the report (never happens with a monotonic clock) is age zero.
        assert!(table.is_up(t0, fra1));
    }

    #[test]
    fn down_and_disabled_are_not_answered() {
        let topology = topology();
        let mut table = HealthTable::new(&topology, Duration::from_secs(3));
        let now = Instant::now();
        let fra1 = topology.edge_id("fra-1").expect("configured");
        for (state, health) in [
            (EdgeState::Down, Health::Down),
            (EdgeState::Disabled, Health::Disabled),
            (EdgeState::Up, Health::Up),
        ] {
            let taken = table
                .handle_report(now, &report("fra-1", state))
                .expect("known edge");
            assert_eq!(taken.after, health);
            assert_eq!(table.is_up(now, fra1), health == Health::Up);
        }
        let expired = now + Duration::from_secs(4);
        table
            .handle_report(now, &report("fra-1", EdgeState::Disabled))
            .expect("known edge");
        assert_eq!(table.health(expired, fra1), Health::Expired);
    }

    #[test]
    fn unknown_edges_are_refused_and_change_nothing() {
        let topology = topology();
        let mut table = HealthTable::new(&topology, Duration::from_secs(3));
        let now = Instant::now();
        assert_eq!(
            table.handle_report(now, &report("lon-1", EdgeState::Up)),
            Err(ReportError::UnknownEdge("lon-1".into()))
        );
        assert_eq!(
            table.handle_report(now, &report("FRA-1", EdgeState::Up)),
            Err(ReportError::UnknownEdge("FRA-1".into())),
            "names are exact"
        );
        assert!(topology.edges().all(|id| !table.is_up(now, id)));
    }
}
