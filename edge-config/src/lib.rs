//! `tern-config`: Tern's typed configuration, read from TOML and validated in one pass
//! that reports every problem at once.
//!
//! Config goes through two stages, as in vector:
//!
//! ```text
//! TOML text ──toml + serde──▶ Raw*Config ──compile()──▶ LogNodeConfig / EdgeConfig /
//!                                                      DnsConfig
//!             syntax, unknown     every field       validated, defaults filled in
//!             keys, wrong types   optional, units   and every problem reported as
//!             (first one, with    kept as written   `store.segment_bytes: 512 is
//!             line and column)                      below the minimum of 65536`
//! ```
//!
//! Three configs live here:
//!
//! - [`log`]: a log node ([`LogNodeConfig`], with [`StoreConfig`], [`FsyncPolicy`],
//!   [`RetentionConfig`], [`DedupeConfig`], [`LinkServerConfig`]);
//!   `examples/log.toml` lists every key with its default.
//! - [`edge`]: an edge ([`EdgeConfig`], with [`LinkClientConfig`] for the way to its log
//!   node, [`EdgeLimitsConfig`] for client connections, and the [`ApiKey`]s clients
//!   authenticate with: [`Capabilities`] map [`ChannelPattern`]s to [`Operations`],
//!   and [`EdgeConfig::authenticate`] checks a presented key in constant time; admin
//!   keys are checked by [`EdgeConfig::authenticate_admin`]), and its message functions
//!   ([`FunctionsConfig`] with its [`StaticFunction`]s; a [`RawBindingSpec`] compiles
//!   into a [`BindingSpec`]: [`BindingPattern`]s, [`Stage`], [`FailurePolicy`], time and
//!   memory limits, the same for static functions and live deploys), and its anycast
//!   health loop ([`HealthConfig`] with [`BirdHealthConfig`] and [`DnsReportConfig`]);
//!   `examples/edge.toml` lists every key with its default.
//! - [`dns`]: the authoritative DNS server of `tern dns` ([`DnsConfig`]: the answered
//!   [`DnsName`] and its zone, TTL, the health report listener and the
//!   [`ReportToken`]s it accepts (an edge sends its own in [`DnsReportConfig`]),
//!   [`PopConfig`]s with their client [`IpSubnet`]s, [`PopEdge`]s and neighbors, and
//!   the static fallback set);
//!   `examples/dns.toml` documents every key. Unlike the others an empty file is not
//!   valid: `name`, `fallback` and one POP are required.
//!
//! In all of them:
//!
//! - Raw structs ([`log::RawLogNodeConfig`], [`edge::RawEdgeConfig`],
//!   [`dns::RawDnsConfig`] and their sections)
//!   mirror the file, reject unknown keys, and document each key's unit, default and
//!   bounds.
//! - Compiled structs hold checked values in real types (`Duration`, `SocketAddr`, byte
//!   counts); their `Default` (not for [`DnsConfig`]) is the config of an empty file,
//!   so tests can build them directly.
//! - [`ConfigError`] lists every [`Problem`] with its path; its fault is always the
//!   operator's config, and retrying the same input cannot help. Problems about an API
//!   key never quote it (it holds the secret), and `ApiKey`'s `Debug` hides the secret.
//!
//! In TOML, durations are humantime strings (`"10ms"`, `"24h"`, `"7days"`) and byte sizes
//! are integers or strings with a unit (`"64KiB"`, `"128MiB"`, `"500kB"` = 500 000).
//!
//! This crate does not open files beyond reading the one it is given (not even
//! `log.ca`), create `data_dir`, bind `listen`, watch for changes, or merge several
//! sources (environment, flags): binaries do that before or after calling
//! [`load_log_config`] / [`parse_log_config`], [`load_edge_config`] /
//! [`parse_edge_config`] or [`load_dns_config`] / [`parse_dns_config`].

mod check;
pub mod dns;
pub mod edge;
mod error;
pub mod log;
mod source;
mod token;
mod units;

pub use dns::{
    DnsConfig, DnsName, IpSubnet, NetParseError, PopConfig, PopEdge, load_dns_config,
    parse_dns_config,
};
pub use edge::{
    AnycastActionConfig, ApiKey, BindingPattern, BindingSpec, BirdHealthConfig, Capabilities,
    ChannelPattern, ClusterConfig, ClusterSecret, DnsReportConfig, EdgeConfig, EdgeLimitsConfig,
    FailurePolicy, FunctionName, FunctionsConfig, HealthConfig, HealthRunner, LinkClientConfig,
    LoadRatio, Operation, Operations, PatternError, ProbeKey, RawBindingSpec, Stage,
    StaticFunction, load_edge_config, parse_edge_config,
};
pub use error::{ConfigError, Problem};
pub use log::{
    DedupeConfig, FsyncPolicy, LinkServerConfig, LogNodeConfig, RetentionConfig, StoreConfig,
    load_log_config, parse_log_config,
};
pub use token::{REPORT_TOKEN_BYTES, ReportToken};
pub use units::RawByteSize;
