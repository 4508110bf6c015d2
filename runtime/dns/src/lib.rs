//! `tern-dns`: DNS failover for Tern edges. An authoritative DNS server (built on
//! hickory-server) answers the edge name with the nearest healthy edges for the
//! querying client's subnet, with a short TTL; edges report their health to it over
//! HTTP; with no healthy edge anywhere it answers a static fallback set, never nothing.
//!
//! ```text
//!  edges ──POST /v1/health {"edge","state"}──▶ report (HTTP) ──▶ HealthTable
//!        Authorization: Bearer TOKEN            401 unless one of report_tokens or an
//!                                               edge's own (403: another edge's)
//!                                                                   │ now
//!  resolver ──A/AAAA edge.tern.test. (+ECS)──▶ server (hickory) ──▶ Topology::answer
//!           ◀── nearest healthy edges, TTL ──┘                      POP ▸ neighbors ▸
//!                                                                   any ▸ fallback
//! ```
//!
//! Key types:
//!
//! - [`Topology`] (sans-IO): POPs, their client subnets, edges and neighbors, and the
//!   fallback, from a [`tern_config::DnsConfig`]; [`Topology::answer`] picks the
//!   addresses for a client subnet, a [`Family`] and a time (see [`answer`] for the
//!   rules, [`AnswerKind`] for the steps).
//! - [`HealthTable`] (sans-IO): the last [`HealthReport`] of each edge; an edge is
//!   answered while its last report is `up` and younger than `report_ttl` ([`Health`]).
//! - [`DnsService`]: the running server, DNS on UDP and TCP and the report endpoint
//!   below.
//!
//! # The health report endpoint (HTTP/1.1 on `report_listen`)
//!
//! | Route | Answer |
//! |---|---|
//! | `POST /v1/health` `{"edge": NAME, "state": "up"\|"down"\|"disabled"}` | 204; 401 no valid token (below); 403 another edge's own token; 400 not a report (bad JSON, a missing or unknown field, another state); 404 edge not in the config; 413 body over [`MAX_REPORT_BYTES`] |
//! | `GET /v1/health` | 200, the table as JSON (below); 401 no valid token |
//! | `GET /metrics` | 200, Prometheus text: answers by [`AnswerKind`], refusals by code, reports by result, `tern_dns_edge_up{edge,pop}`, `tern_dns_healthy_edges` |
//!
//! An edge reports every probe cycle, not only on changes: a report counts for
//! `report_ttl` (default 3 s), after which the edge is down until it reports again.
//! The table is `{"report_ttl_ms": 3000, "healthy": 1, "edges": [{"edge": "fra-1",
//! "pop": "fra", "health": "up", "state": "up", "age_ms": 412}, …]}`: one entry per
//! configured edge in config order, `health` one of `up`, `down`, `disabled`,
//! `expired`, `unreported` ([`Health`]; only `up` is answered), `state` the last state
//! reported (`null` if none) and `age_ms` its age. Errors are `{"error": MESSAGE}`.
//!
//! Both methods of `/v1/health` need `Authorization: Bearer TOKEN` with one of the
//! config's `report_tokens`, or one of an edge's own `report_tokens`, which report for that
//! edge only (403 for another, nothing changed), so that one edge's stolen token
//! cannot report the others down (the edges send their `[health.dns] token`; the table
//! too, since the edges' anycast guard acts on it and it shows which edges are
//! draining); anything else gets 401 with `WWW-Authenticate: Bearer`, before the body
//! is read, and changes nothing. Tokens are compared in constant time, with every
//! configured token, so several can be accepted while one is rotated. With no token
//! configured nothing is checked: tern-config allows that only when `report_listen`
//! is a loopback address. `/metrics` is not authenticated (like an edge's): it shows
//! each edge's `up` gauge, so keep `report_listen` where only edges and operators
//! reach it.
//!
//! What it does not do: DNSSEC, zone transfers, NS records (the parent zone's
//! delegation names the servers), names other than the edge name, TLS on the report
//! endpoint (a token crosses the network in clear: keep `report_listen` on a private
//! network), or probing edges itself: health comes only from the edges' reports (tern-health sends them).

pub mod answer;
mod auth;
pub mod health;
mod metrics;
mod report;
mod server;
mod service;

pub use answer::{Answer, AnswerKind, EdgeId, Family, PopId, Topology};
pub use health::{
    EdgeState, Health, HealthReport, HealthTable, MAX_REPORT_BYTES, ReportError, Reported,
};
pub use server::NameError;
pub use service::{DnsService, StartError};
