//! The dedupe index: idempotency key → original position, for a time window.
//!
//! Keys are not stored: each `(channel, key)` is hashed with XXH3-128 under a
//! per-store random seed (kept in the store's meta file), so an entry has a fixed
//! size whatever the key length, and a publisher cannot aim a collision at another
//! key without knowing the seed.
//!
//! Memory: an entry is a 16-byte hash plus 24 bytes of value (seconds u32,
//! epoch u64, serial u64, padded) in a SwissTable (1 control byte, ≤ 87.5 %
//! load) plus 24 bytes (hash and time) in the expiry queue: about **72 bytes per
//! key**, up to twice that in the one of 64 sub-tables that is growing. At the
//! default `max_keys` of 4 000 000 that is about 290 MiB once full. When more keys arrive within
//! the window than `max_keys`, the oldest are forgotten early and counted in
//! [`DedupeIndex::evicted_early`]; the effective window is then shorter than
//! configured.
//!
//! Durability: each checkpoint writes the keys added since the previous one to a
//! key file (`keys`); opening loads those, then replays the records after the
//! checkpoint (every record carries its key), so the index survives restarts.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use xxhash_rust::xxh3::Xxh3;

/// A remembered key's original position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DedupeEntry {
    /// Seconds since the Unix epoch when the original was stored.
    pub(crate) time_s: u32,
    pub(crate) epoch: u64,
    pub(crate) serial: u64,
}

/// A `u128` is already a uniform hash; hashing it again would waste time.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64 ^ (n >> 64) as u64;
    }
}

type BuildIdentity = std::hash::BuildHasherDefault<IdentityHasher>;

/// Tables the index is split into, chosen by the hash's top bits.
const SHARDS: usize = 64;
const SHARD_SHIFT: u32 = 128 - SHARDS.trailing_zeros();

pub(crate) struct DedupeIndex {
    seed: u64,
    window_s: u32,
    max_keys: usize,
    /// The table, split by the hash's top bits into [`SHARDS`] tables that each
    /// grow on their own: a rehash moves 1/64 of the keys (a few milliseconds at
    /// millions of keys) instead of stalling appends while all of them move.
    map: Vec<HashMap<u128, DedupeEntry, BuildIdentity>>,
    /// Keys held (the sum of the shards' lengths).
    len: usize,
    /// Keys with their insertion time, oldest first, for expiry. A key replaced
    /// after it expired is queued twice; only the slot whose time matches the
    /// entry's removes it.
    order: VecDeque<(u128, u32)>,
    evicted_early: u64,
    /// Keys inserted since the last [`DedupeIndex::mark`], oldest first, kept
    /// apart so a checkpoint copies them without probing the table.
    since_mark: Vec<(u128, DedupeEntry)>,
}

impl DedupeIndex {
    pub(crate) fn new(seed: u64, window: Duration, max_keys: usize) -> Self {
        Self {
            seed,
            window_s: u32::try_from(window.as_secs()).unwrap_or(u32::MAX),
            max_keys: max_keys.max(1),
            map: (0..SHARDS).map(|_| HashMap::default()).collect(),
            len: 0,
            // Filled front to back, so reserving it whole costs address space, not
            // memory, and spares copying a large queue when it grows.
            order: VecDeque::with_capacity(max_keys.max(1) + 1),
            evicted_early: 0,
            since_mark: Vec::new(),
        }
    }

    /// The hash identifying `key` on `channel`.
    pub(crate) fn hash(&self, channel: &[u8], key: &[u8]) -> u128 {
        let mut h = Xxh3::with_seed(self.seed);
        h.update(&[channel.len() as u8]);
        h.update(channel);
        h.update(key);
        h.digest128()
    }

    /// The original entry for `hash`, if it is still inside the window at `now_s`.
    pub(crate) fn lookup(&self, hash: u128, now_s: u32) -> Option<DedupeEntry> {
        self.shard(hash)
            .get(&hash)
            .filter(|e| now_s.saturating_sub(e.time_s) < self.window_s)
            .copied()
    }

    /// Remembers `hash`. If an expired entry for it is still held (the clock went
    /// back, or expiry has not run yet), it is replaced and queued again, so that
    /// [`DedupeIndex::remove_newest`] can undo this insert.
    pub(crate) fn insert(&mut self, hash: u128, entry: DedupeEntry) {
        if self.shard_mut(hash).insert(hash, entry).is_none() {
            self.len += 1;
        }
        self.order.push_back((hash, entry.time_s));
        self.since_mark.push((hash, entry));
        while self.len > self.max_keys {
            if !self.pop_front() {
                break;
            }
            self.evicted_early += 1;
        }
    }

    /// Forgets `hash`, which must be the most recently inserted key (undo of a
    /// write that failed).
    pub(crate) fn remove_newest(&mut self, hash: u128) {
        if self.order.back().is_some_and(|(h, _)| *h == hash) {
            self.order.pop_back();
            self.remove(hash);
            self.since_mark.pop();
        }
    }

    /// Drops keys older than the window.
    pub(crate) fn expire(&mut self, now_s: u32) {
        while let Some(&(_, time_s)) = self.order.front() {
            if now_s.saturating_sub(time_s) < self.window_s {
                break;
            }
            self.pop_front();
        }
    }

    fn pop_front(&mut self) -> bool {
        match self.order.pop_front() {
            Some((h, time_s)) => {
                if self.shard(h).get(&h).is_some_and(|e| e.time_s == time_s) {
                    self.remove(h);
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn shard(&self, hash: u128) -> &HashMap<u128, DedupeEntry, BuildIdentity> {
        &self.map[(hash >> SHARD_SHIFT) as usize]
    }

    fn shard_mut(&mut self, hash: u128) -> &mut HashMap<u128, DedupeEntry, BuildIdentity> {
        &mut self.map[(hash >> SHARD_SHIFT) as usize]
    }

    fn remove(&mut self, hash: u128) {
        if self.shard_mut(hash).remove(&hash).is_some() {
            self.len -= 1;
        }
    }

    pub(crate) fn evicted_early(&self) -> u64 {
        self.evicted_early
    }

    /// Takes the keys inserted since the last call, oldest first (some may have
    /// been evicted since; loading them again is harmless).
    pub(crate) fn take_since_mark(&mut self) -> Vec<(u128, DedupeEntry)> {
        std::mem::take(&mut self.since_mark)
    }

    /// Insertion time of the oldest key still held.
    pub(crate) fn oldest_time(&self) -> Option<u32> {
        self.order.front().map(|(_, t)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: u64, time_s: u32) -> DedupeEntry {
        DedupeEntry {
            time_s,
            epoch: 1,
            serial,
        }
    }

    #[test]
    fn keys_are_per_channel_and_expire() {
        let mut d = DedupeIndex::new(7, Duration::from_secs(10), 100);
        let a = d.hash(b"ch1", b"k");
        let b = d.hash(b"ch2", b"k");
        assert_ne!(a, b);
        assert_ne!(d.hash(b"ab", b"c"), d.hash(b"a", b"bc"));
        d.insert(a, entry(1, 100));
        assert_eq!(d.lookup(a, 105), Some(entry(1, 100)));
        assert_eq!(d.lookup(b, 105), None);
        assert_eq!(d.lookup(a, 110), None, "outside the window");
        d.expire(110);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn memory_is_bounded_by_max_keys() {
        let mut d = DedupeIndex::new(7, Duration::from_secs(10), 3);
        for i in 0..5u64 {
            let h = d.hash(b"c", &i.to_le_bytes());
            d.insert(h, entry(i + 1, 1));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.evicted_early(), 2);
        let oldest = d.hash(b"c", &0u64.to_le_bytes());
        assert_eq!(d.lookup(oldest, 1), None);
        let newest = d.hash(b"c", &4u64.to_le_bytes());
        d.remove_newest(newest);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn an_expired_key_can_be_replaced_and_the_replacement_undone() {
        let mut d = DedupeIndex::new(7, Duration::from_secs(10), 100);
        let h = d.hash(b"c", b"k");
        d.insert(h, entry(1, 100));
        // Expiry has not run; the old entry is outside the window at 200.
        assert_eq!(d.lookup(h, 200), None);
        d.insert(h, entry(9, 200));
        assert_eq!(d.lookup(h, 200), Some(entry(9, 200)));
        // Expiring the old queue slot leaves the newer entry alone.
        d.expire(205);
        assert_eq!(d.lookup(h, 205), Some(entry(9, 200)));
        assert_eq!(d.take_since_mark().len(), 2);
        assert!(d.take_since_mark().is_empty());
        // A failed write undoes the replacement.
        d.remove_newest(h);
        assert_eq!(d.lookup(h, 205), None);
    }
}
