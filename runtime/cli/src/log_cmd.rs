//! `tern log`: run a log node.
//!
//! Loads the config (file, then flags on top, then defaults for the rest), creates the
//! development certificate on first start, opens the embedded store, serves the link
//! over QUIC, enforces retention every `store.retention.check_interval`, and on
//! SIGINT or SIGTERM answers what is in flight and closes the store.
//!
//! Prints on stdout, once serving:
//!
//! ```text
//! tern log listening on 127.0.0.1:7400
//! tern log certificate ./.tern/log/tls/cert.pem
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tern_config::{LogNodeConfig, load_log_config};
use tern_log::net::{LogServer, tls};
use tern_log::{EmbeddedStore, LogStore};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// Flags of `tern log`; each overrides the config file.
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Config file (TOML); see edge-config/examples/log.toml. Defaults apply without it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the store's data and the development certificate.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on (IP:PORT; port 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
}

/// Runs the log node until SIGINT or SIGTERM.
pub(crate) async fn run(args: LogArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            load_log_config(path).with_context(|| format!("invalid config {}", path.display()))?
        }
        None => LogNodeConfig::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;

    let cert = tls::ensure_self_signed(&data_dir, &config.listen.ip().to_string())?;
    if cert.created {
        info!(cert = %cert.files.cert.display(), key = %cert.files.key.display(), "created a self-signed certificate");
    }

    let store_config = config.store.clone();
    let open_dir = data_dir.clone();
    let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&open_dir, store_config))
        .await
        .context("store opening task failed")?
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;

    let server = LogServer::bind(config.listen, &cert.files, store.clone(), &config.link)?;
    let addr = server
        .local_addr()
        .context("cannot read the bound address")?;
    info!(%addr, data_dir = %data_dir.display(), "log node serving");
    crate::announce(&format!(
        "tern log listening on {addr}\ntern log certificate {}\n",
        cert.files.cert.display()
    ));

    let retention = tokio::spawn(enforce_retention(
        store,
        config.store.retention.check_interval,
    ));
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    server
        .serve_until(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            info!(signal = name, "stopping");
            // No retention pass may race the store's close.
            retention.abort();
            // A second signal means "now": skip the orderly shutdown.
            tokio::spawn(async move {
                tokio::select! {
                    _ = terminate.recv() => {},
                    _ = interrupt.recv() => {},
                }
                warn!("second signal; exiting without closing the store");
                std::process::exit(130);
            });
        })
        .await?;
    info!("log node stopped");
    Ok(())
}

/// Removes what the retention policy no longer keeps, every `every`.
async fn enforce_retention(store: EmbeddedStore, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: clean up what expired while the node was down.
    loop {
        ticks.tick().await;
        match store.enforce_retention().await {
            Ok(report) if report.segments_removed > 0 => info!(
                segments = report.segments_removed,
                bytes = report.bytes_removed,
                "retention removed old segments"
            ),
            Ok(_) => {}
            Err(error) => warn!(%error, "retention pass failed"),
        }
    }
}
