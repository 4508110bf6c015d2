//! `tern-edge`: the edge node. Clients connect to it over WebSocket (client protocol
//! v1, `tern-protocol`) or HTTP, publish to channels and receive their messages in
//! order; every message goes through the channel's log node (`tern-log`) first.
//!
//! ```text
//!  client ──WS /v1/ws──▶ ws driver ─▶ Session (sans-IO: auth, limits, state machine)
//!                           ▲   │ publish                     │ attach / detach
//!                   outbox  │   ▼                             ▼
//!                           │ batcher ──LogClient::publish──▶ LOG ──Subscribed/Messages──┐
//!                           └──────────── Hub (one upstream subscription per channel) ◀──┘
//!  client ──HTTP──▶ POST/GET /v1/channels/{ch}/messages, /healthz, /readyz, /metrics
//!  browser ──GET /v1/sse──▶ sse driver (SseSession, outbox) ──attach──▶ Hub   (subscribe only)
//! ```
//!
//! Key types: [`Edge::start`] → [`EdgeHandle`] (address, readiness, health status,
//! graceful shutdown); [`session::Session`], the per-connection protocol state machine, usable
//! without sockets. Inside: the hub (channel registry, cursors and fan-out: each
//! MESSAGE encoded once per format and shared by every subscriber), the link driver
//! (reconnect with backoff, resubscribe after the last delivered position, publish
//! batching), per-connection outboxes bounded in bytes (a slow reader is disconnected,
//! never waited for), the HTTP routes and typed metrics.
//!
//! Message functions (WebAssembly, through `tern-wasm`) run at ingress, before a
//! publish goes to the log, and at egress, before fan-out; deploys travel through the
//! log's `$functions` channel so every edge applies them in the same order.
//!
//! Server-Sent Events (`GET /v1/sse`) serve subscribe-only clients such as a browser's
//! `EventSource`: the same hub, pacing and continuity, resumed with `Last-Event-ID`.
//!
//! With `[health] enabled` the edge runs `tern-health`'s loop on its own runtime:
//! probes of itself (a WebSocket CONNECT on its listener, its link, its load, the
//! drain file), rise/fall hysteresis, BIRD (announce / de-prefer / withdraw the
//! anycast prefix) and reports to `tern dns`, exported on `/metrics`
//! (`tern_health_*`); `/readyz` is unchanged. A drain file sends every connected
//! client elsewhere but keeps the edge serving; [`EdgeHandle::shutdown`] (SIGTERM in
//! `tern edge`) first leaves anycast and DNS, then sends clients elsewhere and waits
//! up to `health.drain_timeout` for them.
//!
//! Not here yet: the MQTT transport, tokens, rate limits per key, TLS on the client
//! listener.

mod admin;
mod body;
mod convert;
mod functions;
mod health;
mod history;
mod http;
mod hub;
mod link;
mod metrics;
mod outbox;
mod server;
pub mod session;
mod sse;
mod ws;

pub use functions::FunctionsError;
pub use server::{Edge, EdgeError, EdgeHandle};
