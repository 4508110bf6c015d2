//! `tern-client`: the Rust client of Tern's client protocol v1 over WebSocket.
//!
//! A [`Client`] holds one connection to an edge and keeps it alive: when the
//! transport drops (or goes silent for two heartbeat intervals, or the server says
//! `DISCONNECTED` with `retry`/`elsewhere`) it reconnects with jittered exponential
//! backoff and **resumes** the connection wherever it lands with its latest
//! connection key (any edge of the cluster honours it within the state TTL): the same
//! connection id, every channel continuing after the last position the application
//! received on it (the replays at or below it are dropped), and every publish that
//! was not answered re-sent with its msg_serial. Every message also gets an id before
//! it is first sent (a random per-client prefix and a counter), so a re-sent publish
//! is stored once even when the resume was refused: the log's dedupe answers with the
//! original positions. [`Client::recovery_key`] and [`ClientConfig::recover`] carry a
//! connection across a restart of the application.
//!
//! **Which edge.** The primary URL first, then the fallback URLs (another domain,
//! another POP) in a random order, each once per round; the URL that worked goes
//! first next time — a fallback only for [`ClientConfig::fallback_retry`] (10 minutes
//! by default), then the primary gets its chance again — and an edge that said
//! "reconnect elsewhere" goes last. The very first connection tries every URL once,
//! at once, and [`Client::connect`] fails only when none answered.
//!
//! **Names.** Hosts are resolved by the client itself with hickory-resolver, against
//! [`ClientConfig::resolver`] ([`Resolver::System`]: `/etc/resolv.conf` and
//! `/etc/hosts`; or [`Resolver::Servers`]), never the system's `getaddrinfo`: A and
//! AAAA, cached per client for as long as the answers' TTLs say, so a DNS failover
//! with a short TTL is followed on the next attempt. TCP goes to the addresses one
//! after the other, IPv6 and IPv4 interleaved, each but the last given a quarter of
//! the request timeout; the WebSocket handshake names the host as the URL does. An IP
//! address in the URL skips DNS. A name that does not resolve, or none of whose
//! addresses answers, fails that attempt, and the next URL is tried.
//!
//! What it does not do (yet): TLS (`wss://`), tokens, moving a healthy connection
//! back to the primary when the fallback's time is up (that decides the next
//! connection only). A `ContinuityLost` is never hidden: it is a [`ChannelEvent`].
//!
//! Key types: [`Client`] (cheap to clone), [`ClientConfig`], [`Resolver`],
//! [`ChannelStream`] (a `futures::Stream` of [`ChannelEvent`]), [`AttachFrom`],
//! [`ConnectionState`], [`ClientError`] and [`PublishError`].
//!
//! ```text
//!  Client::publish ─┐                     ┌─ core (sans-IO): pending publishes by msg_serial,
//!  Client::attach  ─┼─▶ command queue ─▶ driver task   per-channel cursors, dedupe, backoff,
//!  ChannelStream ◀──┘ (bounded)           │            host rotation (primary, fallbacks)
//!                                         └─ dial: resolve (hickory, cached) ─▶ TCP ─▶ WebSocket ◀──▶ edge
//! ```
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use tern_client::{AttachFrom, ChannelEvent, Client, ClientConfig};
//! use tern_protocol::Message;
//!
//! let client = Client::connect(ClientConfig::new("ws://127.0.0.1:8080", "app.key:secret")).await?;
//! let mut chat = client.attach("chat", AttachFrom::Now).await?;
//! let results = client.publish("chat", vec![Message::new("hello")]).await?;
//! println!("stored at {}", results[0].position);
//! while let Some(ChannelEvent::Message { position, message }) = chat.next().await {
//!     println!("{position}: {:?}", message.data);
//! }
//! # Ok(()) }
//! ```

mod backoff;
mod channel;
mod config;
mod core;
mod dial;
mod driver;
mod error;
mod hosts;
mod recovery;
mod state;

use std::sync::Arc;

use tern_protocol::{Message, PublishResult};
use tokio::sync::{mpsc, oneshot, watch};

pub use channel::{AttachFrom, ChannelEvent, ChannelStream};
pub use config::{ClientConfig, Resolver};
pub use error::{ClientError, PublishError};
pub use state::ConnectionState;

use crate::backoff::Backoff;
use crate::core::{Core, CoreConfig};
use crate::dial::Dialer;
use crate::driver::{Command, Driver, Transport, now};

/// Commands waiting for the driver at once; callers wait beyond that.
const COMMAND_QUEUE: usize = 1024;

/// A connection to a Tern edge. Clones share the connection; it closes on
/// [`Client::close`], or when every clone and every [`ChannelStream`] is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ConnectionState>,
}

impl Client {
    /// Connects and waits for the server's CONNECTED. Fails if the configuration is
    /// invalid, the first connection cannot be made, or the server refuses it; later
    /// connection losses are repaired in the background.
    ///
    /// Must be called within a tokio runtime: the connection runs on a task of its own.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let (urls, recovered) = config.validate()?;
        // One resolver (and DNS cache) for the client's life. An address that does not
        // answer may take a quarter of the request timeout while others wait their turn.
        let dialer = Dialer::new(&config.resolver, config.request_timeout / 4)?;
        let core = Core::new(
            CoreConfig {
                key: config.key.clone(),
                client_id: config.client_id.clone(),
                backoff: Backoff {
                    min: config.reconnect_min,
                    max: config.reconnect_max,
                },
                request_timeout: config.request_timeout,
                max_pending_publishes: config.max_pending_publishes,
                urls,
                fallback_retry: config.fallback_retry,
                recovered,
                heartbeat_interval: config.heartbeat_interval,
            },
            now(),
            rand::random(),
        );
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let (state_tx, mut state) = watch::channel(ConnectionState::Connecting);
        let driver = Driver::new(
            core,
            Transport {
                format: config.format,
                connect_timeout: config.request_timeout,
                max_message_bytes: config.max_message_bytes,
                dialer: Arc::new(dialer),
            },
            receiver,
            commands.downgrade(),
            state_tx,
            config.channel_buffer,
        );
        tokio::spawn(driver.run());
        let first = state
            .wait_for(|s| {
                matches!(
                    s,
                    ConnectionState::Connected { .. } | ConnectionState::Closed { .. }
                )
            })
            .await
            .map(|s| s.clone());
        match first {
            Ok(ConnectionState::Connected { .. }) => Ok(Client {
                inner: Arc::new(Inner { commands, state }),
            }),
            Ok(ConnectionState::Closed { error: Some(error) }) => Err(error),
            _ => Err(ClientError::Closed),
        }
    }

    /// Attaches `channel` and waits for the server's ATTACHED. The stream yields the
    /// channel's messages in order, each once, across reconnects.
    pub async fn attach(
        &self,
        channel: impl Into<String>,
        from: AttachFrom,
    ) -> Result<ChannelStream, ClientError> {
        let channel = channel.into();
        let (reply, answer) = oneshot::channel();
        self.command(Command::Attach {
            channel: channel.clone(),
            from,
            reply,
        })
        .await?;
        let attachment = answer.await.map_err(|_| ClientError::Closed)??;
        Ok(ChannelStream::new(
            channel,
            attachment,
            self.inner.commands.clone(),
        ))
    }

    /// Detaches `channel`; its stream ends (without a `Detached` event).
    pub async fn detach(&self, channel: impl Into<String>) -> Result<(), ClientError> {
        self.command(Command::Detach {
            channel: channel.into(),
            generation: None,
        })
        .await
    }

    /// Publishes `messages` on `channel`, in order, and waits until they are durable.
    /// Resolves to one result per message (its position; `duplicate` when its id was
    /// already stored) or to the reason they were not stored. Unanswered publishes
    /// are re-sent after a reconnect; messages without an id get one first.
    pub async fn publish(
        &self,
        channel: impl Into<String>,
        messages: Vec<Message>,
    ) -> Result<Vec<PublishResult>, PublishError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Publish {
            channel: channel.into(),
            messages,
            reply,
        })
        .await
        .map_err(PublishError::Closed)?;
        answer
            .await
            .map_err(|_| PublishError::Closed(ClientError::Closed))?
    }

    /// Everything needed to resume this connection after the application lost its
    /// memory (a restart, a page reload): save it, and pass it to
    /// [`ClientConfig::recover`] next time. It changes as messages arrive and keys
    /// are refreshed, so save it again when you can (at least every
    /// `state_ttl / 4`, two minutes by default). `None` once the client is closed.
    pub async fn recovery_key(&self) -> Option<String> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::RecoveryKey { reply }).await.ok()?;
        answer.await.ok().flatten()
    }

    /// The connection's state, to watch for changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.clone()
    }

    /// Closes the connection (CLOSE, then the transport); pending publishes fail with
    /// [`ClientError::Closed`] and every stream ends. Returns once the connection is
    /// closed.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.command(Command::Close { reply }).await.is_ok() {
            let _ = done.await;
        }
    }

    async fn command(&self, command: Command) -> Result<(), ClientError> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed)
    }
}
