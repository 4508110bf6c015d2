//! Anycast health for Tern edges: decide whether an edge is healthy, and make BIRD
//! announce, de-prefer or withdraw the edge's anycast prefix accordingly.
//!
//! The pieces:
//! - [`hysteresis`]: ExaBGP-style rise/fall counting over [`ProbeReport`]s (sets of
//!   named check results), with a drain file that disables the edge at once. Sans-IO:
//!   `handle_probe(now, report)` and `handle_drain(now, present)` return the
//!   [`Transition`], with a reason naming the failing checks.
//! - [`settings`]: [`HealthSettings`], a plain typed struct with documented defaults
//!   (interval 1 s, timeout 1 s, rise 3, fall 2, withdraw, `min_announcing` 1).
//!   Reading it from the edge's TOML through tern-config comes later.
//! - [`bird`]: an async client of BIRD's control socket (what `birdc` speaks; no
//!   `birdc` process): `show protocols`, `enable`, `disable`, `show route`, with a
//!   timeout on every call, typed errors and a bounded, fuzzed reply decoder.
//! - [`anycast`]: the [`AnycastController`], which maps the health state onto BIRD's
//!   static protocols each cycle (so a restarted BIRD is put back), guarded by a
//!   [`SiteCount`] so that the last `min_announcing` sites never withdraw, and frozen
//!   (changing nothing) when BIRD or the site count cannot be read.
//!
//! What it does not do (yet): run the probes themselves (a WebSocket handshake and
//! CONNECT against the local listener, the link to the home log, load), drive the
//! loop inside `tern edge`, export `/metrics` (the counters are plain data here:
//! [`Hysteresis::transitions_total`], [`AnycastController::metrics`]), or report to
//! the DNS service.
//!
//! ```text
//!   probes every interval ──ProbeReport──▶ Hysteresis ──HealthState──▶ AnycastController
//!   drain file present? ──────────────────▶ (up/down/disabled)          │ show protocols
//!                                            │ Transition + reason       │ enable / disable
//!                                            ▼                           ▼
//!                                           log, /metrics          BIRD control socket
//!                                                                  (static anycast4 ─BGP─▶ routers)
//! ```

pub mod anycast;
pub mod bird;
pub mod hysteresis;
pub mod settings;

pub use anycast::{
    Announcement, AnycastController, AnycastMetrics, ControllerError, Reconciled, SiteCount,
    SiteCountError, StaticSiteCount,
};
pub use bird::{BirdClient, BirdError, Prefix, ProtocolName};
pub use hysteresis::{CheckResult, HealthState, Hysteresis, ProbeReport, Transition};
pub use settings::{AnycastAction, AnycastProtocols, HealthSettings};
