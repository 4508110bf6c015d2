//! Config of `tern dns`, the authoritative DNS server that answers the edge name with
//! the nearest healthy edges: where it listens, the name and zone it answers, the TTL,
//! where edges report their health, the tokens they report with and how long a report
//! counts, the POPs (client subnets and the edges serving them, with neighbor POPs to
//! fall back on) and the static fallback set.
//!
//! Unlike the log and edge configs, an empty file is not a valid DNS config: `name`,
//! `fallback` and at least one `[[pops]]` are required, so [`DnsConfig`] has no
//! `Default`. Tests build one with [`parse_dns_config`].

mod net;
mod raw;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub use net::{DnsName, IpSubnet, NetParseError};
pub use raw::{RawDnsConfig, RawPop, RawPopEdge};

use crate::error::ConfigError;
use crate::source;
use crate::token::ReportToken;

/// Default of `listen`: UDP and TCP on this address.
pub const DEFAULT_DNS_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5353);
/// Default of `report_listen`: the HTTP listener edges report their health to.
pub const DEFAULT_REPORT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5380);
/// Default of `ttl`.
pub const DEFAULT_DNS_TTL: Duration = Duration::from_secs(20);
/// Default of `report_ttl`.
pub const DEFAULT_REPORT_TTL: Duration = Duration::from_secs(3);

/// The whole config of `tern dns` (TOML: the top level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Address of the DNS listener, UDP and TCP on the same port (TOML: `listen`).
    /// Default [`DEFAULT_DNS_LISTEN`] (`127.0.0.1:5353`).
    pub listen: SocketAddr,
    /// The name answered with edge addresses, e.g. `edge.tern.test.` (TOML: `name`).
    /// Required.
    pub name: DnsName,
    /// The zone the server is authoritative for: `name` or a parent of it (TOML: `zone`).
    /// Other names in it are answered NXDOMAIN, names outside it REFUSED. Default: `name`.
    pub zone: DnsName,
    /// TTL of the answers, whole seconds (TOML: `ttl`). Default [`DEFAULT_DNS_TTL`]
    /// (20 s); 1s..=1h.
    pub ttl: Duration,
    /// Address of the HTTP listener edges report their health to (TOML:
    /// `report_listen`). Default [`DEFAULT_REPORT_LISTEN`] (`127.0.0.1:5380`).
    pub report_listen: SocketAddr,
    /// An edge whose last report is older than this counts as down (TOML: `report_ttl`).
    /// Default [`DEFAULT_REPORT_TTL`] (3 s); 100ms..=1h.
    pub report_ttl: Duration,
    /// The bearer tokens `report_listen` accepts (TOML: `report_tokens`): a request to
    /// `/v1/health` must carry `Authorization: Bearer` one of them. Several so that a
    /// token can be rotated (add the new one, move the edges over, remove the old one).
    /// Required unless `report_listen` is a loopback address or every edge has its own
    /// [`PopEdge::report_tokens`]; with neither (the default) nothing is checked, which
    /// only a loopback `report_listen` allows.
    pub report_tokens: Vec<ReportToken>,
    /// The points of presence, in file order (TOML: `[[pops]]`). At least one; names
    /// unique; edge names unique across all POPs; no subnet in two POPs.
    pub pops: Vec<PopConfig>,
    /// Addresses answered when no edge is healthy anywhere (TOML: `fallback`). Required,
    /// not empty, no duplicates.
    pub fallback: Vec<IpAddr>,
}

impl DnsConfig {
    /// [`DnsConfig::ttl`] in whole seconds, as DNS records carry it.
    pub fn ttl_secs(&self) -> u32 {
        u32::try_from(self.ttl.as_secs()).unwrap_or(u32::MAX)
    }
}

/// One point of presence (TOML: `[[pops]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopConfig {
    /// Name in answers' metrics and in other POPs' `neighbors`: 1 to 64 ASCII letters,
    /// digits, `-`, `_` or `.`.
    pub name: String,
    /// Client networks this POP serves (TOML: `subnets`, CIDR blocks). May be empty: the
    /// POP then serves clients only as a neighbor or when no POP of theirs has a healthy
    /// edge.
    pub subnets: Vec<IpSubnet>,
    /// The edges of this POP, in file order (TOML: `[[pops.edges]]`). At least one.
    pub edges: Vec<PopEdge>,
    /// Other POPs' names, most preferred first, tried when this POP has no healthy edge
    /// (TOML: `neighbors`). Default none.
    pub neighbors: Vec<String>,
}

/// One edge of a POP (TOML: `[[pops.edges]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopEdge {
    /// The edge's name, as it reports its health: the same rules as `[edge] name` in the
    /// edge config, unique across all POPs.
    pub name: String,
    /// The edge's addresses answered in A (IPv4) and AAAA (IPv6) records, in file order.
    /// At least one; no duplicates; not unspecified (`0.0.0.0`, `::`).
    pub addrs: Vec<IpAddr>,
    /// Tokens that may report for this edge only (TOML: `report_tokens`), beside the
    /// [`DnsConfig::report_tokens`] that may report for any edge; several so that one
    /// can be rotated. A token is in one place only. Default none; once one edge has
    /// some and the top level has none, every edge has some.
    pub report_tokens: Vec<ReportToken>,
}

/// Parses and validates a DNS server config from TOML text.
///
/// A syntax error, unknown key or value of the wrong TOML type is reported alone (with
/// its line and column); otherwise every invalid value is reported with its key path.
pub fn parse_dns_config(text: &str) -> Result<DnsConfig, ConfigError> {
    source::parse(text, RawDnsConfig::compile)
}

/// Reads, parses and validates a DNS server config file; see [`parse_dns_config`].
///
/// A file that cannot be read is one problem whose path is the file's.
pub fn load_dns_config(path: &Path) -> Result<DnsConfig, ConfigError> {
    source::load(path, parse_dns_config)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dns.toml")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn example_file_compiles() {
        let config = load_dns_config(&example_path()).expect("the example is valid");
        assert_eq!(config.listen, DEFAULT_DNS_LISTEN);
        assert_eq!(config.name.as_str(), "edge.tern.test.");
        assert_eq!(config.zone, config.name);
        assert_eq!(config.ttl, DEFAULT_DNS_TTL);
        assert_eq!(config.ttl_secs(), 20);
        assert_eq!(config.report_listen, DEFAULT_REPORT_LISTEN);
        assert_eq!(config.report_ttl, DEFAULT_REPORT_TTL);
        assert!(config.report_tokens.is_empty(), "loopback: commented out");
        let names: Vec<&str> = config.pops.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["fra", "ams", "nyc"]);
        let fra = &config.pops[0];
        assert_eq!(fra.neighbors, ["ams", "nyc"]);
        assert_eq!(
            fra.subnets,
            [
                "10.1.0.0/16".parse().expect("valid"),
                "2001:db8:1::/48".parse().expect("valid")
            ]
        );
        assert_eq!(fra.edges[0].name, "fra-1");
        assert_eq!(fra.edges[0].addrs, [ip("192.0.2.11"), ip("2001:db8:1::11")]);
        assert_eq!(config.fallback, [ip("192.0.2.100"), ip("2001:db8::100")]);
    }

    #[test]
    fn example_file_sets_every_key() {
        let text = std::fs::read_to_string(example_path()).expect("example is readable");
        let table: toml::Table = toml::from_str(&text).expect("example is valid TOML");
        for key in [
            "listen",
            "name",
            "ttl",
            "report_listen",
            "report_ttl",
            "pops",
            "fallback",
        ] {
            assert!(table.contains_key(key), "example lacks {key}");
        }
        // `zone` defaults to `name`; the example shows it commented out.
        assert!(text.contains("# zone = \"tern.test.\""));
        // `report_tokens` too (report_listen is loopback): switched on, it is the token
        // the edge example's [health.dns] sample sends.
        let sample = "# report_tokens = [";
        assert!(text.contains(sample));
        let config = parse_dns_config(&text.replace(sample, "report_tokens = ["))
            .expect("the report_tokens sample is valid");
        let edge = std::fs::read_to_string(example_path().with_file_name("edge.toml"))
            .expect("the edge example is readable");
        let [token] = config.report_tokens.as_slice() else {
            panic!("one sample token: {:?}", config.report_tokens);
        };
        assert!(
            edge.contains(&format!("# token = \"{}\"\n", token.expose())),
            "the edge example sends another token"
        );
        // An edge's own tokens, switched on as well, are valid beside them.
        let own = "#   report_tokens = [";
        assert!(text.contains(own));
        let config = parse_dns_config(
            &text
                .replace(sample, "report_tokens = [")
                .replace(own, "report_tokens = ["),
        )
        .expect("the per-edge report_tokens sample is valid");
        assert_eq!(config.pops[0].edges[0].report_tokens.len(), 1);
        let pop = table["pops"]
            .as_array()
            .and_then(|pops| pops.first())
            .and_then(toml::Value::as_table)
            .expect("a [[pops]] table");
        for key in ["name", "subnets", "edges", "neighbors"] {
            assert!(pop.contains_key(key), "example's first POP lacks {key}");
        }
        let edge = pop["edges"]
            .as_array()
            .and_then(|edges| edges.first())
            .and_then(toml::Value::as_table)
            .expect("a [[pops.edges]] table");
        for key in ["name", "addrs"] {
            assert!(edge.contains_key(key), "example's first edge lacks {key}");
        }
    }

    #[test]
    fn a_missing_file_is_one_problem_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("absent.toml");
        let error = load_dns_config(&path).expect_err("file is absent");
        assert_eq!(error.problems.len(), 1);
        assert_eq!(error.problems[0].path, path.display().to_string());
        assert!(error.problems[0].message.starts_with("cannot read: "));
    }
}
