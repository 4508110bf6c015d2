//! `tern dns`: run the authoritative DNS server of DNS failover.
//!
//! Loads the config (`--config FILE`, required; see edge-config/examples/dns.toml;
//! `--listen` and `--report-listen` override the file), answers the edge name with the
//! nearest healthy edges (UDP and TCP) and takes the edges' health reports over HTTP,
//! until SIGINT or SIGTERM. A bad config is refused with every problem listed, like
//! `tern edge` and `tern log`.
//!
//! Prints on stdout, once both listeners are bound:
//!
//! ```text
//! tern dns listening on 127.0.0.1:5353 (udp, tcp); reports on http://127.0.0.1:5380
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use tern_config::load_dns_config;
use tern_dns::DnsService;
use tracing::info;

/// Flags of `tern dns`.
#[derive(Debug, Args)]
pub(crate) struct DnsArgs {
    /// Config file (TOML); see edge-config/examples/dns.toml.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// DNS address, UDP and TCP (IP:PORT; port 0 picks a free one); overrides `listen`.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// Health report address (IP:PORT); overrides `report_listen`.
    #[arg(long, value_name = "HOST:PORT")]
    report_listen: Option<SocketAddr>,
}

/// Runs the DNS server until SIGINT or SIGTERM.
pub(crate) async fn run(args: DnsArgs) -> anyhow::Result<()> {
    let mut config = load_dns_config(&args.config)
        .with_context(|| format!("invalid config {}", args.config.display()))?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(listen) = args.report_listen {
        config.report_listen = listen;
    }
    let service = DnsService::start(&config)
        .await
        .with_context(|| format!("cannot start the DNS server of {}", args.config.display()))?;
    crate::announce(&format!(
        "tern dns listening on {} (udp, tcp); reports on http://{}\n",
        service.dns_addr(),
        service.report_addr()
    ));
    let signal = crate::wait_for_signal().await?;
    info!(signal, "stopping");
    service.shutdown().await;
    Ok(())
}
