//! Target `quic`: a real `tern log` node over the link, through one [`LogClient`].
//!
//! Either starts `tern log --data-dir TMP --listen 127.0.0.1:0` (this same binary)
//! as a child process, reads where it listens and its certificate from its stdout,
//! and kills it afterwards; or uses a running node given by `--addr` and `--cert`.
//! All batches in flight share the one connection and its request stream, as an
//! edge's publishes do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use tern_link::{Outcome, PublishMessage};
use tern_log::net::{LogClient, LogClientConfig};
use tokio::process::Command;

use super::child::ChildServer;
use super::workload::{self, BatchAck, BatchSpec, Measurement, Target, Workload};

/// A node that is already running.
#[derive(Clone, Debug)]
pub(crate) struct RemoteNode {
    pub(crate) addr: SocketAddr,
    pub(crate) cert: PathBuf,
    pub(crate) server_name: String,
}

#[derive(Clone)]
struct Quic {
    client: LogClient,
    channels: Arc<[String]>,
    payload: Bytes,
    nonce: u64,
}

impl Target for Quic {
    type Batch = Vec<PublishMessage>;

    fn prepare(&self, spec: BatchSpec) -> Vec<PublishMessage> {
        spec.seqs()
            .zip(workload::binary_keys(self.nonce, spec))
            .map(|(seq, key)| PublishMessage {
                channel: self.channels[(seq % self.channels.len() as u64) as usize].clone(),
                idempotency_key: key,
                headers: Vec::new(),
                payload: self.payload.clone(),
            })
            .collect()
    }

    async fn send(&self, batch: Vec<PublishMessage>) -> anyhow::Result<BatchAck> {
        let outcomes = self.client.publish(batch).await?;
        let mut ack = BatchAck::default();
        for outcome in outcomes {
            match outcome {
                Outcome::Appended(_) => ack.appended += 1,
                Outcome::Duplicate(_) => ack.duplicates += 1,
                Outcome::Rejected(error) => bail!("the node rejected a message: {error}"),
            }
        }
        Ok(ack)
    }
}

/// Runs `workload` against `remote`, or against a `tern log` child with its data
/// in a fresh directory under `dir`.
pub(crate) async fn run(
    label: &str,
    workload: &Workload,
    remote: Option<&RemoteNode>,
    dir: &Path,
    deadline: Instant,
) -> anyhow::Result<Measurement> {
    match remote {
        Some(node) => measure(label, workload, node, deadline).await,
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("tern-bench-quic-")
                .tempdir_in(dir)
                .with_context(|| {
                    format!("cannot create a temporary directory in {}", dir.display())
                })?;
            let (child, node) = start_node(tmp.path(), deadline).await?;
            let measured = measure(label, workload, &node, deadline).await;
            child.conclude(measured, tmp).await
        }
    }
}

async fn measure(
    label: &str,
    workload: &Workload,
    node: &RemoteNode,
    deadline: Instant,
) -> anyhow::Result<Measurement> {
    let config = LogClientConfig {
        max_inflight: workload.inflight.max(1),
        ..LogClientConfig::default()
    };
    let client = tokio::time::timeout_at(
        deadline.into(),
        LogClient::connect_with(node.addr, &node.server_name, &node.cert, config),
    )
    .await
    .context("timed out connecting to the log node")?
    .with_context(|| format!("cannot connect to the log node at {}", node.addr))?;
    let target = Quic {
        client: client.clone(),
        channels: workload.channel_names().into(),
        payload: workload.payload(),
        nonce: workload::run_nonce(),
    };
    let measured = workload::drive(label, workload, target, deadline).await;
    client.close().await;
    measured
}

/// Starts `tern log` on a free loopback port and waits for its address and
/// certificate lines (see `log_cmd`). Also how `tern bench resume --topology split`
/// starts its log.
pub(crate) async fn start_node(
    data_dir: &Path,
    deadline: Instant,
) -> anyhow::Result<(ChildServer, RemoteNode)> {
    let exe = std::env::current_exe().context("cannot find the tern binary")?;
    let mut command = Command::new(exe);
    command
        .arg("log")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    let mut child = ChildServer::spawn("tern log", command)?;
    let mut addr = None;
    let mut cert = None;
    let (addr, cert) = child
        .wait_for_line(deadline, |line| {
            if let Some(rest) = line.strip_prefix("tern log listening on ") {
                addr = rest.trim().parse::<SocketAddr>().ok();
            } else if let Some((_, rest)) = line.split_once("certificate") {
                cert = Some(PathBuf::from(rest.trim_start_matches(':').trim()));
            }
            addr.zip(cert.clone())
        })
        .await?;
    Ok((
        child,
        RemoteNode {
            addr,
            cert,
            server_name: "localhost".to_owned(),
        },
    ))
}
