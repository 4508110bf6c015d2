//! [`LogServer`]: the log node's QUIC listener.
//!
//! One task per connection accepts bidirectional streams; one task per stream runs the
//! stream driver (`stream.rs`). Each task runs inside a tracing span carrying the
//! connection id (`conn`) and the stream id (`stream`).
//!
//! Shutdown ([`LogServer::serve_until`]): stop accepting connections, tell every
//! stream (they stop reading, answer what is in flight and send a fatal
//! `ShuttingDown` error), wait for them up to a grace period, close the connections and
//! the endpoint, then close the store.
//!
//! A node killed and restarted on its address and key answers the packets edges
//! still send on connections of its previous run with stateless resets they
//! recognise ([`tls::endpoint_config`]), so they reconnect at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tern_config::LinkServerConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::codes;
use super::stream::{Ended, StreamConfig, serve_stream};
use super::tls::{self, TlsError, TlsFiles};
use crate::store::{LogError, LogStore};

/// How long streams get to answer what is in flight once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long the endpoint waits for closing connections to be acknowledged.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why the server could not start or stop cleanly. Operator problems (address,
/// certificate files) or the store's own failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store failed to close (flush or checkpoint) at shutdown.
    #[error("closing the store failed: {0}")]
    Close(#[from] LogError),
}

/// The log node's link listener, serving one [`LogStore`].
pub struct LogServer<S> {
    endpoint: quinn::Endpoint,
    store: Arc<S>,
    config: Arc<StreamConfig>,
}

impl<S> std::fmt::Debug for LogServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogServer")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: LogStore> LogServer<S> {
    /// Binds `addr` (port 0 picks a free one) with the certificate in `tls`. Must be
    /// called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        tls: &TlsFiles,
        store: S,
        config: &LinkServerConfig,
    ) -> Result<Self, ServerError> {
        let server_config = tls::server_config(tls)?;
        // Endpoint secrets derived from the node's key, so that after a restart edges
        // still on the old connections get stateless resets they recognise.
        let endpoint_config = tls::endpoint_config(tls)?;
        let bind_error = |source| ServerError::Bind { addr, source };
        let socket = std::net::UdpSocket::bind(addr).map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let config = StreamConfig {
            max_frame_bytes: config.max_frame_bytes,
            max_inflight: config.max_inflight_per_stream.max(1),
            queue_frames: config.subscriber_queue_frames.max(2),
            read_batch: config.read_batch.max(1),
        };
        Ok(Self {
            endpoint,
            store: Arc::new(store),
            config: Arc::new(config),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The store served.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Serves until `shutdown` completes, then shuts down in order (see the module
    /// docs) and closes the store.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let next_conn = AtomicU64::new(1);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else {
                        // The endpoint was closed under us; nothing more will come.
                        break;
                    };
                    let id = next_conn.fetch_add(1, Ordering::Relaxed);
                    let remote = incoming.remote_address();
                    let span = info_span!("conn", conn = id, %remote);
                    connections.spawn(
                        serve_connection(
                            incoming,
                            Arc::clone(&self.store),
                            Arc::clone(&self.config),
                            stop_rx.clone(),
                        )
                        .instrument(span),
                    );
                }
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = done {
                        error!(error = %e, "connection task failed");
                    }
                }
            }
        }

        info!(
            connections = connections.len(),
            "shutting down: answering requests in flight"
        );
        // Refuse new connections while the old ones drain.
        self.endpoint.set_server_config(None);
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(done) = connections.join_next().await {
                if let Err(e) = done {
                    error!(error = %e, "connection task failed");
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                connections = connections.len(),
                "connections still busy after the grace period; closing them"
            );
            connections.shutdown().await;
        }
        self.endpoint
            .close(codes::SHUTTING_DOWN, b"log node shutting down");
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
        self.store.close().await?;
        info!("log server stopped; store closed");
        Ok(())
    }
}

/// Runs one connection: handshake, then one task per bidirectional stream.
async fn serve_connection<S: LogStore>(
    incoming: quinn::Incoming,
    store: Arc<S>,
    config: Arc<StreamConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            info!(%error, "handshake failed");
            return;
        }
    };
    info!("connection accepted");
    let mut streams = JoinSet::new();
    let closed_by_peer = loop {
        tokio::select! {
            _ = shutdown.changed() => break None,
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let span = info_span!("stream", stream = %send.id());
                    streams.spawn(
                        serve_stream(
                            Arc::clone(&store),
                            Arc::clone(&config),
                            send,
                            recv,
                            shutdown.clone(),
                        )
                        .instrument(span),
                    );
                }
                Err(error) => break Some(error),
            },
            Some(done) = streams.join_next(), if !streams.is_empty() => log_stream_end(done),
        }
    };
    // At shutdown the streams were told too: wait for them to answer and close.
    while let Some(done) = streams.join_next().await {
        log_stream_end(done);
    }
    match closed_by_peer {
        Some(error) => info!(%error, "connection closed"),
        None => {
            connection.close(codes::SHUTTING_DOWN, b"log node shutting down");
            info!("connection closed for shutdown");
        }
    }
}

fn log_stream_end(done: Result<Ended, tokio::task::JoinError>) {
    match done {
        Ok(Ended::SlowConsumer) => info!("stream ended: slow consumer dropped"),
        Ok(ended) => debug!(?ended, "stream ended"),
        Err(e) => error!(error = %e, "stream task failed"),
    }
}
