//! The workload of `tern bench ws` and the bookkeeping both targets share: who
//! subscribes where, who publishes what and when, the windows that bound the load,
//! the stamps in every payload, and the driver that runs the phases.
//!
//! ```text
//! setup: subscribers connect + subscribe ──▶ publishers connect ──▶ Go
//! run:   publisher ──PUBLISH (stamp: sent_ns, publisher, seq)──▶ server ──▶ subscribers
//!          ▲  ack window: --inflight awaiting ACK (NATS: PONG)        │
//!          └─ delivery window: --window messages not yet delivered ◀──┘ count + latency
//! drain: every expected delivery arrived (or the drain time ran out) ──▶ Stop
//! ```
//!
//! Publishers and subscribers live in this process and read one clock
//! ([`Clock`]), so a delivery's latency is `now - sent_ns` of its stamp.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore, SemaphorePermit, watch};
use tokio::task::JoinSet;

/// First bytes of every payload's stamp; subscribers find stamps by it.
pub(super) const MARKER: &[u8; 5] = b"~tb1~";
/// Bytes of a stamp: the marker, then 16 + 8 + 16 lowercase hex digits.
pub(super) const STAMP_LEN: usize = MARKER.len() + 16 + 8 + 16;

/// Slowest latency the histograms resolve, in microseconds (ten minutes).
const MAX_LATENCY_US: u64 = 600_000_000;
/// Latencies a subscriber buffers before taking a histogram lock.
const LATENCY_BATCH: usize = 256;
/// Histograms subscribers record into (each behind its own lock).
const LATENCY_SHARDS: usize = 16;
/// Connections doing their handshake at once (a burst of 20,000 SYNs would
/// overflow the listen backlog).
const CONCURRENT_HANDSHAKES: usize = 128;
/// A publisher blocked on its delivery window this long without a single delivery
/// fails the run.
const DELIVERY_STALL: Duration = Duration::from_secs(10);
/// How often progress is printed on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// After the last publish, how long the run waits for the deliveries still due.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// What a payload says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    /// When it was sent, nanoseconds on the run's [`Clock`].
    pub(super) sent_ns: u64,
    /// Which publisher sent it.
    pub(super) publisher: u32,
    /// The publisher's message number, from 0.
    pub(super) seq: u64,
}

impl Stamp {
    /// The stamp as the first [`STAMP_LEN`] bytes of a payload (ASCII, so it is the
    /// same bytes in a JSON string, a MessagePack str and a NATS payload).
    pub(super) fn encode(self) -> [u8; STAMP_LEN] {
        fn hex(out: &mut [u8], value: u64) {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            let n = out.len();
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = DIGITS[((value >> (4 * (n - 1 - i))) & 0xf) as usize];
            }
        }
        let mut out = [0u8; STAMP_LEN];
        let (marker, rest) = out.split_at_mut(MARKER.len());
        marker.copy_from_slice(MARKER);
        let (sent, rest) = rest.split_at_mut(16);
        let (publisher, seq) = rest.split_at_mut(8);
        hex(sent, self.sent_ns);
        hex(publisher, u64::from(self.publisher));
        hex(seq, self.seq);
        out
    }

    /// Reads the stamp at the start of `bytes` (which begin with [`MARKER`]).
    pub(super) fn decode(bytes: &[u8]) -> Option<Stamp> {
        /// Value of each byte as a lowercase hex digit; 0xff for anything else.
        const NIBBLES: [u8; 256] = {
            let mut table = [0xff; 256];
            let mut i = 0;
            while i < 16 {
                table[b"0123456789abcdef"[i] as usize] = i as u8;
                i += 1;
            }
            table
        };
        fn hex(digits: &[u8]) -> Option<u64> {
            let mut value = 0u64;
            let mut invalid = 0u8;
            for &digit in digits {
                let nibble = NIBBLES[usize::from(digit)];
                invalid |= nibble;
                value = value << 4 | u64::from(nibble & 0xf);
            }
            // Every valid nibble is < 16; 0xff sets the high bits.
            (invalid < 16).then_some(value)
        }
        let rest = bytes.strip_prefix(MARKER.as_slice())?;
        let fields = rest.get(..STAMP_LEN - MARKER.len())?;
        Some(Stamp {
            sent_ns: hex(&fields[..16])?,
            publisher: u32::try_from(hex(&fields[16..24])?).ok()?,
            seq: hex(&fields[24..])?,
        })
    }
}

/// Every place in `message` where a stamp starts (the rest of the message from
/// there). A server frame carries the payload as it was published, so each
/// delivered message of a frame (or of several frames sharing one WebSocket
/// message) shows up once.
pub(super) fn stamps(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    static FINDER: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(MARKER));
    FINDER.find_iter(message).map(move |at| &message[at..])
}

/// The run's one clock.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock(Instant);

impl Clock {
    /// Nanoseconds since the run's clock started.
    pub(super) fn now_ns(self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What kind of load a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Subscribers and publishers.
    PubSub,
    /// Connections that only keep their session alive.
    Idle,
}

/// The shape of one run, the same for every target.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) mode: Mode,
    /// Subscriber connections, or idle connections in [`Mode::Idle`].
    pub(super) connections: usize,
    /// Channels; subscriber `i` subscribes to channel `i % channels`.
    pub(super) channels: usize,
    /// Publisher connections; each publishes round-robin over its channels.
    pub(super) publishers: usize,
    /// Payload bytes per message (at least [`STAMP_LEN`]).
    pub(super) size: usize,
    /// Messages per second over all publishers; 0 = as fast as the windows allow.
    pub(super) rate: f64,
    /// Messages to publish in total (split among publishers), if bounded by count.
    pub(super) messages: Option<u64>,
    /// How long publishers publish, if bounded by time.
    pub(super) duration: Option<Duration>,
    /// Publishes awaiting their acknowledgement, per publisher.
    pub(super) inflight: usize,
    /// Messages published but not yet delivered to all their subscribers, per
    /// publisher.
    pub(super) window: usize,
}

impl Plan {
    /// The channel subscriber `index` subscribes to.
    pub(super) fn channel_of_subscriber(&self, index: usize) -> usize {
        index % self.channels
    }

    /// Subscribers of channel `channel`.
    pub(super) fn fanout(&self, channel: usize) -> u64 {
        let base = self.connections / self.channels;
        (base + usize::from(channel < self.connections % self.channels)) as u64
    }

    /// The channels publisher `index` publishes to: every `publishers`-th channel
    /// from `index`, or one shared channel when there are more publishers than
    /// channels.
    pub(super) fn channels_of_publisher(&self, index: usize) -> Vec<usize> {
        if self.publishers <= self.channels {
            (index..self.channels).step_by(self.publishers).collect()
        } else {
            vec![index % self.channels]
        }
    }

    /// Messages publisher `index` publishes, when the run is bounded by count.
    fn messages_of_publisher(&self, index: usize) -> Option<u64> {
        let publishers = self.publishers as u64;
        self.messages
            .map(|total| total / publishers + u64::from((index as u64) < total % publishers))
    }
}

/// Where the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Connections are being set up.
    Setup,
    /// Publishers publish.
    Go,
    /// Every connection ends.
    Stop,
}

/// What a publisher shares with the subscribers delivering its messages.
#[derive(Debug, Default)]
struct PublisherShared {
    /// Deliveries of this publisher's messages, over all subscribers.
    delivered: AtomicU64,
    /// Set while the publisher waits for deliveries (so that subscribers wake it
    /// only then).
    waiting: AtomicBool,
    wake: Notify,
}

/// The state of one run shared by every connection task.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) plan: Plan,
    pub(super) clock: Clock,
    handshakes: Semaphore,
    ready: AtomicUsize,
    phase: watch::Sender<Phase>,
    started_ns: AtomicU64,
    publishers: Box<[PublisherShared]>,
    published: AtomicU64,
    acked: AtomicU64,
    last_ack_ns: AtomicU64,
    expected: AtomicU64,
    received: AtomicU64,
    last_delivery_ns: AtomicU64,
    latency: Box<[Mutex<Histogram<u64>>]>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, 3 significant figures")
}

impl Run {
    pub(super) fn new(plan: Plan) -> Arc<Self> {
        let publishers = (0..plan.publishers)
            .map(|_| PublisherShared::default())
            .collect();
        Arc::new(Self {
            plan,
            clock: Clock(Instant::now()),
            handshakes: Semaphore::new(CONCURRENT_HANDSHAKES),
            ready: AtomicUsize::new(0),
            phase: watch::Sender::new(Phase::Setup),
            started_ns: AtomicU64::new(0),
            publishers,
            published: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            last_ack_ns: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            latency: (0..LATENCY_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        })
    }

    /// Waits for a turn to open a connection; hold the permit until the session is
    /// set up.
    pub(super) async fn handshake_permit(&self) -> anyhow::Result<SemaphorePermit<'_>> {
        self.handshakes
            .acquire()
            .await
            .context("the handshake limiter was closed")
    }

    /// A connection is set up (connected, and subscribed if it subscribes).
    pub(super) fn set_ready(&self) {
        self.ready.fetch_add(1, Ordering::Relaxed);
    }

    /// Watches the phase.
    pub(super) fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    fn total_delivered(&self) -> u64 {
        self.publishers
            .iter()
            .map(|p| p.delivered.load(Ordering::Relaxed))
            .sum()
    }
}

/// Waits until the phase is at least Go; false when the run stopped first.
pub(super) async fn wait_for_go(phase: &mut watch::Receiver<Phase>) -> anyhow::Result<bool> {
    let now = *phase
        .wait_for(|p| *p != Phase::Setup)
        .await
        .context("the run ended during setup")?;
    Ok(now == Phase::Go)
}

/// Resolves once the run stops (or its coordinator is gone).
pub(super) async fn stopped(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p == Phase::Stop).await;
}

/// One subscriber's deliveries: counted, checked and timed locally, handed to the
/// shared histograms in batches.
pub(super) struct Deliveries<'a> {
    run: &'a Run,
    shard: usize,
    count: u64,
    last_ns: u64,
    pending: Vec<u64>,
}

impl<'a> Deliveries<'a> {
    pub(super) fn new(run: &'a Run, subscriber: usize) -> Self {
        Self {
            run,
            shard: subscriber % LATENCY_SHARDS,
            count: 0,
            last_ns: 0,
            pending: Vec::with_capacity(LATENCY_BATCH),
        }
    }

    /// Records the delivery of the payload starting at `stamp` (see [`stamps`]),
    /// received at `now_ns`.
    pub(super) fn record(&mut self, stamp: &[u8], now_ns: u64) -> anyhow::Result<()> {
        let stamp = Stamp::decode(stamp).context("a delivered payload has a broken stamp")?;
        let Some(publisher) = self.run.publishers.get(stamp.publisher as usize) else {
            bail!(
                "a delivered payload names publisher {} of {} (is something else publishing \
                 to the benchmark's channels?)",
                stamp.publisher,
                self.run.publishers.len()
            );
        };
        // SeqCst pairs with the publisher's store of `waiting` and load of
        // `delivered`: one of the two sides always sees the other, so no wake-up is
        // lost.
        publisher.delivered.fetch_add(1, Ordering::SeqCst);
        if publisher.waiting.load(Ordering::SeqCst) {
            publisher.wake.notify_one();
        }
        let micros = now_ns.saturating_sub(stamp.sent_ns) / 1000;
        self.pending.push(micros.clamp(1, MAX_LATENCY_US));
        if self.pending.len() == LATENCY_BATCH {
            self.flush();
        }
        self.count += 1;
        self.last_ns = now_ns;
        Ok(())
    }

    fn flush(&mut self) {
        let mut histogram = match self.run.latency[self.shard].lock() {
            Ok(histogram) => histogram,
            Err(poisoned) => poisoned.into_inner(),
        };
        for &micros in &self.pending {
            histogram.saturating_record(micros);
        }
        self.pending.clear();
    }

    /// Hands the counts over at the end of the run.
    pub(super) fn finish(mut self) {
        self.flush();
        self.run.received.fetch_add(self.count, Ordering::Relaxed);
        self.run
            .last_delivery_ns
            .fetch_max(self.last_ns, Ordering::Relaxed);
    }
}

/// What a publisher should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Publish the next message ([`Publisher::next_message`]).
    Send,
    /// The next message is due at this instant.
    SleepUntil(Instant),
    /// The ack window is full: read acknowledgements.
    AwaitAck,
    /// The delivery window is full: wait for deliveries ([`Publisher::wait_delivery`]).
    AwaitDelivery,
    /// Everything is published; acknowledgements are still due.
    Drain,
    /// Everything is published and acknowledged.
    Done,
}

/// One publisher's pacing and windows.
pub(super) struct Publisher<'a> {
    run: &'a Run,
    index: usize,
    shared: &'a PublisherShared,
    channels: Vec<usize>,
    fanouts: Vec<u64>,
    next: usize,
    max_pending: u64,
    expected: u64,
    inflight: usize,
    outstanding: usize,
    sent: u64,
    limit: Option<u64>,
    interval: Option<Duration>,
    start: Instant,
    end: Option<Instant>,
}

impl<'a> Publisher<'a> {
    /// Publisher `index`, keeping at most `inflight` publishes awaiting their
    /// acknowledgement; call once the run is at [`Phase::Go`].
    pub(super) fn new(run: &'a Run, index: usize, inflight: usize) -> Self {
        let plan = &run.plan;
        let channels = plan.channels_of_publisher(index);
        let fanouts: Vec<u64> = channels.iter().map(|&c| plan.fanout(c)).collect();
        let max_fanout = fanouts.iter().copied().max().unwrap_or(0);
        let per_publisher = plan.rate / plan.publishers as f64;
        let start = Instant::now();
        Self {
            run,
            index,
            shared: &run.publishers[index],
            channels,
            fanouts,
            next: 0,
            max_pending: plan.window as u64 * max_fanout,
            expected: 0,
            inflight: inflight.max(1),
            outstanding: 0,
            sent: 0,
            limit: plan.messages_of_publisher(index),
            interval: (per_publisher > 0.0).then(|| Duration::from_secs_f64(1.0 / per_publisher)),
            start,
            end: plan.duration.map(|d| start + d),
        }
    }

    fn pending_deliveries(&self) -> u64 {
        self.expected
            .saturating_sub(self.shared.delivered.load(Ordering::SeqCst))
    }

    fn delivery_window_full(&self) -> bool {
        let pending = self.pending_deliveries();
        pending > 0 && pending + self.fanouts[self.next] > self.max_pending
    }

    /// What to do now.
    pub(super) fn step(&self) -> Step {
        let now = Instant::now();
        let finished = self.limit.is_some_and(|limit| self.sent >= limit)
            || self.end.is_some_and(|end| now >= end);
        if finished {
            return if self.outstanding > 0 {
                Step::Drain
            } else {
                Step::Done
            };
        }
        if self.outstanding >= self.inflight {
            return Step::AwaitAck;
        }
        if self.delivery_window_full() {
            return Step::AwaitDelivery;
        }
        match self.interval {
            Some(interval) => {
                let due = self.start + interval.mul_f64(self.sent as f64);
                if now < due {
                    Step::SleepUntil(due)
                } else {
                    Step::Send
                }
            }
            None => Step::Send,
        }
    }

    /// The channel and stamp of the next message, which the caller sends now; it
    /// counts as awaiting its acknowledgement from here on.
    pub(super) fn next_message(&mut self) -> (usize, Stamp) {
        let slot = self.next;
        self.next = (self.next + 1) % self.channels.len();
        let fanout = self.fanouts[slot];
        self.expected += fanout;
        self.run.expected.fetch_add(fanout, Ordering::Relaxed);
        self.run.published.fetch_add(1, Ordering::Relaxed);
        let stamp = Stamp {
            sent_ns: self.run.clock.now_ns(),
            publisher: self.index as u32,
            seq: self.sent,
        };
        self.sent += 1;
        self.outstanding += 1;
        (self.channels[slot], stamp)
    }

    /// `count` publishes were acknowledged.
    pub(super) fn acked(&mut self, count: usize) -> anyhow::Result<()> {
        if count > self.outstanding {
            bail!(
                "{count} acknowledgements arrived with {} publishes awaiting one",
                self.outstanding
            );
        }
        self.outstanding -= count;
        self.run.acked.fetch_add(count as u64, Ordering::Relaxed);
        self.run
            .last_ack_ns
            .fetch_max(self.run.clock.now_ns(), Ordering::Relaxed);
        Ok(())
    }

    /// Waits until a delivery of this publisher's messages arrives (or returns at
    /// once when the window has room). Fails after [`DELIVERY_STALL`] without any.
    pub(super) async fn wait_delivery(&self) -> anyhow::Result<()> {
        struct Waiting<'a>(&'a AtomicBool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        self.shared.waiting.store(true, Ordering::SeqCst);
        let _waiting = Waiting(&self.shared.waiting);
        let before = self.shared.delivered.load(Ordering::SeqCst);
        while self.delivery_window_full() {
            let woken = tokio::time::timeout(DELIVERY_STALL, self.shared.wake.notified()).await;
            if woken.is_err() && self.shared.delivered.load(Ordering::SeqCst) == before {
                bail!(
                    "publisher {}: no delivery of its messages for {} s with {} deliveries \
                     outstanding",
                    self.index,
                    DELIVERY_STALL.as_secs(),
                    self.pending_deliveries()
                );
            }
        }
        Ok(())
    }
}

/// A system under test: what each kind of connection does over its whole life.
/// Each call is one task; it returns when the run stops, or with the error that
/// ended the connection early.
pub(super) trait Target: Send + Sync + 'static {
    /// Subscriber `index`: subscribe to its channel, mark itself ready, count
    /// deliveries ([`Deliveries`]) until [`Phase::Stop`].
    fn subscriber(
        self: Arc<Self>,
        run: Arc<Run>,
        index: usize,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Publisher `index`: connect, mark itself ready, wait for [`Phase::Go`], publish
    /// as [`Publisher`] says until [`Step::Done`].
    fn publisher(
        self: Arc<Self>,
        run: Arc<Run>,
        index: usize,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Idle connection `index`: connect, mark itself ready, keep the session alive
    /// until [`Phase::Stop`].
    fn idle(
        self: Arc<Self>,
        run: Arc<Run>,
        index: usize,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What a publish/subscribe run measured.
#[derive(Debug)]
pub(super) struct PubSubMeasurement {
    pub(super) published: u64,
    pub(super) acked: u64,
    /// Deliveries due: each published message times its channel's subscribers.
    pub(super) expected: u64,
    pub(super) delivered: u64,
    /// From Go to the last acknowledgement.
    pub(super) publish_secs: f64,
    /// From Go to the last delivery.
    pub(super) delivery_secs: f64,
    /// Publish → deliver, microseconds.
    pub(super) latency: Histogram<u64>,
}

/// What an idle run measured.
#[derive(Debug)]
pub(super) struct IdleMeasurement {
    pub(super) connections: usize,
    /// Seconds to set up every connection.
    pub(super) setup_secs: f64,
    /// The server's resident set (kB) before and after the connections, when known.
    pub(super) rss_kib: Option<(u64, u64)>,
}

/// Tasks of one kind of connection.
struct Fleet {
    what: &'static str,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Fleet {
    fn spawn<F>(what: &'static str, count: usize, mut start: impl FnMut(usize) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        for index in 0..count {
            let task = start(index);
            tasks.spawn(async move { task.await.with_context(|| format!("{what} {index}")) });
        }
        Self { what, tasks }
    }

    /// The next task to end, as an error unless it ended because the run stopped
    /// (`stopping`); pending forever when none is left.
    async fn ended(&mut self, stopping: bool) -> anyhow::Error {
        match self.tasks.join_next().await {
            Some(Ok(Err(error))) => error,
            Some(Err(panic)) => anyhow::anyhow!("a {} task failed: {panic}", self.what),
            Some(Ok(Ok(()))) if stopping => std::future::pending().await,
            Some(Ok(Ok(()))) => anyhow::anyhow!("a {} ended before the run did", self.what),
            None => std::future::pending().await,
        }
    }

    /// Waits until every task has ended without error.
    async fn join(&mut self) -> anyhow::Result<()> {
        while let Some(joined) = self.tasks.join_next().await {
            joined.with_context(|| format!("a {} task failed", self.what))??;
        }
        Ok(())
    }
}

/// Polls `done` until it holds, failing with the first connection of `fleet` (or
/// `other`) that ends early, or at `deadline`; prints `progress()` every
/// [`PROGRESS_EVERY`].
async fn wait_until(
    fleet: &mut Fleet,
    mut other: Option<&mut Fleet>,
    deadline: Instant,
    what: &str,
    mut done: impl FnMut() -> bool,
    mut progress: impl FnMut() -> String,
) -> anyhow::Result<()> {
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    while !done() {
        if Instant::now() >= deadline {
            bail!("timed out while {what}: {}", progress());
        }
        let other_ended = async {
            match other.as_deref_mut() {
                Some(other) => other.ended(false).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            error = fleet.ended(false) => return Err(error.context(format!("while {what}"))),
            error = other_ended => return Err(error.context(format!("while {what}"))),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if Instant::now() >= next_progress {
            eprintln!("  {}", progress());
            next_progress += PROGRESS_EVERY;
        }
    }
    Ok(())
}

/// Runs a publish/subscribe workload against `target`.
pub(super) async fn drive_pubsub<T: Target>(
    label: &str,
    target: Arc<T>,
    run: Arc<Run>,
    deadline: Instant,
) -> anyhow::Result<PubSubMeasurement> {
    let plan = run.plan.clone();
    let mut subscribers = Fleet::spawn("subscriber", plan.connections, |i| {
        Arc::clone(&target).subscriber(Arc::clone(&run), i)
    });
    wait_until(
        &mut subscribers,
        None,
        deadline,
        "subscribers connected",
        || run.ready.load(Ordering::Relaxed) >= plan.connections,
        || {
            format!(
                "{label}: {}/{} subscribers connected",
                run.ready.load(Ordering::Relaxed),
                plan.connections
            )
        },
    )
    .await?;
    let mut publishers = Fleet::spawn("publisher", plan.publishers, |i| {
        Arc::clone(&target).publisher(Arc::clone(&run), i)
    });
    let everyone = plan.connections + plan.publishers;
    wait_until(
        &mut subscribers,
        Some(&mut publishers),
        deadline,
        "publishers connected",
        || run.ready.load(Ordering::Relaxed) >= everyone,
        || format!("{label}: publishers connecting"),
    )
    .await?;

    eprintln!("  {label}: {everyone} connections up; publishing");
    run.started_ns.store(run.clock.now_ns(), Ordering::Relaxed);
    run.phase.send_replace(Phase::Go);

    let mut last = (Instant::now(), 0u64, 0u64);
    let mut progress = || {
        let now = Instant::now();
        let published = run.published.load(Ordering::Relaxed);
        let delivered = run.total_delivered();
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let line = format!(
            "{label}: published {published} ({:.0}/s), delivered {delivered} ({:.0}/s)",
            (published - last.1) as f64 / secs,
            delivered.saturating_sub(last.2) as f64 / secs
        );
        last = (now, published, delivered);
        line
    };
    // Publishers end on their own (count or time); subscribers must not.
    let publishing = async {
        let mut next_progress = Instant::now() + PROGRESS_EVERY;
        loop {
            tokio::select! {
                joined = publishers.tasks.join_next() => match joined {
                    None => return anyhow::Ok(()),
                    Some(joined) => joined.context("a publisher task failed")??,
                },
                error = subscribers.ended(false) => return Err(error),
                () = tokio::time::sleep_until(next_progress.into()) => {
                    eprintln!("  {}", progress());
                    next_progress += PROGRESS_EVERY;
                }
            }
        }
    };
    tokio::time::timeout_at(deadline.into(), publishing)
        .await
        .map_err(|_| anyhow::anyhow!("timed out while publishing: {}", progress()))?
        .context("while publishing")?;

    let expected = run.expected.load(Ordering::Relaxed);
    let drain_deadline = deadline.min(Instant::now() + DRAIN_TIMEOUT);
    let drained = wait_until(
        &mut subscribers,
        None,
        drain_deadline,
        "delivering what was published",
        || run.total_delivered() >= expected,
        &mut progress,
    )
    .await;
    if let Err(error) = drained {
        // A timeout is reported as missing deliveries; a failed connection is fatal.
        if Instant::now() < drain_deadline {
            return Err(error);
        }
        eprintln!("  {label}: {error:#}");
    }
    run.phase.send_replace(Phase::Stop);
    let stopping = async {
        tokio::select! {
            joined = subscribers.join() => joined,
            error = publishers.ended(true) => Err(error),
        }
    };
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .context("subscribers did not stop in time")??;

    let started_ns = run.started_ns.load(Ordering::Relaxed);
    let secs = |end_ns: u64| end_ns.saturating_sub(started_ns) as f64 / 1e9;
    let mut latency = new_histogram();
    for shard in run.latency.iter() {
        let shard = match shard.lock() {
            Ok(shard) => shard,
            Err(poisoned) => poisoned.into_inner(),
        };
        latency
            .add(&*shard)
            .expect("histograms of equal bounds always merge");
    }
    Ok(PubSubMeasurement {
        published: run.published.load(Ordering::Relaxed),
        acked: run.acked.load(Ordering::Relaxed),
        expected,
        delivered: run.received.load(Ordering::Relaxed),
        publish_secs: secs(run.last_ack_ns.load(Ordering::Relaxed)),
        delivery_secs: secs(run.last_delivery_ns.load(Ordering::Relaxed)),
        latency,
    })
}

/// Sets up `run.plan.connections` idle connections against `target` and reads
/// `rss_kib()` (the server's resident memory) before and after.
pub(super) async fn drive_idle<T: Target>(
    label: &str,
    target: Arc<T>,
    run: Arc<Run>,
    rss_kib: impl Fn() -> anyhow::Result<Option<u64>>,
    settle: Duration,
    deadline: Instant,
) -> anyhow::Result<IdleMeasurement> {
    let count = run.plan.connections;
    let before = rss_kib()?;
    let started = Instant::now();
    let mut idle = Fleet::spawn("idle connection", count, |i| {
        Arc::clone(&target).idle(Arc::clone(&run), i)
    });
    wait_until(
        &mut idle,
        None,
        deadline,
        "idle connections connected",
        || run.ready.load(Ordering::Relaxed) >= count,
        || {
            format!(
                "{label}: {}/{count} idle connections up",
                run.ready.load(Ordering::Relaxed)
            )
        },
    )
    .await?;
    let setup_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  {label}: {count} idle connections up in {setup_secs:.1} s; settling for {} s",
        settle.as_secs()
    );
    let settle_until = (Instant::now() + settle).min(deadline);
    wait_until(
        &mut idle,
        None,
        deadline,
        "idle connections settled",
        || Instant::now() >= settle_until,
        || format!("{label}: settling"),
    )
    .await?;
    let after = rss_kib()?;
    run.phase.send_replace(Phase::Stop);
    tokio::time::timeout(Duration::from_secs(30), idle.join())
        .await
        .context("idle connections did not stop in time")??;
    Ok(IdleMeasurement {
        connections: count,
        setup_secs,
        rss_kib: before.zip(after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(connections: usize, channels: usize, publishers: usize) -> Plan {
        Plan {
            mode: Mode::PubSub,
            connections,
            channels,
            publishers,
            size: 100,
            rate: 0.0,
            messages: Some(10),
            duration: None,
            inflight: 4,
            window: 2,
        }
    }

    #[test]
    fn stamps_round_trip_and_are_found_inside_frames() {
        let stamp = Stamp {
            sent_ns: 0x0123_4567_89ab_cdef,
            publisher: 7,
            seq: u64::MAX,
        };
        let encoded = stamp.encode();
        assert!(encoded.is_ascii());
        assert_eq!(Stamp::decode(&encoded), Some(stamp));
        let mut frame = b"[{\"data\":\"".to_vec();
        frame.extend_from_slice(&encoded);
        frame.extend_from_slice(b"xxx\"},{\"data\":\"");
        frame.extend_from_slice(&Stamp { seq: 1, ..stamp }.encode());
        frame.extend_from_slice(b"\"}]");
        let found: Vec<Stamp> = stamps(&frame).filter_map(Stamp::decode).collect();
        assert_eq!(found, vec![stamp, Stamp { seq: 1, ..stamp }]);
        assert_eq!(Stamp::decode(&encoded[..STAMP_LEN - 1]), None);
        let mut bad = encoded;
        bad[MARKER.len()] = b'X';
        assert_eq!(Stamp::decode(&bad), None);
        assert_eq!(stamps(b"no marker here").count(), 0);
    }

    #[test]
    fn plans_spread_subscribers_and_channels() {
        let p = plan(10, 3, 2);
        assert_eq!((0..3).map(|c| p.fanout(c)).sum::<u64>(), 10);
        assert_eq!(p.fanout(0), 4);
        assert_eq!(p.channels_of_publisher(0), vec![0, 2]);
        assert_eq!(p.channels_of_publisher(1), vec![1]);
        assert_eq!(p.messages_of_publisher(0), Some(5));
        let shared = plan(4, 1, 3);
        assert_eq!(shared.channels_of_publisher(2), vec![0]);
        assert_eq!(
            (0..3)
                .map(|i| shared.messages_of_publisher(i).unwrap_or(0))
                .sum::<u64>(),
            10
        );
    }

    #[tokio::test]
    async fn windows_bound_a_publisher() {
        let run = Run::new(plan(2, 1, 1));
        let mut publisher = Publisher::new(&run, 0, 4);
        // Window 2 messages × fanout 2: two sends, then the delivery window is full.
        assert_eq!(publisher.step(), Step::Send);
        let (_, first) = publisher.next_message();
        assert_eq!(publisher.step(), Step::Send);
        publisher.next_message();
        assert_eq!(publisher.step(), Step::AwaitDelivery);
        let mut deliveries = Deliveries::new(&run, 0);
        deliveries
            .record(&first.encode(), run.clock.now_ns())
            .expect("records");
        assert_eq!(publisher.step(), Step::AwaitDelivery);
        deliveries
            .record(&first.encode(), run.clock.now_ns())
            .expect("records");
        publisher.wait_delivery().await.expect("room");
        assert_eq!(publisher.step(), Step::Send);
        publisher.next_message();
        publisher.next_message();
        // Ack window of 4.
        assert_eq!(publisher.step(), Step::AwaitAck);
        assert!(publisher.acked(5).is_err());
        publisher.acked(4).expect("acks");
        deliveries.finish();
        assert_eq!(run.received.load(Ordering::Relaxed), 2);
        assert_eq!(run.expected.load(Ordering::Relaxed), 8);
        let wrong = Stamp {
            publisher: 9,
            ..first
        };
        assert!(Deliveries::new(&run, 1).record(&wrong.encode(), 0).is_err());
    }
}
