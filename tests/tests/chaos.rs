//! Chaos tests (issue 5): real processes — `tern log`, `tern edge` — under load from
//! real `tern-client` publishers and subscribers, while processes are killed, a
//! subscriber stops reading, or retention removes what a subscriber missed.
//!
//! - `edges_killed`: two edges, one log; subscribers spread over 3 channels and both
//!   edges (each client's primary URL is one edge, its fallback the other); publishers
//!   at a steady total rate; every few seconds one edge (in turn) is SIGKILLed and
//!   restarted on its port. Clients resume on the other edge.
//! - `log_killed`: the same load with the log SIGKILLed and restarted (on its data dir
//!   and port) mid-run; publishes refused meanwhile are retried with the same ids.
//! - `slow_subscriber`: one subscriber, behind a [`Proxy`] that stops forwarding the
//!   edge's bytes for a while, under load: the edge disconnects it as a slow consumer
//!   (its `/metrics` counter says so), the client resumes, and the edge's RSS stays
//!   under `baseline + connections × (outbound_queue_bytes + WebSocket write buffer) +
//!   slack`.
//! - `resume_after_retention`: a subscriber away while retention removes what it
//!   missed gets `ContinuityLost` naming the position before the first stored message,
//!   then every message from there: never a silent gap; so does one that comes back
//!   with a recovery key; one that stayed attached loses nothing.
//!
//! What is asserted (the first three): every acknowledged message is delivered to
//! every subscriber of its channel exactly once, at its acknowledged position, with
//! dense serials (so in channel order, with no duplicate and no gap), the same
//! sequence for every subscriber (compared by digest), no id twice, and nothing
//! delivered that was not acknowledged (a publish failing with a retryable error is
//! retried with the same id until acknowledged, within a bound). Waits are bounded; no
//! assertion is about time. Figures (resume times p50/p99, resumed counts, RSS) are
//! printed on stderr: run with `--nocapture` to see them.
//!
//! Resume time is measured per client from `ConnectionState::Reconnecting` to the
//! next `Connected` (the CONNECTED of the resumed connection), and to the first
//! message the client delivers after it (replayed or live).
//!
//! The default variants are scaled to a 2-core CI machine (≈ 20 s each; the tests of
//! this file run one at a time). The issue's full spec — 200 subscribers over 3
//! channels, 1,000 publishes/s for 60 s; a 30 s stall — is the same code with other
//! parameters, `#[ignore]`d:
//!
//! ```text
//! cargo test -p tern-tests --test chaos                       # scaled, always run
//! cargo test -p tern-tests --test chaos -- --nocapture        # with the figures
//! cargo test -p tern-tests --test chaos -- --ignored --nocapture edges_killed_full
//! cargo test -p tern-tests --test chaos -- --ignored --nocapture log_killed_full
//! cargo test -p tern-tests --test chaos -- --ignored --nocapture slow_subscriber_full
//! ```
//!
//! ```text
//!  publishers ──▶ edge 0 ─┐                 ┌─ killer: SIGKILL an edge / the log,
//!  (steady rate)  edge 1 ─┼─▶ log (QUIC)    │  restart on the same port
//!  subscribers ◀── either ┘                 └─ ledger: acked (position, key) per channel
//!  readers: dense serials, digest, resume times ──▶ check against the ledger
//! ```

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use futures::StreamExt;
use tern_client::{AttachFrom, ChannelEvent, ChannelStream, Client, ClientConfig, ConnectionState};
use tern_protocol::{Data, Message, Position};
use tern_tests::proxy::Proxy;
use tern_tests::{EdgeProcess, LogProcess, TEST_KEY, http};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet, block_in_place};
use tokio::time::{Instant, MissedTickBehavior};

const CHANNELS: [&str; 3] = ["chaos:a", "chaos:b", "chaos:c"];
/// The tests of this file load the machine; they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Publishes of one publisher awaiting their answer at once (the edge allows 64).
const MAX_INFLIGHT: usize = 32;
/// The publisher index of the end marker published on every channel after the run.
const END: u32 = u32::MAX;
/// Bound on everything after the load stops (retries, catch-up, checks).
const AFTER_LOAD: Duration = Duration::from_secs(60);

/// (publisher, sequence number): what a message is, whatever its position.
type Key = (u32, u32);

/// The load of a run.
#[derive(Clone, Copy, Debug)]
struct Load {
    /// How long publishers publish.
    run_for: Duration,
    /// Subscriber clients, one channel each, spread over channels and edges.
    subscribers: usize,
    /// Publisher clients, spread over edges.
    publishers: usize,
    /// Publishes per second, all publishers together (one message each).
    rate: u32,
    /// Bytes of padding in each message's data.
    payload: usize,
}

impl Load {
    /// Scaled for the always-run variants on a 2-core machine.
    const SCALED: Load = Load {
        run_for: Duration::from_secs(20),
        subscribers: 60,
        publishers: 4,
        rate: 300,
        payload: 64,
    };
    /// The issue's spec.
    const FULL: Load = Load {
        run_for: Duration::from_secs(60),
        subscribers: 200,
        publishers: 6,
        rate: 1000,
        payload: 64,
    };
}

/// Locks `mutex`, also when a panicking thread poisoned it (the data stays usable
/// for the checks, which would report the failure anyway).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------

/// One log and some edges, each restartable on its address.
struct Cluster {
    dir: tempfile::TempDir,
    log: Option<LogProcess>,
    log_addr: SocketAddr,
    cert: PathBuf,
    edges: Vec<Option<EdgeProcess>>,
    edge_addrs: Vec<SocketAddr>,
    edge_extra: String,
}

impl Cluster {
    /// Starts a log (with `log_config` TOML, if any) and `edges` edges with
    /// `edge_extra` TOML.
    fn start(edges: usize, edge_extra: &str, log_config: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("log.toml");
        let config_arg = config.to_string_lossy().into_owned();
        let log_args: &[&str] = match log_config {
            Some(text) => {
                std::fs::write(&config, text)?;
                &["--config", &config_arg]
            }
            None => &[],
        };
        let log = LogProcess::start_with(&dir.path().join("log"), log_args, None)?;
        let (log_addr, cert) = (log.addr, log.cert.clone());
        let edges = (0..edges)
            .map(|i| {
                EdgeProcess::start(
                    dir.path(),
                    &format!("edge-{i}"),
                    log_addr,
                    &cert,
                    edge_extra,
                )
                .map(Some)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let edge_addrs = edges.iter().flatten().map(|e| e.addr).collect();
        Ok(Self {
            dir,
            log: Some(log),
            log_addr,
            cert,
            edges,
            edge_addrs,
            edge_extra: edge_extra.to_owned(),
        })
    }

    fn ws_url(&self, edge: usize) -> String {
        format!("ws://{}/v1/ws", self.edge_addrs[edge])
    }

    /// A client config whose primary is `edge` and whose fallbacks are the others.
    fn config(&self, edge: usize, name: &str) -> ClientConfig {
        let others: Vec<String> = (0..self.edge_addrs.len())
            .filter(|&e| e != edge)
            .map(|e| self.ws_url(e))
            .collect();
        client_config(self.ws_url(edge), name).fallback_urls(others)
    }

    /// SIGKILLs edge `i`, then starts it again on its address and waits until it is
    /// ready (linked to the log).
    async fn kill_and_restart_edge(&mut self, i: usize) -> anyhow::Result<()> {
        let edge = self.edges[i].take().context("the edge runs")?;
        block_in_place(|| edge.kill());
        // Down for a moment: its clients go elsewhere rather than race the restart.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let restarted = block_in_place(|| {
            EdgeProcess::start_at(
                self.dir.path(),
                &format!("edge-{i}"),
                self.edge_addrs[i],
                self.log_addr,
                &self.cert,
                &self.edge_extra,
            )
        })?;
        self.edges[i] = Some(restarted);
        wait_ready(self.edge_addrs[i]).await
    }

    /// SIGKILLs the log.
    fn kill_log(&mut self) -> anyhow::Result<()> {
        let log = self.log.take().context("the log runs")?;
        block_in_place(|| log.kill());
        Ok(())
    }

    /// Starts the log again on its data dir and address.
    fn restart_log(&mut self) -> anyhow::Result<()> {
        let data_dir = self.dir.path().join("log");
        let addr = self.log_addr;
        self.log = Some(block_in_place(|| LogProcess::start_at(&data_dir, addr))?);
        Ok(())
    }

    /// The last 40 lines each running edge printed on stderr, for failure reports.
    fn edge_logs(&self) -> String {
        self.edges
            .iter()
            .flatten()
            .map(|e| {
                let text = e.log_text();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

/// Waits (at most 30 s) until the edge at `addr` answers `/readyz` with 200.
async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http::get(addr, "/readyz", None).await
            && response.status == 200
        {
            return Ok(());
        }
        ensure!(Instant::now() < until, "edge {addr} not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client_config(url: String, name: &str) -> ClientConfig {
    ClientConfig::new(url, TEST_KEY)
        .client_id(name)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .request_timeout(Duration::from_secs(20))
}

async fn connect(config: ClientConfig) -> anyhow::Result<Client> {
    let url = config.url.clone();
    Client::connect(config)
        .await
        .with_context(|| format!("connecting to {url}"))
}

// ---------------------------------------------------------------------------------
// Publishing and the ledger
// ---------------------------------------------------------------------------------

/// What the publishers know: every acknowledged message's position, per channel.
#[derive(Default)]
struct Ledger {
    acked: [Vec<(Position, Key)>; 3],
    /// Publishes retried after a retryable error.
    retries: u64,
}

impl Ledger {
    /// Acknowledged messages, every channel together.
    fn total(&self) -> usize {
        self.acked.iter().map(Vec::len).sum()
    }
}

type SharedLedger = Arc<Mutex<Ledger>>;

fn message(key: Key, payload: usize) -> Message {
    let mut message = Message::new(format!("{}/{}/{}", key.0, key.1, "x".repeat(payload)));
    message.id = Some(format!("{}/{}", key.0, key.1));
    message
}

fn key_of(message: &Message) -> anyhow::Result<Key> {
    let Data::Text(text) = &message.data else {
        bail!("binary data where text was published: {message:?}");
    };
    let mut parts = text.splitn(3, '/');
    let mut number = || -> anyhow::Result<u32> {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("not a chaos message: {:.40}", text))
    };
    Ok((number()?, number()?))
}

/// Publishes `message` on `channel` until it is acknowledged, retrying retryable
/// errors (counted in the ledger) with the same id until `give_up_at`.
async fn publish_until_acked(
    client: &Client,
    channel: &str,
    message: Message,
    give_up_at: Instant,
    ledger: &SharedLedger,
) -> anyhow::Result<Position> {
    loop {
        match client.publish(channel, vec![message.clone()]).await {
            Ok(results) => return Ok(results.first().context("one result per message")?.position),
            Err(error) if error.is_retryable() && Instant::now() < give_up_at => {
                lock(ledger).retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => bail!("{:?} on {channel}: {error}", message.id),
        }
    }
}

/// Publishes `key` on `CHANNELS[channel]` until it is acknowledged (see
/// [`publish_until_acked`]), and records its position in the ledger.
async fn publish_one(
    client: Client,
    channel: usize,
    key: Key,
    payload: usize,
    give_up_at: Instant,
    ledger: SharedLedger,
) -> anyhow::Result<Position> {
    let message = message(key, payload);
    let position =
        publish_until_acked(&client, CHANNELS[channel], message, give_up_at, &ledger).await?;
    lock(&ledger).acked[channel].push((position, key));
    Ok(position)
}

/// Publisher `index`: `rate` publishes per second (one message each, channels in
/// turn, at most [`MAX_INFLIGHT`] unanswered) until `stop_at`, then waits for every
/// answer. Returns how many it published.
async fn publish_steadily(
    client: Client,
    index: u32,
    rate: f64,
    payload: usize,
    stop_at: Instant,
    ledger: SharedLedger,
) -> anyhow::Result<u32> {
    let give_up_at = stop_at + AFTER_LOAD / 2;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // After a pause (all permits taken while an edge or the log was down), go on at
    // the same rate rather than in a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let permits = Arc::new(Semaphore::new(MAX_INFLIGHT));
    let mut tasks = JoinSet::new();
    let mut seq = 0u32;
    while Instant::now() < stop_at {
        ticker.tick().await;
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let channel = (index as usize + seq as usize) % CHANNELS.len();
        let publish = publish_one(
            client.clone(),
            channel,
            (index, seq),
            payload,
            give_up_at,
            Arc::clone(&ledger),
        );
        tasks.spawn(async move {
            let result = publish.await;
            drop(permit);
            result.map(|_| ())
        });
        seq += 1;
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(seq)
}

/// The publishers of a run, started.
struct Publishers {
    clients: Vec<Client>,
    tasks: Vec<JoinHandle<anyhow::Result<u32>>>,
}

impl Publishers {
    fn start(clients: Vec<Client>, load: Load, stop_at: Instant, ledger: &SharedLedger) -> Self {
        let rate = f64::from(load.rate) / clients.len() as f64;
        let tasks = clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                tokio::spawn(publish_steadily(
                    client.clone(),
                    u32::try_from(i).unwrap_or(u32::MAX - 1),
                    rate,
                    load.payload,
                    stop_at,
                    Arc::clone(ledger),
                ))
            })
            .collect();
        Self { clients, tasks }
    }

    /// Waits for every publisher, then publishes the end marker on every channel.
    async fn finish(self, ledger: &SharedLedger) -> anyhow::Result<u32> {
        let mut published = 0;
        for task in self.tasks {
            published += task.await??;
        }
        let client = self.clients.first().context("a publisher")?;
        for channel in 0..CHANNELS.len() {
            let key = (END, u32::try_from(channel)?);
            publish_one(
                client.clone(),
                channel,
                key,
                0,
                Instant::now() + AFTER_LOAD / 2,
                Arc::clone(ledger),
            )
            .await?;
        }
        Ok(published)
    }
}

// ---------------------------------------------------------------------------------
// Subscribing, resume times and the check
// ---------------------------------------------------------------------------------

/// Reconnects seen by the subscribers' state watchers.
#[derive(Default)]
struct Resumes {
    /// `Reconnecting` → next `Connected`.
    to_connected: Vec<Duration>,
    /// `Reconnecting` → the first message delivered after the next `Connected`.
    to_message: Vec<Duration>,
    /// Connected again with `resumed: true`.
    resumed: u32,
    /// Connected again with `resumed: false` (a refused resume).
    refused: u32,
    /// Connected again to another URL than before.
    moved: u32,
}

type SharedResumes = Arc<Mutex<Resumes>>;

/// What one subscriber received on one channel.
#[derive(Debug)]
struct Received {
    subscriber: String,
    channel: usize,
    count: usize,
    /// Digest of every (position, key), in order.
    digest: u64,
    /// Every (position, key), when kept (one subscriber per channel).
    sequence: Option<Vec<(Position, Key)>>,
}

/// A subscriber client and its readers, started.
struct Subscriber {
    client: Client,
    readers: Vec<JoinHandle<anyhow::Result<Received>>>,
    watcher: JoinHandle<()>,
}

impl Subscriber {
    /// Attaches `channels` on `client` (from now) and starts reading them until the
    /// end marker (or `until`), keeping the whole sequence when `keep`.
    async fn start(
        client: Client,
        name: &str,
        channels: &[usize],
        keep: bool,
        resumes: &SharedResumes,
        until: Instant,
    ) -> anyhow::Result<Self> {
        let since_reconnect: Arc<Mutex<Option<Instant>>> = Arc::default();
        let mut readers = Vec::new();
        for &channel in channels {
            let stream = client.attach(CHANNELS[channel], AttachFrom::Now).await?;
            readers.push(tokio::spawn(read_until_end(
                stream,
                name.to_owned(),
                channel,
                keep,
                Arc::clone(&since_reconnect),
                Arc::clone(resumes),
                until,
            )));
        }
        let watcher = tokio::spawn(watch_resumes(
            client.state(),
            since_reconnect,
            Arc::clone(resumes),
        ));
        Ok(Self {
            client,
            readers,
            watcher,
        })
    }

    async fn finish(self) -> anyhow::Result<Vec<Received>> {
        let mut received = Vec::new();
        for reader in self.readers {
            received.push(reader.await??);
        }
        self.client.close().await;
        self.watcher.abort();
        Ok(received)
    }
}

/// Records each reconnect's durations until the client closes.
async fn watch_resumes(
    mut state: watch::Receiver<ConnectionState>,
    since_reconnect: Arc<Mutex<Option<Instant>>>,
    resumes: SharedResumes,
) {
    let mut since: Option<Instant> = None;
    let mut url_before: Option<String> = match &*state.borrow() {
        ConnectionState::Connected { url, .. } => Some(url.clone()),
        _ => None,
    };
    while state.changed().await.is_ok() {
        let now = Instant::now();
        let current = state.borrow_and_update().clone();
        match current {
            ConnectionState::Reconnecting { .. } => {
                since.get_or_insert(now);
            }
            ConnectionState::Connected { resumed, url, .. } => {
                let Some(started) = since.take() else {
                    continue;
                };
                let mut r = lock(&resumes);
                r.to_connected.push(now - started);
                if resumed {
                    r.resumed += 1;
                } else {
                    r.refused += 1;
                }
                if url_before.as_ref().is_some_and(|before| *before != url) {
                    r.moved += 1;
                }
                url_before = Some(url);
                *lock(&since_reconnect) = Some(started);
            }
            ConnectionState::Closed { .. } => break,
            _ => {}
        }
    }
}

/// Reads `stream` until the end marker: dense serials, nothing but messages.
async fn read_until_end(
    mut stream: ChannelStream,
    subscriber: String,
    channel: usize,
    keep: bool,
    since_reconnect: Arc<Mutex<Option<Instant>>>,
    resumes: SharedResumes,
    until: Instant,
) -> anyhow::Result<Received> {
    let mut previous = stream.attached_at();
    let mut digest = DefaultHasher::new();
    let mut count = 0;
    let mut sequence = keep.then(Vec::new);
    loop {
        let event = tokio::time::timeout_at(until, stream.next())
            .await
            .map_err(|_| {
                anyhow!("{subscriber} on {}: no end marker before the deadline; {count} messages, the last at {previous}", CHANNELS[channel])
            })?;
        let (position, message) = match event {
            Some(ChannelEvent::Message { position, message }) => (position, message),
            other => bail!(
                "{subscriber} on {}: {other:?} after {previous}",
                CHANNELS[channel]
            ),
        };
        if let Some(started) = lock(&since_reconnect).take() {
            lock(&resumes).to_message.push(started.elapsed());
        }
        let dense = position.serial == previous.serial + 1
            && (previous == Position::BEFORE_FIRST || position.epoch == previous.epoch);
        ensure!(
            dense,
            "{subscriber} on {}: {position} after {previous}",
            CHANNELS[channel]
        );
        previous = position;
        let key = key_of(&message)?;
        add_to_digest(&mut digest, position, key);
        count += 1;
        if let Some(sequence) = &mut sequence {
            sequence.push((position, key));
        }
        if key.0 == END {
            return Ok(Received {
                subscriber,
                channel,
                count,
                digest: digest.finish(),
                sequence,
            });
        }
    }
}

/// Feeds one delivered message to a subscriber's digest.
fn add_to_digest(digest: &mut DefaultHasher, position: Position, key: Key) {
    for n in [
        position.epoch,
        position.serial,
        u64::from(key.0),
        u64::from(key.1),
    ] {
        digest.write_u64(n);
    }
}

/// Every acknowledged message (and the end marker) is in the kept sequence of its
/// channel at its acknowledged position, no key twice, nothing else; every other
/// subscriber of the channel got the same sequence.
fn check_delivery(ledger: &Ledger, received: &[Received]) -> anyhow::Result<()> {
    for (c, channel) in CHANNELS.iter().enumerate() {
        let of_channel: Vec<&Received> = received.iter().filter(|r| r.channel == c).collect();
        let reference = of_channel
            .iter()
            .find_map(|r| r.sequence.as_ref().map(|s| (r, s)));
        let Some((reference, sequence)) = reference else {
            bail!("{channel}: no subscriber kept its sequence");
        };
        let by_position: HashMap<Position, Key> = sequence.iter().copied().collect();
        let mut keys = HashSet::new();
        for (_, key) in sequence {
            ensure!(keys.insert(*key), "{channel}: {key:?} delivered twice");
        }
        let acked = &ledger.acked[c];
        for (position, key) in acked {
            match by_position.get(position) {
                Some(got) if got == key => {}
                Some(got) => bail!(
                    "{channel}: {key:?} was acknowledged at {position}, {} got {got:?} there",
                    reference.subscriber
                ),
                None => bail!(
                    "{channel}: {key:?} acknowledged at {position} was not delivered to {}",
                    reference.subscriber
                ),
            }
        }
        let acked_keys: HashSet<Key> = acked.iter().map(|(_, k)| *k).collect();
        for (position, key) in sequence {
            ensure!(
                acked_keys.contains(key),
                "{channel}: {key:?} at {position} was delivered but never acknowledged"
            );
        }
        for other in &of_channel {
            ensure!(
                other.count == reference.count && other.digest == reference.digest,
                "{channel}: {} got {} messages, {} got {}, or in another order",
                other.subscriber,
                other.count,
                reference.subscriber,
                reference.count
            );
        }
        ensure!(
            acked.len() > 1,
            "{channel}: nothing was acknowledged but the end marker"
        );
    }
    Ok(())
}

/// The value at `percent` of sorted `values`.
fn percentile(values: &[Duration], percent: usize) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values[(values.len() - 1) * percent / 100]
}

fn report_resumes(test: &str, resumes: &mut Resumes) {
    if resumes.to_connected.is_empty() {
        eprintln!("{test}: no subscriber reconnected");
        return;
    }
    resumes.to_connected.sort();
    resumes.to_message.sort();
    eprintln!(
        "{test}: {} reconnects, {} resumed (resumed: true), {} refused, {} moved to another edge",
        resumes.to_connected.len(),
        resumes.resumed,
        resumes.refused,
        resumes.moved
    );
    eprintln!(
        "{test}: resume time Reconnecting → Connected p50 {:?} p99 {:?} max {:?}",
        percentile(&resumes.to_connected, 50),
        percentile(&resumes.to_connected, 99),
        resumes.to_connected.last().copied().unwrap_or_default()
    );
    eprintln!(
        "{test}: resume time Reconnecting → first message after it p50 {:?} p99 {:?} max {:?} ({} samples)",
        percentile(&resumes.to_message, 50),
        percentile(&resumes.to_message, 99),
        resumes.to_message.last().copied().unwrap_or_default(),
        resumes.to_message.len()
    );
}

// ---------------------------------------------------------------------------------
// The chaos runs
// ---------------------------------------------------------------------------------

/// What kills what during a run.
#[derive(Clone, Copy, Debug)]
enum Chaos {
    /// One edge in turn, every period.
    Edges { every: Duration },
    /// The log, every period, down for a while each time.
    Log { every: Duration, down: Duration },
}

/// A run of `load` on two edges and one log while `chaos` strikes; checks delivery.
async fn run_killing(test: &str, load: Load, chaos: Chaos) -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = block_in_place(|| Cluster::start(2, "", None))?;
    let started = Instant::now();
    let resumes = SharedResumes::default();
    let ledger = SharedLedger::default();
    let until = started + load.run_for + AFTER_LOAD;

    let mut subscribers = Vec::new();
    for s in 0..load.subscribers {
        let name = format!("sub-{s}");
        let client = connect(cluster.config(s % 2, &name)).await?;
        let channel = (s / 2) % CHANNELS.len();
        let keep = s < 2 * CHANNELS.len();
        subscribers
            .push(Subscriber::start(client, &name, &[channel], keep, &resumes, until).await?);
    }
    let mut publisher_clients = Vec::new();
    for p in 0..load.publishers {
        let name = format!("pub-{p}");
        publisher_clients.push(connect(cluster.config(p % 2, &name)).await?);
    }
    let stop_at = Instant::now() + load.run_for;
    let publishers = Publishers::start(publisher_clients, load, stop_at, &ledger);
    eprintln!(
        "{test}: {} subscribers and {} publishers connected in {:?}; {load:?}, {chaos:?}",
        load.subscribers,
        load.publishers,
        started.elapsed()
    );

    let mut strikes = 0;
    match chaos {
        Chaos::Edges { every } => {
            while Instant::now() + every < stop_at {
                tokio::time::sleep(every).await;
                cluster.kill_and_restart_edge(strikes % 2).await?;
                strikes += 1;
            }
        }
        Chaos::Log { every, down } => {
            let mut outages = Vec::new();
            while Instant::now() + every < stop_at {
                tokio::time::sleep(every).await;
                cluster.kill_log()?;
                let killed_at = Instant::now();
                let acked_before = lock(&ledger).total();
                tokio::time::sleep(down).await;
                cluster.restart_log()?;
                strikes += 1;
                // Until a publish is acknowledged again (bounded by the run's end).
                while lock(&ledger).total() == acked_before && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                outages.push(killed_at.elapsed());
            }
            eprintln!(
                "{test}: log killed, down {down:?}, restarted: publishes acknowledged again after {outages:?}"
            );
        }
    }
    let published = publishers.finish(&ledger).await?;
    let mut received = Vec::new();
    for subscriber in subscribers {
        match subscriber.finish().await {
            Ok(r) => received.extend(r),
            Err(error) => {
                return Err(error.context(format!("edge logs:\n{}", cluster.edge_logs())));
            }
        }
    }
    let ledger = std::mem::take(&mut *lock(&ledger));
    check_delivery(&ledger, &received)?;

    let acked = ledger.total();
    let delivered: usize = received.iter().map(|r| r.count).sum();
    eprintln!(
        "{test}: {strikes} kills; {published} published ({:.0}/s), {acked} acknowledged (end markers included), {} retried; {delivered} deliveries checked; {:?} in all",
        f64::from(published) / load.run_for.as_secs_f64(),
        ledger.retries,
        started.elapsed()
    );
    let mut resumes = std::mem::take(&mut *lock(&resumes));
    report_resumes(test, &mut resumes);
    ensure!(strikes > 0, "the run was too short for a kill");
    if let Chaos::Edges { .. } = chaos {
        ensure!(
            resumes.resumed > 0 && resumes.moved > 0,
            "no client resumed on another edge"
        );
        ensure!(
            resumes.refused == 0,
            "{} resumes were refused",
            resumes.refused
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_killed() -> anyhow::Result<()> {
    let every = Duration::from_secs(4);
    run_killing("edges_killed", Load::SCALED, Chaos::Edges { every }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the full spec: 200 subscribers, 1,000 publishes/s for 60 s; run by name"]
async fn edges_killed_full() -> anyhow::Result<()> {
    let every = Duration::from_secs(5);
    run_killing("edges_killed_full", Load::FULL, Chaos::Edges { every }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_killed() -> anyhow::Result<()> {
    let chaos = Chaos::Log {
        every: Duration::from_secs(7),
        down: Duration::from_secs(1),
    };
    run_killing("log_killed", Load::SCALED, chaos).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the full spec: 200 subscribers, 1,000 publishes/s for 60 s; run by name"]
async fn log_killed_full() -> anyhow::Result<()> {
    let chaos = Chaos::Log {
        every: Duration::from_secs(15),
        down: Duration::from_secs(2),
    };
    run_killing("log_killed_full", Load::FULL, chaos).await
}

/// The slow subscriber run: `load` on one edge; `stall_for` after `warm_up`, one
/// subscriber (of every channel, behind a proxy) reads nothing.
async fn run_slow_subscriber(
    test: &str,
    load: Load,
    warm_up: Duration,
    stall_for: Duration,
) -> anyhow::Result<()> {
    /// Bytes of the edge's limits set below.
    const MAX_FRAME: u64 = 32 << 10;
    const OUTBOUND_QUEUE: u64 = 256 << 10;
    /// Memory the edge may take beyond its per-connection bounds: allocator slack,
    /// its own buffers for messages in flight, catch-up reads.
    const SLACK: u64 = 8 << 20;
    /// What a stalled connection may hold beyond the edge's outbox: the WebSocket
    /// layer's write buffer, `4 × max(16 KiB, max_frame_bytes)` (runtime/edge ws.rs).
    const WS_WRITE_BUFFER: u64 = 4 * MAX_FRAME;
    /// Bytes the kernel may buffer for a stalled connection before the edge's writes
    /// block: the edge socket's send buffer (up to tcp_wmem's 4 MiB) and the proxy's
    /// small receive buffer.
    const KERNEL: u64 = 4 << 20;

    let _one = ONE_AT_A_TIME.lock().await;
    let limits = format!(
        "[limits]\nmax_frame_bytes = {MAX_FRAME}\nmax_message_bytes = {}\noutbound_queue_bytes = {OUTBOUND_QUEUE}\n",
        MAX_FRAME / 2
    );
    let cluster = block_in_place(|| Cluster::start(1, &limits, None))?;
    let edge_addr = cluster.edge_addrs[0];
    let edge = cluster.edges[0].as_ref().context("the edge runs")?;
    let proxy = Proxy::start(edge_addr).await?;
    let started = Instant::now();
    let until = started + warm_up + stall_for + load.run_for + AFTER_LOAD;
    let resumes = SharedResumes::default();
    let stalled_resumes = SharedResumes::default();
    let ledger = SharedLedger::default();

    let mut subscribers = Vec::new();
    for s in 0..load.subscribers {
        let name = format!("sub-{s}");
        let client = connect(cluster.config(0, &name)).await?;
        let channel = s % CHANNELS.len();
        let keep = s < CHANNELS.len();
        subscribers
            .push(Subscriber::start(client, &name, &[channel], keep, &resumes, until).await?);
    }
    let stalled_client = connect(client_config(proxy.ws_url(), "stalled")).await?;
    let stalled = Subscriber::start(
        stalled_client,
        "stalled",
        &[0, 1, 2],
        false,
        &stalled_resumes,
        until,
    )
    .await?;
    let mut publisher_clients = Vec::new();
    for p in 0..load.publishers {
        publisher_clients.push(connect(cluster.config(0, &format!("pub-{p}"))).await?);
    }
    let connections = (load.subscribers + load.publishers + 2) as u64;
    let stop_at = Instant::now() + warm_up + stall_for + load.run_for;
    let publishers = Publishers::start(publisher_clients, load, stop_at, &ledger);

    tokio::time::sleep(warm_up).await;
    let metrics = http::get(edge_addr, "/metrics", None).await?.body;
    let slow_name = "tern_edge_connections_closed_total{reason=\"slow_consumer\"}";
    let slow_before = http::metric(&metrics, slow_name);
    let baseline = edge.rss_bytes().context("the edge's RSS")?;
    let bound = baseline + connections * (OUTBOUND_QUEUE + WS_WRITE_BUFFER) + SLACK;
    let acked_before = lock(&ledger).total();
    proxy.stall();
    let mut peak = baseline;
    let stall_ends = Instant::now() + stall_for;
    while Instant::now() < stall_ends {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(edge.rss_bytes().context("the edge's RSS")?);
    }
    let stalled_volume = (lock(&ledger).total() - acked_before) as u64 * load.payload as u64;
    proxy.resume();
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(edge.rss_bytes().context("the edge's RSS")?);
    }

    let published = publishers.finish(&ledger).await?;
    let mut received = Vec::new();
    for subscriber in subscribers.into_iter().chain([stalled]) {
        received.extend(
            subscriber
                .finish()
                .await
                .with_context(|| format!("edge log:\n{}", cluster.edge_logs()))?,
        );
    }
    let ledger = std::mem::take(&mut *lock(&ledger));
    check_delivery(&ledger, &received)?;
    let metrics = http::get(edge_addr, "/metrics", None).await?.body;
    let slow = http::metric(&metrics, slow_name) - slow_before;

    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    eprintln!(
        "{test}: {published} published ({} acknowledged, {} retried), {} deliveries checked; {:?} in all",
        ledger.total(),
        ledger.retries,
        received.iter().map(|r| r.count).sum::<usize>(),
        started.elapsed()
    );
    eprintln!(
        "{test}: stalled {stall_for:?}; {:.1} MiB published meanwhile to the stalled subscriber; {slow} slow consumer disconnect(s)",
        mib(stalled_volume)
    );
    eprintln!(
        "{test}: edge RSS baseline {:.1} MiB, peak {:.1} MiB, bound {:.1} MiB = baseline + {connections} connections × ({} KiB outbound queue + {} KiB WebSocket write buffer) + {:.0} MiB slack",
        mib(baseline),
        mib(peak),
        mib(bound),
        OUTBOUND_QUEUE >> 10,
        WS_WRITE_BUFFER >> 10,
        mib(SLACK)
    );
    let mut stalled_resumes = std::mem::take(&mut *lock(&stalled_resumes));
    report_resumes(
        &format!("{test} (the stalled subscriber)"),
        &mut stalled_resumes,
    );
    report_resumes(&format!("{test} (the others)"), &mut lock(&resumes));

    ensure!(slow > 0, "the edge disconnected no slow consumer");
    ensure!(
        stalled_resumes.resumed > 0,
        "the stalled subscriber did not resume"
    );
    ensure!(
        peak <= bound,
        "the edge's RSS went to {:.1} MiB, over its bound of {:.1} MiB",
        mib(peak),
        mib(bound)
    );
    // Without the outbox's budget the stalled subscriber's queue alone would have
    // gone over the bound: the run can tell a bounded edge from an unbounded one.
    ensure!(
        stalled_volume > bound - baseline + KERNEL,
        "too little was published during the stall ({:.1} MiB) to tell",
        mib(stalled_volume)
    );
    drop(proxy);
    Ok(())
}

/// The slow subscriber's load: messages of 8 KiB, so that a stall outgrows the
/// kernel's buffers and the edge's bound quickly.
const SLOW_LOAD: Load = Load {
    run_for: Duration::from_secs(4),
    subscribers: 6,
    publishers: 2,
    rate: 300,
    payload: 8 << 10,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber() -> anyhow::Result<()> {
    let stall = Duration::from_secs(10);
    run_slow_subscriber("slow_subscriber", SLOW_LOAD, Duration::from_secs(2), stall).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the full spec: a 30 s stall; run by name"]
async fn slow_subscriber_full() -> anyhow::Result<()> {
    let load = Load {
        run_for: Duration::from_secs(10),
        subscribers: 30,
        ..SLOW_LOAD
    };
    let stall = Duration::from_secs(30);
    run_slow_subscriber("slow_subscriber_full", load, Duration::from_secs(3), stall).await
}

/// The next event of `stream` (bounded by `until`).
async fn next_event(stream: &mut ChannelStream, until: Instant) -> anyhow::Result<ChannelEvent> {
    tokio::time::timeout_at(until, stream.next())
        .await
        .with_context(|| format!("{}: no event before the deadline", stream.channel()))?
        .with_context(|| format!("{}: the stream ended", stream.channel()))
}

/// Reads messages from `stream` until the one at `last` (inclusive), each the next
/// serial after `after`; anything else is a failure.
async fn read_through(
    stream: &mut ChannelStream,
    after: Position,
    last: Position,
    until: Instant,
) -> anyhow::Result<()> {
    let mut previous = after;
    while previous != last {
        match next_event(stream, until).await? {
            ChannelEvent::Message { position, .. } => {
                ensure!(
                    position.serial == previous.serial + 1,
                    "{}: {position} after {previous}",
                    stream.channel()
                );
                previous = position;
            }
            other => bail!("{}: {other:?} after {previous}", stream.channel()),
        }
    }
    Ok(())
}

/// The first serial the log still stores on `channel`, from REST history.
async fn first_stored(edge: SocketAddr, channel: &str) -> anyhow::Result<Position> {
    let response = http::get(
        edge,
        &format!("/v1/channels/{channel}/messages?from=1&limit=1"),
        Some(TEST_KEY),
    )
    .await?;
    ensure!(response.status == 200, "history: {response:?}");
    let body: serde_json::Value = serde_json::from_str(&response.body)?;
    let position = &body["messages"][0]["position"];
    let number = |field: &str| {
        position[field]
            .as_u64()
            .with_context(|| format!("no position.{field} in {body}"))
    };
    Ok(Position {
        epoch: number("epoch")?,
        serial: number("serial")?,
    })
}

/// A log that keeps 128 KiB in 64 KiB segments, checked every second: a subscriber
/// away while 480 KiB are published finds its next message gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_retention() -> anyhow::Result<()> {
    const CHANNEL: &str = "chaos:retained";
    const BEFORE: u32 = 5;
    const AWAY: u32 = 60;
    let _one = ONE_AT_A_TIME.lock().await;
    let log_config = "[store]\nsegment_bytes = \"64KiB\"\ncheckpoint_bytes = \"64KiB\"\n\n\
        [store.retention]\nmax_age = \"off\"\nmax_bytes = \"128KiB\"\ncheck_interval = \"1s\"\n";
    let cluster = block_in_place(|| Cluster::start(1, "", Some(log_config)))?;
    let edge = cluster.edge_addrs[0];
    let until = Instant::now() + Duration::from_secs(90);
    let proxy = Proxy::start(edge).await?;

    // Three subscribers: `away` loses its network (the proxy refuses it), `recovered`
    // closes and comes back later with its recovery key, `stays` stays attached.
    let away_client = connect(client_config(proxy.ws_url(), "away")).await?;
    let recovered_config = client_config(cluster.ws_url(0), "recovered");
    let recovered_client = connect(recovered_config.clone()).await?;
    let stays_client = connect(client_config(cluster.ws_url(0), "stays")).await?;
    let publisher = connect(client_config(cluster.ws_url(0), "publisher")).await?;
    let mut away = away_client.attach(CHANNEL, AttachFrom::Now).await?;
    let mut recovered = recovered_client.attach(CHANNEL, AttachFrom::Now).await?;
    let mut stays = stays_client.attach(CHANNEL, AttachFrom::Now).await?;
    let ledger = SharedLedger::default();
    let publish = |seq: u32, payload: usize| {
        let message = message((0, seq), payload);
        let (publisher, ledger) = (publisher.clone(), Arc::clone(&ledger));
        async move { publish_until_acked(&publisher, CHANNEL, message, until, &ledger).await }
    };
    let mut seen = Position::BEFORE_FIRST;
    for seq in 0..BEFORE {
        seen = publish(seq, 16).await?;
    }
    for stream in [&mut away, &mut recovered, &mut stays] {
        read_through(stream, Position::BEFORE_FIRST, seen, until).await?;
    }

    // Both go away.
    let recovery_key = recovered_client
        .recovery_key()
        .await
        .context("a recovery key")?;
    drop(recovered);
    recovered_client.close().await;
    let mut away_state = away_client.state();
    proxy.refuse();
    tokio::time::timeout_at(
        until,
        away_state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .context("the away client did not notice the cut")??;

    // 480 KiB published while they are away; retention keeps the last 128 KiB.
    let mut last = seen;
    for seq in BEFORE..BEFORE + AWAY {
        last = publish(seq, 8 << 10).await?;
    }
    read_through(&mut stays, seen, last, until).await?;
    let mut first = first_stored(edge, CHANNEL).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = first_stored(edge, CHANNEL).await?;
        // Removed beyond what they saw, and settled (a pass ran since the last look).
        if now == first && now.serial > seen.serial + 1 {
            break;
        }
        ensure!(
            Instant::now() < until,
            "retention did not remove serial {} (first stored: {now})",
            seen.serial + 1
        );
        first = now;
    }
    let resumes_at = Position {
        epoch: first.epoch,
        serial: first.serial - 1,
    };

    // They come back: ContinuityLost right before the first stored message, then
    // everything from it; never a silent gap.
    proxy.admit();
    let recovered_client = connect(recovered_config.recover(recovery_key)).await?;
    let mut recovered = recovered_client.attach(CHANNEL, AttachFrom::Now).await?;
    let after = publish(BEFORE + AWAY, 16).await?;
    for (name, stream) in [("away", &mut away), ("recovered", &mut recovered)] {
        match next_event(stream, until).await.context(name)? {
            ChannelEvent::ContinuityLost { position, reason } => {
                ensure!(
                    position == resumes_at,
                    "{name}: ContinuityLost at {position}, the first stored message is {first}"
                );
                eprintln!(
                    "resume_after_retention: {name} saw {seen}, then ContinuityLost at {position} ({})",
                    reason.message
                );
            }
            other => bail!(
                "{name}: {other:?} where ContinuityLost was due (saw {seen}, first stored {first})"
            ),
        }
        read_through(stream, resumes_at, after, until).await?;
    }
    read_through(&mut stays, last, after, until).await?;
    let away_now = away_client.state().borrow().clone();
    ensure!(
        matches!(away_now, ConnectionState::Connected { resumed: true, .. }),
        "the away client's connection was not resumed: {away_now:?}"
    );
    eprintln!(
        "resume_after_retention: {} messages published, {} removed by retention; `stays` lost nothing",
        after.serial,
        first.serial - 1
    );
    for client in [away_client, recovered_client, stays_client, publisher] {
        client.close().await;
    }
    Ok(())
}

/// The check finds each kind of fault: a missing, moved, repeated or unacknowledged
/// message, and a subscriber that disagrees with the others.
#[test]
fn check_delivery_finds_every_fault() {
    let at = |serial| Position { epoch: 7, serial };
    let received = |subscriber: &str, channel, sequence: &[(Position, Key)], keep: bool| {
        let mut digest = DefaultHasher::new();
        for (position, key) in sequence {
            add_to_digest(&mut digest, *position, *key);
        }
        Received {
            subscriber: subscriber.to_owned(),
            channel,
            count: sequence.len(),
            digest: digest.finish(),
            sequence: keep.then(|| sequence.to_vec()),
        }
    };
    let good: Vec<(Position, Key)> = vec![(at(1), (0, 0)), (at(2), (1, 0)), (at(3), (END, 0))];
    let mut ledger = Ledger::default();
    for channel in 0..CHANNELS.len() {
        ledger.acked[channel] = good.clone();
    }
    let all = |first: &[(Position, Key)], second: &[(Position, Key)]| {
        (0..CHANNELS.len())
            .flat_map(|c| {
                [
                    received("kept", c, if c == 1 { first } else { &good }, true),
                    received("other", c, if c == 1 { second } else { &good }, false),
                ]
            })
            .collect::<Vec<_>>()
    };
    assert!(check_delivery(&ledger, &all(&good, &good)).is_ok());

    let missing = [good[0], good[2]];
    let moved = [(at(1), (1, 0)), (at(2), (0, 0)), good[2]];
    let repeated = [good[0], good[1], (at(3), (0, 0)), (at(4), (END, 0))];
    let stranger = [good[0], good[1], (at(3), (9, 9)), (at(4), (END, 0))];
    for (fault, sequence) in [
        ("missing", &missing[..]),
        ("moved", &moved[..]),
        ("repeated", &repeated[..]),
        ("unacknowledged", &stranger[..]),
    ] {
        assert!(
            check_delivery(&ledger, &all(sequence, sequence)).is_err(),
            "{fault} passed"
        );
    }
    assert!(
        check_delivery(&ledger, &all(&good, &missing)).is_err(),
        "a subscriber that missed a message passed"
    );
    assert!(
        check_delivery(&ledger, &all(&good, &moved)).is_err(),
        "a subscriber with another order passed"
    );
}
