//! The anycast test topology of issue 6 in network namespaces, for
//! tests/tests/topology.rs.
//!
//! [`Topology::up`] runs `scripts/topology.sh up PREFIX` (the one place that knows
//! the namespaces and addresses: it prints the plan, which [`Plan`] reads) with a
//! prefix unique to the run (`tt<pid><n>`), and writes the example configs of
//! `edge-config/examples/topology/` into a temporary directory (their
//! `/tmp/tern-topology` becomes that directory). [`Topology::run_in_client`] runs
//! the test's async body on a thread moved into the client namespace, on a
//! current-thread tokio runtime, so every socket the body opens (tern-client
//! clients, DNS queries, HTTP GETs) belongs to that namespace. Inside it,
//! [`Topology::start`] starts every process with `ip netns exec NS ...`: BIRD in the
//! router and in each edge namespace, `tern log`, `tern dns`, and per edge `tern edge`
//! and `tern health` (the same config file). The router's routes to the anycast
//! prefix are read over its BIRD control socket ([`Topology::anycast_routes`]).
//!
//! Dropping the [`Topology`] (also while a test panics) kills every process it started
//! and runs `topology.sh down PREFIX`; namespaces left by a test process that was
//! itself killed are removed by the next [`Topology::up`]. One topology runs at a time
//! per test process (a lock), so the figures tests print are not skewed by another.
//!
//! ```text
//!          client ─┐            ┌─ edge1: BIRD, tern edge, tern health  (lo: anycast)
//!   (test thread)  │            │
//!             log ─┼─ router ───┼─ edge2: BIRD, tern edge, tern health  (lo: anycast)
//!             dns ─┘  (BIRD)    └─ edge3: BIRD, tern edge, tern health  (lo: anycast)
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use tern_health::bird::{ProtocolState, Route};
use tern_health::{BirdClient, Prefix, ProtocolName};

use crate::{Logs, tern_binary};

/// The directory the example configs name; replaced by the topology's own.
pub const CONFIG_ROOT: &str = "/tmp/tern-topology";
/// The port every edge listens on (`[edge] listen` of the example configs).
pub const EDGE_PORT: u16 = 8080;
/// The port `tern dns` answers on (`listen` of `dns.toml`).
pub const DNS_PORT: u16 = 53;
/// The port of `tern dns`'s health report listener (`report_listen`).
pub const DNS_REPORT_PORT: u16 = 5380;
/// The number of edges.
pub const EDGES: usize = 3;
/// Longest wait for a process to start or for BGP to converge.
const START_WAIT: Duration = Duration::from_secs(60);

/// Why topology tests cannot run here, or `None` when they can: they need root (with
/// the capabilities to make namespaces), `ip` (iproute2) and `bird` (Debian's bird2,
/// installed by scripts/setup.sh).
pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root: network namespaces need root".into());
    }
    if !has_namespace_capabilities() {
        return Some(
            "root without CAP_SYS_ADMIN and CAP_NET_ADMIN (a restricted container?): \
             `ip netns add` would be refused"
                .into(),
        );
    }
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !ip.is_ok_and(|s| s.success()) {
        return Some("`ip` (iproute2) is missing".into());
    }
    if bird_binary().is_none() {
        return Some("`bird` is missing: run scripts/setup.sh (it installs bird2)".into());
    }
    None
}

/// Whether this process's effective capabilities (`CapEff` of `/proc/self/status`)
/// hold CAP_NET_ADMIN (bit 12) and CAP_SYS_ADMIN (bit 21), which `ip netns` needs.
fn has_namespace_capabilities() -> bool {
    const NEEDED: u64 = (1 << 12) | (1 << 21);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & NEEDED == NEEDED)
}

/// The `bird` binary: on PATH, or where Debian's `bird2` puts it.
fn bird_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bird"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/bird")).filter(|p| p.is_file()))
}

/// The workspace root (the parent of `tests/`).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// `edge-config/examples/topology/`: the configs every process of the topology runs.
pub fn examples_dir() -> PathBuf {
    workspace().join("edge-config/examples/topology")
}

/// `scripts/topology.sh`.
fn script() -> PathBuf {
    workspace().join("scripts/topology.sh")
}

/// Runs `topology.sh ARGS`; returns its stdout.
fn run_script(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running scripts/topology.sh")?;
    ensure!(
        out.status.success(),
        "topology.sh {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).context("topology.sh printed something that is not UTF-8")
}

/// The names and addresses `topology.sh` printed (`key=value` lines).
#[derive(Clone, Debug)]
pub struct Plan(BTreeMap<String, String>);

impl Plan {
    /// Reads `key=value` lines.
    pub fn parse(text: &str) -> Plan {
        Plan(
            text.lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> anyhow::Result<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("topology.sh printed no {key}= in its plan: {self:?}"))
    }

    /// The namespace of `role` (`router`, `client`, `log`, `dns`, `edge1`, ...).
    pub fn ns(&self, role: &str) -> anyhow::Result<String> {
        self.get(&format!("{role}_ns")).map(str::to_owned)
    }

    /// The address of `role` on its link to the router.
    pub fn addr(&self, role: &str) -> anyhow::Result<Ipv4Addr> {
        let text = self.get(&format!("{role}_addr"))?;
        text.parse()
            .with_context(|| format!("{role}_addr={text} is not an IPv4 address"))
    }

    /// The anycast address every edge holds.
    pub fn anycast(&self) -> anyhow::Result<Ipv4Addr> {
        let text = self.get("anycast")?;
        text.parse()
            .with_context(|| format!("anycast={text} is not an IPv4 address"))
    }
}

/// A child process started in a namespace, its output collected in the background.
/// Killed (SIGKILL) when dropped.
pub struct NsProcess {
    what: String,
    child: Mutex<Child>,
    /// Lines it printed on stdout.
    pub stdout: Logs,
    /// Lines it printed on stderr (its logs).
    pub stderr: Logs,
}

impl NsProcess {
    /// Starts `program args` in namespace `ns` (`ip netns exec`, which execs the
    /// program: the child's pid is the program's), named `what` in messages.
    pub fn spawn(ns: &str, program: &Path, args: &[&str], what: &str) -> anyhow::Result<Self> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what} in {ns}"))?;
        let stdout = collect(child.stdout.take());
        let stderr = collect(child.stderr.take());
        Ok(Self {
            what: what.to_owned(),
            child: Mutex::new(child),
            stdout,
            stderr,
        })
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits (at most `timeout`) until it printed a stdout line starting with
    /// `prefix`; returns the rest of the line. Fails early when it exits.
    pub async fn wait_line(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let until = Instant::now() + timeout;
        loop {
            let found = lines(&self.stdout)
                .into_iter()
                .find_map(|l| l.strip_prefix(prefix).map(|rest| rest.trim().to_owned()));
            if let Some(rest) = found {
                return Ok(rest);
            }
            if let Ok(Some(status)) = self.child().try_wait() {
                bail!(
                    "{} exited ({status}) before printing {prefix:?}; its log:\n{}",
                    self.what,
                    self.log_tail(40)
                );
            }
            ensure!(
                Instant::now() < until,
                "{} did not print {prefix:?} within {timeout:?}; its log:\n{}",
                self.what,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (SIGSTOP freezes it, SIGCONT thaws it).
    pub fn signal(&self, signal: libc::c_int) {
        crate::send_signal(&self.child(), signal);
    }

    /// SIGSTOP, and waits (bounded) until the kernel says it is stopped.
    pub fn freeze(&self) {
        crate::freeze(&self.child());
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&self) {
        let mut child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last `n` lines of its stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = lines(&self.stderr);
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Collects the lines of `pipe` in the background.
fn collect(pipe: Option<impl std::io::Read + Send + 'static>) -> Logs {
    let logs: Logs = Arc::default();
    if let Some(pipe) = pipe {
        let kept = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                kept.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
    }
    logs
}

/// A copy of the lines so far.
fn lines(logs: &Logs) -> Vec<String> {
    logs.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// One edge namespace: its BIRD, `tern edge` and `tern health` (restartable).
pub struct Edge {
    /// `edge1`, `edge2` or `edge3`: its `[edge] name`, and the router's BGP protocol
    /// to it.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its unicast address (what `tern dns` answers for it).
    pub addr: Ipv4Addr,
    config: PathBuf,
    bird_socket: PathBuf,
    bird: Mutex<Option<NsProcess>>,
    process: Mutex<Option<NsProcess>>,
    health: Mutex<Option<NsProcess>>,
}

impl Edge {
    /// Where it serves HTTP and WebSocket on its unicast address.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, EDGE_PORT))
    }

    fn slot(slot: &Mutex<Option<NsProcess>>) -> MutexGuard<'_, Option<NsProcess>> {
        slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `tern edge --config` and waits until it listens (a restart after
    /// [`Edge::kill`] or [`Edge::terminate`] too).
    pub async fn start(&self) -> anyhow::Result<()> {
        let config = self.config.display().to_string();
        let process = NsProcess::spawn(
            &self.ns,
            tern_binary(),
            &["edge", "--config", &config],
            &format!("tern edge {}", self.name),
        )?;
        let stdout = Arc::clone(&process.stdout);
        // Any earlier process is gone (killed or exited): replacing it reaps nothing new.
        *Self::slot(&self.process) = Some(process);
        wait_logged_line(
            &stdout,
            "tern edge listening on http://",
            &format!("tern edge {}", self.name),
            || self.log_tail(40),
        )
        .await?;
        Ok(())
    }

    /// Starts `tern health --config` (the edge's file) and waits until it probes.
    pub async fn start_health(&self) -> anyhow::Result<()> {
        let config = self.config.display().to_string();
        let process = NsProcess::spawn(
            &self.ns,
            tern_binary(),
            &["health", "--config", &config],
            &format!("tern health {}", self.name),
        )?;
        let stdout = Arc::clone(&process.stdout);
        let stderr = Arc::clone(&process.stderr);
        *Self::slot(&self.health) = Some(process);
        wait_logged_line(
            &stdout,
            "tern health probing ",
            &format!("tern health {}", self.name),
            || {
                let l = lines(&stderr);
                l[l.len().saturating_sub(40)..].join("\n")
            },
        )
        .await?;
        Ok(())
    }

    /// SIGKILL to `tern edge` (its `tern health` and BIRD keep running).
    pub fn kill(&self) -> anyhow::Result<()> {
        let slot = Self::slot(&self.process);
        slot.as_ref()
            .with_context(|| format!("{} is not running", self.name))?
            .kill();
        Ok(())
    }

    /// SIGSTOP to `tern edge`; returns once it is stopped.
    pub fn freeze(&self) -> anyhow::Result<()> {
        let slot = Self::slot(&self.process);
        slot.as_ref()
            .with_context(|| format!("{} is not running", self.name))?
            .freeze();
        Ok(())
    }

    /// SIGCONT to `tern edge`.
    pub fn thaw(&self) -> anyhow::Result<()> {
        let slot = Self::slot(&self.process);
        slot.as_ref()
            .with_context(|| format!("{} is not running", self.name))?
            .signal(libc::SIGCONT);
        Ok(())
    }

    /// SIGTERM to `tern edge`, then waits (at most `timeout`) for it to exit; its
    /// exit status.
    pub async fn terminate(&self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        Self::slot(&self.process)
            .as_ref()
            .with_context(|| format!("{} is not running", self.name))?
            .signal(libc::SIGTERM);
        let until = Instant::now() + timeout;
        loop {
            let status = Self::slot(&self.process)
                .as_ref()
                .and_then(|p| p.child().try_wait().ok().flatten());
            if let Some(status) = status {
                return Ok(status);
            }
            ensure!(
                Instant::now() < until,
                "{} still runs {timeout:?} after SIGTERM; its log:\n{}",
                self.name,
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `n` lines `tern edge` logged.
    pub fn log_tail(&self, n: usize) -> String {
        Self::slot(&self.process)
            .as_ref()
            .map(|p| p.log_tail(n))
            .unwrap_or_default()
    }

    /// Everything `tern health` logged so far.
    pub fn health_log(&self) -> String {
        Self::slot(&self.health)
            .as_ref()
            .map(|p| lines(&p.stderr).join("\n"))
            .unwrap_or_default()
    }

    /// Kills its processes (SIGCONT first, so a frozen one is not left stopped).
    fn stop_all(&self) {
        for slot in [&self.health, &self.process, &self.bird] {
            if let Some(process) = Self::slot(slot).take() {
                process.signal(libc::SIGCONT);
                process.kill();
            }
        }
    }
}

/// Waits until `stdout` has a line starting with `prefix` (at most [`START_WAIT`]).
async fn wait_logged_line(
    stdout: &Logs,
    prefix: &str,
    what: &str,
    log: impl Fn() -> String,
) -> anyhow::Result<String> {
    let until = Instant::now() + START_WAIT;
    loop {
        if let Some(rest) = lines(stdout)
            .into_iter()
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_owned()))
        {
            return Ok(rest);
        }
        ensure!(
            Instant::now() < until,
            "{what} did not print {prefix:?} within {START_WAIT:?}; its log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One topology at a time per test process.
static SERIAL: Mutex<()> = Mutex::new(());
/// Numbers the topologies of one test process.
static RUNS: AtomicU32 = AtomicU32::new(0);

/// A built topology: namespaces, configs, and (after [`Topology::start`]) processes.
pub struct Topology {
    prefix: String,
    plan: Plan,
    started: Instant,
    router_bird: Mutex<Option<NsProcess>>,
    log: Mutex<Option<NsProcess>>,
    dns: Mutex<Option<NsProcess>>,
    edges: Vec<Edge>,
    dir: tempfile::TempDir,
    // Last: released once everything above is gone.
    _serial: MutexGuard<'static, ()>,
}

impl Topology {
    /// Builds the namespaces (`topology.sh up`) and writes the configs; starts no
    /// process. Takes the per-process lock first (another topology of this process
    /// must be dropped before this one is built) and removes namespaces left behind
    /// by test processes that no longer exist.
    pub fn up() -> anyhow::Result<Topology> {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        // Built before entering any namespace: `cargo build` must not run inside one.
        tern_binary();
        remove_stale();
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("tt{}{}", std::process::id(), char_of(run));
        let started = Instant::now();
        let plan = Plan::parse(&run_script(&["up", &prefix])?);
        let dir = tempfile::tempdir().context("temporary directory")?;
        let root = dir.path().display().to_string();
        let mut edges = Vec::with_capacity(EDGES);
        for n in 1..=EDGES {
            let name = format!("edge{n}");
            let edge_dir = dir.path().join(&name);
            std::fs::create_dir_all(&edge_dir)?;
            let config = dir.path().join(format!("{name}.toml"));
            copy_config(&format!("{name}.toml"), &config, &root)?;
            edges.push(Edge {
                ns: plan.ns(&name)?,
                addr: plan.addr(&name)?,
                config,
                bird_socket: edge_dir.join("bird.ctl"),
                name,
                bird: Mutex::new(None),
                process: Mutex::new(None),
                health: Mutex::new(None),
            });
        }
        copy_config("log.toml", &dir.path().join("log.toml"), &root)?;
        copy_config("dns.toml", &dir.path().join("dns.toml"), &root)?;
        let topology = Topology {
            prefix,
            plan,
            started,
            router_bird: Mutex::new(None),
            log: Mutex::new(None),
            dns: Mutex::new(None),
            edges,
            dir,
            _serial: serial,
        };
        topology.progress("namespaces up");
        Ok(topology)
    }

    /// Prints `topology PREFIX +SECONDS: what` on stderr.
    pub fn progress(&self, what: &str) {
        eprintln!(
            "topology {} +{:.1}s: {what}",
            self.prefix,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// What `topology.sh` printed.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The edges, `edge1` first.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// The edge named `name`.
    pub fn edge(&self, name: &str) -> anyhow::Result<&Edge> {
        self.edges
            .iter()
            .find(|e| e.name == name)
            .with_context(|| format!("no edge named {name}"))
    }

    /// The WebSocket URL of the anycast address.
    pub fn anycast_url(&self) -> anyhow::Result<String> {
        Ok(format!("ws://{}:{EDGE_PORT}/v1/ws", self.plan.anycast()?))
    }

    /// Where `tern dns` answers queries.
    pub fn dns_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(SocketAddr::from((self.plan.addr("dns")?, DNS_PORT)))
    }

    /// Runs `body` on a new thread moved into the client namespace, on a
    /// current-thread tokio runtime, and returns what it returns; a panic in it is
    /// raised again here (so the topology is dropped, and cleaned up, while unwinding).
    pub fn run_in_client<T, F>(&self, body: F) -> anyhow::Result<T>
    where
        T: Send,
        F: AsyncFnOnce(&Topology) -> anyhow::Result<T> + Send,
    {
        let ns = self.plan.ns("client")?;
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                enter_netns(&ns)?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("tokio runtime")?;
                runtime.block_on(body(self))
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Starts every process (from inside [`Topology::run_in_client`]): the BIRDs,
    /// `tern log`, `tern dns`, each edge and its `tern health`; returns once every BGP
    /// session is established and every edge announces the anycast prefix.
    pub async fn start(&self) -> anyhow::Result<()> {
        let bird = bird_binary().context("bird is missing")?;
        let router_socket = self.dir.path().join("router.ctl");
        let conf = examples_dir().join("bird-router.conf");
        *lock(&self.router_bird) = Some(spawn_bird(
            &self.plan.ns("router")?,
            &bird,
            &conf,
            &router_socket,
            "router BIRD",
        )?);
        for edge in &self.edges {
            let conf = examples_dir().join(format!("bird-{}.conf", edge.name));
            *Edge::slot(&edge.bird) = Some(spawn_bird(
                &edge.ns,
                &bird,
                &conf,
                &edge.bird_socket,
                &format!("{} BIRD", edge.name),
            )?);
        }
        let config = |file: &str| self.dir.path().join(file).display().to_string();
        let log = NsProcess::spawn(
            &self.plan.ns("log")?,
            tern_binary(),
            &["log", "--config", &config("log.toml")],
            "tern log",
        )?;
        log.wait_line("tern log certificate ", START_WAIT).await?;
        *lock(&self.log) = Some(log);
        let dns = NsProcess::spawn(
            &self.plan.ns("dns")?,
            tern_binary(),
            &["dns", "--config", &config("dns.toml")],
            "tern dns",
        )?;
        dns.wait_line("tern dns listening on ", START_WAIT).await?;
        *lock(&self.dns) = Some(dns);
        self.progress("tern log and tern dns up");
        for edge in &self.edges {
            edge.start().await?;
            edge.start_health().await?;
        }
        self.progress("edges and their tern health up");
        self.wait_bird(&router_socket, "router").await?;
        for edge in &self.edges {
            self.wait_bird(&edge.bird_socket, &edge.name).await?;
        }
        self.wait_sessions().await?;
        for edge in &self.edges {
            self.wait_announced(&edge.name, START_WAIT).await?;
        }
        self.progress("BGP up; every edge announces the anycast prefix");
        Ok(())
    }

    async fn wait_bird(&self, socket: &Path, what: &str) -> anyhow::Result<()> {
        let until = Instant::now() + START_WAIT;
        let mut client = BirdClient::new(socket, Duration::from_secs(2));
        while client.command("show status").await.is_err() {
            ensure!(
                Instant::now() < until,
                "{what} BIRD never answered on {}",
                socket.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// A client of the router BIRD's control socket.
    pub fn router_bird(&self) -> BirdClient {
        BirdClient::new(self.dir.path().join("router.ctl"), Duration::from_secs(5))
    }

    /// Waits until the router's BGP sessions to every edge are established.
    async fn wait_sessions(&self) -> anyhow::Result<()> {
        let until = Instant::now() + START_WAIT;
        let mut router = self.router_bird();
        for edge in &self.edges {
            let name = ProtocolName::new(edge.name.clone())?;
            loop {
                if let Ok(row) = router.show_protocol(&name).await
                    && row.state == ProtocolState::Up
                    && row.details.contains("Established")
                {
                    break;
                }
                ensure!(
                    Instant::now() < until,
                    "the router's BGP session to {} never came up\n{}",
                    edge.name,
                    self.router_log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The router's routes to the anycast prefix (one per announcing edge; the
    /// router's BGP protocol to an edge is named like the edge, in
    /// [`Route::protocol`]), from its BIRD's `show route for PREFIX all`.
    pub async fn anycast_routes(&self) -> anyhow::Result<Vec<Route>> {
        let network = format!("{}/32", self.plan.anycast()?);
        let prefix: Prefix = network.parse()?;
        let routes = self.router_bird().show_route_for(&prefix).await?;
        // `for` answers the longest match: a covering route is not the anycast one.
        Ok(routes
            .into_iter()
            .filter(|r| r.network == network)
            .collect())
    }

    /// The edge the router sends anycast traffic to (its best route), if any.
    pub async fn routed_edge(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .anycast_routes()
            .await?
            .into_iter()
            .find(|r| r.primary)
            .map(|r| r.protocol))
    }

    /// Waits (at most `timeout`) until the router has a route to the anycast prefix
    /// from edge `name`.
    pub async fn wait_announced(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        self.wait_routes(timeout, &format!("{name} announcing"), |routes| {
            routes.iter().any(|r| r.protocol == name)
        })
        .await
        .map(drop)
    }

    /// Waits (at most `timeout`) until the router's routes satisfy `done`; returns them.
    pub async fn wait_routes(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Route]) -> bool,
    ) -> anyhow::Result<Vec<Route>> {
        let until = Instant::now() + timeout;
        loop {
            let routes = self.anycast_routes().await?;
            if done(&routes) {
                return Ok(routes);
            }
            ensure!(
                Instant::now() < until,
                "the router never saw {what} within {timeout:?}; it has {routes:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The router BIRD's log.
    pub fn router_log(&self) -> String {
        lock(&self.router_bird)
            .as_ref()
            .map(|p| lines(&p.stderr).join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for edge in &self.edges {
            edge.stop_all();
        }
        for slot in [&self.dns, &self.log, &self.router_bird] {
            if let Some(process) = lock(slot).take() {
                process.kill();
            }
        }
        match run_script(&["down", &self.prefix]) {
            Ok(_) => self.progress("namespaces removed"),
            Err(error) => eprintln!("topology {}: {error:#}", self.prefix),
        }
    }
}

fn lock(slot: &Mutex<Option<NsProcess>>) -> MutexGuard<'_, Option<NsProcess>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `a`, `b`, ... `z`, then `0`, `1`, ...: one character per topology of a process.
fn char_of(run: u32) -> char {
    char::from_digit(10 + run % 26, 36).unwrap_or('x')
}

/// Copies example `file` to `to`, with [`CONFIG_ROOT`] replaced by `root`.
fn copy_config(file: &str, to: &Path, root: &str) -> anyhow::Result<()> {
    let from = examples_dir().join(file);
    let text =
        std::fs::read_to_string(&from).with_context(|| format!("reading {}", from.display()))?;
    std::fs::write(to, text.replace(CONFIG_ROOT, root))
        .with_context(|| format!("writing {}", to.display()))
}

/// Starts `bird -f -c CONF -s SOCKET -P SOCKET.pid` in `ns`.
fn spawn_bird(
    ns: &str,
    bird: &Path,
    conf: &Path,
    socket: &Path,
    what: &str,
) -> anyhow::Result<NsProcess> {
    let conf = conf.display().to_string();
    let socket_text = socket.display().to_string();
    let pid = format!("{socket_text}.pid");
    NsProcess::spawn(
        ns,
        bird,
        &["-f", "-c", &conf, "-s", &socket_text, "-P", &pid],
        what,
    )
}

/// Moves the calling thread into the network namespace `ns` (`/run/netns/NS`, made
/// by `ip netns add`): the sockets it opens from now on are that namespace's.
pub fn enter_netns(ns: &str) -> anyhow::Result<()> {
    let path = Path::new("/run/netns").join(ns);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("setns into {ns}"))?;
    Ok(())
}

/// Removes the namespaces of earlier test processes that are gone (`tt<pid><c>-...`
/// whose pid no longer exists): a test process killed before its drop ran.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stale: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| name.split_once('-').map(|(prefix, _)| prefix))
        .filter(|prefix| {
            let Some(rest) = prefix.strip_prefix("tt") else {
                return false;
            };
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            rest.len() == digits.len() + 1
                && !digits.is_empty()
                && !Path::new("/proc").join(&digits).exists()
        })
        .map(str::to_owned)
        .collect();
    stale.sort();
    stale.dedup();
    for prefix in stale {
        eprintln!("topology: removing namespaces {prefix}-* left by a test process that is gone");
        if let Err(error) = run_script(&["down", &prefix]) {
            eprintln!("topology: {error:#}");
        }
    }
}

/// The plan `topology.sh plan PREFIX` prints (no root needed: nothing is built).
pub fn plan(prefix: &str) -> anyhow::Result<Plan> {
    Ok(Plan::parse(&run_script(&["plan", prefix])?))
}
