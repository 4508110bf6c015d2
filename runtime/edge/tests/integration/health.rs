//! The health loop inside a real edge, probing it for real: a WebSocket CONNECT on its
//! listener, its link to a real log node, its load, and a drain file; its reports go to
//! a stand-in of `tern dns` (a small hyper server in the test that records them).
//!
//! Nothing here measures time: every wait is for a state, bounded by [`PATIENCE`].
//!
//! ```text
//!  test ──drain file / stop log──▶ edge (HealthDriver ──probes──▶ its own /v1/ws, link, load)
//!                                        └──POST /v1/health──▶ DnsStub (records states in order)
//! ```

use crate::support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{ADMIN_KEY, Cluster, LIMITED_KEY, LogNode, Next, PATIENCE, edge_config, http};
use tern_config::{DnsReportConfig, EdgeLimitsConfig, HealthConfig, ProbeKey};
use tern_edge::{Edge, EdgeHandle};
use tern_health::{HealthState, HealthStatus};
use tern_protocol::{ErrorCode, Format, Reconnect, ServerFrame};
use tokio::sync::watch;

/// A stand-in for `tern dns`'s report listener: keeps every reported state in order.
struct DnsStub {
    addr: SocketAddr,
    states: Arc<Mutex<Vec<String>>>,
}

impl DnsStub {
    async fn start() -> DnsStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let states = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&states);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let states = Arc::clone(&kept);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let states = Arc::clone(&states);
                            async move {
                                let path_ok = request.uri().path() == "/v1/health";
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let report: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                let ok = path_ok && report["edge"] == "health-edge";
                                if let (true, Some(state)) = (ok, report["state"].as_str()) {
                                    states.lock().expect("lock").push(state.to_owned());
                                }
                                let mut response = http::Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = if ok {
                                    http::StatusCode::NO_CONTENT
                                } else {
                                    http::StatusCode::BAD_REQUEST
                                };
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        DnsStub { addr, states }
    }

    /// The states reported, each run of repeats counted once.
    fn changes(&self) -> Vec<String> {
        let mut changes: Vec<String> = Vec::new();
        for state in self.states.lock().expect("lock").iter() {
            if changes.last() != Some(state) {
                changes.push(state.clone());
            }
        }
        changes
    }

    /// Waits until the last state reported is `state`.
    async fn wait_last(&self, state: &str) {
        tokio::time::timeout(PATIENCE, async {
            while self.changes().last().map(String::as_str) != Some(state) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("tern dns never heard {state:?}: {:?}", self.changes()));
    }
}

/// Health settings for tests: probes every 300 ms (each bounded by 300 ms), rise and
/// fall 2.
fn health(
    probe_key: &str,
    drain_file: Option<std::path::PathBuf>,
    dns: &[SocketAddr],
) -> HealthConfig {
    HealthConfig {
        enabled: true,
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(300),
        rise: 2,
        fall: 2,
        drain_file,
        probe_key: Some(ProbeKey::new(probe_key)),
        dns: (!dns.is_empty()).then(|| DnsReportConfig {
            report_urls: dns.to_vec(),
            token: None,
        }),
        ..HealthConfig::default()
    }
}

async fn start_edge(log: &LogNode, health: HealthConfig) -> EdgeHandle {
    let mut config = edge_config(log, EdgeLimitsConfig::default());
    config.name = "health-edge".into();
    config.health = health;
    Edge::start(config).await.expect("edge starts")
}

/// Waits until the loop is in `state`; returns its status then.
async fn wait_state(
    status: &mut watch::Receiver<HealthStatus>,
    state: HealthState,
) -> HealthStatus {
    let seen = tokio::time::timeout(PATIENCE, status.wait_for(|s| s.state == state))
        .await
        .map(|seen| seen.map(|s| s.clone()));
    match seen {
        Ok(Ok(seen)) => seen,
        Ok(Err(_)) => panic!("the health loop stopped before {state}"),
        Err(_) => panic!("never {state}: {:?}", *status.borrow()),
    }
}

fn reason(status: &HealthStatus) -> String {
    status
        .last_transition
        .as_ref()
        .map(|t| t.reason.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_drive_the_state_drain_sends_clients_away_and_dns_hears_every_change() {
    let dns = DnsStub::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let drain = dir.path().join("drain");
    let mut log = LogNode::start().await;
    let edge = start_edge(&log, health(ADMIN_KEY, Some(drain.clone()), &[dns.addr])).await;
    let addr = edge.local_addr();
    let mut status = edge.health_status().expect("health is enabled");

    // Up after `rise` good probes, every check having passed.
    let up = wait_state(&mut status, HealthState::Up).await;
    assert!(reason(&up).contains("2 probes in a row passed"), "{up:?}");
    let probe = up.last_probe.as_ref().expect("a probe ran");
    let names: Vec<&str> = probe.checks().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["websocket", "link", "load"]);
    assert!(probe.is_healthy(), "{probe:?}");
    assert!(
        probe.checks()[0]
            .detail
            .starts_with("CONNECTED as health-edge-"),
        "{probe:?}"
    );
    dns.wait_last("up").await;
    let (status_code, metrics) = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status_code, 200);
    assert!(
        metrics.contains("tern_health_state{state=\"up\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tern_health_transitions_total{to=\"up\"} 1\n"),
        "{metrics}"
    );

    // The log goes: the link check fails, down after `fall` bad probes. /readyz
    // says what it always said.
    log.stop().await;
    let down = wait_state(&mut status, HealthState::Down).await;
    let why = reason(&down);
    assert!(why.contains("2 probes in a row failed"), "{why}");
    assert!(why.contains("link: link to the log down"), "{why}");
    assert!(
        !why.contains("websocket"),
        "the edge itself still answers: {why}"
    );
    dns.wait_last("down").await;
    let (readyz, _) = http(addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(readyz, 503);

    // The log is back: up again.
    log.serve().await;
    wait_state(&mut status, HealthState::Up).await;
    dns.wait_last("up").await;

    // The drain file: disabled at once, the client sent elsewhere, the edge still
    // serving newcomers.
    let mut client = support::Client::open(addr, Format::Json).await;
    client.connect(LIMITED_KEY).await;
    std::fs::write(&drain, b"").expect("drain file");
    let disabled = wait_state(&mut status, HealthState::Disabled).await;
    assert_eq!(reason(&disabled), "drain file present");
    let told = client
        .recv_matching(|frame| match frame {
            ServerFrame::Disconnected(d) => Some(d.clone()),
            _ => None,
        })
        .await;
    assert_eq!(told.error.code, ErrorCode::ShuttingDown);
    assert_eq!(told.reconnect, Reconnect::Elsewhere);
    assert!(
        matches!(client.next().await, Next::Closed(_)),
        "the connection ends"
    );
    dns.wait_last("disabled").await;
    let mut newcomer = support::Client::open(addr, Format::Json).await;
    newcomer.connect(LIMITED_KEY).await;

    // Removed: down, and up again only after `rise` good probes.
    std::fs::remove_file(&drain).expect("remove the drain file");
    let down = wait_state(&mut status, HealthState::Down).await;
    assert!(reason(&down).starts_with("drain file removed"), "{down:?}");
    let up = wait_state(&mut status, HealthState::Up).await;
    assert!(reason(&up).contains("2 probes in a row passed"), "{up:?}");
    dns.wait_last("up").await;

    // SIGTERM's path: disabled, reported before the edge stops.
    edge.shutdown().await;
    assert_eq!(
        dns.changes(),
        [
            "down", "up", "down", "up", "disabled", "down", "up", "disabled"
        ]
    );
    assert!(matches!(
        newcomer.next().await,
        Next::Frame(ServerFrame::Disconnected(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_probe_key_keeps_the_edge_down_and_says_why() {
    let cluster = Cluster::start().await;
    let edge = start_edge(
        &cluster.log,
        health("app.nobody:not-a-key-0123456789", None, &[]),
    )
    .await;
    let mut status = edge.health_status().expect("health is enabled");
    let seen = tokio::time::timeout(PATIENCE, status.wait_for(|s| s.probes >= 3))
        .await
        .expect("three probes in time")
        .expect("the health loop runs")
        .clone();
    assert_eq!(seen.state, HealthState::Down);
    let probe = seen.last_probe.expect("a probe ran");
    let ws = &probe.checks()[0];
    assert_eq!(ws.name, "websocket");
    assert!(
        !ws.ok && ws.detail.contains("the API key is not valid"),
        "{ws:?}"
    );
    let (_, metrics) = http(edge.local_addr(), "GET", "/metrics", &[], b"").await;
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tern_health_probe_failures_total{check=\"websocket\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the failure counter is exported");
    assert!(failures >= 3, "{metrics}");
    edge.shutdown().await;
}
