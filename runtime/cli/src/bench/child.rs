//! Servers the benchmark starts as child processes (`tern log`, `nats-server`).
//!
//! A [`ChildServer`] is killed when dropped, so no run leaves a process behind, even
//! on an error or a timeout. Its stdout lines are handed out one at a time
//! ([`ChildServer::wait_for_line`]); its stderr is kept (the last
//! [`KEPT_LOG_LINES`] lines) to explain a failure.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Lines of a child's stderr kept for error messages.
const KEPT_LOG_LINES: usize = 40;

/// A running child process, killed on drop.
pub(crate) struct ChildServer {
    name: String,
    child: Child,
    stdout: mpsc::Receiver<String>,
    logs: Arc<Mutex<VecDeque<String>>>,
}

impl ChildServer {
    /// Starts `command` with stdout and stderr captured.
    pub(crate) fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let logs = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT_LOG_LINES)));
        let (tx, stdout) = mpsc::channel(64);
        if let Some(out) = child.stdout.take() {
            let logs = Arc::clone(&logs);
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    // Once nobody waits for lines, keep them as logs instead.
                    if let Err(mpsc::error::SendError(line)) = tx.send(line).await {
                        keep(&logs, line);
                    }
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let logs = Arc::clone(&logs);
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    keep(&logs, line);
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            logs,
        })
    }

    /// Waits (until `deadline`) for a stdout line for which `parse` returns a value;
    /// later stdout lines go to the kept logs.
    pub(crate) async fn wait_for_line<T>(
        &mut self,
        deadline: Instant,
        mut parse: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            match tokio::time::timeout_at(deadline.into(), self.stdout.recv()).await {
                Ok(Some(line)) => {
                    if let Some(value) = parse(&line) {
                        self.stdout.close();
                        return Ok(value);
                    }
                }
                Ok(None) => bail!(
                    "{} closed its output before it was ready{}",
                    self.name,
                    self.log_tail()
                ),
                Err(_) => bail!("{} was not ready in time{}", self.name, self.log_tail()),
            }
        }
    }

    /// The process id (none once it has been waited for).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{} exited ({status}){}", self.name, self.log_tail()),
            Err(error) => bail!("cannot check on {}: {error}", self.name),
        }
    }

    /// The last lines of its logs, formatted for an error message.
    pub(crate) fn log_tail(&self) -> String {
        let logs = match self.logs.lock() {
            Ok(logs) => logs,
            Err(poisoned) => poisoned.into_inner(),
        };
        if logs.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = logs.iter().map(String::as_str).collect();
        format!("; its last log lines:\n{}", lines.join("\n"))
    }

    /// Kills the process and waits (briefly) until it is gone.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Ends a run against this server: stops it and removes its data directory. A
    /// server that died mid-run explains a failed measurement better than the client
    /// can, so its exit is attached to the error.
    pub(crate) async fn conclude<T>(
        mut self,
        measured: anyhow::Result<T>,
        data: tempfile::TempDir,
    ) -> anyhow::Result<T> {
        let measured = match (measured, self.check_running()) {
            (Err(error), Err(exited)) => Err(error.context(exited)),
            (measured, _) => measured,
        };
        self.stop().await;
        tokio::task::spawn_blocking(move || data.close())
            .await
            .context("cleanup task failed")?
            .context("cannot remove the server's temporary data")?;
        measured
    }
}

fn keep(logs: &Mutex<VecDeque<String>>, line: String) {
    let mut logs = match logs.lock() {
        Ok(logs) => logs,
        Err(poisoned) => poisoned.into_inner(),
    };
    if logs.len() == KEPT_LOG_LINES {
        logs.pop_front();
    }
    logs.push_back(line);
}
