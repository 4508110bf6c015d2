//! [`RemoteEdge`]: an edge probed from another process (`tern health`, with `[health]
//! runner = "tern-health"`), the way ExaBGP's healthcheck watches a service.
//!
//! Because the loop runs outside the edge, it still runs when the edge process is
//! killed or frozen: the WebSocket check then fails, and after `fall` probes the route
//! is withdrawn and `tern dns` told. What the in-process loop reads from the edge's
//! memory is read over HTTP instead, once per probe ([`ProbedEdge::refresh`]):
//!
//! | what          | from                                                              |
//! |---------------|-------------------------------------------------------------------|
//! | link          | `GET /readyz?ping`: 200 is up (the log answered a ping on the link) and caught up; 503 says what is missing |
//! | leaving       | `GET /readyz` 503 "the edge is shutting down": the edge got SIGTERM, taken as a drain |
//! | load          | `GET /metrics`: `tern_edge_connections_open`, over `limits.max_connections`; `tern_edge_event_loop_stalls_total` and `_lag_seconds` ([`crate::lag`]) |
//!
//! Event-loop lag is measured by the edge on its own runtime (from here it would
//! measure only this process) and read from its `/metrics`; a stall that lasts
//! beyond `timeout` fails the WebSocket check as well. Sending clients
//! elsewhere is the edge's own job in this mode (it does so on the drain file and on
//! SIGTERM, after one probe cycle for this loop to withdraw).
//!
//! [`Alongside`] is what `tern health` runs: a [`HealthDriver`] over a [`RemoteEdge`],
//! and optionally `GET /metrics` with the loop's [`HealthMetrics`]. Stopping it leaves
//! anycast and DNS ([`HealthDriver::leave`]): a site nobody watches must not announce.
//!
//! ```text
//!  Prober::run ─▶ refresh: GET /readyz, GET /metrics (concurrently, each under timeout)
//!                   ▼
//!                 Snapshot { readiness, connections, event_loop } ─▶ link() / load() / event_loop() / leaving()
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tern_config::{EdgeConfig, HealthRunner};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::anycast::InvalidSettings;
use crate::driver::{HealthDriver, HealthStatus};
use crate::lag::{EventLoop, sample};
use crate::metrics::HealthMetrics;
use crate::probes::{LinkStatus, Load, ProbedEdge, reachable};
use crate::report::request;

/// What `/readyz` answers while the edge shuts down (its body starts with this).
pub const SHUTTING_DOWN: &str = "the edge is shutting down";
/// What `/readyz` answers while the functions deployed in the log are not in force
/// (its body starts with this).
pub const FUNCTIONS_NOT_IN_FORCE: &str = "the functions deployed in the log are not applied yet";
/// The edge's gauge of open client connections on `/metrics`.
const CONNECTIONS_OPEN: &str = "tern_edge_connections_open";

/// What the edge said about itself at the last refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readiness {
    /// `/readyz` answered 200.
    Ready,
    /// 503: the link is up but the functions are not in force yet.
    CatchingUp,
    /// 503: the edge is shutting down.
    ShuttingDown,
    /// 503 for another reason (the link is down), or no answer at all.
    NotReady,
}

#[derive(Clone, Copy, Debug)]
struct Snapshot {
    readiness: Readiness,
    /// `None` when `/metrics` did not answer or had no such gauge.
    connections: Option<u64>,
    /// `None` when `/metrics` did not answer or had not both series.
    event_loop: Option<EventLoop>,
}

impl Snapshot {
    /// Before the edge answered.
    const UNKNOWN: Snapshot = Snapshot {
        readiness: Readiness::NotReady,
        connections: None,
        event_loop: None,
    };
}

/// An edge in another process, reached over its listener.
#[derive(Debug)]
pub struct RemoteEdge {
    addr: SocketAddr,
    max_connections: u64,
    timeout: Duration,
    snapshot: Mutex<Snapshot>,
}

impl RemoteEdge {
    /// The edge `config` describes (its `[edge] listen` and `limits.max_connections`;
    /// a listener bound to every address is reached on loopback). Each HTTP request
    /// is bounded by `[health] timeout`.
    pub fn new(config: &EdgeConfig) -> RemoteEdge {
        RemoteEdge {
            addr: reachable(config.listen),
            max_connections: u64::try_from(config.limits.max_connections).unwrap_or(u64::MAX),
            timeout: config.health.timeout,
            snapshot: Mutex::new(Snapshot::UNKNOWN),
        }
    }

    fn snapshot(&self) -> Snapshot {
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn readiness(&self) -> Readiness {
        match request(self.addr, Method::GET, "/readyz?ping", None, self.timeout).await {
            Ok((StatusCode::OK, _)) => Readiness::Ready,
            Ok((StatusCode::SERVICE_UNAVAILABLE, body)) => readiness_of(&body),
            Ok((status, _)) => {
                tracing::debug!(%status, "unexpected /readyz status");
                Readiness::NotReady
            }
            Err(error) => {
                tracing::debug!(%error, addr = %self.addr, "GET /readyz failed");
                Readiness::NotReady
            }
        }
    }

    /// Open connections and the event loop, from `/metrics`.
    async fn metrics(&self) -> (Option<u64>, Option<EventLoop>) {
        match request(self.addr, Method::GET, "/metrics", None, self.timeout).await {
            Ok((StatusCode::OK, body)) => {
                let text = String::from_utf8_lossy(&body);
                let connections = gauge(&text, CONNECTIONS_OPEN);
                (connections, EventLoop::from_metrics(&text))
            }
            Ok((status, _)) => {
                tracing::debug!(%status, "unexpected /metrics status");
                (None, None)
            }
            Err(error) => {
                tracing::debug!(%error, addr = %self.addr, "GET /metrics failed");
                (None, None)
            }
        }
    }
}

impl ProbedEdge for RemoteEdge {
    fn listen_addr(&self) -> SocketAddr {
        self.addr
    }

    fn link(&self) -> LinkStatus {
        match self.snapshot().readiness {
            Readiness::Ready => LinkStatus {
                up: true,
                caught_up: true,
            },
            Readiness::CatchingUp => LinkStatus {
                up: true,
                caught_up: false,
            },
            // A shutting-down edge is drained through leaving(); its link is not
            // known then.
            Readiness::ShuttingDown | Readiness::NotReady => LinkStatus {
                up: false,
                caught_up: false,
            },
        }
    }

    /// Connections unknown (no `/metrics` answer) count as none: the WebSocket and
    /// link checks fail anyway when the edge does not answer.
    fn load(&self) -> Load {
        Load {
            connections: self.snapshot().connections.unwrap_or(0),
            max_connections: self.max_connections,
        }
    }

    fn event_loop(&self) -> Option<EventLoop> {
        self.snapshot().event_loop
    }

    /// Nothing here: in this mode the edge sends its clients elsewhere itself.
    fn send_clients_elsewhere(&self) {}

    async fn refresh(&self) {
        // Not ready and nothing known until proven otherwise: a refresh cut short by
        // the probe's timeout leaves this, not the last probe's figures.
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Snapshot::UNKNOWN;
        let (readiness, (connections, event_loop)) = tokio::join!(self.readiness(), self.metrics());
        *self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Snapshot {
            readiness,
            connections,
            event_loop,
        };
    }

    fn leaving(&self) -> Option<bool> {
        Some(self.snapshot().readiness == Readiness::ShuttingDown)
    }
}

/// Why [`Alongside::start`] cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AlongsideError {
    /// `[health] enabled` is false.
    #[error("[health] enabled is false: there is no health loop to run")]
    NotEnabled,
    /// `[health] runner` is `"edge"`: the edge runs its own loop, and two loops would
    /// fight over BIRD.
    #[error(
        "[health] runner is \"edge\": tern edge runs this loop itself; set runner = \"tern-health\" to run it here"
    )]
    RunnerIsEdge,
    /// The settings cannot drive the loop.
    #[error(transparent)]
    Settings(#[from] InvalidSettings),
    /// The metrics listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The health loop of an edge in another process: what `tern health` runs.
#[derive(Debug)]
pub struct Alongside {
    driver: HealthDriver,
    metrics_addr: Option<SocketAddr>,
    server: Option<JoinHandle<()>>,
}

impl Alongside {
    /// Starts the loop of the edge `config` describes (its `[health]`, which must have
    /// `runner = "tern-health"`) on the current tokio runtime, and with
    /// `metrics_listen` a `GET /metrics` listener of the loop's series.
    pub async fn start(
        config: &EdgeConfig,
        metrics_listen: Option<SocketAddr>,
    ) -> Result<Alongside, AlongsideError> {
        if !config.health.enabled {
            return Err(AlongsideError::NotEnabled);
        }
        if config.health.runner != HealthRunner::TernHealth {
            return Err(AlongsideError::RunnerIsEdge);
        }
        let metrics = Arc::new(HealthMetrics::default());
        let (metrics_addr, server) = match metrics_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| AlongsideError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| AlongsideError::Bind { addr, source })?;
                let server = tokio::spawn(serve_metrics(listener, Arc::clone(&metrics)));
                (Some(bound), Some(server))
            }
            None => (None, None),
        };
        let edge = Arc::new(RemoteEdge::new(config));
        let driver = HealthDriver::start(&config.name, &config.health, edge, metrics)?;
        Ok(Alongside {
            driver,
            metrics_addr,
            server,
        })
    }

    /// Where `GET /metrics` is served, when asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The loop's status, updated after every probe.
    pub fn status(&self) -> watch::Receiver<HealthStatus> {
        self.driver.status()
    }

    /// Leaves anycast and DNS ([`HealthDriver::leave`], guarded like any withdrawal)
    /// and stops.
    pub async fn leave(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.driver.leave().await;
    }
}

/// Serves `GET /metrics` (the loop's series) to whoever connects, one task per
/// connection; anything else is 404.
async fn serve_metrics(listener: TcpListener, metrics: Arc<HealthMetrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed on the metrics listener");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let metrics = Arc::clone(&metrics);
                async move {
                    let (status, body) = if request.uri().path() == "/metrics" {
                        let mut out = String::new();
                        metrics.render(&mut out);
                        (StatusCode::OK, out)
                    } else {
                        (StatusCode::NOT_FOUND, "only /metrics here\n".to_owned())
                    };
                    Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                        .body(Full::new(Bytes::from(body)))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What a 503 from `/readyz` with `body` means.
fn readiness_of(body: &[u8]) -> Readiness {
    if body.starts_with(SHUTTING_DOWN.as_bytes()) {
        Readiness::ShuttingDown
    } else if body.starts_with(FUNCTIONS_NOT_IN_FORCE.as_bytes()) {
        Readiness::CatchingUp
    } else {
        Readiness::NotReady
    }
}

/// The value of the unlabelled gauge `name` in a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<u64> {
    sample(text, name)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_is_read_by_its_exact_name() {
        let text = "# HELP tern_edge_connections_open Client connections open now.\n\
                    # TYPE tern_edge_connections_open gauge\n\
                    tern_edge_connections_open_total 9\n\
                    tern_edge_connections_open 17\n";
        assert_eq!(gauge(text, CONNECTIONS_OPEN), Some(17));
        assert_eq!(
            gauge("tern_edge_connections_open x\n", CONNECTIONS_OPEN),
            None
        );
        assert_eq!(gauge("", CONNECTIONS_OPEN), None);
    }

    #[test]
    fn a_503_says_why() {
        assert_eq!(
            readiness_of(format!("{SHUTTING_DOWN}\n").as_bytes()),
            Readiness::ShuttingDown
        );
        assert_eq!(
            readiness_of(format!("{FUNCTIONS_NOT_IN_FORCE}\n").as_bytes()),
            Readiness::CatchingUp
        );
        assert_eq!(
            readiness_of(b"the link to the log is down\n"),
            Readiness::NotReady
        );
    }
}
