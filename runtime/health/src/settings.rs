//! The health settings of one edge: probe timing, hysteresis counts, the drain file,
//! where BIRD is and what to do with it.
//!
//! A plain typed struct; [`HealthSettings::from_config`] builds it from the edge
//! config's `[health]` section ([`tern_config::HealthConfig`], read and checked by
//! tern-config, which does not know this crate).

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use tern_config::{AnycastActionConfig, HealthConfig};

use crate::anycast::InvalidSettings;
use crate::bird::ProtocolName;

/// Debian's `bird2` control socket.
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";

/// What an edge that is not up does with its anycast announcement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnycastAction {
    /// Withdraw the prefix: traffic goes to the other sites at once. The default.
    #[default]
    Withdraw,
    /// Keep announcing with a longer AS path: routers prefer the other sites, but this
    /// one still takes traffic when no other site is reachable.
    Deprefer,
}

impl fmt::Display for AnycastAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnycastAction::Withdraw => "withdraw",
            AnycastAction::Deprefer => "deprefer",
        })
    }
}

/// The BIRD static protocols that hold the anycast prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnycastProtocols {
    /// Announce the prefix as is (one per address family, e.g. `anycast4`,
    /// `anycast6`); enabled when up.
    pub primary: Vec<ProtocolName>,
    /// Announce the same prefix through an export filter that prepends the AS path
    /// (e.g. `anycast4_prepend`); enabled when down with [`AnycastAction::Deprefer`].
    /// May be empty with [`AnycastAction::Withdraw`].
    pub prepend: Vec<ProtocolName>,
}

impl Default for AnycastProtocols {
    /// `anycast4` and `anycast4_prepend`.
    fn default() -> Self {
        AnycastProtocols {
            primary: vec![ProtocolName::from_static("anycast4")],
            prepend: vec![ProtocolName::from_static("anycast4_prepend")],
        }
    }
}

/// Everything the health loop of one edge needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// Time between the starts of two probes. Default 1 s.
    pub interval: Duration,
    /// Longest a probe's check may take before it counts as failed. Default 1 s.
    pub timeout: Duration,
    /// Good probes in a row that bring a down edge up. Default 3.
    pub rise: NonZeroU32,
    /// Bad probes in a row that take an up edge down. Default 2.
    pub fall: NonZeroU32,
    /// While this file exists the edge is drained (disabled). Default none.
    pub drain_file: Option<PathBuf>,
    /// BIRD's control socket. Default [`DEFAULT_BIRD_SOCKET`].
    pub bird_socket: PathBuf,
    /// Longest one BIRD command may take, connecting included. Default 2 s.
    pub bird_timeout: Duration,
    /// The static protocols holding the anycast prefix.
    pub protocols: AnycastProtocols,
    /// What to do when not up. Default [`AnycastAction::Withdraw`].
    pub action: AnycastAction,
    /// The guard: never take the announcement down when fewer than this many sites
    /// would still announce. Default 1 (never withdraw the last site).
    pub min_announcing: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: NonZeroU32::new(3).expect("3 is non-zero"),
            fall: NonZeroU32::new(2).expect("2 is non-zero"),
            drain_file: None,
            bird_socket: PathBuf::from(DEFAULT_BIRD_SOCKET),
            bird_timeout: Duration::from_secs(2),
            protocols: AnycastProtocols::default(),
            action: AnycastAction::Withdraw,
            min_announcing: 1,
        }
    }
}

impl HealthSettings {
    /// The settings of `config` (the edge config's `[health]`). Without
    /// `[health.bird]` the BIRD fields keep their defaults (no controller is built
    /// then). tern-config has checked the values already; what still does not fit
    /// (a protocol name BIRD would not take, a zero count) is reported with every
    /// other problem.
    pub fn from_config(config: &HealthConfig) -> Result<HealthSettings, InvalidSettings> {
        let defaults = HealthSettings::default();
        let mut problems = Vec::new();
        let mut count = |name: &str, n: u32| {
            NonZeroU32::new(n).unwrap_or_else(|| {
                problems.push(format!("{name}: must be at least 1"));
                NonZeroU32::MIN
            })
        };
        let rise = count("rise", config.rise);
        let fall = count("fall", config.fall);
        let mut settings = HealthSettings {
            interval: config.interval,
            timeout: config.timeout,
            rise,
            fall,
            drain_file: config.drain_file.clone(),
            ..defaults
        };
        if let Some(bird) = &config.bird {
            let mut names = |list: &[String]| -> Vec<ProtocolName> {
                list.iter()
                    .filter_map(|name| {
                        ProtocolName::new(name.as_str())
                            .map_err(|e| problems.push(format!("protocols: {e}")))
                            .ok()
                    })
                    .collect()
            };
            settings.protocols = AnycastProtocols {
                primary: names(&bird.protocols),
                prepend: names(&bird.prepend_protocols),
            };
            settings.bird_socket = bird.socket.clone();
            settings.bird_timeout = bird.timeout;
            settings.action = match bird.action {
                AnycastActionConfig::Withdraw => AnycastAction::Withdraw,
                AnycastActionConfig::Deprefer => AnycastAction::Deprefer,
            };
            settings.min_announcing = bird.min_announcing;
        }
        problems.extend(settings.problems());
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(InvalidSettings { problems })
        }
    }

    /// Every problem with these settings at once, each naming its field; empty when
    /// they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.interval.is_zero() {
            problems.push("interval: must be more than zero".to_owned());
        }
        if self.timeout.is_zero() {
            problems.push("timeout: must be more than zero".to_owned());
        }
        if self.timeout > self.interval {
            problems.push(format!(
                "timeout: {:?} is longer than interval {:?}, so probes would overlap",
                self.timeout, self.interval
            ));
        }
        if self.bird_timeout.is_zero() {
            problems.push("bird_timeout: must be more than zero".to_owned());
        }
        if self.protocols.primary.is_empty() {
            problems.push("protocols.primary: name at least one static protocol".to_owned());
        }
        if self.action == AnycastAction::Deprefer && self.protocols.prepend.is_empty() {
            problems.push(
                "protocols.prepend: action deprefer needs at least one prepending protocol"
                    .to_owned(),
            );
        }
        let all: Vec<&ProtocolName> = self
            .protocols
            .primary
            .iter()
            .chain(&self.protocols.prepend)
            .collect();
        for (i, name) in all.iter().enumerate() {
            if all[..i].contains(name) {
                problems.push(format!("protocols: {name} is named twice"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_usable() {
        let s = HealthSettings::default();
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.rise.get(), s.fall.get()), (3, 2));
        assert_eq!(s.action, AnycastAction::Withdraw);
        assert_eq!(s.min_announcing, 1);
        assert_eq!(s.bird_socket, PathBuf::from("/run/bird/bird.ctl"));
        assert_eq!(s.problems(), Vec::<String>::new());
    }

    #[test]
    fn from_config_takes_every_value() {
        let text = r#"
            [[keys]]
            key = "app.probe:probe-secret-0123456789"
            capabilities = { "x" = ["subscribe"] }
            [health]
            interval = "500ms"
            timeout = "200ms"
            rise = 4
            fall = 1
            drain_file = "/run/drain"
            [health.bird]
            socket = "/tmp/bird.ctl"
            timeout = "3s"
            protocols = ["a4", "a6"]
            prepend_protocols = ["p4"]
            action = "deprefer"
            min_announcing = 2
            [health.dns]
            report_urls = ["http://127.0.0.1:5380"]
        "#;
        let config = tern_config::parse_edge_config(text).expect("valid");
        let s = HealthSettings::from_config(&config.health).expect("usable");
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(s.timeout, Duration::from_millis(200));
        assert_eq!((s.rise.get(), s.fall.get()), (4, 1));
        assert_eq!(s.drain_file, Some(PathBuf::from("/run/drain")));
        assert_eq!(s.bird_socket, PathBuf::from("/tmp/bird.ctl"));
        assert_eq!(s.bird_timeout, Duration::from_secs(3));
        let names = |list: &[ProtocolName]| -> Vec<String> {
            list.iter().map(ToString::to_string).collect()
        };
        assert_eq!(names(&s.protocols.primary), ["a4", "a6"]);
        assert_eq!(names(&s.protocols.prepend), ["p4"]);
        assert_eq!(s.action, AnycastAction::Deprefer);
        assert_eq!(s.min_announcing, 2);

        let defaults = HealthSettings::from_config(&HealthConfig::default()).expect("usable");
        assert_eq!(defaults, HealthSettings::default());
        let zero = HealthConfig {
            rise: 0,
            ..HealthConfig::default()
        };
        let e = HealthSettings::from_config(&zero).expect_err("rise 0");
        assert_eq!(e.problems, ["rise: must be at least 1"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let s = HealthSettings {
            interval: Duration::ZERO,
            action: AnycastAction::Deprefer,
            protocols: AnycastProtocols {
                primary: vec![
                    ProtocolName::from_static("a"),
                    ProtocolName::from_static("a"),
                ],
                prepend: Vec::new(),
            },
            ..HealthSettings::default()
        };
        let problems = s.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("interval:"));
        assert!(problems[1].starts_with("timeout:"));
        assert!(problems[2].starts_with("protocols.prepend:"));
        assert_eq!(problems[3], "protocols: a is named twice");
    }
}
