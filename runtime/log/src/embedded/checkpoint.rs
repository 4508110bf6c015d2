//! Index checkpoints: the whole in-memory state at a quiescent point, so opening a
//! store replays only the records written after it instead of every segment.
//!
//! ```text
//! "TRNC" | version u32 = 2 | body_len u64 | crc32c(body) u32 | body
//! body := next_lsn u64 | segment u64 | pos u64
//!       | n u32 | channel{n} | m u32 | (base u64 | durable_len u64 | last_ts u64){m}
//! channel := name_len u8 | name | last_serial u64 | last_epoch u64 | since_entry u32
//!          | entry_segment u64 | e u32 | (epoch u64 | serial u64){e}
//!          | i u32 | (serial u64 | segment u64 | pos u64 | timestamp_ms u64){i}
//! ```
//! A checkpoint is valid only if its segment still exists and is at least `pos`
//! bytes long; otherwise the store scans every segment (slow, but always right).
//! So does a checkpoint of version 1 (index entries without timestamps).
//! Dedupe keys are not in it: [`persist`] writes the keys added since the previous
//! checkpoint to a key file first (see `keys`), so a checkpoint costs about what
//! was appended since the last one, not what the index holds.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern_link::{ChannelName, Epoch, Position, Serial};

use super::dedupe::DedupeEntry;
use super::files::replace_atomically;
use super::format::Cursor;
use super::index::{ChannelIndex, IndexEntry, SegmentInfo, SharedIndex, WriterChannel};
use super::keys;

const MAGIC: [u8; 4] = *b"TRNC";
const VERSION: u32 = 2;
const HEADER_BYTES: usize = 20;

/// A decoded checkpoint.
pub(crate) struct Checkpoint {
    pub(crate) next_lsn: u64,
    pub(crate) segment: u64,
    pub(crate) pos: u64,
    pub(crate) channels: Vec<(WriterChannel, ChannelIndex)>,
    pub(crate) segments: Vec<(u64, SegmentInfo)>,
}

/// Where the log stood when the checkpoint was taken.
pub(crate) struct Tip {
    pub(crate) next_lsn: u64,
    pub(crate) segment: u64,
    pub(crate) pos: u64,
}

/// Encodes the checkpoint of a quiescent state (on the writer thread: it costs
/// about 40 bytes per channel and 32 per index entry, not per key).
pub(crate) fn encode(tip: &Tip, writer: &[WriterChannel], shared: &SharedIndex) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + shared.channels.len() * 128);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&[0; 12]);
    for n in [tip.next_lsn, tip.segment, tip.pos] {
        b.extend_from_slice(&n.to_le_bytes());
    }
    b.extend_from_slice(&(shared.channels.len() as u32).to_le_bytes());
    for (ci, wc) in shared.channels.iter().zip(writer) {
        b.push(ci.name.as_str().len() as u8);
        b.extend_from_slice(ci.name.as_str().as_bytes());
        for n in [wc.last_serial, wc.last_epoch] {
            b.extend_from_slice(&n.to_le_bytes());
        }
        b.extend_from_slice(&wc.since_entry.to_le_bytes());
        b.extend_from_slice(&wc.entry_segment.to_le_bytes());
        b.extend_from_slice(&(ci.epochs.len() as u32).to_le_bytes());
        for (e, s) in &ci.epochs {
            b.extend_from_slice(&e.0.to_le_bytes());
            b.extend_from_slice(&s.get().to_le_bytes());
        }
        b.extend_from_slice(&(ci.entries.len() as u32).to_le_bytes());
        for e in &ci.entries {
            for n in [e.serial, e.segment, e.pos, e.timestamp_ms] {
                b.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
    b.extend_from_slice(&(shared.segments.len() as u32).to_le_bytes());
    for (base, s) in &shared.segments {
        for n in [*base, s.durable_len, s.last_timestamp_ms] {
            b.extend_from_slice(&n.to_le_bytes());
        }
    }
    let body_len = (b.len() - HEADER_BYTES) as u64;
    let crc = crc32c::crc32c(&b[HEADER_BYTES..]);
    b[8..16].copy_from_slice(&body_len.to_le_bytes());
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The key files on disk, with the newest key time in each, so that a file can be
/// deleted once every key in it has left the index.
pub(crate) struct KeyFiles {
    pub(crate) dir: PathBuf,
    pub(crate) files: Vec<(u64, u32)>,
}

/// A checkpoint taken by the writer at a quiescent point, to be made durable by
/// [`persist`] off the append path.
pub(crate) struct Snapshot {
    /// The segment the checkpoint ends in; synced before the checkpoint is written.
    pub(crate) segment_file: Arc<File>,
    pub(crate) next_lsn: u64,
    /// [`encode`]d checkpoint.
    pub(crate) body: Vec<u8>,
    /// Dedupe keys added since the previous snapshot, oldest first.
    pub(crate) keys: Vec<(u128, DedupeEntry)>,
    /// Insertion time of the oldest key the index still held.
    pub(crate) oldest_key_time: Option<u32>,
}

/// Makes `snap` durable (the caller has synced the segment data it covers): its
/// keys to a key file, then the checkpoint itself; then deletes key files whose keys have all left the
/// index. Returns the bytes written.
pub(crate) fn persist(
    data_dir: &Path,
    snap: &Snapshot,
    key_files: &mut KeyFiles,
) -> io::Result<usize> {
    let mut written = 0;
    if let Some(newest) = snap.keys.iter().map(|(_, e)| e.time_s).max() {
        written += snap.keys.len() * 36;
        keys::write(&key_files.dir, snap.next_lsn, snap.keys.iter().copied())?;
        key_files.files.retain(|(end, _)| *end != snap.next_lsn);
        key_files.files.push((snap.next_lsn, newest));
    }
    replace_atomically(&data_dir.join("index.ckpt"), &snap.body)?;
    written += snap.body.len();
    key_files.files.retain(|&(end, newest)| {
        let all_gone = snap.oldest_key_time.is_none_or(|oldest| newest < oldest);
        if all_gone {
            let _ = std::fs::remove_file(keys::path(&key_files.dir, end));
        }
        !all_gone
    });
    Ok(written)
}

pub(crate) fn read(bytes: &[u8]) -> Result<Checkpoint, String> {
    let mut c = Cursor::new(bytes);
    if c.take(4) != Some(&MAGIC[..]) {
        return Err("not a tern checkpoint".into());
    }
    if c.u32() != Some(VERSION) {
        return Err("unsupported checkpoint version".into());
    }
    let (Some(body_len), Some(crc)) = (c.u64(), c.u32()) else {
        return Err("checkpoint header is truncated".into());
    };
    let body = c.rest();
    if body.len() as u64 != body_len || crc32c::crc32c(body) != crc {
        return Err("checkpoint checksum or length mismatch".into());
    }
    parse_body(&mut Cursor::new(body)).ok_or_else(|| "checkpoint body does not parse".into())
}

fn parse_body(c: &mut Cursor<'_>) -> Option<Checkpoint> {
    let (next_lsn, segment, pos) = (c.u64()?, c.u64()?, c.u64()?);
    let n = c.u32()?;
    let mut channels = Vec::with_capacity((n as usize).min(c.rest().len() / 40));
    for _ in 0..n {
        let name = ChannelName::parse(std::str::from_utf8(c.bytes_u8()?).ok()?).ok()?;
        let wc = WriterChannel {
            last_serial: c.u64()?,
            last_epoch: c.u64()?,
            since_entry: c.u32()?,
            entry_segment: c.u64()?,
            ..WriterChannel::default()
        };
        let mut ci = ChannelIndex::new(name);
        ci.last = Serial::new(wc.last_serial).map(|serial| Position {
            epoch: Epoch(wc.last_epoch),
            serial,
        });
        for _ in 0..c.u32()? {
            let (e, s) = (c.u64()?, Serial::new(c.u64()?)?);
            ci.epochs.push((Epoch(e), s));
        }
        for _ in 0..c.u32()? {
            ci.entries.push(IndexEntry {
                serial: c.u64()?,
                segment: c.u64()?,
                pos: c.u64()?,
                timestamp_ms: c.u64()?,
            });
        }
        channels.push((wc, ci));
    }
    let mut segments = Vec::new();
    for _ in 0..c.u32()? {
        let base = c.u64()?;
        segments.push((
            base,
            SegmentInfo {
                durable_len: c.u64()?,
                last_timestamp_ms: c.u64()?,
            },
        ));
    }
    c.rest().is_empty().then_some(Checkpoint {
        next_lsn,
        segment,
        pos,
        channels,
        segments,
    })
}
