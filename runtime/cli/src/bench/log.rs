//! `tern bench log`: publish throughput and latency of the ordered log, and of
//! JetStream under the same workload.
//!
//! For each `--channels` value, runs each selected target once, in this order:
//! `inproc`, `quic`, `jetstream` (and `jetstream-sync` where nats-server has
//! `sync_interval: always`), printing a result line after each; then the Tern-QUIC ÷
//! JetStream throughput ratio. A failed run is reported and the others go on; the
//! command then exits non-zero.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::inproc;
use super::jetstream::{self, SyncMode};
use super::quic::{self, RemoteNode};
use super::report::{Printer, Ratio, Row};
use super::workload::{Measurement, Workload};

/// Flags of `tern bench log`.
#[derive(Debug, Args)]
pub(crate) struct LogBenchArgs {
    /// Messages to have acknowledged per run.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Payload bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    size: usize,
    /// Channels written round-robin; a list (`1,100,10000`) runs each in turn.
    #[arg(
        long,
        value_name = "N[,N...]",
        value_delimiter = ',',
        default_value = "1"
    )]
    channels: Vec<usize>,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Messages per batch (one append call, one publish request, or that many
    /// JetStream publishes awaited together).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Print one JSON object per result line instead of a table.
    #[arg(long)]
    json: bool,
    /// Which system to measure.
    #[arg(long, value_enum, default_value_t = TargetArg::All)]
    target: TargetArg,
    /// Use this running `tern log` node for the quic target instead of starting one.
    #[arg(long, value_name = "HOST:PORT", requires = "cert")]
    addr: Option<SocketAddr>,
    /// The certificate (PEM) to trust for `--addr`.
    #[arg(long, value_name = "PATH", requires = "addr")]
    cert: Option<PathBuf>,
    /// The name the `--addr` node's certificate must carry.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    server_name: String,
    /// Where temporary stores go (the default temporary directory if unset). Put it
    /// on the disk you mean to measure: on tmpfs an fsync costs nothing.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Longest one run (one target, one channel count) may take, setup included.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
}

/// `--target` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetArg {
    /// The embedded store in this process.
    Inproc,
    /// A `tern log` node over QUIC.
    Quic,
    /// NATS JetStream (nats-server).
    Jetstream,
    /// All of them.
    All,
}

impl TargetArg {
    fn includes(self, one: TargetArg) -> bool {
        self == TargetArg::All || self == one
    }
}

/// Runs the benchmark; fails if any run failed.
pub(crate) async fn run(args: LogBenchArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.inflight == 0 || args.batch == 0 {
        bail!("--messages, --inflight and --batch must be at least 1");
    }
    if args.channels.contains(&0) {
        bail!("--channels values must be at least 1");
    }
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let remote = args
        .addr
        .zip(args.cert.clone())
        .map(|(addr, cert)| RemoteNode {
            addr,
            cert,
            server_name: args.server_name.clone(),
        });
    let nats = if args.target.includes(TargetArg::Jetstream) {
        let found = jetstream::Server::find().await?;
        if found.is_none() {
            eprintln!(
                "jetstream: skipped: `{}` is not on PATH (scripts/setup.sh installs Debian's)",
                jetstream::SERVER
            );
        }
        found
    } else {
        None
    };

    let mut printer = Printer::new(args.json);
    printer.note(&format!(
        "tern bench log: {} messages of {} B per run, batches of {}, {} in flight; \
         latency is per batch, from the call to every outcome being durable (acknowledged)",
        args.messages, args.size, args.batch, args.inflight
    ));
    print_durability(&printer, &args, remote.as_ref(), nats.as_ref());

    let mut failures = 0;
    for &channels in &args.channels {
        let workload = Workload {
            messages: args.messages,
            size: args.size,
            channels,
            inflight: args.inflight,
            batch: args.batch,
            timeout: Duration::from_secs(args.timeout),
        };
        let mut quic_rate = None;
        let mut nats_rates = Vec::new();
        if args.target.includes(TargetArg::Inproc) {
            let label = format!("inproc/{channels}ch");
            let deadline = Instant::now() + workload.timeout;
            let result = inproc::run(&label, &workload, &dir, deadline).await;
            failures +=
                report(&mut printer, "inproc", &workload, result, Some(true)).is_none() as usize;
        }
        if args.target.includes(TargetArg::Quic) {
            let label = format!("quic/{channels}ch");
            let deadline = Instant::now() + workload.timeout;
            let result = quic::run(&label, &workload, remote.as_ref(), &dir, deadline).await;
            let fsync = remote.is_none().then_some(true);
            quic_rate = report(&mut printer, "quic", &workload, result, fsync);
            failures += quic_rate.is_none() as usize;
        }
        if let Some(server) = &nats {
            for mode in server.modes() {
                let label = format!("{}/{channels}ch", mode.label());
                let deadline = Instant::now() + workload.timeout;
                let result = jetstream::run(&label, &workload, server, mode, &dir, deadline).await;
                let fsync = Some(mode.fsyncs_before_ack());
                match report(&mut printer, mode.label(), &workload, result, fsync) {
                    Some(rate) => nats_rates.push((mode, rate)),
                    None => failures += 1,
                }
            }
        }
        if let Some(quic_rate) = quic_rate {
            for (mode, nats_rate) in nats_rates {
                let ratio = Ratio {
                    kind: "ratio",
                    channels,
                    numerator: "quic".to_owned(),
                    denominator: mode.label().to_owned(),
                    ratio: quic_rate / nats_rate.max(f64::MIN_POSITIVE),
                };
                printer.ratio(&ratio, quic_rate, nats_rate);
            }
        }
    }
    if failures > 0 {
        bail!("{failures} run(s) failed");
    }
    Ok(())
}

/// Prints the result line (or the error on stderr); returns the msgs/s on success.
fn report(
    printer: &mut Printer,
    target: &str,
    workload: &Workload,
    result: anyhow::Result<Measurement>,
    fsync_before_ack: Option<bool>,
) -> Option<f64> {
    match result {
        Ok(measured) => {
            let row = Row::new(target, workload, &measured, fsync_before_ack);
            printer.row(&row);
            if measured.duplicates > 0 {
                eprintln!(
                    "{target}: warning: {} messages were answered as duplicates",
                    measured.duplicates
                );
            }
            Some(row.msgs_per_sec)
        }
        Err(error) => {
            eprintln!(
                "{target} at {} channels failed: {error:#}",
                workload.channels
            );
            None
        }
    }
}

/// States, for each side, whether an acknowledgement waits for fsync.
fn print_durability(
    printer: &Printer,
    args: &LogBenchArgs,
    remote: Option<&RemoteNode>,
    nats: Option<&jetstream::Server>,
) {
    if printer.is_json() {
        return;
    }
    if args.target.includes(TargetArg::Inproc) {
        printer.note(
            "durability: inproc: fdatasync before acknowledging (fsync = \"always\", \
             one fdatasync per group commit)",
        );
    }
    if args.target.includes(TargetArg::Quic) {
        match remote {
            None => printer.note(
                "durability: quic: fdatasync before acknowledging (the started node runs \
                 the default fsync = \"always\")",
            ),
            Some(node) => printer.note(&format!(
                "durability: quic: as configured on {} (fsync = \"always\" unless its \
                 config says \"interval\")",
                node.addr
            )),
        }
    }
    if let Some(server) = nats {
        for mode in server.modes() {
            let text = match mode {
                SyncMode::Default if server.has_sync_always => format!(
                    "durability: jetstream (nats-server {}): acknowledges BEFORE fsync \
                     (default sync_interval: fsync every 2 min)",
                    server.version
                ),
                SyncMode::Default => format!(
                    "durability: jetstream (nats-server {}): acknowledges BEFORE fsync \
                     (fsync every 2 min; no sync_interval/always option before 2.10)",
                    server.version
                ),
                SyncMode::Always => format!(
                    "durability: jetstream-sync (nats-server {}, sync_interval: always): \
                     fsync before acknowledging",
                    server.version
                ),
            };
            printer.note(&text);
        }
    }
}
