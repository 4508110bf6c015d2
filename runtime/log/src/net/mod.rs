//! The log node's network side: the link server and client over QUIC.
//!
//! The frames and their codec live in `tern-link` (sans-IO); this module drives them
//! over quinn streams. It holds
//!
//! - [`tls`]: a self-signed development certificate created on first start, and the
//!   rustls/quinn configurations (ring provider, TLS 1.3, ALPN [`ALPN`]);
//! - [`LogServer`]: accepts connections, runs one task per connection and one per
//!   bidirectional stream, and answers publishes, reads and subscriptions from a
//!   [`LogStore`](crate::LogStore);
//! - [`LogClient`]: what the edge and `tern bench` use: pipelined publishes over one
//!   stream, reads, pings, and [`Subscription`]s on streams of their own.
//!
//! ```text
//!  LogClient ──stream 0: Publish/Read/Ping ──────────────▶ stream task ─▶ store.append (pipelined)
//!            ◀───────── PublishResult/ReadResult/Pong ──── (matched by request id)
//!  Subscription ──stream n: Subscribe{ch, from} ─────────▶ stream task ─▶ resolve, read (replay)
//!               ◀── Subscribed, Messages, Messages … ───── store.tail() (live)
//! ```
//!
//! What it does not do yet: client certificates (the link is TLS, not mutual TLS),
//! reconnection (a [`LogClient`] whose connection is lost stays failed; the caller
//! connects again), and per-connection limits beyond QUIC's stream limits.

mod client;
mod server;
mod stream;
mod subscribe;
mod subscriptions;
pub mod tls;

pub use client::{ClientError, LogClient, LogClientConfig};
pub use server::{LogServer, ServerError};
pub use subscribe::{Subscription, SubscriptionEvent};
pub use tls::{TlsError, TlsFiles};

/// The ALPN protocol name of the link; both sides insist on it.
pub const ALPN: &[u8] = b"tern-link/1";

/// QUIC application error codes used to close connections and reset streams.
///
/// Frames carry the detailed reason where they can; these codes are what is left
/// when a frame cannot be sent (the peer is not reading, the connection is going).
pub mod codes {
    use quinn::VarInt;

    /// Orderly close: nothing went wrong.
    pub const DONE: VarInt = VarInt::from_u32(0);
    /// The node is shutting down; connect again (elsewhere) and resume.
    pub const SHUTTING_DOWN: VarInt = VarInt::from_u32(1);
    /// The stream's subscriber fell behind and was dropped; resubscribe from the last
    /// delivered position.
    pub const SLOW_CONSUMER: VarInt = VarInt::from_u32(2);
    /// The peer broke the protocol (oversized frame, unknown version).
    pub const PROTOCOL: VarInt = VarInt::from_u32(3);
}
