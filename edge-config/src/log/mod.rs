//! Config of a log node: where it keeps its data, where it listens, how its store writes
//! and forgets, and the limits of the link server.
//!
//! The types here are the compiled, validated form. Their `Default` is the config of an
//! empty file; tests build variations with `StoreConfig { fsync: …, ..Default::default() }`,
//! which skips validation (use [`RawLogNodeConfig::compile`] to validate).

mod raw;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::{
    RawDedupeConfig, RawLinkServerConfig, RawLogNodeConfig, RawRetentionConfig, RawStoreConfig,
};

use crate::error::ConfigError;
use crate::source;
use crate::units::to_usize;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A log node's whole config (TOML: the top level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogNodeConfig {
    /// Directory of segments, indexes and checkpoints. Default `./.tern/log`.
    pub data_dir: PathBuf,
    /// Address the link server listens on. Default `127.0.0.1:7400`.
    pub listen: SocketAddr,
    /// How the store writes, syncs and forgets (TOML: `[store]`).
    pub store: StoreConfig,
    /// Limits of the link server (TOML: `[link]`).
    pub link: LinkServerConfig,
}

impl Default for LogNodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./.tern/log"),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 7400)),
            store: StoreConfig::default(),
            link: LinkServerConfig::default(),
        }
    }
}

/// How the log store appends, syncs and retains (TOML: `[store]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// When appended batches reach the disk. Default [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// Bytes after which a segment file is closed and a new one started.
    /// Default 128 MiB; 64 KiB..=1 GiB.
    pub segment_bytes: u64,
    /// Appended bytes after which an index checkpoint is written, bounding the replay
    /// needed after a crash. Default 64 MiB; at least 64 KiB.
    pub checkpoint_bytes: u64,
    /// Largest message accepted, payload and headers together.
    /// Default 1 MiB; 1 KiB..=64 MiB.
    pub max_message_bytes: usize,
    /// Most bytes written by one group commit. Default 16 MiB; at least
    /// `max_message_bytes`, at most 1 GiB.
    pub max_batch_bytes: usize,
    /// Committed batches kept in memory for live subscribers before a slow one has to
    /// read from disk. Default 4096; 16..=1 000 000.
    pub tail_capacity: usize,
    /// When old messages are deleted (TOML: `[store.retention]`).
    pub retention: RetentionConfig,
    /// How long publish idempotency keys are remembered (TOML: `[store.dedupe]`).
    pub dedupe: DedupeConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            segment_bytes: 128 * MIB,
            checkpoint_bytes: 64 * MIB,
            max_message_bytes: to_usize(MIB),
            max_batch_bytes: to_usize(16 * MIB),
            tail_capacity: 4096,
            retention: RetentionConfig::default(),
            dedupe: DedupeConfig::default(),
        }
    }
}

/// When the store calls `fsync` (TOML: `fsync = "always" | "interval"`, and
/// `fsync_interval = "10ms"` with `"interval"` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every group commit is synced before its publishers are answered: nothing
    /// acknowledged is lost on power failure.
    Always,
    /// Sync at most this often (1ms..=10s, default 10ms); publishes are answered once
    /// written, so a power failure may lose the last interval's acknowledged messages.
    Interval(Duration),
}

/// When old messages are deleted (TOML: `[store.retention]`). Whole segments are
/// deleted, oldest first, once every limit that is set allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Delete segments whose newest message is older than this. Default 7 days;
    /// `None` (TOML `"off"`) keeps messages regardless of age.
    pub max_age: Option<Duration>,
    /// Delete the oldest segments while the store is larger than this. Default `None`
    /// (TOML `"off"`): no size limit.
    pub max_bytes: Option<u64>,
    /// How often the limits are checked. Default 30s; 1s..=24h.
    pub check_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age: Some(7 * DAY),
            max_bytes: None,
            check_interval: Duration::from_secs(30),
        }
    }
}

/// How publish idempotency keys are remembered (TOML: `[store.dedupe]`). A publish
/// repeated with a remembered key is answered with the first outcome instead of
/// being appended again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeConfig {
    /// How long a key is remembered. Default 24h; 1s..=30 days.
    pub window: Duration,
    /// Most keys remembered; the oldest are forgotten first. Default 4 000 000; at
    /// least 1000.
    pub max_keys: usize,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        Self {
            window: DAY,
            max_keys: 4_000_000,
        }
    }
}

/// Limits of the link server (TOML: `[link]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkServerConfig {
    /// Largest frame read or written, length prefix included. Default 16 MiB; at least
    /// `store.max_message_bytes` + 64 KiB (so the largest message fits with its framing),
    /// at most 1 GiB.
    pub max_frame_bytes: usize,
    /// Requests of one stream awaiting their answer at once; one more is refused with
    /// `TooManyRequests` (retryable). Default 256; 1..=65 536.
    pub max_inflight_per_stream: usize,
    /// Frames queued for one subscriber before it is treated as slow. Default 1024;
    /// 1..=1 000 000.
    pub subscriber_queue_frames: usize,
    /// Most messages returned by one read. Default 1000; 1..=1 000 000.
    pub read_batch: usize,
}

impl Default for LinkServerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: to_usize(16 * MIB),
            max_inflight_per_stream: 256,
            subscriber_queue_frames: 1024,
            read_batch: 1000,
        }
    }
}

/// Parses and validates a log node config from TOML text.
///
/// A syntax error, unknown key or value of the wrong TOML type is reported alone (with
/// its line and column); otherwise every invalid value is reported with its key path.
pub fn parse_log_config(text: &str) -> Result<LogNodeConfig, ConfigError> {
    source::parse(text, RawLogNodeConfig::compile)
}

/// Reads, parses and validates a log node config file; see [`parse_log_config`].
///
/// A file that cannot be read is one problem whose path is the file's.
pub fn load_log_config(path: &Path) -> Result<LogNodeConfig, ConfigError> {
    source::load(path, parse_log_config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/log.toml")
    }

    #[test]
    fn empty_text_gives_the_defaults() {
        assert_eq!(parse_log_config(""), Ok(LogNodeConfig::default()));
        assert_eq!(
            RawLogNodeConfig::default().compile(),
            Ok(LogNodeConfig::default())
        );
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let config = LogNodeConfig::default();
        assert_eq!(config.data_dir, PathBuf::from("./.tern/log"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:7400");
        let store = &config.store;
        assert_eq!(store.fsync, FsyncPolicy::Always);
        assert_eq!(store.segment_bytes, 128 << 20);
        assert_eq!(store.checkpoint_bytes, 64 << 20);
        assert_eq!(store.max_message_bytes, 1 << 20);
        assert_eq!(store.max_batch_bytes, 16 << 20);
        assert_eq!(store.tail_capacity, 4096);
        assert_eq!(
            store.retention.max_age,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(store.retention.max_bytes, None);
        assert_eq!(store.retention.check_interval, Duration::from_secs(30));
        assert_eq!(store.dedupe.window, Duration::from_secs(86_400));
        assert_eq!(store.dedupe.max_keys, 4_000_000);
        let link = &config.link;
        assert_eq!(link.max_frame_bytes, 16 << 20);
        assert_eq!(link.max_inflight_per_stream, 256);
        assert_eq!(link.subscriber_queue_frames, 1024);
        assert_eq!(link.read_batch, 1000);
    }

    #[test]
    fn example_file_compiles_to_the_defaults() {
        assert_eq!(
            load_log_config(&example_path()),
            Ok(LogNodeConfig::default())
        );
    }

    #[test]
    fn example_file_sets_every_key() {
        let text = std::fs::read_to_string(example_path()).expect("example is readable");
        let table: toml::Table = toml::from_str(&text).expect("example is valid TOML");
        let keys: &[&[&str]] = &[
            &["data_dir"],
            &["listen"],
            &["store", "fsync"],
            &["store", "segment_bytes"],
            &["store", "checkpoint_bytes"],
            &["store", "max_message_bytes"],
            &["store", "max_batch_bytes"],
            &["store", "tail_capacity"],
            &["store", "retention", "max_age"],
            &["store", "retention", "max_bytes"],
            &["store", "retention", "check_interval"],
            &["store", "dedupe", "window"],
            &["store", "dedupe", "max_keys"],
            &["link", "max_frame_bytes"],
            &["link", "max_inflight_per_stream"],
            &["link", "subscriber_queue_frames"],
            &["link", "read_batch"],
        ];
        for key in keys {
            let (last, tables) = key.split_last().expect("keys are not empty");
            let mut table = &table;
            for name in tables {
                table = table
                    .get(*name)
                    .and_then(toml::Value::as_table)
                    .unwrap_or_else(|| panic!("example lacks table {name}"));
            }
            assert!(table.contains_key(*last), "example lacks {}", key.join("."));
        }
        // The one key that may not be set at its default, since fsync defaults to "always".
        assert!(text.contains("# fsync_interval = \"10ms\""));
    }

    #[test]
    fn a_missing_file_is_one_problem_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("absent.toml");
        let error = load_log_config(&path).expect_err("file is absent");
        assert_eq!(error.problems.len(), 1);
        assert_eq!(error.problems[0].path, path.display().to_string());
        assert!(error.problems[0].message.starts_with("cannot read: "));
    }

    #[test]
    fn a_file_is_parsed_and_validated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.toml");
        std::fs::write(&path, "[store]\nsegment_bytes = \"1MiB\"\n").expect("write");
        let config = load_log_config(&path).expect("valid");
        assert_eq!(config.store.segment_bytes, 1 << 20);
        std::fs::write(&path, "[store]\nsegment_bytes = 512\n").expect("write");
        let error = load_log_config(&path).expect_err("too small");
        assert_eq!(
            error.to_string(),
            "store.segment_bytes: 512 is below the minimum of 65536"
        );
    }
}
