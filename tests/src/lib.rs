//! Harness for tests that run real `tern` processes.
//!
//! [`tern_binary`] builds the `tern` binary once per test process (a no-op when it is
//! fresh) and returns its path, or returns the binary named by the `TERN_BIN`
//! environment variable without building anything (to run the tests against a
//! release build: `TERN_BIN=$PWD/target/release/tern cargo test -p tern-tests ...`);
//! [`LogProcess`] starts `tern log` on a free loopback
//! port, waits for its "listening" line, and kills it (SIGKILL or SIGTERM) on demand
//! or when dropped, so no test leaves a process behind. [`EdgeProcess`] does the same
//! for `tern edge`, writing its config (linked to a log, with the [`TEST_KEY`]),
//! [`HealthProcess`] for `tern health` alongside an edge, and
//! [`DevProcess`] for `tern dev`, keeping every line it prints on stdout. Processes can
//! be signalled and frozen (SIGSTOP), and an edge restarted on its port
//! ([`EdgeProcess::start_at`]); [`vm_rss_bytes`] reads a process's resident memory.
//!
//! Modules: [`proxy`] (a TCP proxy that stalls or cuts a client's connection),
//! [`http`] (a minimal GET, for `/metrics`, `/readyz` and REST history), and
//! [`netns`] (the anycast topology of issue 6 in network namespaces, root only).
//!
//! ```text
//! test ──▶ LogProcess (tern log, QUIC) ◀── EdgeProcess (tern edge) ◀── clients
//!                                            ▲
//!                                 proxy::Proxy (stall / refuse) ◀── one client
//! ```

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};

pub mod http;
pub mod netns;
pub mod proxy;

/// Environment variable naming an already built `tern` binary for the tests to run.
pub const TERN_BIN_ENV: &str = "TERN_BIN";

/// Path of the `tern` binary the tests run.
///
/// With `TERN_BIN` set (a path to an already built binary, e.g. `target/release/tern`;
/// a relative path is taken from the test's working directory, the `tests/` crate, so
/// an absolute one is simpler), that binary, checked to exist and used as it is:
/// nothing is built, so it must be as recent as the code under test. Otherwise `cargo build -p tern --bin tern` (the
/// debug profile) on first use in the test process, a no-op when it is fresh, and
/// `target/debug/tern` (under `CARGO_TARGET_DIR` when set).
pub fn tern_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os(TERN_BIN_ENV).filter(|bin| !bin.is_empty()) {
            let bin = PathBuf::from(bin);
            // Absolute, so that a child started in another directory finds it too.
            let found = std::fs::canonicalize(&bin).ok().filter(|path| path.is_file());
            return found.unwrap_or_else(|| {
                panic!(
                    "{TERN_BIN_ENV}={} is not a file: build it first (cargo build --release -p tern --bin tern) or unset {TERN_BIN_ENV}",
                    bin.display()
                )
            });
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ sits in the workspace")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "tern", "--bin", "tern"])
            .current_dir(&workspace)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the tern binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        target.join("debug").join("tern")
    })
}

/// A running `tern log` child process.
pub struct LogProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate, to trust when connecting.
    pub cert: PathBuf,
    /// Lines it printed on stderr (its logs), collected in the background.
    pub logs: Logs,
}

impl LogProcess {
    /// Starts `tern log --data-dir DIR --listen 127.0.0.1:0` and waits until it listens.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[], None)
    }

    /// Like [`LogProcess::start`], with extra arguments, and optionally a file size
    /// limit in bytes (`ulimit -f`) for the process.
    pub fn start_with(
        data_dir: &Path,
        extra: &[&str],
        file_size_limit: Option<u64>,
    ) -> anyhow::Result<Self> {
        Self::spawn(data_dir, "127.0.0.1:0", extra, file_size_limit)
    }

    /// Starts `tern log` on `addr` (for a restart on the port an earlier process
    /// used, so that edges find it again).
    pub fn start_at(data_dir: &Path, addr: SocketAddr) -> anyhow::Result<Self> {
        Self::spawn(data_dir, &addr.to_string(), &[], None)
    }

    fn spawn(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        file_size_limit: Option<u64>,
    ) -> anyhow::Result<Self> {
        let bin = tern_binary();
        let mut cmd = match file_size_limit {
            Some(bytes) => {
                // bash counts `ulimit -f` in 1024-byte blocks.
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -f {} && exec \"$0\" \"$@\"", bytes / 1024))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("log")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen])
            .args(extra);
        let (child, logs, found) = spawn_reporting(
            cmd,
            "tern log",
            &["tern log listening on ", "tern log certificate "],
        )?;
        let addr = found[0].parse().context("listen address")?;
        let cert = PathBuf::from(&found[1]);
        Ok(Self {
            child,
            addr,
            cert,
            logs,
        })
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` to the process (SIGSTOP freezes it, SIGCONT thaws it).
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(&self.child, signal);
    }

    /// Freezes the process with SIGSTOP and waits (bounded) until the kernel reports
    /// it stopped: the signal is asynchronous, and a process running on another core
    /// may still answer for a moment after `kill` returns.
    pub fn freeze(&self) {
        freeze(&self.child);
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and wait (bounded) for a clean exit; returns whether it exited 0.
    pub fn terminate(mut self) -> bool {
        self.signal(libc::SIGTERM);
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for LogProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to `child`, then waits (at most `timeout`) for it to exit; its exit
/// status, or `None` when it was still running.
fn terminate_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    send_signal(child, libc::SIGTERM);
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sends `signal` to `child`.
fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = child.id() as libc::pid_t;
    // A plain signal to our own child; no memory is touched.
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// SIGSTOP to `child`, then waits (at most 5 s) until /proc says it is stopped.
fn freeze(child: &Child) {
    send_signal(child, libc::SIGSTOP);
    let stat = format!("/proc/{}/stat", child.id());
    for _ in 0..500 {
        let state = std::fs::read_to_string(&stat).unwrap_or_default();
        // The state follows the parenthesised command name: "pid (comm) T ...".
        if state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the process did not stop within 5 s of SIGSTOP");
}

/// The resident set size of process `pid` in bytes (`VmRSS` of `/proc/PID/status`),
/// or `None` when the process is gone or the line is missing.
pub fn vm_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    // "VmRSS:\t   12345 kB"
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Starts `cmd` with piped output, collects its stderr lines in the background, and
/// waits (at most 60 s) until its stdout has printed a line starting with each of
/// `prefixes`; returns the rest of each such line, in `prefixes` order.
fn spawn_reporting(
    cmd: Command,
    what: &str,
    prefixes: &[&str],
) -> anyhow::Result<(Child, Logs, Vec<String>)> {
    spawn_collecting(cmd, what, prefixes).map(|(child, logs, _, found)| (child, logs, found))
}

/// [`spawn_reporting`], also keeping every stdout line (the second [`Logs`]).
fn spawn_collecting(
    mut cmd: Command,
    what: &str,
    prefixes: &[&str],
) -> anyhow::Result<(Child, Logs, Logs, Vec<String>)> {
    cmd.env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
    let logs: Logs = Arc::new(Mutex::new(Vec::new()));
    if let Some(stderr) = child.stderr.take() {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = logs.lock() {
                    l.push(line);
                }
            }
        });
    }
    let stdout = child.stdout.take().context("stdout is piped")?;
    let out: Logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(mut l) = kept.lock() {
                l.push(line.clone());
            }
            let _ = tx.send(line);
        }
    });
    let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
    while found.iter().any(Option::is_none) {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
            bail!("{what} did not report {prefixes:?} within 60 s; its log:\n{stderr}");
        };
        for (prefix, slot) in prefixes.iter().zip(found.iter_mut()) {
            if let Some(rest) = line.strip_prefix(prefix) {
                *slot = Some(rest.trim().to_owned());
            }
        }
    }
    Ok((child, logs, out, found.into_iter().flatten().collect()))
}

/// Lines a child process printed on stderr, collected in the background.
pub type Logs = Arc<Mutex<Vec<String>>>;

/// The API key every [`EdgeProcess`] accepts, allowed everything on every channel.
pub const TEST_KEY: &str = "test.main:0123456789abcdef-secret";
/// The connection key secret every [`EdgeProcess`] shares: a client resumes on any.
pub const TEST_CLUSTER_SECRET: &str = "test-cluster-secret-0123456789abcdef";

/// A running `tern edge` child process, linked to one `tern log`.
pub struct EdgeProcess {
    child: Child,
    /// Where it serves HTTP and WebSocket.
    pub addr: SocketAddr,
    /// Lines it printed on stderr (its logs), collected in the background.
    pub logs: Logs,
}

impl EdgeProcess {
    /// Writes `DIR/NAME.toml` (listen on a free loopback port, link to `log_addr`
    /// trusting `log_cert`, fast link reconnects and a 3 s log request timeout, the
    /// [`TEST_CLUSTER_SECRET`] and the [`TEST_KEY`], then `extra` TOML
    /// appended: e.g. a `[limits]` section; a leading `[log]` block of it, up to its
    /// first empty line, goes into the link section instead), starts `tern edge
    /// --config` with it and waits until it listens.
    pub fn start(
        dir: &Path,
        name: &str,
        log_addr: SocketAddr,
        log_cert: &Path,
        extra: &str,
    ) -> anyhow::Result<Self> {
        Self::spawn(dir, name, "127.0.0.1:0", log_addr, log_cert, extra)
    }

    /// Like [`EdgeProcess::start`], listening on `listen`: for a restart on the port
    /// an earlier edge used, so that its clients find it again.
    pub fn start_at(
        dir: &Path,
        name: &str,
        listen: SocketAddr,
        log_addr: SocketAddr,
        log_cert: &Path,
        extra: &str,
    ) -> anyhow::Result<Self> {
        Self::spawn(dir, name, &listen.to_string(), log_addr, log_cert, extra)
    }

    fn spawn(
        dir: &Path,
        name: &str,
        listen: &str,
        log_addr: SocketAddr,
        log_cert: &Path,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let config = dir.join(format!("{name}.toml"));
        // A leading `[log]` block of `extra` (up to its first empty line) extends the
        // link section written here: TOML does not let a table be opened twice.
        let (log_extra, extra) = match extra.strip_prefix("[log]\n") {
            Some(rest) => rest.split_once("\n\n").unwrap_or((rest, "")),
            None => ("", extra),
        };
        let text = format!(
            "[edge]\nname = {name:?}\nlisten = {listen:?}\n\n\
             [log]\naddr = \"{log_addr}\"\nca = {cert:?}\nrequest_timeout = \"3s\"\nreconnect_min = \"50ms\"\nreconnect_max = \"500ms\"\n{log_extra}\n\n\
             [cluster]\nconnection_key_secret = {TEST_CLUSTER_SECRET:?}\n\n\
             [[keys]]\nkey = {TEST_KEY:?}\ncapabilities = {{ \"*\" = [\"*\"] }}\n\n{extra}\n",
            cert = log_cert.display().to_string(),
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = Command::new(tern_binary());
        cmd.arg("edge").arg("--config").arg(&config);
        let (child, logs, found) =
            spawn_reporting(cmd, "tern edge", &["tern edge listening on http://"])?;
        let addr = found[0].parse().context("edge listen address")?;
        Ok(Self { child, addr, logs })
    }

    /// The WebSocket URL clients connect to.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` to the process (SIGSTOP freezes it, SIGCONT thaws it).
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(&self.child, signal);
    }

    /// Freezes the process with SIGSTOP and waits (bounded) until the kernel reports
    /// it stopped.
    pub fn freeze(&self) {
        freeze(&self.child);
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident set size in bytes (see [`vm_rss_bytes`]).
    pub fn rss_bytes(&self) -> Option<u64> {
        vm_rss_bytes(self.child.id())
    }

    /// SIGTERM, then waits (at most `timeout`) for the process to exit; returns its
    /// exit status, or `None` when it was still running (it is then SIGKILLed).
    pub fn terminate(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        terminate_within(&mut self.child, timeout)
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `tern health` child process: the health loop of one edge, alongside it.
pub struct HealthProcess {
    child: Child,
    /// Where it serves its `tern_health_*` series (`GET /metrics`).
    pub metrics: SocketAddr,
    /// Lines it printed on stderr (its logs), collected in the background.
    pub logs: Logs,
}

impl HealthProcess {
    /// Starts `tern health --config CONFIG --edge EDGE --metrics 127.0.0.1:0` (the
    /// edge's config file, whose `[health]` has `runner = "tern-health"`; `edge`: where
    /// that edge listens) and waits until its loop runs.
    pub fn start(config: &Path, edge: SocketAddr) -> anyhow::Result<Self> {
        let mut cmd = Command::new(tern_binary());
        cmd.arg("health")
            .arg("--config")
            .arg(config)
            .arg("--edge")
            .arg(edge.to_string())
            .args(["--metrics", "127.0.0.1:0"]);
        let (mut child, logs, found) =
            spawn_reporting(cmd, "tern health", &["tern health probing "])?;
        let metrics = found
            .first()
            .and_then(|line| line.rsplit_once("metrics on http://"))
            .and_then(|(_, addr)| addr.trim().parse().ok());
        let Some(metrics) = metrics else {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("no metrics address in {found:?}");
        };
        Ok(Self {
            child,
            metrics,
            logs,
        })
    }

    /// SIGTERM, then waits (at most `timeout`) for the process to exit; returns its
    /// exit status, or `None` when it was still running (it is then SIGKILLed).
    pub fn terminate(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        terminate_within(&mut self.child, timeout)
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for HealthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `tern dev` child process (a log and an edge in one).
pub struct DevProcess {
    child: Child,
    /// Where the edge serves HTTP and WebSocket.
    pub addr: SocketAddr,
    /// The dev key (`dev.local:<secret>`), a client key and an admin key.
    pub key: String,
    /// Lines it printed on stderr (its logs), collected in the background.
    pub logs: Logs,
    /// Lines it printed on stdout (start-up lines, function deploys).
    pub stdout: Logs,
}

impl DevProcess {
    /// Starts `tern dev --port 0 --data-dir DIR/.tern` in `DIR` (so `DIR/functions`,
    /// when it exists, is its functions directory) with `extra` arguments, and waits
    /// until it listens.
    pub fn start(dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(tern_binary());
        cmd.current_dir(dir)
            .args(["dev", "--port", "0", "--data-dir"])
            .arg(dir.join(".tern"))
            .args(extra);
        let (child, logs, stdout, found) = spawn_collecting(
            cmd,
            "tern dev",
            &["tern dev listening on http://", "API key "],
        )?;
        let addr = found[0].parse().context("dev listen address")?;
        Ok(Self {
            child,
            addr,
            key: found[1].clone(),
            logs,
            stdout,
        })
    }

    /// Waits (at most `timeout`) for a stdout line containing `needle`; returns it.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let found = self
                .stdout
                .lock()
                .ok()
                .and_then(|lines| lines.iter().find(|l| l.contains(needle)).cloned());
            if let Some(line) = found {
                return Ok(line);
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "tern dev printed no line with {needle:?} within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout_text(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and wait (bounded) for a clean exit; returns whether it exited 0.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Its stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
