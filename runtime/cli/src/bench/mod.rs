//! `tern bench`: drive real load and print throughput and latency percentiles.
//!
//! One file per concept: [`log`] is `tern bench log` (flags, the order of runs,
//! ratios); [`workload`] the load and its measurement, shared by every target;
//! [`inproc`], [`quic`] and [`jetstream`] the systems under test; [`child`] the
//! servers started as child processes; [`report`] the output lines.
//!
//! ```text
//! tern bench log ─▶ for each --channels: inproc ─▶ quic ─▶ jetstream ─▶ ratio
//!                                  each: workload::drive(target) ─▶ report::Row
//! ```
//!
//! Every run is bounded (`--timeout`), prints progress on stderr, and stops every
//! process it started. It does not yet drive subscribers, functions or edges.

mod child;
mod inproc;
mod jetstream;
mod log;
mod quic;
mod report;
mod workload;

use clap::{Args, Subcommand};

/// Flags of `tern bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Publish to the ordered log (in-process, over QUIC) and to JetStream; print
    /// msgs/s and per-batch latency percentiles.
    Log(log::LogBenchArgs),
}

/// Runs the chosen benchmark.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Log(args) => log::run(args).await,
    }
}
