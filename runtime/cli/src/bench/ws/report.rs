//! Result lines of `tern bench ws`: a table for people, one JSON object per line
//! for scripts (`--json`).

use serde::Serialize;

use super::load::{IdleMeasurement, Plan, PubSubMeasurement};

/// One publish/subscribe run of one target.
#[derive(Debug, Serialize)]
pub(super) struct PubSubRow {
    /// Always `"result"`.
    pub(super) kind: &'static str,
    pub(super) target: &'static str,
    pub(super) scenario: &'static str,
    /// The Tern encoding (`json`, `msgpack`); `nats` for NATS's text protocol.
    pub(super) format: &'static str,
    pub(super) subscribers: usize,
    pub(super) channels: usize,
    pub(super) publishers: usize,
    pub(super) size_bytes: usize,
    /// Offered publish rate over all publishers; 0 = as fast as the windows allow.
    pub(super) rate: f64,
    pub(super) inflight: usize,
    pub(super) window: usize,
    pub(super) published: u64,
    pub(super) acked: u64,
    pub(super) expected_deliveries: u64,
    pub(super) delivered: u64,
    /// Expected deliveries that did not arrive by the end of the drain.
    pub(super) missing: u64,
    /// Deliveries beyond the expected ones (duplicates).
    pub(super) extra: u64,
    pub(super) publish_secs: f64,
    pub(super) publishes_per_sec: f64,
    pub(super) delivery_secs: f64,
    pub(super) deliveries_per_sec: f64,
    /// Publish → deliver latency percentiles, milliseconds.
    pub(super) p50_ms: f64,
    pub(super) p90_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) p999_ms: f64,
    pub(super) max_ms: f64,
    /// What an acknowledgement means: `"fsync"` (stored on disk) or `"routed"`
    /// (NATS: the server processed the PUB; nothing is stored).
    pub(super) ack_means: &'static str,
    /// Whether deliveries carry positions that order a channel and let a
    /// subscriber resume without loss.
    pub(super) positions: bool,
}

/// Labels of a row that do not come from the measurement.
pub(super) struct RowLabels {
    pub(super) target: &'static str,
    pub(super) scenario: &'static str,
    pub(super) format: &'static str,
    pub(super) ack_means: &'static str,
    pub(super) positions: bool,
}

impl PubSubRow {
    pub(super) fn new(labels: RowLabels, plan: &Plan, measured: &PubSubMeasurement) -> Self {
        let ms = |quantile: f64| measured.latency.value_at_quantile(quantile) as f64 / 1000.0;
        let per_sec = |count: u64, secs: f64| count as f64 / secs.max(1e-9);
        Self {
            kind: "result",
            target: labels.target,
            scenario: labels.scenario,
            format: labels.format,
            subscribers: plan.connections,
            channels: plan.channels,
            publishers: plan.publishers,
            size_bytes: plan.size,
            rate: plan.rate,
            inflight: plan.inflight,
            window: plan.window,
            published: measured.published,
            acked: measured.acked,
            expected_deliveries: measured.expected,
            delivered: measured.delivered,
            missing: measured.expected.saturating_sub(measured.delivered),
            extra: measured.delivered.saturating_sub(measured.expected),
            publish_secs: measured.publish_secs,
            publishes_per_sec: per_sec(measured.acked, measured.publish_secs),
            delivery_secs: measured.delivery_secs,
            deliveries_per_sec: per_sec(measured.delivered, measured.delivery_secs),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: measured.latency.max() as f64 / 1000.0,
            ack_means: labels.ack_means,
            positions: labels.positions,
        }
    }
}

/// One idle-connections run of one target.
#[derive(Debug, Serialize)]
pub(super) struct IdleRow {
    /// Always `"idle"`.
    pub(super) kind: &'static str,
    pub(super) target: &'static str,
    pub(super) connections: usize,
    pub(super) setup_secs: f64,
    /// The server's resident memory before and after, KiB (absent when its process
    /// is unknown: `--url` without `--pid`).
    pub(super) rss_before_kib: Option<u64>,
    pub(super) rss_after_kib: Option<u64>,
    /// (after − before) ÷ connections, bytes.
    pub(super) bytes_per_connection: Option<f64>,
}

impl IdleRow {
    pub(super) fn new(target: &'static str, measured: &IdleMeasurement) -> Self {
        let per_connection = measured.rss_kib.map(|(before, after)| {
            after.saturating_sub(before) as f64 * 1024.0 / measured.connections.max(1) as f64
        });
        Self {
            kind: "idle",
            target,
            connections: measured.connections,
            setup_secs: measured.setup_secs,
            rss_before_kib: measured.rss_kib.map(|(before, _)| before),
            rss_after_kib: measured.rss_kib.map(|(_, after)| after),
            bytes_per_connection: per_connection,
        }
    }
}

/// Tern's figure divided by NATS's, for one metric, in the same run.
#[derive(Debug, Serialize)]
pub(super) struct Ratio {
    /// Always `"ratio"`.
    pub(super) kind: &'static str,
    pub(super) metric: &'static str,
    pub(super) tern: f64,
    pub(super) nats: f64,
    /// tern ÷ nats.
    pub(super) ratio: f64,
    /// Whether a higher figure is better for this metric.
    pub(super) higher_is_better: bool,
}

impl Ratio {
    pub(super) fn new(metric: &'static str, tern: f64, nats: f64, higher_is_better: bool) -> Self {
        Self {
            kind: "ratio",
            metric,
            tern,
            nats,
            ratio: tern / nats.max(f64::MIN_POSITIVE),
            higher_is_better,
        }
    }
}

/// Prints rows and ratios on stdout.
#[derive(Debug)]
pub(super) struct Printer {
    json: bool,
    header_done: bool,
}

impl Printer {
    pub(super) fn new(json: bool) -> Self {
        Self {
            json,
            header_done: false,
        }
    }

    /// A line of explanation (suppressed with `--json`: stdout is for records then).
    pub(super) fn note(&self, text: &str) {
        if !self.json {
            println!("{text}");
        }
    }

    pub(super) fn pubsub(&mut self, row: &PubSubRow) {
        if self.json {
            println!("{}", to_json(row));
            return;
        }
        if !self.header_done {
            println!(
                "{:<6} {:>7} {:>10} {:>10} {:>11} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "target",
                "subs",
                "published",
                "pub/s",
                "delivered",
                "deliveries/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "missing"
            );
            self.header_done = true;
        }
        println!(
            "{:<6} {:>7} {:>10} {:>10.0} {:>11} {:>13.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8}",
            row.target,
            row.subscribers,
            row.published,
            row.publishes_per_sec,
            row.delivered,
            row.deliveries_per_sec,
            row.p50_ms,
            row.p90_ms,
            row.p99_ms,
            row.p999_ms,
            row.max_ms,
            row.missing
        );
    }

    pub(super) fn idle(&self, row: &IdleRow) {
        if self.json {
            println!("{}", to_json(row));
            return;
        }
        match (
            row.rss_before_kib,
            row.rss_after_kib,
            row.bytes_per_connection,
        ) {
            (Some(before), Some(after), Some(per)) => println!(
                "{}: {} idle connections (set up in {:.1} s): resident memory {} KiB -> {} KiB, \
                 {:.0} bytes ({:.2} KiB) per connection",
                row.target,
                row.connections,
                row.setup_secs,
                before,
                after,
                per,
                per / 1024.0
            ),
            _ => println!(
                "{}: {} idle connections (set up in {:.1} s); resident memory unknown \
                 (give --pid with --url)",
                row.target, row.connections, row.setup_secs
            ),
        }
    }

    pub(super) fn ratio(&self, ratio: &Ratio) {
        if self.json {
            println!("{}", to_json(ratio));
        } else {
            println!(
                "ratio tern / nats, {}: {:.2}x ({:.3} vs {:.3}; {} is better)",
                ratio.metric,
                ratio.ratio,
                ratio.tern,
                ratio.nats,
                if ratio.higher_is_better {
                    "higher"
                } else {
                    "lower"
                }
            );
        }
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("report records hold only numbers and strings")
}
