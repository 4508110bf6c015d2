//! Config of an edge: its name, region and listener, how it reaches its log node, the
//! limits it puts on client connections, its message functions ([`functions`]), the API
//! keys clients authenticate with, the admin keys operators deploy with, and its
//! anycast health loop ([`health`]).
//!
//! The types here are the compiled, validated form. Their `Default` is the config of an
//! empty file (no `log.ca`, no keys); tests build variations with
//! `EdgeLimitsConfig { max_connections: 10, ..Default::default() }`, which skips
//! validation (use [`RawEdgeConfig::compile`] to validate).

pub mod functions;
pub mod health;
mod keys;
mod raw;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use functions::{
    BindingPattern, BindingSpec, DEFAULT_MAX_MEMORY_BYTES, FailurePolicy, FunctionName,
    FunctionsConfig, RawBindingSpec, RawFunctionsConfig, RawStaticFunction, Stage, StaticFunction,
};
pub use health::{
    AnycastActionConfig, BirdHealthConfig, DEFAULT_BIRD_SOCKET, DnsReportConfig, HealthConfig,
    HealthRunner, LoadRatio, ProbeKey, RawBirdHealthConfig, RawDnsReportConfig, RawHealthConfig,
    RawRatio,
};
pub use keys::{
    ApiKey, Capabilities, ChannelPattern, MIN_SECRET_CHARS, Operation, Operations, PatternError,
};
pub use raw::{
    RawAdminKey, RawApiKey, RawClusterConfig, RawEdgeConfig, RawEdgeLimitsConfig, RawEdgeSection,
    RawLinkClientConfig,
};

use crate::error::ConfigError;
use crate::source;
use crate::units::to_usize;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// An edge's whole config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// The edge's name in logs and metrics (TOML: `[edge] name`). Default `edge`.
    pub name: String,
    /// The region the edge serves, in logs, metrics and function context (TOML:
    /// `[edge] region`, same rules as `name`). Default `local`.
    pub region: String,
    /// Address of the HTTP and WebSocket listener, one port for both (TOML:
    /// `[edge] listen`). Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// How the edge reaches its log node (TOML: `[log]`).
    pub log: LinkClientConfig,
    /// Limits on client connections (TOML: `[limits]`).
    pub limits: EdgeLimitsConfig,
    /// API keys, in file order, key ids unique (TOML: `[[keys]]`). Default none: no
    /// client can authenticate with a key.
    pub keys: Vec<ApiKey>,
    /// Message functions (TOML: `[functions]`).
    pub functions: FunctionsConfig,
    /// Keys of the admin API (deploying functions), in file order (TOML:
    /// `[[admin_keys]]`). Their capabilities are empty: an admin key is not a client key.
    /// Key ids are unique across `keys` and `admin_keys`. Default none: the admin API
    /// refuses every request.
    pub admin_keys: Vec<ApiKey>,
    /// What every edge of the cluster shares (TOML: `[cluster]`).
    pub cluster: ClusterConfig,
    /// The anycast health loop (TOML: `[health]`); off by default.
    pub health: HealthConfig,
}

/// What every edge of a cluster shares (TOML: `[cluster]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Signs the connection keys clients resume with; the same on every edge. Default
    /// none: the edge makes one up when it starts, and connections resume only on
    /// that edge process.
    pub connection_key_secret: Option<ClusterSecret>,
    /// Secrets of before a rotation: accepted, never used to sign.
    pub previous_connection_key_secrets: Vec<ClusterSecret>,
}

/// A secret shared by the cluster (at least 32 characters). `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(String);

impl ClusterSecret {
    /// Wraps `secret` (not checked: [`RawEdgeConfig::compile`] checks its length).
    pub fn new(secret: &str) -> Self {
        Self(secret.to_owned())
    }

    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            name: "edge".to_owned(),
            region: "local".to_owned(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            log: LinkClientConfig::default(),
            limits: EdgeLimitsConfig::default(),
            keys: Vec::new(),
            functions: FunctionsConfig::default(),
            admin_keys: Vec::new(),
            cluster: ClusterConfig::default(),
            health: HealthConfig::default(),
        }
    }
}

impl EdgeConfig {
    /// The key with id `key_id`, if any. Key ids are not secret; check the secret
    /// with [`ApiKey::secret_matches`] (or use [`EdgeConfig::authenticate`]).
    pub fn find_key(&self, key_id: &str) -> Option<&ApiKey> {
        self.keys.iter().find(|key| key.key_id == key_id)
    }

    /// The key a client presented as `"app.keyid:secret"`, if it is well formed, its
    /// id is known, its app is the key's and its secret matches (compared in constant
    /// time). `None` says nothing about which part was wrong, on purpose.
    pub fn authenticate(&self, presented: &str) -> Option<&ApiKey> {
        let (app, key_id, secret) = keys::split_key(presented).ok()?;
        let key = self.find_key(key_id)?;
        // Check the secret even when the app is wrong, so both cost the same.
        let secret_ok = key.secret_matches(secret);
        (secret_ok && key.app == app).then_some(key)
    }

    /// True if `presented` (`"app.keyid:secret"`) is one of the admin keys: well
    /// formed, id known, app the key's, secret matching in constant time. Client keys
    /// are never admin keys.
    pub fn authenticate_admin(&self, presented: &str) -> bool {
        let Ok((app, key_id, secret)) = keys::split_key(presented) else {
            return false;
        };
        let Some(key) = self.admin_keys.iter().find(|key| key.key_id == key_id) else {
            return false;
        };
        // Check the secret even when the app is wrong, so both cost the same.
        let secret_ok = key.secret_matches(secret);
        secret_ok && key.app == app
    }
}

/// How the edge reaches its log node over the QUIC link (TOML: `[log]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClientConfig {
    /// The log node's link address. Default `127.0.0.1:7400`.
    pub addr: SocketAddr,
    /// The name the log node's certificate must be valid for. Default `localhost`.
    pub server_name: String,
    /// PEM file of the CA the log node's certificate must chain to. Default none, and
    /// `tern edge` refuses to start without it (there is no insecure fallback); the
    /// config itself is valid without it so that other tools can read it.
    pub ca: Option<PathBuf>,
    /// How long a request to the log waits for its answer. Default 10s; 100ms..=5min.
    pub request_timeout: Duration,
    /// First delay before reconnecting after the link is lost; it doubles on each
    /// failure up to `reconnect_max`. Default 100ms; 1ms..=1min.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts. Default 5s; 1ms..=10min, at least
    /// `reconnect_min`.
    pub reconnect_max: Duration,
    /// How long the link may be silent before the edge counts it as dead and
    /// reconnects (keep-alives go every second; the log node's own limit, 30 s, applies
    /// too, whichever is shorter). Default 5s; 1s..=10min.
    pub idle_timeout: Duration,
}

impl Default for LinkClientConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7400)),
            server_name: "localhost".to_owned(),
            ca: None,
            request_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
        }
    }
}

/// Limits on client connections (TOML: `[limits]`). Per connection unless said
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLimitsConfig {
    /// Largest WebSocket message accepted from a client. Default 256 KiB;
    /// 1 KiB..=16 MiB.
    pub max_frame_bytes: usize,
    /// Largest message published: data, name and headers together. Default 64 KiB;
    /// 1..=`max_frame_bytes`.
    pub max_message_bytes: usize,
    /// Channels one connection may attach at once. Default 200; 1..=100 000.
    pub max_channels_per_connection: usize,
    /// Messages in one PUBLISH. Default 100; 1..=10 000.
    pub max_messages_per_publish: usize,
    /// PUBLISHes awaiting their ACK at once. Default 64; 1..=65 536.
    pub max_inflight_publishes: usize,
    /// Bytes queued for a client before it is disconnected as a slow consumer.
    /// Default 1 MiB; `max_frame_bytes`..=1 GiB.
    pub outbound_queue_bytes: usize,
    /// How often the edge sends a heartbeat to a client that asks for no interval of
    /// its own. Default 15s; 1s..=5min, within `min_heartbeat_interval` and
    /// `max_heartbeat_interval`.
    pub heartbeat_interval: Duration,
    /// The shortest heartbeat interval a client may ask for in CONNECT. Default 5s,
    /// or `heartbeat_interval` if that is shorter; 1s..=5min.
    pub min_heartbeat_interval: Duration,
    /// The longest heartbeat interval a client may ask for in CONNECT. Default 2min,
    /// or `heartbeat_interval` if that is longer; 1s..=5min.
    pub max_heartbeat_interval: Duration,
    /// Client silence after which the connection is closed, at `heartbeat_interval`.
    /// A session with another heartbeat interval gets the same multiple of it.
    /// Default 45s; 1s..=1h, more than `heartbeat_interval`.
    pub idle_timeout: Duration,
    /// Time between the WebSocket opening and CONNECT before the edge closes it.
    /// Default 10s; 100ms..=5min.
    pub connect_timeout: Duration,
    /// Client connections of the whole edge. Default 100 000; 1..=10 000 000.
    pub max_connections: usize,
    /// Largest `limit` a REST history request may ask for. Default 1000; 1..=100 000.
    pub history_max_limit: usize,
    /// How long after a connection drops it can still be resumed (on any edge
    /// sharing the cluster's secret). Default 2min; 1s..=24h.
    pub state_ttl: Duration,
}

impl Default for EdgeLimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: to_usize(256 * KIB),
            max_message_bytes: to_usize(64 * KIB),
            max_channels_per_connection: 200,
            max_messages_per_publish: 100,
            max_inflight_publishes: 64,
            outbound_queue_bytes: to_usize(MIB),
            heartbeat_interval: Duration::from_secs(15),
            min_heartbeat_interval: Duration::from_secs(5),
            max_heartbeat_interval: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(45),
            connect_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            history_max_limit: 1000,
            state_ttl: Duration::from_secs(120),
        }
    }
}

/// Parses and validates an edge config from TOML text.
///
/// A syntax error, unknown key or value of the wrong TOML type is reported alone (with
/// its line and column); otherwise every invalid value is reported with its key path.
pub fn parse_edge_config(text: &str) -> Result<EdgeConfig, ConfigError> {
    source::parse(text, RawEdgeConfig::compile)
}

/// Reads, parses and validates an edge config file; see [`parse_edge_config`].
///
/// A file that cannot be read is one problem whose path is the file's.
pub fn load_edge_config(path: &Path) -> Result<EdgeConfig, ConfigError> {
    source::load(path, parse_edge_config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/edge.toml")
    }

    /// The example with its commented-out samples (`ca`, `cache_dir`, the
    /// `[[functions.static]]`, `[[keys]]` and `[[admin_keys]]` samples) switched on: every
    /// `# key = value` or `# [table]` line loses its `# `.
    fn example_with_optional_parts() -> String {
        fn is_sample(line: &str) -> bool {
            line.starts_with('[')
                || line.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
        }
        let text = std::fs::read_to_string(example_path()).expect("example is readable");
        text.lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(sample) if is_sample(sample) => sample,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect()
    }

    #[test]
    fn empty_text_gives_the_defaults() {
        assert_eq!(parse_edge_config(""), Ok(EdgeConfig::default()));
        assert_eq!(
            RawEdgeConfig::default().compile(),
            Ok(EdgeConfig::default())
        );
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let config = EdgeConfig::default();
        assert_eq!(config.name, "edge");
        assert_eq!(config.region, "local");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        let log = &config.log;
        assert_eq!(log.addr.to_string(), "127.0.0.1:7400");
        assert_eq!(log.server_name, "localhost");
        assert_eq!(log.ca, None);
        assert_eq!(log.request_timeout, Duration::from_secs(10));
        assert_eq!(log.reconnect_min, Duration::from_millis(100));
        assert_eq!(log.reconnect_max, Duration::from_secs(5));
        let limits = &config.limits;
        assert_eq!(limits.max_frame_bytes, 256 << 10);
        assert_eq!(limits.max_message_bytes, 64 << 10);
        assert_eq!(limits.max_channels_per_connection, 200);
        assert_eq!(limits.max_messages_per_publish, 100);
        assert_eq!(limits.max_inflight_publishes, 64);
        assert_eq!(limits.outbound_queue_bytes, 1 << 20);
        assert_eq!(limits.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(limits.min_heartbeat_interval, Duration::from_secs(5));
        assert_eq!(limits.max_heartbeat_interval, Duration::from_secs(120));
        assert_eq!(limits.idle_timeout, Duration::from_secs(45));
        assert_eq!(limits.connect_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_connections, 100_000);
        assert_eq!(limits.history_max_limit, 1000);
        assert!(config.keys.is_empty());
        assert!(config.admin_keys.is_empty());
        let functions = &config.functions;
        assert_eq!(functions.cache_dir, None);
        assert_eq!(functions.max_instances, 1000);
        assert_eq!(functions.max_memory_bytes, 64 << 20);
        assert!(functions.static_functions.is_empty());
    }

    #[test]
    fn example_file_compiles_to_the_defaults() {
        assert_eq!(load_edge_config(&example_path()), Ok(EdgeConfig::default()));
    }

    #[test]
    fn example_file_sets_every_key() {
        let text = example_with_optional_parts();
        let table: toml::Table = toml::from_str(&text).expect("example is valid TOML");
        let keys: &[&[&str]] = &[
            &["edge", "name"],
            &["edge", "region"],
            &["edge", "listen"],
            &["log", "addr"],
            &["log", "server_name"],
            &["log", "ca"],
            &["log", "request_timeout"],
            &["log", "reconnect_min"],
            &["log", "reconnect_max"],
            &["limits", "max_frame_bytes"],
            &["limits", "max_message_bytes"],
            &["limits", "max_channels_per_connection"],
            &["limits", "max_messages_per_publish"],
            &["limits", "max_inflight_publishes"],
            &["limits", "outbound_queue_bytes"],
            &["limits", "heartbeat_interval"],
            &["limits", "min_heartbeat_interval"],
            &["limits", "max_heartbeat_interval"],
            &["limits", "idle_timeout"],
            &["limits", "connect_timeout"],
            &["limits", "max_connections"],
            &["limits", "history_max_limit"],
            &["functions", "cache_dir"],
            &["functions", "max_instances"],
            &["functions", "max_memory"],
            &["health", "enabled"],
            &["health", "interval"],
            &["health", "timeout"],
            &["health", "rise"],
            &["health", "fall"],
            &["health", "drain_file"],
            &["health", "probe_key"],
            &["health", "max_load"],
            &["health", "max_event_loop_lag"],
            &["health", "drain_timeout"],
            &["health", "bird", "socket"],
            &["health", "bird", "timeout"],
            &["health", "bird", "protocols"],
            &["health", "bird", "prepend_protocols"],
            &["health", "bird", "action"],
            &["health", "bird", "min_announcing"],
            &["health", "dns", "report_urls"],
            &["health", "dns", "token"],
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
        let sample = table
            .get("keys")
            .and_then(toml::Value::as_array)
            .and_then(|keys| keys.first())
            .and_then(toml::Value::as_table)
            .expect("example has a [[keys]] sample");
        assert!(sample.contains_key("key") && sample.contains_key("capabilities"));
        let sample = table
            .get("admin_keys")
            .and_then(toml::Value::as_array)
            .and_then(|keys| keys.first())
            .and_then(toml::Value::as_table)
            .expect("example has an [[admin_keys]] sample");
        assert!(sample.contains_key("key"));
        let sample = table
            .get("functions")
            .and_then(|functions| functions.get("static"))
            .and_then(toml::Value::as_array)
            .and_then(|functions| functions.first())
            .and_then(toml::Value::as_table)
            .expect("example has a [[functions.static]] sample");
        for key in [
            "name", "path", "bind", "stage", "policy", "timeout", "memory", "order",
        ] {
            assert!(sample.contains_key(key), "the static sample lacks {key}");
        }
    }

    #[test]
    fn example_optional_parts_compile() {
        let config = parse_edge_config(&example_with_optional_parts())
            .expect("the example's optional parts are valid");
        assert!(config.log.ca.is_some());
        assert!(!config.keys.is_empty());
        let key = &config.keys[0];
        assert!(key.capabilities.allows("chat:lobby", Operation::Publish));
        assert!(!key.capabilities.allows("$functions", Operation::Subscribe));
        assert_eq!(
            config.functions.cache_dir,
            Some(PathBuf::from("/var/cache/tern/functions"))
        );
        let [function] = config.functions.static_functions.as_slice() else {
            panic!("the example has one static function sample");
        };
        assert_eq!(function.name.as_str(), "profanity");
        assert_eq!(function.path, PathBuf::from("functions/profanity.wasm"));
        // The sample spells out the defaults.
        let defaults = RawBindingSpec {
            bind: vec!["chat:*".into()],
            ..RawBindingSpec::default()
        };
        assert_eq!(
            Ok(&function.binding),
            defaults.compile("", DEFAULT_MAX_MEMORY_BYTES).as_ref()
        );
        assert_eq!(config.admin_keys.len(), 1);
        let admin = &config.admin_keys[0];
        assert!(
            config.authenticate_admin(&format!("{}.{}:{}", admin.app, admin.key_id, admin.secret))
        );
        let health = &config.health;
        assert!(!health.enabled);
        assert_eq!(health.drain_file, Some(PathBuf::from("/run/tern/drain")));
        let probe_key = health.probe_key.as_ref().expect("the probe key sample");
        assert!(config.authenticate(probe_key.expose()).is_some());
        // The samples spell out the defaults, but for the prepending protocol.
        let bird = health.bird.as_ref().expect("the [health.bird] sample");
        assert_eq!(
            *bird,
            BirdHealthConfig {
                prepend_protocols: vec!["anycast4_prepend".to_owned()],
                ..BirdHealthConfig::default()
            }
        );
        let urls: Vec<String> = health.report_urls().iter().map(|a| a.to_string()).collect();
        assert_eq!(urls, ["127.0.0.1:5380"]);
        // The same sample token as dns.toml's report_tokens (a test there checks).
        assert_eq!(
            health.report_token().map(crate::ReportToken::expose),
            Some("change-me-to-the-output-of-openssl-rand-hex-32")
        );
    }

    #[test]
    fn a_missing_file_is_one_problem_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("absent.toml");
        let error = load_edge_config(&path).expect_err("file is absent");
        assert_eq!(error.problems.len(), 1);
        assert_eq!(error.problems[0].path, path.display().to_string());
        assert!(error.problems[0].message.starts_with("cannot read: "));
    }

    #[test]
    fn keys_are_found_and_authenticated() {
        let text = r#"
            [[keys]]
            key = "shop.k1:0123456789abcdef"
            capabilities = { "*" = ["subscribe"] }
            [[keys]]
            key = "blog.k2:fedcba9876543210"
            capabilities = { "posts:*" = ["*"] }
        "#;
        let config = parse_edge_config(text).expect("valid");
        assert_eq!(config.find_key("k1").map(|k| k.app.as_str()), Some("shop"));
        assert_eq!(config.find_key("k2").map(|k| k.app.as_str()), Some("blog"));
        assert!(config.find_key("k3").is_none());
        let key = config
            .authenticate("blog.k2:fedcba9876543210")
            .expect("right key");
        assert_eq!(key.key_id, "k2");
        assert_eq!(key.capabilities.granted("posts:1"), Operations::ALL);
        assert!(config.authenticate("blog.k2:fedcba9876543211").is_none());
        assert!(config.authenticate("shop.k2:fedcba9876543210").is_none());
        assert!(config.authenticate("blog.k3:fedcba9876543210").is_none());
        assert!(config.authenticate("blog.k2").is_none());
    }

    #[test]
    fn admin_keys_authenticate_only_the_admin_api() {
        let text = r#"
            [[keys]]
            key = "shop.web:0123456789abcdef"
            capabilities = { "*" = ["subscribe"] }
            [[admin_keys]]
            key = "ops.deploy:fedcba9876543210"
            [[admin_keys]]
            key = "ops.ci:ci-secret-0123456789"
        "#;
        let config = parse_edge_config(text).expect("valid");
        assert_eq!(config.admin_keys.len(), 2);
        assert_eq!(config.admin_keys[0].capabilities, Capabilities::default());
        assert!(config.authenticate_admin("ops.deploy:fedcba9876543210"));
        assert!(config.authenticate_admin("ops.ci:ci-secret-0123456789"));
        // Wrong secret, app, id or shape.
        assert!(!config.authenticate_admin("ops.deploy:fedcba9876543211"));
        assert!(!config.authenticate_admin("ops.deploy:fedcba987654321"));
        assert!(!config.authenticate_admin("dev.deploy:fedcba9876543210"));
        assert!(!config.authenticate_admin("ops.ci:fedcba9876543210"));
        assert!(!config.authenticate_admin("ops.deploy"));
        assert!(!config.authenticate_admin(""));
        // A client key is not an admin key, and the other way round.
        assert!(!config.authenticate_admin("shop.web:0123456789abcdef"));
        assert!(config.authenticate("ops.deploy:fedcba9876543210").is_none());
        assert!(config.authenticate("shop.web:0123456789abcdef").is_some());
        // The secret stays out of Debug output.
        assert!(!format!("{config:?}").contains("fedcba9876543210"));
    }
}
