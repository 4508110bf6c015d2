//! The single writer and its syncer: group commit with pipelined fsync.
//!
//! ```text
//!  append() ──Command──▶ WRITER thread                      SYNCER thread
//!                        drain queue → one batch             drain jobs
//!                        dedupe, assign serials              fdatasync (policy always)
//!                        pwrite into the segment ──SyncJob──▶ publish index (readers see it)
//!                        roll segment, checkpoint            answer every waiter, feed tails
//! ```
//! The writer never waits for the disk to sync: while the syncer runs one
//! fdatasync, the writer already builds and writes the next batch, and the next
//! fdatasync covers every batch written meanwhile. A waiter is answered only after an
//! fdatasync that started after its batch was written (policy `always`), so every
//! outcome it receives, including `Duplicate`, points at durable data.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tern_config::{FsyncPolicy, StoreConfig};
use tern_link::{ChannelName, Epoch, Position, Serial, StoredMessage};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

use super::checkpoint::{self, KeyFiles, Snapshot, Tip};
use super::dedupe::{DedupeEntry, DedupeIndex};
use super::files::{is_storage_full, now_ms, segment_path, sync_dir};
use super::format::BatchWriter;
use super::index::{IndexUpdate, SegmentInfo, SharedIndex, WriterChannel};
use super::meta::Meta;
use crate::store::{
    AppendOutcome, AppendRequest, CommittedBatch, LogError, RecordError, RetentionReport,
};

pub(crate) type AppendReply = oneshot::Sender<Result<Vec<AppendOutcome>, LogError>>;

/// What the store handle asks of the writer.
pub(crate) enum Command {
    Append {
        /// Each message, or why it was refused (checked by the caller, off this
        /// thread).
        batch: Vec<Result<AppendRequest, RecordError>>,
        bytes: usize,
        reply: AppendReply,
    },
    Retention {
        reply: oneshot::Sender<Result<RetentionReport, LogError>>,
    },
    Close {
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// The reason the store stopped accepting appends, set once.
pub(crate) type FailedFlag = Arc<OnceLock<String>>;

/// Everything the writer owns. Built by recovery.
pub(crate) struct Writer {
    pub(crate) data_dir: PathBuf,
    pub(crate) segments_dir: PathBuf,
    pub(crate) config: StoreConfig,
    pub(crate) file: Arc<File>,
    pub(crate) segment: u64,
    pub(crate) pos: u64,
    pub(crate) next_lsn: u64,
    pub(crate) meta: Meta,
    pub(crate) channels: Vec<WriterChannel>,
    pub(crate) ids: HashMap<ChannelName, u32, foldhash::fast::RandomState>,
    pub(crate) dedupe: DedupeIndex,
    /// Taken by `spawn`, which runs it on a thread of its own.
    checkpointer: Option<Checkpointer>,
    to_checkpointer: Option<std_mpsc::SyncSender<CheckpointJob>>,
    pub(crate) shared: Arc<RwLock<SharedIndex>>,
    pub(crate) tail: broadcast::Sender<Arc<CommittedBatch>>,
    pub(crate) failed: FailedFlag,
    /// The data dir's lock, held until the writer has finished (so a new open
    /// waits for the last checkpoint of the old one).
    _lock: File,
    /// Channels created since the last job, in id order, for the syncer to publish.
    pending_new: Vec<ChannelName>,
    bytes_since_checkpoint: u64,
    /// Dedupe keys forgotten early, as last reported, and when.
    evicted_reported: u64,
    evicted_reported_at: Option<Instant>,
    generation: u64,
    batch: BatchWriter,
    /// The timestamp of the last batch written.
    last_timestamp_ms: u64,
}

struct SyncJob {
    file: Arc<File>,
    segment: u64,
    end_pos: u64,
    timestamp_ms: u64,
    new_channels: Vec<ChannelName>,
    updates: Vec<IndexUpdate>,
    replies: Vec<(AppendReply, Vec<AppendOutcome>)>,
    committed: CommittedBatch,
}

enum SyncMsg {
    Job(SyncJob),
    Barrier(std_mpsc::SyncSender<()>),
    /// The `interval` deadline passed with nothing queued.
    Tick,
}

/// Channel state to restore if a write fails.
struct Undo {
    channels: Vec<(u32, WriterChannel)>,
    keys: Vec<u128>,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        data_dir: PathBuf,
        config: StoreConfig,
        file: File,
        segment: u64,
        pos: u64,
        next_lsn: u64,
        meta: Meta,
        channels: Vec<WriterChannel>,
        dedupe: DedupeIndex,
        checkpointer: Checkpointer,
        shared: Arc<RwLock<SharedIndex>>,
        tail: broadcast::Sender<Arc<CommittedBatch>>,
        failed: FailedFlag,
        lock: File,
    ) -> Self {
        let (ids, last_timestamp_ms) = {
            let s = shared.read();
            let ids = s
                .ids
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect::<HashMap<_, _, foldhash::fast::RandomState>>();
            let last = s.segments.values().map(|info| info.last_timestamp_ms).max();
            (ids, last.unwrap_or(0))
        };
        Self {
            segments_dir: data_dir.join("segments"),
            data_dir,
            config,
            file: Arc::new(file),
            segment,
            pos,
            next_lsn,
            meta,
            channels,
            ids,
            dedupe,
            checkpointer: Some(checkpointer),
            to_checkpointer: None,
            shared,
            tail,
            failed,
            _lock: lock,
            pending_new: Vec::new(),
            bytes_since_checkpoint: 0,
            evicted_reported: 0,
            evicted_reported_at: None,
            generation: 0,
            batch: BatchWriter::new(),
            last_timestamp_ms,
        }
    }

    /// Starts the writer and syncer threads.
    pub(crate) fn spawn(mut self, commands: mpsc::Receiver<Command>) -> std::io::Result<()> {
        let (to_syncer, from_writer) = std_mpsc::channel();
        // At most one checkpoint waits while another is written; a writer that gets
        // further ahead waits for the disk rather than piling up snapshots.
        let (to_checkpointer, snapshots) = std_mpsc::sync_channel(1);
        if let Some(checkpointer) = self.checkpointer.take() {
            std::thread::Builder::new()
                .name("tern-log-ckpt".into())
                .spawn(move || checkpointer.run(snapshots))?;
        }
        self.to_checkpointer = Some(to_checkpointer);
        let syncer = Syncer {
            policy: self.config.fsync,
            shared: self.shared.clone(),
            tail: self.tail.clone(),
            failed: self.failed.clone(),
        };
        std::thread::Builder::new()
            .name("tern-log-sync".into())
            .spawn(move || syncer.run(from_writer))?;
        std::thread::Builder::new()
            .name("tern-log-write".into())
            .spawn(move || self.run(commands, to_syncer))?;
        Ok(())
    }

    fn run(mut self, mut commands: mpsc::Receiver<Command>, syncer: std_mpsc::Sender<SyncMsg>) {
        let mut carried: Option<Command> = None;
        loop {
            let Some(first) = carried.take().or_else(|| commands.blocking_recv()) else {
                // Every handle is gone: shut down as cleanly as a close.
                let _ = self.close(&syncer);
                return;
            };
            match first {
                Command::Append {
                    batch,
                    bytes,
                    reply,
                } => {
                    // One group commit never exceeds max_batch_bytes (each append
                    // was checked against it alone), so every batch stays readable.
                    let mut group = vec![(batch, reply)];
                    let mut total = bytes;
                    while let Ok(next) = commands.try_recv() {
                        match next {
                            Command::Append {
                                batch,
                                bytes,
                                reply,
                            } if total + bytes <= self.config.max_batch_bytes => {
                                total += bytes;
                                group.push((batch, reply));
                            }
                            other => {
                                carried = Some(other);
                                break;
                            }
                        }
                    }
                    self.append_group(group, &syncer);
                    self.after_write(&syncer);
                }
                Command::Retention { reply } => {
                    let _ = reply.send(self.retention(&syncer));
                }
                Command::Close { reply } => {
                    let result = self.close(&syncer);
                    // Release the lock before answering, so a reopen right after
                    // `close` returns finds the store free.
                    drop(self);
                    let _ = reply.send(result);
                    return;
                }
            }
        }
    }

    fn append_group(
        &mut self,
        group: Vec<(Vec<Result<AppendRequest, RecordError>>, AppendReply)>,
        syncer: &std_mpsc::Sender<SyncMsg>,
    ) {
        if let Some(reason) = self.failed.get() {
            for (_, reply) in group {
                let _ = reply.send(Err(LogError::Failed(reason.clone())));
            }
            return;
        }
        // Never before an earlier batch, whatever the wall clock does: reads from a
        // point in time rely on timestamps that do not decrease.
        let timestamp_ms = now_ms().max(self.last_timestamp_ms);
        self.last_timestamp_ms = timestamp_ms;
        let now_s = (timestamp_ms / 1000) as u32;
        self.dedupe.expire(now_s);
        self.generation += 1;
        let generation = self.generation;
        let epoch = self.meta.epoch;
        let batch_pos = self.pos;
        self.batch.begin(self.next_lsn, timestamp_ms);
        let mut committed: Vec<(ChannelName, Vec<StoredMessage>)> = Vec::new();
        let mut updates: Vec<IndexUpdate> = Vec::new();
        let mut undo = Undo {
            channels: Vec::new(),
            keys: Vec::new(),
        };
        let mut replies = Vec::with_capacity(group.len());
        for (requests, reply) in group {
            let mut outcomes = Vec::with_capacity(requests.len());
            for req in requests {
                let req = match req {
                    Ok(req) => req,
                    Err(e) => {
                        outcomes.push(AppendOutcome::Rejected(e));
                        continue;
                    }
                };
                let id = self.channel_id(&req.channel);
                let hash = self
                    .dedupe
                    .hash(req.channel.as_str().as_bytes(), &req.idempotency_key);
                if let Some(orig) = self.dedupe.lookup(hash, now_s) {
                    outcomes.push(AppendOutcome::Duplicate(Position {
                        epoch: Epoch(orig.epoch),
                        serial: Serial::new(orig.serial).unwrap_or(Serial::FIRST),
                    }));
                    continue;
                }
                let wc = &mut self.channels[id as usize];
                if wc.touched_gen != generation {
                    undo.channels.push((id, *wc));
                    wc.touched_gen = generation;
                    wc.touched_slot = updates.len() as u32;
                    updates.push(IndexUpdate {
                        channel_id: id,
                        last: Position {
                            epoch: Epoch(epoch),
                            serial: Serial::FIRST,
                        },
                        entry: None,
                        epoch_start: None,
                    });
                    committed.push((req.channel.clone(), Vec::new()));
                }
                let serial_n = wc.last_serial + 1;
                let (entry, epoch_start) =
                    wc.note(epoch, serial_n, self.segment, batch_pos, timestamp_ms);
                let slot = wc.touched_slot as usize;
                let serial = Serial::new(serial_n).expect("last_serial + 1 is never zero");
                let position = Position {
                    epoch: Epoch(epoch),
                    serial,
                };
                let update = &mut updates[slot];
                update.last = position;
                if update.entry.is_none() {
                    update.entry = entry;
                }
                if epoch_start.is_some() {
                    update.epoch_start = epoch_start;
                }
                self.batch.push(
                    req.channel.as_str(),
                    epoch,
                    serial_n,
                    &req.idempotency_key,
                    &req.headers,
                    &req.payload,
                );
                self.dedupe.insert(
                    hash,
                    DedupeEntry {
                        time_s: now_s,
                        epoch,
                        serial: serial_n,
                    },
                );
                undo.keys.push(hash);
                outcomes.push(AppendOutcome::Appended(position));
                // Moved, not copied. Built whether or not anyone follows the tail
                // now: a follower may subscribe before the syncer publishes it.
                committed[slot].1.push(StoredMessage {
                    position,
                    timestamp_ms,
                    idempotency_key: req.idempotency_key,
                    headers: req.headers,
                    payload: req.payload,
                });
            }
            replies.push((reply, outcomes));
        }
        if self.batch.count() > 0 {
            let count = u64::from(self.batch.count());
            let bytes = self.batch.finish();
            if let Err(e) = self.file.write_all_at(bytes, self.pos) {
                self.undo_failed_write(undo, replies, e);
                return;
            }
            let len = bytes.len() as u64;
            self.pos += len;
            self.next_lsn += count;
            self.bytes_since_checkpoint += len;
        }
        // Duplicates and rejections go through the syncer too, so that they are
        // answered only once what they point at is durable.
        let job = SyncJob {
            file: self.file.clone(),
            segment: self.segment,
            end_pos: self.pos,
            timestamp_ms,
            new_channels: std::mem::take(&mut self.pending_new),
            updates,
            replies,
            committed: CommittedBatch {
                channels: committed,
            },
        };
        if syncer.send(SyncMsg::Job(job)).is_err() {
            let _ = self.failed.set("the syncer thread is gone".into());
        }
    }

    fn channel_id(&mut self, name: &ChannelName) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.channels.len() as u32;
        self.ids.insert(name.clone(), id);
        self.channels.push(WriterChannel::default());
        self.pending_new.push(name.clone());
        id
    }

    fn undo_failed_write(
        &mut self,
        undo: Undo,
        replies: Vec<(AppendReply, Vec<AppendOutcome>)>,
        e: std::io::Error,
    ) {
        for (id, state) in undo.channels {
            self.channels[id as usize] = state;
        }
        for hash in undo.keys.into_iter().rev() {
            self.dedupe.remove_newest(hash);
        }
        // Cut whatever part of the batch reached the file, so the next batch starts
        // at a clean boundary.
        let cut = self.file.set_len(self.pos);
        let err = || {
            if is_storage_full(&e) {
                LogError::StorageFull(e.to_string())
            } else {
                LogError::Io {
                    context: "writing a batch".into(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                }
            }
        };
        if is_storage_full(&e) {
            warn!(error = %e, segment = self.segment, "storage full; batch refused, nothing stored");
        } else {
            error!(error = %e, "write failed; store stops accepting appends");
            let _ = self.failed.set(format!("write failed: {e}"));
        }
        if let Err(cut_err) = cut {
            error!(error = %cut_err, "could not cut a partly written batch; store stops accepting appends");
            let _ = self
                .failed
                .set(format!("could not cut a partly written batch: {cut_err}"));
        }
        for (reply, _) in replies {
            let _ = reply.send(Err(err()));
        }
    }

    fn after_write(&mut self, syncer: &std_mpsc::Sender<SyncMsg>) {
        if self.pos >= self.config.segment_bytes
            && let Err(e) = self.roll()
        {
            warn!(error = %e, "could not start a new segment; writing on in the current one");
        }
        if self.bytes_since_checkpoint >= self.config.checkpoint_bytes
            && let Err(e) = self.checkpoint(syncer, false)
        {
            warn!(error = %e, "checkpoint failed; the next open will replay more");
        }
    }

    fn roll(&mut self) -> std::io::Result<()> {
        self.sync_or_fail(&self.file.clone(), "before starting a new segment")?;
        let path = segment_path(&self.segments_dir, self.next_lsn);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) = sync_dir(&self.segments_dir) {
            // Leave no half-made segment behind, so the next roll can try again.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        self.file = Arc::new(file);
        self.segment = self.next_lsn;
        self.pos = 0;
        info!(segment = %path.display(), "new segment");
        Ok(())
    }

    /// fdatasyncs `file`; a failure fails the store (the kernel reports a failed
    /// writeback once, so a later sync "succeeding" would prove nothing).
    fn sync_or_fail(&self, file: &File, when: &str) -> std::io::Result<()> {
        file.sync_data().inspect_err(|e| {
            error!(error = %e, when, "fdatasync failed; store stops accepting appends");
            let _ = self.failed.set(format!("fdatasync failed {when}: {e}"));
        })
    }

    /// Waits until the syncer has published every job sent so far.
    fn barrier(&self, syncer: &std_mpsc::Sender<SyncMsg>) -> Result<(), LogError> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        syncer
            .send(SyncMsg::Barrier(tx))
            .map_err(|_| LogError::Failed("the syncer thread is gone".into()))?;
        rx.recv()
            .map_err(|_| LogError::Failed("the syncer thread is gone".into()))
    }

    /// Takes a checkpoint at this quiescent point and hands it to the checkpointer
    /// thread; with `wait`, returns once it is durable.
    fn checkpoint(
        &mut self,
        syncer: &std_mpsc::Sender<SyncMsg>,
        wait: bool,
    ) -> Result<(), LogError> {
        if let Some(reason) = self.failed.get() {
            // Nothing written since the failure may be trusted as durable.
            return Err(LogError::Failed(reason.clone()));
        }
        self.barrier(syncer)?;
        let tip = Tip {
            next_lsn: self.next_lsn,
            segment: self.segment,
            pos: self.pos,
        };
        let body = checkpoint::encode(&tip, &self.channels, &self.shared.read());
        let keys = self.dedupe.take_since_mark();
        // At most one warning a minute: under sustained overload every checkpoint
        // would otherwise repeat it.
        let evicted = self.dedupe.evicted_early();
        let due = self
            .evicted_reported_at
            .is_none_or(|at| at.elapsed() >= EVICTION_WARNING_EVERY);
        if evicted > self.evicted_reported && due {
            warn!(
                forgotten = evicted - self.evicted_reported,
                held = self.dedupe.len(),
                "dedupe index full: keys forgotten before their window ended; raise store.dedupe.max_keys to keep the whole window"
            );
            self.evicted_reported = evicted;
            self.evicted_reported_at = Some(Instant::now());
        }
        let snapshot = Snapshot {
            segment_file: self.file.clone(),
            next_lsn: self.next_lsn,
            body,
            keys,
            oldest_key_time: self.dedupe.oldest_time(),
        };
        self.bytes_since_checkpoint = 0;
        let gone = || LogError::Failed("the checkpoint thread is gone".into());
        let (done, result) = if wait {
            let (tx, rx) = std_mpsc::sync_channel(1);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.to_checkpointer
            .as_ref()
            .ok_or_else(gone)?
            .send(CheckpointJob { snapshot, done })
            .map_err(|_| gone())?;
        match result {
            Some(rx) => rx.recv().map_err(|_| gone())?,
            None => Ok(()),
        }
    }

    fn retention(
        &mut self,
        syncer: &std_mpsc::Sender<SyncMsg>,
    ) -> Result<RetentionReport, LogError> {
        self.barrier(syncer)?;
        let now = now_ms();
        let victims: Vec<(u64, u64)> = {
            let shared = self.shared.read();
            let mut total: u64 = shared.segments.values().map(|s| s.durable_len).sum();
            let mut victims = Vec::new();
            for (&base, info) in &shared.segments {
                if base == self.segment {
                    break;
                }
                let too_big = self
                    .config
                    .retention
                    .max_bytes
                    .is_some_and(|max| total > max);
                let too_old = self.config.retention.max_age.is_some_and(|age| {
                    info.last_timestamp_ms
                        .saturating_add(age.as_millis() as u64)
                        < now
                });
                if !(too_big || too_old) {
                    break;
                }
                total -= info.durable_len;
                victims.push((base, info.durable_len));
            }
            victims
        };
        if victims.is_empty() {
            return Ok(RetentionReport::default());
        }
        // Checkpoint first, so channel state (last serials, epochs) never depends on
        // a file that is about to go. The checkpoint still lists the victims: an
        // open that finds them gone drops them from the index; one that finds them
        // still there (a crash before the deletes) leaves them to the next pass.
        self.checkpoint(syncer, true)?;
        {
            let mut shared = self.shared.write();
            for (base, _) in &victims {
                shared.drop_segment(*base);
            }
        }
        let mut report = RetentionReport::default();
        for (base, len) in victims {
            let path = segment_path(&self.segments_dir, base);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    report.segments_removed += 1;
                    report.bytes_removed += len;
                }
                Err(e) => warn!(segment = %path.display(), error = %e, "could not remove segment"),
            }
        }
        let _ = sync_dir(&self.segments_dir);
        info!(
            segments = report.segments_removed,
            bytes = report.bytes_removed,
            "retention removed old segments"
        );
        Ok(report)
    }

    fn close(&mut self, syncer: &std_mpsc::Sender<SyncMsg>) -> Result<(), LogError> {
        self.checkpoint(syncer, true)?;
        if self.failed.get().is_none() {
            self.meta.clean = true;
            self.meta
                .store(&self.data_dir.join("meta"))
                .map_err(|source| LogError::Io {
                    context: "marking the store clean".into(),
                    source,
                })?;
        }
        info!(dir = %self.data_dir.display(), "store closed");
        Ok(())
    }
}

/// A snapshot to persist, and who waits for it.
struct CheckpointJob {
    snapshot: Snapshot,
    done: Option<std_mpsc::SyncSender<Result<(), LogError>>>,
}

/// Writes checkpoints and key files on a thread of its own, so the writer never
/// waits for them (except on close and retention, which need them durable).
pub(crate) struct Checkpointer {
    data_dir: PathBuf,
    key_files: KeyFiles,
    failed: FailedFlag,
    /// Keys of snapshots whose key file could not be written, carried into the
    /// next one so none is forgotten.
    carried_keys: Vec<(u128, DedupeEntry)>,
}

impl Checkpointer {
    pub(crate) fn new(data_dir: PathBuf, key_files: KeyFiles, failed: FailedFlag) -> Self {
        Self {
            data_dir,
            key_files,
            failed,
            carried_keys: Vec::new(),
        }
    }

    fn run(mut self, jobs: std_mpsc::Receiver<CheckpointJob>) {
        for CheckpointJob { snapshot, done } in jobs {
            let result = self.persist(snapshot);
            if let Err(e) = &result {
                warn!(error = %e, "checkpoint failed; the next open will replay more");
            }
            if let Some(done) = done {
                let _ = done.send(result);
            }
        }
    }

    /// Makes `snapshot` durable; see [`checkpoint::persist`].
    pub(crate) fn persist(&mut self, mut snapshot: Snapshot) -> Result<(), LogError> {
        if let Some(reason) = self.failed.get() {
            return Err(LogError::Failed(reason.clone()));
        }
        let started = Instant::now();
        if let Err(e) = snapshot.segment_file.sync_data() {
            // The kernel reports a failed writeback once: nothing may be trusted.
            error!(error = %e, "fdatasync failed before a checkpoint; store stops accepting appends");
            let _ = self
                .failed
                .set(format!("fdatasync failed before a checkpoint: {e}"));
            self.carried_keys.append(&mut snapshot.keys);
            return Err(LogError::Failed(format!(
                "fdatasync failed before a checkpoint: {e}"
            )));
        }
        if !self.carried_keys.is_empty() {
            let mut keys = std::mem::take(&mut self.carried_keys);
            keys.append(&mut snapshot.keys);
            snapshot.keys = keys;
        }
        match checkpoint::persist(&self.data_dir, &snapshot, &mut self.key_files) {
            Ok(bytes) => {
                info!(
                    bytes,
                    keys = snapshot.keys.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "checkpoint written"
                );
                Ok(())
            }
            Err(e) => {
                self.carried_keys = snapshot.keys;
                Err(LogError::Io {
                    context: "writing a checkpoint".into(),
                    source: e,
                })
            }
        }
    }
}

struct Syncer {
    policy: FsyncPolicy,
    shared: Arc<RwLock<SharedIndex>>,
    tail: broadcast::Sender<Arc<CommittedBatch>>,
    failed: FailedFlag,
}

impl Syncer {
    fn run(self, from_writer: std_mpsc::Receiver<SyncMsg>) {
        let interval = match self.policy {
            FsyncPolicy::Always => None,
            FsyncPolicy::Interval(d) => Some(d),
        };
        let mut unsynced: Option<Arc<File>> = None;
        let mut deadline = Instant::now() + interval.unwrap_or_default();
        loop {
            let first = match interval {
                None => from_writer.recv().ok(),
                Some(_) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match from_writer.recv_timeout(wait) {
                        Ok(m) => Some(m),
                        Err(std_mpsc::RecvTimeoutError::Timeout) => Some(SyncMsg::Tick),
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            let Some(first) = first else {
                if let Some(file) = unsynced.take() {
                    let _ = self.sync(&[file]);
                }
                return;
            };
            let mut jobs = Vec::new();
            let mut barriers = Vec::new();
            for msg in std::iter::once(first).chain(from_writer.try_iter()) {
                match msg {
                    SyncMsg::Job(job) => jobs.push(job),
                    SyncMsg::Barrier(done) => barriers.push(done),
                    SyncMsg::Tick => {}
                }
            }
            if let Some(reason) = self.failed.get() {
                // After a failed fsync nothing written since may be acknowledged.
                self.refuse(jobs, reason);
            } else if !jobs.is_empty() && interval.is_none() {
                let mut files: Vec<Arc<File>> = Vec::new();
                for job in &jobs {
                    if !files.iter().any(|f| Arc::ptr_eq(f, &job.file)) {
                        files.push(job.file.clone());
                    }
                }
                match self.sync(&files) {
                    Ok(()) => self.publish(jobs),
                    Err(reason) => self.refuse(jobs, &reason),
                }
            } else {
                if let Some(last) = jobs.last() {
                    unsynced = Some(last.file.clone());
                }
                self.publish(jobs);
            }
            // Under `interval`, sync once the deadline has passed, however busy the
            // queue is.
            if let Some(d) = interval
                && Instant::now() >= deadline
            {
                if let Some(file) = unsynced.take() {
                    let _ = self.sync(&[file]);
                }
                deadline = Instant::now() + d;
            }
            for done in barriers {
                let _ = done.send(());
            }
        }
    }

    /// Fails every waiter of `jobs`, keeping the channel ids of the shared index in
    /// step with the writer's.
    fn refuse(&self, jobs: Vec<SyncJob>, reason: &str) {
        let mut shared = self.shared.write();
        for job in jobs {
            for name in job.new_channels {
                shared.add_channel(name);
            }
            for (reply, _) in job.replies {
                let _ = reply.send(Err(LogError::Failed(reason.to_string())));
            }
        }
    }

    /// fdatasyncs `files`; on failure marks the store failed (the kernel may have
    /// dropped the dirty pages, so nothing written since the last good sync may be
    /// acknowledged) and returns the reason.
    fn sync(&self, files: &[Arc<File>]) -> Result<(), String> {
        for file in files {
            if let Err(e) = file.sync_data() {
                let reason = format!("fdatasync failed: {e}");
                error!(error = %e, "fdatasync failed; store stops accepting appends");
                let _ = self.failed.set(reason.clone());
                return Err(reason);
            }
        }
        Ok(())
    }

    fn publish(&self, jobs: Vec<SyncJob>) {
        {
            let mut shared = self.shared.write();
            for job in &jobs {
                for name in &job.new_channels {
                    shared.add_channel(name.clone());
                }
                let info = shared.segments.entry(job.segment).or_insert(SegmentInfo {
                    durable_len: 0,
                    last_timestamp_ms: 0,
                });
                info.durable_len = job.end_pos;
                info.last_timestamp_ms = job.timestamp_ms;
                for update in &job.updates {
                    shared.apply(*update);
                }
            }
        }
        for job in jobs {
            for (reply, outcomes) in job.replies {
                let _ = reply.send(Ok(outcomes));
            }
            if !job.committed.channels.is_empty() {
                let _ = self.tail.send(Arc::new(job.committed));
            }
        }
    }
}

/// Least time between two "dedupe index full" warnings.
const EVICTION_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long `close` waits for the writer before giving up.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
