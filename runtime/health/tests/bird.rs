//! The anycast controller against real BIRD daemons (Debian `bird2`, installed by
//! `scripts/setup.sh`): each test starts an "edge" BIRD holding the anycast prefix in
//! two static protocols and a "router" BIRD, joined by an eBGP session on loopback
//! (edge 127.0.0.1, router 127.0.0.2, unprivileged ports picked free), and reads the
//! router's table through tern-health's own client.
//!
//! BIRD needs no root for this (no kernel protocol, ports above 1024, sockets in a
//! temporary directory), so these tests never skip: a missing `bird` fails them with a
//! message naming `scripts/setup.sh`. Neither BIRD has a kernel protocol, so nothing
//! reaches the host's routing table; each test checks that at the end. Every wait is
//! bounded; the daemons are killed when a test ends, passing or not.
//!
//! ```text
//!   AnycastController ──socket──▶ edge BIRD (anycast4, anycast4_prepend: static 203.0.113.10/32)
//!                                     │ eBGP AS65001 → AS65000, 127.0.0.1:p1 ↔ 127.0.0.2:p2
//!   test ──BirdClient──socket──▶ router BIRD: show route for 203.0.113.10/32 all
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_health::bird::{BirdClient, BirdError, Prefix, ProtocolName, ProtocolState, Route};
use tern_health::{
    Announcement, AnycastAction, AnycastController, ControllerError, HealthSettings, HealthState,
    Reconciled, StaticSiteCount,
};

/// The anycast prefix (TEST-NET-3).
const ANYCAST: &str = "203.0.113.10/32";
/// The edge's AS; the router is AS 65000.
const EDGE_AS: u32 = 65001;
/// Longest wait for anything BIRD does (start, BGP session, route propagation).
const WAIT: Duration = Duration::from_secs(30);

/// The `bird` binary: on PATH, or where Debian's `bird2` puts it.
fn bird_binary() -> PathBuf {
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
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// BGP timers short enough for tests: reconnect within a second or two.
const TIMERS: &str = "connect delay time 1; connect retry time 2; error wait time 1, 2; \
                      hold time 6; keepalive time 2;";

fn edge_config(edge_port: u16, router_port: u16) -> String {
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

fn router_config(edge_port: u16, router_port: u16) -> String {
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
struct Bird {
    name: &'static str,
    dir: PathBuf,
    child: Option<Child>,
}

impl Bird {
    /// Writes `config` and starts BIRD on it; returns once its socket answers.
    async fn start(dir: &Path, name: &'static str, config: &str) -> Bird {
        std::fs::write(dir.join(format!("{name}.conf")), config).expect("write BIRD config");
        let mut bird = Bird {
            name,
            dir: dir.to_owned(),
            child: None,
        };
        bird.spawn().await;
        bird
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(format!("{}.ctl", self.name))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    fn client(&self) -> BirdClient {
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
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Kills and starts again on the same config (its defaults: both disabled).
    async fn restart(&mut self) {
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
struct Pair {
    _dir: tempfile::TempDir,
    edge: Bird,
    router: Bird,
}

impl Pair {
    async fn start() -> Pair {
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
    async fn wait_established(&self) {
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
    async fn wait_router(&self, what: &str, done: impl Fn(&[Route]) -> bool) -> Vec<Route> {
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

    async fn wait_as_path(&self, path: &[u32]) {
        self.wait_router(&format!("AS path {path:?}"), |routes| {
            routes
                .iter()
                .any(|r| r.primary && r.network == ANYCAST && r.as_path().as_deref() == Some(path))
        })
        .await;
    }

    async fn wait_withdrawn(&self) {
        self.wait_router("the prefix withdrawn", |routes| routes.is_empty())
            .await;
    }

    fn controller(
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

    fn logs(&self) -> String {
        format!(
            "--- edge BIRD log\n{}--- router BIRD log\n{}",
            self.edge.log(),
            self.router.log()
        )
    }
}

/// The host's main routing table (`/proc/net/route`) has no route to the prefix.
fn assert_host_table_untouched() {
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

fn applied(r: &Reconciled) -> Option<Announcement> {
    match r {
        Reconciled::Applied { to, .. } => Some(*to),
        _ => None,
    }
}

#[tokio::test]
async fn announce_deprefer_and_withdraw_reach_the_router() {
    let pair = Pair::start().await;
    pair.wait_withdrawn().await;
    let mut c = pair.controller(
        AnycastAction::Deprefer,
        1,
        Arc::new(StaticSiteCount::new(3)),
    );

    let r = c.reconcile(HealthState::Up).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Announce), "{r:?}");
    pair.wait_as_path(&[EDGE_AS]).await;
    let mut edge = pair.edge.client();
    let own = edge
        .show_route_protocol(&ProtocolName::from_static("anycast4"))
        .await
        .expect("edge answers");
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(
        (own[0].network.as_str(), own[0].destination.as_str()),
        (ANYCAST, "blackhole")
    );
    assert_eq!(
        c.reconcile(HealthState::Up).await.expect("reconciles"),
        Reconciled::InSync(Announcement::Announce)
    );

    let r = c.reconcile(HealthState::Down).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Deprefer), "{r:?}");
    pair.wait_as_path(&[EDGE_AS, EDGE_AS, EDGE_AS]).await;

    let r = c.reconcile(HealthState::Up).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Announce), "{r:?}");
    pair.wait_as_path(&[EDGE_AS]).await;

    let r = c
        .reconcile(HealthState::Disabled)
        .await
        .expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Withdraw), "{r:?}");
    pair.wait_withdrawn().await;

    let m = c.metrics();
    assert_eq!((m.bird_errors_total, m.guard_holds_total), (0, 0));
    assert_eq!(m.announcing, Some(Announcement::Withdraw));
    assert_host_table_untouched();
}

#[tokio::test]
async fn withdraw_mode_takes_the_prefix_away() {
    let pair = Pair::start().await;
    let mut c = pair.controller(
        AnycastAction::Withdraw,
        1,
        Arc::new(StaticSiteCount::new(2)),
    );
    c.reconcile(HealthState::Up).await.expect("reconciles");
    pair.wait_as_path(&[EDGE_AS]).await;
    let r = c.reconcile(HealthState::Down).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Withdraw), "{r:?}");
    pair.wait_withdrawn().await;
    assert_host_table_untouched();
}

#[tokio::test]
async fn a_restarted_edge_bird_is_put_back_and_an_unreachable_one_freezes() {
    let mut pair = Pair::start().await;
    let mut c = pair.controller(
        AnycastAction::Withdraw,
        1,
        Arc::new(StaticSiteCount::new(3)),
    );
    c.reconcile(HealthState::Up).await.expect("reconciles");
    pair.wait_as_path(&[EDGE_AS]).await;

    pair.edge.kill();
    pair.wait_withdrawn().await;
    let e = c
        .reconcile(HealthState::Up)
        .await
        .expect_err("BIRD is gone");
    assert!(
        matches!(e, ControllerError::Bird(ref b) if b.is_retryable()),
        "{e}"
    );
    assert!(c.metrics().frozen);
    assert_eq!(c.metrics().bird_errors_total, 1);

    // BIRD comes back with its config's defaults: nothing announced.
    pair.edge.restart().await;
    let r = c.reconcile(HealthState::Up).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Announce), "{r:?}");
    assert!(!c.metrics().frozen);
    pair.wait_established().await;
    pair.wait_as_path(&[EDGE_AS]).await;
    assert_host_table_untouched();
}

#[tokio::test]
async fn the_guard_keeps_the_last_site_announcing() {
    let pair = Pair::start().await;
    let sites = Arc::new(StaticSiteCount::new(1));
    let mut c = pair.controller(AnycastAction::Withdraw, 1, Arc::clone(&sites));
    c.reconcile(HealthState::Up).await.expect("reconciles");
    pair.wait_as_path(&[EDGE_AS]).await;

    let r = c.reconcile(HealthState::Down).await.expect("reconciles");
    assert_eq!(
        r,
        Reconciled::GuardHeld {
            announcing_sites: 1,
            min_announcing: 1
        }
    );
    let mut edge = pair.edge.client();
    let row = edge
        .show_protocol(&ProtocolName::from_static("anycast4"))
        .await
        .expect("edge answers");
    assert_eq!(
        row.state,
        ProtocolState::Up,
        "the guard left anycast4 enabled"
    );
    pair.wait_as_path(&[EDGE_AS]).await;
    assert_eq!(c.metrics().guard_holds_total, 1);

    sites.set_unknown();
    let e = c
        .reconcile(HealthState::Down)
        .await
        .expect_err("count unknown");
    assert!(matches!(e, ControllerError::SiteCount(_)), "{e}");
    assert_eq!(
        edge.show_protocol(&ProtocolName::from_static("anycast4"))
            .await
            .expect("edge answers")
            .state,
        ProtocolState::Up,
        "frozen: still announcing"
    );

    sites.set(2);
    let r = c.reconcile(HealthState::Down).await.expect("reconciles");
    assert_eq!(applied(&r), Some(Announcement::Withdraw), "{r:?}");
    pair.wait_withdrawn().await;
    assert_host_table_untouched();
}

#[tokio::test]
async fn unknown_protocols_are_typed_errors() {
    let pair = Pair::start().await;
    let mut edge = pair.edge.client();
    let nosuch = ProtocolName::from_static("nosuch");
    for e in [
        edge.enable(&nosuch).await.expect_err("no such protocol"),
        edge.show_protocol(&nosuch)
            .await
            .expect_err("no such protocol"),
        edge.show_route_protocol(&nosuch)
            .await
            .expect_err("no such protocol"),
    ] {
        assert!(
            matches!(e, BirdError::NoSuchProtocol(ref n) if *n == nosuch),
            "{e}"
        );
    }
    let e = edge
        .command("show nonsense")
        .await
        .expect_err("syntax error");
    assert!(
        matches!(e, BirdError::Refused { code, .. } if code.value() == 9001),
        "{e}"
    );
    let rows = edge.show_protocols().await.expect("answers after errors");
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["device1", "anycast4", "anycast4_prepend", "uplink"]);
}
