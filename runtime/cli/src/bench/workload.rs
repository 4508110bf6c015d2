//! The workload every target runs, and the driver that measures it.
//!
//! `inflight` tasks share one counter of batches; each takes the next batch number,
//! has the target build it (untimed), sends it and waits for every outcome (timed),
//! until all `messages` are acknowledged. Latency is recorded once per batch, from
//! the send call to the last outcome, in microseconds.
//!
//! ```text
//! next batch ─▶ task 1..=inflight: prepare (untimed) ─▶ send ─▶ outcomes ─▶ histogram
//!                                                         └── timed ──┘
//! ```

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

/// Slowest latency the histograms resolve, in microseconds (one hour); slower
/// batches are recorded as this value.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// How often progress is printed on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What one run sends.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    /// Messages to have acknowledged in total.
    pub(crate) messages: u64,
    /// Payload bytes per message.
    pub(crate) size: usize,
    /// Distinct channels, used round-robin by message number.
    pub(crate) channels: usize,
    /// Batches in flight at once (one task each).
    pub(crate) inflight: usize,
    /// Messages per batch (the last batch may be shorter).
    pub(crate) batch: usize,
    /// The whole run, including setup, must finish within this.
    pub(crate) timeout: Duration,
}

impl Workload {
    /// The payload every message carries.
    pub(crate) fn payload(&self) -> Bytes {
        Bytes::from(vec![b'x'; self.size])
    }

    /// Channel names `bench.0` … `bench.{channels-1}`.
    pub(crate) fn channel_names(&self) -> Vec<String> {
        (0..self.channels).map(|i| format!("bench.{i}")).collect()
    }
}

/// One batch to build: messages `first..first + count` of the run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchSpec {
    pub(crate) first: u64,
    pub(crate) count: usize,
}

impl BatchSpec {
    /// Message numbers of the batch.
    pub(crate) fn seqs(self) -> impl Iterator<Item = u64> {
        self.first..self.first + self.count as u64
    }
}

/// What a target answered for one batch.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BatchAck {
    /// Messages stored by this call.
    pub(crate) appended: u64,
    /// Messages answered as duplicates (a key already seen): acknowledged, not stored.
    pub(crate) duplicates: u64,
}

/// A system under test: builds batches and sends them.
pub(crate) trait Target: Clone + Send + Sync + 'static {
    /// A batch ready to send.
    type Batch: Send + 'static;

    /// Builds the batch (not timed).
    fn prepare(&self, spec: BatchSpec) -> Self::Batch;

    /// Sends it and waits until every message is acknowledged (timed). A message the
    /// target refused is an error: the workload is built to be accepted.
    fn send(&self, batch: Self::Batch) -> impl Future<Output = anyhow::Result<BatchAck>> + Send;
}

/// What one run measured.
#[derive(Debug)]
pub(crate) struct Measurement {
    /// Messages acknowledged.
    pub(crate) acked: u64,
    /// Of them, answered as duplicates.
    pub(crate) duplicates: u64,
    /// From the first send to the last acknowledgement.
    pub(crate) elapsed: Duration,
    /// Per-batch latency, microseconds.
    pub(crate) latency: Histogram<u64>,
}

impl Measurement {
    /// Acknowledged messages per second.
    pub(crate) fn msgs_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, 3 significant figures")
}

/// Runs `workload` against `target` and measures it. `label` prefixes progress lines.
/// Fails if any batch fails or the run outlasts `deadline`.
pub(crate) async fn drive<T: Target>(
    label: &str,
    workload: &Workload,
    target: T,
    deadline: Instant,
) -> anyhow::Result<Measurement> {
    let batch = workload.batch.max(1) as u64;
    let total_batches = workload.messages.div_ceil(batch);
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let mut tasks = JoinSet::new();
    for _ in 0..workload.inflight.max(1) {
        let target = target.clone();
        let next = Arc::clone(&next);
        let acked = Arc::clone(&acked);
        let messages = workload.messages;
        tasks.spawn(async move {
            let mut latency = new_histogram();
            let mut duplicates = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total_batches {
                    break;
                }
                let first = n * batch;
                let count = usize::try_from(batch.min(messages - first))
                    .expect("a batch is at most --batch messages, a usize");
                let prepared = target.prepare(BatchSpec { first, count });
                let sent = Instant::now();
                let ack = target.send(prepared).await?;
                let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(took.clamp(1, MAX_LATENCY_US));
                duplicates += ack.duplicates;
                let got = ack.appended + ack.duplicates;
                if got != count as u64 {
                    bail!("{got} outcomes for a batch of {count}");
                }
                acked.fetch_add(got, Ordering::Relaxed);
            }
            anyhow::Ok((latency, duplicates))
        });
    }

    let progress = tokio::spawn(report_progress(
        label.to_owned(),
        Arc::clone(&acked),
        workload.messages,
    ));
    let joined = tokio::time::timeout_at(deadline.into(), async {
        let mut latency = new_histogram();
        let mut duplicates = 0;
        while let Some(joined) = tasks.join_next().await {
            let (task_latency, task_duplicates) = joined.context("a load task panicked")??;
            latency
                .add(&task_latency)
                .expect("histograms of equal bounds always merge");
            duplicates += task_duplicates;
        }
        anyhow::Ok((latency, duplicates))
    })
    .await;
    let elapsed = started.elapsed();
    progress.abort();
    // Dropping the set aborts whatever is still running (after an error or a timeout).
    drop(tasks);
    let done = acked.load(Ordering::Relaxed);
    let (latency, duplicates) = match joined {
        Ok(Ok(result)) => result,
        Ok(Err(error)) => {
            return Err(error.context(format!(
                "{label}: failed after {done} of {} messages were acknowledged",
                workload.messages
            )));
        }
        Err(_) => bail!(
            "{label}: timed out after {:.1} s with {done} of {} messages acknowledged \
             (raise --timeout or lower --messages)",
            elapsed.as_secs_f64(),
            workload.messages
        ),
    };
    Ok(Measurement {
        acked: done,
        duplicates,
        elapsed,
        latency,
    })
}

/// Prints `label: acked/total, rate` on stderr every [`PROGRESS_EVERY`] until aborted.
async fn report_progress(label: String, acked: Arc<AtomicU64>, total: u64) {
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut last = (Instant::now(), 0u64);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let done = acked.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        eprintln!(
            "  {label}: {done}/{total} acknowledged ({:.0}%), {rate:.0} msg/s",
            done as f64 * 100.0 / total.max(1) as f64
        );
        last = (now, done);
    }
}

/// A per-run prefix for idempotency keys, so that runs against a long-lived node
/// (`--addr`) never collide with an earlier run's keys.
pub(crate) fn run_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// The 16-byte idempotency keys of a batch: nonce then message number, big-endian,
/// cut from one allocation.
pub(crate) fn binary_keys(nonce: u64, spec: BatchSpec) -> impl Iterator<Item = Bytes> {
    let mut all = bytes::BytesMut::with_capacity(16 * spec.count);
    for seq in spec.seqs() {
        all.extend_from_slice(&nonce.to_be_bytes());
        all.extend_from_slice(&seq.to_be_bytes());
    }
    let mut all = all.freeze();
    (0..spec.count).map(move |_| all.split_to(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Counting;

    impl Target for Counting {
        type Batch = usize;
        fn prepare(&self, spec: BatchSpec) -> usize {
            spec.count
        }
        async fn send(&self, batch: usize) -> anyhow::Result<BatchAck> {
            Ok(BatchAck {
                appended: batch as u64,
                duplicates: 0,
            })
        }
    }

    #[tokio::test]
    async fn drives_every_message_once_with_a_short_last_batch() {
        let workload = Workload {
            messages: 1000,
            size: 10,
            channels: 3,
            inflight: 4,
            batch: 64,
            timeout: Duration::from_secs(10),
        };
        let deadline = Instant::now() + workload.timeout;
        let m = drive("test", &workload, Counting, deadline)
            .await
            .expect("runs");
        assert_eq!(m.acked, 1000);
        assert_eq!(m.latency.len(), 1000u64.div_ceil(64));
    }

    #[test]
    fn keys_are_unique_and_sixteen_bytes() {
        let keys: Vec<Bytes> = binary_keys(9, BatchSpec { first: 5, count: 3 }).collect();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|k| k.len() == 16));
        assert_ne!(keys[0], keys[1]);
        assert_eq!(&keys[2][8..], &7u64.to_be_bytes());
    }
}
