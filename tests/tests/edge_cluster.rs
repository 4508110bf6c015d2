//! A cluster of real processes — one `tern log`, two `tern edge` — driven by
//! `tern-client` clients on both edges:
//!
//! - `two_edges_one_order`: clients on both edges publish concurrently to a few
//!   channels while every client subscribes to all of them; per channel every
//!   subscriber sees every acknowledged message exactly once, at its acknowledged
//!   position, in the same order, and both edges' publishes share that one order.
//! - `log_killed_and_restarted`: the same, with the log SIGKILLed mid-run and restarted
//!   on its data dir and port; edges reconnect, clients keep receiving, and every
//!   acknowledged message is delivered once (publishes that failed with a retryable
//!   error are retried with the same message ids).
//!
//! Run: `cargo test -p tern-tests --test edge_cluster`

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use tern_client::{AttachFrom, ChannelEvent, ChannelStream, Client, ClientConfig};
use tern_protocol::{Data, Message, Position};
use tern_tests::{EdgeProcess, LogProcess, TEST_KEY};
use tokio::time::Instant;

const CHANNELS: [&str; 3] = ["cluster:a", "cluster:b", "cluster:c"];
/// Every wait in a test ends this long after its processes started (building the
/// `tern` binary comes before and is not counted).
const TEST_LIMIT: Duration = Duration::from_secs(45);

/// channel → (data, position) of every acknowledged message.
type Acked = Arc<Mutex<HashMap<String, Vec<(String, Position)>>>>;

/// Publishes retried after a retryable error.
static RETRIES: AtomicUsize = AtomicUsize::new(0);

struct Cluster {
    dir: tempfile::TempDir,
    log: Option<LogProcess>,
    edges: Vec<EdgeProcess>,
}

impl Cluster {
    /// Starts a log and `edges` edges linked to it (blocking: process start-up).
    fn start(edges: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = LogProcess::start(&dir.path().join("log"))?;
        let edges = (0..edges)
            .map(|i| EdgeProcess::start(dir.path(), &format!("edge-{i}"), log.addr, &log.cert, ""))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            dir,
            log: Some(log),
            edges,
        })
    }

    fn log_data_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }
}

async fn client(edge: &EdgeProcess, name: &str) -> anyhow::Result<Client> {
    let config = ClientConfig::new(edge.ws_url(), TEST_KEY)
        .client_id(name)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .request_timeout(Duration::from_secs(20));
    Client::connect(config)
        .await
        .with_context(|| format!("{name} connecting to {}", edge.addr))
}

/// Each client's streams, one per channel of [`CHANNELS`], attached from now.
async fn subscribe(clients: &[Client]) -> anyhow::Result<Vec<Vec<ChannelStream>>> {
    let mut all = Vec::new();
    for client in clients {
        let mut streams = Vec::new();
        for channel in CHANNELS {
            streams.push(client.attach(channel, AttachFrom::Now).await?);
        }
        all.push(streams);
    }
    Ok(all)
}

/// Reads `count` messages from `stream` (anything else is a failure).
async fn read(
    stream: &mut ChannelStream,
    count: usize,
    until: Instant,
) -> anyhow::Result<Vec<(String, Position)>> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let event = tokio::time::timeout_at(until, stream.next())
            .await
            .with_context(|| {
                format!(
                    "{}: {} of {count} messages before the deadline",
                    stream.channel(),
                    got.len()
                )
            })?;
        match event {
            Some(ChannelEvent::Message { position, message }) => {
                let Data::Text(text) = message.data else {
                    bail!("binary data where text was published: {message:?}");
                };
                got.push((text, position));
            }
            other => bail!("{}: unexpected event {other:?}", stream.channel()),
        }
    }
    Ok(got)
}

/// Publishes `per_channel` messages to every channel from `client`, one at a time per
/// channel, the channels concurrently. Messages carry ids, so a publish that failed
/// with a retryable error is retried safely (until `until`). Records every ACK.
async fn publish_all(
    client: Client,
    name: String,
    per_channel: usize,
    acked: Acked,
    until: Instant,
) -> anyhow::Result<()> {
    let tasks = CHANNELS.map(|channel| {
        let client = client.clone();
        let name = name.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            for i in 0..per_channel {
                let data = format!("{name}/{i}");
                let mut message = Message::new(data.as_str());
                message.id = Some(format!("{channel}/{data}"));
                let results = loop {
                    match client.publish(channel, vec![message.clone()]).await {
                        Ok(results) => break results,
                        Err(error) if error.is_retryable() && Instant::now() < until => {
                            RETRIES.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(error) => bail!("{data} on {channel}: {error}"),
                    }
                };
                let result = results.first().context("one result per message")?;
                acked
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .entry(channel.to_owned())
                    .or_default()
                    .push((data, result.position));
            }
            anyhow::Ok(())
        })
    });
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Every subscriber has exactly the acknowledged messages of each channel, at their
/// acknowledged positions, in one order with dense serials; then a last message on
/// each channel is the next thing every subscriber gets (nothing duplicated trails).
async fn check_delivery(
    publisher: &Client,
    streams: &mut [Vec<ChannelStream>],
    acked: &Acked,
    until: Instant,
) -> anyhow::Result<()> {
    let acked = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    for (c, channel) in CHANNELS.iter().enumerate() {
        let expected = acked.get(*channel).context("acks on every channel")?;
        let mut want: Vec<(String, Position)> = expected.clone();
        want.sort_by_key(|(_, p)| p.serial);
        let mut first: Option<Vec<(String, Position)>> = None;
        for (s, subscriber) in streams.iter_mut().enumerate() {
            let got = read(&mut subscriber[c], expected.len(), until).await?;
            let mut seen = HashSet::new();
            for (data, _) in &got {
                ensure!(
                    seen.insert(data.clone()),
                    "{channel}: subscriber {s} got {data} twice"
                );
            }
            for pair in got.windows(2) {
                ensure!(
                    pair[1].1.serial == pair[0].1.serial + 1,
                    "{channel}: subscriber {s} got {} after {}",
                    pair[1].1,
                    pair[0].1
                );
            }
            ensure!(
                got == want,
                "{channel}: subscriber {s} did not get the acknowledged messages at their positions"
            );
            match &first {
                Some(first) => ensure!(
                    *first == got,
                    "{channel}: subscribers disagree on the order"
                ),
                None => first = Some(got),
            }
        }
        let order = first.context("at least one subscriber")?;
        for edge in ["e0-", "e1-"] {
            ensure!(
                order.iter().any(|(data, _)| data.starts_with(edge)),
                "{channel}: no message published through {edge}"
            );
        }
    }
    for (c, channel) in CHANNELS.iter().enumerate() {
        let last = publisher
            .publish(*channel, vec![Message::new("last")])
            .await?;
        let position = last.first().context("one result")?.position;
        for subscriber in streams.iter_mut() {
            let got = read(&mut subscriber[c], 1, until).await?;
            ensure!(
                got == [("last".to_owned(), position)],
                "{channel}: after the run got {got:?}"
            );
        }
    }
    Ok(())
}

/// Clients `e{edge}-{n}`: `per_edge` on each edge.
async fn clients(cluster: &Cluster, per_edge: usize) -> anyhow::Result<Vec<(String, Client)>> {
    let mut all = Vec::new();
    for (e, edge) in cluster.edges.iter().enumerate() {
        for n in 0..per_edge {
            let name = format!("e{e}-{n}");
            all.push((name.clone(), client(edge, &name).await?));
        }
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_one_order() -> anyhow::Result<()> {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(2)).await??;
    let until = Instant::now() + TEST_LIMIT;
    let clients = clients(&cluster, 3).await?;
    let handles: Vec<Client> = clients.iter().map(|(_, c)| c.clone()).collect();
    let mut streams = subscribe(&handles).await?;
    let acked = Acked::default();
    let publishers: Vec<_> = clients
        .iter()
        .map(|(name, client)| {
            tokio::spawn(publish_all(
                client.clone(),
                name.clone(),
                30,
                acked.clone(),
                until,
            ))
        })
        .collect();
    for publisher in publishers {
        publisher.await??;
    }
    check_delivery(&handles[0], &mut streams, &acked, until).await?;
    for client in &handles {
        client.close().await;
    }
    drop(cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_killed_and_restarted() -> anyhow::Result<()> {
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::start(2)).await??;
    let until = Instant::now() + TEST_LIMIT;
    let clients = clients(&cluster, 2).await?;
    let handles: Vec<Client> = clients.iter().map(|(_, c)| c.clone()).collect();
    let mut streams = subscribe(&handles).await?;
    let acked = Acked::default();
    const PER_CHANNEL: usize = 40;
    let publishers: Vec<_> = clients
        .iter()
        .map(|(name, client)| {
            tokio::spawn(publish_all(
                client.clone(),
                name.clone(),
                PER_CHANNEL,
                acked.clone(),
                until,
            ))
        })
        .collect();

    // Kill the log once a third of the messages are acknowledged.
    let total = clients.len() * CHANNELS.len() * PER_CHANNEL;
    loop {
        let done: usize = acked
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .values()
            .map(Vec::len)
            .sum();
        if done >= total / 3 {
            break;
        }
        ensure!(
            Instant::now() < until,
            "only {done} of {total} acknowledged before the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = cluster.log.take().context("the log runs")?;
    let addr = log.addr;
    let data_dir = cluster.log_data_dir();
    let restarted = tokio::task::spawn_blocking(move || {
        log.kill();
        std::thread::sleep(Duration::from_millis(500));
        LogProcess::start_at(&data_dir, addr)
    })
    .await??;
    cluster.log = Some(restarted);

    for publisher in publishers {
        publisher.await??;
    }
    let done: usize = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .values()
        .map(Vec::len)
        .sum();
    ensure!(done == total, "{done} of {total} acknowledged");
    // Depends on where the kill fell; for the record.
    eprintln!(
        "{} publishes were retried while the log was down",
        RETRIES.load(Ordering::Relaxed)
    );
    check_delivery(&handles[0], &mut streams, &acked, until).await?;
    for client in &handles {
        client.close().await;
    }
    drop(cluster);
    Ok(())
}
