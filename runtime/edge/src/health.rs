//! The edge as the health loop sees it ([`tern_health::ProbedEdge`]): where its
//! listener is, its link to the log, its load, and how to send its clients elsewhere
//! without stopping it (a drain generation every connection driver watches).
//!
//! With `[health] runner = "tern-health"` the loop runs in `tern health` instead, and
//! the edge keeps only the client side of a drain: [`follow_drain_file`] sends clients
//! elsewhere when the drain file appears, and shutdown waits [`handover`] after turning
//! `/readyz` 503, in both cases so that `tern health` withdraws the route before the
//! clients reconnect (through anycast, they would land here again otherwise).
//!
//! ```text
//!  HealthDriver ──ProbedEdge──▶ HealthTarget ─┬─ refresh(): a ping to the log over the link (health.timeout)
//!                                             ├─ link(): Metrics::link_is_up, the ping answered, Functions::is_caught_up
//!                                             ├─ load(): open connections, limits.max_connections
//!                                             ├─ event_loop(): the edge's LagMonitor (also on /metrics)
//!                                             └─ send_clients_elsewhere(): drain generation += 1
//!                                                   └─▶ every WS / SSE driver: DISCONNECTED ShuttingDown, elsewhere
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tern_config::HealthConfig;
use tern_health::{EventLoop, LinkStatus, Load, ProbedEdge};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::server::Shared;

/// The running edge, for its health loop.
#[derive(Debug)]
pub(crate) struct HealthTarget {
    pub(crate) shared: Arc<Shared>,
    pub(crate) addr: SocketAddr,
    /// Bumped to tell every connection open now to go elsewhere.
    pub(crate) drain: Arc<watch::Sender<u64>>,
    /// Whether the log answered the last probe's ping.
    pub(crate) pinged: AtomicBool,
}

/// One ping to the log over the link, bounded by `health.timeout`: `Ok` once the
/// log answered, else why not.
pub(crate) async fn ping_log(shared: &Shared) -> Result<(), String> {
    let Some(client) = shared.link.client() else {
        return Err("the link to the log is down".to_owned());
    };
    let timeout = shared.config.health.timeout;
    match tokio::time::timeout(timeout, client.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("the log did not answer a ping: {error}")),
        Err(_) => Err(format!("the log did not answer a ping within {timeout:?}")),
    }
}

impl ProbedEdge for HealthTarget {
    fn listen_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Up only when the last refresh's ping was answered: a frozen or unreachable
    /// log is noticed within one probe, not at the link's idle timeout.
    fn link(&self) -> LinkStatus {
        LinkStatus {
            up: self.shared.metrics.link_is_up() && self.pinged.load(Ordering::Relaxed),
            caught_up: self.shared.functions.is_caught_up(),
        }
    }

    async fn refresh(&self) {
        self.pinged.store(false, Ordering::Relaxed);
        match ping_log(&self.shared).await {
            Ok(()) => self.pinged.store(true, Ordering::Relaxed),
            Err(reason) => tracing::debug!(%reason, "link probe failed"),
        }
    }

    fn load(&self) -> Load {
        Load {
            connections: self.shared.metrics.open_connections(),
            max_connections: u64::try_from(self.shared.config.limits.max_connections)
                .unwrap_or(u64::MAX),
        }
    }

    fn event_loop(&self) -> Option<EventLoop> {
        Some(self.shared.lag.event_loop())
    }

    fn send_clients_elsewhere(&self) {
        self.drain.send_modify(|generation| *generation += 1);
    }
}

/// How long `tern health` may take to act on a drain: its next probe (up to
/// `interval` away) sees it, and after the probe (`timeout`) it tells BIRD (one
/// `[health.bird] timeout`).
pub(crate) fn handover(config: &HealthConfig) -> Duration {
    let bird = config
        .bird
        .as_ref()
        .map_or(Duration::ZERO, |bird| bird.timeout);
    config.interval + config.timeout + bird
}

/// `runner = "tern-health"`: looks at the drain file every `interval`; when it
/// appears, waits [`handover`] and sends every client elsewhere. Ends at shutdown.
pub(crate) async fn follow_drain_file(
    path: PathBuf,
    edge: Arc<HealthTarget>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = &edge.shared.config.health;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut present = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = match tokio::fs::try_exists(&path).await {
            Ok(now) => now,
            Err(error) => {
                warn!(path = %path.display(), %error, "cannot look at the drain file");
                present
            }
        };
        if now && !present {
            let wait = handover(config);
            info!(
                ?wait,
                "drain file present: clients go elsewhere once tern health has withdrawn this edge"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => edge.send_clients_elsewhere(),
                _ = shutdown.changed() => return,
            }
        }
        present = now;
    }
}
