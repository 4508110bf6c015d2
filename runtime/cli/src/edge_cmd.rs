//! `tern edge`: run an edge node.
//!
//! Loads the config (`--config FILE`, required; `--listen` overrides `[edge] listen`),
//! starts the edge (it refuses to start without `log.ca`), and on SIGINT or SIGTERM
//! tells every client to reconnect elsewhere, waits briefly for them to go, and exits
//! 0.
//!
//! With `[health] enabled` the edge runs its health loop (tern-health: probes,
//! rise/fall, BIRD, reports to `tern dns`; `tern_health_*` on `/metrics`), and a
//! signal first takes it out of rotation: the state goes `disabled`, BIRD withdraws
//! the anycast prefix and every `tern dns` hears `disabled`; only then are clients
//! sent elsewhere, waited for up to `health.drain_timeout` (publishes in flight are
//! answered first), and the process exits. The drain file does the same without the
//! exit: an operator takes a site out of rotation with it, and the site comes back
//! (rising again) when the file is removed.
//!
//! Prints on stdout, once listening (the link to the log may still be coming up;
//! `/readyz` says when it is):
//!
//! ```text
//! tern edge listening on http://127.0.0.1:8080
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use tern_config::load_edge_config;
use tern_edge::Edge;
use tracing::info;

/// Flags of `tern edge`.
#[derive(Debug, Args)]
pub(crate) struct EdgeArgs {
    /// Config file (TOML); see edge-config/examples/edge.toml.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Address to listen on (IP:PORT; port 0 picks a free one); overrides the config.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
}

/// Runs the edge until SIGINT or SIGTERM.
pub(crate) async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    let mut config = load_edge_config(&args.config)
        .with_context(|| format!("invalid config {}", args.config.display()))?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let edge = Edge::start(config)
        .await
        .with_context(|| format!("cannot start the edge of {}", args.config.display()))?;
    crate::announce(&format!(
        "tern edge listening on http://{}\n",
        edge.local_addr()
    ));
    let signal = crate::wait_for_signal().await?;
    info!(signal, "stopping");
    edge.shutdown().await;
    Ok(())
}
