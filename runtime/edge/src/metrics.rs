//! [`Metrics`]: every number the edge exports on `/metrics`, in one typed place.
//!
//! Plain atomics, updated on the hot paths without locks; label sets are closed enums
//! ([`CloseReason`], [`Route`]), so the exported series are bounded whatever clients do.
//! [`Metrics::render`] writes the Prometheus text format 0.0.4.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Why a client connection ended (a label of `tern_edge_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client sent CLOSE, or closed the WebSocket or its SSE stream.
    Client,
    /// Bad credentials or a refused CONNECT; for an SSE stream, a channel the hub
    /// could not attach.
    Refused,
    /// Nothing received in time.
    IdleTimeout,
    /// The outbound queue went over its budget.
    SlowConsumer,
    /// A WebSocket message over the size limit.
    FrameTooLarge,
    /// The edge shut down.
    Shutdown,
    /// The transport failed (reset, protocol error).
    Transport,
}

impl CloseReason {
    const ALL: [CloseReason; 7] = [
        CloseReason::Client,
        CloseReason::Refused,
        CloseReason::IdleTimeout,
        CloseReason::SlowConsumer,
        CloseReason::FrameTooLarge,
        CloseReason::Shutdown,
        CloseReason::Transport,
    ];

    fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Refused => "refused",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Transport => "transport",
        }
    }
}

/// An HTTP route (a label of `tern_edge_http_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET /v1/ws`.
    WebSocket,
    /// `/v1/sse`.
    Sse,
    /// `POST /v1/channels/{channel}/messages`.
    Publish,
    /// `GET /v1/channels/{channel}/messages`.
    History,
    /// `/healthz`, `/readyz`, `/metrics`.
    Admin,
    /// Anything else.
    Other,
}

impl Route {
    const ALL: [Route; 6] = [
        Route::WebSocket,
        Route::Sse,
        Route::Publish,
        Route::History,
        Route::Admin,
        Route::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Route::WebSocket => "websocket",
            Route::Sse => "sse",
            Route::Publish => "publish",
            Route::History => "history",
            Route::Admin => "admin",
            Route::Other => "other",
        }
    }
}

/// Counts one WebSocket as closing while it lives ([`Metrics::closing`]).
#[derive(Debug)]
pub(crate) struct ClosingGuard<'a>(&'a AtomicU64);

impl Drop for ClosingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// The edge's counters and gauges.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    connections_open: AtomicU64,
    /// Of `connections_open`, the SSE streams.
    sse_open: AtomicU64,
    /// Of `connections_open`, the WebSockets that have sent everything, their close
    /// included, and wait only for the client's close reply.
    connections_closing: AtomicU64,
    connections_accepted: AtomicU64,
    connections_closed: [AtomicU64; CloseReason::ALL.len()],
    connections_refused_limit: AtomicU64,
    frames_received: AtomicU64,
    decode_errors: AtomicU64,
    publishes: AtomicU64,
    messages_published: AtomicU64,
    acks: AtomicU64,
    nacks: AtomicU64,
    messages_delivered: AtomicU64,
    channels: AtomicU64,
    continuity_lost: AtomicU64,
    link_up: AtomicBool,
    link_connects: AtomicU64,
    log_batches: AtomicU64,
    http_requests: [AtomicU64; Route::ALL.len()],
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self, reason: CloseReason) {
        self.connections_open.fetch_sub(1, Relaxed);
        let index = CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.connections_closed[index].fetch_add(1, Relaxed);
    }

    /// An SSE stream started (it counts as a connection too).
    pub(crate) fn sse_opened(&self) {
        self.connection_opened();
        self.sse_open.fetch_add(1, Relaxed);
    }

    /// An SSE stream ended.
    pub(crate) fn sse_closed(&self, reason: CloseReason) {
        self.sse_open.fetch_sub(1, Relaxed);
        self.connection_closed(reason);
    }

    /// Open client connections (WebSocket and SSE).
    pub(crate) fn open_connections(&self) -> u64 {
        self.connections_open.load(Relaxed)
    }

    /// Marks a WebSocket as having sent its close, until the guard is dropped.
    pub(crate) fn closing(&self) -> ClosingGuard<'_> {
        self.connections_closing.fetch_add(1, Relaxed);
        ClosingGuard(&self.connections_closing)
    }

    /// Open connections that still have something to send: those not yet closing.
    pub(crate) fn connections_with_words_left(&self) -> u64 {
        self.open_connections()
            .saturating_sub(self.connections_closing.load(Relaxed))
    }

    pub(crate) fn connection_refused_limit(&self) {
        self.connections_refused_limit.fetch_add(1, Relaxed);
    }

    pub(crate) fn frame_received(&self) {
        self.frames_received.fetch_add(1, Relaxed);
    }

    pub(crate) fn decode_error(&self) {
        self.decode_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn published(&self, messages: usize) {
        self.publishes.fetch_add(1, Relaxed);
        self.messages_published.fetch_add(messages as u64, Relaxed);
    }

    pub(crate) fn answered(&self, ok: bool) {
        if ok { &self.acks } else { &self.nacks }.fetch_add(1, Relaxed);
    }

    pub(crate) fn delivered(&self, messages: u64) {
        self.messages_delivered.fetch_add(messages, Relaxed);
    }

    pub(crate) fn set_channels(&self, channels: usize) {
        self.channels.store(channels as u64, Relaxed);
    }

    pub(crate) fn continuity_lost(&self) {
        self.continuity_lost.fetch_add(1, Relaxed);
    }

    pub(crate) fn set_link_up(&self, up: bool) {
        if up && !self.link_up.swap(true, Relaxed) {
            self.link_connects.fetch_add(1, Relaxed);
        } else if !up {
            self.link_up.store(false, Relaxed);
        }
    }

    /// True while the link to the log is up.
    pub(crate) fn link_is_up(&self) -> bool {
        self.link_up.load(Relaxed)
    }

    pub(crate) fn log_batch(&self) {
        self.log_batches.fetch_add(1, Relaxed);
    }

    pub(crate) fn http_request(&self, route: Route) {
        let index = Route::ALL.iter().position(|r| *r == route).unwrap_or(0);
        self.http_requests[index].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "tern_edge_connections_open",
            "gauge",
            "Client connections (WebSocket and SSE) open now.",
            self.connections_open.load(Relaxed),
        );
        one(
            "tern_edge_sse_connections_open",
            "gauge",
            "Client SSE streams open now (also counted in tern_edge_connections_open).",
            self.sse_open.load(Relaxed),
        );
        one(
            "tern_edge_connections_accepted_total",
            "counter",
            "Client connections (WebSocket and SSE) accepted.",
            self.connections_accepted.load(Relaxed),
        );
        one(
            "tern_edge_connections_refused_limit_total",
            "counter",
            "WebSocket upgrades and SSE streams refused because max_connections was reached.",
            self.connections_refused_limit.load(Relaxed),
        );
        one(
            "tern_edge_frames_received_total",
            "counter",
            "Client frames decoded.",
            self.frames_received.load(Relaxed),
        );
        one(
            "tern_edge_decode_errors_total",
            "counter",
            "Client messages or frames that could not be decoded.",
            self.decode_errors.load(Relaxed),
        );
        one(
            "tern_edge_publishes_total",
            "counter",
            "PUBLISH frames and REST publishes sent to the log.",
            self.publishes.load(Relaxed),
        );
        one(
            "tern_edge_messages_published_total",
            "counter",
            "Messages sent to the log.",
            self.messages_published.load(Relaxed),
        );
        one(
            "tern_edge_publish_acks_total",
            "counter",
            "Publishes answered with success.",
            self.acks.load(Relaxed),
        );
        one(
            "tern_edge_publish_nacks_total",
            "counter",
            "Publishes answered with an error after reaching the link.",
            self.nacks.load(Relaxed),
        );
        one(
            "tern_edge_messages_delivered_total",
            "counter",
            "MESSAGE frames queued for subscribers.",
            self.messages_delivered.load(Relaxed),
        );
        one(
            "tern_edge_channels",
            "gauge",
            "Channels followed upstream.",
            self.channels.load(Relaxed),
        );
        one(
            "tern_edge_continuity_lost_total",
            "counter",
            "Times the upstream could not continue a channel exactly.",
            self.continuity_lost.load(Relaxed),
        );
        one(
            "tern_edge_link_up",
            "gauge",
            "1 while the link to the log is up.",
            u64::from(self.link_up.load(Relaxed)),
        );
        one(
            "tern_edge_link_connects_total",
            "counter",
            "Successful connections to the log.",
            self.link_connects.load(Relaxed),
        );
        one(
            "tern_edge_log_publish_batches_total",
            "counter",
            "Publish batches sent to the log.",
            self.log_batches.load(Relaxed),
        );
        let name = "tern_edge_connections_closed_total";
        let _ = writeln!(
            out,
            "# HELP {name} Client connections closed, by reason.\n# TYPE {name} counter"
        );
        for (reason, value) in CloseReason::ALL.iter().zip(&self.connections_closed) {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                reason.label(),
                value.load(Relaxed)
            );
        }
        let name = "tern_edge_http_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP requests, by route.\n# TYPE {name} counter"
        );
        for (route, value) in Route::ALL.iter().zip(&self.http_requests) {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\"}} {}",
                route.label(),
                value.load(Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_once() {
        let metrics = Metrics::default();
        metrics.connection_opened();
        metrics.connection_closed(CloseReason::SlowConsumer);
        metrics.delivered(3);
        metrics.http_request(Route::History);
        metrics.sse_opened();
        let text = metrics.render();
        assert!(text.contains("tern_edge_connections_open 1\n"));
        assert!(text.contains("tern_edge_sse_connections_open 1\n"));
        metrics.sse_closed(CloseReason::Client);
        let text = metrics.render();
        assert!(text.contains("tern_edge_connections_open 0\n"));
        assert!(text.contains("tern_edge_sse_connections_open 0\n"));
        assert!(text.contains("tern_edge_connections_closed_total{reason=\"client\"} 1\n"));
        assert!(text.contains("tern_edge_connections_closed_total{reason=\"slow_consumer\"} 1\n"));
        assert!(text.contains("tern_edge_messages_delivered_total 3\n"));
        assert!(text.contains("tern_edge_http_requests_total{route=\"history\"} 1\n"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).expect("name");
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}
