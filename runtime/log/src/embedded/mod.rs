//! The embedded store: segment files on local disk, the default [`LogStore`].
//!
//! ```text
//! <data_dir>/
//!   meta                      epoch, dedupe hash seed, clean-shutdown flag
//!   index.ckpt                last index checkpoint (channels, sparse index)
//!   dedupe/<lsn>.keys         idempotency keys added before the checkpoint at <lsn>
//!   lock                      held (flock) while a process has the store open
//!   segments/00000000000000000000.seg   batches (see `format`), named by first lsn
//! ```
//!
//! Opening verifies only the tail: the checkpoint says how far the index is known,
//! and only the batches after it are read and checked. The first bad batch in the
//! last segment (torn write, flipped bit, cut file) is truncated away and reported;
//! a bad batch in an older segment refuses the open instead, because data after it
//! was acknowledged and cutting it would lose it silently.

mod checkpoint;
mod dedupe;
mod files;
mod format;
mod index;
mod keys;
mod meta;
mod read;
mod segment;
mod writer;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tern_config::{FsyncPolicy, StoreConfig};
use tern_link::{ChannelName, Epoch, MAX_IDEMPOTENCY_KEY_BYTES, Position, Serial};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{info, warn};

use self::checkpoint::KeyFiles;
use self::dedupe::{DedupeEntry, DedupeIndex};
use self::files::{list_segments, now_ms, segment_path, sync_dir};
use self::index::{SegmentInfo, SharedIndex, WriterChannel};
use self::meta::Meta;
use self::segment::{ScanError, SegmentScanner};
use self::writer::{CLOSE_TIMEOUT, Checkpointer, Command, FailedFlag, Writer};
use crate::store::{
    AppendOutcome, AppendRequest, ChannelInfo, CommittedBatch, LogError, LogStore, ReadLimit,
    ReadResult, RecordError, RetentionReport,
};

/// How often `open` tries the lock (10 ms apart) before reporting it held.
const LOCK_ATTEMPTS: u32 = 50;

/// Every decoder of on-disk data, for the `store_files` fuzz target.
#[cfg(fuzzing)]
pub(crate) mod fuzzing {
    use super::format::{BATCH_HEADER_BYTES, Batch, BatchHeader};
    use super::{checkpoint, keys, meta};

    /// Runs `bytes` through the batch, checkpoint, meta and key-file decoders, as
    /// recovery would after a crash left anything at all in those files.
    pub fn decode_store_file(bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(head) = rest.first_chunk::<BATCH_HEADER_BYTES>() {
            let Ok(header) = BatchHeader::parse(head, u64::from(u32::MAX)) else {
                break;
            };
            let end = usize::try_from(header.total_len()).unwrap_or(usize::MAX);
            let Some(body) = rest.get(BATCH_HEADER_BYTES..end) else {
                break;
            };
            if let Ok(batch) = Batch::parse(&header, body) {
                for record in batch.records().flatten() {
                    let _ = record.headers();
                }
            }
            rest = &rest[end..];
        }
        let _ = checkpoint::read(bytes);
        let _ = meta::Meta::decode(bytes);
        let _ = keys::read(bytes);
    }
}

/// Why a store could not be opened. The operator's to fix; nothing was changed on
/// disk except where [`RecoveryReport`] says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process holds the store's lock.
    #[error("{0} is in use by another process")]
    Locked(PathBuf),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data is damaged somewhere other than the tail, or the meta file is.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpenError {
    let context = context.into();
    move |source| OpenError::Io { context, source }
}

/// What opening the store found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Whether an index checkpoint was used (else every segment was scanned).
    pub used_checkpoint: bool,
    /// Bytes of segment data read and verified.
    pub replayed_bytes: u64,
    /// Records found in them.
    pub replayed_records: u64,
    /// What was cut from the tail, if anything.
    pub truncated: Option<Truncation>,
    /// The epoch now in force.
    pub epoch: Epoch,
    /// Whether opening started a new epoch (see the crate docs for when).
    pub epoch_changed: bool,
    /// Channels known.
    pub channels: usize,
    /// Milliseconds the open took.
    pub took_ms: u64,
}

/// Damage cut from the end of the last segment.
#[derive(Clone, Debug)]
pub struct Truncation {
    /// The segment file.
    pub file: PathBuf,
    /// Where the first bad batch started (the new file length).
    pub offset: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// What was wrong there.
    pub reason: String,
}

/// The embedded segment store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    shared: Arc<RwLock<SharedIndex>>,
    tail: broadcast::Sender<Arc<CommittedBatch>>,
    failed: FailedFlag,
    segments_dir: PathBuf,
    config: StoreConfig,
    recovery: RecoveryReport,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("segments_dir", &self.inner.segments_dir)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`, recovering from any crash, and
    /// starts its writer. Blocking: call it before serving, or in `spawn_blocking`.
    pub fn open(data_dir: &Path, config: StoreConfig) -> Result<Self, OpenError> {
        let started = Instant::now();
        let segments_dir = data_dir.join("segments");
        fs::create_dir_all(&segments_dir)
            .map_err(io_err(format!("creating {}", segments_dir.display())))?;
        let lock_path = data_dir.join("lock");
        let lock = File::create(&lock_path).map_err(io_err("creating the lock file"))?;
        // A lock released a moment ago can still look held: a process that forks
        // (to spawn a command) while a store's lock file is open holds a copy of the
        // descriptor, and so the lock, until its child execs. Such a hold lasts
        // microseconds; another process holding the store lasts.
        let mut attempts = 0;
        while lock.try_lock().is_err() {
            attempts += 1;
            if attempts == LOCK_ATTEMPTS {
                return Err(OpenError::Locked(data_dir.to_path_buf()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let meta_path = data_dir.join("meta");
        let segments = list_segments(&segments_dir).map_err(io_err("listing segments"))?;
        let mut meta = load_or_create_meta(&meta_path, &segments)?;
        let keys_dir = data_dir.join("dedupe");
        fs::create_dir_all(&keys_dir)
            .map_err(io_err(format!("creating {}", keys_dir.display())))?;
        let mut rec = Recovery::new(&config, meta.seed, keys_dir);
        let mut report = RecoveryReport::default();
        let Loaded {
            mut segments,
            start,
            lost_tail,
        } = rec.load_checkpoint(data_dir, segments, &mut report);
        // Scanning from a segment other than the first one ever written (retention
        // removed older ones and the checkpoint is gone): channels may start mid-way,
        // and channels whose data is all gone are forgotten, so their serials may be
        // handed out again. A new epoch keeps that honest.
        let partial_scan = !report.used_checkpoint && segments.first().is_some_and(|(b, _)| *b > 0);
        if partial_scan {
            warn!(
                "no usable checkpoint and the oldest segments are gone: rebuilding from what is left under a new epoch"
            );
        }
        if segments.is_empty() {
            let path = segment_path(&segments_dir, rec.next_lsn);
            File::create(&path).map_err(io_err("creating the first segment"))?;
            sync_dir(&segments_dir).map_err(io_err("syncing the segments directory"))?;
            segments.push((rec.next_lsn, path));
        }
        let cut = rec.replay(&segments, start, partial_scan, &mut report)?;

        // Epoch rule (crate docs): a new epoch when anything synced may be missing —
        // recovery cut a damaged tail, the checkpoint proves bytes existed that are
        // gone, the history had to be rebuilt from a partial scan — or after an
        // unclean stop of a run that acknowledged before fsync.
        report.truncated = cut.clone().or(lost_tail);
        let changed =
            report.truncated.is_some() || partial_scan || (meta.acks_before_sync && !meta.clean);
        if changed {
            let new = (meta.epoch + 1).max(now_ms() / 1000);
            warn!(old = meta.epoch, new, "starting a new epoch");
            meta.epoch = new;
        }
        meta.clean = false;
        meta.acks_before_sync = matches!(config.fsync, FsyncPolicy::Interval(_));
        // The new epoch is durable before anything is cut, so a crash in between
        // cannot hand the cut serials out again under the old one.
        meta.store(&meta_path)
            .map_err(io_err("writing the meta file"))?;
        if let Some(cut) = &cut {
            cut_tail(cut)?;
        }
        let (active_base, active_path) = segments
            .last()
            .cloned()
            .expect("at least one segment exists: created above when empty");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&active_path)
            .map_err(io_err(format!("opening {}", active_path.display())))?;
        // What a killed process left in the page cache becomes durable before it is
        // served as such.
        file.sync_data()
            .map_err(io_err("syncing the last segment"))?;
        let pos = file
            .metadata()
            .map_err(io_err("reading the last segment's length"))?
            .len();
        // A fresh checkpoint, so no older one can ever be replayed over what this
        // open decided (a cut tail, a new epoch).
        let failed: FailedFlag = Arc::new(OnceLock::new());
        let mut checkpointer =
            Checkpointer::new(data_dir.to_path_buf(), rec.key_files, failed.clone());
        let tip = checkpoint::Tip {
            next_lsn: rec.next_lsn,
            segment: active_base,
            pos,
        };
        checkpointer
            .persist(checkpoint::Snapshot {
                segment_file: Arc::new(
                    file.try_clone()
                        .map_err(io_err("duplicating the segment handle"))?,
                ),
                next_lsn: rec.next_lsn,
                body: checkpoint::encode(&tip, &rec.channels, &rec.shared),
                keys: rec.dedupe.take_since_mark(),
                oldest_key_time: rec.dedupe.oldest_time(),
            })
            .map_err(|e| OpenError::Io {
                context: "writing the index checkpoint".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        report.epoch = Epoch(meta.epoch);
        report.epoch_changed = changed;
        report.channels = rec.shared.channels.len();
        report.took_ms = started.elapsed().as_millis() as u64;
        info!(
            dir = %data_dir.display(),
            epoch = meta.epoch,
            channels = report.channels,
            used_checkpoint = report.used_checkpoint,
            replayed_bytes = report.replayed_bytes,
            took_ms = report.took_ms,
            "store opened"
        );

        let shared = Arc::new(RwLock::new(rec.shared));
        let (tail, _) = broadcast::channel(config.tail_capacity.max(1));
        let (commands, receiver) = mpsc::channel(1024);
        let writer = Writer::new(
            data_dir.to_path_buf(),
            config.clone(),
            file,
            active_base,
            pos,
            rec.next_lsn,
            meta,
            rec.channels,
            rec.dedupe,
            checkpointer,
            shared.clone(),
            tail.clone(),
            failed.clone(),
            lock,
        );
        writer
            .spawn(receiver)
            .map_err(io_err("starting the writer threads"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                shared,
                tail,
                failed,
                segments_dir,
                config,
                recovery: report,
            }),
        })
    }

    /// What opening found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Why the store refuses appends, if it does.
    pub fn failure(&self) -> Option<&str> {
        self.inner.failed.get().map(String::as_str)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> Command,
    ) -> Result<T, LogError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }
}

impl LogStore for EmbeddedStore {
    async fn append(&self, batch: Vec<AppendRequest>) -> Result<Vec<AppendOutcome>, LogError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Checked here, on the caller's task, so the single writer thread only
        // sequences and writes.
        let max_message_bytes = self.inner.config.max_message_bytes;
        let mut bytes = 0;
        let batch: Vec<_> = batch
            .into_iter()
            .map(|req| {
                let size = check(&req, max_message_bytes)?;
                bytes += size;
                Ok(req)
            })
            .collect();
        if bytes > self.inner.config.max_batch_bytes {
            return Err(LogError::BatchTooLarge {
                size: bytes,
                limit: self.inner.config.max_batch_bytes,
            });
        }
        if let Some(reason) = self.inner.failed.get() {
            return Err(LogError::Failed(reason.clone()));
        }
        self.ask(|reply| Command::Append {
            batch,
            bytes,
            reply,
        })
        .await
    }

    async fn read(
        &self,
        channel: &ChannelName,
        from: Serial,
        limit: impl Into<ReadLimit> + Send,
    ) -> Result<ReadResult, LogError> {
        let limit = limit.into();
        let shared = self.inner.shared.clone();
        let dir = self.inner.segments_dir.clone();
        let channel = channel.clone();
        tokio::task::spawn_blocking(move || read::read(&dir, &shared, &channel, from, limit))
            .await
            .map_err(|e| LogError::Io {
                context: "reading".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    async fn first_serial_since(
        &self,
        channel: &ChannelName,
        since_ms: u64,
    ) -> Result<Option<Serial>, LogError> {
        let shared = self.inner.shared.clone();
        let dir = self.inner.segments_dir.clone();
        let channel = channel.clone();
        tokio::task::spawn_blocking(move || read::first_since(&dir, &shared, &channel, since_ms))
            .await
            .map_err(|e| LogError::Io {
                context: "finding a point in time".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    async fn channel_info(&self, channel: &ChannelName) -> Result<ChannelInfo, LogError> {
        let shared = self.inner.shared.read();
        Ok(shared
            .channel(channel)
            .map(|c| ChannelInfo {
                first_serial: c.first_serial(),
                last: c.last,
                epochs: c.epochs.clone(),
            })
            .unwrap_or_default())
    }

    fn tail(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.inner.tail.subscribe()
    }

    async fn enforce_retention(&self) -> Result<RetentionReport, LogError> {
        self.ask(|reply| Command::Retention { reply }).await
    }

    async fn close(&self) -> Result<(), LogError> {
        match tokio::time::timeout(CLOSE_TIMEOUT, self.ask(|reply| Command::Close { reply })).await
        {
            Ok(r) => r,
            Err(_) => Err(LogError::Failed("close timed out".into())),
        }
    }
}

/// Checks one message against the limits; returns its encoded size.
fn check(req: &AppendRequest, max_message_bytes: usize) -> Result<usize, RecordError> {
    let key_len = req.idempotency_key.len();
    if key_len == 0 || key_len > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(RecordError::InvalidKey(key_len));
    }
    if req.headers.len() > usize::from(u16::MAX) {
        return Err(RecordError::TooManyHeaders(req.headers.len()));
    }
    let size = format::record_size(
        req.channel.as_str(),
        &req.idempotency_key,
        &req.headers,
        &req.payload,
    );
    let oversized_header = req
        .headers
        .iter()
        .any(|(n, _)| n.len() > usize::from(u16::MAX));
    if size > max_message_bytes || oversized_header {
        return Err(RecordError::TooLarge {
            size,
            limit: max_message_bytes,
        });
    }
    Ok(size)
}

/// Reads the meta file, or creates one for a new store. A store whose first open
/// died before writing its meta file (only empty segments exist) counts as new.
fn load_or_create_meta(path: &Path, segments: &[(u64, PathBuf)]) -> Result<Meta, OpenError> {
    match fs::read(path) {
        Ok(bytes) => {
            Meta::decode(&bytes).map_err(|e| OpenError::Corrupt(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let has_data = segments
                .iter()
                .any(|(_, p)| fs::metadata(p).map_or(true, |m| m.len() > 0));
            if has_data {
                return Err(OpenError::Corrupt(format!(
                    "{} is missing but segments hold data",
                    path.display()
                )));
            }
            let meta = Meta {
                epoch: (now_ms() / 1000).max(1),
                seed: rand::random(),
                clean: true,
                acks_before_sync: false,
            };
            meta.store(path).map_err(io_err("creating the meta file"))?;
            Ok(meta)
        }
        Err(e) => Err(io_err("reading the meta file")(e)),
    }
}

/// Cuts a damaged tail off the last segment.
fn cut_tail(cut: &Truncation) -> Result<(), OpenError> {
    warn!(
        file = %cut.file.display(),
        offset = cut.offset,
        bytes = cut.bytes,
        reason = %cut.reason,
        "damaged tail: truncating the last segment"
    );
    let f = OpenOptions::new()
        .write(true)
        .open(&cut.file)
        .map_err(io_err(format!(
            "opening {} to truncate",
            cut.file.display()
        )))?;
    f.set_len(cut.offset)
        .and_then(|()| f.sync_all())
        .map_err(io_err(format!("truncating {}", cut.file.display())))
}

/// What [`Recovery::load_checkpoint`] found.
struct Loaded {
    /// The segments to replay and keep, oldest first.
    segments: Vec<(u64, PathBuf)>,
    /// Where replay starts: `(segment, byte offset)`.
    start: (u64, u64),
    /// Synced bytes the checkpoint proves existed but that are gone.
    lost_tail: Option<Truncation>,
}

/// State rebuilt while opening.
struct Recovery {
    shared: SharedIndex,
    channels: Vec<WriterChannel>,
    dedupe: DedupeIndex,
    key_files: KeyFiles,
    next_lsn: u64,
    window_ms: u64,
    now_ms: u64,
}

impl Recovery {
    fn new(config: &StoreConfig, seed: u64, keys_dir: PathBuf) -> Self {
        Self {
            shared: SharedIndex::default(),
            channels: Vec::new(),
            dedupe: DedupeIndex::new(seed, config.dedupe.window, config.dedupe.max_keys),
            key_files: KeyFiles {
                dir: keys_dir,
                files: Vec::new(),
            },
            next_lsn: 0,
            window_ms: config.dedupe.window.as_millis() as u64,
            now_ms: now_ms(),
        }
    }

    /// Loads the checkpoint when it is usable; returns the segments to keep, where
    /// replay starts `(segment, byte offset)`, and the synced bytes the checkpoint
    /// proves existed but that are gone (its segment is now shorter).
    fn load_checkpoint(
        &mut self,
        data_dir: &Path,
        segments: Vec<(u64, PathBuf)>,
        report: &mut RecoveryReport,
    ) -> Loaded {
        let from_scratch = segments.first().map_or((0, 0), |(b, _)| (*b, 0));
        let path = data_dir.join("index.ckpt");
        let ckpt = match fs::read(&path) {
            Ok(bytes) => match checkpoint::read(&bytes) {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "checkpoint unusable; scanning every segment");
                    None
                }
            },
            Err(_) => None,
        };
        let mut lost_tail = None;
        let usable = ckpt.filter(|c| {
            let Some((_, p)) = segments.iter().find(|(b, _)| *b == c.segment) else {
                warn!(segment = c.segment, "checkpoint names a missing segment; scanning every segment");
                return false;
            };
            let len = fs::metadata(p).map_or(0, |m| m.len());
            if len < c.pos {
                warn!(file = %p.display(), len, checkpoint = c.pos, "segment is shorter than the checkpoint: synced data is missing");
                lost_tail = Some(Truncation {
                    file: p.clone(),
                    offset: len,
                    bytes: c.pos - len,
                    reason: "the segment is shorter than the last checkpoint recorded".into(),
                });
            }
            len >= c.pos
        });
        let Some(c) = usable else {
            if let Some((first, _)) = segments.first() {
                self.next_lsn = *first;
            }
            // The scan rebuilds the keys from the data itself.
            self.load_key_files(0);
            return Loaded {
                segments,
                start: from_scratch,
                lost_tail,
            };
        };
        report.used_checkpoint = true;
        let known: std::collections::HashSet<u64> = c.segments.iter().map(|(b, _)| *b).collect();
        let mut kept = Vec::new();
        for (base, path) in segments {
            if base < c.segment && !known.contains(&base) {
                // Retention removed it from the index but the process died before the
                // file went.
                info!(segment = %path.display(), "removing a segment retention had already dropped");
                let _ = fs::remove_file(&path);
            } else {
                kept.push((base, path));
            }
        }
        let present: std::collections::HashSet<u64> = kept.iter().map(|(b, _)| *b).collect();
        for (wc, mut ci) in c.channels {
            ci.entries.retain(|e| present.contains(&e.segment));
            let id = self.shared.add_channel(ci.name.clone());
            self.shared.channels[id as usize] = ci;
            self.channels.push(wc);
        }
        for (base, info) in c.segments {
            if present.contains(&base) {
                self.shared.segments.insert(base, info);
            }
        }
        self.load_key_files(c.next_lsn);
        self.next_lsn = c.next_lsn;
        Loaded {
            segments: kept,
            start: (c.segment, c.pos),
            lost_tail: None,
        }
    }

    /// Loads the key files a checkpoint at `up_to` covers, oldest first, and deletes
    /// later ones (written by a save whose checkpoint never landed: the replay
    /// re-adds those keys).
    fn load_key_files(&mut self, up_to: u64) {
        let files = keys::list(&self.key_files.dir).unwrap_or_default();
        for (end, path) in files {
            if end > up_to || end == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            let entries = match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| keys::read(&b))
            {
                Ok(entries) => entries,
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "dedupe key file unusable; retries of those keys will not be recognised");
                    let _ = fs::remove_file(&path);
                    continue;
                }
            };
            let mut newest = 0;
            for (hash, entry) in entries {
                newest = newest.max(entry.time_s);
                if self.in_window(u64::from(entry.time_s) * 1000) {
                    self.dedupe.insert(hash, entry);
                }
            }
            self.key_files.files.push((end, newest));
        }
        // Those keys are on disk already.
        self.dedupe.take_since_mark();
    }

    fn in_window(&self, time_ms: u64) -> bool {
        time_ms.saturating_add(self.window_ms) > self.now_ms
    }

    /// Reads and verifies every batch from `start` on, rebuilding state. Returns the
    /// damaged tail of the last segment to cut, if any (the caller cuts it once the
    /// new epoch is durable). With `partial_scan`, a channel's first record may
    /// carry any serial (its earlier records were removed by retention).
    fn replay(
        &mut self,
        segments: &[(u64, PathBuf)],
        start: (u64, u64),
        partial_scan: bool,
        report: &mut RecoveryReport,
    ) -> Result<Option<Truncation>, OpenError> {
        let mut cut = None;
        let last_base = segments.last().map(|(b, _)| *b);
        for (base, path) in segments.iter().filter(|(b, _)| *b >= start.0) {
            let from = if *base == start.0 { start.1 } else { 0 };
            let len = fs::metadata(path)
                .map_err(io_err(format!("reading {}", path.display())))?
                .len();
            let mut scanner = SegmentScanner::open(path, from, len)
                .map_err(io_err(format!("opening {}", path.display())))?;
            let mut last_ts = self
                .shared
                .segments
                .get(base)
                .map_or(0, |s| s.last_timestamp_ms);
            let bad = loop {
                match scanner.next_batch() {
                    Ok(None) => break None,
                    Ok(Some((pos, batch))) => {
                        if batch.base_lsn != self.next_lsn {
                            break Some((
                                pos,
                                format!(
                                    "batch lsn {} where {} was expected",
                                    batch.base_lsn, self.next_lsn
                                ),
                            ));
                        }
                        let mut pending = Vec::new();
                        let mut broken = None;
                        for rec in batch.records() {
                            match rec {
                                Ok(r) => pending.push((
                                    r.channel.to_vec(),
                                    r.epoch,
                                    r.serial,
                                    self.dedupe.hash(r.channel, r.key),
                                )),
                                Err(e) => {
                                    broken = Some(e.to_string());
                                    break;
                                }
                            }
                        }
                        if let Some(e) = broken.or_else(|| self.check_dense(&pending, partial_scan))
                        {
                            break Some((pos, e));
                        }
                        for (channel, epoch, serial, hash) in pending {
                            self.apply(
                                &channel,
                                epoch,
                                serial,
                                hash,
                                *base,
                                pos,
                                batch.timestamp_ms,
                            );
                        }
                        self.next_lsn += u64::from(batch.count);
                        report.replayed_records += u64::from(batch.count);
                        last_ts = batch.timestamp_ms;
                    }
                    Err(ScanError::Bad { pos, error }) => break Some((pos, error.to_string())),
                    Err(ScanError::Io(e)) => {
                        return Err(io_err(format!("reading {}", path.display()))(e));
                    }
                }
            };
            let end = match bad {
                None => len,
                Some((pos, reason)) if Some(*base) == last_base => {
                    cut = Some(Truncation {
                        file: path.clone(),
                        offset: pos,
                        bytes: len - pos,
                        reason,
                    });
                    pos
                }
                Some((pos, reason)) => {
                    return Err(OpenError::Corrupt(format!(
                        "{} at byte {pos}: {reason}; later segments hold acknowledged data, so nothing was cut",
                        path.display()
                    )));
                }
            };
            report.replayed_bytes += end.saturating_sub(from);
            self.shared.segments.insert(
                *base,
                SegmentInfo {
                    durable_len: end,
                    last_timestamp_ms: last_ts,
                },
            );
        }
        Ok(cut)
    }

    /// Every record must take the next serial of its channel (any serial for a
    /// channel's first record in a `partial_scan`).
    fn check_dense(
        &self,
        pending: &[(Vec<u8>, u64, u64, u128)],
        partial_scan: bool,
    ) -> Option<String> {
        let mut seen: std::collections::HashMap<&[u8], u64> = std::collections::HashMap::new();
        for (channel, _, serial, _) in pending {
            let last = match seen.get(channel.as_slice()) {
                Some(s) => Some(*s),
                None => std::str::from_utf8(channel)
                    .ok()
                    .and_then(|c| ChannelName::parse(c).ok())
                    .and_then(|c| self.shared.ids.get(&c).copied())
                    .map(|id| self.channels[id as usize].last_serial),
            };
            let last = match last {
                Some(last) => last,
                None if partial_scan && *serial > 0 => *serial - 1,
                None => 0,
            };
            if *serial != last + 1 {
                return Some(format!(
                    "serial {serial} follows {last} in channel {}",
                    String::from_utf8_lossy(channel)
                ));
            }
            seen.insert(channel, *serial);
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        channel: &[u8],
        epoch: u64,
        serial: u64,
        hash: u128,
        segment: u64,
        pos: u64,
        timestamp_ms: u64,
    ) {
        let Some(name) = std::str::from_utf8(channel)
            .ok()
            .and_then(|c| ChannelName::parse(c).ok())
        else {
            return;
        };
        let id = match self.shared.ids.get(&name) {
            Some(&id) => id,
            None => {
                self.channels.push(WriterChannel::default());
                self.shared.add_channel(name)
            }
        };
        let (entry, epoch_start) =
            self.channels[id as usize].note(epoch, serial, segment, pos, timestamp_ms);
        let ci = &mut self.shared.channels[id as usize];
        if let Some(e) = entry {
            ci.entries.push(e);
        }
        if let Some(s) = epoch_start {
            ci.epochs.push(s);
        }
        if let Some(serial) = Serial::new(serial) {
            ci.last = Some(Position {
                epoch: Epoch(epoch),
                serial,
            });
        }
        if self.in_window(timestamp_ms) {
            self.dedupe.insert(
                hash,
                DedupeEntry {
                    time_s: (timestamp_ms / 1000) as u32,
                    epoch,
                    serial,
                },
            );
        }
    }
}
