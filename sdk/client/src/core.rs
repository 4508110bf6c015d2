//! The connection core: a sans-IO state machine holding everything that must survive
//! a reconnect — pending publishes (by msg_serial on the current connection), each
//! channel's cursor (the last position handed to the application) — and deciding
//! what to send, what to deliver and when to reconnect.
//!
//! The driver feeds it transport events (`handle_open`, `handle_frame`,
//! `handle_closed`, …), application commands (`publish`, `attach`, `detach`,
//! `close`) and the time (`handle_timeout` at `poll_timeout`), and carries out what
//! `poll_output` yields. Time is always an argument; nothing here blocks or spawns.
//!
//! ```text
//!  Opening ──open──▶ Handshake ──CONNECTED──▶ Up ──transport lost / DISCONNECTED retry──▶ Waiting
//!     ▲                  │ lost                │                                           │
//!     └──────────────────┴──── backoff ◀───────┴───────────────────────────────────────────┘
//!  any ──close()──▶ Closing ──CLOSED / timeout──▶ Closed ◀── DISCONNECTED never / first connect failed
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tern_protocol::{
    Ack, Attach, Attached, ClientFrame, Connect, Connected, Detach, Detached, ErrorCode, ErrorInfo,
    Heartbeat, Limits, Message, MessageFrame, Nack, Position, Publish, PublishResult, Reconnect,
    Rewind, ServerFrame, check_channel_name,
};

use crate::backoff::Backoff;
use crate::channel::{AttachFrom, ChannelEvent};
use crate::error::{ClientError, PublishError};
use crate::hosts::Hosts;
use crate::recovery::Recovery;
use crate::state::ConnectionState;

/// What the core needs to know from the application's configuration.
#[derive(Clone, Debug)]
pub(crate) struct CoreConfig {
    pub(crate) key: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) backoff: Backoff,
    pub(crate) request_timeout: Duration,
    pub(crate) max_pending_publishes: usize,
    /// The WebSocket URLs to dial: the primary, then the fallbacks.
    pub(crate) urls: Vec<String>,
    /// How long a fallback that worked keeps going first.
    pub(crate) fallback_retry: Duration,
    /// Where a connection from before (a recovery key) left off.
    pub(crate) recovered: Option<Recovery>,
    /// The heartbeat interval to ask for in CONNECT.
    pub(crate) heartbeat_interval: Option<Duration>,
}

/// Something for the driver to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Output {
    /// Open a new transport to `url`, then call `handle_open` or `handle_open_failed`.
    Open { url: String },
    /// Send this frame on the current transport.
    Send(ClientFrame),
    /// Drop the current transport (or the one being opened).
    CloseTransport,
    /// Hand this event to the channel's stream. If its buffer is full, call
    /// `handle_overflow(channel, previous)`.
    Deliver {
        channel: String,
        event: ChannelEvent,
        /// The channel's cursor before this event.
        previous: Option<Position>,
    },
    /// The channel's stream ends, with this error (none: the application detached).
    Ended {
        channel: String,
        error: Option<ClientError>,
    },
    /// The answer to `attach`: the position delivery continues after, or why not.
    AttachDone {
        channel: String,
        result: Result<Position, ClientError>,
    },
    /// The answer to `publish` number `id`.
    PublishDone {
        id: u64,
        result: Result<Vec<PublishResult>, PublishError>,
    },
    /// The connection's state changed.
    State(ConnectionState),
}

/// A PUBLISH waiting for its ACK or NACK; kept across reconnects and re-sent.
#[derive(Debug)]
struct PendingPublish {
    channel: String,
    /// Every message has an id, so a re-send is stored once.
    messages: Vec<Message>,
    /// The msg_serial it was sent with; kept across a resumed connection, so a
    /// re-send has the same idempotency keys.
    serial: Option<u64>,
    deadline: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelState {
    /// Needs an ATTACH once the connection is up.
    Waiting,
    /// ATTACH sent; MESSAGE frames are dropped until ATTACHED.
    Attaching,
    Attached,
    /// The application's buffer was full: DETACH sent, nothing delivered until
    /// `handle_resume` re-attaches from the cursor.
    Paused,
}

#[derive(Debug)]
struct Channel {
    from: AttachFrom,
    /// The position of the last event handed to the application, or the position
    /// ATTACHED named (`0:0` for a channel that had no message yet); delivery resumes
    /// after it and anything at or below it is dropped. `None` only until the first
    /// ATTACHED of an attach without `from`.
    cursor: Option<Position>,
    /// The first ATTACHED arrived (and `attach` was answered).
    confirmed: bool,
    state: ChannelState,
    /// Until the first ATTACHED: when `attach` gives up.
    deadline: Option<Instant>,
}

/// The current connection, once CONNECTED.
#[derive(Debug)]
struct Session {
    heartbeat: Duration,
    send_every: Duration,
    limits: Limits,
    last_recv: Instant,
    last_sent: Instant,
    /// msg_serial → publish id, for PUBLISH frames not yet answered; `None` once the
    /// application's publish timed out (the server still counts it as in flight).
    inflight: HashMap<u64, Option<u64>>,
    /// DETACH frames sent and not yet answered, per channel.
    detaching: HashMap<String, u32>,
}

#[derive(Debug)]
enum Link {
    /// Backing off until `until`, then `Open`.
    Waiting {
        until: Instant,
    },
    /// The driver is opening a transport.
    Opening,
    /// CONNECT sent.
    Handshake {
        deadline: Instant,
    },
    Up(Session),
    /// CLOSE sent.
    Closing {
        deadline: Instant,
    },
    Closed,
}

/// The client's sans-IO connection core.
pub(crate) struct Core {
    config: CoreConfig,
    rng: StdRng,
    link: Link,
    /// Connection attempts since the last CONNECTED.
    attempt: u32,
    ever_connected: bool,
    /// Why each URL failed, until the first CONNECTED.
    first_errors: Vec<String>,
    hosts: Hosts,
    /// The latest connection key: CONNECT presents it to resume the connection.
    connection_key: Option<String>,
    /// The next msg_serial of the connection; starts again at 0 only when a resume
    /// was not honoured.
    next_serial: u64,
    /// Positions from a recovery key for channels not attached again yet: an
    /// `attach` with `AttachFrom::Now` continues from there instead.
    recovered_positions: BTreeMap<String, Position>,
    id_prefix: String,
    next_message_id: u64,
    next_publish: u64,
    /// By publish id: creation order, which is also send and deadline order.
    publishes: BTreeMap<u64, PendingPublish>,
    channels: BTreeMap<String, Channel>,
    outputs: VecDeque<Output>,
}

impl Core {
    /// A core that starts, at `now`, by opening a transport. `seed` drives the
    /// message-id prefix, the order of the fallbacks and the backoff jitter.
    pub(crate) fn new(config: CoreConfig, now: Instant, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let id_prefix = format!("tc-{:016x}", rand::Rng::random::<u64>(&mut rng));
        let mut hosts = Hosts::new(config.urls.len(), config.fallback_retry);
        let url = config.urls[hosts.next(now, &mut rng)].clone();
        let recovered = config.recovered.clone();
        let mut core = Self {
            config,
            rng,
            link: Link::Opening,
            attempt: 0,
            ever_connected: false,
            first_errors: Vec::new(),
            hosts,
            connection_key: recovered.as_ref().map(|r| r.connection_key.clone()),
            next_serial: recovered.as_ref().map_or(0, |r| r.msg_serial),
            recovered_positions: recovered.map(|r| r.channels).unwrap_or_default(),
            id_prefix,
            next_message_id: 0,
            next_publish: 0,
            publishes: BTreeMap::new(),
            channels: BTreeMap::new(),
            outputs: VecDeque::new(),
        };
        core.outputs
            .push_back(Output::State(ConnectionState::Connecting));
        core.outputs.push_back(Output::Open { url });
        core
    }

    /// What a client needs to resume this connection after losing its memory; `None`
    /// before the first CONNECTED.
    pub(crate) fn recovery(&self) -> Option<Recovery> {
        let connection_key = self.connection_key.clone()?;
        let mut channels = self.recovered_positions.clone();
        channels.extend(
            self.channels
                .iter()
                .filter_map(|(name, ch)| Some((name.clone(), ch.cursor?))),
        );
        // Publishes not answered yet were given serials below `next_serial`; a
        // recovered client resends them with ids (it cannot know their serials).
        Some(Recovery {
            connection_key,
            msg_serial: self.next_serial,
            channels,
        })
    }

    /// The next thing for the driver to do.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// True once the core has stopped for good; the driver ends.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.link, Link::Closed) && self.outputs.is_empty()
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Waiting { until } => Some(*until),
            Link::Handshake { deadline } | Link::Closing { deadline } => Some(*deadline),
            Link::Up(s) => {
                let silence = (!s.heartbeat.is_zero()).then(|| s.last_recv + s.heartbeat * 2);
                let beat = (!s.send_every.is_zero()).then(|| s.last_sent + s.send_every);
                min_opt(silence, beat)
            }
            Link::Opening | Link::Closed => None,
        };
        let publish = self.publishes.first_key_value().map(|(_, p)| p.deadline);
        let attach = self.channels.values().filter_map(|c| c.deadline).min();
        min_opt(min_opt(link, publish), attach)
    }

    /// Time passed: reconnect, detect a silent connection, send a heartbeat, give up
    /// on publishes and attaches that waited too long.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match &mut self.link {
            Link::Waiting { until } if *until <= now => {
                self.outputs
                    .push_back(Output::State(ConnectionState::Connecting));
                self.open_next(now);
            }
            Link::Handshake { deadline } if *deadline <= now => {
                let waited = self.config.request_timeout;
                self.lost(now, format!("no CONNECTED within {waited:?}"));
            }
            Link::Closing { deadline } if *deadline <= now => self.finish_close(None),
            Link::Up(s) => {
                if !s.heartbeat.is_zero() && s.last_recv + s.heartbeat * 2 <= now {
                    let silent = now.saturating_duration_since(s.last_recv);
                    self.lost(now, format!("nothing heard from the server for {silent:?}"));
                } else if !s.send_every.is_zero() && s.last_sent + s.send_every <= now {
                    self.send(now, ClientFrame::Heartbeat(Heartbeat::default()));
                }
            }
            _ => {}
        }
        while let Some(entry) = self.publishes.first_entry() {
            if entry.get().deadline > now {
                break;
            }
            let (id, _) = entry.remove_entry();
            if let Link::Up(s) = &mut self.link {
                for slot in s.inflight.values_mut() {
                    if *slot == Some(id) {
                        *slot = None;
                    }
                }
            }
            self.outputs.push_back(Output::PublishDone {
                id,
                result: Err(PublishError::Timeout(self.config.request_timeout)),
            });
        }
        let expired: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            self.drop_channel(now, &name);
            self.outputs.push_back(Output::AttachDone {
                channel: name,
                result: Err(ClientError::Timeout(self.config.request_timeout)),
            });
        }
    }

    /// The transport asked for by `Output::Open` is open: say CONNECT.
    pub(crate) fn handle_open(&mut self, now: Instant) {
        if !matches!(self.link, Link::Opening) {
            return;
        }
        self.link = Link::Handshake {
            deadline: now + self.config.request_timeout,
        };
        // Channels with a known position are re-attached by CONNECT itself.
        let mut channels = BTreeMap::new();
        for (name, ch) in &mut self.channels {
            if ch.state == ChannelState::Waiting
                && let Some(position) = ch.cursor
            {
                ch.state = ChannelState::Attaching;
                channels.insert(name.clone(), position);
            }
        }
        self.outputs
            .push_back(Output::Send(ClientFrame::Connect(Connect {
                key: self.config.key.clone(),
                client_id: self.config.client_id.clone(),
                resume: self.connection_key.clone(),
                channels,
                heartbeat_interval_ms: self
                    .config
                    .heartbeat_interval
                    .map(|interval| u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)),
                ..Connect::default()
            })));
    }

    /// The transport asked for by `Output::Open` could not be opened.
    pub(crate) fn handle_open_failed(&mut self, now: Instant, error: String) {
        if matches!(self.link, Link::Opening) {
            self.lost(now, error);
        }
    }

    /// The transport closed or failed by itself.
    pub(crate) fn handle_closed(&mut self, now: Instant, reason: String) {
        match self.link {
            Link::Closing { .. } => self.finish_close(None),
            Link::Handshake { .. } | Link::Up(_) => self.lost(now, reason),
            _ => {}
        }
    }

    /// A frame from the server.
    pub(crate) fn handle_frame(&mut self, now: Instant, frame: ServerFrame) {
        match &mut self.link {
            Link::Up(s) => s.last_recv = now,
            Link::Handshake { .. } | Link::Closing { .. } => {}
            // A frame from a transport already given up on.
            _ => return,
        }
        match frame {
            ServerFrame::Connected(connected) => self.on_connected(now, connected),
            ServerFrame::Attached(attached) => self.on_attached(attached),
            ServerFrame::Detached(detached) => self.on_detached(detached),
            ServerFrame::Message(message) => self.on_message(now, message),
            ServerFrame::Ack(Ack {
                msg_serial,
                results,
            }) => self.on_answer(now, msg_serial, Ok(results)),
            ServerFrame::Nack(Nack { msg_serial, error }) => {
                self.on_answer(now, msg_serial, Err(PublishError::Nack(error)));
            }
            ServerFrame::Heartbeat(Heartbeat {
                connection_key: Some(key),
                ..
            }) => self.connection_key = Some(key),
            ServerFrame::Heartbeat(_) => {}
            ServerFrame::Error(frame) => {
                tracing::warn!(error = %frame.error, channel = ?frame.channel, "server reported an error");
            }
            ServerFrame::Disconnected(disconnected) => match disconnected.reconnect {
                Reconnect::Never => {
                    let error = if self.ever_connected {
                        ClientError::Disconnected(disconnected.error)
                    } else {
                        ClientError::Refused(disconnected.error)
                    };
                    self.fail(error);
                }
                Reconnect::Retry | Reconnect::Elsewhere => {
                    if disconnected.reconnect == Reconnect::Elsewhere {
                        self.hosts.avoid_current();
                    }
                    if matches!(self.link, Link::Closing { .. }) {
                        self.finish_close(None);
                    } else {
                        let reason = format!("server disconnected: {}", disconnected.error);
                        self.lost(now, reason);
                    }
                }
            },
            ServerFrame::Closed(_) => {
                if matches!(self.link, Link::Closing { .. }) {
                    self.finish_close(None);
                } else {
                    self.lost(now, "server closed the session".into());
                }
            }
            other => tracing::debug!(
                kind = other.kind(),
                "ignoring a frame this client does not know"
            ),
        }
    }

    /// Publish `messages` on `channel`; the answer comes as `Output::PublishDone`
    /// with the returned id. Messages without an id get one, so that a re-send after
    /// a reconnect is stored once.
    pub(crate) fn publish(
        &mut self,
        now: Instant,
        channel: String,
        mut messages: Vec<Message>,
    ) -> Result<u64, PublishError> {
        if matches!(self.link, Link::Closing { .. } | Link::Closed) {
            return Err(PublishError::Closed(ClientError::Closed));
        }
        check_channel_name(&channel).map_err(PublishError::Invalid)?;
        if messages.is_empty() {
            return Err(PublishError::Invalid(ErrorInfo::new(
                ErrorCode::InvalidValue,
                "a publish needs at least one message",
            )));
        }
        if self.publishes.len() >= self.config.max_pending_publishes {
            return Err(PublishError::Invalid(ErrorInfo::new(
                ErrorCode::TooManyInflight,
                format!(
                    "{} publishes are already waiting for an answer",
                    self.publishes.len()
                ),
            )));
        }
        for message in &mut messages {
            if message.id.is_none() {
                message.id = Some(format!("{}-{}", self.id_prefix, self.next_message_id));
                self.next_message_id += 1;
            }
        }
        let id = self.next_publish;
        self.next_publish += 1;
        self.publishes.insert(
            id,
            PendingPublish {
                channel,
                messages,
                serial: None,
                deadline: now + self.config.request_timeout,
            },
        );
        self.flush_publishes(now);
        Ok(id)
    }

    /// Attach `channel`; the answer comes as `Output::AttachDone`, then events as
    /// `Output::Deliver`.
    pub(crate) fn attach(
        &mut self,
        now: Instant,
        channel: String,
        from: AttachFrom,
    ) -> Result<(), ClientError> {
        if matches!(self.link, Link::Closing { .. } | Link::Closed) {
            return Err(ClientError::Closed);
        }
        check_channel_name(&channel).map_err(ClientError::Refused)?;
        if self.channels.contains_key(&channel) {
            return Err(ClientError::AlreadyAttached(channel));
        }
        let recovered = self.recovered_positions.remove(&channel);
        let from = match (from, recovered) {
            (AttachFrom::Now, Some(position)) => AttachFrom::After(position),
            (from, _) => from,
        };
        self.channels.insert(
            channel.clone(),
            Channel {
                from,
                cursor: match from {
                    AttachFrom::After(position) => Some(position),
                    AttachFrom::Now | AttachFrom::Rewind(_) | AttachFrom::RewindSpan(_) => None,
                },
                confirmed: false,
                state: ChannelState::Waiting,
                deadline: Some(now + self.config.request_timeout),
            },
        );
        if matches!(self.link, Link::Up(_)) {
            self.send_attach(now, &channel);
        }
        Ok(())
    }

    /// The application no longer wants `channel`. Its stream is the driver's to end.
    pub(crate) fn detach(&mut self, now: Instant, channel: &str) {
        self.drop_channel(now, channel);
    }

    /// The stream of `channel` was full: the event delivered with `previous` was not
    /// taken. Pause the channel and roll its cursor back; `handle_resume` re-attaches.
    pub(crate) fn handle_overflow(
        &mut self,
        now: Instant,
        channel: &str,
        previous: Option<Position>,
    ) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        ch.cursor = previous;
        let was = std::mem::replace(&mut ch.state, ChannelState::Paused);
        if matches!(was, ChannelState::Attaching | ChannelState::Attached)
            && matches!(self.link, Link::Up(_))
        {
            self.send_detach(now, channel);
        }
        self.outputs
            .retain(|o| !matches!(o, Output::Deliver { channel: c, .. } if c == channel));
    }

    /// The stream of `channel` has room again: re-attach from its cursor.
    pub(crate) fn handle_resume(&mut self, now: Instant, channel: &str) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        if ch.state != ChannelState::Paused {
            return;
        }
        ch.state = ChannelState::Waiting;
        if matches!(self.link, Link::Up(_)) {
            self.send_attach(now, channel);
        }
    }

    /// Close the client: CLOSE the session, fail what is pending, end every stream.
    pub(crate) fn close(&mut self, now: Instant) {
        if matches!(self.link, Link::Closing { .. } | Link::Closed) {
            return;
        }
        self.abandon_all(&ClientError::Closed, None);
        if matches!(self.link, Link::Up(_) | Link::Handshake { .. }) {
            self.send(now, ClientFrame::Close(Default::default()));
            self.link = Link::Closing {
                deadline: now + self.config.request_timeout.min(Duration::from_secs(2)),
            };
        } else {
            self.finish_close(None);
        }
    }

    fn on_connected(&mut self, now: Instant, connected: Connected) {
        if !matches!(self.link, Link::Handshake { .. }) {
            return;
        }
        let heartbeat = Duration::from_millis(connected.heartbeat_interval_ms);
        let idle = Duration::from_millis(connected.idle_timeout_ms);
        // Send something often enough that the server never finds us idle.
        let send_every = match (heartbeat.is_zero(), idle.is_zero()) {
            (false, false) => heartbeat.min(idle / 2),
            (false, true) => heartbeat,
            (true, false) => idle / 2,
            (true, true) => Duration::ZERO,
        };
        if let Some(error) = &connected.error {
            tracing::info!(%error, "the connection could not be resumed; a new one started");
        }
        if !connected.resumed {
            // A new connection: its msg_serials start again, and what was in flight
            // is resent under new ones (every message has an id, so it is stored once).
            self.next_serial = 0;
            for publish in self.publishes.values_mut() {
                publish.serial = None;
            }
        }
        self.connection_key = Some(connected.connection_key);
        // On a resumed connection, PUBLISH frames not answered yet go again with
        // their msg_serials, oldest first.
        let inflight: HashMap<u64, Option<u64>> = self
            .publishes
            .iter()
            .filter_map(|(&id, p)| Some((p.serial?, Some(id))))
            .collect();
        let resend: Vec<ClientFrame> = self
            .publishes
            .values()
            .filter_map(|p| {
                Some(ClientFrame::Publish(Publish {
                    msg_serial: p.serial?,
                    channel: p.channel.clone(),
                    messages: p.messages.clone(),
                }))
            })
            .collect();
        self.link = Link::Up(Session {
            heartbeat,
            send_every,
            limits: connected.limits,
            last_recv: now,
            last_sent: now,
            inflight,
            detaching: HashMap::new(),
        });
        self.attempt = 0;
        self.ever_connected = true;
        self.hosts.connected(now);
        self.first_errors.clear();
        self.outputs
            .push_back(Output::State(ConnectionState::Connected {
                connection_id: connected.connection_id,
                resumed: connected.resumed,
                url: self.config.urls[self.hosts.current()].clone(),
            }));
        for frame in resend {
            self.send(now, frame);
        }
        let waiting: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| c.state == ChannelState::Waiting)
            .map(|(name, _)| name.clone())
            .collect();
        for name in waiting {
            self.send_attach(now, &name);
        }
        self.flush_publishes(now);
    }

    fn on_attached(&mut self, attached: Attached) {
        let Some(ch) = self.channels.get_mut(&attached.channel) else {
            return;
        };
        match ch.state {
            ChannelState::Attaching => {}
            // Unsolicited: the log lost continuity while the channel was attached.
            ChannelState::Attached if !attached.resumed && attached.error.is_some() => {}
            // An answer to an ATTACH superseded by a DETACH (pause), or a repeat of
            // what is already known: the next one counts.
            _ => return,
        }
        ch.state = ChannelState::Attached;
        let previous = ch.cursor;
        // The server always names the position (0:0 before the channel's first
        // message); a frame without one can only mean nothing came before.
        let position = attached.position.unwrap_or(Position::BEFORE_FIRST);
        ch.cursor = Some(position);
        if !ch.confirmed {
            ch.confirmed = true;
            ch.deadline = None;
            self.outputs.push_back(Output::AttachDone {
                channel: attached.channel.clone(),
                result: Ok(position),
            });
        }
        if let Some(reason) = attached.error.filter(|_| !attached.resumed) {
            self.outputs.push_back(Output::Deliver {
                channel: attached.channel,
                event: ChannelEvent::ContinuityLost { position, reason },
                previous,
            });
        }
    }

    fn on_detached(&mut self, detached: Detached) {
        if detached.error.is_none()
            && let Link::Up(s) = &mut self.link
            && let Some(count) = s.detaching.get_mut(&detached.channel)
        {
            // The answer to our own DETACH.
            *count -= 1;
            if *count == 0 {
                s.detaching.remove(&detached.channel);
            }
            return;
        }
        let Some(ch) = self.channels.remove(&detached.channel) else {
            return;
        };
        let error = ClientError::Refused(detached.error.unwrap_or_else(|| {
            ErrorInfo::new(ErrorCode::Internal, "the server detached the channel")
        }));
        if ch.confirmed {
            self.outputs.push_back(Output::Ended {
                channel: detached.channel,
                error: Some(error),
            });
        } else {
            self.outputs.push_back(Output::AttachDone {
                channel: detached.channel,
                result: Err(error),
            });
        }
    }

    fn on_message(&mut self, now: Instant, frame: MessageFrame) {
        let Some(ch) = self.channels.get_mut(&frame.channel) else {
            return;
        };
        if ch.state != ChannelState::Attached {
            return;
        }
        if let Some(cursor) = ch.cursor {
            if frame.position.serial <= cursor.serial {
                // Already delivered (a replay after a reconnect).
                return;
            }
            if frame.position.serial > cursor.serial + 1 {
                // The protocol promises no gaps; should one appear anyway, fetch what is
                // missing from the cursor rather than skip it.
                tracing::warn!(
                    channel = %frame.channel, %cursor, got = %frame.position,
                    "gap in a channel's messages; re-attaching from the last position"
                );
                let channel = frame.channel;
                self.send_attach(now, &channel);
                return;
            }
        }
        let previous = ch.cursor;
        ch.cursor = Some(frame.position);
        self.outputs.push_back(Output::Deliver {
            channel: frame.channel,
            event: ChannelEvent::Message {
                position: frame.position,
                message: frame.message,
            },
            previous,
        });
    }

    fn on_answer(
        &mut self,
        now: Instant,
        serial: u64,
        result: Result<Vec<PublishResult>, PublishError>,
    ) {
        let Link::Up(s) = &mut self.link else {
            return;
        };
        let Some(slot) = s.inflight.remove(&serial) else {
            tracing::debug!(serial, "answer to an unknown msg_serial");
            return;
        };
        if let Some(id) = slot
            && self.publishes.remove(&id).is_some()
        {
            self.outputs.push_back(Output::PublishDone { id, result });
        }
        self.flush_publishes(now);
    }

    /// Sends waiting publishes, oldest first, within the server's in-flight limit.
    fn flush_publishes(&mut self, now: Instant) {
        let Link::Up(s) = &mut self.link else {
            return;
        };
        let limit = usize::try_from(s.limits.max_inflight_publishes.max(1)).unwrap_or(usize::MAX);
        let mut frames = Vec::new();
        for (&id, publish) in self.publishes.iter_mut() {
            if s.inflight.len() >= limit {
                break;
            }
            if publish.serial.is_some() {
                continue;
            }
            let serial = self.next_serial;
            self.next_serial += 1;
            s.inflight.insert(serial, Some(id));
            publish.serial = Some(serial);
            frames.push(ClientFrame::Publish(Publish {
                msg_serial: serial,
                channel: publish.channel.clone(),
                messages: publish.messages.clone(),
            }));
        }
        for frame in frames {
            self.send(now, frame);
        }
    }

    fn send_attach(&mut self, now: Instant, name: &str) {
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        let mut attach = Attach {
            channel: name.to_owned(),
            ..Attach::default()
        };
        // Once attached, the cursor is known (ATTACHED always names a position), so a
        // re-attach continues from it even on a channel that was empty: whatever was
        // stored meanwhile is delivered, or the server says continuity was lost.
        match (ch.cursor, ch.from) {
            (Some(position), _) => attach.from = Some(position),
            (None, AttachFrom::Rewind(n)) => attach.rewind = Some(Rewind::Messages(n)),
            (None, AttachFrom::RewindSpan(span)) => attach.rewind = Some(Rewind::Span(span)),
            (None, _) => {}
        }
        ch.state = ChannelState::Attaching;
        self.send(now, ClientFrame::Attach(attach));
    }

    fn send_detach(&mut self, now: Instant, name: &str) {
        if let Link::Up(s) = &mut self.link {
            *s.detaching.entry(name.to_owned()).or_default() += 1;
        }
        self.send(
            now,
            ClientFrame::Detach(Detach {
                channel: name.to_owned(),
            }),
        );
    }

    /// Forgets `name`, telling the server if it knows of it.
    fn drop_channel(&mut self, now: Instant, name: &str) {
        let Some(ch) = self.channels.remove(name) else {
            return;
        };
        if matches!(ch.state, ChannelState::Attaching | ChannelState::Attached)
            && matches!(self.link, Link::Up(_))
        {
            self.send_detach(now, name);
        }
    }

    fn send(&mut self, now: Instant, frame: ClientFrame) {
        if let Link::Up(s) = &mut self.link {
            s.last_sent = now;
        }
        self.outputs.push_back(Output::Send(frame));
    }

    /// The transport is gone (or given up on): back off and reconnect, keeping every
    /// publish and channel for the next connection.
    /// Asks the driver for a transport to the next URL of the rotation.
    fn open_next(&mut self, now: Instant) {
        self.link = Link::Opening;
        let url = self.config.urls[self.hosts.next(now, &mut self.rng)].clone();
        self.outputs.push_back(Output::Open { url });
    }

    fn lost(&mut self, now: Instant, reason: String) {
        if !self.ever_connected {
            // The first connection tries every URL once, one after the other, and
            // fails only when none of them answered.
            self.first_errors.push(reason);
            if self.first_errors.len() < self.config.urls.len() {
                tracing::info!(
                    error = %self.first_errors.last().map_or("", String::as_str),
                    "could not connect; trying the next URL"
                );
                self.outputs.push_back(Output::CloseTransport);
                self.open_next(now);
            } else {
                let errors = std::mem::take(&mut self.first_errors);
                self.fail(ClientError::Transport(errors.join("; ")));
            }
            return;
        }
        tracing::info!(%reason, attempt = self.attempt, "connection lost; reconnecting");
        self.outputs.push_back(Output::CloseTransport);
        for ch in self.channels.values_mut() {
            if ch.state != ChannelState::Paused {
                ch.state = ChannelState::Waiting;
            }
        }
        let delay = self.config.backoff.delay(self.attempt, &mut self.rng);
        self.attempt = self.attempt.saturating_add(1);
        self.link = Link::Waiting { until: now + delay };
        self.outputs
            .push_back(Output::State(ConnectionState::Reconnecting {
                attempt: self.attempt,
                error: reason,
                retry_in: delay,
            }));
    }

    /// Stop for good with `error`.
    fn fail(&mut self, error: ClientError) {
        tracing::warn!(%error, "client stopped");
        self.abandon_all(&error, Some(&error));
        self.finish_close(Some(error));
    }

    /// Answers every pending publish and attach with `error` and ends every stream
    /// (with `ended` as the streams' last event, if any).
    fn abandon_all(&mut self, error: &ClientError, ended: Option<&ClientError>) {
        for (id, _) in std::mem::take(&mut self.publishes) {
            self.outputs.push_back(Output::PublishDone {
                id,
                result: Err(PublishError::Closed(error.clone())),
            });
        }
        for (channel, ch) in std::mem::take(&mut self.channels) {
            self.outputs.push_back(if ch.confirmed {
                Output::Ended {
                    channel,
                    error: ended.cloned(),
                }
            } else {
                Output::AttachDone {
                    channel,
                    result: Err(error.clone()),
                }
            });
        }
    }

    fn finish_close(&mut self, error: Option<ClientError>) {
        self.link = Link::Closed;
        self.outputs.push_back(Output::CloseTransport);
        self.outputs
            .push_back(Output::State(ConnectionState::Closed { error }));
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_protocol::{Closed, ErrorFrame, Operation};

    const URL: &str = "ws://edge:1/v1/ws";

    fn open() -> Output {
        Output::Open { url: URL.into() }
    }

    fn pos(epoch: u64, serial: u64) -> Position {
        Position { epoch, serial }
    }

    /// A core and a virtual clock; the test plays the server.
    struct Sim {
        core: Core,
        now: Instant,
        /// The CONNECT of the last handshake.
        last_connect: Option<Connect>,
    }

    impl Sim {
        fn new() -> Self {
            let config = CoreConfig {
                key: Some("app.k:secret".into()),
                client_id: Some("me".into()),
                backoff: Backoff {
                    min: Duration::from_millis(100),
                    max: Duration::from_secs(1),
                },
                request_timeout: Duration::from_secs(5),
                max_pending_publishes: 4,
                urls: vec![URL.into()],
                fallback_retry: Duration::from_secs(600),
                recovered: None,
                heartbeat_interval: Some(Duration::from_secs(20)),
            };
            Self::with(config, 1)
        }

        /// A core on `config`, started now.
        fn with(config: CoreConfig, seed: u64) -> Self {
            let now = Instant::now();
            Self {
                core: Core::new(config, now, seed),
                now,
                last_connect: None,
            }
        }

        fn outputs(&mut self) -> Vec<Output> {
            std::iter::from_fn(|| self.core.poll_output()).collect()
        }

        /// The frames sent since the last call; other outputs are dropped.
        fn sent(&mut self) -> Vec<ClientFrame> {
            self.outputs()
                .into_iter()
                .filter_map(|o| match o {
                    Output::Send(frame) => Some(frame),
                    _ => None,
                })
                .collect()
        }

        fn frame(&mut self, frame: ServerFrame) {
            self.core.handle_frame(self.now, frame);
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.core.handle_timeout(self.now);
        }

        fn connected(id: &str, max_inflight: u32) -> ServerFrame {
            ServerFrame::Connected(Connected {
                connection_id: id.into(),
                connection_key: "key".into(),
                heartbeat_interval_ms: 1_000,
                idle_timeout_ms: 10_000,
                limits: Limits {
                    max_inflight_publishes: max_inflight,
                    ..Limits::default()
                },
                ..Connected::default()
            })
        }

        /// From `Open`: the transport opens, CONNECT goes out, CONNECTED comes back.
        /// Returns the channels of CONNECT as the ATTACH frames they stand for (the
        /// server answers both alike), then the frames sent after CONNECTED.
        fn handshake(&mut self, id: &str, max_inflight: u32) -> Vec<ClientFrame> {
            self.handshake_as(Self::connected(id, max_inflight))
        }

        /// [`Sim::handshake`] answered with `connected`.
        fn handshake_as(&mut self, connected: ServerFrame) -> Vec<ClientFrame> {
            self.core.handle_open(self.now);
            let sent = self.sent();
            let [ClientFrame::Connect(connect)] = &sent[..] else {
                panic!("expected CONNECT alone: {sent:?}")
            };
            assert_eq!(connect.key.as_deref(), Some("app.k:secret"));
            assert_eq!(connect.client_id.as_deref(), Some("me"));
            assert_eq!(connect.heartbeat_interval_ms, Some(20_000));
            self.last_connect = Some(connect.clone());
            let mut frames: Vec<ClientFrame> = connect
                .channels
                .iter()
                .map(|(channel, from)| {
                    ClientFrame::Attach(Attach {
                        channel: channel.clone(),
                        from: Some(*from),
                        rewind: None,
                    })
                })
                .collect();
            self.frame(connected);
            frames.extend(self.sent());
            frames
        }

        fn start() -> Self {
            let mut sim = Self::new();
            let first = sim.outputs();
            assert_eq!(
                first,
                vec![Output::State(ConnectionState::Connecting), open()]
            );
            assert!(sim.handshake("c1", 8).is_empty());
            sim
        }

        /// The transport drops; the backoff passes; a new connection is made.
        fn reconnect(&mut self, id: &str, max_inflight: u32) -> Vec<ClientFrame> {
            self.core.handle_closed(self.now, "reset".into());
            let outputs = self.outputs();
            assert!(outputs.contains(&Output::CloseTransport), "{outputs:?}");
            assert!(
                outputs
                    .iter()
                    .any(|o| matches!(o, Output::State(ConnectionState::Reconnecting { .. }))),
                "{outputs:?}"
            );
            let at = self.core.poll_timeout().expect("a reconnect is scheduled");
            assert!(at <= self.now + Duration::from_millis(100));
            self.now = at;
            self.core.handle_timeout(self.now);
            assert!(self.outputs().contains(&open()));
            self.handshake(id, max_inflight)
        }

        fn attached(
            &mut self,
            channel: &str,
            position: Option<Position>,
            resumed: bool,
            error: Option<ErrorInfo>,
        ) {
            self.frame(ServerFrame::Attached(Attached {
                channel: channel.into(),
                position,
                resumed,
                granted: vec![Operation::Subscribe],
                error,
            }));
        }

        fn message(&mut self, channel: &str, position: Position) {
            self.frame(ServerFrame::Message(MessageFrame {
                channel: channel.into(),
                position,
                message: Message::new(format!("m{}", position.serial)),
            }));
        }

        /// The positions of the messages delivered since the last call.
        fn delivered(&mut self) -> Vec<Position> {
            self.outputs()
                .into_iter()
                .filter_map(|o| match o {
                    Output::Deliver {
                        event: ChannelEvent::Message { position, .. },
                        ..
                    } => Some(position),
                    _ => None,
                })
                .collect()
        }
    }

    fn publish_frame(frame: &ClientFrame) -> &Publish {
        match frame {
            ClientFrame::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    fn attach_frame(frame: &ClientFrame) -> &Attach {
        match frame {
            ClientFrame::Attach(a) => a,
            other => panic!("expected ATTACH, got {other:?}"),
        }
    }

    #[test]
    fn publishes_wait_for_connected_and_resolve_on_ack() {
        let mut sim = Sim::new();
        sim.outputs();
        let id = sim
            .core
            .publish(
                sim.now,
                "chat".into(),
                vec![Message::new("a"), Message::new("b")],
            )
            .expect("accepted");
        assert!(sim.sent().is_empty(), "nothing before CONNECTED");
        let sent = sim.handshake("c1", 8);
        let publish = publish_frame(&sent[0]);
        assert_eq!(publish.msg_serial, 0);
        let ids: Vec<_> = publish
            .messages
            .iter()
            .map(|m| m.id.clone().expect("id"))
            .collect();
        assert_ne!(ids[0], ids[1]);
        assert!(ids[0].starts_with("tc-"));
        let results = vec![
            PublishResult {
                position: pos(1, 1),
                duplicate: false,
                dropped: None,
            },
            PublishResult {
                position: pos(1, 2),
                duplicate: false,
                dropped: None,
            },
        ];
        sim.frame(ServerFrame::Ack(Ack {
            msg_serial: 0,
            results: results.clone(),
        }));
        assert_eq!(
            sim.outputs(),
            vec![Output::PublishDone {
                id,
                result: Ok(results)
            }]
        );
        // A repeated answer is ignored.
        sim.frame(ServerFrame::Ack(Ack {
            msg_serial: 0,
            results: vec![],
        }));
        assert!(sim.outputs().is_empty());
    }

    #[test]
    fn given_ids_are_kept_and_local_refusals_are_typed() {
        let mut sim = Sim::start();
        let mut own = Message::new("x");
        own.id = Some("mine".into());
        sim.core
            .publish(sim.now, "chat".into(), vec![own])
            .expect("accepted");
        let sent = sim.sent();
        assert_eq!(
            publish_frame(&sent[0]).messages[0].id.as_deref(),
            Some("mine")
        );
        let err = sim
            .core
            .publish(sim.now, "bad name".into(), vec![Message::new("x")])
            .expect_err("bad");
        assert_eq!(err.code(), Some(ErrorCode::InvalidChannel));
        let err = sim
            .core
            .publish(sim.now, "chat".into(), vec![])
            .expect_err("empty");
        assert_eq!(err.code(), Some(ErrorCode::InvalidValue));
        for _ in 0..3 {
            sim.core
                .publish(sim.now, "chat".into(), vec![Message::new("x")])
                .expect("room");
        }
        let err = sim
            .core
            .publish(sim.now, "chat".into(), vec![Message::new("x")])
            .expect_err("full");
        assert_eq!(err.code(), Some(ErrorCode::TooManyInflight));
        assert!(err.is_retryable());
    }

    #[test]
    fn unanswered_publishes_are_resent_with_the_same_ids_after_a_reconnect() {
        let mut sim = Sim::start();
        let a = sim
            .core
            .publish(sim.now, "chat".into(), vec![Message::new("a")])
            .expect("ok");
        let b = sim
            .core
            .publish(sim.now, "chat".into(), vec![Message::new("b")])
            .expect("ok");
        let first = sim.sent();
        assert_eq!(first.len(), 2);
        // `a` is answered, `b` is lost with the connection.
        sim.frame(ServerFrame::Ack(Ack {
            msg_serial: 0,
            results: vec![PublishResult {
                position: pos(1, 1),
                duplicate: false,
                dropped: None,
            }],
        }));
        sim.outputs();
        let again = sim.reconnect("c2", 8);
        assert_eq!(again.len(), 1, "{again:?}");
        let resent = publish_frame(&again[0]);
        assert_eq!(resent.msg_serial, 0, "serials restart per connection");
        assert_eq!(
            resent.messages,
            publish_frame(&first[1]).messages,
            "same ids"
        );
        // An answer for the old connection's serial 1 must not resolve anything now.
        sim.frame(ServerFrame::Ack(Ack {
            msg_serial: 1,
            results: vec![],
        }));
        assert!(sim.outputs().is_empty());
        let dup = vec![PublishResult {
            position: pos(1, 2),
            duplicate: true,
            dropped: None,
        }];
        sim.frame(ServerFrame::Ack(Ack {
            msg_serial: 0,
            results: dup.clone(),
        }));
        assert_eq!(
            sim.outputs(),
            vec![Output::PublishDone {
                id: b,
                result: Ok(dup)
            }]
        );
        let _ = a;
    }

    #[test]
    fn the_servers_inflight_limit_is_respected() {
        let mut sim = Sim::new();
        sim.outputs();
        for _ in 0..3 {
            sim.core
                .publish(sim.now, "chat".into(), vec![Message::new("x")])
                .expect("ok");
        }
        let sent = sim.handshake("c1", 2);
        assert_eq!(sent.len(), 2);
        sim.frame(ServerFrame::Nack(Nack {
            msg_serial: 1,
            error: ErrorInfo::new(ErrorCode::LogUnavailable, "down"),
        }));
        let outputs = sim.outputs();
        assert!(
            matches!(
                &outputs[0],
                Output::PublishDone { id: 1, result: Err(PublishError::Nack(e)) } if e.code == ErrorCode::LogUnavailable
            ),
            "{outputs:?}"
        );
        assert!(matches!(&outputs[1], Output::Send(ClientFrame::Publish(p)) if p.msg_serial == 2));
    }

    #[test]
    fn publish_timeout_frees_nothing_until_the_server_answers() {
        let mut sim = Sim::start();
        let id = sim
            .core
            .publish(sim.now, "chat".into(), vec![Message::new("x")])
            .expect("ok");
        sim.sent();
        sim.advance(Duration::from_millis(900));
        sim.frame(ServerFrame::Heartbeat(Heartbeat::default()));
        for _ in 0..5 {
            sim.advance(Duration::from_millis(900));
            sim.frame(ServerFrame::Heartbeat(Heartbeat::default()));
        }
        let outputs = sim.outputs();
        assert!(
            outputs.contains(&Output::PublishDone {
                id,
                result: Err(PublishError::Timeout(Duration::from_secs(5)))
            }),
            "{outputs:?}"
        );
        sim.frame(ServerFrame::Ack(Ack {
            msg_serial: 0,
            results: vec![],
        }));
        assert!(sim.outputs().is_empty(), "a late ACK resolves nothing");
    }

    #[test]
    fn reattach_resumes_from_the_last_delivered_position_and_drops_replays() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        let sent = sim.sent();
        assert_eq!(
            attach_frame(&sent[0]),
            &Attach {
                channel: "chat".into(),
                from: None,
                rewind: None
            }
        );
        sim.attached("chat", Some(pos(1, 5)), false, None);
        assert_eq!(
            sim.outputs(),
            vec![Output::AttachDone {
                channel: "chat".into(),
                result: Ok(pos(1, 5))
            }]
        );
        sim.message("chat", pos(1, 6));
        sim.message("chat", pos(1, 7));
        assert_eq!(sim.delivered(), vec![pos(1, 6), pos(1, 7)]);

        let sent = sim.reconnect("c2", 8);
        assert_eq!(attach_frame(&sent[0]).from, Some(pos(1, 7)));
        // Messages before ATTACHED (an old attachment's) are not delivered.
        sim.message("chat", pos(1, 8));
        assert!(sim.delivered().is_empty());
        sim.attached("chat", Some(pos(1, 7)), true, None);
        // attach() was answered long ago: no second AttachDone.
        assert!(sim.outputs().is_empty());
        for serial in [6, 7, 8, 8, 9] {
            sim.message("chat", pos(1, serial));
        }
        assert_eq!(sim.delivered(), vec![pos(1, 8), pos(1, 9)]);
    }

    #[test]
    fn attach_from_and_rewind_are_sent_as_asked() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "a".into(), AttachFrom::After(pos(3, 9)))
            .expect("ok");
        sim.core
            .attach(sim.now, "b".into(), AttachFrom::Rewind(10))
            .expect("ok");
        let span = Duration::from_secs(90);
        sim.core
            .attach(sim.now, "c".into(), AttachFrom::RewindSpan(span))
            .expect("ok");
        let sent = sim.sent();
        assert_eq!(attach_frame(&sent[0]).from, Some(pos(3, 9)));
        assert_eq!(attach_frame(&sent[1]).rewind, Some(Rewind::Messages(10)));
        assert_eq!(attach_frame(&sent[2]).rewind, Some(Rewind::Span(span)));
        assert_eq!(
            sim.core.attach(sim.now, "a".into(), AttachFrom::Now),
            Err(ClientError::AlreadyAttached("a".into()))
        );
        // Neither answered yet when the connection drops: the same requests go again.
        let again = sim.reconnect("c2", 8);
        assert_eq!(attach_frame(&again[0]).from, Some(pos(3, 9)));
        assert_eq!(attach_frame(&again[1]).rewind, Some(Rewind::Messages(10)));
        assert_eq!(attach_frame(&again[2]).rewind, Some(Rewind::Span(span)));
        sim.attached("b", Some(pos(1, 90)), false, None);
        sim.message("b", pos(1, 91));
        assert_eq!(sim.delivered(), vec![pos(1, 91)]);
    }

    #[test]
    fn continuity_lost_is_an_event() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::After(pos(1, 3)))
            .expect("ok");
        sim.sent();
        let why = ErrorInfo::new(ErrorCode::ContinuityLost, "continuity lost: retention");
        sim.attached("chat", Some(pos(2, 10)), false, Some(why.clone()));
        let outputs = sim.outputs();
        assert_eq!(
            outputs,
            vec![
                Output::AttachDone {
                    channel: "chat".into(),
                    result: Ok(pos(2, 10))
                },
                Output::Deliver {
                    channel: "chat".into(),
                    event: ChannelEvent::ContinuityLost {
                        position: pos(2, 10),
                        reason: why
                    },
                    previous: Some(pos(1, 3)),
                },
            ]
        );
        sim.message("chat", pos(2, 11));
        assert_eq!(sim.delivered(), vec![pos(2, 11)]);
    }

    #[test]
    fn a_channel_empty_when_attached_is_resumed_from_0_0() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        sim.sent();
        sim.attached("chat", Some(Position::BEFORE_FIRST), false, None);
        assert_eq!(
            sim.outputs(),
            vec![Output::AttachDone {
                channel: "chat".into(),
                result: Ok(Position::BEFORE_FIRST)
            }]
        );
        // Away before the first message: the re-attach asks for everything from the
        // first message, so what was stored meanwhile is delivered, once.
        let sent = sim.reconnect("c2", 8);
        assert_eq!(
            attach_frame(&sent[0]),
            &Attach {
                channel: "chat".into(),
                from: Some(Position::BEFORE_FIRST),
                rewind: None
            }
        );
        sim.attached("chat", Some(Position::BEFORE_FIRST), true, None);
        assert!(sim.outputs().is_empty(), "no ContinuityLost");
        for serial in [1, 2, 2, 3] {
            sim.message("chat", pos(1, serial));
        }
        assert_eq!(sim.delivered(), vec![pos(1, 1), pos(1, 2), pos(1, 3)]);

        // Retention removed the first messages meanwhile: the server says so, and the
        // event names where delivery continues.
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        sim.sent();
        // A frame without a position is read as 0:0.
        sim.attached("chat", None, false, None);
        assert_eq!(
            sim.outputs(),
            vec![Output::AttachDone {
                channel: "chat".into(),
                result: Ok(Position::BEFORE_FIRST)
            }]
        );
        let sent = sim.reconnect("c2", 8);
        assert_eq!(attach_frame(&sent[0]).from, Some(Position::BEFORE_FIRST));
        let why = ErrorInfo::new(ErrorCode::ContinuityLost, "continuity lost: retention");
        sim.attached("chat", Some(pos(1, 4)), false, Some(why.clone()));
        assert_eq!(
            sim.outputs(),
            vec![Output::Deliver {
                channel: "chat".into(),
                event: ChannelEvent::ContinuityLost {
                    position: pos(1, 4),
                    reason: why
                },
                previous: Some(Position::BEFORE_FIRST),
            }]
        );
        sim.message("chat", pos(1, 5));
        assert_eq!(sim.delivered(), vec![pos(1, 5)]);
    }

    #[test]
    fn an_unsolicited_continuity_loss_is_an_event() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        sim.attached("chat", Some(pos(1, 4)), false, None);
        sim.message("chat", pos(1, 5));
        sim.outputs();
        // A repeat without an error changes nothing.
        sim.attached("chat", Some(pos(1, 2)), true, None);
        assert!(sim.outputs().is_empty());
        let why = ErrorInfo::new(ErrorCode::ContinuityLost, "continuity lost: epoch replaced");
        sim.attached("chat", Some(pos(2, 3)), false, Some(why.clone()));
        assert_eq!(
            sim.outputs(),
            vec![Output::Deliver {
                channel: "chat".into(),
                event: ChannelEvent::ContinuityLost {
                    position: pos(2, 3),
                    reason: why
                },
                previous: Some(pos(1, 5)),
            }]
        );
        sim.message("chat", pos(2, 4));
        assert_eq!(sim.delivered(), vec![pos(2, 4)]);
    }

    #[test]
    fn a_gap_is_refetched_from_the_cursor() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        sim.attached("chat", Some(pos(1, 1)), false, None);
        sim.sent();
        sim.message("chat", pos(1, 3));
        assert_eq!(attach_frame(&sim.sent()[0]).from, Some(pos(1, 1)));
        sim.attached("chat", Some(pos(1, 1)), true, None);
        sim.message("chat", pos(1, 2));
        sim.message("chat", pos(1, 3));
        assert_eq!(sim.delivered(), vec![pos(1, 2), pos(1, 3)]);
    }

    #[test]
    fn a_full_stream_pauses_the_channel_without_losing_anything() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        sim.attached("chat", Some(pos(1, 1)), false, None);
        sim.sent();
        sim.outputs();
        sim.message("chat", pos(1, 2));
        sim.message("chat", pos(1, 3));
        // The driver could hand over 2 but not 3: 3 comes back later.
        let outputs = sim.outputs();
        let Output::Deliver { previous, .. } = &outputs[1] else {
            panic!("{outputs:?}")
        };
        sim.core.handle_overflow(sim.now, "chat", *previous);
        assert_eq!(
            sim.sent(),
            vec![ClientFrame::Detach(Detach {
                channel: "chat".into()
            })]
        );
        sim.message("chat", pos(1, 4));
        assert!(sim.delivered().is_empty(), "paused");
        // The answer to our DETACH is not an error.
        sim.frame(ServerFrame::Detached(Detached {
            channel: "chat".into(),
            error: None,
        }));
        assert!(sim.outputs().is_empty());
        sim.core.handle_resume(sim.now, "chat");
        assert_eq!(attach_frame(&sim.sent()[0]).from, Some(pos(1, 2)));
        sim.attached("chat", Some(pos(1, 2)), true, None);
        sim.message("chat", pos(1, 3));
        sim.message("chat", pos(1, 4));
        assert_eq!(sim.delivered(), vec![pos(1, 3), pos(1, 4)]);
    }

    #[test]
    fn refused_attach_and_server_detach_are_answered() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "secret".into(), AttachFrom::Now)
            .expect("ok");
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        sim.sent();
        let no = ErrorInfo::new(ErrorCode::Forbidden, "no");
        sim.frame(ServerFrame::Detached(Detached {
            channel: "secret".into(),
            error: Some(no.clone()),
        }));
        assert_eq!(
            sim.outputs(),
            vec![Output::AttachDone {
                channel: "secret".into(),
                result: Err(ClientError::Refused(no.clone()))
            }]
        );
        sim.attached("chat", None, false, None);
        sim.outputs();
        sim.frame(ServerFrame::Detached(Detached {
            channel: "chat".into(),
            error: Some(no.clone()),
        }));
        assert_eq!(
            sim.outputs(),
            vec![Output::Ended {
                channel: "chat".into(),
                error: Some(ClientError::Refused(no))
            }]
        );
        // An ERROR frame ends nothing.
        sim.frame(ServerFrame::Error(ErrorFrame {
            error: ErrorInfo::new(ErrorCode::Malformed, "?"),
            channel: None,
        }));
        assert!(sim.outputs().is_empty());
    }

    #[test]
    fn attach_gives_up_after_the_request_timeout() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        sim.sent();
        for _ in 0..6 {
            sim.advance(Duration::from_secs(1));
            sim.frame(ServerFrame::Heartbeat(Heartbeat::default()));
        }
        let outputs = sim.outputs();
        assert!(
            outputs.contains(&Output::AttachDone {
                channel: "chat".into(),
                result: Err(ClientError::Timeout(Duration::from_secs(5)))
            }),
            "{outputs:?}"
        );
        assert!(
            outputs.contains(&Output::Send(ClientFrame::Detach(Detach {
                channel: "chat".into()
            }))),
            "{outputs:?}"
        );
    }

    #[test]
    fn heartbeats_are_sent_and_silence_means_a_dead_connection() {
        let mut sim = Sim::start();
        let at = sim.core.poll_timeout().expect("timer");
        assert_eq!(at, sim.now + Duration::from_secs(1));
        sim.advance(Duration::from_secs(1));
        assert_eq!(
            sim.sent(),
            vec![ClientFrame::Heartbeat(Heartbeat::default())]
        );
        sim.advance(Duration::from_millis(999));
        assert!(
            sim.outputs()
                .iter()
                .all(|o| !matches!(o, Output::CloseTransport))
        );
        sim.advance(Duration::from_millis(1));
        let outputs = sim.outputs();
        assert!(outputs.contains(&Output::CloseTransport), "{outputs:?}");
        assert!(outputs.iter().any(|o| matches!(
            o,
            Output::State(ConnectionState::Reconnecting { attempt: 1, .. })
        )));
    }

    #[test]
    fn backoff_grows_while_attempts_fail_and_resets_on_connected() {
        let mut sim = Sim::start();
        sim.core.handle_closed(sim.now, "reset".into());
        let mut delays = Vec::new();
        for _ in 0..6 {
            sim.outputs();
            let at = sim.core.poll_timeout().expect("scheduled");
            delays.push(at - sim.now);
            sim.now = at;
            sim.core.handle_timeout(sim.now);
            assert!(sim.outputs().contains(&open()));
            sim.core.handle_open_failed(sim.now, "refused".into());
        }
        assert!(delays[5] > delays[0] * 4, "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(1)),
            "{delays:?}"
        );
        sim.outputs();
        let at = sim.core.poll_timeout().expect("scheduled");
        sim.now = at;
        sim.core.handle_timeout(sim.now);
        sim.outputs();
        sim.handshake("c2", 8);
        sim.core.handle_closed(sim.now, "again".into());
        sim.outputs();
        assert!(
            sim.core.poll_timeout().expect("scheduled") <= sim.now + Duration::from_millis(100)
        );
    }

    #[test]
    fn disconnected_never_stops_and_retry_reconnects() {
        let mut sim = Sim::start();
        sim.frame(ServerFrame::Disconnected(tern_protocol::Disconnected {
            error: ErrorInfo::new(ErrorCode::ShuttingDown, "bye"),
            reconnect: Reconnect::Elsewhere,
        }));
        assert!(
            sim.outputs()
                .iter()
                .any(|o| matches!(o, Output::State(ConnectionState::Reconnecting { .. })))
        );

        let mut sim = Sim::start();
        let id = sim
            .core
            .publish(sim.now, "chat".into(), vec![Message::new("x")])
            .expect("ok");
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        sim.attached("chat", None, false, None);
        sim.outputs();
        let never = ErrorInfo::new(ErrorCode::InvalidCredentials, "revoked");
        sim.frame(ServerFrame::Disconnected(tern_protocol::Disconnected {
            error: never.clone(),
            reconnect: Reconnect::Never,
        }));
        let error = ClientError::Disconnected(never);
        let outputs = sim.outputs();
        assert!(outputs.contains(&Output::PublishDone {
            id,
            result: Err(PublishError::Closed(error.clone()))
        }));
        assert!(outputs.contains(&Output::Ended {
            channel: "chat".into(),
            error: Some(error.clone())
        }));
        assert!(outputs.contains(&Output::State(ConnectionState::Closed {
            error: Some(error)
        })));
        assert!(sim.core.is_closed());
        assert!(
            sim.core
                .publish(sim.now, "chat".into(), vec![Message::new("x")])
                .is_err()
        );
    }

    #[test]
    fn the_first_connection_failing_stops_the_client() {
        let mut sim = Sim::new();
        sim.outputs();
        sim.core
            .handle_open_failed(sim.now, "connection refused".into());
        let outputs = sim.outputs();
        assert!(
            outputs.contains(&Output::State(ConnectionState::Closed {
                error: Some(ClientError::Transport("connection refused".into()))
            })),
            "{outputs:?}"
        );

        let mut sim = Sim::new();
        sim.outputs();
        sim.core.handle_open(sim.now);
        let no = ErrorInfo::new(ErrorCode::InvalidCredentials, "wrong secret");
        sim.frame(ServerFrame::Disconnected(tern_protocol::Disconnected {
            error: no.clone(),
            reconnect: Reconnect::Never,
        }));
        assert!(
            sim.outputs()
                .contains(&Output::State(ConnectionState::Closed {
                    error: Some(ClientError::Refused(no))
                }))
        );
    }

    #[test]
    fn close_says_close_and_waits_for_closed() {
        let mut sim = Sim::start();
        let id = sim
            .core
            .publish(sim.now, "chat".into(), vec![Message::new("x")])
            .expect("ok");
        sim.sent();
        sim.core.close(sim.now);
        let outputs = sim.outputs();
        assert!(outputs.contains(&Output::PublishDone {
            id,
            result: Err(PublishError::Closed(ClientError::Closed))
        }));
        assert!(outputs.contains(&Output::Send(ClientFrame::Close(Default::default()))));
        assert!(!sim.core.is_closed());
        sim.frame(ServerFrame::Closed(Closed {}));
        assert!(
            sim.outputs()
                .contains(&Output::State(ConnectionState::Closed { error: None }))
        );
        assert!(sim.core.is_closed());
    }

    /// CONNECTED for connection `id` with key `key`, resumed or not.
    fn connected_as(id: &str, key: &str, resumed: bool) -> ServerFrame {
        let ServerFrame::Connected(mut connected) = Sim::connected(id, 8) else {
            unreachable!("Sim::connected builds CONNECTED")
        };
        connected.connection_key = key.into();
        connected.resumed = resumed;
        ServerFrame::Connected(connected)
    }

    /// The transport drops and the backoff passes; `Open` is due.
    fn drop_and_wait(sim: &mut Sim) {
        sim.core.handle_closed(sim.now, "reset".into());
        sim.outputs();
        sim.now = sim.core.poll_timeout().expect("a reconnect is scheduled");
        sim.core.handle_timeout(sim.now);
        assert!(sim.outputs().contains(&open()));
    }

    #[test]
    fn a_resumed_connection_gets_unanswered_publishes_again_with_their_msg_serials() {
        let mut sim = Sim::start();
        for text in ["a", "b", "c"] {
            sim.core
                .publish(sim.now, "chat".into(), vec![Message::new(text)])
                .expect("ok");
        }
        assert_eq!(sim.sent().len(), 3);
        // Serial 0 is answered; the key is refreshed; the transport drops.
        sim.frame(ServerFrame::Ack(Ack {
            msg_serial: 0,
            results: vec![PublishResult {
                position: pos(1, 1),
                duplicate: false,
                dropped: None,
            }],
        }));
        sim.frame(ServerFrame::Heartbeat(Heartbeat {
            id: None,
            connection_key: Some("fresh-key".into()),
        }));
        sim.outputs();
        drop_and_wait(&mut sim);
        let again = sim.handshake_as(connected_as("c1", "key-2", true));
        let connect = sim.last_connect.clone().expect("CONNECT");
        assert_eq!(
            connect.resume.as_deref(),
            Some("fresh-key"),
            "the latest key"
        );
        let serials: Vec<u64> = again.iter().map(|f| publish_frame(f).msg_serial).collect();
        assert_eq!(serials, vec![1, 2], "resent with their own msg_serials");
        // A new publish continues the numbering.
        sim.core
            .publish(sim.now, "chat".into(), vec![Message::new("d")])
            .expect("ok");
        let next: Vec<u64> = sim
            .sent()
            .iter()
            .map(|f| publish_frame(f).msg_serial)
            .collect();
        assert_eq!(next, vec![3]);
        // The state says resumed.
        drop_and_wait(&mut sim);
        sim.core.handle_open(sim.now);
        sim.sent();
        sim.frame(connected_as("c1", "key-3", true));
        assert!(sim.outputs().iter().any(|o| matches!(
            o,
            Output::State(ConnectionState::Connected { resumed: true, connection_id, .. })
                if connection_id == "c1"
        )));
        // And the refused resume renumbers from 0.
        drop_and_wait(&mut sim);
        let again = sim.handshake_as(connected_as("c9", "key-4", false));
        let serials: Vec<u64> = again.iter().map(|f| publish_frame(f).msg_serial).collect();
        assert_eq!(serials, vec![0, 1, 2], "a new connection numbers from 0");
        assert_eq!(
            sim.last_connect.as_ref().and_then(|c| c.resume.as_deref()),
            Some("key-3")
        );
    }

    #[test]
    fn a_recovery_key_resumes_the_connection_and_its_channels_in_a_new_core() {
        let mut sim = Sim::start();
        sim.core
            .attach(sim.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        sim.sent();
        sim.attached("chat", Some(pos(2, 10)), false, None);
        sim.message("chat", pos(2, 11));
        sim.outputs();
        sim.core
            .publish(sim.now, "chat".into(), vec![Message::new("x")])
            .expect("ok");
        sim.sent();
        let recovery = sim.core.recovery().expect("connected once");
        assert_eq!(recovery.connection_key, "key");
        assert_eq!(recovery.msg_serial, 1);
        assert_eq!(recovery.channels.get("chat"), Some(&pos(2, 11)));

        // A new process: the recovery key is all it has.
        let mut config = sim.core.config.clone();
        config.recovered = Some(Recovery::decode(&recovery.encode()).expect("decodes"));
        let mut next = Sim {
            core: Core::new(config, sim.now, 2),
            now: sim.now,
            last_connect: None,
        };
        next.outputs();
        // Attaching the channel before the connection is up puts it in CONNECT,
        // continuing from the recovered position.
        next.core
            .attach(next.now, "chat".into(), AttachFrom::Now)
            .expect("ok");
        let after = next.handshake_as(connected_as("c1", "key-5", true));
        let connect = next.last_connect.clone().expect("CONNECT");
        assert_eq!(connect.resume.as_deref(), Some("key"));
        assert_eq!(connect.channels.get("chat"), Some(&pos(2, 11)));
        assert_eq!(attach_frame(&after[0]).from, Some(pos(2, 11)));
        next.core
            .publish(next.now, "chat".into(), vec![Message::new("y")])
            .expect("ok");
        let serials: Vec<u64> = next
            .sent()
            .iter()
            .map(|f| publish_frame(f).msg_serial)
            .collect();
        assert_eq!(serials, vec![1], "the numbering goes on");
    }

    #[test]
    fn told_to_go_elsewhere_the_client_dials_a_fallback() {
        let mut config = Sim::new().core.config.clone();
        config.urls = vec![URL.into(), "ws://fallback:2/v1/ws".into()];
        let mut sim = Sim::with(config, 3);
        assert!(sim.outputs().contains(&open()), "the primary first");
        sim.handshake("c1", 8);
        sim.frame(ServerFrame::Disconnected(tern_protocol::Disconnected {
            error: ErrorInfo::new(ErrorCode::ShuttingDown, "draining"),
            reconnect: Reconnect::Elsewhere,
        }));
        sim.outputs();
        sim.now = sim.core.poll_timeout().expect("a reconnect is scheduled");
        sim.core.handle_timeout(sim.now);
        assert!(
            sim.outputs().contains(&Output::Open {
                url: "ws://fallback:2/v1/ws".into()
            }),
            "the fallback, not the draining primary"
        );
    }

    /// The `Open` outputs among `outputs`, as URLs.
    fn opened(outputs: &[Output]) -> Vec<&str> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Open { url } => Some(url.as_str()),
                _ => None,
            })
            .collect()
    }

    fn with_fallbacks(fallbacks: &[&str], seed: u64) -> Sim {
        let mut config = Sim::new().core.config.clone();
        config.urls = std::iter::once(URL)
            .chain(fallbacks.iter().copied())
            .map(String::from)
            .collect();
        Sim::with(config, seed)
    }

    #[test]
    fn the_first_connection_tries_every_url_once_before_giving_up() {
        let fallbacks = ["ws://b:2/v1/ws", "ws://c:3/v1/ws"];
        let mut sim = with_fallbacks(&fallbacks, 4);
        let mut dialled = vec![opened(&sim.outputs())[0].to_owned()];
        for error in ["no such name", "refused"] {
            sim.core.handle_open_failed(sim.now, error.into());
            let outputs = sim.outputs();
            assert!(
                !outputs
                    .iter()
                    .any(|o| matches!(o, Output::State(ConnectionState::Closed { .. }))),
                "gave up with URLs left: {outputs:?}"
            );
            // At once, with no backoff: another host may well answer.
            let [url] = opened(&outputs)[..] else {
                panic!("expected one Open: {outputs:?}");
            };
            dialled.push(url.to_owned());
        }
        assert_eq!(dialled[0], URL, "the primary first");
        let mut sorted = dialled.clone();
        sorted.sort_unstable();
        let mut expected = vec![URL, fallbacks[0], fallbacks[1]];
        expected.sort_unstable();
        assert_eq!(sorted, expected, "each once");

        sim.core.handle_open_failed(sim.now, "timed out".into());
        let outputs = sim.outputs();
        assert!(
            outputs.contains(&Output::State(ConnectionState::Closed {
                error: Some(ClientError::Transport(
                    "no such name; refused; timed out".into()
                ))
            })),
            "every URL's failure is reported: {outputs:?}"
        );
    }

    #[test]
    fn an_unreachable_primary_leaves_the_first_connection_to_a_fallback() {
        let fallback = "ws://fallback:2/v1/ws";
        let mut sim = with_fallbacks(&[fallback], 5);
        assert_eq!(opened(&sim.outputs()), [URL]);
        sim.core
            .handle_open_failed(sim.now, "name does not resolve".into());
        assert_eq!(opened(&sim.outputs()), [fallback]);
        sim.core.handle_open(sim.now);
        sim.sent();
        sim.frame(Sim::connected("c1", 8));
        assert!(
            sim.outputs().iter().any(|o| matches!(
                o,
                Output::State(ConnectionState::Connected { url, .. }) if url == fallback
            )),
            "connected through the fallback"
        );
    }

    #[test]
    fn a_fallback_that_worked_is_dialled_first_until_the_fallback_retry_time() {
        let fallback = "ws://fallback:2/v1/ws";
        let mut sim = with_fallbacks(&[fallback], 6);
        let retry = sim.core.config.fallback_retry;
        sim.outputs();
        sim.core.handle_open_failed(sim.now, "primary down".into());
        sim.outputs();
        sim.handshake("c1", 8);
        let connected_at = sim.now;

        // Lost within the retry time: the fallback first.
        let dial_after_a_drop = |sim: &mut Sim| {
            sim.core.handle_closed(sim.now, "reset".into());
            sim.outputs();
            sim.now = sim.core.poll_timeout().expect("a reconnect is scheduled");
            sim.core.handle_timeout(sim.now);
            opened(&sim.outputs()).concat()
        };
        sim.now = connected_at + retry / 2;
        assert_eq!(dial_after_a_drop(&mut sim), fallback);
        sim.handshake("c1", 8);
        // Connected to it again: its time starts again from this connection.
        let reconnected_at = sim.now;
        sim.now = reconnected_at + retry - Duration::from_secs(1);
        assert_eq!(dial_after_a_drop(&mut sim), fallback);
        sim.handshake("c1", 8);
        // Past the retry time of the last connection: the primary first again.
        sim.now += retry;
        assert_eq!(dial_after_a_drop(&mut sim), URL);
    }
}
