//! Reads: find the sparse index entry at or before the wanted serial (or point in
//! time), then decode batches forward, segment by segment, keeping the channel's
//! records.

use std::ops::ControlFlow;
use std::path::Path;

use parking_lot::RwLock;
use tern_link::{ChannelName, Epoch, Position, Serial, StoredMessage};

use super::files::segment_path;
use super::format::RecordRef;
use super::index::{ChannelIndex, SharedIndex};
use super::segment::{ScanError, SegmentScanner};
use crate::store::{LogError, ReadLimit, ReadResult};

pub(crate) fn read(
    segments_dir: &Path,
    shared: &RwLock<SharedIndex>,
    channel: &ChannelName,
    from: Serial,
    limit: ReadLimit,
) -> Result<ReadResult, LogError> {
    let max_messages = limit.messages.max(1);
    let mut bytes = 0usize;
    let mut out = ReadResult::default();
    let (last, start) = {
        let s = shared.read();
        let Some(ci) = s.channel(channel) else {
            return Ok(out);
        };
        out.first_serial = ci.first_serial();
        out.last = ci.last;
        let Some(last) = ci.last else {
            return Ok(out);
        };
        let Some(start) = ci.start_for(from.get()).map(|i| ci.entries[i]) else {
            return Ok(out);
        };
        (last.serial.get(), (start.segment, start.pos))
    };
    if from.get() > last {
        return Ok(out);
    }
    walk(segments_dir, shared, channel, start, |rec, timestamp_ms| {
        let Some(serial) = Serial::new(rec.serial).filter(|s| *s >= from) else {
            return ControlFlow::Continue(());
        };
        let size = rec.key.len() + rec.payload.len() + rec.headers_len();
        if !out.messages.is_empty() && bytes.saturating_add(size) > limit.bytes {
            out.more = true;
            return ControlFlow::Break(());
        }
        bytes += size;
        out.messages.push(StoredMessage {
            position: Position {
                epoch: Epoch(rec.epoch),
                serial,
            },
            timestamp_ms,
            idempotency_key: bytes::Bytes::copy_from_slice(rec.key),
            headers: rec.headers(),
            payload: rec.payload_bytes(),
        });
        if rec.serial >= last {
            return ControlFlow::Break(());
        }
        if out.messages.len() >= max_messages {
            out.more = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// The serial of the channel's first durable message stored at or after `since_ms`
/// (ms since the Unix epoch), if any. Batch timestamps never decrease, so this is
/// the start of everything stored since then.
pub(crate) fn first_since(
    segments_dir: &Path,
    shared: &RwLock<SharedIndex>,
    channel: &ChannelName,
    since_ms: u64,
) -> Result<Option<Serial>, LogError> {
    let start = {
        let s = shared.read();
        let Some(ci) = s.channel(channel).filter(|ci| ci.last.is_some()) else {
            return Ok(None);
        };
        let Some(start) = ci.start_for_time(since_ms).map(|i| ci.entries[i]) else {
            return Ok(None);
        };
        (start.segment, start.pos)
    };
    let mut found = None;
    walk(segments_dir, shared, channel, start, |rec, timestamp_ms| {
        if timestamp_ms < since_ms {
            return ControlFlow::Continue(());
        }
        found = Serial::new(rec.serial);
        ControlFlow::Break(())
    })?;
    Ok(found)
}

/// Hands `visit` every durable record of `channel` from the batch at `start`
/// (segment, byte offset) on, in order, with its batch's timestamp, until it breaks
/// or the channel's records end. A segment removed by retention meanwhile is
/// skipped (the caller's `first_serial` tells its reader).
fn walk(
    segments_dir: &Path,
    shared: &RwLock<SharedIndex>,
    channel: &ChannelName,
    start: (u64, u64),
    mut visit: impl FnMut(&RecordRef<'_>, u64) -> ControlFlow<()>,
) -> Result<(), LogError> {
    let wanted = channel.as_str().as_bytes();
    let mut cursor = Some(start);
    while let Some((segment, pos)) = cursor.take() {
        let end = shared.read().segments.get(&segment).map(|s| s.durable_len);
        let path = segment_path(segments_dir, segment);
        let opened = end.map(|end| SegmentScanner::open(&path, pos, end));
        let mut scanner = match opened {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
            None => None,
            Some(Err(source)) => {
                return Err(LogError::Io {
                    context: format!("opening {}", path.display()),
                    source,
                });
            }
        };
        while let Some(scanner) = scanner.as_mut() {
            let batch = match scanner.next_batch() {
                Ok(Some((_, batch))) => batch,
                Ok(None) => break,
                Err(ScanError::Io(source)) => {
                    return Err(LogError::Io {
                        context: format!("reading {}", path.display()),
                        source,
                    });
                }
                Err(ScanError::Bad { pos, error }) => {
                    return Err(LogError::Corrupt {
                        file: path.display().to_string(),
                        detail: format!("batch at byte {pos}: {error}"),
                    });
                }
            };
            for rec in batch.records() {
                let rec = rec.map_err(|e| LogError::Corrupt {
                    file: path.display().to_string(),
                    detail: e.to_string(),
                })?;
                if rec.channel != wanted {
                    continue;
                }
                if visit(&rec, batch.timestamp_ms).is_break() {
                    return Ok(());
                }
            }
        }
        // The channel's next records, if any, start at its first index entry in a
        // later segment.
        let s = shared.read();
        cursor = s
            .channel(channel)
            .and_then(|ci| next_segment_entry(ci, segment));
    }
    Ok(())
}

/// The channel's first index entry in a segment after `segment`.
fn next_segment_entry(ci: &ChannelIndex, segment: u64) -> Option<(u64, u64)> {
    let i = ci.entries.partition_point(|e| e.segment <= segment);
    ci.entries.get(i).map(|e| (e.segment, e.pos))
}
