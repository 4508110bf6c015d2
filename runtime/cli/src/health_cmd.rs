//! `tern health`: run an edge's health loop in a process of its own, alongside the
//! edge, the way ExaBGP's healthcheck watches a service.
//!
//! Loads the edge's config (`--config FILE`, the same file as `tern edge`; its
//! `[health]` must say `enabled = true` and `runner = "tern-health"`), then every
//! `interval` probes the edge from outside (a WebSocket handshake and CONNECT on its
//! listener, `/readyz` for the link, `/metrics` for the load, the drain file), counts
//! rise and fall, drives BIRD (`[health.bird]`) and reports to `tern dns`
//! (`[health.dns]`). Because it is not the edge, it withdraws the route when the edge
//! is killed or frozen. An edge that got SIGTERM answers `/readyz` 503 "the edge is
//! shutting down", which this loop takes as a drain: disabled at once.
//!
//! SIGINT or SIGTERM leaves anycast and DNS (disabled, guarded by `min_announcing`)
//! and exits 0: a site nobody watches must not announce. `--metrics HOST:PORT`
//! serves the loop's `tern_health_*` series on `GET /metrics`.
//!
//! Prints on stdout once the loop runs:
//!
//! ```text
//! tern health probing 127.0.0.1:8080 for edge fra-1; metrics on http://127.0.0.1:9464
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use tern_config::load_edge_config;
use tern_health::Alongside;
use tracing::info;

/// Flags of `tern health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// The edge's config file (TOML), the one `tern edge` runs with; its `[health]`
    /// must have `runner = "tern-health"`.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The edge's listener (IP:PORT), when `tern edge` ran with `--listen`; overrides
    /// `[edge] listen`.
    #[arg(long, value_name = "HOST:PORT")]
    edge: Option<SocketAddr>,
    /// Serve the loop's metrics on GET /metrics at this address (port 0 picks one).
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<SocketAddr>,
}

/// Runs the loop until SIGINT or SIGTERM, then leaves anycast and DNS.
pub(crate) async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let mut config = load_edge_config(&args.config)
        .with_context(|| format!("invalid config {}", args.config.display()))?;
    if let Some(edge) = args.edge {
        config.listen = edge;
    }
    let alongside = Alongside::start(&config, args.metrics)
        .await
        .with_context(|| format!("cannot run the health loop of {}", args.config.display()))?;
    let metrics = alongside
        .metrics_addr()
        .map(|addr| format!("; metrics on http://{addr}"))
        .unwrap_or_default();
    crate::announce(&format!(
        "tern health probing {} for edge {}{metrics}\n",
        config.listen, config.name
    ));
    let signal = crate::wait_for_signal().await?;
    info!(signal, "leaving anycast and DNS, then stopping");
    alongside.leave().await;
    Ok(())
}
