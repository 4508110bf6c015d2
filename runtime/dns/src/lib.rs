//! `tern-dns`: DNS failover for Tern edges. An authoritative DNS server (built on
//! hickory-server) answers the edge name with the nearest healthy edges for the
//! querying client's subnet, with a short TTL; edges report their health to it over
//! HTTP; with no healthy edge anywhere it answers a static fallback set, never nothing.
//!
//! ```text
//!  edges ──POST /v1/health {"edge","state"}──▶ report (HTTP) ──▶ HealthTable
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
//!   (routes in the `report` module docs: `POST /v1/health`, `GET /v1/health`,
//!   `GET /metrics`).
//!
//! What it does not do: DNSSEC, zone transfers, NS records (the parent zone's
//! delegation names the servers), names other than the edge name, authentication of
//! health reports (bind `report_listen` to a private address), or probing edges
//! itself: health comes only from the edges' reports (tern-health sends them).

pub mod answer;
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
