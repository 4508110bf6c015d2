//! Target `jetstream`: the same workload against NATS JetStream, the peer Tern is
//! measured against (DESIGN.md §11).
//!
//! Starts `nats-server -js` on a free loopback port with its store in a fresh
//! temporary directory, creates one file-backed stream with one replica whose
//! subjects are `bench.<channel>`, and publishes through async-nats: a batch is
//! `--batch` JetStream publishes, each with a `Nats-Msg-Id` header (so a retry is
//! deduplicated, as Tern's idempotency key is), whose acknowledgements are all
//! awaited; latency is measured per batch exactly as for Tern.
//!
//! # Durability of an acknowledgement
//!
//! Before 2.10, nats-server acknowledges a publish once the message is written to
//! its file, and fsyncs in the background every two minutes; the interval cannot
//! be configured (2.9.10 rejects `jetstream { sync_interval: ... }` as an unknown
//! field). From 2.10 on, `sync_interval: always` makes it sync every write before
//! acknowledging; when the installed server has it, the benchmark runs both modes.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::context::{ContextBuilder, PublishAckFuture};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::{ConnectOptions, Subject};
use bytes::Bytes;
use tokio::process::Command;

use super::child::ChildServer;
use super::workload::{self, BatchAck, BatchSpec, Measurement, Target, Workload};

/// The server program looked up on `PATH`.
pub(crate) const SERVER: &str = "nats-server";

/// How long acknowledgements and API calls may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// When the server makes a write durable relative to acknowledging it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncMode {
    /// The server's default: acknowledge, fsync later (every 2 minutes).
    Default,
    /// `sync_interval: always` (2.10 and later): fsync every write, then acknowledge.
    Always,
}

impl SyncMode {
    /// The suffix of the target's name in reports.
    pub(crate) fn label(self) -> &'static str {
        match self {
            SyncMode::Default => "jetstream",
            SyncMode::Always => "jetstream-sync",
        }
    }

    /// Whether an acknowledgement means the message was fsynced.
    pub(crate) fn fsyncs_before_ack(self) -> bool {
        self == SyncMode::Always
    }
}

/// The installed nats-server: where it is and what it can do.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    pub(crate) path: PathBuf,
    /// As printed by `nats-server --version`, such as `v2.9.10`.
    pub(crate) version: String,
    /// Whether it accepts `sync_interval: always` (2.10 and later).
    pub(crate) has_sync_always: bool,
}

impl Server {
    /// Finds `nats-server` on `PATH` and asks its version; `None` when not installed.
    pub(crate) async fn find() -> anyhow::Result<Option<Server>> {
        let Some(path) = find_on_path(SERVER) else {
            return Ok(None);
        };
        let output = tokio::time::timeout(
            Duration::from_secs(10),
            Command::new(&path).arg("--version").output(),
        )
        .await
        .context("nats-server --version did not answer")?
        .context("cannot run nats-server --version")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = text
            .split_whitespace()
            .find(|word| word.starts_with('v'))
            .unwrap_or("unknown")
            .to_owned();
        let has_sync_always = parse_version(&version).is_some_and(|v| v >= (2, 10));
        Ok(Some(Server {
            path,
            version,
            has_sync_always,
        }))
    }

    /// The modes to run: the default one, and `always` where the server has it.
    pub(crate) fn modes(&self) -> Vec<SyncMode> {
        if self.has_sync_always {
            vec![SyncMode::Default, SyncMode::Always]
        } else {
            vec![SyncMode::Default]
        }
    }
}

/// `(major, minor)` of a version such as `v2.9.10`.
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[derive(Clone)]
struct JetStream {
    context: jetstream::Context,
    subjects: Arc<[Subject]>,
    payload: Bytes,
    nonce: u64,
}

impl Target for JetStream {
    type Batch = Vec<(Subject, PublishMessage)>;

    fn prepare(&self, spec: BatchSpec) -> Self::Batch {
        spec.seqs()
            .map(|seq| {
                let subject = self.subjects[(seq % self.subjects.len() as u64) as usize].clone();
                let message = PublishMessage::build()
                    .payload(self.payload.clone())
                    .message_id(format!("{:016x}-{seq:x}", self.nonce));
                (subject, message)
            })
            .collect()
    }

    async fn send(&self, batch: Self::Batch) -> anyhow::Result<BatchAck> {
        let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(batch.len());
        for (subject, message) in batch {
            pending.push(self.context.send_publish(subject, message).await?);
        }
        let mut ack = BatchAck::default();
        for future in pending {
            if future.await?.duplicate {
                ack.duplicates += 1;
            } else {
                ack.appended += 1;
            }
        }
        Ok(ack)
    }
}

/// Runs `workload` against a fresh nats-server in `mode`, with its store under `dir`.
pub(crate) async fn run(
    label: &str,
    workload: &Workload,
    server: &Server,
    mode: SyncMode,
    dir: &Path,
    deadline: Instant,
) -> anyhow::Result<Measurement> {
    let tmp = tempfile::Builder::new()
        .prefix("tern-bench-jetstream-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary directory in {}", dir.display()))?;
    let (child, addr) = start_server(server, mode, tmp.path(), deadline).await?;
    let measured = measure(label, workload, addr, deadline).await;
    child.conclude(measured, tmp).await
}

async fn measure(
    label: &str,
    workload: &Workload,
    addr: SocketAddr,
    deadline: Instant,
) -> anyhow::Result<Measurement> {
    let client = tokio::time::timeout_at(
        deadline.into(),
        async_nats::connect_with_options(
            format!("nats://{addr}"),
            ConnectOptions::new().name("tern-bench"),
        ),
    )
    .await
    .context("timed out connecting to nats-server")?
    .with_context(|| format!("cannot connect to nats-server at {addr}"))?;
    // Every message of every batch in flight holds an ack permit; with fewer, the
    // client would throttle the workload below `--inflight` batches.
    let in_flight = workload.inflight.max(1) * workload.batch.max(1);
    let context = ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .max_ack_inflight(in_flight)
        .backpressure_on_inflight(true)
        .build(client.clone());
    create_stream(&context, deadline).await?;
    let target = JetStream {
        context,
        subjects: workload
            .channel_names()
            .into_iter()
            .map(Subject::from)
            .collect(),
        payload: workload.payload(),
        nonce: workload::run_nonce(),
    };
    let measured = workload::drive(label, workload, target, deadline).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), client.drain()).await;
    measured
}

/// One stream, file storage, one replica, subjects `bench.>`; retried while
/// JetStream is still starting.
async fn create_stream(context: &jetstream::Context, deadline: Instant) -> anyhow::Result<()> {
    let config = stream::Config {
        name: "BENCH".to_owned(),
        subjects: vec!["bench.>".to_owned()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    };
    loop {
        match context.create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() + Duration::from_millis(100) < deadline => {
                tracing::debug!(%error, "stream not created yet; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error).context("cannot create the JetStream stream"),
        }
    }
}

/// Starts nats-server with JetStream on a free loopback port and waits until it
/// accepts connections.
async fn start_server(
    server: &Server,
    mode: SyncMode,
    dir: &Path,
    deadline: Instant,
) -> anyhow::Result<(ChildServer, SocketAddr)> {
    // Another process could take the port between here and the server binding it;
    // the server then fails to start and the run reports it.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .context("cannot find a free port")?
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let store_dir = dir.join("store");
    let mut command = Command::new(&server.path);
    match mode {
        SyncMode::Default => {
            command
                .arg("-js")
                .arg("-sd")
                .arg(&store_dir)
                .args(["-a", "127.0.0.1", "-p"])
                .arg(port.to_string());
        }
        SyncMode::Always => {
            let config = dir.join("nats.conf");
            let text = format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n}}\n",
                store_dir.display().to_string()
            );
            std::fs::write(&config, text)
                .with_context(|| format!("cannot write {}", config.display()))?;
            command.arg("-c").arg(&config);
        }
    }
    let mut child = ChildServer::spawn(SERVER, command)?;
    loop {
        child.check_running()?;
        let probe = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), probe).await {
            return Ok((child, addr));
        }
        if Instant::now() >= deadline {
            bail!(
                "{SERVER} did not accept connections in time{}",
                child.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("v2.9.10"), Some((2, 9)));
        assert_eq!(parse_version("v2.10.0"), Some((2, 10)));
        assert_eq!(parse_version("unknown"), None);
        assert!(parse_version("v2.9.10").is_some_and(|v| v < (2, 10)));
    }
}
