//! The two network values a DNS config is made of: [`IpSubnet`] (a CIDR block, for the
//! POP ↔ client subnet map) and [`DnsName`] (an absolute domain name, for the answered
//! name and its zone). Both are parsed once, then used without re-checking.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest domain name, in characters, without its final dot (RFC 1035: 255 octets on
/// the wire, which is 253 characters written out).
const NAME_CHARS: usize = 253;
/// Longest label of a domain name, in characters.
const LABEL_CHARS: usize = 63;

/// An IPv4 or IPv6 network: an address whose bits past `prefix_len` are zero.
///
/// Written `10.20.0.0/16` or `2001:db8::/32`. [`FromStr`] refuses host bits past the
/// prefix (`10.20.1.0/16` is likely a typo for `/24`); [`IpSubnet::new`] clears them,
/// which is what a client subnet taken from a query needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpSubnet {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a text is not an [`IpSubnet`] or a [`DnsName`]; shown to operators as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NetParseError(String);

impl IpSubnet {
    /// The network of `addr` cut to `prefix_len` bits (host bits cleared), or `None` if
    /// `prefix_len` is longer than the address (32 for IPv4, 128 for IPv6).
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a dual-stack socket shows an
    /// IPv4 peer) is taken as its IPv4 address when `prefix_len` covers the mapping.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let (addr, prefix_len) = match addr {
            IpAddr::V6(v6) if prefix_len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix_len - 96),
                None => (addr, prefix_len),
            },
            _ => (addr, prefix_len),
        };
        if prefix_len > max_prefix(addr) {
            return None;
        }
        Some(Self {
            addr: mask(addr, prefix_len),
            prefix_len,
        })
    }

    /// The subnet holding `addr` alone (`/32` or `/128`; IPv4-mapped IPv6 addresses are
    /// taken as IPv4).
    pub fn host(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        Self {
            addr,
            prefix_len: max_prefix(addr),
        }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// How many leading bits are the network's.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `addr` is in this network (never across IPv4 and IPv6).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.addr.is_ipv4() && mask(addr, self.prefix_len) == self.addr
    }

    /// Whether every address of `other` is in this network.
    pub fn covers(&self, other: &IpSubnet) -> bool {
        self.prefix_len <= other.prefix_len && self.contains(other.addr)
    }
}

impl fmt::Display for IpSubnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpSubnet {
    type Err = NetParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let example = "expected a CIDR block like \"10.20.0.0/16\" or \"2001:db8::/32\"";
        let Some((addr, len)) = text.split_once('/') else {
            return Err(NetParseError(format!(
                "{text:?} has no prefix length: {example}"
            )));
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| NetParseError(format!("{addr:?} is not an IP address: {example}")))?;
        let max = max_prefix(addr);
        let prefix_len = len
            .parse::<u8>()
            .ok()
            .filter(|len| *len <= max)
            .ok_or_else(|| {
                NetParseError(format!(
                    "{len:?} is not a prefix length of an {} address (0..={max})",
                    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                ))
            })?;
        let network = mask(addr, prefix_len);
        if network != addr {
            return Err(NetParseError(format!(
                "{text:?} has bits set past its prefix: write \"{network}/{prefix_len}\""
            )));
        }
        Ok(Self { addr, prefix_len })
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `addr` with every bit past `prefix_len` cleared; `prefix_len` is at most
/// [`max_prefix`].
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    let len = u32::from(prefix_len);
    match addr {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

/// An absolute domain name, lower-cased: `edge.tern.test.`.
///
/// Labels of 1 to 63 ASCII letters, digits, `-` or `_` (not starting or ending with
/// `-`), at most 253 characters without the final dot, which is required (a relative
/// name in a zone's config is a classic mistake). The root `.` alone is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsName(String);

impl DnsName {
    /// The name as written in zone files: lower case, with its final dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this name is `zone` or a name below it.
    pub fn is_within(&self, zone: &DnsName) -> bool {
        self.0 == zone.0
            || self
                .0
                .strip_suffix(zone.0.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DnsName {
    type Err = NetParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some(relative) = text.strip_suffix('.') else {
            return Err(NetParseError(format!(
                "{text:?} is not absolute: end it with a dot, like \"{text}.\""
            )));
        };
        if relative.is_empty() {
            return Err(NetParseError("the root \".\" cannot be used here".into()));
        }
        let chars = relative.chars().count();
        if chars > NAME_CHARS {
            return Err(NetParseError(format!(
                "is {chars} characters; at most {NAME_CHARS} are allowed"
            )));
        }
        for label in relative.split('.') {
            if label.is_empty() {
                return Err(NetParseError(format!("{text:?} has an empty label")));
            }
            if label.len() > LABEL_CHARS {
                return Err(NetParseError(format!(
                    "label {label:?} is {} characters; at most {LABEL_CHARS} are allowed",
                    label.len()
                )));
            }
            if let Some(bad) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
            {
                return Err(NetParseError(format!(
                    "{text:?} holds {bad:?}: use ASCII letters, digits, `-` and `_`"
                )));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(NetParseError(format!(
                    "label {label:?} starts or ends with `-`"
                )));
            }
        }
        Ok(Self(text.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(text: &str) -> IpSubnet {
        text.parse().expect("valid subnet")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn subnets_parse_and_show() {
        for text in [
            "10.20.0.0/16",
            "0.0.0.0/0",
            "192.0.2.7/32",
            "2001:db8::/32",
            "::/0",
            "2001:db8::1/128",
        ] {
            assert_eq!(subnet(text).to_string(), text);
        }
        assert_eq!(subnet("10.20.0.0/16").prefix_len(), 16);
        assert_eq!(subnet("10.20.0.0/16").addr(), ip("10.20.0.0"));
    }

    #[test]
    fn bad_subnets_say_why() {
        let cases = [
            ("10.20.0.0", "has no prefix length"),
            ("10.20.0/16", "is not an IP address"),
            ("edge/8", "is not an IP address"),
            (
                "10.0.0.0/33",
                "\"33\" is not a prefix length of an IPv4 address (0..=32)",
            ),
            ("2001:db8::/129", "of an IPv6 address (0..=128)"),
            ("10.0.0.0/-1", "is not a prefix length"),
            ("10.20.1.0/16", "write \"10.20.0.0/16\""),
            ("2001:db8::1/64", "write \"2001:db8::/64\""),
        ];
        for (text, want) in cases {
            let error = text.parse::<IpSubnet>().expect_err(text).to_string();
            assert!(error.contains(want), "{text}: {error}");
        }
    }

    #[test]
    fn contains_and_covers_follow_the_prefix() {
        let net = subnet("10.20.0.0/16");
        assert!(net.contains(ip("10.20.0.0")));
        assert!(net.contains(ip("10.20.255.255")));
        assert!(!net.contains(ip("10.21.0.0")));
        assert!(!net.contains(ip("::ffff:10.21.0.1")));
        assert!(net.contains(ip("::ffff:10.20.0.1")), "mapped IPv4 is IPv4");
        assert!(!net.contains(ip("2001:db8::1")), "never across families");
        assert!(subnet("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!subnet("0.0.0.0/0").contains(ip("::1")));
        assert!(subnet("::/0").contains(ip("::1")));
        assert!(net.covers(&subnet("10.20.3.0/24")));
        assert!(net.covers(&net));
        assert!(
            !net.covers(&subnet("10.0.0.0/8")),
            "a wider block is not covered"
        );
        assert!(!net.covers(&subnet("10.21.0.0/24")));
    }

    #[test]
    fn new_clears_host_bits_and_unmaps_ipv4() {
        let net = IpSubnet::new(ip("10.20.30.40"), 20).expect("valid length");
        assert_eq!(net.to_string(), "10.20.16.0/20");
        assert_eq!(IpSubnet::new(ip("10.0.0.1"), 0), Some(subnet("0.0.0.0/0")));
        assert_eq!(IpSubnet::new(ip("10.0.0.1"), 33), None);
        assert_eq!(
            IpSubnet::new(ip("::ffff:10.20.30.40"), 120),
            Some(subnet("10.20.30.0/24"))
        );
        assert_eq!(
            IpSubnet::new(ip("2001:db8:1:2::9"), 48),
            Some(subnet("2001:db8:1::/48"))
        );
        assert_eq!(
            IpSubnet::host(ip("::ffff:192.0.2.1")),
            subnet("192.0.2.1/32")
        );
        assert_eq!(IpSubnet::host(ip("2001:db8::1")), subnet("2001:db8::1/128"));
    }

    #[test]
    fn names_are_absolute_and_lower_cased() {
        let name: DnsName = "Edge.Tern.TEST.".parse().expect("valid");
        assert_eq!(name.as_str(), "edge.tern.test.");
        assert_eq!(name.to_string(), "edge.tern.test.");
        let underscore: DnsName = "_dns.x-1.test.".parse().expect("valid");
        assert_eq!(underscore.as_str(), "_dns.x-1.test.");
        let long = format!("{}.{}.", "a".repeat(63), "b".repeat(63));
        assert!(long.parse::<DnsName>().is_ok());
    }

    #[test]
    fn bad_names_say_why() {
        let long_label = format!("{}.test.", "a".repeat(64));
        let long_name = format!("{}.", ["abcdefghi"; 26].join("."));
        let cases = [
            ("edge.tern.test", "is not absolute: end it with a dot"),
            (".", "the root"),
            ("edge..test.", "has an empty label"),
            (".edge.", "has an empty label"),
            ("edge one.test.", "holds ' '"),
            ("édge.test.", "holds 'é'"),
            ("-edge.test.", "starts or ends with `-`"),
            ("edge-.test.", "starts or ends with `-`"),
            (long_label.as_str(), "is 64 characters; at most 63"),
            (long_name.as_str(), "is 259 characters; at most 253"),
        ];
        for (text, want) in cases {
            let error = text.parse::<DnsName>().expect_err(text).to_string();
            assert!(error.contains(want), "{text}: {error}");
        }
    }

    #[test]
    fn names_within_a_zone() {
        let name: DnsName = "edge.tern.test.".parse().expect("valid");
        let zone: DnsName = "tern.test.".parse().expect("valid");
        let other: DnsName = "xtern.test.".parse().expect("valid");
        assert!(name.is_within(&zone));
        assert!(name.is_within(&name));
        assert!(!zone.is_within(&name));
        assert!(!name.is_within(&other));
        let sibling: DnsName = "edge.xtern.test.".parse().expect("valid");
        assert!(!sibling.is_within(&zone), "a suffix is not a parent zone");
    }
}
