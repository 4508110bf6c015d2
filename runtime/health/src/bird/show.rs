//! Typed readings of BIRD replies: `show protocols` ([`ProtocolStatus`]), `show route`
//! ([`Route`], with its [`Destination`], [`NextHop`]s and attributes) and the answers
//! to `enable`/`disable` ([`Toggled`]). Each takes a complete [`Reply`] and never
//! panics on odd text; what does not fit is a [`ReplyError::Unexpected`].
//!
//! ```text
//!   1007-Table master4:
//!    10.77.100.10/32      unicast [edge2 20:19:39.418] * (100) [AS65002i]   Route (primary)
//!    \tvia 10.77.12.2 on to-edge2                                           its NextHop
//!   1008-\tType: BGP univ                                                    attributes
//!   1012-\tBGP.as_path: 65002                                                (`all` only)
//!   0000
//! ```

use std::fmt;
use std::net::IpAddr;

use super::reply::{Reply, ReplyError};

/// A protocol's state as `show protocols` prints it.
///
/// BIRD prints a protocol disabled by `disable` (or `disabled;` in its config) as
/// `down`, like one that is down for any other reason: the listing has no separate
/// "disabled" state, so a static protocol that is `down` is, in practice, disabled.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolState {
    /// `up`: running; a static protocol announces its routes.
    Up,
    /// `start`: starting (a BGP session not yet established).
    Start,
    /// `stop`: shutting down.
    Stop,
    /// `flush`: down, its routes still being removed.
    Flush,
    /// `down`: not running (disabled, or failed).
    Down,
    /// A state this client does not know, as printed.
    Other(String),
}

impl ProtocolState {
    /// The state from its printed word.
    pub fn parse(word: &str) -> ProtocolState {
        match word {
            "up" => ProtocolState::Up,
            "start" => ProtocolState::Start,
            "stop" => ProtocolState::Stop,
            "flush" => ProtocolState::Flush,
            "down" => ProtocolState::Down,
            other => ProtocolState::Other(other.to_owned()),
        }
    }

    /// Whether the protocol is enabled and running or coming up (`up`, `start`).
    pub fn is_running(&self) -> bool {
        matches!(self, ProtocolState::Up | ProtocolState::Start)
    }

    /// Whether the protocol is stopped or stopping (`down`, `flush`, `stop`).
    pub fn is_stopped(&self) -> bool {
        matches!(
            self,
            ProtocolState::Down | ProtocolState::Flush | ProtocolState::Stop
        )
    }
}

impl fmt::Display for ProtocolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtocolState::Up => "up",
            ProtocolState::Start => "start",
            ProtocolState::Stop => "stop",
            ProtocolState::Flush => "flush",
            ProtocolState::Down => "down",
            ProtocolState::Other(word) => word,
        })
    }
}

/// One row of `show protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolStatus {
    /// The protocol's name.
    pub name: String,
    /// Its kind: `Static`, `BGP`, `Device`, ….
    pub kind: String,
    /// Its main table (`---` when it has none).
    pub table: String,
    /// Its state.
    pub state: ProtocolState,
    /// The rest of the row: since when, then protocol-specific info (`Established`).
    pub details: String,
}

impl ProtocolStatus {
    /// Every row (code 1002) of a `show protocols` reply.
    pub fn from_reply(reply: &Reply) -> Result<Vec<ProtocolStatus>, ReplyError> {
        reply
            .with_code(1002)
            .map(|line| {
                let text = line.text.as_str();
                let missing =
                    || ReplyError::unexpected("a protocol row with fewer than 4 columns", text);
                let (name, rest) = token(text).ok_or_else(missing)?;
                let (kind, rest) = token(rest).ok_or_else(missing)?;
                let (table, rest) = token(rest).ok_or_else(missing)?;
                let (state, rest) = token(rest).ok_or_else(missing)?;
                Ok(ProtocolStatus {
                    name: name.to_owned(),
                    kind: kind.to_owned(),
                    table: table.to_owned(),
                    state: ProtocolState::parse(state),
                    details: rest.trim().to_owned(),
                })
            })
            .collect()
    }
}

/// The first whitespace-separated word of `s` and what follows it.
fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    Some(s.split_at(s.find(char::is_whitespace).unwrap_or(s.len())))
}

/// Where a route leads: the word after the network on a `show route` row (BIRD's
/// `rta_dest_name`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// `unicast`: forwarded to the route's [`Route::next_hops`].
    Unicast,
    /// `blackhole`: dropped silently (how an edge's static anycast route is held).
    Blackhole,
    /// `unreachable`: dropped with an ICMP unreachable; also a BGP route whose next
    /// hop this router cannot resolve.
    Unreachable,
    /// `prohibited`: dropped with an ICMP administratively prohibited.
    Prohibited,
    /// Anything else, as printed (empty for a route with no destination, such as a
    /// ROA or flow route).
    Other(String),
}

impl Destination {
    /// The destination from its printed word.
    pub fn parse(word: &str) -> Destination {
        match word {
            "unicast" => Destination::Unicast,
            "blackhole" => Destination::Blackhole,
            "unreachable" => Destination::Unreachable,
            "prohibited" => Destination::Prohibited,
            other => Destination::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Destination::Unicast => "unicast",
            Destination::Blackhole => "blackhole",
            Destination::Unreachable => "unreachable",
            Destination::Prohibited => "prohibited",
            Destination::Other(word) => word,
        })
    }
}

/// One next hop of a unicast route: a tab-indented code 1007 line under its row,
/// `via 10.77.12.2 on to-edge2` (a gateway) or `dev lo` (a device route), with
/// optional `mpls 100/200`, `onlink` and, on each hop of a multipath route,
/// `weight N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The gateway; `None` for a device route (`dev IFACE`).
    pub gateway: Option<IpAddr>,
    /// The interface the route leaves by.
    pub interface: String,
    /// The hop's weight (`weight N`, 1 to 256); BIRD prints it only on the hops of a
    /// multipath route.
    pub weight: Option<u16>,
    /// `onlink`: the gateway is taken as directly reachable on the interface.
    pub onlink: bool,
    /// The MPLS labels pushed (`mpls 100/200`), outermost first; empty for none.
    pub mpls: Vec<u32>,
}

impl NextHop {
    /// Reads a next-hop line (its leading tab already removed); `Err` names what is
    /// wrong with it.
    fn parse(text: &str) -> Result<NextHop, &'static str> {
        let mut words = text.split_whitespace();
        let (gateway, interface) = match words.next() {
            Some("via") => {
                let gateway = words
                    .next()
                    .and_then(|w| w.parse::<IpAddr>().ok())
                    .ok_or("a `via` next hop without a gateway address")?;
                if words.next() != Some("on") {
                    return Err("a `via` next hop without `on INTERFACE`");
                }
                (Some(gateway), words.next())
            }
            Some("dev") => (None, words.next()),
            _ => return Err("an indented route line that is neither `via …` nor `dev …`"),
        };
        let mut hop = NextHop {
            gateway,
            interface: interface
                .ok_or("a next hop without an interface")?
                .to_owned(),
            weight: None,
            onlink: false,
            mpls: Vec::new(),
        };
        while let Some(word) = words.next() {
            match word {
                "onlink" => hop.onlink = true,
                "weight" => {
                    let weight = words.next().and_then(|w| w.parse().ok());
                    hop.weight = Some(weight.ok_or("a next hop `weight` without a number")?);
                }
                "mpls" => {
                    let labels = words
                        .next()
                        .map(|w| w.split('/').map(str::parse).collect::<Result<_, _>>());
                    hop.mpls = match labels {
                        Some(Ok(labels)) => labels,
                        _ => return Err("a next hop `mpls` without labels"),
                    };
                }
                _ => return Err("an unknown word on a next-hop line"),
            }
        }
        Ok(hop)
    }
}

/// One route of a `show route` reply (with `all`, its attributes too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The network, e.g. `203.0.113.10/32`.
    pub network: String,
    /// The table it is in, e.g. `master4`.
    pub table: String,
    /// Where it leads.
    pub destination: Destination,
    /// Its next hops: one or more for a [`Destination::Unicast`] route (more than one
    /// for a multipath route), none otherwise.
    pub next_hops: Vec<NextHop>,
    /// The protocol that brought it.
    pub protocol: String,
    /// Whether it is the network's best route (the one exported): `*` after the
    /// brackets, or `!` (best, but the kernel table disagrees).
    pub primary: bool,
    /// Its attributes (`all` only), e.g. (`BGP.as_path`, `65001 65001`); a value
    /// BIRD wrapped onto further lines (a long community list) is joined with spaces.
    pub attributes: Vec<(String, String)>,
}

impl Route {
    /// Every route of a `show route [for …] [protocol …] [all]` reply (not `count`).
    ///
    /// BIRD 2 (`nest/rt-show.c`) prints, all as code 1007: `Table NAME:` before each
    /// table's routes, an empty line between tables, one row per route
    /// (`NETWORK  DESTINATION [PROTOCOL TIME from ADDR] * (PREF) [INFO]`, the network
    /// left blank on the network's further routes), and under a unicast row a
    /// tab-indented [`NextHop`] line per hop. With `all`, a 1008 `Type:` line and 1012
    /// attribute lines (`\tKEY: VALUE`; `\t\t…` continues a wrapped value) follow.
    /// Other codes are ignored; a line that fits none of this is
    /// [`ReplyError::Unexpected`].
    pub fn from_reply(reply: &Reply) -> Result<Vec<Route>, ReplyError> {
        let mut routes: Vec<Route> = Vec::new();
        let mut table = String::new();
        for line in reply.lines() {
            let text = line.text.as_str();
            match line.code.value() {
                1007 => {
                    if text.trim().is_empty() {
                        // Between two tables.
                        continue;
                    }
                    if let Some(name) = text
                        .strip_prefix("Table ")
                        .and_then(|t| t.strip_suffix(':'))
                    {
                        table = name.to_owned();
                        continue;
                    }
                    if let Some(hop) = text.strip_prefix('\t') {
                        let route =
                            routes
                                .last_mut()
                                .filter(|r| r.table == table)
                                .ok_or_else(|| {
                                    ReplyError::unexpected(
                                        "a next hop with no route before it",
                                        text,
                                    )
                                })?;
                        if route.destination != Destination::Unicast {
                            return Err(ReplyError::unexpected(
                                "a next hop under a route that is not unicast",
                                text,
                            ));
                        }
                        let hop = NextHop::parse(hop)
                            .map_err(|what| ReplyError::unexpected(what, text))?;
                        route.next_hops.push(hop);
                        continue;
                    }
                    let previous = routes.last().filter(|r| r.table == table);
                    routes.push(Route::parse_row(text, previous, &table)?);
                }
                1008 | 1012 => {
                    let route = routes.last_mut().ok_or_else(|| {
                        ReplyError::unexpected("an attribute with no route before it", text)
                    })?;
                    if let Some(more) = text.strip_prefix("\t\t") {
                        let (_, value) = route.attributes.last_mut().ok_or_else(|| {
                            ReplyError::unexpected(
                                "a wrapped value with no attribute before it",
                                text,
                            )
                        })?;
                        value.push(' ');
                        value.push_str(more.trim());
                        continue;
                    }
                    let (key, value) = text.split_once(':').ok_or_else(|| {
                        ReplyError::unexpected("an attribute row without ':'", text)
                    })?;
                    route
                        .attributes
                        .push((key.trim().to_owned(), value.trim().to_owned()));
                }
                _ => {}
            }
        }
        Ok(routes)
    }

    /// Reads a route row; `previous` is the route before it in the same table (whose
    /// network a row starting blank shares).
    fn parse_row(text: &str, previous: Option<&Route>, table: &str) -> Result<Route, ReplyError> {
        let (network, rest) = if text.starts_with(char::is_whitespace) {
            let previous = previous
                .ok_or_else(|| ReplyError::unexpected("a route with no network before it", text))?;
            (previous.network.clone(), text)
        } else {
            let (network, rest) =
                token(text).ok_or_else(|| ReplyError::unexpected("an empty route row", text))?;
            (network.to_owned(), rest)
        };
        let (destination, bracket) = rest
            .split_once('[')
            .ok_or_else(|| ReplyError::unexpected("a route row without [protocol …]", text))?;
        let (inside, after) = bracket
            .split_once(']')
            .ok_or_else(|| ReplyError::unexpected("a route row without a closing ]", text))?;
        let (protocol, _) = token(inside)
            .ok_or_else(|| ReplyError::unexpected("a route row without a protocol", text))?;
        Ok(Route {
            network,
            table: table.to_owned(),
            destination: Destination::parse(destination.trim()),
            next_hops: Vec::new(),
            protocol: protocol.to_owned(),
            primary: after.trim_start().starts_with(['*', '!']),
            attributes: Vec::new(),
        })
    }

    /// The value of attribute `key` (`BGP.as_path`, `Type`, …).
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The BGP AS path; `None` when the route has none or it holds AS sets.
    pub fn as_path(&self) -> Option<Vec<u32>> {
        self.attribute("BGP.as_path")?
            .split_whitespace()
            .map(|asn| asn.parse().ok())
            .collect()
    }
}

/// What `enable` or `disable` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggled {
    /// The protocol changed state (`0009 disabled`, `0011 enabled`).
    Changed,
    /// It was already so (`0008 already disabled`, `0010 already enabled`).
    Unchanged,
}

impl Toggled {
    /// Reads the answer to `enable` (`enable = true`) or `disable` of one protocol.
    pub fn from_reply(reply: &Reply, enable: bool) -> Result<Toggled, ReplyError> {
        let (changed, unchanged) = if enable { (11, 10) } else { (9, 8) };
        let mut answer = None;
        for line in reply.lines() {
            let this = match line.code.value() {
                code if code == changed => Toggled::Changed,
                code if code == unchanged => Toggled::Unchanged,
                _ => continue,
            };
            if answer.replace(this).is_some() {
                return Err(ReplyError::unexpected(
                    "more than one protocol toggled",
                    &line.text,
                ));
            }
        }
        answer.ok_or_else(|| {
            ReplyError::unexpected(
                if enable {
                    "no 0010/0011 line"
                } else {
                    "no 0008/0009 line"
                },
                &reply.last().text,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::reply::ReplyDecoder;
    use super::*;

    fn reply(wire: &[u8]) -> Reply {
        let mut d = ReplyDecoder::new();
        d.handle_bytes(wire).expect("decodes");
        d.poll_reply().expect("one whole reply")
    }

    /// `show protocols` from BIRD 2.0.12.
    const PROTOCOLS: &[u8] = b"2002-Name       Proto      Table      State  Since         Info\n\
1002-device1    Device     ---        up     16:52:05.778  \n \
anycast4   Static     master4    up     16:52:05.778  \n \
anycast4_prepend Static     master4    down   16:52:05.778  \n \
uplink     BGP        ---        start  2024-01-02 16:53:30  Active        Socket: Connection closed\n\
0000 \n";

    #[test]
    fn show_protocols_rows() {
        let rows = ProtocolStatus::from_reply(&reply(PROTOCOLS)).expect("parses");
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["device1", "anycast4", "anycast4_prepend", "uplink"]);
        assert_eq!(rows[1].kind, "Static");
        assert_eq!(rows[1].table, "master4");
        assert_eq!(rows[1].state, ProtocolState::Up);
        assert_eq!(rows[2].state, ProtocolState::Down);
        assert_eq!(rows[3].state, ProtocolState::Start);
        assert_eq!(
            rows[3].details,
            "2024-01-02 16:53:30  Active        Socket: Connection closed"
        );
        assert_eq!(rows[0].table, "---");
    }

    #[test]
    fn protocol_states() {
        assert!(ProtocolState::Up.is_running() && ProtocolState::Start.is_running());
        for word in ["down", "flush", "stop"] {
            assert!(ProtocolState::parse(word).is_stopped(), "{word}");
            assert_eq!(ProtocolState::parse(word).to_string(), word);
        }
        let odd = ProtocolState::parse("???");
        assert!(!odd.is_running() && !odd.is_stopped());
        assert_eq!(odd.to_string(), "???");
    }

    #[test]
    fn short_protocol_row_is_unexpected() {
        let e = ProtocolStatus::from_reply(&reply(b"1002-anycast4 Static\n0000 \n"))
            .expect_err("too few columns");
        assert!(e.to_string().contains("fewer than 4 columns"), "{e}");
    }

    /// `show route for 203.0.113.10/32 all` on a router with two paths.
    const ROUTES: &[u8] = b"1007-Table master4:\n \
203.0.113.10/32      unreachable [edge1 16:52:29.812 from 127.0.0.1] * (100) [AS65001i]\n\
1008-\tType: BGP univ\n\
1012-\tBGP.origin: IGP\n \
\tBGP.as_path: 65001\n \
\tBGP.next_hop: 127.0.0.1\n \
\tBGP.local_pref: 100\n\
1007-                     unreachable [edge2 16:52:30.001 from 127.0.0.3] (100) [AS65002i]\n\
1008-\tType: BGP univ\n\
1012-\tBGP.as_path: 65002 65002 65002\n\
0000 \n";

    #[test]
    fn show_route_all_rows_and_attributes() {
        let routes = Route::from_reply(&reply(ROUTES)).expect("parses");
        assert_eq!(routes.len(), 2);
        let (a, b) = (&routes[0], &routes[1]);
        assert_eq!(a.network, "203.0.113.10/32");
        assert_eq!(a.table, "master4");
        assert_eq!(a.destination, Destination::Unreachable);
        assert!(a.next_hops.is_empty());
        assert_eq!(a.protocol, "edge1");
        assert!(a.primary);
        assert_eq!(a.attribute("Type"), Some("BGP univ"));
        assert_eq!(a.attribute("BGP.next_hop"), Some("127.0.0.1"));
        assert_eq!(a.as_path(), Some(vec![65001]));
        assert_eq!(b.network, "203.0.113.10/32", "blank row: same network");
        assert_eq!(b.protocol, "edge2");
        assert!(!b.primary);
        assert_eq!(b.as_path(), Some(vec![65002, 65002, 65002]));
    }

    #[test]
    fn static_route_without_attributes() {
        let wire = b"1007-Table master4:\n 203.0.113.10/32      blackhole [anycast4 16:52:29.812] * (200)\n0000 \n";
        let routes = Route::from_reply(&reply(wire)).expect("parses");
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].destination, Destination::Blackhole);
        assert_eq!(routes[0].protocol, "anycast4");
        assert_eq!(routes[0].as_path(), None);
    }

    #[test]
    fn as_sets_are_not_an_as_path() {
        let wire = b"1007-10.0.0.0/8 unreachable [x 1] *\n1012-\tBGP.as_path: 65001 {65002 65003}\n0000 \n";
        let routes = Route::from_reply(&reply(wire)).expect("parses");
        assert_eq!(routes[0].as_path(), None);
    }

    #[test]
    fn odd_route_rows_are_unexpected() {
        for wire in [
            &b"1007-                     unreachable [x 1]\n0000 \n"[..],
            b"1007-Table a:\n 10.0.0.0/8 blackhole [x 1]\n Table b:\n   blackhole [y 1]\n0000 \n",
            b"1007-10.0.0.0/8 unreachable\n0000 \n",
            b"1007-10.0.0.0/8 unreachable [x\n0000 \n",
            b"1007-10.0.0.0/8 unreachable []\n0000 \n",
            b"1008-\tType: BGP\n0000 \n",
            b"1007-10.0.0.0/8 unreachable [x 1]\n1008-\tno colon\n0000 \n",
            // `show route count` is not a listing of routes.
            b"1007-6 of 6 routes for 5 networks in table master4\n0014 Total: 6 of 6 routes\n",
        ] {
            let e = Route::from_reply(&reply(wire)).expect_err("odd");
            assert!(
                matches!(e, ReplyError::Unexpected { .. }),
                "{:?}: {e}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    /// `show route for 10.77.100.10/32 all` from BIRD 2.0.12 on a router with an eBGP
    /// session to an edge over a veth pair (`to-edge2` 10.77.12.1/30 ↔ 10.77.12.2),
    /// as in the topology tests: a BGP-learned route with a gateway.
    const DIRECT_ALL: &str = concat!(
        "1007-Table master4:\n",
        " 10.77.100.10/32      unicast [edge2 20:19:39.418] * (100) [AS65002i]\n",
        " \tvia 10.77.12.2 on to-edge2\n",
        "1008-\tType: BGP univ\n",
        "1012-\tBGP.origin: IGP\n",
        " \tBGP.as_path: 65002\n",
        " \tBGP.next_hop: 10.77.12.2\n",
        " \tBGP.local_pref: 100\n",
        "0000 \n",
    );

    /// `show route` on the same router: the BGP route and the veth's direct route.
    const DIRECT_TABLE: &str = concat!(
        "1007-Table master4:\n",
        " 10.77.100.10/32      unicast [edge2 20:19:39.418] * (100) [AS65002i]\n",
        " \tvia 10.77.12.2 on to-edge2\n",
        " 10.77.12.0/30        unicast [direct1 20:19:38.073] * (240)\n",
        " \tdev to-edge2\n",
        "0000 \n",
    );

    #[test]
    fn a_bgp_route_with_a_gateway() {
        let routes = Route::from_reply(&reply(DIRECT_ALL.as_bytes())).expect("parses");
        assert_eq!(routes.len(), 1);
        let r = &routes[0];
        assert_eq!(
            (r.network.as_str(), r.table.as_str(), r.protocol.as_str()),
            ("10.77.100.10/32", "master4", "edge2")
        );
        assert_eq!(r.destination, Destination::Unicast);
        assert!(r.primary);
        assert_eq!(
            r.next_hops,
            [NextHop {
                gateway: Some(IpAddr::from([10, 77, 12, 2])),
                interface: "to-edge2".to_owned(),
                weight: None,
                onlink: false,
                mpls: Vec::new(),
            }]
        );
        assert_eq!(r.attribute("Type"), Some("BGP univ"));
        assert_eq!(r.attribute("BGP.next_hop"), Some("10.77.12.2"));
        assert_eq!(r.as_path(), Some(vec![65002]));

        let routes = Route::from_reply(&reply(DIRECT_TABLE.as_bytes())).expect("parses");
        let hops: Vec<(&str, Option<IpAddr>, &str)> = routes
            .iter()
            .flat_map(|r| {
                r.next_hops
                    .iter()
                    .map(|h| (r.network.as_str(), h.gateway, h.interface.as_str()))
            })
            .collect();
        assert_eq!(
            hops,
            [
                (
                    "10.77.100.10/32",
                    Some(IpAddr::from([10, 77, 12, 2])),
                    "to-edge2"
                ),
                ("10.77.12.0/30", None, "to-edge2"),
            ]
        );
        assert_eq!(routes[1].protocol, "direct1");
        assert!(routes.iter().all(|r| r.attributes.is_empty()));
    }

    /// `show route table all` from BIRD 2.0.12 (static routes on `lo` with `onlink`,
    /// two BGP sessions on loopback whose next hops it cannot resolve, and three
    /// tables): every destination, a multipath route, MPLS labels, a device route,
    /// IPv6 and the empty line between tables.
    const TABLES: &str = concat!(
        "1007-Table master4:\n",
        " 198.51.100.0/24      unreachable [igp4 20:18:50.031] * (200)\n",
        " 198.51.101.0/24      prohibited [igp4 20:18:50.031] * (200)\n",
        " 203.0.113.10/32      unreachable [edge1 20:18:50.828 from 127.0.0.1] * (100) [AS65001i]\n",
        "                      unreachable [edge2 20:18:52.350 from 127.0.0.3] (100) [AS65002i]\n",
        " 10.0.4.0/24          unicast [igp4 20:18:50.031] * (200)\n",
        " \tvia 198.51.100.2 on lo onlink weight 3\n",
        " \tvia 198.51.100.1 on lo onlink weight 1\n",
        " 10.0.5.0/24          unicast [igp4 20:18:50.031] * (200)\n",
        " \tvia 198.51.100.1 on lo mpls 100/200 onlink\n",
        " \n",
        " Table master6:\n",
        " 2001:db8::/32        unicast [static6 20:18:50.031] * (200)\n",
        " \tdev lo\n",
        " 2001:db8:1::/48      unicast [static6 20:18:50.031] * (200)\n",
        " \tvia 2001:db8:ff::1 on lo onlink\n",
        " \n",
        " Table extra4:\n",
        " 192.0.2.0/24         blackhole [extra 20:18:50.031] * (200)\n",
        "0000 \n",
    );

    #[test]
    fn tables_destinations_multipath_and_device_routes() {
        let routes = Route::from_reply(&reply(TABLES.as_bytes())).expect("parses");
        let rows: Vec<(&str, &str, String, &str, bool, usize)> = routes
            .iter()
            .map(|r| {
                (
                    r.table.as_str(),
                    r.network.as_str(),
                    r.destination.to_string(),
                    r.protocol.as_str(),
                    r.primary,
                    r.next_hops.len(),
                )
            })
            .collect();
        let row = |t, n, d: &str, p, primary, hops| (t, n, d.to_owned(), p, primary, hops);
        assert_eq!(
            rows,
            [
                row("master4", "198.51.100.0/24", "unreachable", "igp4", true, 0),
                row("master4", "198.51.101.0/24", "prohibited", "igp4", true, 0),
                row(
                    "master4",
                    "203.0.113.10/32",
                    "unreachable",
                    "edge1",
                    true,
                    0
                ),
                row(
                    "master4",
                    "203.0.113.10/32",
                    "unreachable",
                    "edge2",
                    false,
                    0
                ),
                row("master4", "10.0.4.0/24", "unicast", "igp4", true, 2),
                row("master4", "10.0.5.0/24", "unicast", "igp4", true, 1),
                row("master6", "2001:db8::/32", "unicast", "static6", true, 1),
                row("master6", "2001:db8:1::/48", "unicast", "static6", true, 1),
                row("extra4", "192.0.2.0/24", "blackhole", "extra", true, 0),
            ]
        );
        assert_eq!(routes[1].destination, Destination::Prohibited);
        let hop = |gw: [u8; 4], weight, mpls: &[u32]| NextHop {
            gateway: Some(IpAddr::from(gw)),
            interface: "lo".to_owned(),
            weight,
            onlink: true,
            mpls: mpls.to_vec(),
        };
        assert_eq!(
            routes[4].next_hops,
            [
                hop([198, 51, 100, 2], Some(3), &[]),
                hop([198, 51, 100, 1], Some(1), &[])
            ]
        );
        assert_eq!(
            routes[5].next_hops,
            [hop([198, 51, 100, 1], None, &[100, 200])]
        );
        assert_eq!(
            routes[6].next_hops,
            [NextHop {
                gateway: None,
                interface: "lo".to_owned(),
                weight: None,
                onlink: false,
                mpls: Vec::new(),
            }]
        );
        assert_eq!(
            routes[7].next_hops[0].gateway,
            "2001:db8:ff::1".parse::<IpAddr>().ok()
        );
    }

    /// `show route for 203.0.113.10/32 all` from BIRD 2.0.12 on a router whose two
    /// multihop BGP neighbours (127.0.0.1, 127.0.0.3) set next hops it resolves through
    /// a static `via 198.51.100.1%lo onlink` route; the first carries 70 communities,
    /// which BIRD wraps onto a `\t\t` line.
    const RECURSIVE_ALL: &str = concat!(
        "1007-Table master4:\n",
        " 203.0.113.10/32      unicast [edge1 20:19:25.521 from 127.0.0.1] * (100/?) [AS65001i]\n",
        " \tvia 198.51.100.1 on lo onlink\n",
        "1008-\tType: BGP univ\n",
        "1012-\tBGP.origin: IGP\n",
        " \tBGP.as_path: 65001\n",
        " \tBGP.next_hop: 198.51.100.7\n",
        " \tBGP.local_pref: 100\n",
        " \tBGP.community: (65001,1) (65001,2) (65001,3) (65001,4) (65001,5) (65001,6) (65001,7) (65001,8) (65001,9) (65001,10) (65001,11) (65001,12) (65001,13) (65001,14) (65001,15) (65001,16) (65001,17) (65001,18) (65001,19) (65001,20) (65001,21) (65001,22) (65001,23) (65001,24) (65001,25) (65001,26) (65001,27) (65001,28) (65001,29) (65001,30) (65001,31) (65001,32) (65001,33) (65001,34) (65001,35) (65001,36) (65001,37) (65001,38) (65001,39) (65001,40) (65001,41) (65001,42) (65001,43)\n",
        " \t\t(65001,44) (65001,45) (65001,46) (65001,47) (65001,48) (65001,49) (65001,50) (65001,51) (65001,52) (65001,53) (65001,54) (65001,55) (65001,56) (65001,57) (65001,58) (65001,59) (65001,60) (65001,61) (65001,62) (65001,63) (65001,64) (65001,65) (65001,66) (65001,67) (65001,68) (65001,69) (65001,70)\n",
        " \tBGP.large_community: (65001, 1, 2)\n",
        "1007-                     unicast [edge2 20:19:24.122 from 127.0.0.3] (100/?) [AS65002i]\n",
        " \tvia 198.51.100.1 on lo onlink\n",
        "1008-\tType: BGP univ\n",
        "1012-\tBGP.origin: IGP\n",
        " \tBGP.as_path: 65002 65002\n",
        " \tBGP.next_hop: 198.51.100.8\n",
        " \tBGP.local_pref: 100\n",
        "0000 \n",
    );

    #[test]
    fn recursive_next_hops_and_wrapped_attribute_values() {
        let routes = Route::from_reply(&reply(RECURSIVE_ALL.as_bytes())).expect("parses");
        assert_eq!(routes.len(), 2);
        for r in &routes {
            assert_eq!(r.network, "203.0.113.10/32");
            assert_eq!(r.destination, Destination::Unicast);
            let gateways: Vec<_> = r.next_hops.iter().map(|h| h.gateway).collect();
            assert_eq!(gateways, [Some(IpAddr::from([198, 51, 100, 1]))]);
        }
        let (a, b) = (&routes[0], &routes[1]);
        assert!(a.primary && !b.primary);
        assert_eq!(
            (a.protocol.as_str(), b.protocol.as_str()),
            ("edge1", "edge2")
        );
        let communities: Vec<&str> = a
            .attribute("BGP.community")
            .expect("communities")
            .split(' ')
            .collect();
        assert_eq!(communities.len(), 70, "both lines, joined");
        assert_eq!(
            (communities[0], communities[43], communities[69]),
            ("(65001,1)", "(65001,44)", "(65001,70)")
        );
        assert_eq!(a.attribute("BGP.large_community"), Some("(65001, 1, 2)"));
        assert_eq!(a.attribute("BGP.next_hop"), Some("198.51.100.7"));
        assert_eq!(b.as_path(), Some(vec![65002, 65002]));
        assert_eq!(b.attributes.len(), 5);
    }

    #[test]
    fn a_sync_error_mark_is_still_the_primary_route() {
        let wire = b"1007-10.0.0.0/8 unicast [k 1] ! (200)\n \tdev eth0\n0000 \n";
        let routes = Route::from_reply(&reply(wire)).expect("parses");
        assert!(routes[0].primary);
    }

    #[test]
    fn odd_next_hops_are_unexpected() {
        for (lines, why) in [
            ("\tvia 10.0.0.1 on eth0\n", "no route before it"),
            (
                "Table a:\n 10.0.0.0/8 unicast [x 1] *\n Table b:\n \tdev lo\n",
                "no route before it",
            ),
            (
                "10.0.0.0/8 blackhole [x 1] *\n \tvia 10.0.0.1 on eth0\n",
                "not unicast",
            ),
            (
                "10.0.0.0/8 unicast [x 1] *\n \tvia eth0\n",
                "gateway address",
            ),
            (
                "10.0.0.0/8 unicast [x 1] *\n \tvia 10.0.0.1 eth0\n",
                "on INTERFACE",
            ),
            (
                "10.0.0.0/8 unicast [x 1] *\n \tvia 10.0.0.1 on\n",
                "without an interface",
            ),
            (
                "10.0.0.0/8 unicast [x 1] *\n \tdev\n",
                "without an interface",
            ),
            ("10.0.0.0/8 unicast [x 1] *\n \tdev lo weight x\n", "weight"),
            ("10.0.0.0/8 unicast [x 1] *\n \tdev lo mpls\n", "mpls"),
            ("10.0.0.0/8 unicast [x 1] *\n \tdev lo mpls 1/x\n", "mpls"),
            (
                "10.0.0.0/8 unicast [x 1] *\n \tdev lo nearby\n",
                "unknown word",
            ),
            ("10.0.0.0/8 unicast [x 1] *\n \tfrom 10.0.0.1\n", "neither"),
            (
                "10.0.0.0/8 unicast [x 1] *\n1012-\t\t(1,2)\n",
                "wrapped value",
            ),
        ] {
            let wire = format!("1007-{lines}0000 \n");
            let e = Route::from_reply(&reply(wire.as_bytes())).expect_err("odd");
            assert!(
                matches!(e, ReplyError::Unexpected { .. }) && e.to_string().contains(why),
                "{wire:?}: {e}"
            );
        }
    }

    #[test]
    fn toggles() {
        let r = |wire: &[u8], enable| Toggled::from_reply(&reply(wire), enable);
        assert_eq!(r(b"0009-a: disabled\n0000 \n", false), Ok(Toggled::Changed));
        assert_eq!(
            r(b"0008-a: already disabled\n0000 \n", false),
            Ok(Toggled::Unchanged)
        );
        assert_eq!(r(b"0011-a: enabled\n0000 \n", true), Ok(Toggled::Changed));
        assert_eq!(
            r(b"0010-a: already enabled\n0000 \n", true),
            Ok(Toggled::Unchanged)
        );
        assert!(
            r(b"0011-a: enabled\n0000 \n", false).is_err(),
            "enable answer to disable"
        );
        assert!(r(b"0011-a: enabled\n0010-b: already enabled\n0000 \n", true).is_err());
        assert!(r(b"0000 \n", true).is_err());
    }
}
