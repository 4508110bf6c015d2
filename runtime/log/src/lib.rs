//! `tern-log`: the regional ordered log — every guarantee of Tern rests on it.
//!
//! It orders each channel's messages, stores them durably, deduplicates retries,
//! and replays and tails them for edges. It does not authenticate clients, run
//! functions or fan out to end users: that is the edge's work.
//!
//! ```text
//! edge ──QUIC──▶ net::server ──append──▶ LogStore (EmbeddedStore)
//!                    ▲                     │ dedupe → serial → pwrite → fdatasync
//!                    └──── Messages ◀──────┘ tail (only durable messages)
//! ```
//!
//! Key types: [`LogStore`] (the backend trait, with the [`conformance`] suite every
//! backend passes), [`EmbeddedStore`] (segment files on local disk, the default),
//! [`resolve`] (where a subscriber starts, and the position before it), and in
//! [`net`] the QUIC `LogServer` and `LogClient`.
//!
//! # Positions and epochs
//!
//! A message's position is `(epoch, serial)`. Serials are dense per channel: 1, 2,
//! 3, … with no gaps, and they keep counting across epochs. The epoch names the
//! history a serial belongs to. The embedded store has one epoch for all its
//! channels, kept in its meta file, and changes it exactly when:
//!
//! 1. **the store is created**: the first epoch is the creation time in Unix
//!    seconds, so a wiped and recreated data directory never reuses an epoch an
//!    earlier incarnation handed out (barring a clock set back);
//! 2. **opening found anything missing**: it cut a damaged or torn tail (the cut
//!    records may have been acknowledged under `fsync = "interval"`, and under
//!    `always` media damage can hit synced data; a torn write cannot be told apart
//!    from that), the last checkpoint proves synced bytes existed that are gone, or
//!    the checkpoint was lost after retention removed the oldest segments, so the
//!    history had to be rebuilt from what is left;
//! 3. **opening after an unclean stop of a run that acknowledged before fsync**
//!    (`fsync = "interval"`, recorded in the meta file whatever the current
//!    config says): acknowledged records may be missing without any visible damage.
//!
//! A new epoch is `max(old + 1, now in Unix seconds)`. Each channel remembers where
//! every epoch of its history starts; [`resolve`] trusts a position only if the log
//! still holds that exact `(epoch, serial)`, and otherwise answers "continuity
//! lost" with the first serial it will deliver. Under the default `fsync =
//! "always"`, a crash changes the epoch only if it tore a batch mid-write (serials
//! nobody was told about) or the disk lost synced data.
//!
//! # Dedupe
//!
//! Each `(channel, idempotency key)` is remembered for the dedupe window (default
//! 24 h) at about 72 bytes per key, bounded by `max_keys`; see `embedded::dedupe`.

#![deny(unsafe_code)]

pub mod conformance;
mod embedded;
pub mod net;
mod resume;
mod store;

/// Entry points for the fuzz targets (built only with `cfg(fuzzing)`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::embedded::fuzzing::decode_store_file;
}

pub use embedded::{EmbeddedStore, OpenError, RecoveryReport, Truncation};
pub use resume::{Resume, resolve};
pub use store::{
    AppendOutcome, AppendRequest, ChannelInfo, CommittedBatch, LogError, LogStore, ReadLimit,
    ReadResult, RecordError, RetentionReport,
};
