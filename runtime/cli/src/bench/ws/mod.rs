//! `tern bench ws`: WebSocket connections against an edge — deliveries per second,
//! publish → deliver latency percentiles, memory per idle connection — and the same
//! workload against nats-server over WebSocket, with Tern ÷ NATS ratios.
//!
//! ```text
//! tern bench ws ─▶ plan (--scenario preset, flags override) ─▶ raise RLIMIT_NOFILE
//!   ├─ tern: tern dev child (or --url) ─▶ load::drive_pubsub | drive_idle ─▶ row
//!   ├─ nats: nats-server -c (websocket block) ─▶ the same driver ─▶ row
//!   └─ ratios tern ÷ nats
//! ```
//!
//! One file per concept: [`load`] the workload, windows and driver shared by both
//! targets; [`tern`] and [`nats`] the two protocols; [`conn`] the WebSocket
//! connection; [`system`] file-descriptor limits and resident memory; [`report`]
//! the output. The load runs on a runtime of its own (`--threads`), apart from the
//! one watching the servers. Every run is bounded (`--timeout`), prints progress on
//! stderr and stops every process it started.

mod conn;
pub(super) mod functions;
mod load;
mod nats;
mod report;
pub(super) mod resume;
mod system;
mod tern;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use tern_protocol::Format;

use super::jetstream;
use super::workload::run_nonce;
use load::{Mode, Plan, Run};
use report::{IdleRow, Printer, PubSubRow, Ratio, RowLabels};
use system::SPARE_FDS;

/// How long idle connections sit before the server's memory is read again.
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// Flags of `tern bench ws`.
#[derive(Debug, Args)]
pub(crate) struct WsBenchArgs {
    /// Which server to measure.
    #[arg(long, value_enum, default_value_t = TargetArg::Both)]
    target: TargetArg,
    /// A running Tern edge (`http://HOST:PORT` or `ws://HOST:PORT/v1/ws`); without
    /// it the benchmark starts `tern dev` on a free port with temporary data.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// API key (`app.keyid:secret`) for the edge; needed with --url (a started
    /// `tern dev` prints its own).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Process id of the --url edge, to read its resident memory (idle scenario).
    #[arg(long, value_name = "PID", requires = "url")]
    pid: Option<u32>,
    /// A preset workload: `fanout` (1 channel, 2,000 subscribers, 100-byte
    /// messages, as fast as the windows allow), `latency` (100 channels × 10
    /// subscribers, 10 publishers, 10,000 publishes/s in total), `idle` (20,000
    /// connections that only keep their session; reports memory per connection).
    /// Flags given explicitly override the preset.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,
    /// Subscriber connections (with --scenario idle: idle connections) [default: 10].
    #[arg(long, visible_alias = "connections", value_name = "N")]
    subscribers: Option<usize>,
    /// Channels; subscriber i subscribes to channel i mod N [default: 1].
    #[arg(long, value_name = "N")]
    channels: Option<usize>,
    /// Publisher connections, each publishing round-robin over its share of the
    /// channels [default: 1].
    #[arg(long, value_name = "N")]
    publishers: Option<usize>,
    /// Publishes per second over all publishers, paced; 0 = as fast as the windows
    /// allow [default: 0].
    #[arg(long, value_name = "MSGS_PER_SEC")]
    rate: Option<f64>,
    /// Payload bytes per message (at least 45: the payload carries a send stamp)
    /// [default: 100].
    #[arg(long, value_name = "BYTES")]
    size: Option<usize>,
    /// Seconds of publishing [default: 10, unless --messages is given].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Messages to publish in total, split among publishers.
    #[arg(long, value_name = "N")]
    messages: Option<u64>,
    /// Tern encoding.
    #[arg(long, value_enum, default_value_t = FormatArg::Json)]
    format: FormatArg,
    /// Publishes awaiting acknowledgement per publisher (Tern: ACK, capped by the
    /// edge's max_inflight_publishes; NATS: the PONG after each PUB).
    #[arg(long, value_name = "N", default_value_t = 64)]
    inflight: usize,
    /// Messages per publisher published but not yet delivered to every subscriber;
    /// keeps fan-out from piling up in the server's queues.
    #[arg(long, value_name = "N", default_value_t = 256)]
    window: usize,
    /// Decode every delivered frame in full and check it (Tern: channel and dense
    /// serials; NATS: each publisher's order) instead of only finding its stamp.
    #[arg(long)]
    verify: bool,
    /// Worker threads of the load generator's runtime (1 = a current-thread runtime).
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Where the started servers keep their data (the default temporary directory if
    /// unset). Tern fsyncs before acknowledging: put it on the disk you mean to measure.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Longest one target's run may take, setup included.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
}

/// `--target` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetArg {
    /// A Tern edge.
    Tern,
    /// nats-server over WebSocket, core NATS.
    Nats,
    /// Both, Tern first, then the ratios.
    Both,
}

/// `--scenario` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 1 channel, 2,000 subscribers, 100-byte messages: deliveries/s.
    Fanout,
    /// 100 channels × 10 subscribers, 10,000 publishes/s: latency percentiles.
    Latency,
    /// 20,000 idle connections: resident memory per connection.
    Idle,
}

impl Scenario {
    fn name(scenario: Option<Scenario>) -> &'static str {
        match scenario {
            None => "custom",
            Some(Scenario::Fanout) => "fanout",
            Some(Scenario::Latency) => "latency",
            Some(Scenario::Idle) => "idle",
        }
    }
}

/// `--format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// `tern.v1.json`.
    Json,
    /// `tern.v1.msgpack`.
    Msgpack,
}

impl FormatArg {
    fn format(self) -> Format {
        match self {
            FormatArg::Json => Format::Json,
            FormatArg::Msgpack => Format::MsgPack,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FormatArg::Json => "json",
            FormatArg::Msgpack => "msgpack",
        }
    }
}

/// The figures a preset sets (flags override each).
struct Preset {
    mode: Mode,
    connections: usize,
    channels: usize,
    publishers: usize,
    rate: f64,
    size: usize,
    duration_secs: f64,
}

fn preset(scenario: Option<Scenario>) -> Preset {
    let custom = Preset {
        mode: Mode::PubSub,
        connections: 10,
        channels: 1,
        publishers: 1,
        rate: 0.0,
        size: 100,
        duration_secs: 10.0,
    };
    match scenario {
        None => custom,
        Some(Scenario::Fanout) => Preset {
            connections: 2_000,
            ..custom
        },
        Some(Scenario::Latency) => Preset {
            connections: 1_000,
            channels: 100,
            publishers: 10,
            rate: 10_000.0,
            ..custom
        },
        Some(Scenario::Idle) => Preset {
            mode: Mode::Idle,
            connections: 20_000,
            publishers: 0,
            ..custom
        },
    }
}

/// The plan the flags and the preset make; checked.
fn plan(args: &WsBenchArgs) -> anyhow::Result<Plan> {
    let preset = preset(args.scenario);
    let messages = args.messages;
    let duration_secs = match (args.duration, messages) {
        (Some(secs), _) => Some(secs),
        (None, Some(_)) => None,
        (None, None) => Some(preset.duration_secs),
    };
    let plan = Plan {
        mode: preset.mode,
        connections: args.subscribers.unwrap_or(preset.connections),
        channels: args.channels.unwrap_or(preset.channels),
        publishers: match preset.mode {
            Mode::PubSub => args.publishers.unwrap_or(preset.publishers),
            Mode::Idle => 0,
        },
        size: args.size.unwrap_or(preset.size),
        rate: args.rate.unwrap_or(preset.rate),
        messages,
        duration: duration_secs
            .map(|secs| {
                Duration::try_from_secs_f64(secs).context("--duration must be a positive number")
            })
            .transpose()?,
        inflight: args.inflight,
        window: args.window,
    };
    if plan.connections == 0 || plan.channels == 0 {
        bail!("--subscribers and --channels must be at least 1");
    }
    if plan.mode == Mode::PubSub {
        if plan.publishers == 0 || plan.inflight == 0 || plan.window == 0 {
            bail!("--publishers, --inflight and --window must be at least 1");
        }
        if plan.size < load::STAMP_LEN {
            bail!(
                "--size must be at least {} bytes: every payload carries a send stamp",
                load::STAMP_LEN
            );
        }
        if !plan.rate.is_finite() || plan.rate < 0.0 {
            bail!("--rate must be 0 (unpaced) or a positive number of messages per second");
        }
        if plan.messages == Some(0) || plan.duration.is_some_and(|d| d.is_zero()) {
            bail!("--messages and --duration must be more than 0");
        }
    }
    Ok(plan)
}

/// Runs the benchmark; fails if a run failed or Tern lost or repeated a delivery.
pub(crate) async fn run(args: WsBenchArgs) -> anyhow::Result<()> {
    let mut plan = plan(&args)?;
    if args.url.is_some() && args.key.is_none() && args.target != TargetArg::Nats {
        bail!("--url needs --key (an API key the edge accepts)");
    }
    fit_fd_limit(&mut plan, args.subscribers.is_some())?;
    let nats_server = if args.target == TargetArg::Tern {
        None
    } else {
        match jetstream::Server::find().await? {
            Some(server) => Some(server),
            None if args.target == TargetArg::Nats => bail!(
                "`{}` is not on PATH (scripts/setup.sh installs Debian's)",
                jetstream::SERVER
            ),
            None => {
                eprintln!(
                    "nats: skipped: `{}` is not on PATH (scripts/setup.sh installs Debian's)",
                    jetstream::SERVER
                );
                None
            }
        }
    };
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scenario = Scenario::name(args.scenario);
    let mut printer = Printer::new(args.json);
    describe(&printer, &args, &plan, scenario, nats_server.as_ref());

    let mut failed = Vec::new();
    let mut tern_result = None;
    if args.target != TargetArg::Nats {
        let labels = RowLabels {
            target: "tern",
            scenario,
            format: args.format.name(),
            ack_means: "fsync",
            positions: true,
        };
        match run_tern(&args, &plan, &dir).await {
            Ok(measured) => {
                let outcome = measured.print(&mut printer, labels, &plan);
                if let Some(problem) = &outcome.problem {
                    failed.push(problem.clone());
                }
                tern_result = Some(outcome);
            }
            Err(error) => {
                eprintln!("tern: run failed: {error:#}");
                failed.push("tern: run failed".to_owned());
            }
        }
    }
    let mut nats_result = None;
    if let Some(server) = &nats_server {
        let labels = RowLabels {
            target: "nats",
            scenario,
            format: "nats",
            ack_means: "routed",
            positions: false,
        };
        match run_nats(&args, &plan, server, &dir).await {
            Ok(measured) => {
                let outcome = measured.print(&mut printer, labels, &plan);
                if let Some(problem) = &outcome.problem {
                    // Core NATS may drop messages by design: worth saying, not a failure.
                    eprintln!("nats: warning: {problem}");
                }
                nats_result = Some(outcome);
            }
            Err(error) => {
                eprintln!("nats: run failed: {error:#}");
                failed.push("nats: run failed".to_owned());
            }
        }
    }
    if let (Some(tern), Some(nats)) = (&tern_result, &nats_result) {
        for ratio in ratios(tern, nats) {
            printer.ratio(&ratio);
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// Raises RLIMIT_NOFILE for the connections (servers started later inherit it).
/// When it cannot be raised far enough, the idle preset is cut down to what fits
/// and says so; an explicit count is an error.
fn fit_fd_limit(plan: &mut Plan, explicit_count: bool) -> anyhow::Result<()> {
    let before = system::fd_limit()?;
    let needed = |plan: &Plan| (plan.connections + plan.publishers) as u64 + SPARE_FDS;
    let after = match system::raise_fd_limit(needed(plan)) {
        Ok(after) => after,
        Err(error) if plan.mode == Mode::Idle && !explicit_count => {
            let fits = before.hard.saturating_sub(SPARE_FDS) as usize;
            if fits == 0 {
                return Err(error);
            }
            eprintln!(
                "note: {error:#}; running {fits} idle connections instead of {} (the server's \
                 process is bound by the same limit)",
                plan.connections
            );
            plan.connections = fits;
            system::raise_fd_limit(needed(plan))?
        }
        Err(error) => return Err(error),
    };
    if after.soft > before.soft {
        eprintln!(
            "raised RLIMIT_NOFILE from {} to {} for {} connections (servers started by the \
             benchmark inherit it)",
            before.soft,
            after.soft,
            plan.connections + plan.publishers
        );
    }
    Ok(())
}

/// The lines that say what is measured and what each side's acknowledgement means.
fn describe(
    printer: &Printer,
    args: &WsBenchArgs,
    plan: &Plan,
    scenario: &str,
    nats: Option<&jetstream::Server>,
) {
    match plan.mode {
        Mode::Idle => printer.note(&format!(
            "tern bench ws: scenario {scenario}: {} connections that only keep their session \
             alive; the server's resident memory (VmRSS) before and after",
            plan.connections
        )),
        Mode::PubSub => {
            let bound = match (plan.messages, plan.duration) {
                (Some(messages), Some(d)) => {
                    format!("{messages} messages or {:.1} s", d.as_secs_f64())
                }
                (Some(messages), None) => format!("{messages} messages"),
                (None, Some(d)) => format!("{:.1} s", d.as_secs_f64()),
                (None, None) => "unbounded".to_owned(),
            };
            let rate = if plan.rate > 0.0 {
                format!("{:.0} publishes/s paced", plan.rate)
            } else {
                "unpaced".to_owned()
            };
            printer.note(&format!(
                "tern bench ws: scenario {scenario}: {} subscribers on {} channels, {} \
                 publishers, {} B messages, {rate}, {bound}; per publisher at most {} awaiting \
                 acknowledgement and {} not yet delivered to every subscriber; latency is \
                 publish -> deliver on one clock",
                plan.connections,
                plan.channels,
                plan.publishers,
                plan.size,
                plan.inflight,
                plan.window
            ));
        }
    }
    printer.note(&format!(
        "machine: {}; load generator and servers share it",
        system::machine()
    ));
    if args.target != TargetArg::Nats {
        let edge = match &args.url {
            Some(url) => format!("the edge at {url}"),
            None => "a `tern dev` started for the run (log and edge in one process)".to_owned(),
        };
        printer.note(&format!(
            "tern: {edge}, {} frames; ACK after the log's fsync; deliveries carry positions \
             (one order per channel, resumable)",
            args.format.name()
        ));
    }
    if let Some(server) = nats {
        printer.note(&format!(
            "nats: nats-server {} over its WebSocket listener, core NATS: NOT durable and NOT \
             ordered with positions (nothing is stored, no resume); its \"ack\" here is the PONG \
             to a PING sent after each PUB",
            server.version
        ));
    }
}

/// What a target's run measured.
enum Measured {
    PubSub(load::PubSubMeasurement),
    Idle(load::IdleMeasurement),
}

/// The figures compared across targets, and anything wrong with the run.
struct Outcome {
    deliveries_per_sec: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    bytes_per_connection: Option<f64>,
    problem: Option<String>,
}

impl Measured {
    fn print(&self, printer: &mut Printer, labels: RowLabels, plan: &Plan) -> Outcome {
        match self {
            Measured::PubSub(measured) => {
                let target = labels.target;
                let row = PubSubRow::new(labels, plan, measured);
                printer.pubsub(&row);
                let problem = (row.missing > 0 || row.extra > 0).then(|| {
                    format!(
                        "{target}: {} of {} expected deliveries missing, {} extra",
                        row.missing, row.expected_deliveries, row.extra
                    )
                });
                Outcome {
                    deliveries_per_sec: Some(row.deliveries_per_sec),
                    p50_ms: Some(row.p50_ms),
                    p99_ms: Some(row.p99_ms),
                    bytes_per_connection: None,
                    problem,
                }
            }
            Measured::Idle(measured) => {
                let row = IdleRow::new(labels.target, measured);
                printer.idle(&row);
                Outcome {
                    deliveries_per_sec: None,
                    p50_ms: None,
                    p99_ms: None,
                    bytes_per_connection: row.bytes_per_connection,
                    problem: None,
                }
            }
        }
    }
}

fn ratios(tern: &Outcome, nats: &Outcome) -> Vec<Ratio> {
    let pairs = [
        (
            "deliveries_per_sec",
            tern.deliveries_per_sec,
            nats.deliveries_per_sec,
            true,
        ),
        ("p50_ms", tern.p50_ms, nats.p50_ms, false),
        ("p99_ms", tern.p99_ms, nats.p99_ms, false),
        (
            "bytes_per_connection",
            tern.bytes_per_connection,
            nats.bytes_per_connection,
            false,
        ),
    ];
    pairs
        .into_iter()
        .filter_map(|(metric, tern, nats, higher)| Some(Ratio::new(metric, tern?, nats?, higher)))
        .collect()
}

/// Runs `work` on a runtime of its own with `threads` workers, in a thread of its
/// own, so that the load generator and the code watching the servers do not share
/// one scheduler.
async fn on_load_runtime<T: Send + 'static>(
    threads: usize,
    work: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tern-bench-load".into())
        .spawn(move || {
            let mut builder = if threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(threads);
                builder
            };
            let result = match builder.enable_all().build() {
                Ok(runtime) => runtime.block_on(work),
                Err(error) => Err(error).context("cannot start the load generator's runtime"),
            };
            let _ = tx.send(result);
        })
        .context("cannot start the load generator's thread")?;
    rx.await
        .context("the load generator's thread ended without a result")?
}

/// Runs the plan's workload against `target`, on the load runtime.
async fn measure<T: load::Target>(
    label: &'static str,
    target: T,
    plan: &Plan,
    threads: usize,
    pid: Option<u32>,
    deadline: Instant,
) -> anyhow::Result<Measured> {
    let target = Arc::new(target);
    let run = Run::new(plan.clone());
    match plan.mode {
        Mode::PubSub => on_load_runtime(threads, load::drive_pubsub(label, target, run, deadline))
            .await
            .map(Measured::PubSub),
        Mode::Idle => {
            let rss = move || pid.map(system::vm_rss_kib).transpose();
            let work = load::drive_idle(label, target, run, rss, IDLE_SETTLE, deadline);
            on_load_runtime(threads, work).await.map(Measured::Idle)
        }
    }
}

fn temp_dir(dir: &Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary directory in {}", dir.display()))
}

async fn run_tern(args: &WsBenchArgs, plan: &Plan, dir: &Path) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let nonce = run_nonce();
    let channels = (0..plan.channels)
        .map(|i| format!("bench-{nonce:x}-{i}"))
        .collect();
    let format = args.format.format();
    match &args.url {
        Some(url) => {
            let edge = tern::Edge {
                url: conn::WsUrl::parse(url, tern::WS_PATH)?,
                key: args.key.clone().context("--url needs --key")?,
                pid: args.pid,
            };
            let target =
                tern::TernTarget::new(&edge, format, args.verify, channels, plan.size).await?;
            measure("tern", target, plan, args.threads, edge.pid, deadline).await
        }
        None => {
            let data = temp_dir(dir, "tern-bench-ws-")?;
            eprintln!(
                "tern: starting `tern dev` with its data in {}",
                data.path().display()
            );
            let (child, mut edge) = tern::start_dev(data.path(), deadline).await?;
            if let Some(key) = &args.key {
                edge.key = key.clone();
            }
            let measured = async {
                let target =
                    tern::TernTarget::new(&edge, format, args.verify, channels, plan.size).await?;
                measure("tern", target, plan, args.threads, edge.pid, deadline).await
            }
            .await;
            child.conclude(measured, data).await
        }
    }
}

async fn run_nats(
    args: &WsBenchArgs,
    plan: &Plan,
    server: &jetstream::Server,
    dir: &Path,
) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let nonce = run_nonce();
    let subjects = (0..plan.channels)
        .map(|i| format!("bench.{nonce:x}.{i}"))
        .collect();
    let data = temp_dir(dir, "tern-bench-ws-nats-")?;
    let (child, addr) = nats::start_server(server, data.path(), deadline).await?;
    let pid = child.pid();
    let target = nats::NatsTarget::new(addr, args.verify, subjects, plan.size);
    let measured = measure("nats", target, plan, args.threads, pid, deadline).await;
    child.conclude(measured, data).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: WsBenchArgs,
    }

    fn parse(args: &[&str]) -> WsBenchArgs {
        Cli::try_parse_from(std::iter::once("ws").chain(args.iter().copied()))
            .expect("parses")
            .args
    }

    #[test]
    fn presets_and_overrides() {
        let fanout = plan(&parse(&["--scenario", "fanout"])).expect("valid");
        assert_eq!(
            (fanout.connections, fanout.channels, fanout.size),
            (2_000, 1, 100)
        );
        assert_eq!(fanout.rate, 0.0);

        let latency = plan(&parse(&["--scenario", "latency", "--rate", "500"])).expect("valid");
        assert_eq!((latency.connections, latency.channels), (1_000, 100));
        assert_eq!(latency.rate, 500.0);

        let idle = plan(&parse(&["--scenario", "idle", "--connections", "30"])).expect("valid");
        assert_eq!(idle.mode, Mode::Idle);
        assert_eq!((idle.connections, idle.publishers), (30, 0));

        let counted = plan(&parse(&["--messages", "200"])).expect("valid");
        assert_eq!(counted.messages, Some(200));
        assert_eq!(counted.duration, None);

        for bad in [
            &["--size", "10"][..],
            &["--channels", "0"],
            &["--rate=-1"],
            &["--duration", "0"],
            &["--messages", "0"],
            &["--publishers", "0"],
        ] {
            assert!(plan(&parse(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ratios_pair_only_what_both_measured() {
        let outcome = |dps, p50, bytes| Outcome {
            deliveries_per_sec: dps,
            p50_ms: p50,
            p99_ms: p50,
            bytes_per_connection: bytes,
            problem: None,
        };
        let pairs = ratios(
            &outcome(Some(300.0), Some(1.0), None),
            &outcome(Some(200.0), Some(2.0), None),
        );
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0].ratio, 1.5);
        assert_eq!(pairs[1].ratio, 0.5);
        let idle = ratios(
            &outcome(None, None, Some(4096.0)),
            &outcome(None, None, Some(8192.0)),
        );
        assert_eq!(idle.len(), 1);
        assert_eq!(idle[0].metric, "bytes_per_connection");
    }
}
