//! `tern`: the command-line entry point of every Tern role.
//!
//! Thin by design: it parses arguments, builds the config, sets up logging and
//! signals, and calls a library. Subcommands live one per file:
//!
//! - `tern dev` ([`dev_cmd`]): a log node and an edge in one process, for development.
//! - `tern edge` ([`edge_cmd`]): run an edge node (client WebSocket and HTTP API).
//! - `tern log` ([`log_cmd`]): run a regional ordered-log node.
//! - `tern dns` ([`dns_cmd`]): run the authoritative DNS server that answers the edge
//!   name with the nearest healthy edges.
//! - `tern health` ([`health_cmd`]): run an edge's health loop (probes, BIRD, DNS
//!   reports) in a process alongside it, so that a killed or frozen edge is withdrawn.
//! - `tern bench` ([`bench`]): drive load and print throughput and latency percentiles.
//! - `tern fn` ([`fn_cmd`]): build a message-function crate into a component, scaffold one.
//! - `tern deploy` ([`deploy_cmd`], also `tern fn list|rollback|remove`): deploy a function
//!   to an edge through its admin API ([`http_client`]).
//!
//! Logs go to stderr (filter with `RUST_LOG`, default `info`); stdout carries only the
//! few lines other programs wait for, such as `tern log listening on <addr>`.

mod bench;
mod deploy_cmd;
mod dev_cmd;
mod dev_functions;
mod dns_cmd;
mod edge_cmd;
mod fn_cmd;
mod health_cmd;
mod http_client;
mod log_cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Tern: WebAssembly edge functions for realtime messaging.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a log node and an edge in one process, for development (start here).
    Dev(dev_cmd::DevArgs),
    /// Run an edge node: client WebSocket and HTTP API, linked to a log node.
    Edge(edge_cmd::EdgeArgs),
    /// Run a log node: the durable, ordered log edges publish to and subscribe from.
    Log(log_cmd::LogArgs),
    /// Run the DNS failover server: the edge name answered with the nearest healthy edges.
    Dns(dns_cmd::DnsArgs),
    /// Run an edge's health loop alongside it: probes, BIRD announcements, DNS reports.
    Health(health_cmd::HealthArgs),
    /// Drive load against the log (and JetStream) and print throughput and latency.
    Bench(bench::BenchArgs),
    /// Message functions: build a crate into a WebAssembly component, scaffold one.
    Fn(fn_cmd::FnArgs),
    /// Deploy a function component to an edge (admin API), bound to channel patterns.
    Deploy(deploy_cmd::DeployArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A benchmark's stderr is for its progress lines; the libraries it drives log
    // only warnings unless RUST_LOG says otherwise.
    init_logging(match cli.command {
        Command::Bench(_) | Command::Fn(_) | Command::Deploy(_) => "warn",
        Command::Log(_) | Command::Edge(_) | Command::Dev(_) | Command::Health(_) => "info",
        // hickory-server logs every query at info.
        Command::Dns(_) => "info,hickory_server=warn",
    });
    ignore_sigxfsz();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev_cmd::run(args).await,
            Command::Edge(args) => edge_cmd::run(args).await,
            Command::Log(args) => log_cmd::run(args).await,
            Command::Dns(args) => dns_cmd::run(args).await,
            Command::Health(args) => health_cmd::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Fn(args) => fn_cmd::run(args).await,
            Command::Deploy(args) => deploy_cmd::deploy(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a server's start-up lines on stdout and flushes them. A stdout nobody
/// reads any more (a closed pipe) is logged, not fatal: the server keeps serving.
fn announce(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::warn!(%error, "cannot print the start-up lines on stdout; serving anyway");
    }
}

/// Waits for SIGTERM or SIGINT; returns which came. A second one exits at once.
async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        eprintln!("second signal; exiting now");
        std::process::exit(130);
    });
    Ok(name)
}

fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Past a file size limit (`ulimit -f`) the kernel sends SIGXFSZ, whose default action
/// kills the process; ignored, the write fails with EFBIG instead and the store reports
/// "storage full" to publishers without losing anything already acknowledged.
fn ignore_sigxfsz() {
    // SAFETY: called once at startup, before any thread of ours exists; setting a
    // signal to SIG_IGN installs no handler code, so there is nothing to be
    // async-signal-safe about, and the return value (the old disposition) is unused.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
