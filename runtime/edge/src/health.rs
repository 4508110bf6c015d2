//! The edge as the health loop sees it ([`tern_health::ProbedEdge`]): where its
//! listener is, its link to the log, its load, and how to send its clients elsewhere
//! without stopping it (a drain generation every connection driver watches).
//!
//! ```text
//!  HealthDriver ──ProbedEdge──▶ HealthTarget ─┬─ link(): Metrics::link_is_up, Functions::is_caught_up
//!                                             ├─ load(): open connections, limits.max_connections
//!                                             └─ send_clients_elsewhere(): drain generation += 1
//!                                                   └─▶ every WS / SSE driver: DISCONNECTED ShuttingDown, elsewhere
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tern_health::{LinkStatus, Load, ProbedEdge};
use tokio::sync::watch;

use crate::server::Shared;

/// The running edge, for its health loop.
#[derive(Debug)]
pub(crate) struct HealthTarget {
    pub(crate) shared: Arc<Shared>,
    pub(crate) addr: SocketAddr,
    /// Bumped to tell every connection open now to go elsewhere.
    pub(crate) drain: Arc<watch::Sender<u64>>,
}

impl ProbedEdge for HealthTarget {
    fn listen_addr(&self) -> SocketAddr {
        self.addr
    }

    fn link(&self) -> LinkStatus {
        LinkStatus {
            up: self.shared.metrics.link_is_up(),
            caught_up: self.shared.functions.is_caught_up(),
        }
    }

    fn load(&self) -> Load {
        Load {
            connections: self.shared.metrics.open_connections(),
            max_connections: u64::try_from(self.shared.config.limits.max_connections)
                .unwrap_or(u64::MAX),
        }
    }

    fn send_clients_elsewhere(&self) {
        self.drain.send_modify(|generation| *generation += 1);
    }
}
