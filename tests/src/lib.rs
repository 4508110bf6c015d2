//! Harness for tests that run real `tern` processes.
//!
//! [`tern_binary`] builds the `tern` binary once per test process (a no-op when it is
//! fresh) and returns its path; [`LogProcess`] starts `tern log` on a free loopback
//! port, waits for its "listening" line, and kills it (SIGKILL or SIGTERM) on demand
//! or when dropped, so no test leaves a process behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};

/// Path of a freshly built `tern` binary (`cargo build -p tern` on first use).
pub fn tern_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
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
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
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
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawning tern log")?;
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
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
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut addr = None;
        let mut cert = None;
        while addr.is_none() || cert.is_none() {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    bail!("tern log did not report its address within 60 s");
                }
            };
            if let Some(a) = line.strip_prefix("tern log listening on ") {
                addr = Some(a.trim().parse().context("listen address")?);
            }
            if let Some(c) = line.strip_prefix("tern log certificate ") {
                cert = Some(PathBuf::from(c.trim()));
            }
        }
        let cert = cert.context("certificate line")?;
        let addr = addr.context("address line")?;
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
        let pid = self.child.id() as libc::pid_t;
        // A plain signal to our own child; no memory is touched.
        #[allow(unsafe_code)]
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Freezes the process with SIGSTOP and waits (bounded) until the kernel reports
    /// it stopped: the signal is asynchronous, and a process running on another core
    /// may still answer for a moment after `kill` returns.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.child.id());
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
