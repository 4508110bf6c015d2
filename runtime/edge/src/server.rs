//! [`Edge::start`]: binds the listener, starts the link and serves HTTP and WebSocket
//! on one port until [`EdgeHandle::shutdown`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tern_config::{EdgeConfig, HealthRunner};
use tern_connkey::Signer;
use tern_health::{HealthDriver, HealthMetrics, HealthStatus, InvalidSettings, LagMonitor};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::functions::{self, Functions};
use crate::health::HealthTarget;
use crate::http;
use crate::hub::{Hub, HubConfig};
use crate::link::{self, LinkHandle, PublishJob};
use crate::metrics::Metrics;

/// How long [`EdgeHandle::shutdown`] waits for clients to take their DISCONNECTED,
/// on top of `log.request_timeout` (their publishes in flight are answered first),
/// when the health loop is off; with it, `health.drain_timeout` says.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the edge could not start (the operator's config or environment).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// `log.ca` is not set: the link to the log is TLS and needs a CA to trust.
    #[error(
        "log.ca is not set: the edge needs the CA certificate of its log node (for `tern log`, its tls/cert.pem)"
    )]
    MissingCa,
    /// The CA file cannot be used.
    #[error("log.ca {path}: {reason}")]
    BadCa {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Message functions could not be set up (the host, or a static function).
    #[error(transparent)]
    Functions(#[from] crate::functions::FunctionsError),
    /// The `[health]` settings cannot drive the health loop (tern-config checks
    /// them, so only a config built by hand gets here).
    #[error(transparent)]
    Health(#[from] InvalidSettings),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How long shutdown waits for clients' WebSocket close replies once every
/// connection has sent its close.
const CLOSE_REPLY_GRACE: Duration = Duration::from_secs(1);

/// What every connection and route shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Arc<EdgeConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) link: LinkHandle,
    pub(crate) functions: Arc<Functions>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Bumped when the edge is drained: connections open then go elsewhere.
    pub(crate) drain: watch::Receiver<u64>,
    /// The health loop's counters, when `[health] enabled`.
    pub(crate) health: Option<Arc<HealthMetrics>>,
    /// Signs and checks connection keys.
    pub(crate) signer: Arc<Signer>,
    /// The lag of this runtime's event loop, for the health loop wherever it runs
    /// and for `/metrics`.
    pub(crate) lag: LagMonitor,
    /// Set when shutdown begins, before anything else: `/readyz` answers 503.
    leaving: AtomicBool,
    next_conn: AtomicU64,
    /// The url-safe prefix of connection ids (from the edge's name).
    id_prefix: String,
}

impl Shared {
    /// A fresh internal connection number.
    pub(crate) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh protocol connection id: `<edge name>-<16 hex digits>`.
    pub(crate) fn connection_id(&self) -> String {
        format!("{}-{}", self.id_prefix, crate::ws::random_hex(8))
    }

    /// Sends a publish through the ingress functions to the log; its answer goes
    /// where `job.reply` says.
    pub(crate) fn publish(&self, job: PublishJob) {
        self.functions.publish(job, &self.link, &self.metrics);
    }

    /// True once the edge is shutting down.
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// True from the start of [`EdgeHandle::shutdown`], while it leaves anycast and
    /// DNS and before it stops accepting.
    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }
}

/// The signer of connection keys: the cluster's secrets, or (with a warning) a
/// secret made up for this process when the config has none.
fn connection_key_signer(config: &EdgeConfig) -> Signer {
    let cluster = &config.cluster;
    match &cluster.connection_key_secret {
        Some(secret) => {
            let previous: Vec<&[u8]> = cluster
                .previous_connection_key_secrets
                .iter()
                .map(|secret| secret.expose())
                .collect();
            Signer::new(secret.expose(), &previous)
        }
        None => {
            warn!(
                "no cluster.connection_key_secret: connections resume only on this edge process (set the same secret on every edge)"
            );
            Signer::new(crate::ws::random_hex(32).as_bytes(), &[])
        }
    }
}

/// Connections the kernel may queue before the edge accepts them (capped by
/// `net.core.somaxconn`). Thousands of clients reconnect at once after an edge or
/// network failure; with the usual 128, the rest of their SYNs are dropped and they
/// wait for TCP's retransmission (1 s, 3 s …) instead of being accepted a little
/// later.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (with `SO_REUSEADDR`, so a restarted edge gets its port back at once)
/// and listens with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The edge node.
#[derive(Debug)]
pub struct Edge;

impl Edge {
    /// Checks the config's CA, binds `config.listen`, starts the link to the log (it
    /// keeps reconnecting in the background) and serves until
    /// [`EdgeHandle::shutdown`]. Must be called inside a tokio runtime.
    pub async fn start(config: EdgeConfig) -> Result<EdgeHandle, EdgeError> {
        let ca = config.log.ca.clone().ok_or(EdgeError::MissingCa)?;
        tern_log::net::tls::client_config(&ca).map_err(|error| EdgeError::BadCa {
            path: ca.display().to_string(),
            reason: error.to_string(),
        })?;
        let listener = listen(config.listen).map_err(|source| EdgeError::Bind {
            addr: config.listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| EdgeError::Bind {
            addr: config.listen,
            source,
        })?;
        let metrics = Arc::new(Metrics::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // The link outlives the connections: it answers their last publishes.
        let (link_stop, link_stop_rx) = watch::channel(false);
        let functions = Arc::new(Functions::new(&config)?);
        let hub = Hub::new(HubConfig::for_link(&config.log), Arc::clone(&metrics))
            .with_egress(Arc::clone(&functions) as Arc<dyn crate::hub::Egress>);
        let (link, mut tasks) = link::start(
            config.log.clone(),
            ca,
            hub,
            Arc::clone(&metrics),
            link_stop_rx,
        );
        functions.set_link(link.clone(), Arc::clone(&metrics));
        tasks.push(tokio::spawn(functions::sync::follow(
            Arc::clone(&functions),
            link.client_watch(),
            shutdown_rx.clone(),
        )));
        let id_prefix: String = config
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(32)
            .collect();
        let signer = Arc::new(connection_key_signer(&config));
        let (drain, drain_rx) = watch::channel(0);
        let drain = Arc::new(drain);
        let runner = config.health.enabled.then_some(config.health.runner);
        let health_metrics =
            (runner == Some(HealthRunner::Edge)).then(|| Arc::new(HealthMetrics::default()));
        let lag = LagMonitor::for_health(&config.health);
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            metrics,
            link,
            functions,
            shutdown: shutdown_rx,
            drain: drain_rx,
            health: health_metrics.clone(),
            signer,
            lag,
            leaving: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            id_prefix: if id_prefix.is_empty() {
                "edge".to_owned()
            } else {
                id_prefix
            },
        });
        info!(addr = %local_addr, name = %shared.config.name, "edge listening");
        tasks.push(tokio::spawn(accept(listener, Arc::clone(&shared))));
        let target = || {
            Arc::new(HealthTarget {
                shared: Arc::clone(&shared),
                addr: local_addr,
                drain: Arc::clone(&drain),
                pinged: AtomicBool::new(false),
            })
        };
        // `health_metrics` is there exactly when the edge runs the loop itself.
        let health = match (runner, health_metrics) {
            (Some(HealthRunner::TernHealth), _) => {
                if let Some(path) = &shared.config.health.drain_file {
                    tasks.push(tokio::spawn(crate::health::follow_drain_file(
                        path.clone(),
                        target(),
                        shared.shutdown.clone(),
                    )));
                }
                Some(HealthLoop::Alongside)
            }
            (_, Some(metrics)) => {
                let driver = HealthDriver::start(
                    &shared.config.name,
                    &shared.config.health,
                    target(),
                    metrics,
                );
                match driver {
                    Ok(driver) => Some(HealthLoop::InEdge(driver)),
                    Err(error) => {
                        let _ = shutdown_tx.send(true);
                        let _ = link_stop.send(true);
                        return Err(EdgeError::Health(error));
                    }
                }
            }
            (_, None) => None,
        };
        Ok(EdgeHandle {
            local_addr,
            shared,
            shutdown: shutdown_tx,
            link_stop,
            tasks,
            health,
            _drain: drain,
        })
    }
}

/// Who runs the edge's health loop (`[health] runner`).
#[derive(Debug)]
enum HealthLoop {
    /// The edge, on its own runtime.
    InEdge(HealthDriver),
    /// `tern health`, in a process alongside; the edge follows the drain file.
    Alongside,
}

/// A running edge.
#[derive(Debug)]
pub struct EdgeHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    /// Stops the link and batcher tasks (after the connections are gone).
    link_stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The health loop's runner, when `[health] enabled`.
    health: Option<HealthLoop>,
    /// Kept so that the drain signal lives as long as the edge.
    _drain: Arc<watch::Sender<u64>>,
}

impl EdgeHandle {
    /// The address the listener is bound to (the real port when `listen` said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// True while the link to the log is up and the functions deployed in the log
    /// are in force (what `/readyz` reports).
    pub fn ready(&self) -> bool {
        self.shared.metrics.link_is_up() && self.shared.functions.is_caught_up()
    }

    /// The health loop's status (state, probes, last probe and transition), when
    /// `[health] enabled`.
    pub fn health_status(&self) -> Option<watch::Receiver<HealthStatus>> {
        match &self.health {
            Some(HealthLoop::InEdge(driver)) => Some(driver.status()),
            Some(HealthLoop::Alongside) | None => None,
        }
    }

    /// First `/readyz` answers 503 "the edge is shutting down". With the health loop
    /// in the edge, it leaves anycast and DNS (state `disabled`: BIRD withdraws, every
    /// `tern dns` is told, each bounded by its timeout); with `runner =
    /// "tern-health"`, it waits one probe cycle for `tern health` to see that 503 and
    /// do the same ([`crate::health::handover`]). Then stops
    /// accepting, tells every client `DISCONNECTED{ShuttingDown, reconnect:
    /// elsewhere}` once its publishes in flight are answered, waits until every
    /// connection has sent that and its close, and up to 1 s more for the clients'
    /// close replies (all of it bounded by `health.drain_timeout` with the health
    /// loop, else `log.request_timeout` + 5 s), then stops the link: publishes still queued are answered
    /// `LogUnavailable`, those in flight get their answers (up to
    /// `log.request_timeout`).
    pub async fn shutdown(mut self) {
        let request_timeout = self.shared.config.log.request_timeout;
        self.shared.leaving.store(true, Ordering::Relaxed);
        let health = &self.shared.config.health;
        let drain_timeout = match self.health.take() {
            Some(HealthLoop::InEdge(driver)) => {
                driver.leave().await;
                health.drain_timeout
            }
            Some(HealthLoop::Alongside) => {
                let wait = crate::health::handover(health);
                info!(
                    ?wait,
                    "waiting for tern health to take this edge out of anycast and DNS"
                );
                tokio::time::sleep(wait).await;
                health.drain_timeout
            }
            None => request_timeout + DRAIN_TIMEOUT,
        };
        let _ = self.shutdown.send(true);
        let metrics = &self.shared.metrics;
        let waited = tokio::time::timeout(drain_timeout, async {
            // Until every connection has said its last words (answers to publishes in
            // flight, DISCONNECTED, the WebSocket close)...
            while metrics.connections_with_words_left() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // ...then briefly for the clients' close replies, which may never come:
            // behind anycast they go to whichever edge now has the route.
            let grace = tokio::time::Instant::now() + CLOSE_REPLY_GRACE;
            while metrics.open_connections() > 0 && tokio::time::Instant::now() < grace {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if waited.is_err() {
            warn!(
                open = metrics.open_connections(),
                not_yet_told = metrics.connections_with_words_left(),
                "connections still open after the drain timeout"
            );
        }
        let _ = self.link_stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(request_timeout + Duration::from_secs(2), task)
                .await
                .is_err()
            {
                debug!("a background task did not stop in time");
            }
        }
        info!("edge stopped");
    }
}

/// Accepts TCP connections and serves HTTP/1 on each (WebSocket upgrades leave the
/// HTTP task and run in one of their own).
async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut shutdown = shared.shutdown.clone();
            let header_timeout = shared.config.limits.connect_timeout;
            let service = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, std::convert::Infallible>(http::handle(request, shared).await) }
            });
            // A client gets `connect_timeout` to send each request's headers, so
            // idle or trickling HTTP connections do not pile up.
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
}
