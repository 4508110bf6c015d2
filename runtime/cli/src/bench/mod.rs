//! `tern bench`: drive real load and print throughput and latency percentiles.
//!
//! One file per concept: [`log`] is `tern bench log` (flags, the order of runs,
//! ratios); [`workload`] the load and its measurement, shared by every target;
//! [`inproc`], [`quic`] and [`jetstream`] the systems under test; [`child`] the
//! servers started as child processes; [`report`] the output lines. [`ws`] is
//! `tern bench ws` (WebSocket subscribers and publishers against an edge and
//! nats-server), a module of its own that reuses [`child`] and [`jetstream`].
//!
//! ```text
//! tern bench log ─▶ for each --channels: inproc ─▶ quic ─▶ jetstream ─▶ ratio
//!                                  each: workload::drive(target) ─▶ report::Row
//! tern bench ws  ─▶ tern (tern dev or --url) ─▶ nats (WebSocket) ─▶ ratios
//! tern bench functions ─▶ tern dev ─▶ rounds of [none, pass-through, profanity] ─▶ ratios
//!                      ─▶ a live function swap under load
//! tern bench resume ─▶ tern dev, or tern log + tern edge (--topology split)
//!                   ─▶ resume latency per missed count ─▶ a resume storm
//! ```
//!
//! Every run is bounded (`--timeout`), prints progress on stderr, and stops every
//! process it started. `tern bench functions` lives in [`ws`] (`ws/functions.rs`): it
//! drives the same WebSocket load.

mod child;
mod inproc;
mod jetstream;
mod log;
mod quic;
mod report;
mod workload;
mod ws;

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
    /// Drive WebSocket subscribers and publishers against an edge (and nats-server);
    /// print deliveries/s, publish -> deliver latency percentiles, memory per
    /// idle connection.
    Ws(ws::WsBenchArgs),
    /// Publish throughput through one edge with no function, the pass-through and the
    /// profanity filter at ingress (same run, ratios), then a live function swap under
    /// load: deploy time and messages lost.
    Functions(ws::functions::FnBenchArgs),
    /// Resume latency (reconnect to the first replayed message, and to caught up)
    /// with 10 and 1,000 missed messages, then a storm of clients resuming at once:
    /// time until all caught up, CPU and memory of the server (`--topology split`: a
    /// `tern log` and a `tern edge` process, measured apart).
    Resume(ws::resume::ResumeBenchArgs),
}

/// Runs the chosen benchmark.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Log(args) => log::run(args).await,
        BenchCommand::Ws(args) => ws::run(args).await,
        BenchCommand::Functions(args) => ws::functions::run(args).await,
        BenchCommand::Resume(args) => ws::resume::run(args).await,
    }
}
