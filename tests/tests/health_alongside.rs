//! `tern health` alongside a real `tern edge` (`[health] runner = "tern-health"`),
//! driving a real BIRD pair (`tern_health::testing`) on loopback (issue 6):
//!
//! - `tern_health_withdraws_a_frozen_or_killed_edge`: once the edge is up the router
//!   learns the anycast prefix. SIGSTOP the log: the edge's link is still up, but the
//!   log answers no ping (`/readyz?ping`), so the route is withdrawn; SIGCONT, and it is
//!   announced again. SIGSTOP the edge: `tern health`'s probes fail, and it
//!   withdraws; SIGCONT: it rises and announces again. The thawed edge's timers fire
//!   as late as it was frozen: it counts a stall on `/metrics`, and `tern health`'s
//!   `load` check fails on it (the event loop's lag, measured by the edge on its own
//!   runtime). SIGKILL the edge: withdrawn;
//!   a new edge on the same port: announced again. Then SIGTERM to the edge, with a
//!   client connected: the edge's anycast protocol is already down when the client is
//!   told to go elsewhere (the edge waits one probe cycle for `tern health`), and the
//!   edge exits 0. Finally SIGTERM to `tern health` itself (with the edge back): it
//!   leaves, the route is withdrawn and it exits 0.
//!
//! With the loop in the edge (runner "edge", tests/drain.rs) none of the first two
//! could work: a frozen or dead edge cannot withdraw itself. How long each withdrawal
//! took is printed, not asserted.
//!
//! ```text
//!  tern health ──WS probe, /readyz, /metrics──▶ tern edge ──▶ tern log
//!       └──control socket──▶ edge BIRD ──BGP──▶ router BIRD
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tern_client::{Client, ClientConfig, ConnectionState};
use tern_health::bird::{ProtocolName, ProtocolState};
use tern_health::testing::{EDGE_AS, Pair};
use tern_tests::{EdgeProcess, HealthProcess, LogProcess, TEST_KEY, http};

/// Longest wait for anything here.
const PATIENCE: Duration = Duration::from_secs(30);

/// The edge's config: a link that outlives this test when the log goes silent (the
/// log node's own limit is 30 s), and `[health]` run by `tern health`, with quick
/// probes and the BIRD of `pair`.
fn health_section(pair: &Pair) -> String {
    format!(
        "[log]\nidle_timeout = \"60s\"\n\n[health]\nenabled = true\nrunner = \"tern-health\"\nprobe_key = {TEST_KEY:?}\n\
         interval = \"200ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\ndrain_timeout = \"5s\"\n\
         max_event_loop_lag = \"300ms\"\n\
         [health.bird]\nsocket = {:?}\ntimeout = \"1s\"\nmin_announcing = 0\n",
        pair.edge.socket().display().to_string()
    )
}

/// Whether the edge BIRD's `anycast4` protocol is up (announcing).
async fn announcing(pair: &Pair) -> anyhow::Result<bool> {
    let row = pair
        .edge
        .client()
        .show_protocol(&ProtocolName::from_static("anycast4"))
        .await?;
    Ok(row.state == ProtocolState::Up)
}

/// Starts an edge named `edge-a` on `listen` with `extra` config.
fn start_edge(
    dir: &Path,
    listen: Option<SocketAddr>,
    log: &LogProcess,
    extra: &str,
) -> anyhow::Result<EdgeProcess> {
    match listen {
        Some(listen) => EdgeProcess::start_at(dir, "edge-a", listen, log.addr, &log.cert, extra),
        None => EdgeProcess::start(dir, "edge-a", log.addr, &log.cert, extra),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_health_withdraws_a_frozen_or_killed_edge() -> anyhow::Result<()> {
    let pair = Pair::start().await;
    pair.wait_withdrawn().await;
    let dir = tempfile::tempdir()?;
    let log = LogProcess::start(&dir.path().join("log"))?;
    let section = health_section(&pair);
    let edge = start_edge(dir.path(), None, &log, &section)?;
    let addr = edge.addr;
    let health = HealthProcess::start(&dir.path().join("edge-a.toml"), addr)?;
    pair.wait_as_path(&[EDGE_AS]).await;
    eprintln!("edge up and announced");

    // The log frozen: the link stays up until QUIC's idle timeout, but the ping that
    // `/readyz?ping` sends is not answered.
    log.freeze();
    let frozen = Instant::now();
    pair.wait_withdrawn().await;
    eprintln!("withdrawn {:?} after the log froze", frozen.elapsed());
    // What makes this the ping's doing: the link itself is still up (its idle timeout
    // is 30 s here, longer than any wait of this test), so plain /readyz still says
    // ready.
    let plain = http::get(addr, "/readyz", None).await?;
    ensure!(
        plain.status == 200,
        "withdrawn only once the link itself went down: /readyz {} {}",
        plain.status,
        plain.body
    );
    log.signal(libc::SIGCONT);
    pair.wait_as_path(&[EDGE_AS]).await;
    eprintln!("announced again once the log thawed");

    // Frozen: only a process alongside can notice.
    let load_failures = async || {
        let text = http::get(health.metrics, "/metrics", None).await?.body;
        let failures = http::metric(&text, r#"tern_health_probe_failures_total{check="load"}"#);
        anyhow::Ok((failures, text))
    };
    let edge_stalls = async || {
        let text = http::get(addr, "/metrics", None).await?.body;
        anyhow::Ok(http::metric(&text, "tern_edge_event_loop_stalls_total"))
    };
    let (load_failures_before, _) = load_failures().await?;
    let stalls_before = edge_stalls().await?;
    edge.freeze();
    let frozen = Instant::now();
    pair.wait_withdrawn().await;
    eprintln!("frozen edge withdrawn after {:?}", frozen.elapsed());
    edge.signal(libc::SIGCONT);
    pair.wait_as_path(&[EDGE_AS]).await;
    eprintln!("thawed edge announced again");
    // Frozen for longer than max_event_loop_lag: a stall, seen by the edge and by
    // `tern health`'s load check (nothing else fails it: no client is connected).
    let stalls = edge_stalls().await?.saturating_sub(stalls_before);
    ensure!(stalls >= 1, "the edge counted no stall after a freeze");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (failures, text) = load_failures().await?;
        if failures > load_failures_before {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "tern health's load check never failed on the stall\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("the stall ({stalls}) failed tern health's load check");

    // Killed.
    edge.kill();
    let killed = Instant::now();
    pair.wait_withdrawn().await;
    eprintln!("killed edge withdrawn after {:?}", killed.elapsed());
    let edge = start_edge(dir.path(), Some(addr), &log, &section)?;
    pair.wait_as_path(&[EDGE_AS]).await;
    eprintln!("restarted edge announced again");

    // SIGTERM with a client: withdrawn before the client is sent elsewhere.
    let client = Client::connect(
        ClientConfig::new(edge.ws_url(), TEST_KEY)
            .client_id("alongside")
            .reconnect_backoff(Duration::from_secs(5), Duration::from_secs(5)),
    )
    .await?;
    let mut state = client.state();
    tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await
    .context("the client never connected")??;
    let logs = edge.logs.clone();
    let exit = tokio::task::spawn_blocking(move || edge.terminate(PATIENCE));
    tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| !matches!(s, ConnectionState::Connected { .. })),
    )
    .await
    .context("the client was never sent away")??;
    let when_told = announcing(&pair).await?;
    let status = exit.await?.context("the edge still runs after SIGTERM")?;
    let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
    ensure!(
        !when_told,
        "anycast4 still announced when the client was sent elsewhere\n{logs}\n--- tern health\n{}",
        health.log_text()
    );
    ensure!(status.success(), "the edge exited with {status}\n{logs}");
    pair.wait_withdrawn().await;
    drop(client);

    // tern health stopped: it leaves.
    let _edge = start_edge(dir.path(), Some(addr), &log, &section)?;
    pair.wait_as_path(&[EDGE_AS]).await;
    let health_logs = health.logs.clone();
    let status = tokio::task::spawn_blocking(move || health.terminate(PATIENCE))
        .await?
        .context("tern health still runs after SIGTERM")?;
    let health_logs = health_logs.lock().map(|l| l.join("\n")).unwrap_or_default();
    ensure!(
        status.success(),
        "tern health exited with {status}\n{health_logs}"
    );
    ensure!(
        !announcing(&pair).await?,
        "tern health exited and left the route announced\n{health_logs}"
    );
    pair.wait_withdrawn().await;
    Ok(())
}
