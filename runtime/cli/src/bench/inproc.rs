//! Target `inproc`: the embedded store in this process, no network.
//!
//! Opens an [`EmbeddedStore`] with the default config (`fsync = "always"`: one
//! fdatasync per group commit, before any outcome is returned) in a fresh temporary
//! directory, and appends through [`LogStore::append`] directly.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use tern_config::StoreConfig;
use tern_link::ChannelName;
use tern_log::{AppendOutcome, AppendRequest, EmbeddedStore, LogStore};

use super::workload::{self, BatchAck, BatchSpec, Measurement, Target, Workload};

#[derive(Clone)]
struct Inproc {
    store: EmbeddedStore,
    channels: Arc<[ChannelName]>,
    payload: Bytes,
    nonce: u64,
}

impl Target for Inproc {
    type Batch = Vec<AppendRequest>;

    fn prepare(&self, spec: BatchSpec) -> Vec<AppendRequest> {
        spec.seqs()
            .zip(workload::binary_keys(self.nonce, spec))
            .map(|(seq, key)| AppendRequest {
                channel: self.channels[(seq % self.channels.len() as u64) as usize].clone(),
                idempotency_key: key,
                headers: Vec::new(),
                payload: self.payload.clone(),
            })
            .collect()
    }

    async fn send(&self, batch: Vec<AppendRequest>) -> anyhow::Result<BatchAck> {
        let outcomes = self.store.append(batch).await?;
        let mut ack = BatchAck::default();
        for outcome in outcomes {
            match outcome {
                AppendOutcome::Appended(_) => ack.appended += 1,
                AppendOutcome::Duplicate(_) => ack.duplicates += 1,
                AppendOutcome::Rejected(error) => bail!("the store rejected a message: {error}"),
            }
        }
        Ok(ack)
    }
}

/// Runs `workload` against a fresh embedded store under `dir`.
pub(crate) async fn run(
    label: &str,
    workload: &Workload,
    dir: &Path,
    deadline: Instant,
) -> anyhow::Result<Measurement> {
    let tmp = tempfile::Builder::new()
        .prefix("tern-bench-inproc-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary directory in {}", dir.display()))?;
    let path = tmp.path().to_path_buf();
    let store =
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&path, StoreConfig::default()))
            .await
            .context("store opening task failed")?
            .context("cannot open the embedded store")?;
    let channels = workload
        .channel_names()
        .iter()
        .map(|name| ChannelName::parse(name))
        .collect::<Result<Vec<_>, _>>()
        .context("benchmark channel names are valid")?;
    let target = Inproc {
        store: store.clone(),
        channels: channels.into(),
        payload: workload.payload(),
        nonce: workload::run_nonce(),
    };
    let measured = workload::drive(label, workload, target, deadline).await;
    let closed = store.close().await;
    let measured = measured?;
    closed.context("closing the store")?;
    // Removing the data directory may take a while for large runs; not measured.
    tokio::task::spawn_blocking(move || tmp.close())
        .await
        .context("cleanup task failed")?
        .context("cannot remove the temporary store")?;
    Ok(measured)
}
