//! Typed readings of BIRD replies: `show protocols`, `show route` and the answers to
//! `enable`/`disable`. Each takes a complete [`Reply`] and never panics on odd text;
//! what does not fit is a [`ReplyError::Unexpected`].

use std::fmt;

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

/// One route of `show route … all`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The network, e.g. `203.0.113.10/32`.
    pub network: String,
    /// The table it is in, e.g. `master4`.
    pub table: String,
    /// Where it leads, as printed: `blackhole`, `unreachable`, `via 10.0.0.1 on eth0`.
    pub destination: String,
    /// The protocol that brought it.
    pub protocol: String,
    /// Whether it is the network's best route (the one exported).
    pub primary: bool,
    /// Its attributes (`all` only), e.g. (`BGP.as_path`, `65001 65001`).
    pub attributes: Vec<(String, String)>,
}

impl Route {
    /// Every route of a `show route` reply (routes are code 1007 rows, attributes
    /// 1008 and 1012 rows under them).
    pub fn from_reply(reply: &Reply) -> Result<Vec<Route>, ReplyError> {
        let mut routes: Vec<Route> = Vec::new();
        let mut table = String::new();
        for line in reply.lines() {
            let text = line.text.as_str();
            match line.code.value() {
                1007 => {
                    if let Some(name) = text
                        .strip_prefix("Table ")
                        .and_then(|t| t.strip_suffix(':'))
                    {
                        table = name.to_owned();
                        continue;
                    }
                    // A row that starts blank is another route to the network above.
                    let (network, rest) = if text.starts_with(char::is_whitespace) {
                        let previous = routes.last().ok_or_else(|| {
                            ReplyError::unexpected("a route with no network before it", text)
                        })?;
                        (previous.network.clone(), text)
                    } else {
                        let (network, rest) = token(text)
                            .ok_or_else(|| ReplyError::unexpected("an empty route row", text))?;
                        (network.to_owned(), rest)
                    };
                    let (destination, bracket) = rest.split_once('[').ok_or_else(|| {
                        ReplyError::unexpected("a route row without [protocol …]", text)
                    })?;
                    let (inside, after) = bracket.split_once(']').ok_or_else(|| {
                        ReplyError::unexpected("a route row without a closing ]", text)
                    })?;
                    let (protocol, _) = token(inside).ok_or_else(|| {
                        ReplyError::unexpected("a route row without a protocol", text)
                    })?;
                    routes.push(Route {
                        network,
                        table: table.clone(),
                        destination: destination.trim().to_owned(),
                        protocol: protocol.to_owned(),
                        primary: after.trim_start().starts_with('*'),
                        attributes: Vec::new(),
                    });
                }
                1008 | 1012 => {
                    let route = routes.last_mut().ok_or_else(|| {
                        ReplyError::unexpected("an attribute with no route before it", text)
                    })?;
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
        assert_eq!(a.destination, "unreachable");
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
        assert_eq!(routes[0].destination, "blackhole");
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
            b"1007-10.0.0.0/8 unreachable\n0000 \n",
            b"1007-10.0.0.0/8 unreachable [x\n0000 \n",
            b"1007-10.0.0.0/8 unreachable []\n0000 \n",
            b"1008-\tType: BGP\n0000 \n",
            b"1007-10.0.0.0/8 unreachable [x 1]\n1008-\tno colon\n0000 \n",
        ] {
            let e = Route::from_reply(&reply(wire)).expect_err("odd");
            assert!(
                matches!(e, ReplyError::Unexpected { .. }),
                "{:?}: {e}",
                String::from_utf8_lossy(wire)
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
