//! `[health]`: the edge's anycast health loop (run by `tern edge`, built in
//! `tern-health`): how often it probes the edge and how long a probe may take, the
//! ExaBGP-style `rise`/`fall` counts, the drain file, the API key the WebSocket probe
//! CONNECTs with, the load limits, the BIRD it drives (`[health.bird]`), the `tern dns`
//! servers it reports to (`[health.dns]`) and how long a SIGTERM waits for clients.
//!
//! Off by default (`enabled = false`): an edge without the section behaves as before.
//! The section is checked either way, so a config is known good before it is switched
//! on; only `probe_key` is required, and only when `enabled`.
//!
//! ```text
//! [health]                       runner, interval, timeout, rise, fall, drain_file, probe_key,
//!                                max_load, max_event_loop_lag, drain_timeout
//! [health.bird]  (optional)      socket, timeout, protocols, prepend_protocols, action,
//!                                min_announcing
//! [health.dns]   (optional)      report_urls, token
//! ```
//!
//! This crate does not depend on `tern-health`: [`HealthConfig`] is plain data, and
//! `tern-health` turns it into its own settings.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::keys::ApiKey;
use crate::check::{duration, in_range};
use crate::error::Problems;
use crate::token::{ReportToken, loopback, report_token};

/// Debian's `bird2` control socket, the default of `[health.bird] socket`.
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";

const INTERVAL: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(60);
const TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(60);
const COUNT: RangeInclusive<u64> = 1..=1000;
const EVENT_LOOP_LAG: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(60);
const DRAIN_TIMEOUT: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);
const BIRD_TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(60);
const MIN_ANNOUNCING: RangeInclusive<u64> = 0..=1000;
/// Longest BIRD protocol name, as BIRD symbols go in `tern-health`.
const MAX_PROTOCOL_CHARS: usize = 64;
/// Most DNS report URLs.
const MAX_REPORT_URLS: usize = 32;

/// The health loop of an edge (TOML: `[health]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Whether the edge has a health loop. Default false.
    pub enabled: bool,
    /// Which process runs the probes and the BIRD and DNS actions. Default
    /// [`HealthRunner::Edge`].
    pub runner: HealthRunner,
    /// Time between the starts of two probes. Default 1s; 100ms..=1min.
    pub interval: Duration,
    /// Longest one probe's checks may take (each check fails past it), and one DNS
    /// report. Default 1s; 10ms..=1min, at most `interval`.
    pub timeout: Duration,
    /// Good probes in a row that bring a down edge up. Default 3; 1..=1000.
    pub rise: u32,
    /// Bad probes in a row that take an up edge down. Default 2; 1..=1000.
    pub fall: u32,
    /// While this file exists the edge is drained (disabled): out of anycast and DNS,
    /// its clients sent elsewhere; it must rise again once the file is gone. Default
    /// none.
    pub drain_file: Option<PathBuf>,
    /// The key the WebSocket probe CONNECTs with: one of the edge's `[[keys]]`.
    /// Required when `enabled`.
    pub probe_key: Option<ProbeKey>,
    /// Open connections over `limits.max_connections` above which the load check
    /// fails. Default 0.95; more than 0, at most 1.
    pub max_load: LoadRatio,
    /// Lateness of a timer on the edge's runtime above which the load check fails.
    /// Default 500ms; 1ms..=1min.
    pub max_event_loop_lag: Duration,
    /// How long a SIGTERM waits for clients to leave after telling them to go
    /// elsewhere. Default 10s; 0s..=1h.
    pub drain_timeout: Duration,
    /// The BIRD announcing the anycast prefix (TOML: `[health.bird]`). Default none:
    /// no anycast action.
    pub bird: Option<BirdHealthConfig>,
    /// The `tern dns` servers to report to (TOML: `[health.dns]`). Default none.
    pub dns: Option<DnsReportConfig>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            runner: HealthRunner::Edge,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 3,
            fall: 2,
            drain_file: None,
            probe_key: None,
            max_load: LoadRatio::DEFAULT,
            max_event_loop_lag: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(10),
            bird: None,
            dns: None,
        }
    }
}

impl HealthConfig {
    /// The DNS report URLs (`http://IP:PORT` listeners of `tern dns`); empty without
    /// `[health.dns]`.
    pub fn report_urls(&self) -> &[SocketAddr] {
        self.dns.as_ref().map_or(&[], |dns| &dns.report_urls)
    }

    /// The token sent to `tern dns` with every report and table read; `None` without
    /// `[health.dns]` or without its `token`.
    pub fn report_token(&self) -> Option<&ReportToken> {
        self.dns.as_ref().and_then(|dns| dns.token.as_ref())
    }
}

/// Which process runs the health loop (TOML: `runner`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthRunner {
    /// `"edge"`: `tern edge` probes itself and drives BIRD and the DNS reports. When
    /// the edge process dies or freezes, nothing withdraws its route. The default.
    #[default]
    Edge,
    /// `"tern-health"`: a `tern health --config` process alongside the edge (same
    /// config file) probes it from outside and drives BIRD and the DNS reports, so a
    /// killed or frozen edge is withdrawn after `fall` probes. `tern edge` then only
    /// handles the drain file and SIGTERM for its clients, and answers `/readyz` 503
    /// while it shuts down, which `tern health` takes as a drain.
    TernHealth,
}

impl fmt::Display for HealthRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthRunner::Edge => "edge",
            HealthRunner::TernHealth => "tern-health",
        })
    }
}

/// The probe's API key, `app.keyid:secret`. `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ProbeKey(String);

impl ProbeKey {
    /// Wraps `key` (not checked: [`RawHealthConfig`] checks it is one of `[[keys]]`).
    pub fn new(key: &str) -> Self {
        Self(key.to_owned())
    }

    /// The key as a client presents it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProbeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProbeKey(…)")
    }
}

/// A share of capacity, kept in millionths so that the config stays `Eq` and the
/// comparison is exact integer arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LoadRatio(u32);

impl LoadRatio {
    /// The default `max_load`, 0.95.
    pub const DEFAULT: LoadRatio = LoadRatio(950_000);
    const ONE: u32 = 1_000_000;

    /// `ratio` rounded to millionths, if it is more than 0 and at most 1.
    pub fn new(ratio: f64) -> Option<LoadRatio> {
        if !(ratio > 0.0 && ratio <= 1.0) {
            return None;
        }
        // In (0, 1e6]: the cast cannot overflow.
        let millionths = (ratio * f64::from(Self::ONE)).round() as u32;
        (millionths > 0).then_some(LoadRatio(millionths))
    }

    /// The ratio.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(Self::ONE)
    }

    /// Whether `used` of `capacity` is above this ratio.
    pub fn exceeded(self, used: u64, capacity: u64) -> bool {
        u128::from(used) * u128::from(Self::ONE) > u128::from(self.0) * u128::from(capacity)
    }
}

impl fmt::Display for LoadRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

/// What an edge that is not up does with its anycast prefix (TOML: `action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnycastActionConfig {
    /// `"withdraw"`: stop announcing. The default.
    #[default]
    Withdraw,
    /// `"deprefer"`: announce with a prepended AS path through `prepend_protocols`.
    Deprefer,
}

/// `[health.bird]`: the BIRD that announces the anycast prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdHealthConfig {
    /// BIRD's control socket. Default [`DEFAULT_BIRD_SOCKET`].
    pub socket: PathBuf,
    /// Longest one BIRD command may take. Default 2s; 100ms..=1min.
    pub timeout: Duration,
    /// Static protocols announcing the prefix plainly, enabled when up. Default
    /// `["anycast4"]`; at least one.
    pub protocols: Vec<String>,
    /// Static protocols announcing it with a prepended AS path, enabled when down with
    /// `action = "deprefer"`. Default none; at least one with `deprefer`.
    pub prepend_protocols: Vec<String>,
    /// What to do when not up. Default withdraw.
    pub action: AnycastActionConfig,
    /// Never withdraw when fewer than this many sites would still announce; 0 turns
    /// the guard off. The announcing sites are this one and the other edges `up` in
    /// the health table of the first `[health.dns]` server that answers; when none
    /// answers, nothing is withdrawn. Default 1; 0..=1000, and above 0 it needs
    /// `[health.dns] report_urls`.
    pub min_announcing: u32,
}

impl Default for BirdHealthConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_BIRD_SOCKET),
            timeout: Duration::from_secs(2),
            protocols: vec!["anycast4".to_owned()],
            prepend_protocols: Vec::new(),
            action: AnycastActionConfig::Withdraw,
            min_announcing: 1,
        }
    }
}

/// `[health.dns]`: the `tern dns` servers the edge reports its state to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsReportConfig {
    /// Their report listeners (`report_listen` of each `tern dns`), written
    /// `http://IP:PORT`; each gets `POST /v1/health` every interval. At least one, at
    /// most 32, no duplicates.
    pub report_urls: Vec<SocketAddr>,
    /// Sent as `Authorization: Bearer TOKEN` with every report and every read of the
    /// health table: one of the `report_tokens` of each `tern dns` (the top level's,
    /// or this edge's own in its `[[pops.edges]]`). Required when a
    /// report URL is not a loopback address (such a `tern dns` refuses reports without
    /// one); default none.
    pub token: Option<ReportToken>,
}

/// `[health]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthConfig {
    /// Run the health loop. Default false.
    pub enabled: Option<bool>,
    /// `"edge"` or `"tern-health"`. Default `"edge"`.
    pub runner: Option<String>,
    /// Duration between probe starts. Default `"1s"`; 100ms..=1min.
    pub interval: Option<String>,
    /// Longest a probe (and a DNS report) may take (duration). Default `"1s"`;
    /// 10ms..=1min, at most `interval`.
    pub timeout: Option<String>,
    /// Good probes in a row to come up. Default 3; 1..=1000.
    pub rise: Option<i64>,
    /// Bad probes in a row to go down. Default 2; 1..=1000.
    pub fall: Option<i64>,
    /// The drain file's path. Default none.
    pub drain_file: Option<PathBuf>,
    /// `"app.keyid:secret"`, one of `[[keys]]`. Required when `enabled`.
    pub probe_key: Option<String>,
    /// Connections over `limits.max_connections` above which the load check fails.
    /// Default 0.95; more than 0, at most 1.
    pub max_load: Option<RawRatio>,
    /// Timer lateness above which the load check fails (duration). Default `"500ms"`;
    /// 1ms..=1min.
    pub max_event_loop_lag: Option<String>,
    /// How long SIGTERM waits for clients to leave (duration). Default `"10s"`;
    /// 0s..=1h.
    pub drain_timeout: Option<String>,
    /// `[health.bird]`. Default none.
    pub bird: Option<RawBirdHealthConfig>,
    /// `[health.dns]`. Default none.
    pub dns: Option<RawDnsReportConfig>,
}

/// A TOML number kept as written until `compile()` checks it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(transparent)]
pub struct RawRatio(pub f64);

impl PartialEq for RawRatio {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for RawRatio {}

/// `[health.bird]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBirdHealthConfig {
    /// BIRD's control socket. Default `"/run/bird/bird.ctl"`.
    pub socket: Option<PathBuf>,
    /// Longest one BIRD command may take (duration). Default `"2s"`; 100ms..=1min.
    pub timeout: Option<String>,
    /// Static protocols announcing the prefix. Default `["anycast4"]`.
    pub protocols: Option<Vec<String>>,
    /// Static protocols announcing it with a prepended AS path. Default none.
    pub prepend_protocols: Option<Vec<String>>,
    /// `"withdraw"` or `"deprefer"`. Default `"withdraw"`.
    pub action: Option<String>,
    /// The guard's floor of announcing sites; 0 turns it off. Default 1; 0..=1000.
    pub min_announcing: Option<i64>,
}

/// `[health.dns]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsReportConfig {
    /// `http://IP:PORT` of each `tern dns` report listener. Required, 1 to 32.
    pub report_urls: Option<Vec<String>>,
    /// One of the `report_tokens` of each `tern dns` (the top level's, or this edge's
    /// own in its `[[pops.edges]]`): 32 to 256 visible ASCII characters. Required when
    /// a report URL is not loopback; default none.
    pub token: Option<String>,
}

impl RawHealthConfig {
    /// Checks every value, reporting each problem under `health.…`; `keys` are the
    /// compiled `[[keys]]` (the probe key must be one of them).
    pub(crate) fn compile(&self, keys: &[ApiKey], problems: &mut Problems) -> HealthConfig {
        let defaults = HealthConfig::default();
        let enabled = self.enabled.unwrap_or(defaults.enabled);
        let runner = match self.runner.as_deref() {
            None => defaults.runner,
            Some("edge") => HealthRunner::Edge,
            Some("tern-health") => HealthRunner::TernHealth,
            Some(other) => {
                problems.push(
                    "health.runner",
                    format!("{other:?} is not a runner: \"edge\" or \"tern-health\""),
                );
                defaults.runner
            }
        };
        let interval = duration(
            problems,
            "health.interval",
            self.interval.as_deref(),
            defaults.interval,
            INTERVAL,
        );
        let timeout = duration(
            problems,
            "health.timeout",
            self.timeout.as_deref(),
            defaults.timeout,
            TIMEOUT,
        );
        if let (Some(interval), Some(timeout)) = (interval, timeout)
            && timeout > interval
        {
            problems.push(
                "health.timeout",
                format!(
                    "{} is longer than health.interval ({}): probes would overlap",
                    crate::units::show_duration(timeout),
                    crate::units::show_duration(interval)
                ),
            );
        }
        let rise = count_u32(problems, "health.rise", self.rise, defaults.rise, COUNT);
        let fall = count_u32(problems, "health.fall", self.fall, defaults.fall, COUNT);
        let drain_file = match &self.drain_file {
            Some(path) if path.as_os_str().is_empty() => {
                problems.push("health.drain_file", "must not be empty");
                None
            }
            other => other.clone(),
        };
        let probe_key = self.compile_probe_key(enabled, keys, problems);
        let max_load = match self.max_load {
            None => Some(defaults.max_load),
            Some(RawRatio(ratio)) => LoadRatio::new(ratio).or_else(|| {
                problems.push(
                    "health.max_load",
                    format!("{ratio} is not a share of capacity: more than 0, at most 1"),
                );
                None
            }),
        };
        let max_event_loop_lag = duration(
            problems,
            "health.max_event_loop_lag",
            self.max_event_loop_lag.as_deref(),
            defaults.max_event_loop_lag,
            EVENT_LOOP_LAG,
        );
        let drain_timeout = duration(
            problems,
            "health.drain_timeout",
            self.drain_timeout.as_deref(),
            defaults.drain_timeout,
            DRAIN_TIMEOUT,
        );
        // The guard needs somewhere to count sites: any report URL written will do
        // here (a bad one is reported under health.dns).
        let reports = self
            .dns
            .as_ref()
            .and_then(|dns| dns.report_urls.as_ref())
            .is_some_and(|urls| !urls.is_empty());
        let bird = self
            .bird
            .as_ref()
            .map(|bird| bird.compile(reports, problems));
        let dns = self.dns.as_ref().map(|dns| dns.compile(problems));
        HealthConfig {
            enabled,
            runner,
            interval: interval.unwrap_or(defaults.interval),
            timeout: timeout.unwrap_or(defaults.timeout),
            rise: rise.unwrap_or(defaults.rise),
            fall: fall.unwrap_or(defaults.fall),
            drain_file,
            probe_key,
            max_load: max_load.unwrap_or(defaults.max_load),
            max_event_loop_lag: max_event_loop_lag.unwrap_or(defaults.max_event_loop_lag),
            drain_timeout: drain_timeout.unwrap_or(defaults.drain_timeout),
            bird,
            dns,
        }
    }

    fn compile_probe_key(
        &self,
        enabled: bool,
        keys: &[ApiKey],
        problems: &mut Problems,
    ) -> Option<ProbeKey> {
        let Some(text) = self.probe_key.as_deref() else {
            if enabled {
                problems.push(
                    "health.probe_key",
                    "is required when health.enabled: one of [[keys]], \"app.keyid:secret\", that the WebSocket probe CONNECTs with",
                );
            }
            return None;
        };
        // Never quote the key: it holds the secret.
        let known = keys
            .iter()
            .any(|key| text == format!("{}.{}:{}", key.app, key.key_id, key.secret));
        if known {
            Some(ProbeKey::new(text))
        } else {
            problems.push(
                "health.probe_key",
                "is not one of [[keys]]: the probe CONNECTs with it like a client",
            );
            None
        }
    }
}

impl RawBirdHealthConfig {
    fn compile(&self, reports: bool, problems: &mut Problems) -> BirdHealthConfig {
        let defaults = BirdHealthConfig::default();
        let socket = match &self.socket {
            Some(path) if path.as_os_str().is_empty() => {
                problems.push("health.bird.socket", "must not be empty");
                None
            }
            other => other.clone(),
        };
        let timeout = duration(
            problems,
            "health.bird.timeout",
            self.timeout.as_deref(),
            defaults.timeout,
            BIRD_TIMEOUT,
        );
        let protocols = protocol_list(
            problems,
            "health.bird.protocols",
            self.protocols.as_ref(),
            &defaults.protocols,
        );
        let prepend_protocols = protocol_list(
            problems,
            "health.bird.prepend_protocols",
            self.prepend_protocols.as_ref(),
            &defaults.prepend_protocols,
        );
        if self.protocols.as_ref().is_some_and(Vec::is_empty) {
            problems.push(
                "health.bird.protocols",
                "is empty: name the static protocol(s) holding the anycast prefix",
            );
        }
        for name in &prepend_protocols {
            if protocols.contains(name) {
                problems.push(
                    "health.bird.prepend_protocols",
                    format!("{name:?} is also in health.bird.protocols"),
                );
            }
        }
        let action = match self.action.as_deref() {
            None => Some(defaults.action),
            Some("withdraw") => Some(AnycastActionConfig::Withdraw),
            Some("deprefer") => Some(AnycastActionConfig::Deprefer),
            Some(other) => {
                problems.push(
                    "health.bird.action",
                    format!("{other:?} is not an action: use \"withdraw\" or \"deprefer\""),
                );
                None
            }
        };
        if action == Some(AnycastActionConfig::Deprefer) && prepend_protocols.is_empty() {
            problems.push(
                "health.bird.prepend_protocols",
                "is empty: action \"deprefer\" announces through them when the edge is down",
            );
        }
        let min_announcing = count_u32(
            problems,
            "health.bird.min_announcing",
            self.min_announcing,
            defaults.min_announcing,
            MIN_ANNOUNCING,
        );
        if let Some(min) = min_announcing
            && min > 0
            && !reports
        {
            problems.push(
                "health.bird.min_announcing",
                format!(
                    "{min} needs [health.dns] report_urls: the guard counts announcing sites in tern dns's health table (set 0 to turn the guard off)"
                ),
            );
        }
        BirdHealthConfig {
            socket: socket.unwrap_or(defaults.socket),
            timeout: timeout.unwrap_or(defaults.timeout),
            protocols,
            prepend_protocols,
            action: action.unwrap_or(defaults.action),
            min_announcing: min_announcing.unwrap_or(defaults.min_announcing),
        }
    }
}

impl RawDnsReportConfig {
    fn compile(&self, problems: &mut Problems) -> DnsReportConfig {
        const PATH: &str = "health.dns.report_urls";
        let Some(raw) = &self.report_urls else {
            problems.push(
                PATH,
                "is required in [health.dns]: the report listeners of tern dns, like [\"http://127.0.0.1:5380\"]",
            );
            return DnsReportConfig::default();
        };
        if raw.is_empty() {
            problems.push(PATH, "is empty: name at least one tern dns report listener");
        }
        if raw.len() > MAX_REPORT_URLS {
            problems.push(
                PATH,
                format!("lists {}; at most {MAX_REPORT_URLS}", raw.len()),
            );
        }
        let mut report_urls = Vec::with_capacity(raw.len());
        for (i, text) in raw.iter().enumerate() {
            let path = format!("{PATH}[{i}]");
            match report_url(text) {
                Ok(addr) if report_urls.contains(&addr) => {
                    problems.push(&path, format!("{text:?} is listed twice"));
                }
                Ok(addr) => report_urls.push(addr),
                Err(message) => problems.push(&path, message),
            }
        }
        let token = self
            .token
            .as_deref()
            .and_then(|text| report_token(problems, "health.dns.token", text));
        if self.token.is_none()
            && let Some(url) = report_urls.iter().find(|url| !loopback(url))
        {
            problems.push(
                "health.dns.token",
                format!(
                    "is required: report URL http://{url} is not a loopback address, and such a tern dns refuses reports without one of its report_tokens"
                ),
            );
        }
        DnsReportConfig { report_urls, token }
    }
}

/// Parses `http://IP:PORT` (an optional trailing `/`).
fn report_url(text: &str) -> Result<SocketAddr, String> {
    const EXAMPLE: &str = "expected http://IP:PORT like \"http://127.0.0.1:5380\"";
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(format!("{text:?} is not an http:// URL: {EXAMPLE}"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    match authority.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => Err(format!("{text:?}: port 0 cannot be reached")),
        Ok(addr) => Ok(addr),
        Err(_) => Err(format!(
            "{text:?}: {authority:?} is not IP:PORT (host names are not resolved, paths are not allowed): {EXAMPLE}"
        )),
    }
}

/// A list of BIRD protocol names: `default` when absent; each a plain BIRD symbol,
/// none twice.
fn protocol_list(
    problems: &mut Problems,
    path: &str,
    raw: Option<&Vec<String>>,
    default: &[String],
) -> Vec<String> {
    let Some(raw) = raw else {
        return default.to_vec();
    };
    let mut names: Vec<String> = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        let item = format!("{path}[{i}]");
        if !is_bird_symbol(name) {
            problems.push(
                &item,
                format!(
                    "{name:?} is not a BIRD protocol name: a letter or `_`, then letters, digits or `_`, at most {MAX_PROTOCOL_CHARS}"
                ),
            );
        } else if names.contains(name) {
            problems.push(&item, format!("{name:?} is listed twice"));
        } else {
            names.push(name.clone());
        }
    }
    names
}

/// The names `tern-health` sends to BIRD as they are (no quoting or wildcards needed).
fn is_bird_symbol(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_PROTOCOL_CHARS
}

/// A count in `range` (which fits `u32`), `default` when absent.
fn count_u32(
    problems: &mut Problems,
    path: &str,
    raw: Option<i64>,
    default: u32,
    range: RangeInclusive<u64>,
) -> Option<u32> {
    let Some(raw) = raw else {
        return Some(default);
    };
    let Ok(n) = u64::try_from(raw) else {
        problems.push(path, format!("{raw} is negative"));
        return None;
    };
    let n = in_range(problems, path, n, &range, |n| n.to_string())?;
    u32::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::parse_edge_config;

    const KEY: &str = "app.probe:probe-secret-0123456789";

    fn with_key(health: &str) -> String {
        format!(
            "[[keys]]\nkey = \"{KEY}\"\ncapabilities = {{ \"health:*\" = [\"subscribe\"] }}\n{health}"
        )
    }

    fn problems(text: &str) -> Vec<String> {
        parse_edge_config(text)
            .expect_err("config is invalid")
            .problems
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_values_and_off() {
        let health = HealthConfig::default();
        assert!(!health.enabled);
        assert_eq!(health.runner, HealthRunner::Edge);
        assert_eq!(health.interval, Duration::from_secs(1));
        assert_eq!(health.timeout, Duration::from_secs(1));
        assert_eq!((health.rise, health.fall), (3, 2));
        assert_eq!(health.drain_file, None);
        assert_eq!(health.probe_key, None);
        assert_eq!(health.max_load.as_f64(), 0.95);
        assert_eq!(health.max_event_loop_lag, Duration::from_millis(500));
        assert_eq!(health.drain_timeout, Duration::from_secs(10));
        assert_eq!((health.bird.as_ref(), health.dns.as_ref()), (None, None));
        assert!(health.report_urls().is_empty());
        let bird = BirdHealthConfig::default();
        assert_eq!(bird.socket, PathBuf::from("/run/bird/bird.ctl"));
        assert_eq!(bird.timeout, Duration::from_secs(2));
        assert_eq!(bird.protocols, ["anycast4"]);
        assert!(bird.prepend_protocols.is_empty());
        assert_eq!(bird.action, AnycastActionConfig::Withdraw);
        assert_eq!(bird.min_announcing, 1);
        assert_eq!(
            parse_edge_config("[health]").map(|c| c.health),
            Ok(HealthConfig::default())
        );
    }

    #[test]
    fn an_unknown_runner_is_named() {
        assert_eq!(
            problems("[health]\nrunner = \"birdc\""),
            ["health.runner: \"birdc\" is not a runner: \"edge\" or \"tern-health\""]
        );
    }

    #[test]
    fn a_full_section_compiles_into_its_types() {
        let text = with_key(&format!(
            r#"
            [health]
            enabled = true
            runner = "tern-health"
            interval = "500ms"
            timeout = "200ms"
            rise = 2
            fall = 1
            drain_file = "/run/tern/drain"
            probe_key = "{KEY}"
            max_load = 0.8
            max_event_loop_lag = "250ms"
            drain_timeout = "0s"
            [health.bird]
            socket = "/tmp/bird.ctl"
            timeout = "1s"
            protocols = ["anycast4", "anycast6"]
            prepend_protocols = ["anycast4_prepend"]
            action = "deprefer"
            min_announcing = 2
            [health.dns]
            report_urls = ["http://127.0.0.1:5380", "http://[::1]:5381/"]
            token = "0123456789abcdef0123456789abcdef"
            "#
        ));
        let health = parse_edge_config(&text).expect("valid").health;
        assert!(health.enabled);
        assert_eq!(health.runner, HealthRunner::TernHealth);
        assert_eq!(health.interval, Duration::from_millis(500));
        assert_eq!(health.timeout, Duration::from_millis(200));
        assert_eq!((health.rise, health.fall), (2, 1));
        assert_eq!(health.drain_file, Some(PathBuf::from("/run/tern/drain")));
        assert_eq!(health.probe_key.as_ref().map(ProbeKey::expose), Some(KEY));
        assert_eq!(health.max_load, LoadRatio::new(0.8).expect("valid"));
        assert_eq!(health.max_event_loop_lag, Duration::from_millis(250));
        assert_eq!(health.drain_timeout, Duration::ZERO);
        let bird = health.bird.as_ref().expect("bird section");
        assert_eq!(bird.socket, PathBuf::from("/tmp/bird.ctl"));
        assert_eq!(bird.protocols, ["anycast4", "anycast6"]);
        assert_eq!(bird.prepend_protocols, ["anycast4_prepend"]);
        assert_eq!(bird.action, AnycastActionConfig::Deprefer);
        assert_eq!(bird.min_announcing, 2);
        let urls: Vec<String> = health.report_urls().iter().map(|a| a.to_string()).collect();
        assert_eq!(urls, ["127.0.0.1:5380", "[::1]:5381"]);
        assert_eq!(
            health.report_token().map(ReportToken::expose),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(!format!("{health:?}").contains("probe-secret"));
        assert!(!format!("{health:?}").contains("0123456789"));
    }

    #[test]
    fn the_report_token_is_required_off_loopback_and_never_quoted() {
        const TOKEN: &str = "0123456789abcdef0123456789abcdef";
        let dns = |urls: &str, token: Option<&str>| {
            let token = token.map_or(String::new(), |t| format!("token = {t:?}\n"));
            with_key(&format!("[health.dns]\nreport_urls = {urls}\n{token}"))
        };
        // Loopback only: optional, and sent when set.
        let config = parse_edge_config(&dns(
            r#"["http://127.0.0.1:5380", "http://[::1]:5380"]"#,
            None,
        ))
        .expect("valid without a token");
        assert_eq!(config.health.report_token(), None);
        let config = parse_edge_config(&dns(r#"["http://10.0.0.53:5380"]"#, Some(TOKEN)))
            .expect("valid with a token");
        assert!(
            config
                .health
                .report_token()
                .is_some_and(|t| t.matches(TOKEN.as_bytes()))
        );
        let cases = [
            (
                dns(
                    r#"["http://127.0.0.1:5380", "http://10.0.0.53:5380"]"#,
                    None,
                ),
                "health.dns.token: is required: report URL http://10.0.0.53:5380 is not a loopback address",
            ),
            (
                dns(r#"["http://127.0.0.1:5380"]"#, Some(&TOKEN[1..])),
                "health.dns.token: is 31 characters; a token is 32 to 256",
            ),
            (
                dns(r#"["http://127.0.0.1:5380"]"#, Some(&format!("{TOKEN}\n"))),
                "health.dns.token: holds a character other than visible ASCII at byte 32",
            ),
        ];
        for (text, expected) in &cases {
            let found = problems(text);
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert!(
                found[0].starts_with(expected),
                "{text}\n  got:  {}\n  want: {expected}…",
                found[0]
            );
            assert!(
                !found[0].contains("0123456789"),
                "quotes the token: {}",
                found[0]
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_without_quoting_the_key() {
        let text = with_key(
            r#"
            [health]
            enabled = true
            interval = "50ms"
            timeout = "2s"
            rise = 0
            fall = -1
            drain_file = ""
            max_load = 1.5
            max_event_loop_lag = "2min"
            drain_timeout = "forever"
            [health.bird]
            socket = ""
            protocols = ["anycast4", "any cast", "anycast4"]
            prepend_protocols = ["anycast4"]
            action = "flap"
            min_announcing = 1
            [health.dns]
            report_urls = ["https://127.0.0.1:5380", "http://dns.local:5380", "http://127.0.0.1:0"]
            "#,
        );
        let found = problems(&text);
        let paths: Vec<&str> = found
            .iter()
            .map(|p| p.split_once(": ").map_or(p.as_str(), |(path, _)| path))
            .collect();
        assert_eq!(
            paths,
            [
                "health.interval",
                "health.rise",
                "health.fall",
                "health.drain_file",
                "health.probe_key",
                "health.max_load",
                "health.max_event_loop_lag",
                "health.drain_timeout",
                "health.bird.socket",
                "health.bird.protocols[1]",
                "health.bird.protocols[2]",
                "health.bird.prepend_protocols",
                "health.bird.action",
                "health.dns.report_urls[0]",
                "health.dns.report_urls[1]",
                "health.dns.report_urls[2]",
            ],
            "{found:#?}"
        );
        // The timeout is fine alone; compared with an invalid interval it is not checked.
        assert!(
            found[4].contains("is required when health.enabled"),
            "{}",
            found[4]
        );
        assert!(
            found[14].contains("host names are not resolved"),
            "{}",
            found[14]
        );
    }

    #[test]
    fn cross_checks() {
        let cases: &[(&str, &str)] = &[
            (
                "[health]\ninterval = \"1s\"\ntimeout = \"2s\"",
                "health.timeout: 2s is longer than health.interval (1s)",
            ),
            (
                "[health]\nprobe_key = \"app.probe:not-the-secret-0123\"",
                "health.probe_key: is not one of [[keys]]",
            ),
            (
                "[health.bird]\nsocket = \"/tmp/b.ctl\"",
                "health.bird.min_announcing: 1 needs [health.dns] report_urls",
            ),
            (
                "[health.bird]\nmin_announcing = 0\naction = \"deprefer\"",
                "health.bird.prepend_protocols: is empty: action \"deprefer\"",
            ),
            (
                "[health.bird]\nmin_announcing = 0\nprotocols = []",
                "health.bird.protocols: is empty",
            ),
            (
                "[health.dns]\nreport_urls = []",
                "health.dns.report_urls: is empty",
            ),
            ("[health.dns]", "health.dns.report_urls: is required"),
            (
                "[health.dns]\nreport_urls = [\"http://127.0.0.1:1\", \"http://127.0.0.1:1/\"]",
                "health.dns.report_urls[1]: \"http://127.0.0.1:1/\" is listed twice",
            ),
            (
                "[health]\nmax_load = 0",
                "health.max_load: 0 is not a share",
            ),
        ];
        for (health, expected) in cases {
            let found = problems(&with_key(health));
            assert_eq!(found.len(), 1, "{health}: {found:?}");
            assert!(
                found[0].starts_with(expected),
                "{health}\n  got:  {}\n  want: {expected}…",
                found[0]
            );
            assert!(!found[0].contains("probe-secret"), "{}", found[0]);
        }
        // An integer is a ratio too, and the guard may be off without DNS.
        let config = parse_edge_config(&with_key(
            "[health]\nmax_load = 1\n[health.bird]\nmin_announcing = 0",
        ))
        .expect("valid");
        assert_eq!(config.health.max_load.as_f64(), 1.0);
    }

    #[test]
    fn load_ratio_compares_exactly() {
        let ratio = LoadRatio::new(0.95).expect("valid");
        assert!(!ratio.exceeded(95, 100));
        assert!(ratio.exceeded(96, 100));
        assert!(!ratio.exceeded(0, 0));
        assert!(LoadRatio::new(1.0).is_some_and(|r| !r.exceeded(u64::MAX, u64::MAX)));
        assert_eq!(LoadRatio::new(f64::NAN), None);
        assert_eq!(LoadRatio::new(1e-9), None);
    }
}
