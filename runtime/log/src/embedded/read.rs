//! Reads: find the sparse index entry at or before the wanted serial, then decode
//! batches forward, segment by segment, keeping the channel's records.

use std::path::Path;

use parking_lot::RwLock;
use tern_link::{ChannelName, Epoch, Position, Serial, StoredMessage};

use super::files::segment_path;
use super::index::SharedIndex;
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
    let wanted = channel.as_str().as_bytes();
    let mut out = ReadResult::default();
    let (last, mut cursor) = {
        let s = shared.read();
        let Some(ci) = s.channel(channel) else {
            return Ok(out);
        };
        out.first_serial = ci.first_serial();
        let Some(last) = ci.last else {
            return Ok(out);
        };
        let Some(start) = ci.start_for(from.get()).map(|i| ci.entries[i]) else {
            return Ok(out);
        };
        (last.serial.get(), Some((start.segment, start.pos)))
    };
    if from.get() > last {
        return Ok(out);
    }
    while let Some((segment, pos)) = cursor.take() {
        let end = shared.read().segments.get(&segment).map(|s| s.durable_len);
        // A segment missing from the index was removed by retention meanwhile:
        // carry on with the next one; `first_serial` tells the caller.
        let path = segment_path(segments_dir, segment);
        let opened = end.map(|end| SegmentScanner::open(&path, pos, end));
        if let Some(opened) = opened {
            let mut scanner = match opened {
                Ok(s) => Some(s),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
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
                    if rec.channel != wanted || rec.serial < from.get() {
                        continue;
                    }
                    let Some(serial) = Serial::new(rec.serial) else {
                        continue;
                    };
                    let size = rec.key.len() + rec.payload.len() + rec.headers_len();
                    if !out.messages.is_empty() && bytes.saturating_add(size) > limit.bytes {
                        out.more = true;
                        return Ok(out);
                    }
                    bytes += size;
                    out.messages.push(StoredMessage {
                        position: Position {
                            epoch: Epoch(rec.epoch),
                            serial,
                        },
                        timestamp_ms: batch.timestamp_ms,
                        idempotency_key: bytes::Bytes::copy_from_slice(rec.key),
                        headers: rec.headers(),
                        payload: rec.payload_bytes(),
                    });
                    if rec.serial >= last {
                        return Ok(out);
                    }
                    if out.messages.len() >= max_messages {
                        out.more = true;
                        return Ok(out);
                    }
                }
            }
        }
        // The channel's next records, if any, start at its first index entry in a
        // later segment.
        let s = shared.read();
        cursor = s.channel(channel).and_then(|ci| {
            let i = ci.entries.partition_point(|e| e.segment <= segment);
            ci.entries.get(i).map(|e| (e.segment, e.pos))
        });
    }
    Ok(out)
}
