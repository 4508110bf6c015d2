//! Anycast health for Tern edges: decide whether an edge is healthy, make BIRD
//! announce, de-prefer or withdraw the edge's anycast prefix accordingly, and tell
//! `tern dns`.
//!
//! The pieces:
//! - [`probes`]: what is checked each interval (the IO side): a real WebSocket
//!   handshake and CONNECT with the probe key on the edge's own listener, the link to
//!   the home log node, the load (connections and event-loop lag), and the drain file.
//!   The edge is reached through the [`ProbedEdge`] trait, which tern-edge implements
//!   for its own loop.
//! - [`lag`]: [`LagMonitor`], the event loop's lag as the edge measures it on its own
//!   runtime and shows it on `/metrics`, whoever runs the loop; a stall (a timer
//!   later than `max_event_loop_lag`) fails one probe's `load` check.
//! - [`remote`]: [`RemoteEdge`], the edge probed from another process (`tern health`,
//!   `[health] runner = "tern-health"`) over its listener: the loop outlives a killed
//!   or frozen edge and withdraws it.
//! - [`hysteresis`]: ExaBGP-style rise/fall counting over [`ProbeReport`]s (sets of
//!   named check results), with a drain file that disables the edge at once and a
//!   shutdown that disables it for good. Sans-IO: `handle_probe(now, report)`,
//!   `handle_drain(now, present)` and `handle_shutdown(now)` return the
//!   [`Transition`], with a reason naming the failing checks.
//! - [`settings`]: [`HealthSettings`], a plain typed struct with documented defaults
//!   (interval 1 s, timeout 1 s, rise 3, fall 2, withdraw, `min_announcing` 1), built
//!   from the edge config's `[health]` by [`HealthSettings::from_config`].
//! - [`bird`]: an async client of BIRD's control socket (what `birdc` speaks; no
//!   `birdc` process): `show protocols`, `enable`, `disable`, `show route`, with a
//!   timeout on every call, typed errors and a bounded, fuzzed reply decoder.
//! - [`anycast`]: the [`AnycastController`], which maps the health state onto BIRD's
//!   static protocols each cycle (so a restarted BIRD is put back), guarded by a
//!   [`SiteCount`] so that the last `min_announcing` sites never withdraw, and frozen
//!   (changing nothing) when BIRD or the site count cannot be read.
//! - [`report`]: the health reports to `tern dns` (`POST /v1/health`, one task per
//!   server, never blocking the loop) and [`DnsSiteCount`], the guard's count of
//!   announcing sites read from its health table.
//! - [`metrics`]: [`HealthMetrics`], the series the edge's `/metrics` shows.
//! - [`driver`]: [`HealthDriver`], the loop tying them together inside `tern edge`,
//!   and its SIGTERM path ([`HealthDriver::leave`]).
//! - `testing` (feature `test-support`): real BIRD daemons for tests.
//!
//! What it does not do: decide what DNS answers (`tern dns` does, from the reports),
//! or stop the edge (tern-edge's shutdown sends clients elsewhere and waits for
//! them once [`HealthDriver::leave`] returns).
//!
//! ```text
//!   probes every interval ──ProbeReport──▶ Hysteresis ──HealthState──┬─▶ AnycastController ─▶ BIRD control socket
//!   drain file present? ──────────────────▶ (up/down/disabled)        │     (static anycast4 ─BGP─▶ routers)
//!   SIGTERM (leave) ──────────────────────▶ │ Transition + reason     └─▶ DnsReporter ─▶ tern dns POST /v1/health
//!                                           ▼
//!                                  tracing, HealthMetrics (/metrics), HealthStatus
//! ```

pub mod anycast;
pub mod bird;
pub mod driver;
pub mod hysteresis;
pub mod lag;
pub mod metrics;
pub mod probes;
pub mod remote;
pub mod report;
pub mod settings;
#[cfg(feature = "test-support")]
pub mod testing;

pub use anycast::InvalidSettings;
pub use anycast::{
    Announcement, AnycastController, AnycastMetrics, ControllerError, Reconciled, SiteCount,
    SiteCountError, StaticSiteCount,
};
pub use bird::{BirdClient, BirdError, Prefix, ProtocolName};
pub use driver::{HealthDriver, HealthStatus};
pub use hysteresis::{CheckResult, HealthState, Hysteresis, ProbeReport, Transition};
pub use lag::{EventLoop, LagMonitor};
pub use metrics::HealthMetrics;
pub use probes::{Check, LinkStatus, Load, Probe, ProbedEdge, Prober};
pub use remote::{Alongside, AlongsideError, RemoteEdge};
pub use report::{DnsReporter, DnsSiteCount};
pub use settings::{AnycastAction, AnycastProtocols, HealthSettings};
