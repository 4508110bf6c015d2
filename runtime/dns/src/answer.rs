//! Which addresses answer the edge name for a client (sans-IO: health and time are
//! arguments).
//!
//! ```text
//!  client subnet ──longest prefix──▶ its POP ──healthy edges?──yes──▶ Pop
//!  (ECS or source)        │ no POP          │ no
//!                         │                 ▼
//!                         │          neighbors, in order ──first with one──▶ Neighbor
//!                         │                 │ none
//!                         ▼                 ▼
//!                     every healthy edge, in config order ──any?──yes──▶ Any
//!                                           │ none
//!                                           ▼
//!                                   static fallback ──▶ Fallback (may be empty)
//! ```
//!
//! Each step only counts edges that are healthy *and* have an address of the asked
//! family: an AAAA query is answered by the nearest POP with a healthy IPv6 edge. The
//! fallback is the one answer that can be empty (it has no address of that family);
//! the server then answers NOERROR with no records, never NXDOMAIN, since the name
//! exists.

use std::net::IpAddr;
use std::time::Instant;

use tern_config::{DnsConfig, IpSubnet};

use crate::health::HealthTable;

/// An edge of the config, by position: `[[pops.edges]]` in file order across all POPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(usize);

impl EdgeId {
    pub(crate) fn index(self) -> usize {
        self.0
    }
}

/// A POP of the config, by position in `[[pops]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PopId(usize);

/// The address family asked: A or AAAA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4, A records.
    V4,
    /// IPv6, AAAA records.
    V6,
}

impl Family {
    fn holds(self, addr: &IpAddr) -> bool {
        match self {
            Family::V4 => addr.is_ipv4(),
            Family::V6 => addr.is_ipv6(),
        }
    }
}

/// How an answer was chosen (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerKind {
    /// The healthy edges of the client's own POP.
    Pop,
    /// The healthy edges of the first neighbor of the client's POP that has some.
    Neighbor,
    /// Every healthy edge: the client's POP and its neighbors have none, or the client
    /// is in no POP's subnets.
    Any,
    /// The static fallback: no edge is healthy (for this family) anywhere.
    Fallback,
}

impl AnswerKind {
    /// Every kind, in the order of the steps.
    pub const ALL: [AnswerKind; 4] = [
        AnswerKind::Pop,
        AnswerKind::Neighbor,
        AnswerKind::Any,
        AnswerKind::Fallback,
    ];

    /// The kind as a metric label value: `pop`, `neighbor`, `any`, `fallback`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerKind::Pop => "pop",
            AnswerKind::Neighbor => "neighbor",
            AnswerKind::Any => "any",
            AnswerKind::Fallback => "fallback",
        }
    }
}

/// The addresses answered for one query, and how they were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Which step chose them.
    pub kind: AnswerKind,
    /// The POP answered from ([`AnswerKind::Pop`] and [`AnswerKind::Neighbor`]).
    pub pop: Option<PopId>,
    /// The addresses, all of the asked family, in config order. Empty only for a
    /// [`AnswerKind::Fallback`] without an address of that family.
    pub addrs: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
struct Edge {
    name: String,
    pop: PopId,
    addrs: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
struct Pop {
    name: String,
    edges: Vec<EdgeId>,
    neighbors: Vec<PopId>,
}

/// The POPs, their client subnets, edges and neighbors, and the fallback set, indexed
/// for answering. Built once from the config; health changes, the topology does not.
#[derive(Debug, Clone)]
pub struct Topology {
    pops: Vec<Pop>,
    edges: Vec<Edge>,
    /// Every POP subnet, longest prefix first, so the first that covers a client is its
    /// longest match (two distinct subnets of one length never overlap).
    subnets: Vec<(IpSubnet, PopId)>,
    fallback: Vec<IpAddr>,
}

impl Topology {
    /// Indexes `config`. Neighbor names the config does not hold are skipped (compiled
    /// configs never have any).
    pub fn new(config: &DnsConfig) -> Self {
        let pop_id = |name: &str| {
            config
                .pops
                .iter()
                .position(|pop| pop.name == name)
                .map(PopId)
        };
        let mut edges = Vec::new();
        let mut pops = Vec::with_capacity(config.pops.len());
        let mut subnets = Vec::new();
        for (p, pop) in config.pops.iter().enumerate() {
            let mut ids = Vec::with_capacity(pop.edges.len());
            for edge in &pop.edges {
                ids.push(EdgeId(edges.len()));
                edges.push(Edge {
                    name: edge.name.clone(),
                    pop: PopId(p),
                    addrs: edge.addrs.clone(),
                });
            }
            subnets.extend(pop.subnets.iter().map(|subnet| (*subnet, PopId(p))));
            pops.push(Pop {
                name: pop.name.clone(),
                edges: ids,
                neighbors: pop.neighbors.iter().filter_map(|n| pop_id(n)).collect(),
            });
        }
        subnets.sort_by_key(|(subnet, _)| std::cmp::Reverse(subnet.prefix_len()));
        Self {
            pops,
            edges,
            subnets,
            fallback: config.fallback.clone(),
        }
    }

    /// Every edge, in config order.
    pub fn edges(&self) -> impl Iterator<Item = EdgeId> + use<> {
        (0..self.edges.len()).map(EdgeId)
    }

    /// How many edges the config has.
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// The edge named `name`, if the config has it.
    pub fn edge_id(&self, name: &str) -> Option<EdgeId> {
        self.edges.iter().position(|e| e.name == name).map(EdgeId)
    }

    /// The name of `edge`.
    pub fn edge_name(&self, edge: EdgeId) -> &str {
        self.edges.get(edge.0).map_or("", |e| e.name.as_str())
    }

    /// The POP of `edge`.
    pub fn edge_pop(&self, edge: EdgeId) -> PopId {
        self.edges.get(edge.0).map_or(PopId(0), |e| e.pop)
    }

    /// The name of `pop`.
    pub fn pop_name(&self, pop: PopId) -> &str {
        self.pops.get(pop.0).map_or("", |p| p.name.as_str())
    }

    /// The POP serving `client`: the longest POP subnet that holds all of `client`.
    ///
    /// A client subnet wider than every POP subnet it overlaps (an ECS `/16` against POP
    /// blocks of `/24`) is in no POP: its clients may belong to several.
    pub fn pop_of(&self, client: &IpSubnet) -> Option<PopId> {
        self.subnets
            .iter()
            .find(|(subnet, _)| subnet.covers(client))
            .map(|(_, pop)| *pop)
    }

    /// The addresses answered to `client` asking for `family` at `now`; see the module
    /// docs for the steps.
    pub fn answer(
        &self,
        health: &HealthTable,
        now: Instant,
        client: &IpSubnet,
        family: Family,
    ) -> Answer {
        let addrs_of = |edges: &mut dyn Iterator<Item = &EdgeId>| -> Vec<IpAddr> {
            edges
                .filter(|id| health.is_up(now, **id))
                .filter_map(|id| self.edges.get(id.0))
                .flat_map(|edge| edge.addrs.iter().filter(|a| family.holds(a)).copied())
                .collect()
        };
        if let Some(pop) = self.pop_of(client) {
            let home = &self.pops[pop.0];
            let addrs = addrs_of(&mut home.edges.iter());
            if !addrs.is_empty() {
                return Answer {
                    kind: AnswerKind::Pop,
                    pop: Some(pop),
                    addrs,
                };
            }
            for &neighbor in &home.neighbors {
                let addrs = addrs_of(&mut self.pops[neighbor.0].edges.iter());
                if !addrs.is_empty() {
                    return Answer {
                        kind: AnswerKind::Neighbor,
                        pop: Some(neighbor),
                        addrs,
                    };
                }
            }
        }
        let all: Vec<EdgeId> = self.edges().collect();
        let addrs = addrs_of(&mut all.iter());
        if !addrs.is_empty() {
            return Answer {
                kind: AnswerKind::Any,
                pop: None,
                addrs,
            };
        }
        Answer {
            kind: AnswerKind::Fallback,
            pop: None,
            addrs: self
                .fallback
                .iter()
                .filter(|a| family.holds(a))
                .copied()
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::{EdgeState, HealthReport};

    /// fra (two edges, IPv4 and IPv6) → neighbors ams, nyc; ams (IPv4 and IPv6) →
    /// neighbor fra; nyc (IPv4 only, a /8 holding fra's /16 and a /24 of its own); lab
    /// (no subnets). Fallback IPv4 only.
    pub(crate) const CONFIG: &str = r#"
        name = "edge.tern.test."
        fallback = ["192.0.2.100"]
        report_ttl = "3s"

        [[pops]]
        name = "fra"
        subnets = ["10.1.0.0/16", "2001:db8:1::/48"]
        neighbors = ["ams", "nyc"]
        [[pops.edges]]
        name = "fra-1"
        addrs = ["192.0.2.11", "2001:db8:1::11"]
        [[pops.edges]]
        name = "fra-2"
        addrs = ["192.0.2.12", "2001:db8:1::12"]

        [[pops]]
        name = "ams"
        subnets = ["10.2.0.0/16"]
        neighbors = ["fra"]
        [[pops.edges]]
        name = "ams-1"
        addrs = ["192.0.2.21", "2001:db8:2::21"]

        [[pops]]
        name = "nyc"
        subnets = ["10.0.0.0/8", "10.1.9.0/24"]
        [[pops.edges]]
        name = "nyc-1"
        addrs = ["198.51.100.31"]

        [[pops]]
        name = "lab"
        [[pops.edges]]
        name = "lab-1"
        addrs = ["203.0.113.41", "2001:db8:4::41"]
    "#;

    pub(crate) fn config() -> DnsConfig {
        tern_config::parse_dns_config(CONFIG).expect("test config is valid")
    }

    pub(crate) fn topology() -> Topology {
        Topology::new(&config())
    }

    /// A topology, its health table and a virtual clock.
    struct Sim {
        topology: Topology,
        health: HealthTable,
        now: Instant,
    }

    impl Sim {
        fn new() -> Self {
            let config = config();
            let topology = Topology::new(&config);
            let health = HealthTable::new(&topology, config.report_ttl);
            Self {
                topology,
                health,
                now: Instant::now(),
            }
        }

        fn report(&mut self, edge: &str, state: EdgeState) {
            let report = HealthReport {
                edge: edge.into(),
                state,
            };
            self.health
                .handle_report(self.now, &report)
                .expect("known edge");
        }

        fn all(&mut self, state: EdgeState) {
            for edge in ["fra-1", "fra-2", "ams-1", "nyc-1", "lab-1"] {
                self.report(edge, state);
            }
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
        }

        /// The answer to `client` (an address or a CIDR block) for `family`, as the kind,
        /// the POP's name and the addresses.
        fn ask(&self, client: &str, family: Family) -> (AnswerKind, Option<&str>, Vec<String>) {
            let client = match client.parse::<IpAddr>() {
                Ok(addr) => IpSubnet::host(addr),
                Err(_) => client.parse().expect("a CIDR block"),
            };
            let answer = self
                .topology
                .answer(&self.health, self.now, &client, family);
            (
                answer.kind,
                answer.pop.map(|p| self.topology.pop_name(p)),
                answer.addrs.iter().map(ToString::to_string).collect(),
            )
        }
    }

    #[test]
    fn the_clients_pop_answers_with_its_healthy_edges() {
        let mut sim = Sim::new();
        sim.all(EdgeState::Up);
        assert_eq!(
            sim.ask("10.1.2.3", Family::V4),
            (
                AnswerKind::Pop,
                Some("fra"),
                vec!["192.0.2.11".into(), "192.0.2.12".into()]
            )
        );
        assert_eq!(
            sim.ask("2001:db8:1:5::9", Family::V6),
            (
                AnswerKind::Pop,
                Some("fra"),
                vec!["2001:db8:1::11".into(), "2001:db8:1::12".into()]
            )
        );
        // The family of the client's address is not the family asked.
        assert_eq!(
            sim.ask("10.2.0.1", Family::V6),
            (AnswerKind::Pop, Some("ams"), vec!["2001:db8:2::21".into()])
        );
        sim.report("fra-1", EdgeState::Down);
        assert_eq!(
            sim.ask("10.1.2.3", Family::V4),
            (AnswerKind::Pop, Some("fra"), vec!["192.0.2.12".into()])
        );
    }

    #[test]
    fn the_longest_prefix_wins() {
        let mut sim = Sim::new();
        sim.all(EdgeState::Up);
        // 10.1.9.0/24 (nyc) inside 10.1.0.0/16 (fra) inside 10.0.0.0/8 (nyc).
        assert_eq!(sim.ask("10.1.9.7", Family::V4).1, Some("nyc"));
        assert_eq!(sim.ask("10.1.8.7", Family::V4).1, Some("fra"));
        assert_eq!(sim.ask("10.200.0.1", Family::V4).1, Some("nyc"));
        // A client subnet (ECS) is matched as a whole.
        assert_eq!(sim.ask("10.1.8.0/24", Family::V4).1, Some("fra"));
        assert_eq!(sim.ask("10.1.9.0/24", Family::V4).1, Some("nyc"));
        assert_eq!(sim.ask("10.1.0.0/20", Family::V4).1, Some("fra"));
        // Wider than fra's /16: only nyc's /8 holds all of it.
        assert_eq!(sim.ask("10.0.0.0/12", Family::V4).1, Some("nyc"));
        // Wider than every POP subnet: no POP, every healthy edge.
        assert_eq!(sim.ask("10.0.0.0/7", Family::V4).0, AnswerKind::Any);
    }

    #[test]
    fn a_client_of_no_pop_gets_every_healthy_edge_in_config_order() {
        let mut sim = Sim::new();
        sim.all(EdgeState::Up);
        sim.report("ams-1", EdgeState::Disabled);
        assert_eq!(
            sim.ask("172.16.0.1", Family::V4),
            (
                AnswerKind::Any,
                None,
                vec![
                    "192.0.2.11".into(),
                    "192.0.2.12".into(),
                    "198.51.100.31".into(),
                    "203.0.113.41".into()
                ]
            )
        );
        assert_eq!(
            sim.ask("2001:db8:9::1", Family::V6),
            (
                AnswerKind::Any,
                None,
                vec![
                    "2001:db8:1::11".into(),
                    "2001:db8:1::12".into(),
                    "2001:db8:4::41".into()
                ]
            )
        );
    }

    #[test]
    fn neighbors_are_tried_in_order() {
        let mut sim = Sim::new();
        sim.all(EdgeState::Up);
        sim.report("fra-1", EdgeState::Down);
        sim.report("fra-2", EdgeState::Disabled);
        assert_eq!(
            sim.ask("10.1.2.3", Family::V4),
            (AnswerKind::Neighbor, Some("ams"), vec!["192.0.2.21".into()])
        );
        sim.report("ams-1", EdgeState::Down);
        assert_eq!(
            sim.ask("10.1.2.3", Family::V4),
            (
                AnswerKind::Neighbor,
                Some("nyc"),
                vec!["198.51.100.31".into()]
            )
        );
        // nyc has no IPv6 edge: an AAAA query skips it and every POP without a healthy
        // IPv6 edge, down to any healthy one (lab's).
        assert_eq!(
            sim.ask("10.1.2.3", Family::V6),
            (AnswerKind::Any, None, vec!["2001:db8:4::41".into()])
        );
        // fra comes back: home again.
        sim.report("fra-2", EdgeState::Up);
        assert_eq!(sim.ask("10.1.2.3", Family::V4).1, Some("fra"));
    }

    #[test]
    fn a_pop_without_neighbors_falls_to_any_healthy_edge() {
        let mut sim = Sim::new();
        sim.all(EdgeState::Up);
        sim.report("nyc-1", EdgeState::Down);
        assert_eq!(
            sim.ask("10.3.0.1", Family::V4),
            (
                AnswerKind::Any,
                None,
                vec![
                    "192.0.2.11".into(),
                    "192.0.2.12".into(),
                    "192.0.2.21".into(),
                    "203.0.113.41".into()
                ]
            )
        );
    }

    #[test]
    fn nothing_healthy_anywhere_is_the_fallback_never_nothing() {
        let mut sim = Sim::new();
        // Before any report: nothing is healthy.
        assert_eq!(
            sim.ask("10.1.2.3", Family::V4),
            (AnswerKind::Fallback, None, vec!["192.0.2.100".into()])
        );
        sim.all(EdgeState::Down);
        for client in ["10.1.2.3", "10.2.0.1", "172.16.0.1", "2001:db8:1::1"] {
            assert_eq!(
                sim.ask(client, Family::V4),
                (AnswerKind::Fallback, None, vec!["192.0.2.100".into()]),
                "{client}"
            );
            // The fallback has no IPv6 address: an empty fallback answer (the server
            // answers NOERROR without records).
            assert_eq!(
                sim.ask(client, Family::V6),
                (AnswerKind::Fallback, None, vec![]),
                "{client}"
            );
        }
    }

    #[test]
    fn reports_expire_after_report_ttl() {
        let mut sim = Sim::new();
        sim.all(EdgeState::Up);
        sim.advance(Duration::from_secs(2));
        // fra-2 keeps reporting, fra-1 went silent.
        sim.report("fra-2", EdgeState::Up);
        sim.advance(Duration::from_millis(1500));
        assert_eq!(
            sim.ask("10.1.2.3", Family::V4),
            (AnswerKind::Pop, Some("fra"), vec!["192.0.2.12".into()])
        );
        // Past every report but fra-2's: fra's own edge still answers.
        assert_eq!(
            sim.ask("10.2.0.1", Family::V4),
            (AnswerKind::Neighbor, Some("fra"), vec!["192.0.2.12".into()])
        );
        sim.advance(Duration::from_secs(2));
        assert_eq!(sim.ask("10.1.2.3", Family::V4).0, AnswerKind::Fallback);
    }

    #[test]
    fn topology_names_and_ids() {
        let topology = topology();
        assert_eq!(topology.edge_count(), 5);
        let names: Vec<&str> = topology.edges().map(|e| topology.edge_name(e)).collect();
        assert_eq!(names, ["fra-1", "fra-2", "ams-1", "nyc-1", "lab-1"]);
        let nyc1 = topology.edge_id("nyc-1").expect("configured");
        assert_eq!(topology.pop_name(topology.edge_pop(nyc1)), "nyc");
        assert_eq!(topology.edge_id("lon-1"), None);
        let kinds: Vec<&str> = AnswerKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, ["pop", "neighbor", "any", "fallback"]);
    }
}
