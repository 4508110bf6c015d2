//! The probes: what the health loop checks about its edge each interval (the IO side;
//! deciding what the results mean is [`crate::hysteresis`]'s job).
//!
//! | check       | passes when                                                         |
//! |-------------|---------------------------------------------------------------------|
//! | `websocket` | a WebSocket handshake on the edge's own listener and a CONNECT with the probe key are answered CONNECTED within `timeout` (then the probe sends CLOSE) |
//! | `link`      | the edge's link to its home log node is up and the functions deployed in the log are in force (what `/readyz` reports) |
//! | `load`      | open connections / `limits.max_connections` is at most `max_load`, and no timer on the edge's runtime fired more than `max_event_loop_lag` late since the last probe ([`crate::lag`]) |
//!
//! The drain file is looked at too, but it is not a check: its presence goes to
//! [`crate::Hysteresis::handle_drain`], which disables the edge whatever the checks
//! say. The checks run concurrently, each bounded by `timeout`. The WebSocket probe is
//! a client like any other: it counts in the edge's connection metrics (one short
//! connection per interval) and in the load it measures.
//!
//! ```text
//!  Prober::run ─┬─ websocket: TCP ─▶ GET /v1/ws (tern.v1.json) ─▶ CONNECT{key} ─▶ CONNECTED? ─▶ CLOSE
//!               ├─ refresh:   ProbedEdge::refresh() (tern health: the edge's /readyz and /metrics)
//!               ├─ link:      ProbedEdge::link()
//!               ├─ load:      ProbedEdge::load(), ProbedEdge::event_loop() (new stalls since the last probe?)
//!               └─ drain:     stat(drain_file), or ProbedEdge::leaving()
//!                      ▼
//!                 Probe { report: ProbeReport, drain: Option<bool> }
//! ```
//!
//! The edge is reached through [`ProbedEdge`], which tern-edge implements: this crate
//! does not depend on the edge.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use tern_config::{HealthConfig, LoadRatio, ProbeKey};
use tern_protocol::{ClientFrame, Close, Connect, Format, ServerFrame};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::hysteresis::{CheckResult, ProbeReport};
use crate::lag::EventLoop;
/// Largest WebSocket message the probe reads (CONNECTED is far smaller).
const MAX_PROBE_MESSAGE: usize = 64 * 1024;

/// The names of the checks, as they appear in reports, logs and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// WebSocket handshake + CONNECT on the edge's own listener.
    Websocket,
    /// The link to the home log node.
    Link,
    /// Connections and event-loop lag.
    Load,
}

impl Check {
    /// Every check, in the order a probe reports them.
    pub const ALL: [Check; 3] = [Check::Websocket, Check::Link, Check::Load];

    /// The check's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Websocket => "websocket",
            Check::Link => "link",
            Check::Load => "load",
        }
    }

    /// The check named `name`, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// The state of an edge's link to its home log node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// The link is connected.
    pub up: bool,
    /// The functions deployed in the log are in force on the edge.
    pub caught_up: bool,
}

/// How full an edge is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// Client connections open now.
    pub connections: u64,
    /// The most it takes (`limits.max_connections`).
    pub max_connections: u64,
}

/// What the health loop needs from the edge it watches. tern-edge implements it.
pub trait ProbedEdge: Send + Sync + 'static {
    /// The address the edge's client listener is bound to.
    fn listen_addr(&self) -> SocketAddr;
    /// The link to the home log node.
    fn link(&self) -> LinkStatus;
    /// Connections open and allowed.
    fn load(&self) -> Load;
    /// What the edge's [`crate::LagMonitor`] has seen; `None` when it is not known
    /// (an edge in another process that did not answer: the WebSocket check fails
    /// then anyway).
    fn event_loop(&self) -> Option<EventLoop>;
    /// Tells every connected client to reconnect elsewhere (`DISCONNECTED` with
    /// reconnect `elsewhere`), without stopping the edge: new clients are still served.
    fn send_clients_elsewhere(&self);
    /// Fetches what [`ProbedEdge::link`], [`ProbedEdge::load`],
    /// [`ProbedEdge::event_loop`] and [`ProbedEdge::leaving`] answer from; run at the start of every probe, bounded
    /// by its `timeout`. Nothing to fetch for an edge in this process (the default).
    fn refresh(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Whether the edge is shutting down and wants out of anycast and DNS, taken like
    /// a present drain file. `None` (the default): the edge does not say; an edge
    /// running its own loop leaves through [`crate::HealthDriver::leave`] instead.
    fn leaving(&self) -> Option<bool> {
        None
    }
}

/// One probe's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The checks' results.
    pub report: ProbeReport,
    /// Whether the drain file is present; `None` when none is configured or it could
    /// not be looked at (then the drain state stays as it is).
    pub drain: Option<bool>,
    /// The worst event-loop lag the edge reported, when it did.
    pub lag: Option<Duration>,
}

/// Runs the probes against one edge.
#[derive(Debug)]
pub struct Prober<E> {
    edge: Arc<E>,
    probe_key: Option<ProbeKey>,
    timeout: Duration,
    max_load: LoadRatio,
    max_lag: Duration,
    drain_file: Option<PathBuf>,
    /// The edge's stall count at the last probe ([`UNSEEN`] before the first).
    stalls_seen: AtomicU64,
}

/// [`Prober::stalls_seen`] before the edge said anything.
const UNSEEN: u64 = u64::MAX;

impl<E: ProbedEdge> Prober<E> {
    /// A prober of `edge` with the `[health]` settings of `config`. Without a probe
    /// key the WebSocket check fails (tern-config requires one when health is
    /// enabled).
    pub fn new(edge: Arc<E>, config: &HealthConfig) -> Self {
        Prober {
            edge,
            probe_key: config.probe_key.clone(),
            timeout: config.timeout,
            max_load: config.max_load,
            max_lag: config.max_event_loop_lag,
            drain_file: config.drain_file.clone(),
            stalls_seen: AtomicU64::new(UNSEEN),
        }
    }

    /// Runs every check concurrently (each bounded by `timeout`) and looks at the
    /// drain file.
    pub async fn run(&self) -> Probe {
        let refresh = async {
            if tokio::time::timeout(self.timeout, self.edge.refresh())
                .await
                .is_err()
            {
                tracing::debug!("refreshing the edge's status timed out");
            }
        };
        let (websocket, file, ()) = tokio::join!(self.websocket(), self.drain(), refresh);
        let link = self.link();
        let event_loop = self.edge.event_loop();
        let load = self.load(event_loop);
        Probe {
            report: ProbeReport::new(vec![websocket, link, load]),
            drain: drained(self.drain_file.is_some(), file, self.edge.leaving()),
            lag: event_loop.map(|seen| seen.worst),
        }
    }

    async fn websocket(&self) -> CheckResult {
        let name = Check::Websocket.as_str();
        let started = Instant::now();
        let Some(key) = &self.probe_key else {
            return CheckResult::failed(name, "no health.probe_key configured", Duration::ZERO);
        };
        let addr = reachable(self.edge.listen_addr());
        match tokio::time::timeout(self.timeout, websocket_connect(addr, key.expose())).await {
            Ok(Ok(connection_id)) => CheckResult::passed(
                name,
                format!("CONNECTED as {connection_id} on {addr}"),
                started.elapsed(),
            ),
            Ok(Err(error)) => CheckResult::failed(name, error, started.elapsed()),
            Err(_) => CheckResult::failed(
                name,
                format!("no CONNECTED from {addr} within {:?}", self.timeout),
                started.elapsed(),
            ),
        }
    }

    fn link(&self) -> CheckResult {
        let name = Check::Link.as_str();
        let started = Instant::now();
        let link = self.edge.link();
        let elapsed = started.elapsed();
        match (link.up, link.caught_up) {
            (true, true) => CheckResult::passed(name, "link to the log up", elapsed),
            (true, false) => CheckResult::failed(
                name,
                "link up, but the functions deployed in the log are not in force yet",
                elapsed,
            ),
            (false, _) => CheckResult::failed(name, "link to the log down", elapsed),
        }
    }

    /// Stalls count from the first time the edge reports its event loop; a count
    /// that went down (a restarted edge) is a new start.
    fn load(&self, event_loop: Option<EventLoop>) -> CheckResult {
        let name = Check::Load.as_str();
        let started = Instant::now();
        let load = self.edge.load();
        let new_stalls = event_loop.map_or(0, |seen| {
            let before = self.stalls_seen.swap(seen.stalls, Ordering::Relaxed);
            if before == UNSEEN {
                0
            } else {
                seen.stalls.saturating_sub(before)
            }
        });
        let mut problems = Vec::new();
        if self
            .max_load
            .exceeded(load.connections, load.max_connections)
        {
            problems.push(format!(
                "{} of {} connections is above max_load {}",
                load.connections, load.max_connections, self.max_load
            ));
        }
        if let Some(seen) = event_loop
            && new_stalls > 0
        {
            problems.push(format!(
                "the event loop was late by more than max_event_loop_lag {:?} {new_stalls} time(s) since the last probe, by up to {:?}",
                self.max_lag, seen.worst
            ));
        }
        let elapsed = started.elapsed();
        if problems.is_empty() {
            let lag = match event_loop {
                Some(seen) => format!("event loop lag {:?}", seen.worst),
                None => "event loop lag not known".to_owned(),
            };
            CheckResult::passed(
                name,
                format!(
                    "{} of {} connections, {lag}",
                    load.connections, load.max_connections
                ),
                elapsed,
            )
        } else {
            CheckResult::failed(name, problems.join("; "), elapsed)
        }
    }

    async fn drain(&self) -> Option<bool> {
        let path = self.drain_file.as_ref()?;
        match tokio::time::timeout(self.timeout, tokio::fs::try_exists(path)).await {
            Ok(Ok(present)) => Some(present),
            Ok(Err(error)) => {
                tracing::warn!(path = %path.display(), %error, "cannot look at the drain file; drain state unchanged");
                None
            }
            Err(_) => {
                tracing::warn!(path = %path.display(), "looking at the drain file timed out; drain state unchanged");
                None
            }
        }
    }
}

/// Whether the edge is drained: the edge leaving, or the drain file (`file`: `None`
/// when it could not be looked at). `None` leaves the drain state as it is: when
/// neither is known, or when a configured file could not be looked at (and the edge
/// is not leaving).
fn drained(file_configured: bool, file: Option<bool>, leaving: Option<bool>) -> Option<bool> {
    match (leaving, file_configured, file) {
        (Some(true), _, _) => Some(true),
        (_, true, file) => file,
        (leaving, false, _) => leaving,
    }
}

/// Where to reach a listener bound to `addr`: the loopback address of its family
/// when it is bound to every address.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// A WebSocket handshake and CONNECT with `key`; returns the connection id of
/// CONNECTED, or what went wrong. Sends CLOSE afterwards (best effort).
async fn websocket_connect(addr: SocketAddr, key: &str) -> Result<String, String> {
    let mut request = format!("ws://{addr}/v1/ws")
        .into_client_request()
        .map_err(|e| format!("bad WebSocket request for {addr}: {e}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(Format::Json.subprotocol()),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_PROBE_MESSAGE))
        .max_frame_size(Some(MAX_PROBE_MESSAGE));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| format!("WebSocket handshake with {addr} failed: {e}"))?;
    let connect = ClientFrame::Connect(Connect {
        key: Some(key.to_owned()),
        ..Connect::default()
    });
    let text = String::from_utf8(tern_protocol::encode(Format::Json, &connect))
        .map_err(|_| "CONNECT did not encode as UTF-8".to_owned())?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| format!("sending CONNECT failed: {e}"))?;
    let outcome = loop {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => break Err(format!("reading the answer to CONNECT failed: {e}")),
            None => break Err("the edge closed the WebSocket before CONNECTED".to_owned()),
        };
        let bytes = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes.as_ref(),
            Message::Close(_) => {
                break Err("the edge closed the WebSocket before CONNECTED".to_owned());
            }
            _ => continue,
        };
        let frames = match tern_protocol::decode::<ServerFrame>(Format::Json, bytes) {
            Ok(frames) => frames,
            Err(e) => break Err(format!("the answer to CONNECT does not decode: {e}")),
        };
        let first = frames.into_iter().find_map(|frame| match frame {
            Ok(ServerFrame::Connected(connected)) => Some(Ok(connected.connection_id)),
            Ok(ServerFrame::Disconnected(d)) => Some(Err(format!(
                "DISCONNECTED {}: {}",
                d.error.code, d.error.message
            ))),
            Ok(ServerFrame::Error(e)) => {
                Some(Err(format!("ERROR {}: {}", e.error.code, e.error.message)))
            }
            Ok(_) => None,
            Err(e) => Some(Err(format!("a frame of the answer does not decode: {e}"))),
        });
        if let Some(outcome) = first {
            break outcome;
        }
    };
    if outcome.is_ok() {
        let close = tern_protocol::encode(Format::Json, &ClientFrame::Close(Close::default()));
        if let Ok(text) = String::from_utf8(close) {
            let _ = ws.send(Message::Text(text.into())).await;
        }
    }
    let _ = ws.close(None).await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    struct Fake {
        addr: SocketAddr,
        link_up: AtomicBool,
        connections: AtomicU64,
        event_loop: Mutex<Option<EventLoop>>,
    }

    impl Fake {
        fn new(addr: SocketAddr, connections: u64) -> Fake {
            Fake {
                addr,
                link_up: AtomicBool::new(true),
                connections: AtomicU64::new(connections),
                event_loop: Mutex::new(None),
            }
        }

        fn set_event_loop(&self, worst_ms: u64, stalls: u64) {
            *self.event_loop.lock().expect("lock") = Some(EventLoop {
                worst: Duration::from_millis(worst_ms),
                stalls,
            });
        }
    }

    impl ProbedEdge for Fake {
        fn listen_addr(&self) -> SocketAddr {
            self.addr
        }
        fn link(&self) -> LinkStatus {
            LinkStatus {
                up: self.link_up.load(Ordering::Relaxed),
                caught_up: true,
            }
        }
        fn load(&self) -> Load {
            Load {
                connections: self.connections.load(Ordering::Relaxed),
                max_connections: 100,
            }
        }
        fn event_loop(&self) -> Option<EventLoop> {
            *self.event_loop.lock().expect("lock")
        }
        fn send_clients_elsewhere(&self) {}
    }

    fn config(drain_file: Option<PathBuf>) -> HealthConfig {
        HealthConfig {
            timeout: Duration::from_millis(500),
            probe_key: Some(ProbeKey::new("app.k:0123456789abcdef")),
            drain_file,
            ..HealthConfig::default()
        }
    }

    #[test]
    fn a_leaving_edge_drains_and_an_unreadable_drain_file_changes_nothing() {
        // (file configured, file present?, edge leaving?) → drained?
        assert_eq!(drained(false, None, None), None);
        assert_eq!(drained(false, None, Some(false)), Some(false));
        assert_eq!(drained(false, None, Some(true)), Some(true));
        assert_eq!(drained(true, Some(false), None), Some(false));
        assert_eq!(drained(true, Some(true), None), Some(true));
        assert_eq!(drained(true, Some(false), Some(true)), Some(true));
        assert_eq!(drained(true, Some(true), Some(false)), Some(true));
        // A file that could not be looked at keeps the drain state, unless the edge
        // is leaving.
        assert_eq!(drained(true, None, Some(false)), None);
        assert_eq!(drained(true, None, None), None);
        assert_eq!(drained(true, None, Some(true)), Some(true));
    }

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:80".parse().expect("addr");
        let v6: SocketAddr = "[::]:81".parse().expect("addr");
        let set: SocketAddr = "10.0.0.1:82".parse().expect("addr");
        assert_eq!(reachable(v4).to_string(), "127.0.0.1:80");
        assert_eq!(reachable(v6).to_string(), "[::1]:81");
        assert_eq!(reachable(set), set);
        assert_eq!(Check::from_name("load"), Some(Check::Load));
        assert_eq!(Check::from_name("drain"), None);
    }

    #[tokio::test]
    async fn checks_report_what_they_saw() {
        // A listener that accepts and says nothing: the handshake never completes.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        let dir = tempfile::tempdir().expect("temp dir");
        let drain = dir.path().join("drain");
        let edge = Arc::new(Fake::new(addr, 10));
        let prober = Prober::new(Arc::clone(&edge), &config(Some(drain.clone())));
        let probe = prober.run().await;
        let names: Vec<&str> = probe
            .report
            .checks()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["websocket", "link", "load"]);
        let ws = &probe.report.checks()[0];
        assert!(!ws.ok && ws.detail.contains("no CONNECTED"), "{ws:?}");
        assert!(probe.report.checks()[1].ok);
        assert!(
            probe.report.checks()[2].ok,
            "{:?}",
            probe.report.checks()[2]
        );
        assert_eq!(probe.drain, Some(false));

        std::fs::write(&drain, b"").expect("drain file");
        edge.link_up.store(false, Ordering::Relaxed);
        edge.connections.store(96, Ordering::Relaxed);
        let probe = prober.run().await;
        assert_eq!(probe.drain, Some(true));
        let link = &probe.report.checks()[1];
        assert_eq!(
            (link.ok, link.detail.as_str()),
            (false, "link to the log down")
        );
        let load = &probe.report.checks()[2];
        assert!(
            !load.ok
                && load
                    .detail
                    .contains("96 of 100 connections is above max_load 0.95"),
            "{load:?}"
        );
        drop(silent);
    }

    #[tokio::test]
    async fn a_refused_connection_fails_the_websocket_check_and_no_drain_file_is_none() {
        let addr = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            l.local_addr().expect("addr")
        };
        let edge = Arc::new(Fake::new(addr, 0));
        let probe = Prober::new(edge, &config(None)).run().await;
        let ws = &probe.report.checks()[0];
        assert!(!ws.ok && ws.detail.contains("handshake"), "{ws:?}");
        assert_eq!(probe.drain, None);
    }

    #[tokio::test]
    async fn each_stall_fails_one_probe() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let edge = Arc::new(Fake::new(addr, 0));
        let prober = Prober::new(Arc::clone(&edge), &config(None));
        let load = |probe: &Probe| probe.report.checks()[2].clone();

        // Not known: not held against the edge.
        let probe = prober.run().await;
        assert!(load(&probe).ok, "{:?}", load(&probe));
        assert!(load(&probe).detail.contains("event loop lag not known"));
        assert_eq!(probe.lag, None);
        // Stalls from before the first report are not this loop's business.
        edge.set_event_loop(900, 4);
        let probe = prober.run().await;
        assert!(load(&probe).ok, "{:?}", load(&probe));
        assert_eq!(probe.lag, Some(Duration::from_millis(900)));
        // Two new stalls: this probe fails; the next one, with none new, passes
        // although the worst lag is still in the edge's window.
        edge.set_event_loop(700, 6);
        let failed = load(&prober.run().await);
        assert!(
            !failed.ok
                && failed.detail.contains(
                    "late by more than max_event_loop_lag 500ms 2 time(s) since the last probe, by up to 700ms"
                ),
            "{failed:?}"
        );
        let probe = prober.run().await;
        assert!(load(&probe).ok, "{:?}", load(&probe));
        assert!(load(&probe).detail.contains("event loop lag 700ms"));
        // A restarted edge counts from zero again: a new start, not a failure.
        edge.set_event_loop(0, 0);
        assert!(load(&prober.run().await).ok);
        edge.set_event_loop(600, 1);
        assert!(!load(&prober.run().await).ok);
    }
}
