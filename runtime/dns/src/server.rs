//! The DNS side: a hickory-server [`RequestHandler`] authoritative for one zone, that
//! answers A and AAAA queries of the edge name from [`Topology::answer`].
//!
//! ```text
//!  query ──▶ EDNS: version 0? client subnet option? ──▶ one question, class IN?
//!        ──▶ in the zone? no: REFUSED
//!        ──▶ the edge name, A/AAAA: the answer (configured TTL; NOERROR without
//!            records when the fallback has no address of the family)
//!            the zone apex, SOA: the SOA
//!            the edge name or one of its parents, other types: NOERROR, no records
//!            any other name: NXDOMAIN
//! ```
//!
//! The client's subnet is the EDNS Client Subnet option (RFC 7871) when the query has
//! one with a source prefix above 0, else the query's source address; the option is
//! echoed with a scope of its source prefix on answers that used it, 0 on the others.
//! Negative answers carry the zone's SOA, whose minimum is the TTL, so resolvers cache
//! them no longer than an answer. There are no NS records: the parent zone's delegation
//! names the servers.

use std::iter;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use parking_lot::Mutex;
use tern_config::{DnsConfig, IpSubnet};
use tracing::debug;

use crate::answer::{Family, Topology};
use crate::auth::ReportAuth;
use crate::health::HealthTable;
use crate::metrics::{Metrics, Refusal};

/// SOA timers: there are no secondaries to refresh, so they only need to be sane.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86_400;
/// Smallest UDP payload a response is allowed to fill (RFC 6891).
const MIN_PAYLOAD: u16 = 512;

/// Why the config's names cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("{name} cannot be served: {reason}")]
pub struct NameError {
    name: String,
    reason: String,
}

/// The state the DNS handler and the report endpoint share.
pub(crate) struct Shared {
    pub(crate) topology: Topology,
    /// Who may use `/v1/health`.
    pub(crate) auth: ReportAuth,
    pub(crate) health: Mutex<HealthTable>,
    pub(crate) metrics: Metrics,
    /// The edge name, lower case.
    name: LowerName,
    /// The zone apex, lower case.
    zone: LowerName,
    /// The zone's SOA record.
    soa: Record,
    /// TTL of answers, seconds.
    ttl: u32,
}

impl Shared {
    pub(crate) fn new(config: &DnsConfig) -> Result<Self, NameError> {
        let parse = |name: &str| {
            Name::from_ascii(name).map_err(|error| NameError {
                name: name.to_owned(),
                reason: error.to_string(),
            })
        };
        let name = parse(config.name.as_str())?;
        let zone = parse(config.zone.as_str())?;
        // hostmaster.<zone>, or the zone itself when that would be too long a name.
        let rname = parse("hostmaster")?
            .append_domain(&zone)
            .unwrap_or_else(|_| zone.clone());
        let ttl = config.ttl_secs();
        let soa = SOA::new(
            zone.clone(),
            rname,
            1,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            ttl,
        );
        let topology = Topology::new(config);
        let health = HealthTable::new(&topology, config.report_ttl);
        Ok(Self {
            topology,
            auth: ReportAuth::from_config(config),
            health: Mutex::new(health),
            metrics: Metrics::default(),
            name: LowerName::new(&name),
            zone: LowerName::new(&zone),
            soa: Record::from_rdata(zone, ttl, RData::SOA(soa)),
            ttl,
        })
    }

    /// Decides the reply to `request` at `now`.
    fn reply(&self, request: &Request, now: Instant) -> Reply {
        let mut reply = Reply::default();
        let mut client = IpSubnet::host(request.src().ip());
        let mut ecs = None;
        if let Some(asked) = request.edns.as_ref() {
            let mut edns = Edns::new();
            edns.set_max_payload(asked.max_payload().max(MIN_PAYLOAD));
            edns.set_version(0);
            reply.edns = Some(edns);
            if asked.version() > 0 {
                return reply.refuse(&self.metrics, Refusal::BadVers);
            }
            if let Some(EdnsOption::Subnet(subnet)) = asked.option(EdnsCode::Subnet) {
                match IpSubnet::new(subnet.addr(), subnet.source_prefix()) {
                    None => return reply.refuse(&self.metrics, Refusal::FormErr),
                    // A source prefix of 0: the client asked that nothing of its
                    // address be used.
                    Some(_) if subnet.source_prefix() == 0 => {}
                    Some(network) => client = network,
                }
                ecs = Some(*subnet);
            }
        }
        if request.metadata.op_code != OpCode::Query {
            return reply.refuse(&self.metrics, Refusal::NotImp);
        }
        let [query] = request.queries.queries() else {
            return reply.refuse(&self.metrics, Refusal::FormErr);
        };
        let qname = query.name();
        if query.query_class() != DNSClass::IN || !self.zone.zone_of(qname) {
            return reply.refuse(&self.metrics, Refusal::Refused);
        }
        reply.authoritative = true;
        let owner = query.original().name();
        let family = match query.query_type() {
            RecordType::A => Some(Family::V4),
            RecordType::AAAA => Some(Family::V6),
            _ => None,
        };
        if let Some(family) = family
            && *qname == self.name
        {
            let answer = {
                let health = self.health.lock();
                self.topology.answer(&health, now, &client, family)
            };
            self.metrics.answered(answer.kind, answer.addrs.is_empty());
            debug!(
                %client,
                kind = answer.kind.as_str(),
                pop = answer.pop.map(|p| self.topology.pop_name(p)),
                addrs = answer.addrs.len(),
                "answered"
            );
            reply.answers = answer
                .addrs
                .iter()
                .map(|addr| address_record(owner, self.ttl, *addr))
                .collect();
            if reply.answers.is_empty() {
                reply.soa = vec![self.soa.clone()];
            }
            reply.echo_subnet(ecs, true);
            return reply;
        }
        if *qname == self.zone && query.query_type() == RecordType::SOA {
            self.metrics.other_type();
            reply.answers = vec![self.soa.clone()];
        } else if qname.zone_of(&self.name) {
            // The edge name with another type, or a name between it and the apex: the
            // name exists, the type has no data.
            self.metrics.other_type();
            reply.soa = vec![self.soa.clone()];
        } else {
            self.metrics.refused(Refusal::NxDomain);
            reply.code = ResponseCode::NXDomain;
            reply.soa = vec![self.soa.clone()];
        }
        reply.echo_subnet(ecs, false);
        reply
    }
}

/// The reply to one request, decided before anything is written.
#[derive(Debug, Default)]
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    /// The authority section: the SOA of negative answers.
    soa: Vec<Record>,
    edns: Option<Edns>,
}

impl Reply {
    fn refuse(mut self, metrics: &Metrics, refusal: Refusal) -> Self {
        metrics.refused(refusal);
        self.code = match refusal {
            Refusal::NxDomain => ResponseCode::NXDomain,
            Refusal::Refused => ResponseCode::Refused,
            Refusal::FormErr => ResponseCode::FormErr,
            Refusal::NotImp => ResponseCode::NotImp,
            Refusal::BadVers => ResponseCode::BADVERS,
        };
        self.authoritative = false;
        self
    }

    /// Echoes the query's client subnet option, if any (RFC 7871: family, source prefix
    /// and address as asked), with a scope of its source prefix when the reply `used`
    /// it, else 0: the reply is the same for every client.
    fn echo_subnet(&mut self, ecs: Option<ClientSubnet>, used: bool) {
        if let (Some(edns), Some(subnet)) = (self.edns.as_mut(), ecs) {
            let scope = if used { subnet.source_prefix() } else { 0 };
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(
                    subnet.addr(),
                    subnet.source_prefix(),
                    scope,
                )));
        }
    }
}

fn address_record(owner: &Name, ttl: u32, addr: IpAddr) -> Record {
    let data = match addr {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

/// The hickory-server request handler of `tern dns`.
pub(crate) struct DnsHandler {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.shared.reply(request, Instant::now());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = reply.authoritative;
        metadata.response_code = reply.code;
        let response = MessageResponseBuilder::new(&request.queries, reply.edns.as_ref()).build(
            metadata,
            reply.answers.iter(),
            iter::empty(),
            reply.soa.iter(),
            iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(src = %request.src(), %error, "cannot send a DNS response");
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_server::net::xfer::Protocol;

    use super::*;
    use crate::answer::tests::config;
    use crate::health::{EdgeState, HealthReport};

    fn shared() -> Shared {
        let shared = Shared::new(&config()).expect("names are valid");
        let now = Instant::now();
        for edge in ["fra-1", "ams-1"] {
            let report = HealthReport {
                edge: edge.into(),
                state: EdgeState::Up,
            };
            shared
                .health
                .lock()
                .handle_report(now, &report)
                .expect("known edge");
        }
        shared
    }

    /// A request for `name`/`rtype` from `src`, with `edns` if given.
    fn request(src: &str, name: &str, rtype: RecordType, edns: Option<Edns>) -> Request {
        let mut message = Message::new(7, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
        if let Some(edns) = edns {
            message.set_edns(edns);
        }
        let bytes = message.to_vec().expect("encodes");
        let src: SocketAddr = src.parse().expect("socket address");
        Request::from_bytes(bytes, src, Protocol::Udp).expect("decodes")
    }

    fn addrs(reply: &Reply) -> Vec<String> {
        reply
            .answers
            .iter()
            .map(|record| match &record.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(aaaa) => aaaa.0.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn with_subnet(subnet: &str) -> Edns {
        let mut edns = Edns::new();
        let subnet: ClientSubnet = subnet.parse().expect("a CIDR block");
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
        edns
    }

    fn echoed_subnet(reply: &Reply) -> Option<ClientSubnet> {
        match reply.edns.as_ref()?.option(EdnsCode::Subnet)? {
            EdnsOption::Subnet(subnet) => Some(*subnet),
            _ => None,
        }
    }

    #[test]
    fn the_edge_name_is_answered_by_source_address() {
        let shared = shared();
        let now = Instant::now();
        let reply = shared.reply(
            &request("10.1.0.9:5000", "EDGE.tern.test.", RecordType::A, None),
            now,
        );
        assert_eq!(reply.code, ResponseCode::NoError);
        assert!(reply.authoritative);
        assert_eq!(addrs(&reply), ["192.0.2.11"]);
        assert_eq!(reply.answers[0].ttl, 20);
        assert_eq!(reply.answers[0].name.to_string(), "EDGE.tern.test.");
        assert!(reply.soa.is_empty());
        assert!(reply.edns.is_none(), "no EDNS asked, none answered");
        let reply = shared.reply(
            &request("10.2.0.9:5000", "edge.tern.test.", RecordType::AAAA, None),
            now,
        );
        assert_eq!(addrs(&reply), ["2001:db8:2::21"]);
    }

    #[test]
    fn a_client_subnet_option_wins_over_the_source_address() {
        let shared = shared();
        let now = Instant::now();
        let asked = request(
            "10.1.0.9:5000",
            "edge.tern.test.",
            RecordType::A,
            Some(with_subnet("10.2.3.0/24")),
        );
        let reply = shared.reply(&asked, now);
        assert_eq!(addrs(&reply), ["192.0.2.21"], "ams, the subnet's POP");
        let echoed = echoed_subnet(&reply).expect("the option is echoed");
        assert_eq!(
            (
                echoed.addr().to_string(),
                echoed.source_prefix(),
                echoed.scope_prefix()
            ),
            ("10.2.3.0".to_owned(), 24, 24)
        );
        // A source prefix of 0 keeps the source address.
        let asked = request(
            "10.1.0.9:5000",
            "edge.tern.test.",
            RecordType::A,
            Some(with_subnet("0.0.0.0/0")),
        );
        assert_eq!(addrs(&shared.reply(&asked, now)), ["192.0.2.11"]);
        // A negative answer does not depend on the subnet: scope 0.
        let asked = request(
            "10.1.0.9:5000",
            "nope.edge.tern.test.",
            RecordType::A,
            Some(with_subnet("10.2.3.0/24")),
        );
        let reply = shared.reply(&asked, now);
        assert_eq!(reply.code, ResponseCode::NXDomain);
        assert_eq!(echoed_subnet(&reply).map(|s| s.scope_prefix()), Some(0));
    }

    #[test]
    fn nothing_healthy_for_the_family_is_the_fallback_or_no_data() {
        let shared = Shared::new(&config()).expect("names are valid");
        let now = Instant::now();
        let reply = shared.reply(
            &request("10.1.0.9:5000", "edge.tern.test.", RecordType::A, None),
            now,
        );
        assert_eq!(addrs(&reply), ["192.0.2.100"]);
        let reply = shared.reply(
            &request("10.1.0.9:5000", "edge.tern.test.", RecordType::AAAA, None),
            now,
        );
        assert_eq!(reply.code, ResponseCode::NoError, "never NXDOMAIN");
        assert!(reply.answers.is_empty());
        assert_eq!(reply.soa.len(), 1, "a negative answer carries the SOA");
        assert_eq!(reply.soa[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn names_in_and_out_of_the_zone() {
        let shared = shared();
        let now = Instant::now();
        let code = |name: &str, rtype| {
            let reply = shared.reply(&request("10.1.0.9:5000", name, rtype, None), now);
            (
                reply.code,
                reply.authoritative,
                reply.answers.len(),
                reply.soa.len(),
            )
        };
        assert_eq!(
            code("x.edge.tern.test.", RecordType::A),
            (ResponseCode::NXDomain, true, 0, 1)
        );
        assert_eq!(
            code("tern.test.", RecordType::A),
            (ResponseCode::Refused, false, 0, 0),
            "the zone is the edge name itself"
        );
        assert_eq!(
            code("example.com.", RecordType::A),
            (ResponseCode::Refused, false, 0, 0)
        );
        assert_eq!(
            code("edge.tern.test.", RecordType::SOA),
            (ResponseCode::NoError, true, 1, 0)
        );
        assert_eq!(
            code("edge.tern.test.", RecordType::TXT),
            (ResponseCode::NoError, true, 0, 1)
        );
        assert_eq!(
            code("edge.tern.test.", RecordType::NS),
            (ResponseCode::NoError, true, 0, 1)
        );
    }

    #[test]
    fn a_parent_zone_holds_the_edge_name() {
        let text = format!("zone = \"tern.test.\"\n{}", crate::answer::tests::CONFIG);
        let config = tern_config::parse_dns_config(&text).expect("valid");
        let shared = Shared::new(&config).expect("names are valid");
        let now = Instant::now();
        let reply =
            |name: &str, rtype| shared.reply(&request("10.9.0.1:53", name, rtype, None), now);
        let soa = reply("tern.test.", RecordType::SOA);
        assert_eq!((soa.code, soa.answers.len()), (ResponseCode::NoError, 1));
        assert_eq!(soa.answers[0].name.to_string(), "tern.test.");
        match &soa.answers[0].data {
            RData::SOA(data) => {
                assert_eq!(data.minimum, 20, "negative answers last one TTL");
                assert_eq!(data.rname.to_string(), "hostmaster.tern.test.");
            }
            other => panic!("{other:?}"),
        }
        let apex = reply("tern.test.", RecordType::A);
        assert_eq!((apex.code, apex.answers.len()), (ResponseCode::NoError, 0));
        let other = reply("www.tern.test.", RecordType::A);
        assert_eq!(other.code, ResponseCode::NXDomain);
        let edge = reply("edge.tern.test.", RecordType::A);
        assert_eq!(
            addrs(&edge),
            ["192.0.2.100"],
            "nothing reported: the fallback"
        );
        assert_eq!(reply("test.", RecordType::A).code, ResponseCode::Refused);
    }

    #[test]
    fn malformed_and_unsupported_requests() {
        let shared = shared();
        let now = Instant::now();
        let mut edns = Edns::new();
        edns.set_version(1);
        let reply = shared.reply(
            &request(
                "10.1.0.9:5000",
                "edge.tern.test.",
                RecordType::A,
                Some(edns),
            ),
            now,
        );
        assert_eq!(reply.code, ResponseCode::BADVERS);
        assert!(reply.edns.is_some(), "BADVERS travels in the OPT record");

        let mut message = Message::new(8, MessageType::Query, OpCode::Query);
        let bytes = message.to_vec().expect("encodes");
        let src: SocketAddr = "10.1.0.9:5000".parse().expect("address");
        let empty = Request::from_bytes(bytes, src, Protocol::Udp).expect("decodes");
        assert_eq!(shared.reply(&empty, now).code, ResponseCode::FormErr);
        let name = Name::from_ascii("edge.tern.test.").expect("name");
        message.add_query(Query::query(name.clone(), RecordType::A));
        message.add_query(Query::query(name, RecordType::AAAA));
        let bytes = message.to_vec().expect("encodes");
        let two = Request::from_bytes(bytes, src, Protocol::Udp).expect("decodes");
        assert_eq!(shared.reply(&two, now).code, ResponseCode::FormErr);

        let mut message = Message::new(9, MessageType::Query, OpCode::Status);
        message.add_query(Query::query(
            Name::from_ascii("edge.tern.test.").expect("name"),
            RecordType::A,
        ));
        let bytes = message.to_vec().expect("encodes");
        let status = Request::from_bytes(bytes, src, Protocol::Udp).expect("decodes");
        assert_eq!(shared.reply(&status, now).code, ResponseCode::NotImp);

        let mut query = Query::query(
            Name::from_ascii("edge.tern.test.").expect("name"),
            RecordType::A,
        );
        query.set_query_class(DNSClass::CH);
        let mut message = Message::new(10, MessageType::Query, OpCode::Query);
        message.add_query(query);
        let bytes = message.to_vec().expect("encodes");
        let chaos = Request::from_bytes(bytes, src, Protocol::Udp).expect("decodes");
        assert_eq!(shared.reply(&chaos, now).code, ResponseCode::Refused);
    }
}
