//! `tern bench resume`: how fast a dropped connection resumes and catches up.
//!
//! Two measurements, against the servers `--topology` says:
//!
//! - `dev` (the default): one `tern dev`, log and edge in one process;
//! - `split`: a `tern log` and a `tern edge` linked to it over QUIC, two child
//!   processes of this binary on loopback (free ports, temporary data, a fresh API key
//!   and cluster secret), the edge ready once `GET /readyz` answers 200; so the CPU
//!   and memory of the edge and of the log are told apart.
//!
//! Either way ACK comes after fsync, and every process started is killed when the
//! run ends, on an error or a timeout too.
//!
//! - **Latency**: a subscriber attaches a channel, drops its connection, `missed`
//!   messages are published, and it comes back with CONNECT `resume` + the channel's
//!   position (protocol §7.1). Timed from the start of the new TCP connection to the
//!   first replayed MESSAGE, and to the last one ("caught up"); `--rounds` samples per
//!   `--missed` size. Every replay is checked: each missed message once, in order.
//! - **Storm**: `--storm-clients` subscribers over `--storm-channels` channels drop
//!   at once, `--storm-missed` messages per channel are published, and every client
//!   resumes at the same moment. Reported: the time until the last one caught up,
//!   per-client catch-up p50/p99, and for each server process (`tern dev`, or the
//!   edge and the log apart) its CPU time over the storm (utime + stime of
//!   /proc/PID/stat), its resident memory before and its peak during the storm
//!   (VmHWM of /proc/PID/status, reset just before the storm through
//!   /proc/PID/clear_refs; where that reset is refused, VmRSS sampled every 50 ms).
//!
//! With `--json`, one record per line: `{"kind": "latency", "topology", "missed",
//! "rounds", "first_p50_ms", "first_p99_ms", "caught_up_p50_ms", "caught_up_p99_ms"}`
//! per `--missed` count, then `{"kind": "storm", "topology", "clients", "channels",
//! "missed", "all_caught_up_ms", "caught_up_p50_ms", "caught_up_p99_ms"}` with, for
//! each process by role (`dev`, or `edge` and `log`), `ROLE_cpu_s`,
//! `ROLE_rss_before_kib`, `ROLE_rss_peak_kib` and `ROLE_rss_peak_from` (`VmHWM` or
//! `sampled VmRSS`). Progress goes to stderr.
//!
//! ```text
//!  dev:   tern dev ◀─────────────── publisher, subscribers (raw WebSocket, JSON)
//!  split: tern log ◀─QUIC─ tern edge ◀── publisher, subscribers
//!  subscriber: CONNECT ─▶ ATTACH ─▶ drop ─▶ (missed published) ─▶ CONNECT{resume, channels} ─▶ MESSAGE × missed
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::{Args, ValueEnum};
use futures::{SinkExt, StreamExt};
use tempfile::TempDir;
use tern_protocol::{
    Attach, ClientFrame, Connect, Format, Message, Position, Publish, ServerFrame,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::super::child::ChildServer;
use super::conn::{self, Ws};
use super::system;
use super::temp_dir;
use super::tern::{self, Edge, SplitServers};
use crate::bench::workload::run_nonce;

/// Longest wait for any single answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages per PUBLISH when filling a channel.
const PUBLISH_BATCH: usize = 100;
/// Storm clients set up at once.
const SETUP_PARALLELISM: usize = 256;
/// Between two progress lines of a long phase.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Between two samples of a server's resident memory during the storm.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Flags of `tern bench resume`.
#[derive(Debug, Args)]
pub(crate) struct ResumeBenchArgs {
    /// Which servers to start: `dev` (one `tern dev` process) or `split` (a `tern log`
    /// and a `tern edge` process, measured apart).
    #[arg(long, value_enum, default_value_t = Topology::Dev)]
    topology: Topology,
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
    /// Where the servers keep their data (and the edge its config) [default: the
    /// system's temporary directory]. ACK waits for fsync: put it on the disk you mean
    /// to measure.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// One JSON record per line on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// `--topology` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Topology {
    /// One `tern dev`: the log and the edge in one process.
    Dev,
    /// A `tern log` and a `tern edge` linked to it: two processes.
    Split,
}

impl Topology {
    fn name(self) -> &'static str {
        match self {
            Topology::Dev => "dev",
            Topology::Split => "split",
        }
    }
}

/// The server processes of a run, each killed when dropped, with its data and the
/// role it is reported as (`dev`, or `edge` then `log`).
struct Servers {
    processes: Vec<(&'static str, ChildServer, TempDir)>,
}

impl Servers {
    /// Starts what `topology` says with data in fresh directories under `dir`.
    async fn start(
        topology: Topology,
        dir: &Path,
        deadline: Instant,
    ) -> anyhow::Result<(Self, Edge)> {
        match topology {
            Topology::Dev => {
                let data = temp_dir(dir, "tern-bench-resume-")?;
                eprintln!(
                    "resume: starting `tern dev` with its data in {}",
                    data.path().display()
                );
                let (child, edge) = tern::start_dev(data.path(), deadline).await?;
                let processes = vec![("dev", child, data)];
                Ok((Self { processes }, edge))
            }
            Topology::Split => {
                let log_data = temp_dir(dir, "tern-bench-resume-log-")?;
                let edge_data = temp_dir(dir, "tern-bench-resume-edge-")?;
                eprintln!(
                    "resume: starting `tern log` with its data in {} and `tern edge` with its config in {}",
                    log_data.path().display(),
                    edge_data.path().display()
                );
                let (SplitServers { log, edge: child }, edge) =
                    tern::start_split(log_data.path(), edge_data.path(), deadline).await?;
                eprintln!("resume: the edge is ready (linked to the log)");
                let processes = vec![("edge", child, edge_data), ("log", log, log_data)];
                Ok((Self { processes }, edge))
            }
        }
    }

    /// Each process to measure: its role and id.
    fn pids(&self) -> anyhow::Result<Vec<(&'static str, u32)>> {
        self.processes
            .iter()
            .map(|(role, child, _)| {
                let pid = child
                    .pid()
                    .with_context(|| format!("the {role} process has no id"))?;
                Ok((*role, pid))
            })
            .collect()
    }

    /// Stops every process in turn (the edge before its log) and removes its data; a
    /// process that died mid-run is named in the error.
    async fn conclude<T>(self, mut measured: anyhow::Result<T>) -> anyhow::Result<T> {
        for (_, child, data) in self.processes {
            measured = child.conclude(measured, data).await;
        }
        measured
    }
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
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let (servers, edge) = tokio::time::timeout_at(
        deadline.into(),
        Servers::start(args.topology, &dir, deadline),
    )
    .await
    .context("the servers did not start within --timeout")??;
    if !args.json {
        let servers = match args.topology {
            Topology::Dev => "one `tern dev` (log and edge in one process",
            Topology::Split => {
                "a `tern log` and a `tern edge` (two processes, linked over QUIC on loopback"
            }
        };
        println!(
            "tern bench resume: machine: {}; {servers}, ACK after fsync), the load generator on the same machine; {} B messages",
            system::machine(),
            args.size
        );
    }
    let outcome = tokio::time::timeout_at(deadline.into(), async {
        let bench = Bench {
            edge: &edge,
            topology: args.topology,
            processes: servers.pids()?,
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
    servers.conclude(outcome).await
}

struct Bench<'a> {
    edge: &'a Edge,
    topology: Topology,
    /// The server processes measured over the storm, by role.
    processes: Vec<(&'static str, u32)>,
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
                serde_json::json!({"kind": "latency", "topology": self.topology.name(),
                    "missed": missed, "rounds": rounds,
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
        let progress = Progress::start("resume: storm: clients attached and gone", clients);
        let mut setups = Vec::with_capacity(clients);
        for i in 0..clients {
            let gate = Arc::clone(&gate);
            let channel = names[i % channels].clone();
            let progress = &progress;
            setups.push(async move {
                let _permit = gate.acquire().await.context("setup gate")?;
                let away = self.attach_and_leave(&channel).await?;
                progress.tick();
                anyhow::Ok(away)
            });
        }
        let aways: Vec<Away> = futures::future::try_join_all(setups).await?;
        drop(progress);
        eprintln!("resume: storm: publishing {missed} messages on each of {channels} channels");
        for name in &names {
            self.fill(publisher, name, missed).await?;
        }
        let watch = Watch::start(&self.processes)?;
        eprintln!("resume: storm: {clients} clients resume at once");
        let progress = Progress::start("resume: storm: clients caught up", clients);
        let started = Instant::now();
        let resumes = aways.into_iter().map(|away| {
            let progress = &progress;
            async move {
                let resumed = self.resume(away, missed).await?;
                progress.tick();
                anyhow::Ok(resumed)
            }
        });
        let results = futures::future::try_join_all(resumes).await;
        let took = started.elapsed();
        drop(progress);
        let usage = watch.finish()?;
        let mut caught_up: Vec<Duration> = results?.into_iter().map(|(_, all)| all).collect();
        let (p50, p99) = (
            percentile(&mut caught_up, 0.50),
            percentile(&mut caught_up, 0.99),
        );
        if self.json {
            let mut record = serde_json::json!({"kind": "storm",
                "topology": self.topology.name(), "clients": clients, "channels": channels,
                "missed": missed, "all_caught_up_ms": millis(took),
                "caught_up_p50_ms": millis(p50), "caught_up_p99_ms": millis(p99)});
            if let Some(fields) = record.as_object_mut() {
                for used in &usage {
                    used.add_to(fields);
                }
            }
            println!("{record}");
            return Ok(());
        }
        let usage: Vec<String> = usage.iter().map(|used| used.describe(took)).collect();
        println!(
            "resume storm: {clients} clients on {channels} channels, {missed} missed per channel: all caught up in {}; per client p50 {} p99 {}; {}",
            ms(took),
            ms(p50),
            ms(p99),
            usage.join("; "),
        );
        Ok(())
    }
}

/// Counts what a long phase has done and prints `WHAT: N of TOTAL` on stderr every
/// [`PROGRESS_EVERY`] until dropped.
struct Progress {
    done: Arc<AtomicUsize>,
    printer: JoinHandle<()>,
}

impl Progress {
    fn start(what: &'static str, total: usize) -> Self {
        let done = Arc::new(AtomicUsize::new(0));
        let printer = {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(PROGRESS_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    eprintln!("{what}: {} of {total}", done.load(Ordering::Relaxed));
                }
            })
        };
        Self { done, printer }
    }

    fn tick(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.printer.abort();
    }
}

/// The server processes, watched from just before the storm to its end.
struct Watch {
    processes: Vec<Watched>,
    sampler: JoinHandle<()>,
}

/// One process being watched.
struct Watched {
    role: &'static str,
    pid: u32,
    cpu_ticks_before: u64,
    rss_before_kib: u64,
    /// Whether VmHWM was reset at the start (it then holds the peak since).
    hwm_reset: bool,
    /// The largest VmRSS sampled.
    sampled_peak_kib: Arc<AtomicU64>,
}

/// What one process used over the storm.
#[derive(Debug, Clone, PartialEq)]
struct Usage {
    role: &'static str,
    cpu_s: f64,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    /// `VmHWM` or `sampled VmRSS`.
    peak_from: &'static str,
}

impl Watch {
    /// Reads each process's CPU time and memory, resets its peak memory, and samples
    /// its memory until [`Watch::finish`].
    fn start(processes: &[(&'static str, u32)]) -> anyhow::Result<Self> {
        let mut watched = Vec::with_capacity(processes.len());
        for &(role, pid) in processes {
            let rss_before_kib = system::vm_rss_kib(pid)?;
            let hwm_reset = match system::reset_peak_rss(pid) {
                Ok(()) => true,
                Err(error) => {
                    eprintln!(
                        "resume: {role}: {error:#}; its peak memory is sampled every {} ms instead",
                        RSS_SAMPLE_EVERY.as_millis()
                    );
                    false
                }
            };
            watched.push(Watched {
                role,
                pid,
                cpu_ticks_before: cpu_ticks(pid)?,
                rss_before_kib,
                hwm_reset,
                sampled_peak_kib: Arc::new(AtomicU64::new(rss_before_kib)),
            });
        }
        let targets: Vec<(u32, Arc<AtomicU64>)> = watched
            .iter()
            .map(|w| (w.pid, Arc::clone(&w.sampled_peak_kib)))
            .collect();
        let sampler = tokio::spawn(async move {
            loop {
                for (pid, peak) in &targets {
                    if let Ok(rss) = system::vm_rss_kib(*pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(RSS_SAMPLE_EVERY).await;
            }
        });
        Ok(Self {
            processes: watched,
            sampler,
        })
    }

    /// Stops sampling; what each process used since [`Watch::start`].
    fn finish(self) -> anyhow::Result<Vec<Usage>> {
        self.sampler.abort();
        self.processes
            .iter()
            .map(|w| {
                let sampled = w.sampled_peak_kib.load(Ordering::Relaxed);
                let (rss_peak_kib, peak_from) = if w.hwm_reset {
                    (system::vm_hwm_kib(w.pid)?.max(sampled), "VmHWM")
                } else {
                    (sampled, "sampled VmRSS")
                };
                Ok(Usage {
                    role: w.role,
                    cpu_s: cpu_ticks(w.pid)?.saturating_sub(w.cpu_ticks_before) as f64
                        / CLOCK_TICKS_PER_SECOND,
                    rss_before_kib: w.rss_before_kib,
                    rss_peak_kib,
                    peak_from,
                })
            })
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

impl Usage {
    /// `ROLE_cpu_s`, `ROLE_rss_before_kib`, `ROLE_rss_peak_kib`, `ROLE_rss_peak_from`.
    fn add_to(&self, record: &mut serde_json::Map<String, serde_json::Value>) {
        let role = self.role;
        record.insert(format!("{role}_cpu_s"), self.cpu_s.into());
        record.insert(format!("{role}_rss_before_kib"), self.rss_before_kib.into());
        record.insert(format!("{role}_rss_peak_kib"), self.rss_peak_kib.into());
        record.insert(format!("{role}_rss_peak_from"), self.peak_from.into());
    }

    /// `tern edge: 1.23 s of CPU (45 % of one core over the storm), RSS 12.0 MiB
    /// before, peak 30.5 MiB (VmHWM)`.
    fn describe(&self, storm: Duration) -> String {
        let name = match self.role {
            "dev" => "tern dev (edge + log)",
            "edge" => "tern edge",
            "log" => "tern log",
            other => other,
        };
        format!(
            "{name} used {:.2} s of CPU ({:.0} % of one core over the storm), RSS {:.1} MiB before, peak {:.1} MiB ({})",
            self.cpu_s,
            100.0 * self.cpu_s / storm.as_secs_f64().max(1e-9),
            self.rss_before_kib as f64 / 1024.0,
            self.rss_peak_kib as f64 / 1024.0,
            self.peak_from,
        )
    }
}

/// User + system CPU time of process `pid`, in clock ticks (from /proc/PID/stat).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line, in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; the fields after it follow ") ".
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Linux's USER_HZ, the unit of /proc/PID/stat's times (`getconf CLK_TCK`): 100 on
/// every architecture this runs on.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

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
        assert_eq!(parse_cpu_ticks("4242 (tern)"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut samples, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&mut samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
    }
}
