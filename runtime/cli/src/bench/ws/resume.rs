//! `tern bench resume`: how fast a dropped connection resumes and catches up.
//!
//! Two measurements on one `tern dev` (log and edge in one process, ACK after fsync):
//!
//! - **Latency**: a subscriber attaches a channel, drops its connection, `missed`
//!   messages are published, and it comes back with CONNECT `resume` + the channel's
//!   position (protocol §7.1). Timed from the start of the new TCP connection to the
//!   first replayed MESSAGE, and to the last one ("caught up"); `--rounds` samples per
//!   `--missed` size. Every replay is checked: each missed message once, in order.
//! - **Storm**: `--storm-clients` subscribers over `--storm-channels` channels drop
//!   at once, `--storm-missed` messages per channel are published, and every client
//!   resumes at the same moment. Reported: the time until the last one caught up,
//!   per-client catch-up p50/p99, and the CPU time and peak resident memory of the
//!   `tern dev` process over the storm (edge and log together: they share a process).
//!
//! ```text
//!  tern dev ◀── publisher (raw WebSocket, PUBLISH + ACK)
//!     ▲
//!     └── subscriber: CONNECT ─▶ ATTACH ─▶ drop ─▶ (missed published) ─▶ CONNECT{resume, channels} ─▶ MESSAGE × missed
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use futures::{SinkExt, StreamExt};
use tern_protocol::{
    Attach, ClientFrame, Connect, Format, Message, Position, Publish, ServerFrame,
};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::conn::{self, Ws};
use super::system;
use super::temp_dir;
use super::tern::{self, Edge};
use crate::bench::workload::run_nonce;

/// Longest wait for any single answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages per PUBLISH when filling a channel.
const PUBLISH_BATCH: usize = 100;
/// Storm clients set up at once.
const SETUP_PARALLELISM: usize = 256;

/// Flags of `tern bench resume`.
#[derive(Debug, Args)]
pub(crate) struct ResumeBenchArgs {
    /// Resume latency samples per missed-message count.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Messages missed per channel while away, one latency series each.
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    missed: Vec<usize>,
    /// Clients resuming at once in the storm (0: no storm).
    #[arg(long, default_value_t = 5000)]
    storm_clients: usize,
    /// Channels the storm's clients are spread over.
    #[arg(long, default_value_t = 50)]
    storm_channels: usize,
    /// Messages missed per channel in the storm.
    #[arg(long, default_value_t = 20)]
    storm_missed: usize,
    /// Bytes of data per message.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Where `tern dev` keeps its data [default: the system's temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// One JSON record per line on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub(crate) async fn run(args: ResumeBenchArgs) -> anyhow::Result<()> {
    if args.rounds == 0 || args.missed.contains(&0) {
        bail!("--rounds and every --missed must be at least 1");
    }
    if args.storm_clients > 0 && (args.storm_channels == 0 || args.storm_missed == 0) {
        bail!("--storm-channels and --storm-missed must be at least 1 with a storm");
    }
    system::raise_fd_limit(args.storm_clients as u64 + system::SPARE_FDS)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let data = temp_dir(
        &args.dir.clone().unwrap_or_else(std::env::temp_dir),
        "tern-bench-resume-",
    )?;
    eprintln!(
        "resume: starting `tern dev` with its data in {}",
        data.path().display()
    );
    let (child, edge) = tern::start_dev(data.path(), deadline).await?;
    if !args.json {
        println!(
            "tern bench resume: machine: {}; one `tern dev` (log and edge in one process, ACK after fsync), the load generator on the same machine; {} B messages",
            system::machine(),
            args.size
        );
    }
    let outcome = tokio::time::timeout_at(deadline.into(), async {
        let bench = Bench {
            edge: &edge,
            nonce: run_nonce(),
            payload: "x".repeat(args.size),
            json: args.json,
        };
        let mut publisher = bench.connect(None, BTreeMap::new()).await?.0;
        for &missed in &args.missed {
            bench.latency(&mut publisher, missed, args.rounds).await?;
        }
        if args.storm_clients > 0 {
            bench
                .storm(
                    &mut publisher,
                    args.storm_clients,
                    args.storm_channels,
                    args.storm_missed,
                )
                .await?;
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| {
        format!(
            "the benchmark did not finish within --timeout {} s",
            args.timeout
        )
    })
    .and_then(|inner| inner);
    child.conclude(outcome, data).await
}

struct Bench<'a> {
    edge: &'a Edge,
    nonce: u64,
    payload: String,
    json: bool,
}

/// A connection, as the storm and the latency rounds use it.
struct Conn {
    ws: Ws,
    frames: std::collections::VecDeque<ServerFrame>,
    /// The next msg_serial: never reused on a connection, or its id-less messages
    /// would be taken for duplicates.
    next_serial: u64,
}

/// What a subscriber keeps to resume: its connection key and channel position.
struct Away {
    key: String,
    channel: String,
    position: Position,
}

impl Conn {
    async fn send(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        let bytes = tern_protocol::encode(Format::Json, frame);
        let text = String::from_utf8(bytes).context("JSON frames are UTF-8")?;
        self.ws.send(WsMessage::text(text)).await.context("send")
    }

    async fn next(&mut self) -> anyhow::Result<ServerFrame> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(frame);
            }
            let message = tokio::time::timeout(ANSWER_TIMEOUT, self.ws.next())
                .await
                .context("no frame from the edge in time")?
                .context("the edge closed the connection")?
                .context("reading from the edge")?;
            let bytes = match message {
                WsMessage::Text(text) => text.as_bytes().to_vec(),
                WsMessage::Binary(bytes) => bytes.to_vec(),
                _ => continue,
            };
            for frame in tern_protocol::decode::<ServerFrame>(Format::Json, &bytes)? {
                self.frames.push_back(frame?);
            }
        }
    }

    /// The next frame that `pick` accepts; heartbeats are skipped, anything else fails.
    async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&ServerFrame) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            let frame = self.next().await?;
            if let Some(found) = pick(&frame) {
                return Ok(found);
            }
            match frame {
                ServerFrame::Heartbeat(_) => {}
                other => bail!("expected {what}, got {other:?}"),
            }
        }
    }
}

impl Bench<'_> {
    /// Opens a connection and says CONNECT (resuming with `resume`, attaching
    /// `channels`); returns it with its connection key and whether it resumed.
    async fn connect(
        &self,
        resume: Option<String>,
        channels: BTreeMap<String, Position>,
    ) -> anyhow::Result<(Conn, String, bool)> {
        let addr = self.edge.url.resolve().await?;
        let ws = conn::open(addr, &self.edge.url, Some("tern.v1.json")).await?;
        let mut conn = Conn {
            ws,
            frames: Default::default(),
            next_serial: 0,
        };
        conn.send(&ClientFrame::Connect(Connect {
            key: Some(self.edge.key.clone()),
            resume,
            channels,
            ..Connect::default()
        }))
        .await?;
        let (key, resumed) = conn
            .expect("CONNECTED", |frame| match frame {
                ServerFrame::Connected(c) => Some((c.connection_key.clone(), c.resumed)),
                _ => None,
            })
            .await?;
        Ok((conn, key, resumed))
    }

    /// Connects, attaches `channel` and drops the connection: what it needs to resume.
    async fn attach_and_leave(&self, channel: &str) -> anyhow::Result<Away> {
        let (mut conn, key, _) = self.connect(None, BTreeMap::new()).await?;
        conn.send(&ClientFrame::Attach(Attach {
            channel: channel.to_owned(),
            ..Attach::default()
        }))
        .await?;
        let position = conn
            .expect("ATTACHED", |frame| match frame {
                ServerFrame::Attached(a) => Some(a.position.unwrap_or(Position::BEFORE_FIRST)),
                _ => None,
            })
            .await?;
        drop(conn);
        Ok(Away {
            key,
            channel: channel.to_owned(),
            position,
        })
    }

    /// Publishes `count` messages on `channel` and waits for every ACK.
    async fn fill(&self, publisher: &mut Conn, channel: &str, count: usize) -> anyhow::Result<()> {
        let mut left = count;
        while left > 0 {
            let n = left.min(PUBLISH_BATCH);
            let serial = publisher.next_serial;
            publisher.next_serial += 1;
            publisher
                .send(&ClientFrame::Publish(Publish {
                    msg_serial: serial,
                    channel: channel.to_owned(),
                    messages: (0..n)
                        .map(|_| Message::new(self.payload.as_str()))
                        .collect(),
                }))
                .await?;
            publisher
                .expect("ACK", |frame| match frame {
                    ServerFrame::Ack(a) if a.msg_serial == serial => Some(()),
                    _ => None,
                })
                .await?;
            left -= n;
        }
        Ok(())
    }

    /// Resumes `away` and reads its `missed` messages: (time to the first, to the
    /// last), from the start of the new connection.
    async fn resume(&self, away: Away, missed: usize) -> anyhow::Result<(Duration, Duration)> {
        let started = Instant::now();
        let channels = [(away.channel.clone(), away.position)]
            .into_iter()
            .collect();
        let (mut conn, _, resumed) = self.connect(Some(away.key), channels).await?;
        ensure!(resumed, "the edge did not resume the connection");
        conn.expect("ATTACHED", |frame| match frame {
            ServerFrame::Attached(a) if a.resumed => Some(()),
            _ => None,
        })
        .await?;
        let mut first = None;
        for n in 1..=missed as u64 {
            let position = conn
                .expect("MESSAGE", |frame| match frame {
                    ServerFrame::Message(m) => Some(m.position),
                    _ => None,
                })
                .await?;
            ensure!(
                position.serial == away.position.serial + n,
                "replay out of order: got {position} after {}",
                away.position
            );
            first.get_or_insert_with(|| started.elapsed());
        }
        Ok((first.unwrap_or_default(), started.elapsed()))
    }

    async fn latency(
        &self,
        publisher: &mut Conn,
        missed: usize,
        rounds: usize,
    ) -> anyhow::Result<()> {
        eprintln!("resume: {rounds} rounds with {missed} missed messages");
        let channel = format!("bench-resume-{:x}-{missed}", self.nonce);
        let (mut firsts, mut alls) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let away = self.attach_and_leave(&channel).await?;
            self.fill(publisher, &channel, missed).await?;
            let (first, all) = self.resume(away, missed).await?;
            firsts.push(first);
            alls.push(all);
        }
        let (first_50, first_99) = (percentile(&mut firsts, 0.50), percentile(&mut firsts, 0.99));
        let (all_50, all_99) = (percentile(&mut alls, 0.50), percentile(&mut alls, 0.99));
        if self.json {
            println!(
                "{}",
                serde_json::json!({"kind": "latency", "missed": missed, "rounds": rounds,
                    "first_p50_ms": millis(first_50), "first_p99_ms": millis(first_99),
                    "caught_up_p50_ms": millis(all_50), "caught_up_p99_ms": millis(all_99)})
            );
        } else {
            println!(
                "resume latency, {missed} missed: reconnect to first replayed message p50 {} p99 {}; to caught up p50 {} p99 {} ({rounds} rounds)",
                ms(first_50),
                ms(first_99),
                ms(all_50),
                ms(all_99),
            );
        }
        Ok(())
    }

    async fn storm(
        &self,
        publisher: &mut Conn,
        clients: usize,
        channels: usize,
        missed: usize,
    ) -> anyhow::Result<()> {
        eprintln!("resume: storm: setting up {clients} clients on {channels} channels");
        let names: Vec<String> = (0..channels)
            .map(|i| format!("bench-storm-{:x}-{i}", self.nonce))
            .collect();
        let gate = Arc::new(Semaphore::new(SETUP_PARALLELISM));
        let mut setups = Vec::with_capacity(clients);
        for i in 0..clients {
            let gate = Arc::clone(&gate);
            let channel = names[i % channels].clone();
            setups.push(async move {
                let _permit = gate.acquire().await.context("setup gate")?;
                self.attach_and_leave(&channel).await
            });
        }
        let aways: Vec<Away> = futures::future::try_join_all(setups).await?;
        for name in &names {
            self.fill(publisher, name, missed).await?;
        }
        let pid = self.edge.pid.context("the tern dev process id")?;
        let cpu_before = cpu_seconds(pid)?;
        let rss_before = system::vm_rss_kib(pid)?;
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
        let sampler = {
            let peak = Arc::clone(&peak);
            tokio::spawn(async move {
                loop {
                    if let Ok(rss) = system::vm_rss_kib(pid) {
                        peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        eprintln!("resume: storm: {clients} clients resume at once");
        let started = Instant::now();
        let resumes = aways.into_iter().map(|away| self.resume(away, missed));
        let results = futures::future::try_join_all(resumes).await;
        let took = started.elapsed();
        sampler.abort();
        let mut caught_up: Vec<Duration> = results?.into_iter().map(|(_, all)| all).collect();
        let cpu = cpu_seconds(pid)? - cpu_before;
        let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        let (p50, p99) = (
            percentile(&mut caught_up, 0.50),
            percentile(&mut caught_up, 0.99),
        );
        if self.json {
            println!(
                "{}",
                serde_json::json!({"kind": "storm", "clients": clients, "channels": channels,
                    "missed": missed, "all_caught_up_ms": millis(took),
                    "caught_up_p50_ms": millis(p50), "caught_up_p99_ms": millis(p99),
                    "server_cpu_s": cpu, "rss_before_kib": rss_before, "rss_peak_kib": peak})
            );
            return Ok(());
        }
        println!(
            "resume storm: {clients} clients on {channels} channels, {missed} missed per channel: all caught up in {}; per client p50 {} p99 {}; tern dev (edge + log) used {cpu:.2} s of CPU ({:.0} % of one core over the storm), RSS {} MiB before, peak {} MiB",
            ms(took),
            ms(p50),
            ms(p99),
            100.0 * cpu / took.as_secs_f64().max(1e-9),
            rss_before / 1024,
            peak / 1024,
        );
        Ok(())
    }
}

/// User + system CPU time of process `pid`, in seconds (from /proc/PID/stat).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / clock_ticks_per_second())
        .with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line, in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; the fields after it follow ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Linux's USER_HZ: 100 on every architecture this runs on.
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// The `q` quantile of `samples` (nearest rank).
fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", millis(d))
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_past_a_command_name_with_spaces() {
        let stat = "4242 (tern dev (x)) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 9 0 100 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut samples, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&mut samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
    }
}
