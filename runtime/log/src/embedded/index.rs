//! The per-channel index shared by the writer (through the syncer) and readers.
//!
//! For each channel the index keeps its last durable position, where each epoch of
//! its history starts, and a **sparse** list of entries `(serial, segment, byte
//! offset of the batch holding it, the batch's timestamp)`. An entry is added at the
//! first record of a channel in each segment and then after every [`ENTRY_EVERY`]
//! records, so a read — from a serial, or from a point in time, since batch
//! timestamps never decrease — decodes at most one batch's worth of records before
//! the wanted one, and memory stays at 32 bytes per entry: ~0.5 bytes per stored
//! message plus 32 bytes per channel per segment it appears in.

use std::collections::{BTreeMap, HashMap};

use tern_link::{ChannelName, Epoch, Position, Serial};

/// Records of one channel between two index entries.
pub(crate) const ENTRY_EVERY: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) serial: u64,
    pub(crate) segment: u64,
    pub(crate) pos: u64,
    /// When the batch holding `serial` was stored (ms since the Unix epoch).
    pub(crate) timestamp_ms: u64,
}

#[derive(Debug)]
pub(crate) struct ChannelIndex {
    pub(crate) name: ChannelName,
    pub(crate) entries: Vec<IndexEntry>,
    pub(crate) last: Option<Position>,
    pub(crate) epochs: Vec<(Epoch, Serial)>,
}

impl ChannelIndex {
    pub(crate) fn new(name: ChannelName) -> Self {
        Self {
            name,
            entries: Vec::new(),
            last: None,
            epochs: Vec::new(),
        }
    }

    pub(crate) fn first_serial(&self) -> Option<Serial> {
        self.entries.first().and_then(|e| Serial::new(e.serial))
    }

    /// The entry to start reading `from` at: the last one at or before it, or the
    /// first one when `from` was removed by retention.
    pub(crate) fn start_for(&self, from: u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        Some(
            self.entries
                .partition_point(|e| e.serial <= from)
                .saturating_sub(1),
        )
    }

    /// The entry to start looking for the first message stored at or after
    /// `since_ms` at: the last one stored before it (the message may follow it in
    /// the same stretch of records), else the first.
    pub(crate) fn start_for_time(&self, since_ms: u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        Some(
            self.entries
                .partition_point(|e| e.timestamp_ms < since_ms)
                .saturating_sub(1),
        )
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentInfo {
    /// Bytes that are durable (readers stop there).
    pub(crate) durable_len: u64,
    /// Timestamp of the newest batch in the segment (for age retention).
    pub(crate) last_timestamp_ms: u64,
}

/// What readers see. Updated only with durable data.
#[derive(Debug, Default)]
pub(crate) struct SharedIndex {
    pub(crate) ids: HashMap<ChannelName, u32>,
    pub(crate) channels: Vec<ChannelIndex>,
    pub(crate) segments: BTreeMap<u64, SegmentInfo>,
}

impl SharedIndex {
    pub(crate) fn add_channel(&mut self, name: ChannelName) -> u32 {
        let id = self.channels.len() as u32;
        self.ids.insert(name.clone(), id);
        self.channels.push(ChannelIndex::new(name));
        id
    }

    pub(crate) fn channel(&self, name: &ChannelName) -> Option<&ChannelIndex> {
        self.ids
            .get(name)
            .and_then(|&id| self.channels.get(id as usize))
    }

    pub(crate) fn apply(&mut self, update: IndexUpdate) {
        if let Some(ch) = self.channels.get_mut(update.channel_id as usize) {
            ch.last = Some(update.last);
            if let Some(entry) = update.entry {
                ch.entries.push(entry);
            }
            if let Some(start) = update.epoch_start {
                ch.epochs.push(start);
            }
        }
    }

    /// Forgets everything stored in `segment` (removed by retention).
    pub(crate) fn drop_segment(&mut self, segment: u64) {
        self.segments.remove(&segment);
        for ch in &mut self.channels {
            ch.entries.retain(|e| e.segment != segment);
        }
    }
}

/// What one batch changed for one channel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexUpdate {
    pub(crate) channel_id: u32,
    pub(crate) last: Position,
    pub(crate) entry: Option<IndexEntry>,
    pub(crate) epoch_start: Option<(Epoch, Serial)>,
}

/// The writer's view of a channel: what the next serial is and when the next index
/// entry is due. Also rebuilt by recovery.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterChannel {
    pub(crate) last_serial: u64,
    pub(crate) last_epoch: u64,
    pub(crate) since_entry: u32,
    pub(crate) entry_segment: u64,
    /// Batch generation that last touched the channel, and its slot in that batch.
    pub(crate) touched_gen: u64,
    pub(crate) touched_slot: u32,
}

impl Default for WriterChannel {
    fn default() -> Self {
        Self {
            last_serial: 0,
            last_epoch: 0,
            since_entry: 0,
            entry_segment: u64::MAX,
            touched_gen: u64::MAX,
            touched_slot: 0,
        }
    }
}

impl WriterChannel {
    /// Records one more record of the channel at `(epoch, serial)`, in the batch at
    /// `segment`/`pos` stored at `timestamp_ms`; returns the index entry and epoch
    /// start it creates, if any.
    pub(crate) fn note(
        &mut self,
        epoch: u64,
        serial: u64,
        segment: u64,
        pos: u64,
        timestamp_ms: u64,
    ) -> (Option<IndexEntry>, Option<(Epoch, Serial)>) {
        let entry = (self.entry_segment != segment || self.since_entry >= ENTRY_EVERY).then(|| {
            self.entry_segment = segment;
            self.since_entry = 0;
            IndexEntry {
                serial,
                segment,
                pos,
                timestamp_ms,
            }
        });
        self.since_entry += 1;
        let epoch_start = (self.last_epoch != epoch)
            .then(|| Serial::new(serial).map(|s| (Epoch(epoch), s)))
            .flatten();
        self.last_epoch = epoch;
        self.last_serial = serial;
        (entry, epoch_start)
    }
}
