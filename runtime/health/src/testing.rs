//! Real BIRD daemons for tests (feature `test-support`): an "edge" BIRD holding the
//! anycast prefix [`ANYCAST`] in two static protocols (`anycast4`, `anycast4_prepend`,
//! both starting disabled) and a "router" BIRD, joined by an eBGP session on loopback
//! (edge 127.0.0.1, router 127.0.0.2, unprivileged ports picked free), read through
//! this crate's own client. Shared by tern-health's tests and tern-tests.
//!
//! BIRD needs no root for this (no kernel protocol, ports above 1024, sockets in a
//! temporary directory): a missing `bird` panics with a message naming
//! `scripts/setup.sh`. Neither BIRD has a kernel protocol, so nothing reaches the
//! host's routing table ([`assert_host_table_untouched`] checks). Every wait is
//! bounded by [`WAIT`] and panics past it (this is test code); the daemons are killed
//! when dropped.
//!
//! ```text
//!   AnycastController ──socket──▶ edge BIRD (anycast4, anycast4_prepend: static 203.0.113.10/32)
//!                                     │ eBGP AS65001 → AS65000, 127.0.0.1:p1 ↔ 127.0.0.2:p2
//!   test ──BirdClient──socket──▶ router BIRD: show route for 203.0.113.10/32 all
//! ```

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bird::{BirdClient, Prefix, ProtocolName, ProtocolState, Route};
use crate::{AnycastAction, AnycastController, HealthSettings, StaticSiteCount};

/// The anycast prefix (TEST-NET-3).
pub const ANYCAST: &str = "203.0.113.10/32";
/// The edge's AS; the router is AS 65000.
pub const EDGE_AS: u32 = 65001;
/// Longest wait for anything BIRD does (start, BGP session, route propagation).
pub const WAIT: Duration = Duration::from_secs(30);

/// The `bird` binary: on PATH, or where Debian's `bird2` puts it.
pub fn bird_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bird"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/bird")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "BIRD is not installed: no `bird` on PATH nor /usr/sbin/bird. \
                 Run scripts/setup.sh (it installs Debian's bird2)."
            )
        })
}

/// A free TCP port on `ip` (released again, so BIRD can bind it).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// BGP timers short enough for tests: reconnect within a second or two.
const TIMERS: &str = "connect delay time 1; connect retry time 2; error wait time 1, 2; \
                      hold time 6; keepalive time 2;";

/// The edge BIRD's config: both anycast protocols disabled, the prepending export
/// filter, eBGP from 127.0.0.1:`edge_port` to the router at 127.0.0.2:`router_port`.
pub fn edge_config(edge_port: u16, router_port: u16) -> String {
    format!(
        r#"router id 10.255.0.1;
log stderr all;
protocol device {{ }}
# Both start disabled: the controller decides what is announced.
protocol static anycast4 {{
  disabled;
  ipv4;
  route {ANYCAST} blackhole;
}}
protocol static anycast4_prepend {{
  disabled;
  ipv4;
  route {ANYCAST} blackhole;
}}
filter anycast_export {{
  if proto = "anycast4_prepend" then {{
    bgp_path.prepend({EDGE_AS});
    bgp_path.prepend({EDGE_AS});
  }}
  if proto = "anycast4" || proto = "anycast4_prepend" then accept;
  reject;
}}
protocol bgp uplink {{
  local 127.0.0.1 port {edge_port} as {EDGE_AS};
  neighbor 127.0.0.2 port {router_port} as 65000;
  multihop;
  {TIMERS}
  ipv4 {{ import none; export filter anycast_export; }};
}}
"#
    )
}

/// The router BIRD's config: eBGP from 127.0.0.2:`router_port` to the edge, importing
/// everything, exporting nothing.
pub fn router_config(edge_port: u16, router_port: u16) -> String {
    format!(
        r#"router id 10.255.0.2;
log stderr all;
protocol device {{ }}
protocol bgp edge1 {{
  local 127.0.0.2 port {router_port} as 65000;
  neighbor 127.0.0.1 port {edge_port} as {EDGE_AS};
  multihop;
  {TIMERS}
  ipv4 {{ import all; export none; }};
}}
"#
    )
}

/// One `bird -f` process, killed on drop.
pub struct Bird {
    name: &'static str,
    dir: PathBuf,
    child: Option<Child>,
}

impl Bird {
    /// Writes `config` and starts BIRD on it; returns once its socket answers.
    pub async fn start(dir: &Path, name: &'static str, config: &str) -> Bird {
        std::fs::write(dir.join(format!("{name}.conf")), config).expect("write BIRD config");
        let mut bird = Bird {
            name,
            dir: dir.to_owned(),
            child: None,
        };
        bird.spawn().await;
        bird
    }

    /// Its control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("{}.ctl", self.name))
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// A client of its control socket (5 s timeout).
    pub fn client(&self) -> BirdClient {
        BirdClient::new(self.socket(), Duration::from_secs(5))
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", self.name)))
            .expect("open BIRD log");
        let child = Command::new(bird_binary())
            .arg("-f")
            .arg("-c")
            .arg(self.dir.join(format!("{}.conf", self.name)))
            .arg("-s")
            .arg(self.socket())
            .arg("-P")
            .arg(self.dir.join(format!("{}.pid", self.name)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start bird: {e}"));
        self.child = Some(child);
        let mut client = self.client();
        let started = Instant::now();
        loop {
            if client.command("show status").await.is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{} BIRD exited ({status}):\n{}", self.name, self.log());
            }
            assert!(
                started.elapsed() < WAIT,
                "{} BIRD's socket did not answer:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Kills and starts again on the same config (its defaults: both disabled).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An edge BIRD and a router BIRD with a BGP session between them.
pub struct Pair {
    _dir: tempfile::TempDir,
    /// The edge's BIRD (holds the anycast protocols).
    pub edge: Bird,
    /// The router's BIRD.
    pub router: Bird,
}

impl Pair {
    /// Starts both in a temporary directory and waits until their session is up.
    pub async fn start() -> Pair {
        let dir = tempfile::tempdir().expect("temp dir");
        let (edge_port, router_port) = (free_port("127.0.0.1"), free_port("127.0.0.2"));
        let router =
            Bird::start(dir.path(), "router", &router_config(edge_port, router_port)).await;
        let edge = Bird::start(dir.path(), "edge", &edge_config(edge_port, router_port)).await;
        let pair = Pair {
            _dir: dir,
            edge,
            router,
        };
        pair.wait_established().await;
        pair
    }

    /// Waits until the router's session to the edge is established.
    pub async fn wait_established(&self) {
        let mut router = self.router.client();
        let name = ProtocolName::from_static("edge1");
        let started = Instant::now();
        loop {
            if let Ok(row) = router.show_protocol(&name).await
                && row.state == ProtocolState::Up
                && row.details.contains("Established")
            {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "BGP session never came up\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the router's routes to the anycast prefix satisfy `done`; returns them.
    pub async fn wait_router(&self, what: &str, done: impl Fn(&[Route]) -> bool) -> Vec<Route> {
        let mut router = self.router.client();
        let prefix: Prefix = ANYCAST.parse().expect("prefix");
        let started = Instant::now();
        loop {
            let routes = router
                .show_route_for(&prefix)
                .await
                .expect("router answers");
            if done(&routes) {
                return routes;
            }
            assert!(
                started.elapsed() < WAIT,
                "router never saw {what}; it has {routes:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the router's best route to the prefix has AS path `path`.
    pub async fn wait_as_path(&self, path: &[u32]) {
        self.wait_router(&format!("AS path {path:?}"), |routes| {
            routes
                .iter()
                .any(|r| r.primary && r.network == ANYCAST && r.as_path().as_deref() == Some(path))
        })
        .await;
    }

    /// Waits until the router has no route to the prefix.
    pub async fn wait_withdrawn(&self) {
        self.wait_router("the prefix withdrawn", |routes| routes.is_empty())
            .await;
    }

    /// A controller of the edge BIRD with `action` and `min_announcing`, guarded by
    /// `sites`.
    pub fn controller(
        &self,
        action: AnycastAction,
        min_announcing: u32,
        sites: Arc<StaticSiteCount>,
    ) -> AnycastController<Arc<StaticSiteCount>> {
        let settings = HealthSettings {
            bird_socket: self.edge.socket(),
            bird_timeout: Duration::from_secs(5),
            action,
            min_announcing,
            ..HealthSettings::default()
        };
        AnycastController::new(&settings, sites).expect("valid settings")
    }

    /// Both daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- edge BIRD log\n{}--- router BIRD log\n{}",
            self.edge.log(),
            self.router.log()
        )
    }
}

/// The host's main routing table (`/proc/net/route`) has no route to the prefix.
pub fn assert_host_table_untouched() {
    let table = std::fs::read_to_string("/proc/net/route").expect("read /proc/net/route");
    // Destinations are hex in host byte order: 203.0.113.10 is 0A7100CB on little-endian.
    let dest = format!("{:08X}", u32::from_ne_bytes([203, 0, 113, 10]));
    assert!(
        !table
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(dest.as_str())),
        "the anycast prefix reached the host's routing table:\n{table}"
    );
}
