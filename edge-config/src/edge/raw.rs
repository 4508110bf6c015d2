//! The edge config as written in TOML, and its compilation into [`EdgeConfig`].
//!
//! Every field is optional (absent means the default), except `key` and
//! `capabilities` in each `[[keys]]` entry, which are still `Option` here so that a
//! missing one is reported with its path alongside every other problem. Byte sizes and
//! durations stay unparsed until `compile()`.
//!
//! Problems about a key never quote the key: it holds the secret.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::functions::RawFunctionsConfig;
use super::health::RawHealthConfig;
use super::keys::{ApiKey, Capabilities, ChannelPattern, Operation, Operations, split_key};
use super::{
    ClusterConfig, ClusterSecret, EdgeConfig, EdgeLimitsConfig, KIB, LinkClientConfig, MIB,
};
use crate::check::{bytes_usize, count, duration, socket_addr};
use crate::error::{ConfigError, Problems};
use crate::units::{RawByteSize, show_duration};

/// Longest edge name, in characters.
const NAME_CHARS: usize = 64;
const REQUEST_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(5 * 60);
const RECONNECT_MIN: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(60);
const RECONNECT_MAX: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(10 * 60);
/// `[log] idle_timeout`.
const LINK_IDLE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(10 * 60);
const MAX_FRAME_BYTES: RangeInclusive<u64> = KIB..=16 * MIB;
const MAX_MESSAGE_BYTES: RangeInclusive<u64> = 1..=16 * MIB;
const MAX_CHANNELS_PER_CONNECTION: RangeInclusive<u64> = 1..=100_000;
const MAX_MESSAGES_PER_PUBLISH: RangeInclusive<u64> = 1..=10_000;
const MAX_INFLIGHT_PUBLISHES: RangeInclusive<u64> = 1..=65_536;
const OUTBOUND_QUEUE_BYTES: RangeInclusive<u64> = 0..=1024 * MIB;
const HEARTBEAT_INTERVAL: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(5 * 60);
const IDLE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(60 * 60);
const CONNECT_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(5 * 60);
const MAX_CONNECTIONS: RangeInclusive<u64> = 1..=10_000_000;
const HISTORY_MAX_LIMIT: RangeInclusive<u64> = 1..=100_000;
const STATE_TTL: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(24 * 3600);
/// Shortest connection key secret, in characters.
const MIN_CLUSTER_SECRET_CHARS: usize = 32;

/// An edge config file (the TOML top level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgeConfig {
    /// `[edge]`.
    #[serde(default)]
    pub edge: RawEdgeSection,
    /// `[log]`.
    #[serde(default)]
    pub log: RawLinkClientConfig,
    /// `[limits]`.
    #[serde(default)]
    pub limits: RawEdgeLimitsConfig,
    /// `[functions]`.
    #[serde(default)]
    pub functions: RawFunctionsConfig,
    /// `[cluster]`.
    #[serde(default)]
    pub cluster: RawClusterConfig,
    /// `[[keys]]`, in file order. Default none.
    #[serde(default)]
    pub keys: Vec<RawApiKey>,
    /// `[[admin_keys]]`, in file order. Default none.
    #[serde(default)]
    pub admin_keys: Vec<RawAdminKey>,
    /// `[health]`.
    #[serde(default)]
    pub health: RawHealthConfig,
}

/// `[edge]`: the edge itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgeSection {
    /// Name in logs and metrics: 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
    /// Default `"edge"`.
    pub name: Option<String>,
    /// Region the edge serves, same rules as `name`. Default `"local"`.
    pub region: Option<String>,
    /// `IP:PORT` of the HTTP and WebSocket listener (one port for both; host names are
    /// not resolved; port 0 picks a free port). Default `"127.0.0.1:8080"`.
    pub listen: Option<String>,
}

/// `[cluster]`: what every edge of the cluster shares.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterConfig {
    /// Signs the connection keys clients resume with: at least 32 characters, the
    /// same on every edge. No default: without it the edge makes up one when it
    /// starts, and connections resume only on that edge process.
    pub connection_key_secret: Option<String>,
    /// Secrets used before a rotation, still accepted (never used to sign). Default
    /// none; each at least 32 characters.
    #[serde(default)]
    pub previous_connection_key_secrets: Vec<String>,
}

impl std::fmt::Debug for RawClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClusterConfig")
            .field(
                "connection_key_secret",
                &self.connection_key_secret.as_ref().map(|_| "…"),
            )
            .field(
                "previous_connection_key_secrets",
                &self.previous_connection_key_secrets.len(),
            )
            .finish()
    }
}

/// `[log]`: how the edge reaches its log node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLinkClientConfig {
    /// `IP:PORT` of the log node's link server (host names are not resolved).
    /// Default `"127.0.0.1:7400"`.
    pub addr: Option<String>,
    /// Name the log node's certificate must be valid for. Default `"localhost"`.
    pub server_name: Option<String>,
    /// PEM file of the CA the log node's certificate must chain to. No default:
    /// `tern edge` refuses to start without it.
    pub ca: Option<PathBuf>,
    /// Duration a request to the log waits for its answer. Default `"10s"`;
    /// 100ms..=5min.
    pub request_timeout: Option<String>,
    /// First reconnection delay (duration), doubled after each failure. Default
    /// `"100ms"`; 1ms..=1min.
    pub reconnect_min: Option<String>,
    /// Longest reconnection delay (duration). Default `"5s"`; 1ms..=10min, at least
    /// `reconnect_min`.
    pub reconnect_max: Option<String>,
    /// Silence after which the link counts as dead (duration). Default `"5s"`;
    /// 1s..=10min.
    pub idle_timeout: Option<String>,
}

/// `[limits]`: limits on client connections, per connection unless said otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgeLimitsConfig {
    /// Largest WebSocket message from a client (byte size). Default `"256KiB"`;
    /// 1KiB..=16MiB.
    pub max_frame_bytes: Option<RawByteSize>,
    /// Largest published message, data + name + headers (byte size). Default
    /// `"64KiB"`; at least 1, at most `max_frame_bytes`.
    pub max_message_bytes: Option<RawByteSize>,
    /// Channels attached at once. Default 200; 1..=100000.
    pub max_channels_per_connection: Option<i64>,
    /// Messages in one PUBLISH. Default 100; 1..=10000.
    pub max_messages_per_publish: Option<i64>,
    /// PUBLISHes awaiting their ACK. Default 64; 1..=65536.
    pub max_inflight_publishes: Option<i64>,
    /// Bytes queued for a client before it is disconnected as a slow consumer (byte
    /// size). Default `"1MiB"`; at least `max_frame_bytes`, at most 1GiB.
    pub outbound_queue_bytes: Option<RawByteSize>,
    /// Duration between heartbeats sent to a client that asks for no interval.
    /// Default `"15s"`; 1s..=5min, within the two bounds below.
    pub heartbeat_interval: Option<String>,
    /// Shortest heartbeat interval a client may ask for (duration). Default `"5s"`,
    /// or `heartbeat_interval` if shorter; 1s..=5min.
    pub min_heartbeat_interval: Option<String>,
    /// Longest heartbeat interval a client may ask for (duration). Default `"2min"`,
    /// or `heartbeat_interval` if longer; 1s..=5min.
    pub max_heartbeat_interval: Option<String>,
    /// Client silence (duration) before the edge disconnects it. Default `"45s"`;
    /// 1s..=1h, more than `heartbeat_interval`.
    pub idle_timeout: Option<String>,
    /// Duration allowed between the WebSocket opening and CONNECT. Default `"10s"`;
    /// 100ms..=5min.
    pub connect_timeout: Option<String>,
    /// Client connections of the whole edge. Default 100000; 1..=10000000.
    pub max_connections: Option<i64>,
    /// Largest `limit` of a REST history request. Default 1000; 1..=100000.
    pub history_max_limit: Option<i64>,
    /// How long after a connection drops it can still be resumed (duration).
    /// Default `"2min"`; 1s..=24h.
    pub state_ttl: Option<String>,
}

/// `[[keys]]`: one API key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// `"app.keyid:secret"`: app and key id non-empty, the app without `.` or `:`, the
    /// key id without `.` or `:` and unique in the file, the secret (everything after
    /// the first `:` following the key id) at least 16 characters. Required.
    pub key: Option<String>,
    /// Channel pattern → operations (`"publish"`, `"subscribe"`, `"history"`, or
    /// `"*"` for all). A pattern is a channel name, or a name ending in `*` matching
    /// every channel that starts with the part before it (`"*"` alone matches all);
    /// patterns match system channels (`$…`) only if they start with `$`. Required,
    /// with at least one pattern.
    pub capabilities: Option<BTreeMap<String, Vec<String>>>,
}

/// `[[admin_keys]]`: one key of the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminKey {
    /// `"app.keyid:secret"`, the same rules as [`RawApiKey::key`]; the key id is unique
    /// across `[[keys]]` and `[[admin_keys]]`. Required.
    pub key: Option<String>,
}

impl RawEdgeConfig {
    /// Validates every value and fills in defaults, reporting every problem at once.
    pub fn compile(&self) -> Result<EdgeConfig, ConfigError> {
        // Each field is `None` once its problem is recorded; the defaults that then stand
        // in for it only complete a value that `finish` discards.
        let defaults = EdgeConfig::default();
        let mut problems = Problems::default();

        let name = self.edge.name.as_deref().and_then(|name| {
            edge_name(name)
                .map_err(|m| problems.push("edge.name", m))
                .ok()
        });
        let region = self.edge.region.as_deref().and_then(|region| {
            edge_name(region)
                .map_err(|m| problems.push("edge.region", m))
                .ok()
        });
        let listen = self.edge.listen.as_deref().and_then(|text| {
            socket_addr(text, defaults.listen)
                .map_err(|m| problems.push("edge.listen", m))
                .ok()
        });
        let log = self.log.compile(&mut problems);
        let limits = self.limits.compile(&mut problems);
        let functions = self.functions.compile(&mut problems);
        let cluster = self.cluster.compile(&mut problems);
        let mut seen = HashMap::new();
        let keys = compile_keys(&self.keys, &mut seen, &mut problems);
        let admin_keys = compile_admin_keys(&self.admin_keys, &mut seen, &mut problems);
        let health = self.health.compile(&keys, &mut problems);

        problems.finish(EdgeConfig {
            name: name.unwrap_or(defaults.name),
            region: region.unwrap_or(defaults.region),
            listen: listen.unwrap_or(defaults.listen),
            log,
            limits,
            keys,
            functions,
            admin_keys,
            cluster,
            health,
        })
    }
}

impl RawClusterConfig {
    fn compile(&self, problems: &mut Problems) -> ClusterConfig {
        let mut check = |path: String, secret: &str| {
            let chars = secret.chars().count();
            if chars < MIN_CLUSTER_SECRET_CHARS {
                problems.push(
                    &path,
                    format!(
                        "is {chars} characters; at least {MIN_CLUSTER_SECRET_CHARS} are needed"
                    ),
                );
                return None;
            }
            Some(ClusterSecret::new(secret))
        };
        let current = self
            .connection_key_secret
            .as_deref()
            .and_then(|secret| check("cluster.connection_key_secret".into(), secret));
        let previous: Vec<_> = self
            .previous_connection_key_secrets
            .iter()
            .enumerate()
            .filter_map(|(i, secret)| {
                check(
                    format!("cluster.previous_connection_key_secrets[{i}]"),
                    secret,
                )
            })
            .collect();
        if self.connection_key_secret.is_none() && !self.previous_connection_key_secrets.is_empty()
        {
            problems.push(
                "cluster.previous_connection_key_secrets",
                "needs cluster.connection_key_secret: previous secrets only verify",
            );
        }
        ClusterConfig {
            connection_key_secret: current,
            previous_connection_key_secrets: previous,
        }
    }
}

/// Checks an edge name: it ends up in log fields and metric labels.
fn edge_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    let chars = name.chars().count();
    if chars > NAME_CHARS {
        return Err(format!(
            "is {chars} characters; at most {NAME_CHARS} are allowed"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{name:?} holds {bad:?}: use ASCII letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(name.to_owned())
}

impl RawLinkClientConfig {
    fn compile(&self, problems: &mut Problems) -> LinkClientConfig {
        let defaults = LinkClientConfig::default();
        let addr = self
            .addr
            .as_deref()
            .and_then(|text| match socket_addr(text, defaults.addr) {
                Ok(addr) if addr.port() == 0 => {
                    problems.push("log.addr", "port 0 cannot be connected to");
                    None
                }
                Ok(addr) => Some(addr),
                Err(message) => {
                    problems.push("log.addr", message);
                    None
                }
            });
        let server_name = match self.server_name.as_deref() {
            Some("") => {
                problems.push("log.server_name", "must not be empty");
                None
            }
            Some(name) if name.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                problems.push(
                    "log.server_name",
                    format!("{name:?} holds whitespace or control characters"),
                );
                None
            }
            other => other.map(str::to_owned),
        };
        let ca = match &self.ca {
            Some(path) if path.as_os_str().is_empty() => {
                problems.push("log.ca", "must not be empty");
                None
            }
            other => other.clone(),
        };
        let request_timeout = duration(
            problems,
            "log.request_timeout",
            self.request_timeout.as_deref(),
            defaults.request_timeout,
            REQUEST_TIMEOUT,
        );
        let reconnect_min = duration(
            problems,
            "log.reconnect_min",
            self.reconnect_min.as_deref(),
            defaults.reconnect_min,
            RECONNECT_MIN,
        );
        let reconnect_max = duration(
            problems,
            "log.reconnect_max",
            self.reconnect_max.as_deref(),
            defaults.reconnect_max,
            RECONNECT_MAX,
        );
        let idle_timeout = duration(
            problems,
            "log.idle_timeout",
            self.idle_timeout.as_deref(),
            defaults.idle_timeout,
            LINK_IDLE_TIMEOUT,
        );
        if let (Some(min), Some(max)) = (reconnect_min, reconnect_max)
            && max < min
        {
            problems.push(
                "log.reconnect_max",
                format!(
                    "{} is below log.reconnect_min ({})",
                    show_duration(max),
                    show_duration(min)
                ),
            );
        }
        LinkClientConfig {
            addr: addr.unwrap_or(defaults.addr),
            server_name: server_name.unwrap_or(defaults.server_name),
            ca,
            request_timeout: request_timeout.unwrap_or(defaults.request_timeout),
            reconnect_min: reconnect_min.unwrap_or(defaults.reconnect_min),
            reconnect_max: reconnect_max.unwrap_or(defaults.reconnect_max),
            idle_timeout: idle_timeout.unwrap_or(defaults.idle_timeout),
        }
    }
}

impl RawEdgeLimitsConfig {
    fn compile(&self, problems: &mut Problems) -> EdgeLimitsConfig {
        let defaults = EdgeLimitsConfig::default();
        let max_frame_bytes = bytes_usize(
            problems,
            "limits.max_frame_bytes",
            self.max_frame_bytes.as_ref(),
            defaults.max_frame_bytes,
            MAX_FRAME_BYTES,
        );
        let max_message_bytes = bytes_usize(
            problems,
            "limits.max_message_bytes",
            self.max_message_bytes.as_ref(),
            defaults.max_message_bytes,
            MAX_MESSAGE_BYTES,
        );
        if let (Some(frame), Some(message)) = (max_frame_bytes, max_message_bytes)
            && message > frame
        {
            problems.push(
                "limits.max_message_bytes",
                format!(
                    "{message} is above limits.max_frame_bytes ({frame}): a message must fit in one WebSocket message"
                ),
            );
        }
        let max_channels_per_connection = count(
            problems,
            "limits.max_channels_per_connection",
            self.max_channels_per_connection,
            defaults.max_channels_per_connection,
            MAX_CHANNELS_PER_CONNECTION,
        );
        let max_messages_per_publish = count(
            problems,
            "limits.max_messages_per_publish",
            self.max_messages_per_publish,
            defaults.max_messages_per_publish,
            MAX_MESSAGES_PER_PUBLISH,
        );
        let max_inflight_publishes = count(
            problems,
            "limits.max_inflight_publishes",
            self.max_inflight_publishes,
            defaults.max_inflight_publishes,
            MAX_INFLIGHT_PUBLISHES,
        );
        let outbound_queue_bytes = bytes_usize(
            problems,
            "limits.outbound_queue_bytes",
            self.outbound_queue_bytes.as_ref(),
            defaults.outbound_queue_bytes,
            OUTBOUND_QUEUE_BYTES,
        );
        if let (Some(frame), Some(queue)) = (max_frame_bytes, outbound_queue_bytes)
            && queue < frame
        {
            problems.push(
                "limits.outbound_queue_bytes",
                format!(
                    "{queue} is below limits.max_frame_bytes ({frame}): one large message would disconnect any client"
                ),
            );
        }
        let heartbeat_interval = duration(
            problems,
            "limits.heartbeat_interval",
            self.heartbeat_interval.as_deref(),
            defaults.heartbeat_interval,
            HEARTBEAT_INTERVAL,
        );
        // Unset bounds widen to take in `heartbeat_interval`, so setting only it works.
        let heartbeat = heartbeat_interval.unwrap_or(defaults.heartbeat_interval);
        let min_heartbeat_interval = duration(
            problems,
            "limits.min_heartbeat_interval",
            self.min_heartbeat_interval.as_deref(),
            defaults.min_heartbeat_interval.min(heartbeat),
            HEARTBEAT_INTERVAL,
        );
        let max_heartbeat_interval = duration(
            problems,
            "limits.max_heartbeat_interval",
            self.max_heartbeat_interval.as_deref(),
            defaults.max_heartbeat_interval.max(heartbeat),
            HEARTBEAT_INTERVAL,
        );
        if let (Some(min), Some(heartbeat), Some(max)) = (
            min_heartbeat_interval,
            heartbeat_interval,
            max_heartbeat_interval,
        ) && !(min <= heartbeat && heartbeat <= max)
        {
            problems.push(
                "limits.heartbeat_interval",
                format!(
                    "{} is not within limits.min_heartbeat_interval ({}) and limits.max_heartbeat_interval ({})",
                    show_duration(heartbeat),
                    show_duration(min),
                    show_duration(max)
                ),
            );
        }
        let idle_timeout = duration(
            problems,
            "limits.idle_timeout",
            self.idle_timeout.as_deref(),
            defaults.idle_timeout,
            IDLE_TIMEOUT,
        );
        if let (Some(heartbeat), Some(idle)) = (heartbeat_interval, idle_timeout)
            && idle <= heartbeat
        {
            problems.push(
                "limits.idle_timeout",
                format!(
                    "{} is not more than limits.heartbeat_interval ({}): a healthy client would be cut off",
                    show_duration(idle),
                    show_duration(heartbeat)
                ),
            );
        }
        let connect_timeout = duration(
            problems,
            "limits.connect_timeout",
            self.connect_timeout.as_deref(),
            defaults.connect_timeout,
            CONNECT_TIMEOUT,
        );
        let max_connections = count(
            problems,
            "limits.max_connections",
            self.max_connections,
            defaults.max_connections,
            MAX_CONNECTIONS,
        );
        let state_ttl = duration(
            problems,
            "limits.state_ttl",
            self.state_ttl.as_deref(),
            defaults.state_ttl,
            STATE_TTL,
        );
        let history_max_limit = count(
            problems,
            "limits.history_max_limit",
            self.history_max_limit,
            defaults.history_max_limit,
            HISTORY_MAX_LIMIT,
        );
        EdgeLimitsConfig {
            max_frame_bytes: max_frame_bytes.unwrap_or(defaults.max_frame_bytes),
            max_message_bytes: max_message_bytes.unwrap_or(defaults.max_message_bytes),
            max_channels_per_connection: max_channels_per_connection
                .unwrap_or(defaults.max_channels_per_connection),
            max_messages_per_publish: max_messages_per_publish
                .unwrap_or(defaults.max_messages_per_publish),
            max_inflight_publishes: max_inflight_publishes
                .unwrap_or(defaults.max_inflight_publishes),
            outbound_queue_bytes: outbound_queue_bytes.unwrap_or(defaults.outbound_queue_bytes),
            heartbeat_interval: heartbeat,
            min_heartbeat_interval: min_heartbeat_interval
                .unwrap_or(defaults.min_heartbeat_interval.min(heartbeat)),
            max_heartbeat_interval: max_heartbeat_interval
                .unwrap_or(defaults.max_heartbeat_interval.max(heartbeat)),
            idle_timeout: idle_timeout.unwrap_or(defaults.idle_timeout),
            connect_timeout: connect_timeout.unwrap_or(defaults.connect_timeout),
            max_connections: max_connections.unwrap_or(defaults.max_connections),
            history_max_limit: history_max_limit.unwrap_or(defaults.history_max_limit),
            state_ttl: state_ttl.unwrap_or(defaults.state_ttl),
        }
    }
}

/// Key id → path of the entry that first used it (`keys[0]`, `admin_keys[1]`).
type SeenKeyIds<'a> = HashMap<&'a str, String>;

/// Checks the `key` of the entry at `path`, recording its id in `seen`; `None` (problem
/// recorded) if it is missing, malformed or its id is taken.
fn check_key<'a>(
    key: Option<&'a str>,
    path: &str,
    seen: &mut SeenKeyIds<'a>,
    problems: &mut Problems,
) -> Option<(&'a str, &'a str, &'a str)> {
    let key_path = format!("{path}.key");
    let Some(text) = key else {
        problems.push(&key_path, "is required: \"app.keyid:secret\"");
        return None;
    };
    match split_key(text) {
        Ok((app, key_id, secret)) => {
            if let Some(first) = seen.get(key_id) {
                problems.push(
                    &key_path,
                    format!("key id {key_id:?} is also used by {first}"),
                );
                None
            } else {
                seen.insert(key_id, path.to_owned());
                Some((app, key_id, secret))
            }
        }
        Err(message) => {
            problems.push(&key_path, message);
            None
        }
    }
}

/// Compiles every `[[keys]]` entry; entries with a problem are left out (the problem
/// is recorded, so the result is discarded anyway).
fn compile_keys<'a>(
    raw: &'a [RawApiKey],
    seen: &mut SeenKeyIds<'a>,
    problems: &mut Problems,
) -> Vec<ApiKey> {
    let mut keys = Vec::with_capacity(raw.len());
    for (index, entry) in raw.iter().enumerate() {
        let path = format!("keys[{index}]");
        let parts = check_key(entry.key.as_deref(), &path, seen, problems);
        let capabilities = compile_capabilities(entry.capabilities.as_ref(), &path, problems);
        if let (Some((app, key_id, secret)), Some(capabilities)) = (parts, capabilities) {
            keys.push(ApiKey {
                app: app.to_owned(),
                key_id: key_id.to_owned(),
                secret: secret.to_owned(),
                capabilities,
            });
        }
    }
    keys
}

/// Compiles every `[[admin_keys]]` entry into keys without capabilities.
fn compile_admin_keys<'a>(
    raw: &'a [RawAdminKey],
    seen: &mut SeenKeyIds<'a>,
    problems: &mut Problems,
) -> Vec<ApiKey> {
    raw.iter()
        .enumerate()
        .filter_map(|(index, entry)| {
            let path = format!("admin_keys[{index}]");
            let (app, key_id, secret) = check_key(entry.key.as_deref(), &path, seen, problems)?;
            Some(ApiKey {
                app: app.to_owned(),
                key_id: key_id.to_owned(),
                secret: secret.to_owned(),
                capabilities: Capabilities::default(),
            })
        })
        .collect()
}

/// Compiles one key's `capabilities` table, reporting every bad pattern and operation.
fn compile_capabilities(
    raw: Option<&BTreeMap<String, Vec<String>>>,
    key_path: &str,
    problems: &mut Problems,
) -> Option<Capabilities> {
    let path = format!("{key_path}.capabilities");
    let Some(raw) = raw else {
        problems.push(
            &path,
            "is required: a table of channel pattern → operations, like { \"*\" = [\"subscribe\"] }",
        );
        return None;
    };
    if raw.is_empty() {
        problems.push(&path, "grants nothing: name at least one channel pattern");
        return None;
    }
    let mut grants = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (pattern_text, ops) in raw {
        let pattern_path = format!("{path}.{pattern_text:?}");
        let pattern = ChannelPattern::parse(pattern_text)
            .map_err(|error| problems.push(&pattern_path, error.to_string()))
            .ok();
        if ops.is_empty() {
            problems.push(
                &pattern_path,
                "grants no operation: list \"publish\", \"subscribe\", \"history\" or \"*\"",
            );
            ok = false;
        }
        let mut set = Operations::NONE;
        for (i, op) in ops.iter().enumerate() {
            match operations(op) {
                Some(ops) => set = set | ops,
                None => {
                    problems.push(
                        &format!("{pattern_path}[{i}]"),
                        format!(
                            "{op:?} is not an operation: use \"publish\", \"subscribe\", \"history\" or \"*\""
                        ),
                    );
                    ok = false;
                }
            }
        }
        match pattern {
            Some(pattern) => grants.push((pattern, set)),
            None => ok = false,
        }
    }
    ok.then(|| Capabilities::new(grants))
}

/// The operations an entry of a capability list stands for.
fn operations(name: &str) -> Option<Operations> {
    if name == "*" {
        return Some(Operations::ALL);
    }
    Operation::ALL
        .into_iter()
        .find(|op| op.as_str() == name)
        .map(Operations::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::parse_edge_config;

    const SECRET: &str = "0123456789abcdef";

    fn problems(text: &str) -> Vec<(String, String)> {
        let error = parse_edge_config(text).expect_err("config is invalid");
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

    fn key_entry(key: &str, capabilities: &str) -> String {
        format!("[[keys]]\nkey = \"{key}\"\ncapabilities = {capabilities}\n")
    }

    #[test]
    fn every_rule_reports_its_path() {
        let cases: &[(&str, &str)] = &[
            ("[edge]\nname = \"\"", "edge.name: must not be empty"),
            (
                "[edge]\nname = \"edge one\"",
                "edge.name: \"edge one\" holds ' '",
            ),
            ("[edge]\nname = \"ééé\"", "edge.name: \"ééé\" holds 'é'"),
            (
                "[edge]\nlisten = \"127.0.0.1:80800\"",
                "edge.listen: port 80800 out of range",
            ),
            (
                "[edge]\nlisten = \"localhost:8080\"",
                "edge.listen: \"localhost\" is not an IP address (host names are not resolved): expected IP:PORT like \"127.0.0.1:8080\"",
            ),
            (
                "[log]\naddr = \"127.0.0.1\"",
                "log.addr: \"127.0.0.1\" has no port: expected IP:PORT like \"127.0.0.1:7400\"",
            ),
            (
                "[log]\naddr = \"127.0.0.1:0\"",
                "log.addr: port 0 cannot be connected to",
            ),
            (
                "[log]\nserver_name = \"\"",
                "log.server_name: must not be empty",
            ),
            (
                "[log]\nserver_name = \"log node\"",
                "log.server_name: \"log node\" holds whitespace",
            ),
            ("[log]\nca = \"\"", "log.ca: must not be empty"),
            (
                "[log]\nrequest_timeout = \"10ms\"",
                "log.request_timeout: 10ms is below the minimum of 100ms",
            ),
            (
                "[log]\nreconnect_min = \"2m\"",
                "log.reconnect_min: 2m is above the maximum of 1m",
            ),
            (
                "[log]\nreconnect_max = \"50ms\"",
                "log.reconnect_max: 50ms is below log.reconnect_min (100ms)",
            ),
            (
                "[log]\nidle_timeout = \"500ms\"",
                "log.idle_timeout: 500ms is below the minimum of 1s",
            ),
            (
                "[log]\nreconnect_max = \"later\"",
                "log.reconnect_max: \"later\" is not a duration",
            ),
            (
                "[limits]\nmax_frame_bytes = 1000",
                "limits.max_frame_bytes: 1000 is below the minimum of 1024",
            ),
            (
                "[limits]\nmax_frame_bytes = \"17MiB\"",
                "limits.max_frame_bytes: 17825792 is above the maximum of 16777216",
            ),
            (
                "[limits]\nmax_message_bytes = \"512KiB\"",
                "limits.max_message_bytes: 524288 is above limits.max_frame_bytes (262144)",
            ),
            (
                "[limits]\nmax_message_bytes = 0",
                "limits.max_message_bytes: 0 is below the minimum of 1",
            ),
            (
                "[limits]\nmax_channels_per_connection = 0",
                "limits.max_channels_per_connection: 0 is below the minimum of 1",
            ),
            (
                "[limits]\nmax_messages_per_publish = 10001",
                "limits.max_messages_per_publish: 10001 is above the maximum of 10000",
            ),
            (
                "[limits]\nmax_inflight_publishes = -1",
                "limits.max_inflight_publishes: -1 is negative",
            ),
            (
                "[limits]\noutbound_queue_bytes = \"100KiB\"",
                "limits.outbound_queue_bytes: 102400 is below limits.max_frame_bytes (262144)",
            ),
            (
                "[limits]\nheartbeat_interval = \"500ms\"",
                "limits.heartbeat_interval: 500ms is below the minimum of 1s",
            ),
            (
                "[limits]\nidle_timeout = \"15s\"",
                "limits.idle_timeout: 15s is not more than limits.heartbeat_interval (15s)",
            ),
            (
                "[limits]\nheartbeat_interval = \"1m\"",
                "limits.idle_timeout: 45s is not more than limits.heartbeat_interval (1m)",
            ),
            (
                "[limits]\nheartbeat_interval = \"3s\"\nidle_timeout = \"9s\"\nmin_heartbeat_interval = \"5s\"",
                "limits.heartbeat_interval: 3s is not within limits.min_heartbeat_interval (5s) and limits.max_heartbeat_interval (2m)",
            ),
            (
                "[limits]\nmin_heartbeat_interval = \"0s\"",
                "limits.min_heartbeat_interval: 0s is below the minimum of 1s",
            ),
            (
                "[limits]\nstate_ttl = \"2days\"",
                "limits.state_ttl: 2days is above the maximum of 1day",
            ),
            (
                "[cluster]\nconnection_key_secret = \"short\"",
                "cluster.connection_key_secret: is 5 characters; at least 32 are needed",
            ),
            (
                "[cluster]\nconnection_key_secret = \"0123456789abcdef0123456789abcdef\"\nprevious_connection_key_secrets = [\"0123456789abcdef0123456789abcdef\", \"x\"]",
                "cluster.previous_connection_key_secrets[1]: is 1 characters; at least 32 are needed",
            ),
            (
                "[cluster]\nprevious_connection_key_secrets = [\"0123456789abcdef0123456789abcdef\"]",
                "cluster.previous_connection_key_secrets: needs cluster.connection_key_secret: previous secrets only verify",
            ),
            (
                "[limits]\nconnect_timeout = \"6m\"",
                "limits.connect_timeout: 6m is above the maximum of 5m",
            ),
            (
                "[limits]\nmax_connections = 0",
                "limits.max_connections: 0 is below the minimum of 1",
            ),
            (
                "[limits]\nhistory_max_limit = 100001",
                "limits.history_max_limit: 100001 is above the maximum of 100000",
            ),
            (
                "[[keys]]\ncapabilities = { \"*\" = [\"subscribe\"] }",
                "keys[0].key: is required",
            ),
            (
                "[[keys]]\nkey = \"app.k1:0123456789abcdef\"",
                "keys[0].capabilities: is required",
            ),
            (
                "[[keys]]\nkey = \"app.k1:0123456789abcdef\"\ncapabilities = {}",
                "keys[0].capabilities: grants nothing",
            ),
            (
                "[[keys]]\nkey = \"app.k1:short\"\ncapabilities = { \"*\" = [\"*\"] }",
                "keys[0].key: the secret is 5 characters; at least 16 are required",
            ),
            (
                "[[keys]]\nkey = \"app.k1:0123456789abcdef\"\ncapabilities = { \"*\" = [] }",
                "keys[0].capabilities.\"*\": grants no operation",
            ),
            (
                "[[keys]]\nkey = \"app.k1:0123456789abcdef\"\ncapabilities = { \"chat:*\" = [\"subscribe\", \"read\"] }",
                "keys[0].capabilities.\"chat:*\"[1]: \"read\" is not an operation",
            ),
            (
                "[[keys]]\nkey = \"app.k1:0123456789abcdef\"\ncapabilities = { \"*chat\" = [\"subscribe\"] }",
                "keys[0].capabilities.\"*chat\": `*` is only allowed at the end of a pattern",
            ),
            (
                "[[keys]]\nkey = \"app.k1:0123456789abcdef\"\ncapabilities = { \"\" = [\"subscribe\"] }",
                "keys[0].capabilities.\"\": pattern is empty",
            ),
            (
                "[[keys]]\nkey = \"app.k1:0123456789abcdef\"\ncapabilities = { \"chat room\" = [\"subscribe\"] }",
                "keys[0].capabilities.\"chat room\": channel name holds a control or whitespace character at byte 4",
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
    fn several_problems_are_reported_at_once_in_key_order() {
        let text = format!(
            "{}{}{}{}",
            r#"
            [edge]
            name = ""
            [log]
            addr = "nowhere"
            reconnect_min = "10s"
            reconnect_max = "1s"
            [limits]
            max_frame_bytes = "2KiB"
            idle_timeout = "10s"
            "#,
            key_entry(&format!("app.k1:{SECRET}"), "{ \"*\" = [\"subscribe\"] }"),
            key_entry("app.k1", "{ \"x*y\" = [\"write\"] }"),
            key_entry(&format!("other.k1:{SECRET}"), "{ \"*\" = [\"history\"] }"),
        );
        let error = parse_edge_config(&text).expect_err("many problems");
        let paths: Vec<&str> = error.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "edge.name",
                "log.addr",
                "log.reconnect_max",
                "limits.max_message_bytes",
                "limits.idle_timeout",
                "keys[1].key",
                "keys[1].capabilities.\"x*y\"",
                "keys[1].capabilities.\"x*y\"[0]",
                "keys[2].key",
            ],
            "{error}"
        );
        assert!(
            error.problems[8]
                .message
                .contains("key id \"k1\" is also used by keys[0]"),
            "{error}"
        );
        // No problem quotes a secret.
        assert!(!error.to_string().contains(SECRET), "{error}");
    }

    #[test]
    fn keys_compile_into_capabilities() {
        let text = format!(
            "{}{}",
            key_entry(
                &format!("shop.web:{SECRET}"),
                "{ \"*\" = [\"subscribe\"], \"chat:*\" = [\"publish\", \"history\"], \"$functions\" = [\"*\"] }"
            ),
            key_entry(
                &format!("shop.admin:{SECRET}:x"),
                "{ \"$*\" = [\"subscribe\", \"subscribe\"] }"
            ),
        );
        let config = parse_edge_config(&text).expect("valid");
        assert_eq!(config.keys.len(), 2);
        let web = &config.keys[0];
        assert_eq!((web.app.as_str(), web.key_id.as_str()), ("shop", "web"));
        assert_eq!(web.secret, SECRET);
        let caps = &web.capabilities;
        assert_eq!(caps.granted("news"), Operation::Subscribe.into());
        assert_eq!(caps.granted("chat:"), Operations::ALL);
        assert_eq!(caps.granted("chat:room1"), Operations::ALL);
        assert_eq!(caps.granted("$functions"), Operations::ALL);
        assert_eq!(caps.granted("$presence"), Operations::NONE);
        let admin = &config.keys[1];
        assert_eq!(admin.secret, format!("{SECRET}:x"));
        assert_eq!(
            admin.capabilities.granted("$presence"),
            Operation::Subscribe.into()
        );
        assert_eq!(admin.capabilities.granted("news"), Operations::NONE);
    }

    #[test]
    fn values_are_parsed_into_their_types() {
        let text = r#"
            [edge]
            name = "fra-1.edge_a"
            listen = "[::]:0"
            [log]
            addr = "10.0.0.7:7401"
            server_name = "log-1.internal"
            ca = "/etc/tern/ca.pem"
            request_timeout = "2s"
            reconnect_min = "50ms"
            reconnect_max = "50ms"
            idle_timeout = "1s"
            [limits]
            max_frame_bytes = "1KiB"
            max_message_bytes = 1024
            outbound_queue_bytes = "1KiB"
            heartbeat_interval = "1s"
            idle_timeout = "1100ms"
            connect_timeout = "100ms"
            max_connections = 10_000_000
        "#;
        let config = parse_edge_config(text).expect("valid, several values at a bound");
        assert_eq!(config.name, "fra-1.edge_a");
        assert_eq!(config.listen.to_string(), "[::]:0");
        assert_eq!(config.log.addr.to_string(), "10.0.0.7:7401");
        assert_eq!(config.log.server_name, "log-1.internal");
        assert_eq!(config.log.ca, Some(PathBuf::from("/etc/tern/ca.pem")));
        assert_eq!(config.log.request_timeout, Duration::from_secs(2));
        assert_eq!(config.log.reconnect_max, Duration::from_millis(50));
        assert_eq!(config.log.idle_timeout, Duration::from_secs(1));
        assert_eq!(config.limits.max_frame_bytes, 1024);
        assert_eq!(config.limits.max_message_bytes, 1024);
        assert_eq!(config.limits.outbound_queue_bytes, 1024);
        assert_eq!(config.limits.idle_timeout, Duration::from_millis(1100));
        // The unset lower bound widened to take in the heartbeat interval.
        assert_eq!(config.limits.min_heartbeat_interval, Duration::from_secs(1));
        assert_eq!(config.limits.connect_timeout, Duration::from_millis(100));
        assert_eq!(config.limits.max_connections, 10_000_000);
        assert_eq!(
            config.limits.max_channels_per_connection,
            EdgeLimitsConfig::default().max_channels_per_connection
        );
    }

    #[test]
    fn cross_checks_are_skipped_when_their_base_is_invalid() {
        let text = "[limits]\nmax_frame_bytes = \"huge\"\nmax_message_bytes = \"1MiB\"\noutbound_queue_bytes = 1";
        assert_eq!(
            only_problem(text),
            "limits.max_frame_bytes: \"huge\" is not a byte size: expected an integer with an optional unit, like \"64MiB\""
        );
        let text = "[log]\nreconnect_min = \"soon\"\nreconnect_max = \"1ms\"";
        assert!(only_problem(text).starts_with("log.reconnect_min: "));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name_and_position() {
        let cases: &[(&str, &str, &str)] = &[
            ("nmae = \"x\"", "line 1, column 1", "unknown field `nmae`"),
            (
                "[edge]\nport = 1",
                "line 2, column 1",
                "unknown field `port`",
            ),
            (
                "[log]\ncert = \"x\"",
                "line 2, column 1",
                "unknown field `cert`",
            ),
            (
                "[limits]\nmax_frame = 1",
                "line 2, column 1",
                "unknown field `max_frame`",
            ),
            (
                "[[keys]]\nsecret = \"x\"",
                "line 2, column 1",
                "unknown field `secret`",
            ),
        ];
        for (text, path, message) in cases {
            let found = problems(text);
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert_eq!(found[0].0, *path, "{text}");
            assert!(found[0].1.starts_with(message), "{text}: {}", found[0].1);
        }
    }
}
