//! Result lines: a table for people, one JSON object per line for scripts.

use serde::Serialize;

use super::workload::{Measurement, Workload};

/// One run of one target, as reported.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    /// Always `"result"` (ratios are `"ratio"`).
    pub(crate) kind: &'static str,
    pub(crate) target: String,
    pub(crate) channels: usize,
    pub(crate) messages: u64,
    pub(crate) size_bytes: usize,
    pub(crate) batch: usize,
    pub(crate) inflight: usize,
    pub(crate) acked: u64,
    pub(crate) duplicates: u64,
    pub(crate) seconds: f64,
    pub(crate) msgs_per_sec: f64,
    /// Payload bytes only, 10^6 per MB.
    pub(crate) mb_per_sec: f64,
    /// Per-batch latency (send call to every outcome back), milliseconds.
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    /// Whether an acknowledgement means the message was fsynced.
    pub(crate) fsync_before_ack: Option<bool>,
}

impl Row {
    pub(crate) fn new(
        target: &str,
        workload: &Workload,
        measured: &Measurement,
        fsync_before_ack: Option<bool>,
    ) -> Self {
        let ms = |quantile: f64| measured.latency.value_at_quantile(quantile) as f64 / 1000.0;
        let msgs_per_sec = measured.msgs_per_sec();
        Self {
            kind: "result",
            target: target.to_owned(),
            channels: workload.channels,
            messages: workload.messages,
            size_bytes: workload.size,
            batch: workload.batch,
            inflight: workload.inflight,
            acked: measured.acked,
            duplicates: measured.duplicates,
            seconds: measured.elapsed.as_secs_f64(),
            msgs_per_sec,
            mb_per_sec: msgs_per_sec * workload.size as f64 / 1e6,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: measured.latency.max() as f64 / 1000.0,
            fsync_before_ack,
        }
    }
}

/// A throughput ratio between two targets measured with the same channel count.
#[derive(Debug, Serialize)]
pub(crate) struct Ratio {
    /// Always `"ratio"`.
    pub(crate) kind: &'static str,
    pub(crate) channels: usize,
    pub(crate) numerator: String,
    pub(crate) denominator: String,
    pub(crate) ratio: f64,
}

/// Prints rows and ratios on stdout in one of the two formats.
#[derive(Debug)]
pub(crate) struct Printer {
    json: bool,
    header_done: bool,
}

impl Printer {
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            header_done: false,
        }
    }

    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// A line of explanation (suppressed in JSON mode, where stdout is for records).
    pub(crate) fn note(&self, text: &str) {
        if !self.json {
            println!("{text}");
        }
    }

    pub(crate) fn row(&mut self, row: &Row) {
        if self.json {
            println!("{}", to_json(row));
            return;
        }
        if !self.header_done {
            println!(
                "{:<16} {:>8} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
                "target",
                "channels",
                "msgs/s",
                "MB/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "secs"
            );
            self.header_done = true;
        }
        println!(
            "{:<16} {:>8} {:>12.0} {:>8.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8.2}",
            row.target,
            row.channels,
            row.msgs_per_sec,
            row.mb_per_sec,
            row.p50_ms,
            row.p90_ms,
            row.p99_ms,
            row.p999_ms,
            row.max_ms,
            row.seconds
        );
    }

    pub(crate) fn ratio(&self, ratio: &Ratio, numerator_rate: f64, denominator_rate: f64) {
        if self.json {
            println!("{}", to_json(ratio));
        } else {
            println!(
                "ratio {} / {} at {} channels: {:.2}x ({:.0} vs {:.0} msg/s)",
                ratio.numerator,
                ratio.denominator,
                ratio.channels,
                ratio.ratio,
                numerator_rate,
                denominator_rate
            );
        }
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("report records hold only numbers and strings")
}
