//! The DNS server config as written in TOML, and its compilation into [`DnsConfig`].
//!
//! Required values (`name`, `fallback`, each POP's and edge's `name`) are still `Option`
//! here so that a missing one is reported with its path alongside every other problem.
//! Durations, addresses and subnets stay unparsed until `compile()`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Deserialize;

use super::{
    DEFAULT_DNS_LISTEN, DEFAULT_DNS_TTL, DEFAULT_REPORT_LISTEN, DEFAULT_REPORT_TTL, DnsConfig,
    DnsName, IpSubnet, PopConfig, PopEdge,
};
use crate::check::{duration, socket_addr};
use crate::error::{ConfigError, Problems};
use crate::token::{ReportToken, loopback, report_token};

/// Longest POP or edge name, in characters (the same as `[edge] name`).
const NAME_CHARS: usize = 64;
const TTL: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(60 * 60);
const REPORT_TTL: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(60 * 60);
/// Most report tokens: a few at a time while one is rotated.
const MAX_REPORT_TOKENS: usize = 16;

/// A `tern dns` config file (the TOML top level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsConfig {
    /// `IP:PORT` of the DNS listener, UDP and TCP (`[::]:53` for IPv6; host names are not
    /// resolved; port 0 picks a free port). Default `"127.0.0.1:5353"`.
    pub listen: Option<String>,
    /// The name answered with edge addresses, absolute (`"edge.tern.test."`). Required.
    pub name: Option<String>,
    /// The zone served, absolute: `name` or a parent of it. Default: `name`.
    pub zone: Option<String>,
    /// TTL of the answers (duration, whole seconds). Default `"20s"`; 1s..=1h.
    pub ttl: Option<String>,
    /// `IP:PORT` of the HTTP listener edges report their health to. Default
    /// `"127.0.0.1:5380"`.
    pub report_listen: Option<String>,
    /// Age (duration) past which an edge's last report no longer counts: the edge is
    /// down. Default `"3s"`; 100ms..=1h.
    pub report_ttl: Option<String>,
    /// Bearer tokens accepted on `report_listen` for any edge, each 32 to 256 visible
    /// ASCII characters, at most 16, none twice. Required (not empty) unless
    /// `report_listen` is a loopback address or every edge has its own
    /// `report_tokens`; default none.
    pub report_tokens: Option<Vec<String>>,
    /// `[[pops]]`, in file order. At least one.
    #[serde(default)]
    pub pops: Vec<RawPop>,
    /// Addresses answered when no edge is healthy anywhere. Required, not empty.
    pub fallback: Option<Vec<String>>,
}

/// `[[pops]]`: one point of presence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPop {
    /// 1 to 64 ASCII letters, digits, `-`, `_` or `.`, unique. Required.
    pub name: Option<String>,
    /// Client networks (CIDR blocks, IPv4 or IPv6) served by this POP; none in another
    /// POP. Default none.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Other POPs' names, most preferred first, tried when this POP has no healthy edge.
    /// Default none.
    #[serde(default)]
    pub neighbors: Vec<String>,
    /// `[[pops.edges]]`, in file order. At least one.
    #[serde(default)]
    pub edges: Vec<RawPopEdge>,
}

/// `[[pops.edges]]`: one edge of a POP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPopEdge {
    /// The name the edge reports its health with (its `[edge] name`), unique across all
    /// POPs. Required.
    pub name: Option<String>,
    /// IPv4 and IPv6 addresses answered for this edge. At least one.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Bearer tokens that may report for this edge only: the same rules as the top
    /// level's `report_tokens`, and no token twice in the file. Default none; required
    /// for every edge once one edge has some, unless the top level has
    /// `report_tokens`.
    #[serde(default)]
    pub report_tokens: Vec<String>,
}

impl RawDnsConfig {
    /// Validates every value and fills in defaults, reporting every problem at once.
    pub fn compile(&self) -> Result<DnsConfig, ConfigError> {
        let mut problems = Problems::default();
        let listen = self
            .listen
            .as_deref()
            .map_or(Some(DEFAULT_DNS_LISTEN), |text| {
                socket_addr(text, DEFAULT_DNS_LISTEN)
                    .map_err(|m| problems.push("listen", m))
                    .ok()
            });
        let name = match self.name.as_deref() {
            None => {
                problems.push(
                    "name",
                    "is required: the name answered, like \"edge.example.com.\"",
                );
                None
            }
            Some(text) => text
                .parse::<DnsName>()
                .map_err(|e| problems.push("name", e.to_string()))
                .ok(),
        };
        let zone = match (self.zone.as_deref(), &name) {
            (None, name) => name.clone(),
            (Some(text), name) => match text.parse::<DnsName>() {
                Err(e) => {
                    problems.push("zone", e.to_string());
                    None
                }
                Ok(zone) => match name {
                    Some(name) if !name.is_within(&zone) => {
                        problems.push(
                            "zone",
                            format!("{zone} does not hold name {name}: use name or a parent of it"),
                        );
                        None
                    }
                    _ => Some(zone),
                },
            },
        };
        let ttl = duration(
            &mut problems,
            "ttl",
            self.ttl.as_deref(),
            DEFAULT_DNS_TTL,
            TTL,
        )
        .and_then(|ttl| {
            if ttl.subsec_nanos() == 0 {
                Some(ttl)
            } else {
                problems.push("ttl", "must be whole seconds: DNS carries TTLs in seconds");
                None
            }
        });
        let report_listen =
            self.report_listen
                .as_deref()
                .map_or(Some(DEFAULT_REPORT_LISTEN), |text| {
                    socket_addr(text, DEFAULT_REPORT_LISTEN)
                        .map_err(|m| problems.push("report_listen", m))
                        .ok()
                });
        let report_ttl = duration(
            &mut problems,
            "report_ttl",
            self.report_ttl.as_deref(),
            DEFAULT_REPORT_TTL,
            REPORT_TTL,
        );
        // Every token written, and where first: a token is in one place only.
        let mut tokens_seen = HashMap::new();
        let pops = compile_pops(&self.pops, &mut tokens_seen, &mut problems);
        let report_tokens = compile_report_tokens(
            self.report_tokens.as_deref(),
            report_listen,
            &self.pops,
            &mut tokens_seen,
            &mut problems,
        );
        let fallback = compile_fallback(self.fallback.as_deref(), &mut problems);

        match (listen, name, zone, ttl, report_listen, report_ttl) {
            (
                Some(listen),
                Some(name),
                Some(zone),
                Some(ttl),
                Some(report_listen),
                Some(report_ttl),
            ) => problems.finish(DnsConfig {
                listen,
                name,
                zone,
                ttl,
                report_listen,
                report_ttl,
                report_tokens,
                pops,
                fallback,
            }),
            _ => Err(problems
                .finish(())
                .expect_err("every missing value recorded its problem")),
        }
    }
}

fn compile_pops<'a>(
    raw: &'a [RawPop],
    tokens_seen: &mut HashMap<&'a str, String>,
    problems: &mut Problems,
) -> Vec<PopConfig> {
    if raw.is_empty() {
        problems.push(
            "pops",
            "needs at least one [[pops]] with its subnets and edges",
        );
    }
    // First every POP's name, so that neighbors can name a POP further down the file.
    let mut pop_index: HashMap<&str, usize> = HashMap::new();
    let mut names = Vec::with_capacity(raw.len());
    for (i, pop) in raw.iter().enumerate() {
        let path = format!("pops[{i}].name");
        let name = match pop.name.as_deref() {
            None => {
                problems.push(&path, "is required");
                None
            }
            Some(name) => match checked_name(name) {
                Err(message) => {
                    problems.push(&path, message);
                    None
                }
                Ok(()) => match pop_index.get(name) {
                    Some(first) => {
                        problems.push(&path, format!("{name:?} is also used by pops[{first}]"));
                        None
                    }
                    None => {
                        pop_index.insert(name, i);
                        Some(name.to_owned())
                    }
                },
            },
        };
        names.push(name);
    }

    let mut subnet_owner: HashMap<IpSubnet, usize> = HashMap::new();
    let mut edge_owner: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut pops = Vec::with_capacity(raw.len());
    for (i, (pop, name)) in raw.iter().zip(names).enumerate() {
        let mut subnets = Vec::with_capacity(pop.subnets.len());
        for (j, text) in pop.subnets.iter().enumerate() {
            let path = format!("pops[{i}].subnets[{j}]");
            match text.parse::<IpSubnet>() {
                Err(e) => problems.push(&path, e.to_string()),
                Ok(subnet) => match subnet_owner.get(&subnet) {
                    Some(&owner) if owner == i => {
                        problems.push(&path, format!("{subnet} is listed twice"));
                    }
                    Some(owner) => problems.push(
                        &path,
                        format!("{subnet} is also in pops[{owner}]: a client subnet has one POP"),
                    ),
                    None => {
                        subnet_owner.insert(subnet, i);
                        subnets.push(subnet);
                    }
                },
            }
        }

        let mut neighbors: Vec<String> = Vec::with_capacity(pop.neighbors.len());
        for (j, neighbor) in pop.neighbors.iter().enumerate() {
            let path = format!("pops[{i}].neighbors[{j}]");
            match pop_index.get(neighbor.as_str()) {
                None => problems.push(&path, format!("{neighbor:?} is not the name of a POP")),
                Some(&n) if n == i => problems.push(&path, "a POP is not its own neighbor"),
                Some(_) if neighbors.contains(neighbor) => {
                    problems.push(&path, format!("{neighbor:?} is listed twice"));
                }
                Some(_) => neighbors.push(neighbor.clone()),
            }
        }

        if pop.edges.is_empty() {
            problems.push(
                &format!("pops[{i}].edges"),
                "needs at least one [[pops.edges]]",
            );
        }
        let mut edges = Vec::with_capacity(pop.edges.len());
        for (j, edge) in pop.edges.iter().enumerate() {
            let path = format!("pops[{i}].edges[{j}]");
            let edge_name = match edge.name.as_deref() {
                None => {
                    problems.push(&format!("{path}.name"), "is required");
                    None
                }
                Some(edge_name) => match checked_name(edge_name) {
                    Err(message) => {
                        problems.push(&format!("{path}.name"), message);
                        None
                    }
                    Ok(()) => match edge_owner.get(edge_name) {
                        Some((p, e)) => {
                            problems.push(
                                &format!("{path}.name"),
                                format!("{edge_name:?} is also used by pops[{p}].edges[{e}]"),
                            );
                            None
                        }
                        None => {
                            edge_owner.insert(edge_name, (i, j));
                            Some(edge_name.to_owned())
                        }
                    },
                },
            };
            let addrs = compile_addrs(&format!("{path}.addrs"), &edge.addrs, problems);
            let report_tokens = compile_token_list(
                &format!("{path}.report_tokens"),
                &edge.report_tokens,
                tokens_seen,
                problems,
            );
            if let Some(name) = edge_name {
                edges.push(PopEdge {
                    name,
                    addrs,
                    report_tokens,
                });
            }
        }

        if let Some(name) = name {
            pops.push(PopConfig {
                name,
                subnets,
                edges,
                neighbors,
            });
        }
    }
    pops
}

/// The tokens accepted for any edge (the top level's `report_tokens`), and how they
/// and the edges' own `report_tokens` fit together:
/// - with no top-level tokens, either no edge or every edge has its own (an edge
///   without any could not report);
/// - top-level tokens are required unless `report_listen` is loopback (unknown when it
///   did not compile: then this is not checked) or every edge has its own;
/// - no token is written twice, in either place (`tokens_seen` holds the edges').
fn compile_report_tokens<'a>(
    raw: Option<&'a [String]>,
    report_listen: Option<std::net::SocketAddr>,
    pops: &[RawPop],
    tokens_seen: &mut HashMap<&'a str, String>,
    problems: &mut Problems,
) -> Vec<ReportToken> {
    const PATH: &str = "report_tokens";
    let raw = raw.unwrap_or_default();
    let edges = pops.iter().enumerate().flat_map(|(i, pop)| {
        pop.edges
            .iter()
            .enumerate()
            .map(move |(j, edge)| (format!("pops[{i}].edges[{j}]"), edge))
    });
    let (with_own, without): (Vec<_>, Vec<_>) =
        edges.partition(|(_, edge)| !edge.report_tokens.is_empty());
    if raw.is_empty() && !with_own.is_empty() {
        for (path, _) in &without {
            problems.push(
                &format!("{path}.report_tokens"),
                "is required: other edges have their own report_tokens and the top level has none, so this edge could not report",
            );
        }
    }
    match report_listen {
        Some(listen) if raw.is_empty() && with_own.is_empty() && !loopback(&listen) => problems.push(
            PATH,
            format!(
                "is required: report_listen {listen} is not a loopback address, so anyone who reaches it could report edges up or down; list one or more tokens of 32 to 256 characters (like the output of `openssl rand -hex 32`) and give one to each edge as [health.dns] token, or give each [[pops.edges]] report_tokens of its own"
            ),
        ),
        _ => {}
    }
    compile_token_list(PATH, raw, tokens_seen, problems)
}

/// The tokens at `path`: at most [`MAX_REPORT_TOKENS`], each valid and not already in
/// `tokens_seen` (which gains them). Problems never quote a token.
fn compile_token_list<'a>(
    path: &str,
    raw: &'a [String],
    tokens_seen: &mut HashMap<&'a str, String>,
    problems: &mut Problems,
) -> Vec<ReportToken> {
    if raw.len() > MAX_REPORT_TOKENS {
        problems.push(
            path,
            format!("lists {}; at most {MAX_REPORT_TOKENS}", raw.len()),
        );
    }
    let mut tokens = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let Some(token) = report_token(problems, &here, text) else {
            continue;
        };
        match tokens_seen.get(text.as_str()) {
            Some(first) => problems.push(
                &here,
                format!(
                    "is the same as {first}: a token is for any edge or for one, and written once"
                ),
            ),
            None => {
                tokens_seen.insert(text, here);
                tokens.push(token);
            }
        }
    }
    tokens
}

fn compile_fallback(raw: Option<&[String]>, problems: &mut Problems) -> Vec<IpAddr> {
    match raw {
        None => {
            problems.push(
                "fallback",
                "is required: the addresses answered when no edge is healthy",
            );
            Vec::new()
        }
        Some(texts) => compile_addrs("fallback", texts, problems),
    }
}

/// Addresses at `path`: at least one, each an IP address that can be answered, no
/// duplicates.
fn compile_addrs(path: &str, texts: &[String], problems: &mut Problems) -> Vec<IpAddr> {
    if texts.is_empty() {
        problems.push(path, "needs at least one address");
    }
    let mut addrs = Vec::with_capacity(texts.len());
    for (k, text) in texts.iter().enumerate() {
        let path = format!("{path}[{k}]");
        match text.parse::<IpAddr>() {
            Err(_) => problems.push(
                &path,
                format!(
                    "{text:?} is not an IP address (host names are not resolved), like \"192.0.2.10\" or \"2001:db8::10\""
                ),
            ),
            Ok(addr) if addr.is_unspecified() => {
                problems.push(&path, format!("{addr} cannot be answered to clients"));
            }
            Ok(addr) if addrs.contains(&addr) => {
                problems.push(&path, format!("{addr} is listed twice"));
            }
            Ok(addr) => addrs.push(addr),
        }
    }
    addrs
}

/// Checks a POP or edge name. The rules are those of `[edge] name` in the edge config
/// (an edge reports its health under that name), which a test keeps in step.
fn checked_name(name: &str) -> Result<(), String> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::parse_dns_config;

    /// A valid config; tests append to it or replace a line of it.
    const BASE: &str = r#"
name = "edge.tern.test."
fallback = ["192.0.2.100"]

[[pops]]
name = "fra"
subnets = ["10.1.0.0/16"]
neighbors = ["ams"]
[[pops.edges]]
name = "fra-1"
addrs = ["192.0.2.11"]

[[pops]]
name = "ams"
subnets = ["10.2.0.0/16"]
[[pops.edges]]
name = "ams-1"
addrs = ["192.0.2.21", "2001:db8::21"]
"#;

    fn problems(text: &str) -> Vec<(String, String)> {
        let error = parse_dns_config(text).expect_err("config is invalid");
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

    /// Each text has one problem, starting with its expected `path: message`, and the
    /// problem does not quote the tokens of these tests (all hold `0123456789`).
    fn each_is_the_only_problem_and_quotes_no_token(cases: &[(String, &str)]) {
        for (text, expected) in cases {
            let found = only_problem(text);
            assert!(
                found.starts_with(expected),
                "{text}\n  got:  {found}\n  want: {expected}…"
            );
            assert!(!found.contains("0123456789"), "quotes the token: {found}");
        }
    }

    /// `BASE` with `line` (a `key = value` of the top level) added before the POPs.
    fn with_top(line: &str) -> String {
        format!("{line}\n{BASE}")
    }

    #[test]
    fn base_is_valid_and_takes_the_defaults() {
        let config = parse_dns_config(BASE).expect("valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:5353");
        assert_eq!(config.report_listen.to_string(), "127.0.0.1:5380");
        assert_eq!(config.ttl, Duration::from_secs(20));
        assert_eq!(config.report_ttl, Duration::from_secs(3));
        assert_eq!(config.zone, config.name);
        assert_eq!(config.pops.len(), 2);
        assert_eq!(config.pops[1].edges[0].addrs.len(), 2);
        assert_eq!(config.pops[1].neighbors, Vec::<String>::new());
        assert!(config.report_tokens.is_empty());
    }

    #[test]
    fn values_are_parsed_into_their_types() {
        let text = format!(
            "{}{BASE}",
            r#"
listen = "[::1]:0"
zone = "TERN.test."
ttl = "1h"
report_listen = "0.0.0.0:9000"
report_ttl = "100ms"
report_tokens = ["0123456789abcdef0123456789abcdef", "the-next-token-while-rotating-0123456789"]
"#
        );
        let config = parse_dns_config(&text).expect("valid, several values at a bound");
        assert_eq!(config.listen.to_string(), "[::1]:0");
        assert_eq!(config.zone.as_str(), "tern.test.");
        assert_eq!(config.ttl_secs(), 3600);
        assert_eq!(config.report_listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.report_ttl, Duration::from_millis(100));
        let tokens: Vec<&str> = config.report_tokens.iter().map(|t| t.expose()).collect();
        assert_eq!(
            tokens,
            [
                "0123456789abcdef0123456789abcdef",
                "the-next-token-while-rotating-0123456789"
            ]
        );
        assert!(!format!("{config:?}").contains("0123456789"));
    }

    #[test]
    fn report_tokens_are_required_off_loopback_and_checked_without_quoting_them() {
        const TOKEN: &str = "0123456789abcdef0123456789abcdef";
        // Loopback, IPv4 or IPv6: optional.
        for listen in ["127.0.0.1:0", "127.8.0.1:5380", "[::1]:5380"] {
            let text = with_top(&format!("report_listen = \"{listen}\""));
            let config = parse_dns_config(&text).expect("no token needed on loopback");
            assert!(config.report_tokens.is_empty());
        }
        let cases: Vec<(String, &str)> = vec![
            (
                with_top("report_listen = \"0.0.0.0:5380\""),
                "report_tokens: is required: report_listen 0.0.0.0:5380 is not a loopback address",
            ),
            (
                with_top("report_listen = \"10.0.0.53:5380\"\nreport_tokens = []"),
                "report_tokens: is required: report_listen 10.0.0.53:5380",
            ),
            (
                with_top(&format!("report_tokens = [{:?}]", &TOKEN[1..])),
                "report_tokens[0]: is 31 characters; a token is 32 to 256",
            ),
            (
                with_top(&format!("report_tokens = [\"{TOKEN} \"]")),
                "report_tokens[0]: holds a character other than visible ASCII at byte 32",
            ),
            (
                with_top(&format!("report_tokens = [\"{TOKEN}\", \"{TOKEN}\"]")),
                "report_tokens[1]: is the same as report_tokens[0]",
            ),
            (
                with_top(&format!(
                    "report_tokens = [{}]",
                    (0..17)
                        .map(|i| format!("\"{TOKEN}{i}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                "report_tokens: lists 17; at most 16",
            ),
        ];
        each_is_the_only_problem_and_quotes_no_token(&cases);
        // Tokens on loopback are checked (and then enforced) all the same.
        let config =
            parse_dns_config(&with_top(&format!("report_tokens = [\"{TOKEN}\"]"))).expect("valid");
        assert!(config.report_tokens[0].matches(TOKEN.as_bytes()));
    }

    #[test]
    fn an_edge_may_have_a_token_of_its_own() {
        const FRA: &str = "fra-1-own-token-0123456789abcdef0123";
        const FRA_NEXT: &str = "fra-1-rotated-in-0123456789abcdef0123";
        const AMS: &str = "ams-1-own-token-0123456789abcdef0123";
        const ANY: &str = "0123456789abcdef0123456789abcdef";
        // `fra` and `ams`: what goes between the brackets of each edge's list.
        let with_tokens = |top: &str, fra: Option<&str>, ams: Option<&str>| {
            let mut text = with_top(top);
            for (edge, tokens) in [("fra-1", fra), ("ams-1", ams)] {
                if let Some(tokens) = tokens {
                    let line = format!("name = \"{edge}\"\n");
                    text = text.replacen(&line, &format!("{line}report_tokens = [{tokens}]\n"), 1);
                }
            }
            text
        };
        let one = |token: &str| format!("{token:?}");
        let (fra, ams) = (one(FRA), one(AMS));
        // Every edge with its own: report_tokens is not needed, even off loopback.
        let config = parse_dns_config(&with_tokens(
            "report_listen = \"0.0.0.0:5380\"",
            Some(&format!("{fra}, {FRA_NEXT:?}")),
            Some(&ams),
        ))
        .expect("valid");
        assert!(config.report_tokens.is_empty());
        let own = |pop: usize| &config.pops[pop].edges[0].report_tokens;
        assert!(own(0)[0].matches(FRA.as_bytes()) && own(0)[1].matches(FRA_NEXT.as_bytes()));
        assert!(own(1)[0].matches(AMS.as_bytes()));
        // Some edges with their own, beside report_tokens for the rest.
        let config = parse_dns_config(&with_tokens(
            &format!("report_tokens = [{ANY:?}]"),
            Some(&fra),
            None,
        ))
        .expect("valid");
        assert!(config.pops[1].edges[0].report_tokens.is_empty());

        let cases: Vec<(String, &str)> = vec![
            (
                with_tokens("", Some(&fra), None),
                "pops[1].edges[0].report_tokens: is required: other edges have their own report_tokens and the top level has none",
            ),
            (
                with_tokens("report_listen = \"0.0.0.0:5380\"", Some(&fra), Some("")),
                "pops[1].edges[0].report_tokens: is required",
            ),
            (
                with_tokens("", Some(&fra), Some(&fra)),
                "pops[1].edges[0].report_tokens[0]: is the same as pops[0].edges[0].report_tokens[0]",
            ),
            (
                with_tokens("", Some(&format!("{fra}, {fra}")), Some(&ams)),
                "pops[0].edges[0].report_tokens[1]: is the same as pops[0].edges[0].report_tokens[0]",
            ),
            (
                with_tokens(&format!("report_tokens = [{fra}]"), Some(&fra), None),
                "report_tokens[0]: is the same as pops[0].edges[0].report_tokens[0]: a token is for any edge or for one",
            ),
            (
                with_tokens(
                    &format!("report_tokens = [{ANY:?}]"),
                    Some(&one(&FRA[..31])),
                    None,
                ),
                "pops[0].edges[0].report_tokens[0]: is 31 characters",
            ),
        ];
        each_is_the_only_problem_and_quotes_no_token(&cases);
    }

    #[test]
    fn every_rule_reports_its_path() {
        let replace = |from: &str, to: &str| {
            assert!(BASE.contains(from), "{from}");
            BASE.replacen(from, to, 1)
        };
        let cases: Vec<(String, &str)> = vec![
            (
                with_top("listen = \"127.0.0.1\""),
                "listen: \"127.0.0.1\" has no port",
            ),
            (
                with_top("report_listen = \"localhost:80\""),
                "report_listen: \"localhost\" is not an IP address",
            ),
            (
                replace("\"edge.tern.test.\"", "\"edge.tern.test\""),
                "name: \"edge.tern.test\" is not absolute",
            ),
            (
                replace("name = \"edge.tern.test.\"\n", ""),
                "name: is required",
            ),
            (
                with_top("zone = \"other.test.\""),
                "zone: other.test. does not hold name edge.tern.test.",
            ),
            (
                with_top("zone = \"tern test.\""),
                "zone: \"tern test.\" holds ' '",
            ),
            (
                with_top("ttl = \"0s\""),
                "ttl: 0s is below the minimum of 1s",
            ),
            (
                with_top("ttl = \"2h\""),
                "ttl: 2h is above the maximum of 1h",
            ),
            (with_top("ttl = \"1500ms\""), "ttl: must be whole seconds"),
            (
                with_top("ttl = \"soon\""),
                "ttl: \"soon\" is not a duration",
            ),
            (
                with_top("report_ttl = \"10ms\""),
                "report_ttl: 10ms is below the minimum of 100ms",
            ),
            (
                replace("fallback = [\"192.0.2.100\"]\n", ""),
                "fallback: is required",
            ),
            (
                replace("[\"192.0.2.100\"]", "[]"),
                "fallback: needs at least one address",
            ),
            (
                replace("[\"192.0.2.100\"]", "[\"fallback.tern.test\"]"),
                "fallback[0]: \"fallback.tern.test\" is not an IP address",
            ),
            (
                replace("[\"192.0.2.100\"]", "[\"::\"]"),
                "fallback[0]: :: cannot be answered",
            ),
            (
                replace("[\"192.0.2.100\"]", "[\"192.0.2.100\", \"192.0.2.100\"]"),
                "fallback[1]: 192.0.2.100 is listed twice",
            ),
            (
                replace("name = \"fra\"", "name = \"fra 1\""),
                "pops[0].name: \"fra 1\" holds ' '",
            ),
            (
                format!(
                    "{BASE}\n[[pops]]\nname = \"fra\"\n[[pops.edges]]\nname = \"x\"\naddrs = [\"192.0.2.1\"]\n"
                ),
                "pops[2].name: \"fra\" is also used by pops[0]",
            ),
            (
                replace("10.1.0.0/16", "10.1.0.0/33"),
                "pops[0].subnets[0]: \"33\" is not a prefix length",
            ),
            (
                replace("10.1.0.0/16", "10.1.2.0/16"),
                "pops[0].subnets[0]: \"10.1.2.0/16\" has bits set past its prefix",
            ),
            (
                replace("10.2.0.0/16", "10.1.0.0/16"),
                "pops[1].subnets[0]: 10.1.0.0/16 is also in pops[0]",
            ),
            (
                replace("[\"10.1.0.0/16\"]", "[\"10.1.0.0/16\", \"10.1.0.0/16\"]"),
                "pops[0].subnets[1]: 10.1.0.0/16 is listed twice",
            ),
            (
                replace("[\"ams\"]", "[\"lon\"]"),
                "pops[0].neighbors[0]: \"lon\" is not the name of a POP",
            ),
            (
                replace("[\"ams\"]", "[\"fra\"]"),
                "pops[0].neighbors[0]: a POP is not its own neighbor",
            ),
            (
                replace("[\"ams\"]", "[\"ams\", \"ams\"]"),
                "pops[0].neighbors[1]: \"ams\" is listed twice",
            ),
            (
                replace("name = \"ams-1\"", "name = \"fra-1\""),
                "pops[1].edges[0].name: \"fra-1\" is also used by pops[0].edges[0]",
            ),
            (
                replace("name = \"ams-1\"\n", ""),
                "pops[1].edges[0].name: is required",
            ),
            (
                replace("[\"192.0.2.11\"]", "[]"),
                "pops[0].edges[0].addrs: needs at least one address",
            ),
            (
                replace("\"2001:db8::21\"", "\"2001:db8::21/64\""),
                "pops[1].edges[0].addrs[1]: \"2001:db8::21/64\" is not an IP address",
            ),
            (
                format!("{BASE}\n[[pops]]\nname = \"nyc\"\n"),
                "pops[2].edges: needs at least one [[pops.edges]]",
            ),
            (
                "name = \"edge.tern.test.\"\nfallback = [\"192.0.2.1\"]".to_owned(),
                "pops: needs at least one [[pops]]",
            ),
        ];
        for (text, expected) in &cases {
            let found = only_problem(text);
            assert!(
                found.starts_with(expected),
                "{text}\n  got:  {found}\n  want: {expected}…"
            );
        }
    }

    #[test]
    fn several_problems_are_reported_at_once_in_key_order() {
        let text = r#"
listen = "nowhere"
name = "edge"
ttl = "0s"
fallback = []

[[pops]]
name = ""
subnets = ["10.1.0.0/99"]
neighbors = ["nyc"]
[[pops.edges]]
addrs = ["192.0.2.300"]
"#;
        let error = parse_dns_config(text).expect_err("many problems");
        let paths: Vec<&str> = error.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listen",
                "name",
                "ttl",
                "pops[0].name",
                "pops[0].subnets[0]",
                "pops[0].neighbors[0]",
                "pops[0].edges[0].name",
                "pops[0].edges[0].addrs[0]",
                "fallback",
            ],
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name_and_position() {
        let cases: &[(&str, &str, &str)] = &[
            ("nmae = \"x\"", "line 1, column 1", "unknown field `nmae`"),
            (
                "[[pops]]\nsubnet = []",
                "line 2, column 1",
                "unknown field `subnet`",
            ),
            (
                "[[pops]]\n[[pops.edges]]\naddr = \"x\"",
                "line 3, column 1",
                "unknown field `addr`",
            ),
        ];
        for (text, path, message) in cases {
            let found = problems(text);
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert_eq!(found[0].0, *path, "{text}");
            assert!(found[0].1.starts_with(message), "{text}: {}", found[0].1);
        }
    }

    /// POP and edge names follow `[edge] name`: an edge reports under its own name.
    #[test]
    fn edge_names_follow_the_edge_config() {
        let long = "e".repeat(64);
        let too_long = "e".repeat(65);
        for name in [
            "fra-1",
            "fra_1.a",
            "E1",
            long.as_str(),
            too_long.as_str(),
            "",
            "fra 1",
            "fra/1",
            "é",
        ] {
            let edge = crate::parse_edge_config(&format!("[edge]\nname = {name:?}")).is_ok();
            let dns = parse_dns_config(&BASE.replace("\"fra-1\"", &format!("{name:?}"))).is_ok();
            assert_eq!(
                edge, dns,
                "{name:?}: edge accepts {edge}, dns accepts {dns}"
            );
        }
    }
}
