//! Graceful drain of a real `tern edge` process with its health loop on (issue 6):
//!
//! - `sigterm_sends_clients_to_another_edge_and_loses_nothing`: two edges on one log;
//!   a `tern-client` publisher and subscriber whose primary URL is edge A and whose
//!   fallback is edge B. SIGTERM to A: the clients are told to go elsewhere, resume on
//!   B, and every acknowledged message reaches the subscriber exactly once, in order;
//!   A exits 0.
//! - `sigterm_withdraws_the_route_before_the_edge_exits`: edge A drives a real BIRD
//!   pair (`tern_health::testing`): once up, the router learns the anycast prefix;
//!   after SIGTERM and A's exit, the edge BIRD's anycast protocol is disabled and the
//!   router has no route: only A commands that BIRD, so it withdrew before exiting.
//! - `a_real_tern_dns_hears_the_edges_and_guards_the_last_route`: edges A (with the
//!   BIRD pair, `min_announcing = 1`) and B report to a real `tern dns`, whose health
//!   table is also the guard's site count; every report and table read carries the
//!   report token (a read without it gets 401). A's drain file withdraws its route while B
//!   is up (two sites) and tern dns lists A `disabled`; removed, A rises and announces
//!   again. B stops (SIGTERM, `disabled` in the table); then A's SIGTERM would take
//!   the last route away, so the guard holds it: A exits 0 and the router keeps the
//!   route.
//!
//! Every wait is bounded; nothing asserts on time.
//!
//! ```text
//!  publisher, subscriber ──primary──▶ edge A (health on) ─┐
//!            └────────fallback──────▶ edge B ─────────────┼─▶ tern log
//!  SIGTERM ▶ A: leave anycast (BIRD) + DNS, DISCONNECTED elsewhere, wait, exit 0
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt as _;
use tern_client::{AttachFrom, ChannelEvent, Client, ClientConfig, ConnectionState};
use tern_health::bird::{ProtocolName, ProtocolState};
use tern_health::testing::{EDGE_AS, Pair};
use tern_protocol::{Data, Message, Position};
use tern_tests::{EdgeProcess, LogProcess, TEST_KEY, http};

/// Longest wait for anything here.
const PATIENCE: Duration = Duration::from_secs(30);
/// tern dns's `report_tokens`, the edges' `[health.dns] token`.
const REPORT_TOKEN: &str = "drain-test-report-token-0123456789abcdef";

/// `[health]` for a test edge: quick probes, the test key as the probe key.
fn health_section(extra: &str) -> String {
    format!(
        "[health]\nenabled = true\nprobe_key = {TEST_KEY:?}\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\
         rise = 2\nfall = 2\ndrain_timeout = \"10s\"\n{extra}"
    )
}

/// Waits until `/metrics` of `addr` shows the health state `state`.
async fn wait_health(addr: SocketAddr, state: &str) -> anyhow::Result<()> {
    let until = Instant::now() + PATIENCE;
    let sample = format!("tern_health_state{{state=\"{state}\"}}");
    loop {
        if let Ok(response) = http::get(addr, "/metrics", None).await
            && http::metric(&response.body, &sample) == 1
        {
            return Ok(());
        }
        ensure!(Instant::now() < until, "edge {addr} never {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the edge at `addr` answers `/readyz` with 200.
async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let until = Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = http::get(addr, "/readyz", None).await
            && response.status == 200
        {
            return Ok(());
        }
        ensure!(Instant::now() < until, "edge {addr} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client_config(primary: &EdgeProcess, fallback: &EdgeProcess, name: &str) -> ClientConfig {
    ClientConfig::new(primary.ws_url(), TEST_KEY)
        .fallback_urls([fallback.ws_url()])
        .client_id(name)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .request_timeout(Duration::from_secs(20))
}

/// Waits until `client` is connected to `url`.
async fn wait_connected_to(client: &Client, url: &str) -> anyhow::Result<()> {
    let mut state = client.state();
    tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| matches!(s, ConnectionState::Connected { url: u, .. } if u == url)),
    )
    .await
    .with_context(|| format!("never connected to {url}: {:?}", *client.state().borrow()))?
    .context("the client stopped")?;
    Ok(())
}

/// Acknowledged messages: id → position.
type Acked = Arc<Mutex<Vec<(String, Position)>>>;

/// Publishes numbered messages until `stop`, each until acknowledged (retrying a
/// retryable error with the same id).
async fn publish_until(
    client: Arc<Client>,
    acked: Acked,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    for i in 0u32.. {
        if *stop.borrow() {
            return Ok(());
        }
        let id = format!("m{i}");
        let mut message = Message::new(id.clone());
        message.id = Some(id.clone());
        let give_up = Instant::now() + PATIENCE;
        let position = loop {
            match client.publish("drain:test", vec![message.clone()]).await {
                Ok(results) => break results.first().context("one result")?.position,
                Err(error) if error.is_retryable() && Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => bail!("publishing {id}: {error}"),
            }
        };
        acked.lock().expect("lock").push((id, position));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn acked_count(acked: &Acked) -> usize {
    acked.lock().expect("lock").len()
}

async fn wait_acked(acked: &Acked, at_least: usize) -> anyhow::Result<()> {
    let until = Instant::now() + PATIENCE;
    while acked_count(acked) < at_least {
        ensure!(
            Instant::now() < until,
            "only {} acknowledged",
            acked_count(acked)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_clients_to_another_edge_and_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = LogProcess::start(&dir.path().join("log"))?;
    let a = EdgeProcess::start(
        dir.path(),
        "edge-a",
        log.addr,
        &log.cert,
        &health_section(""),
    )?;
    let b = EdgeProcess::start(dir.path(), "edge-b", log.addr, &log.cert, "")?;
    wait_ready(a.addr).await?;
    wait_ready(b.addr).await?;
    wait_health(a.addr, "up").await?;

    let publisher = Arc::new(Client::connect(client_config(&a, &b, "publisher")).await?);
    let subscriber = Client::connect(client_config(&a, &b, "subscriber")).await?;
    let mut stream = subscriber.attach("drain:test", AttachFrom::Now).await?;
    let acked: Acked = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publishing = tokio::spawn(publish_until(
        Arc::clone(&publisher),
        Arc::clone(&acked),
        stopped,
    ));
    wait_acked(&acked, 20).await?;

    // SIGTERM while publishing: A leaves, its clients go to B.
    let a_logs = a.logs.clone();
    let sigterm = Instant::now();
    let exit = tokio::task::spawn_blocking(move || {
        let status = a.terminate(PATIENCE);
        (status, sigterm.elapsed())
    });
    wait_connected_to(&publisher, &b.ws_url()).await?;
    wait_connected_to(&subscriber, &b.ws_url()).await?;
    let before = acked_count(&acked);
    wait_acked(&acked, before + 20).await?;
    let (status, exited_after) = exit.await?;
    let status = status.context("edge A still running after SIGTERM")?;
    ensure!(status.success(), "edge A exited with {status}");
    stop.send_replace(true);
    publishing.await??;

    // Every acknowledged message, once, in order.
    let acked = acked.lock().expect("lock").clone();
    let want: HashMap<&str, Position> = acked.iter().map(|(id, p)| (id.as_str(), *p)).collect();
    ensure!(want.len() == acked.len(), "an id acknowledged twice");
    let mut got: Vec<(String, Position)> = Vec::with_capacity(acked.len());
    let until = Instant::now() + PATIENCE;
    while got.len() < acked.len() {
        let left = until.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.next())
            .await
            .with_context(|| format!("{} of {} delivered", got.len(), acked.len()))?
            .context("the stream ended")?;
        match event {
            ChannelEvent::Message { position, message } => {
                let Data::Text(text) = &message.data else {
                    bail!("binary data: {message:?}");
                };
                got.push((text.clone(), position));
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    for (i, (id, position)) in got.iter().enumerate() {
        ensure!(
            want.get(id.as_str()) == Some(position),
            "delivered {id} at {position:?}, acknowledged at {:?}",
            want.get(id.as_str())
        );
        if i > 0 {
            let previous = got[i - 1].1;
            ensure!(
                position.epoch == previous.epoch && position.serial == previous.serial + 1,
                "serials not dense: {previous:?} then {position:?}"
            );
        }
    }
    let logs = a_logs.lock().map(|l| l.join("\n")).unwrap_or_default();
    let left = logs.find("left anycast and DNS").context("A never left")?;
    let stopped_at = logs.find("edge stopped").context("A never stopped")?;
    ensure!(left < stopped_at, "A stopped before leaving:\n{logs}");
    eprintln!(
        "drain: {} acknowledged, {before} before SIGTERM; all delivered once, in order; edge A exited {exited_after:?} after SIGTERM",
        acked.len()
    );
    publisher.close().await;
    subscriber.close().await;
    Ok(())
}

/// Behind anycast, once the route is withdrawn a client's WebSocket close reply goes
/// to another edge and never reaches the one shutting down. Here a proxy that stops
/// forwarding the edge's bytes keeps the client from ever seeing the close, so no
/// reply comes: the edge must not wait `drain_timeout` for it, only a short grace
/// once everything is sent. (`drain_timeout` is below the 10 s the connection itself
/// waits for the reply, so that the old wait shows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_reply_that_never_comes_does_not_hold_the_exit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = LogProcess::start(&dir.path().join("log"))?;
    let edge = EdgeProcess::start(
        dir.path(),
        "edge-a",
        log.addr,
        &log.cert,
        &health_section("").replace("drain_timeout = \"10s\"", "drain_timeout = \"5s\""),
    )?;
    wait_ready(edge.addr).await?;
    let proxy = tern_tests::proxy::Proxy::start(edge.addr).await?;
    let client = Client::connect(
        ClientConfig::new(proxy.ws_url(), TEST_KEY)
            .client_id("unreachable")
            .reconnect_backoff(Duration::from_secs(30), Duration::from_secs(30)),
    )
    .await?;
    proxy.stall();
    let logs = edge.logs.clone();
    let status = tokio::task::spawn_blocking(move || edge.terminate(PATIENCE))
        .await?
        .context("the edge still runs after SIGTERM")?;
    let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
    ensure!(status.success(), "the edge exited with {status}\n{logs}");
    ensure!(
        !logs.contains("connections still open after the drain timeout"),
        "the edge waited out drain_timeout for a close reply\n{logs}"
    );
    drop(client);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_withdraws_the_route_before_the_edge_exits() -> anyhow::Result<()> {
    let pair = Pair::start().await;
    pair.wait_withdrawn().await;
    let dir = tempfile::tempdir()?;
    let log = LogProcess::start(&dir.path().join("log"))?;
    let bird = format!(
        "[health.bird]\nsocket = {:?}\nmin_announcing = 0\n",
        pair.edge.socket().display().to_string()
    );
    let a = EdgeProcess::start(
        dir.path(),
        "edge-a",
        log.addr,
        &log.cert,
        &health_section(&bird),
    )?;
    wait_health(a.addr, "up").await?;
    pair.wait_as_path(&[EDGE_AS]).await;
    let response = http::get(a.addr, "/metrics", None).await?;
    ensure!(
        http::metric(
            &response.body,
            "tern_health_anycast_announcing{announcement=\"announce\"}"
        ) == 1,
        "{}",
        response.body
    );

    let logs = a.logs.clone();
    let status = tokio::task::spawn_blocking(move || a.terminate(PATIENCE))
        .await?
        .context("edge A still running after SIGTERM")?;
    ensure!(status.success(), "edge A exited with {status}");
    // A is gone; the BIRD it drove keeps running: what it announces now is what A
    // left it with.
    let row = pair
        .edge
        .client()
        .show_protocol(&ProtocolName::from_static("anycast4"))
        .await?;
    let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
    ensure!(
        row.state == ProtocolState::Down,
        "anycast4 is {:?} after the edge exited\n{logs}",
        row.state
    );
    pair.wait_withdrawn().await;
    ensure!(logs.contains("announcement=withdraw"), "{logs}");
    Ok(())
}

/// A `tern dns` child process (killed when dropped).
struct DnsProcess {
    _child: tokio::process::Child,
    /// Its report listener.
    report: SocketAddr,
}

impl DnsProcess {
    /// Writes `DIR/dns.toml` naming `edges` (one POP), starts `tern dns` on it and
    /// waits for its start-up line.
    async fn start(dir: &std::path::Path, edges: &[&str]) -> anyhow::Result<DnsProcess> {
        let mut config = format!(
            "listen = \"127.0.0.1:0\"\nreport_listen = \"127.0.0.1:0\"\nname = \"edge.tern.test.\"\n\
             report_tokens = [{REPORT_TOKEN:?}]\n\
             fallback = [\"192.0.2.100\"]\n[[pops]]\nname = \"local\"\nsubnets = [\"127.0.0.0/8\"]\n",
        );
        for (i, edge) in edges.iter().enumerate() {
            config.push_str(&format!(
                "[[pops.edges]]\nname = {edge:?}\naddrs = [\"192.0.2.{}\"]\n",
                i + 1
            ));
        }
        let path = dir.join("dns.toml");
        std::fs::write(&path, config)?;
        let mut child = tokio::process::Command::new(tern_tests::tern_binary())
            .args(["dns", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .context("no start-up line from tern dns")??
            .context("tern dns closed its stdout")?;
        let report = line
            .split_once("reports on http://")
            .and_then(|(_, addr)| addr.trim().parse().ok())
            .with_context(|| format!("no report address in {line:?}"))?;
        Ok(DnsProcess {
            _child: child,
            report,
        })
    }

    /// `edge` → its `health` in the table of `GET /v1/health`.
    async fn table(&self) -> anyhow::Result<HashMap<String, String>> {
        let response = http::get(self.report, "/v1/health", Some(REPORT_TOKEN)).await?;
        ensure!(response.status == 200, "GET /v1/health: {response:?}");
        let table: serde_json::Value = serde_json::from_str(&response.body)?;
        let edges = table["edges"].as_array().context("edges")?;
        Ok(edges
            .iter()
            .filter_map(|e| {
                Some((
                    e["edge"].as_str()?.to_owned(),
                    e["health"].as_str()?.to_owned(),
                ))
            })
            .collect())
    }

    /// Waits until the table says `edge` is `health`.
    async fn wait(&self, edge: &str, health: &str) -> anyhow::Result<()> {
        let until = Instant::now() + PATIENCE;
        loop {
            let table = self.table().await?;
            if table.get(edge).map(String::as_str) == Some(health) {
                return Ok(());
            }
            ensure!(
                Instant::now() < until,
                "tern dns never had {edge} {health}: {table:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_tern_dns_hears_the_edges_and_guards_the_last_route() -> anyhow::Result<()> {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir()?;
    let dns = DnsProcess::start(dir.path(), &["edge-a", "edge-b"]).await?;
    let log = LogProcess::start(&dir.path().join("log"))?;
    let drain = dir.path().join("drain-a");
    let report = format!(
        "[health.dns]\nreport_urls = [\"http://{}\"]\ntoken = {REPORT_TOKEN:?}\n",
        dns.report
    );
    let a_extra = format!(
        "drain_file = {:?}\n[health.bird]\nsocket = {:?}\nmin_announcing = 1\n{report}",
        drain.display().to_string(),
        pair.edge.socket().display().to_string()
    );
    let a = EdgeProcess::start(
        dir.path(),
        "edge-a",
        log.addr,
        &log.cert,
        &health_section(&a_extra),
    )?;
    let b = EdgeProcess::start(
        dir.path(),
        "edge-b",
        log.addr,
        &log.cert,
        &health_section(&report),
    )?;
    dns.wait("edge-a", "up").await?;
    dns.wait("edge-b", "up").await?;
    let anonymous = http::get(dns.report, "/v1/health", None).await?;
    ensure!(anonymous.status == 401, "{anonymous:?}");
    pair.wait_as_path(&[EDGE_AS]).await;

    // Drained while B is up: two sites, so A withdraws; tern dns lists it disabled.
    std::fs::write(&drain, b"")?;
    dns.wait("edge-a", "disabled").await?;
    pair.wait_withdrawn().await;
    // Back: down, then up after rise, announcing again.
    std::fs::remove_file(&drain)?;
    dns.wait("edge-a", "up").await?;
    pair.wait_as_path(&[EDGE_AS]).await;

    // B leaves: the table says so.
    let status = tokio::task::spawn_blocking(move || b.terminate(PATIENCE))
        .await?
        .context("edge B still running after SIGTERM")?;
    ensure!(status.success(), "edge B exited with {status}");
    dns.wait("edge-b", "disabled").await?;

    // A is the last announcing site: its SIGTERM reports disabled, but the guard
    // keeps the route.
    let logs = a.logs.clone();
    let status = tokio::task::spawn_blocking(move || a.terminate(PATIENCE))
        .await?
        .context("edge A still running after SIGTERM")?;
    ensure!(status.success(), "edge A exited with {status}");
    dns.wait("edge-a", "disabled").await?;
    let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
    ensure!(logs.contains("anycast guard held"), "{logs}");
    let row = pair
        .edge
        .client()
        .show_protocol(&ProtocolName::from_static("anycast4"))
        .await?;
    ensure!(
        row.state == ProtocolState::Up,
        "anycast4 is {:?}\n{logs}",
        row.state
    );
    pair.wait_as_path(&[EDGE_AS]).await;
    Ok(())
}
