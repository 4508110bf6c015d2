//! The log node config as written in TOML, and its compilation into [`LogNodeConfig`].
//!
//! Every field is optional (absent means the default). Byte sizes and durations stay
//! unparsed here so that `compile()` reports a bad unit with its path, together with
//! every other problem.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{
    DAY, DedupeConfig, FsyncPolicy, GIB, KIB, LinkServerConfig, LogNodeConfig, MIB,
    RetentionConfig, StoreConfig,
};
use crate::check::{bytes, bytes_usize, count, duration, socket_addr};
use crate::error::{ConfigError, Problems};
use crate::units::{RawByteSize, parse_duration};

const SEGMENT_BYTES: RangeInclusive<u64> = 64 * KIB..=GIB;
const CHECKPOINT_BYTES: RangeInclusive<u64> = 64 * KIB..=u64::MAX;
const MAX_MESSAGE_BYTES: RangeInclusive<u64> = KIB..=64 * MIB;
const MAX_BATCH_BYTES: RangeInclusive<u64> = 0..=GIB;
const TAIL_CAPACITY: RangeInclusive<u64> = 16..=1_000_000;
const FSYNC_INTERVAL: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(10);
const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(10);
const RETENTION_CHECK_INTERVAL: RangeInclusive<Duration> = Duration::from_secs(1)..=DAY;
const DEDUPE_WINDOW: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 60 * 60);
const DEDUPE_MAX_KEYS: RangeInclusive<u64> = 1000..=u64::MAX;
/// Room for a frame's header and framing around the largest message.
const FRAME_OVERHEAD: u64 = 64 * KIB;
const MAX_FRAME_BYTES: RangeInclusive<u64> = 0..=GIB;
const MAX_INFLIGHT_PER_STREAM: RangeInclusive<u64> = 1..=65_536;
const SUBSCRIBER_QUEUE_FRAMES: RangeInclusive<u64> = 1..=1_000_000;
const READ_BATCH: RangeInclusive<u64> = 1..=1_000_000;

/// A log node config file (the TOML top level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogNodeConfig {
    /// Directory of segments, indexes and checkpoints. Default `"./.tern/log"`.
    pub data_dir: Option<PathBuf>,
    /// `IP:PORT` the link server listens on (`[::1]:7400` for IPv6; host names are not
    /// resolved). Default `"127.0.0.1:7400"`.
    pub listen: Option<String>,
    /// `[store]`.
    #[serde(default)]
    pub store: RawStoreConfig,
    /// `[link]`.
    #[serde(default)]
    pub link: RawLinkServerConfig,
}

/// `[store]`: how the log store appends, syncs and retains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreConfig {
    /// `"always"` (sync every group commit before answering) or `"interval"`.
    /// Default `"always"`.
    pub fsync: Option<String>,
    /// Duration between syncs with `fsync = "interval"`; not allowed otherwise.
    /// Default `"10ms"`; 1ms..=10s.
    pub fsync_interval: Option<String>,
    /// Byte size at which a segment file is rolled. Default `"128MiB"`; 64KiB..=1GiB.
    pub segment_bytes: Option<RawByteSize>,
    /// Appended bytes between index checkpoints. Default `"64MiB"`; at least 64KiB.
    pub checkpoint_bytes: Option<RawByteSize>,
    /// Largest message, payload plus headers. Default `"1MiB"`; 1KiB..=64MiB.
    pub max_message_bytes: Option<RawByteSize>,
    /// Most bytes in one group commit. Default `"16MiB"`; at least `max_message_bytes`,
    /// at most 1GiB.
    pub max_batch_bytes: Option<RawByteSize>,
    /// Committed batches buffered for live subscribers. Default 4096; 16..=1000000.
    pub tail_capacity: Option<i64>,
    /// `[store.retention]`.
    #[serde(default)]
    pub retention: RawRetentionConfig,
    /// `[store.dedupe]`.
    #[serde(default)]
    pub dedupe: RawDedupeConfig,
}

/// `[store.retention]`: when old segments are deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetentionConfig {
    /// Age (duration) after which a segment is deleted, or `"off"`. Default `"7days"`.
    pub max_age: Option<String>,
    /// Store size (byte size) above which the oldest segments are deleted, or `"off"`.
    /// Default `"off"`.
    pub max_bytes: Option<RawByteSize>,
    /// Duration between retention checks. Default `"30s"`; 1s..=24h.
    pub check_interval: Option<String>,
}

/// `[store.dedupe]`: how long publish idempotency keys are remembered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDedupeConfig {
    /// Duration a key is remembered. Default `"24h"`; 1s..=30days.
    pub window: Option<String>,
    /// Most keys remembered. Default 4000000; at least 1000.
    pub max_keys: Option<i64>,
}

/// `[link]`: limits of the link server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLinkServerConfig {
    /// Largest frame (byte size), length prefix included. Default `"16MiB"`; at least
    /// `store.max_message_bytes` + 64KiB, at most 1GiB.
    pub max_frame_bytes: Option<RawByteSize>,
    /// Publish requests of one stream awaiting an outcome. Default 256; 1..=65536.
    pub max_inflight_per_stream: Option<i64>,
    /// Frames queued per subscriber. Default 1024; 1..=1000000.
    pub subscriber_queue_frames: Option<i64>,
    /// Most messages per read. Default 1000; 1..=1000000.
    pub read_batch: Option<i64>,
}

impl RawLogNodeConfig {
    /// Validates every value and fills in defaults, reporting every problem at once.
    pub fn compile(&self) -> Result<LogNodeConfig, ConfigError> {
        // Each field is `None` once its problem is recorded; the defaults that then stand
        // in for it only complete a value that `finish` discards.
        let defaults = LogNodeConfig::default();
        let mut problems = Problems::default();

        let data_dir = match &self.data_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                problems.push("data_dir", "must not be empty");
                None
            }
            Some(dir) => Some(dir.clone()),
            None => None,
        };
        let listen = self.listen.as_deref().and_then(|text| {
            socket_addr(text, defaults.listen)
                .map_err(|m| problems.push("listen", m))
                .ok()
        });
        let store = self.store.compile(&mut problems);
        let link = self.link.compile(&mut problems, store.max_message_bytes);

        problems.finish(LogNodeConfig {
            data_dir: data_dir.unwrap_or(defaults.data_dir),
            listen: listen.unwrap_or(defaults.listen),
            store: store.config,
            link,
        })
    }
}

/// A compiled store config, plus `max_message_bytes` if it was valid: the link section
/// checks its frame limit against it. (When invalid, `config` holds the default in its
/// place and the problem is already recorded.)
struct CompiledStore {
    config: StoreConfig,
    max_message_bytes: Option<usize>,
}

impl RawStoreConfig {
    fn compile(&self, problems: &mut Problems) -> CompiledStore {
        let defaults = StoreConfig::default();
        let fsync = self.fsync_policy(problems);
        let segment_bytes = bytes(
            problems,
            "store.segment_bytes",
            self.segment_bytes.as_ref(),
            defaults.segment_bytes,
            SEGMENT_BYTES,
        );
        let checkpoint_bytes = bytes(
            problems,
            "store.checkpoint_bytes",
            self.checkpoint_bytes.as_ref(),
            defaults.checkpoint_bytes,
            CHECKPOINT_BYTES,
        );
        let max_message_bytes = bytes_usize(
            problems,
            "store.max_message_bytes",
            self.max_message_bytes.as_ref(),
            defaults.max_message_bytes,
            MAX_MESSAGE_BYTES,
        );
        let max_batch_bytes = bytes_usize(
            problems,
            "store.max_batch_bytes",
            self.max_batch_bytes.as_ref(),
            defaults.max_batch_bytes,
            MAX_BATCH_BYTES,
        );
        if let (Some(message), Some(batch)) = (max_message_bytes, max_batch_bytes)
            && batch < message
        {
            problems.push(
                "store.max_batch_bytes",
                format!(
                    "{batch} is below store.max_message_bytes ({message}): a batch must hold the largest message"
                ),
            );
        }
        let tail_capacity = count(
            problems,
            "store.tail_capacity",
            self.tail_capacity,
            defaults.tail_capacity,
            TAIL_CAPACITY,
        );

        CompiledStore {
            config: StoreConfig {
                fsync: fsync.unwrap_or(defaults.fsync),
                segment_bytes: segment_bytes.unwrap_or(defaults.segment_bytes),
                checkpoint_bytes: checkpoint_bytes.unwrap_or(defaults.checkpoint_bytes),
                max_message_bytes: max_message_bytes.unwrap_or(defaults.max_message_bytes),
                max_batch_bytes: max_batch_bytes.unwrap_or(defaults.max_batch_bytes),
                tail_capacity: tail_capacity.unwrap_or(defaults.tail_capacity),
                retention: self.retention.compile(problems),
                dedupe: self.dedupe.compile(problems),
            },
            max_message_bytes,
        }
    }

    fn fsync_policy(&self, problems: &mut Problems) -> Option<FsyncPolicy> {
        match self.fsync.as_deref() {
            None | Some("always") => {
                if self.fsync_interval.is_some() {
                    problems.push(
                        "store.fsync_interval",
                        "is only allowed with fsync = \"interval\" (fsync is \"always\")",
                    );
                }
                Some(FsyncPolicy::Always)
            }
            Some("interval") => duration(
                problems,
                "store.fsync_interval",
                self.fsync_interval.as_deref(),
                DEFAULT_FSYNC_INTERVAL,
                FSYNC_INTERVAL,
            )
            .map(FsyncPolicy::Interval),
            Some(other) => {
                problems.push(
                    "store.fsync",
                    format!("{other:?} is not a policy: use \"always\" or \"interval\""),
                );
                None
            }
        }
    }
}

impl RawRetentionConfig {
    fn compile(&self, problems: &mut Problems) -> RetentionConfig {
        let defaults = RetentionConfig::default();
        let max_age = match self.max_age.as_deref() {
            None => Some(defaults.max_age),
            Some("off") => Some(None),
            Some(text) => positive_duration(problems, "store.retention.max_age", text).map(Some),
        };
        let max_bytes = match &self.max_bytes {
            None => Some(defaults.max_bytes),
            Some(RawByteSize::Text(text)) if text == "off" => Some(None),
            Some(raw) => match raw.to_bytes() {
                Ok(0) => {
                    problems.push(
                        "store.retention.max_bytes",
                        "0 would delete everything: use \"off\" for no size limit",
                    );
                    None
                }
                Ok(n) => Some(Some(n)),
                Err(message) => {
                    problems.push("store.retention.max_bytes", message);
                    None
                }
            },
        };
        let check_interval = duration(
            problems,
            "store.retention.check_interval",
            self.check_interval.as_deref(),
            defaults.check_interval,
            RETENTION_CHECK_INTERVAL,
        );
        RetentionConfig {
            max_age: max_age.unwrap_or(defaults.max_age),
            max_bytes: max_bytes.unwrap_or(defaults.max_bytes),
            check_interval: check_interval.unwrap_or(defaults.check_interval),
        }
    }
}

impl RawDedupeConfig {
    fn compile(&self, problems: &mut Problems) -> DedupeConfig {
        let defaults = DedupeConfig::default();
        let window = duration(
            problems,
            "store.dedupe.window",
            self.window.as_deref(),
            defaults.window,
            DEDUPE_WINDOW,
        );
        let max_keys = count(
            problems,
            "store.dedupe.max_keys",
            self.max_keys,
            defaults.max_keys,
            DEDUPE_MAX_KEYS,
        );
        DedupeConfig {
            window: window.unwrap_or(defaults.window),
            max_keys: max_keys.unwrap_or(defaults.max_keys),
        }
    }
}

impl RawLinkServerConfig {
    /// `max_message_bytes` is the store's, if it was valid: the frame limit is only
    /// checked against a real value.
    fn compile(
        &self,
        problems: &mut Problems,
        max_message_bytes: Option<usize>,
    ) -> LinkServerConfig {
        let defaults = LinkServerConfig::default();
        let max_frame_bytes = bytes_usize(
            problems,
            "link.max_frame_bytes",
            self.max_frame_bytes.as_ref(),
            defaults.max_frame_bytes,
            MAX_FRAME_BYTES,
        );
        if let (Some(frame), Some(message)) = (max_frame_bytes, max_message_bytes) {
            let needed = u64::try_from(message)
                .unwrap_or(u64::MAX)
                .saturating_add(FRAME_OVERHEAD);
            if u64::try_from(frame).unwrap_or(u64::MAX) < needed {
                problems.push(
                    "link.max_frame_bytes",
                    format!(
                        "{frame} is below store.max_message_bytes + 64KiB ({needed}): a frame must hold the largest message and its framing"
                    ),
                );
            }
        }
        let max_inflight_per_stream = count(
            problems,
            "link.max_inflight_per_stream",
            self.max_inflight_per_stream,
            defaults.max_inflight_per_stream,
            MAX_INFLIGHT_PER_STREAM,
        );
        let subscriber_queue_frames = count(
            problems,
            "link.subscriber_queue_frames",
            self.subscriber_queue_frames,
            defaults.subscriber_queue_frames,
            SUBSCRIBER_QUEUE_FRAMES,
        );
        let read_batch = count(
            problems,
            "link.read_batch",
            self.read_batch,
            defaults.read_batch,
            READ_BATCH,
        );
        LinkServerConfig {
            max_frame_bytes: max_frame_bytes.unwrap_or(defaults.max_frame_bytes),
            max_inflight_per_stream: max_inflight_per_stream
                .unwrap_or(defaults.max_inflight_per_stream),
            subscriber_queue_frames: subscriber_queue_frames
                .unwrap_or(defaults.subscriber_queue_frames),
            read_batch: read_batch.unwrap_or(defaults.read_batch),
        }
    }
}

/// A non-zero duration (a limit whose zero would mean "delete at once").
fn positive_duration(problems: &mut Problems, path: &str, text: &str) -> Option<Duration> {
    match parse_duration(text) {
        Ok(Duration::ZERO) => {
            problems.push(
                path,
                "0s would delete everything at once: use \"off\" for no age limit",
            );
            None
        }
        Ok(d) => Some(d),
        Err(message) => {
            problems.push(path, message);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::parse_log_config;

    fn problems(text: &str) -> Vec<(String, String)> {
        let error = parse_log_config(text).expect_err("config is invalid");
        error
            .problems
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect()
    }

    /// The single problem of `text`, as `path: message`.
    fn only_problem(text: &str) -> String {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{text}: {found:?}");
        format!("{}: {}", found[0].0, found[0].1)
    }

    #[test]
    fn every_rule_reports_its_path() {
        let cases: &[(&str, &str)] = &[
            ("data_dir = \"\"", "data_dir: must not be empty"),
            (
                "listen = \"127.0.0.1:70000\"",
                "listen: port 70000 out of range",
            ),
            (
                "listen = \"127.0.0.1\"",
                "listen: \"127.0.0.1\" has no port",
            ),
            (
                "listen = \"localhost:7400\"",
                "listen: \"localhost\" is not an IP address",
            ),
            (
                "listen = \"127.0.0.1:http\"",
                "listen: \"http\" is not a port number",
            ),
            (
                "[store]\nfsync = \"sometimes\"",
                "store.fsync: \"sometimes\" is not a policy",
            ),
            (
                "[store]\nfsync_interval = \"10ms\"",
                "store.fsync_interval: is only allowed with fsync = \"interval\"",
            ),
            (
                "[store]\nfsync = \"always\"\nfsync_interval = \"5ms\"",
                "store.fsync_interval: is only allowed with fsync = \"interval\"",
            ),
            (
                "[store]\nfsync = \"interval\"\nfsync_interval = \"500us\"",
                "store.fsync_interval: 500us is below the minimum of 1ms",
            ),
            (
                "[store]\nfsync = \"interval\"\nfsync_interval = \"11s\"",
                "store.fsync_interval: 11s is above the maximum of 10s",
            ),
            (
                "[store]\nfsync = \"interval\"\nfsync_interval = \"fast\"",
                "store.fsync_interval: \"fast\" is not a duration",
            ),
            (
                "[store]\nsegment_bytes = 512",
                "store.segment_bytes: 512 is below the minimum of 65536",
            ),
            (
                "[store]\nsegment_bytes = \"2GiB\"",
                "store.segment_bytes: 2147483648 is above the maximum of 1073741824",
            ),
            (
                "[store]\nsegment_bytes = \"12 parsecs\"",
                "store.segment_bytes: \"12 parsecs\" has an unknown unit",
            ),
            (
                "[store]\nsegment_bytes = -1",
                "store.segment_bytes: -1 is negative",
            ),
            (
                "[store]\ncheckpoint_bytes = \"1KiB\"",
                "store.checkpoint_bytes: 1024 is below the minimum of 65536",
            ),
            (
                "[store]\nmax_message_bytes = 1000",
                "store.max_message_bytes: 1000 is below the minimum of 1024",
            ),
            (
                "[store]\nmax_message_bytes = \"65MiB\"\nmax_batch_bytes = \"128MiB\"",
                "store.max_message_bytes: 68157440 is above the maximum of 67108864",
            ),
            (
                "[store]\nmax_batch_bytes = \"512KiB\"",
                "store.max_batch_bytes: 524288 is below store.max_message_bytes (1048576)",
            ),
            (
                "[store]\nmax_batch_bytes = \"2GiB\"",
                "store.max_batch_bytes: 2147483648 is above the maximum of 1073741824",
            ),
            (
                "[store]\ntail_capacity = 15",
                "store.tail_capacity: 15 is below the minimum of 16",
            ),
            (
                "[store]\ntail_capacity = 1000001",
                "store.tail_capacity: 1000001 is above the maximum of 1000000",
            ),
            (
                "[store]\ntail_capacity = -4",
                "store.tail_capacity: -4 is negative",
            ),
            (
                "[store.retention]\nmax_age = \"0s\"",
                "store.retention.max_age: 0s would delete everything",
            ),
            (
                "[store.retention]\nmax_age = \"a week\"",
                "store.retention.max_age: \"a week\" is not a duration",
            ),
            (
                "[store.retention]\nmax_bytes = 0",
                "store.retention.max_bytes: 0 would delete everything",
            ),
            (
                "[store.retention]\nmax_bytes = \"none\"",
                "store.retention.max_bytes: \"none\" is not a byte size",
            ),
            (
                "[store.retention]\ncheck_interval = \"100ms\"",
                "store.retention.check_interval: 100ms is below the minimum of 1s",
            ),
            (
                "[store.retention]\ncheck_interval = \"2days\"",
                "store.retention.check_interval: 2days is above the maximum of 1day",
            ),
            (
                "[store.dedupe]\nwindow = \"500ms\"",
                "store.dedupe.window: 500ms is below the minimum of 1s",
            ),
            (
                "[store.dedupe]\nwindow = \"31days\"",
                "store.dedupe.window: 31days is above the maximum of 30days",
            ),
            (
                "[store.dedupe]\nmax_keys = 999",
                "store.dedupe.max_keys: 999 is below the minimum of 1000",
            ),
            (
                "[link]\nmax_frame_bytes = \"1MiB\"",
                "link.max_frame_bytes: 1048576 is below store.max_message_bytes + 64KiB (1114112)",
            ),
            (
                "[link]\nmax_frame_bytes = \"2GiB\"",
                "link.max_frame_bytes: 2147483648 is above the maximum of 1073741824",
            ),
            (
                "[link]\nmax_inflight_per_stream = 0",
                "link.max_inflight_per_stream: 0 is below the minimum of 1",
            ),
            (
                "[link]\nmax_inflight_per_stream = 65537",
                "link.max_inflight_per_stream: 65537 is above the maximum of 65536",
            ),
            (
                "[link]\nsubscriber_queue_frames = 0",
                "link.subscriber_queue_frames: 0 is below the minimum of 1",
            ),
            (
                "[link]\nread_batch = 0",
                "link.read_batch: 0 is below the minimum of 1",
            ),
            (
                "[link]\nread_batch = 1000001",
                "link.read_batch: 1000001 is above the maximum of 1000000",
            ),
        ];
        for (text, expected) in cases {
            let found = only_problem(text);
            assert!(
                found.starts_with(expected),
                "{text}\n  got:  {found}\n  want: {expected}…"
            );
        }
    }

    #[test]
    fn bounds_themselves_are_accepted() {
        let text = r#"
            [store]
            fsync = "interval"
            fsync_interval = "10s"
            segment_bytes = "64KiB"
            checkpoint_bytes = 65536
            max_message_bytes = "1KiB"
            max_batch_bytes = "1KiB"
            tail_capacity = 16
            [store.dedupe]
            window = "30days"
            max_keys = 1000
            [link]
            max_frame_bytes = 66560
            max_inflight_per_stream = 65536
            subscriber_queue_frames = 1
            read_batch = 1
        "#;
        let config = parse_log_config(text).expect("every value is at a bound");
        assert_eq!(
            config.store.fsync,
            FsyncPolicy::Interval(Duration::from_secs(10))
        );
        assert_eq!(config.store.segment_bytes, 65536);
        assert_eq!(config.store.max_batch_bytes, 1024);
        assert_eq!(config.link.max_frame_bytes, 1024 + 65536);
    }

    #[test]
    fn several_problems_are_reported_at_once_in_key_order() {
        let text = r#"
            data_dir = ""
            listen = "0.0.0.0:99999"
            [store]
            segment_bytes = 512
            tail_capacity = 1
            [store.retention]
            check_interval = "soon"
            [store.dedupe]
            max_keys = 10
            [link]
            read_batch = 0
        "#;
        let error = parse_log_config(text).expect_err("six problems");
        let paths: Vec<&str> = error.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "data_dir",
                "listen",
                "store.segment_bytes",
                "store.tail_capacity",
                "store.retention.check_interval",
                "store.dedupe.max_keys",
                "link.read_batch",
            ]
        );
        let display = error.to_string();
        assert_eq!(display.lines().count(), 7, "{display}");
        assert!(display.contains("store.segment_bytes: 512 is below the minimum of 65536\n"));
    }

    #[test]
    fn cross_checks_are_skipped_when_their_base_is_invalid() {
        // max_message_bytes is unparseable: neither the batch nor the frame limit is
        // compared with a stand-in value.
        let text = "[store]\nmax_message_bytes = \"big\"\nmax_batch_bytes = 1024\n[link]\nmax_frame_bytes = 70000";
        assert_eq!(
            only_problem(text),
            "store.max_message_bytes: \"big\" is not a byte size: expected an integer with an optional unit, like \"64MiB\""
        );
    }

    #[test]
    fn cross_checks_use_the_configured_message_size() {
        let text = "[store]\nmax_message_bytes = \"4MiB\"\nmax_batch_bytes = \"3MiB\"\n[link]\nmax_frame_bytes = \"4MiB\"";
        let paths: Vec<String> = problems(text).into_iter().map(|(path, _)| path).collect();
        assert_eq!(paths, ["store.max_batch_bytes", "link.max_frame_bytes"]);
        let ok = "[store]\nmax_message_bytes = \"4MiB\"\n[link]\nmax_frame_bytes = \"5MiB\"";
        assert!(parse_log_config(ok).is_ok());
    }

    #[test]
    fn values_are_parsed_into_their_types() {
        let text = r#"
            data_dir = "/var/lib/tern"
            listen = "[::1]:7401"
            [store]
            fsync = "interval"
            max_message_bytes = "500kB"
            [store.retention]
            max_age = "off"
            max_bytes = "10GiB"
            check_interval = "1m"
            [store.dedupe]
            window = "1h 30m"
            max_keys = 1_000_000
        "#;
        let config = parse_log_config(text).expect("valid");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/tern"));
        assert_eq!(config.listen.to_string(), "[::1]:7401");
        assert_eq!(
            config.store.fsync,
            FsyncPolicy::Interval(Duration::from_millis(10)),
            "interval defaults to 10ms"
        );
        assert_eq!(config.store.max_message_bytes, 500_000);
        assert_eq!(config.store.retention.max_age, None);
        assert_eq!(config.store.retention.max_bytes, Some(10 << 30));
        assert_eq!(
            config.store.retention.check_interval,
            Duration::from_secs(60)
        );
        assert_eq!(config.store.dedupe.window, Duration::from_secs(5400));
        assert_eq!(config.store.dedupe.max_keys, 1_000_000);
        assert_eq!(config.link, LinkServerConfig::default());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name_and_position() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "lisen = \"127.0.0.1:1\"",
                "line 1, column 1",
                "unknown field `lisen`",
            ),
            (
                "[store]\nsegment_size = 1",
                "line 2, column 1",
                "unknown field `segment_size`",
            ),
            (
                "[store.retention]\nmax_size = 1",
                "line 2, column 1",
                "unknown field `max_size`",
            ),
            (
                "[store.dedupe]\n  ttl = \"1h\"",
                "line 2, column 3",
                "unknown field `ttl`",
            ),
            (
                "[link]\nmax_frame = 1",
                "line 2, column 1",
                "unknown field `max_frame`",
            ),
            ("[edge]\nx = 1", "line 1, column 2", "unknown field `edge`"),
        ];
        for (text, path, message) in cases {
            let found = problems(text);
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert_eq!(found[0].0, *path, "{text}");
            assert!(found[0].1.starts_with(message), "{text}: {}", found[0].1);
        }
    }

    #[test]
    fn syntax_and_type_errors_carry_line_and_column() {
        let found = problems("[store]\nsegment_bytes = \n");
        assert_eq!(found.len(), 1);
        assert!(found[0].0.starts_with("line 2, column "), "{found:?}");

        let found = problems("[store]\ntail_capacity = \"many\"");
        assert_eq!(found[0].0, "line 2, column 17", "{found:?}");
        assert!(found[0].1.contains("invalid type"), "{found:?}");

        let found = problems("[store]\nsegment_bytes = true");
        assert_eq!(found[0].0, "line 2, column 17", "{found:?}");
        assert!(found[0].1.contains("a byte size"), "{found:?}");
    }
}
