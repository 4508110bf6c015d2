//! The counters of `tern dns` and their Prometheus text rendering. Every label set is
//! bounded: answer kinds, response codes and report results are closed enums; edges
//! and POPs come from the config.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::answer::{AnswerKind, Topology};
use crate::health::{Health, HealthTable};

/// Queries answered without addresses, by response code (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A name in the zone other than the edge name.
    NxDomain,
    /// A name outside the zone, or a class other than IN.
    Refused,
    /// Not exactly one question, or a malformed client subnet option.
    FormErr,
    /// An opcode other than QUERY.
    NotImp,
    /// An EDNS version above 0.
    BadVers,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::NxDomain,
        Refusal::Refused,
        Refusal::FormErr,
        Refusal::NotImp,
        Refusal::BadVers,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Refusal::NxDomain => "nxdomain",
            Refusal::Refused => "refused",
            Refusal::FormErr => "formerr",
            Refusal::NotImp => "notimp",
            Refusal::BadVers => "badvers",
        }
    }
}

/// What became of a health report (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportResult {
    /// Taken into the table.
    Accepted,
    /// For an edge the config does not have.
    UnknownEdge,
    /// Not a report (malformed or too large).
    Bad,
    /// Without one of `report_tokens` (answered 401, the table unchanged).
    Unauthorized,
    /// With an edge's own token, for another edge (answered 403, the table
    /// unchanged).
    Forbidden,
}

impl ReportResult {
    const ALL: [ReportResult; 5] = [
        ReportResult::Accepted,
        ReportResult::UnknownEdge,
        ReportResult::Bad,
        ReportResult::Unauthorized,
        ReportResult::Forbidden,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ReportResult::Accepted => "accepted",
            ReportResult::UnknownEdge => "unknown_edge",
            ReportResult::Bad => "bad",
            ReportResult::Unauthorized => "unauthorized",
            ReportResult::Forbidden => "forbidden",
        }
    }
}

/// Counters shared by the DNS handler and the report endpoint.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    answers: [AtomicU64; AnswerKind::ALL.len()],
    empty_answers: AtomicU64,
    other_types: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
    reports: [AtomicU64; ReportResult::ALL.len()],
}

impl Metrics {
    /// An A or AAAA query of the edge name answered by `kind`, with no address when
    /// `empty` (a fallback without an address of the asked family).
    pub(crate) fn answered(&self, kind: AnswerKind, empty: bool) {
        let i = AnswerKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.answers[i].fetch_add(1, Ordering::Relaxed);
        if empty {
            self.empty_answers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A query in the zone for a type without data (SOA, NS, TXT of the edge name…).
    pub(crate) fn other_type(&self) {
        self.other_types.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, refusal: Refusal) {
        let i = Refusal::ALL.iter().position(|r| *r == refusal).unwrap_or(0);
        self.refusals[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn report(&self, result: ReportResult) {
        let i = ReportResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0);
        self.reports[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text of every counter, and the edges' health at `now`.
    pub(crate) fn render(&self, topology: &Topology, health: &HealthTable, now: Instant) -> String {
        let mut out = String::with_capacity(2048);
        family(
            &mut out,
            "tern_dns_answers_total",
            "counter",
            "A and AAAA queries of the edge name, by how the answer was chosen.",
        );
        for (kind, count) in AnswerKind::ALL.iter().zip(&self.answers) {
            let _ = writeln!(
                out,
                "tern_dns_answers_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "tern_dns_empty_answers_total",
            "counter",
            "Fallback answers without an address of the asked family (NOERROR, no records).",
        );
        let _ = writeln!(
            out,
            "tern_dns_empty_answers_total {}",
            self.empty_answers.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "tern_dns_other_queries_total",
            "counter",
            "Queries in the zone for another type than A or AAAA of the edge name.",
        );
        let _ = writeln!(
            out,
            "tern_dns_other_queries_total {}",
            self.other_types.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "tern_dns_refusals_total",
            "counter",
            "Queries answered with an error code, by code.",
        );
        for (refusal, count) in Refusal::ALL.iter().zip(&self.refusals) {
            let _ = writeln!(
                out,
                "tern_dns_refusals_total{{rcode=\"{}\"}} {}",
                refusal.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "tern_dns_health_reports_total",
            "counter",
            "Health reports received, by result.",
        );
        for (result, count) in ReportResult::ALL.iter().zip(&self.reports) {
            let _ = writeln!(
                out,
                "tern_dns_health_reports_total{{result=\"{}\"}} {}",
                result.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "tern_dns_edge_up",
            "gauge",
            "1 while the edge is answered: reported up within report_ttl.",
        );
        let mut healthy = 0;
        for edge in topology.edges() {
            let up = health.health(now, edge) == Health::Up;
            healthy += usize::from(up);
            let _ = writeln!(
                out,
                "tern_dns_edge_up{{edge=\"{}\",pop=\"{}\"}} {}",
                topology.edge_name(edge),
                topology.pop_name(topology.edge_pop(edge)),
                u8::from(up)
            );
        }
        family(
            &mut out,
            "tern_dns_healthy_edges",
            "gauge",
            "Edges answered now.",
        );
        let _ = writeln!(out, "tern_dns_healthy_edges {healthy}");
        family(&mut out, "tern_dns_edges", "gauge", "Edges in the config.");
        let _ = writeln!(out, "tern_dns_edges {}", topology.edge_count());
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::tests::topology;
    use crate::health::{EdgeState, HealthReport};

    #[test]
    fn render_counts_and_health() {
        let topology = topology();
        let mut health = HealthTable::new(&topology, std::time::Duration::from_secs(3));
        let now = Instant::now();
        let report = HealthReport {
            edge: "ams-1".into(),
            state: EdgeState::Up,
        };
        health.handle_report(now, &report).expect("known edge");
        let metrics = Metrics::default();
        metrics.answered(AnswerKind::Neighbor, false);
        metrics.answered(AnswerKind::Neighbor, false);
        metrics.answered(AnswerKind::Fallback, true);
        metrics.refused(Refusal::Refused);
        metrics.report(ReportResult::UnknownEdge);
        metrics.other_type();
        let text = metrics.render(&topology, &health, now);
        for line in [
            "tern_dns_answers_total{kind=\"pop\"} 0",
            "tern_dns_answers_total{kind=\"neighbor\"} 2",
            "tern_dns_answers_total{kind=\"fallback\"} 1",
            "tern_dns_empty_answers_total 1",
            "tern_dns_other_queries_total 1",
            "tern_dns_refusals_total{rcode=\"refused\"} 1",
            "tern_dns_refusals_total{rcode=\"nxdomain\"} 0",
            "tern_dns_health_reports_total{result=\"unknown_edge\"} 1",
            "tern_dns_edge_up{edge=\"ams-1\",pop=\"ams\"} 1",
            "tern_dns_edge_up{edge=\"fra-1\",pop=\"fra\"} 0",
            "tern_dns_healthy_edges 1",
            "tern_dns_edges 5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        // Every sample belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(text.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }
}
