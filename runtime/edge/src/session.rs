//! [`Session`]: one client connection's protocol state machine (sans-IO).
//!
//! The connection driver feeds it decoded frames, decode errors, publish outcomes and
//! clock ticks, and carries out what [`Session::poll_output`] asks: send a frame, hand a
//! publish to the link, attach or detach a channel in the hub, close the transport.
//! Time is an argument, so every timeout is tested without sleeping.
//!
//! ```text
//!  Open ──CONNECT ok──▶ Connected ──CLOSE──▶ Closed (CLOSED sent)
//!   │  └─bad key / token / client id──▶ Closed (DISCONNECTED, reconnect: never)
//!   └─connect_timeout──▶ Closed (DISCONNECTED IdleTimeout)
//!  Connected ──silence ≥ idle_timeout / slow consumer / shutdown / oversized message──▶ Closed
//! ```
//!
//! Publishes in flight are never left unanswered when the server ends the session:
//! with any in flight, the session first goes `Closing` (no more frames read), sends
//! each ACK/NACK as it comes, and only then CLOSED or DISCONNECTED. The wait is bounded
//! by `log.request_timeout`; what is still unanswered then gets NACK `LogTimeout`
//! (outcome unknown).
//!
//! ```text
//!  end (CLOSE, disconnect) ──publishes in flight──▶ Closing ──last answer / request_timeout──▶ Closed
//! ```
//!
//! Resume: CONNECTED hands the client a connection key (`tern-connkey`), signed with
//! the cluster's secret and valid for `state_ttl` plus a refresh interval
//! (`state_ttl / 4`); a fresh one rides on a HEARTBEAT every refresh interval. A
//! CONNECT presenting a valid key of the same API key and client id takes over that
//! connection's id, on any edge of the cluster: PUBLISH frames resent with their
//! original `msg_serial` get the same idempotency keys, so the log stores them once.
//! The channels listed in CONNECT are attached from the positions given, as ATTACHes
//! with `from` would be, whether or not the key was honoured.
//!
//! ```text
//!  CONNECT{resume: key, channels} ─▶ verify + check ─ ok ─▶ CONNECTED{resumed, same id} ─▶ Attach × channels
//!                                                   └ no ─▶ CONNECTED{new id, error ResumeFailed} ─▶ Attach × channels
//! ```
//!
//! Channels: the session decides whether an ATTACH or DETACH is allowed and keeps the
//! set of channels it handed to the hub; the hub answers them (ATTACHED, DETACHED) in
//! order with the messages it delivers. Refusals of channels the hub does not hold are
//! answered here directly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_config::{ApiKey, EdgeConfig, EdgeLimitsConfig, Operation as KeyOperation};
use tern_connkey::{Claims, Signer};
use tern_link::{ChannelName, PublishMessage};
use tern_protocol::{
    Ack, Attach, ClientFrame, Closed, Connect, Connected, Detach, Detached, Disconnected,
    ErrorCode, ErrorFrame, ErrorInfo, FrameError, Heartbeat, Limits, MAX_MESSAGE_ID_BYTES, Message,
    Nack, Operation, Publish, PublishResult, Reconnect, Rewind, ServerFrame, check_channel_name,
};

use crate::convert::{RESERVED_PREFIX, to_publish_message};

/// How often a connected client gets a fresh connection key.
fn key_refresh(limits: &EdgeLimitsConfig) -> Duration {
    limits.state_ttl / 4
}

/// A session's heartbeat interval and idle timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timers {
    /// The edge sends a HEARTBEAT after this long without sending anything.
    heartbeat_interval: Duration,
    /// The edge disconnects a client it has heard nothing from for this long.
    idle_timeout: Duration,
}

impl Timers {
    /// The config's defaults.
    fn from_config(limits: &EdgeLimitsConfig) -> Self {
        Self {
            heartbeat_interval: limits.heartbeat_interval,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// For a client that asked for `asked`: the nearest interval within the config's
    /// bounds, and the idle timeout that is the same multiple of it as the config's
    /// `idle_timeout` is of its `heartbeat_interval`.
    fn negotiated(limits: &EdgeLimitsConfig, asked: Duration) -> Self {
        let heartbeat_interval =
            asked.clamp(limits.min_heartbeat_interval, limits.max_heartbeat_interval);
        let scaled = heartbeat_interval.as_nanos() * limits.idle_timeout.as_nanos()
            / limits.heartbeat_interval.as_nanos().max(1);
        let idle_timeout = u64::try_from(scaled).map_or(Duration::MAX, Duration::from_nanos);
        Self {
            heartbeat_interval,
            idle_timeout,
        }
    }
}

/// Longest client id, in bytes.
const MAX_CLIENT_ID_BYTES: usize = 128;

/// Where delivery of an attached channel starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachFrom {
    /// With the next message stored after the attach.
    Now,
    /// Right after this position (a resume); `None` is `from: 0:0`, before the
    /// channel's first message.
    After(Option<tern_link::Position>),
    /// With the last `n` stored messages.
    Rewind(u32),
    /// With the messages stored at or after this time (ms since the Unix epoch).
    Since(u64),
}

/// How the transport is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// An orderly end (WebSocket 1000).
    Normal,
    /// The client sent a message over the size limit (WebSocket 1009).
    TooLarge,
    /// The client sent a text message that is not UTF-8 (WebSocket 1007).
    InvalidData,
    /// The server is going away (WebSocket 1001).
    GoingAway,
    /// The client broke a rule that ends the session (WebSocket 1008).
    Policy,
}

/// What the driver must do next, in order.
#[derive(Debug, PartialEq)]
pub enum SessionOutput {
    /// Send this frame to the client.
    Send(ServerFrame),
    /// Store these messages through the link; answer with
    /// [`Session::handle_publish_result`] for `msg_serial`.
    Publish {
        /// The PUBLISH being answered.
        msg_serial: u64,
        /// The messages, in order, ready for the link.
        messages: Vec<PublishMessage>,
    },
    /// Attach `channel` in the hub (or re-attach it with a new start); the hub sends
    /// ATTACHED.
    Attach {
        /// The channel.
        channel: ChannelName,
        /// Where delivery starts.
        from: AttachFrom,
        /// What the key allows on the channel (for ATTACHED).
        granted: Vec<Operation>,
    },
    /// Detach `channel` in the hub; the hub sends DETACHED (with `error`, if any)
    /// after whatever it sent for the channel before.
    Detach {
        /// The channel.
        channel: ChannelName,
        /// Why the server detaches it, if the client did not ask.
        error: Option<ErrorInfo>,
    },
    /// Send what is queued, then close the transport. Nothing follows.
    Close(CloseCode),
}

/// Per-connection parameters chosen by the driver.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// The connection id sent in CONNECTED unless a resume restores another one
    /// (url-safe, no `:`).
    pub connection_id: String,
    /// Signs and checks connection keys (the cluster's secret).
    pub signer: Arc<Signer>,
    /// The wall clock (milliseconds since the Unix epoch) at the `now` given to
    /// [`Session::new`]: connection keys expire by the wall clock, which every edge
    /// shares, and the session derives it from its monotonic `now`.
    pub opened_unix_ms: u64,
}

#[derive(Debug)]
enum State {
    /// Transport open, no CONNECT yet.
    Open,
    /// CONNECT accepted.
    Connected {
        key: ApiKey,
        client_id: Option<String>,
    },
    /// Ending, waiting for the answers of publishes in flight until `deadline`; then
    /// `last` (CLOSED or DISCONNECTED) and the close. Frames are ignored.
    Closing {
        last: ServerFrame,
        code: CloseCode,
        reason: Option<ErrorCode>,
        deadline: Instant,
    },
    /// Closed: everything is ignored. With the DISCONNECTED code, if the server ended
    /// the session.
    Closed(Option<ErrorCode>),
}

/// One client connection's protocol state. See the module docs.
#[derive(Debug)]
pub struct Session {
    config: Arc<EdgeConfig>,
    params: SessionParams,
    state: State,
    /// Channels handed to the hub (attaching or attached).
    channels: HashSet<ChannelName>,
    /// The `msg_serial`s of PUBLISH frames handed to the link and not answered yet
    /// (at most `max_inflight_publishes`).
    inflight: Vec<u64>,
    opened_at: Instant,
    last_received: Instant,
    last_sent: Instant,
    /// When the connection key the client holds was issued.
    key_issued_at: Instant,
    /// The heartbeat interval and idle timeout in force: the config's, until CONNECT
    /// negotiates others.
    timers: Timers,
    outputs: std::collections::VecDeque<SessionOutput>,
}

impl Session {
    /// A session for a transport that opened at `now`.
    pub fn new(config: Arc<EdgeConfig>, params: SessionParams, now: Instant) -> Self {
        Self {
            params,
            state: State::Open,
            channels: HashSet::new(),
            inflight: Vec::new(),
            opened_at: now,
            last_received: now,
            last_sent: now,
            key_issued_at: now,
            timers: Timers::from_config(&config.limits),
            outputs: std::collections::VecDeque::new(),
            config,
        }
    }

    /// The connection id.
    pub fn connection_id(&self) -> &str {
        &self.params.connection_id
    }

    /// True once CONNECT was accepted and until the session closes.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// True once the session is ending (it may still wait for publish answers): the
    /// driver reads no more frames.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closing { .. } | State::Closed(_))
    }

    /// The channels the hub holds for this session (to clean up when it ends).
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.channels.iter()
    }

    /// The code of the DISCONNECTED the session ended with, if it did.
    pub fn disconnect_code(&self) -> Option<ErrorCode> {
        match self.state {
            State::Closing { reason, .. } => reason,
            State::Closed(code) => code,
            _ => None,
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<SessionOutput> {
        self.outputs.pop_front()
    }

    /// When [`Session::handle_tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let limits = &self.config.limits;
        match self.state {
            State::Open => Some(self.opened_at + limits.connect_timeout),
            State::Connected { .. } => Some(
                (self.last_received + self.timers.idle_timeout)
                    .min(self.last_sent + self.timers.heartbeat_interval)
                    .min(self.key_issued_at + key_refresh(limits)),
            ),
            State::Closing { deadline, .. } => Some(deadline),
            State::Closed(_) => None,
        }
    }

    /// The driver wrote something to the client at `now` (any frame, from the session
    /// or the hub): the heartbeat timer starts again.
    pub fn handle_sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// Timeouts: CONNECT not received in time, client silent for too long, heartbeat due.
    pub fn handle_tick(&mut self, now: Instant) {
        let limits = &self.config.limits;
        match self.state {
            State::Open if now >= self.opened_at + limits.connect_timeout => {
                let error = ErrorInfo::new(
                    ErrorCode::IdleTimeout,
                    format!(
                        "no CONNECT within {} ms of opening",
                        limits.connect_timeout.as_millis()
                    ),
                );
                self.disconnect(now, error, Reconnect::Retry, CloseCode::Policy);
            }
            State::Connected { .. } if now >= self.last_received + self.timers.idle_timeout => {
                let error = ErrorInfo::new(
                    ErrorCode::IdleTimeout,
                    format!(
                        "nothing received for {} ms",
                        self.timers.idle_timeout.as_millis()
                    ),
                );
                self.disconnect(now, error, Reconnect::Retry, CloseCode::Policy);
            }
            State::Connected { .. } if now >= self.key_issued_at + key_refresh(limits) => {
                let connection_key = self.issue_key(now);
                self.send(ServerFrame::Heartbeat(Heartbeat {
                    id: None,
                    connection_key: Some(connection_key),
                }));
                self.last_sent = now;
            }
            State::Connected { .. } if now >= self.last_sent + self.timers.heartbeat_interval => {
                self.send(ServerFrame::Heartbeat(Heartbeat::default()));
                self.last_sent = now;
            }
            State::Closing { deadline, .. } if now >= deadline => {
                let after = self.config.log.request_timeout;
                for msg_serial in std::mem::take(&mut self.inflight) {
                    let error = ErrorInfo::new(
                        ErrorCode::LogTimeout,
                        format!(
                            "no answer from the log within {after:?} while the session ended; the messages may or may not be stored (retrying with the same ids is safe)"
                        ),
                    );
                    self.send(ServerFrame::Nack(Nack { msg_serial, error }));
                }
                self.finish_closing();
            }
            _ => {}
        }
    }

    /// A frame from the client.
    pub fn handle_frame(&mut self, now: Instant, frame: ClientFrame) {
        if self.is_closed() {
            return;
        }
        self.last_received = now;
        match frame {
            ClientFrame::Heartbeat(Heartbeat { id: Some(id), .. }) => {
                self.send(ServerFrame::Heartbeat(Heartbeat {
                    id: Some(id),
                    connection_key: None,
                }));
            }
            ClientFrame::Heartbeat(Heartbeat { id: None, .. }) => {}
            ClientFrame::Close(_) => {
                self.end(now, ServerFrame::Closed(Closed {}), CloseCode::Normal, None);
            }
            ClientFrame::Connect(connect) => self.handle_connect(now, connect),
            ClientFrame::Publish(publish) => self.handle_publish(publish),
            ClientFrame::Attach(attach) => self.handle_attach(now, attach),
            ClientFrame::Detach(detach) => self.handle_detach(detach),
            other => self.send_error(
                ErrorInfo::new(
                    ErrorCode::UnknownFrame,
                    format!("{} frames are not served here", other.kind()),
                ),
                None,
            ),
        }
    }

    /// A frame (or a whole message) the client sent that could not be decoded. The
    /// session stays open; a PUBLISH whose `msg_serial` could be read is NACKed.
    pub fn handle_decode_error(&mut self, now: Instant, error: FrameError) {
        if self.is_closed() {
            return;
        }
        self.last_received = now;
        match (error.frame_type.as_deref(), error.msg_serial) {
            // The checks of a PUBLISH run in order: CONNECTED first, then decoding.
            (Some("PUBLISH"), Some(msg_serial)) if !self.is_connected() => {
                self.send(ServerFrame::Nack(Nack {
                    msg_serial,
                    error: not_connected("PUBLISH"),
                }));
            }
            (Some("PUBLISH"), Some(msg_serial)) => {
                self.send(ServerFrame::Nack(Nack {
                    msg_serial,
                    error: error.info(),
                }));
            }
            _ => self.send_error(error.info(), error.channel.clone()),
        }
    }

    /// The client sent a WebSocket message over `max_frame_bytes` at `now`: the
    /// session ends.
    pub fn handle_frame_too_large(&mut self, now: Instant) {
        let error = ErrorInfo::new(
            ErrorCode::FrameTooLarge,
            format!(
                "a message is larger than the limit of {} bytes",
                self.config.limits.max_frame_bytes
            ),
        );
        self.disconnect(now, error, Reconnect::Retry, CloseCode::TooLarge);
    }

    /// The client sent a text message that is not UTF-8: the WebSocket layer cannot
    /// read past it, so the session ends.
    pub fn handle_invalid_text(&mut self, now: Instant) {
        let error = ErrorInfo::new(
            ErrorCode::Malformed,
            "a text message is not valid UTF-8 (send MessagePack in binary messages)",
        );
        self.disconnect(now, error, Reconnect::Retry, CloseCode::InvalidData);
    }

    /// The connection's outbound queue went over its byte budget at `now`.
    pub fn handle_slow_consumer(&mut self, now: Instant) {
        let error = ErrorInfo::new(
            ErrorCode::SlowConsumer,
            format!(
                "more than {} bytes queued for this connection: read faster, then re-attach from the last positions received",
                self.config.limits.outbound_queue_bytes
            ),
        );
        self.disconnect(now, error, Reconnect::Retry, CloseCode::Policy);
    }

    /// The edge is shutting down (noticed at `now`): tell the client to go elsewhere
    /// once its publishes in flight are answered.
    pub fn handle_shutdown(&mut self, now: Instant) {
        let error = ErrorInfo::new(ErrorCode::ShuttingDown, "the edge is shutting down");
        self.disconnect(now, error, Reconnect::Elsewhere, CloseCode::GoingAway);
    }

    /// The edge is drained (its drain file, noticed at `now`): out of anycast and DNS
    /// but still running. Like [`Session::handle_shutdown`], the client is told to go
    /// elsewhere once its publishes in flight are answered.
    pub fn handle_drain(&mut self, now: Instant) {
        let error = ErrorInfo::new(
            ErrorCode::ShuttingDown,
            "the edge is drained: reconnect elsewhere",
        );
        self.disconnect(now, error, Reconnect::Elsewhere, CloseCode::GoingAway);
    }

    /// The link's answer to the publish of `msg_serial`.
    pub fn handle_publish_result(
        &mut self,
        msg_serial: u64,
        result: Result<Vec<PublishResult>, ErrorInfo>,
    ) {
        // An answer is sent once, for a PUBLISH still waiting for it (one NACKed
        // `LogTimeout` by a closing session may still be answered by the link later).
        let Some(index) = self.inflight.iter().position(|s| *s == msg_serial) else {
            return;
        };
        self.inflight.swap_remove(index);
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.send(match result {
            Ok(results) => ServerFrame::Ack(Ack {
                msg_serial,
                results,
            }),
            Err(error) => ServerFrame::Nack(Nack { msg_serial, error }),
        });
        if matches!(self.state, State::Closing { .. }) && self.inflight.is_empty() {
            self.finish_closing();
        }
    }

    fn handle_connect(&mut self, now: Instant, connect: Connect) {
        if self.is_connected() {
            return self.send_error(
                ErrorInfo::new(
                    ErrorCode::AlreadyConnected,
                    "this connection is already connected",
                ),
                None,
            );
        }
        let key = match (&connect.key, &connect.token) {
            (_, Some(_)) => Err(ErrorInfo::new(
                ErrorCode::InvalidCredentials,
                "tokens are not supported yet; connect with an API key",
            )),
            (None, None) => Err(ErrorInfo::new(
                ErrorCode::Unauthorized,
                "CONNECT needs an API key (\"key\": \"app.keyid:secret\")",
            )),
            (Some(presented), None) => {
                self.config.authenticate(presented).cloned().ok_or_else(|| {
                    ErrorInfo::new(ErrorCode::InvalidCredentials, "the API key is not valid")
                })
            }
        };
        let key = match key {
            Ok(key) => key,
            Err(error) => return self.disconnect(now, error, Reconnect::Never, CloseCode::Policy),
        };
        if let Some(client_id) = &connect.client_id
            && let Err(why) = check_client_id(client_id)
        {
            let error = ErrorInfo::new(ErrorCode::InvalidValue, why);
            return self.disconnect(now, error, Reconnect::Never, CloseCode::Policy);
        }
        let resume = connect.resume.as_deref().map(|presented| {
            self.params.signer.verify(presented).and_then(|claims| {
                claims.check(
                    self.unix_ms(now),
                    &key.app,
                    &key.key_id,
                    connect.client_id.as_deref(),
                )?;
                Ok(claims)
            })
        });
        let error = match resume {
            Some(Ok(claims)) => {
                self.params.connection_id = claims.connection_id;
                None
            }
            Some(Err(refused)) => Some(ErrorInfo::new(
                ErrorCode::ResumeFailed,
                format!("{refused}; this is a new connection"),
            )),
            None => None,
        };
        let resumed = connect.resume.is_some() && error.is_none();
        self.timers = match connect.heartbeat_interval_ms {
            Some(asked) => Timers::negotiated(&self.config.limits, Duration::from_millis(asked)),
            None => Timers::from_config(&self.config.limits),
        };
        let client_id = connect.client_id;
        self.state = State::Connected {
            key,
            client_id: client_id.clone(),
        };
        let connection_key = self.issue_key(now);
        let limits = &self.config.limits;
        let connected = Connected {
            connection_id: self.params.connection_id.clone(),
            connection_key,
            resumed,
            client_id,
            heartbeat_interval_ms: millis(self.timers.heartbeat_interval),
            idle_timeout_ms: millis(self.timers.idle_timeout),
            state_ttl_ms: millis(limits.state_ttl),
            limits: Limits {
                max_frame_bytes: limits.max_frame_bytes as u64,
                max_message_bytes: limits.max_message_bytes as u64,
                max_messages_per_publish: saturating_u32(limits.max_messages_per_publish),
                max_inflight_publishes: saturating_u32(limits.max_inflight_publishes),
                max_channels: saturating_u32(limits.max_channels_per_connection),
            },
            error,
        };
        self.send(ServerFrame::Connected(connected));
        for (channel, position) in connect.channels {
            self.handle_attach(
                now,
                Attach {
                    channel,
                    from: Some(position),
                    rewind: None,
                },
            );
        }
    }

    /// A connection key for this connection, valid for a resume until the state TTL
    /// and one refresh interval have passed from `now`.
    fn issue_key(&mut self, now: Instant) -> String {
        let State::Connected { key, client_id } = &self.state else {
            return String::new();
        };
        let limits = &self.config.limits;
        let claims = Claims {
            connection_id: self.params.connection_id.clone(),
            app: key.app.clone(),
            key_id: key.key_id.clone(),
            client_id: client_id.clone(),
            expires_unix_ms: self.unix_ms(now) + millis(limits.state_ttl + key_refresh(limits)),
        };
        self.key_issued_at = now;
        self.params.signer.issue(&claims)
    }

    /// The wall clock at `now`, in milliseconds since the Unix epoch.
    fn unix_ms(&self, now: Instant) -> u64 {
        self.params.opened_unix_ms + millis(now.saturating_duration_since(self.opened_at))
    }

    fn handle_attach(&mut self, now: Instant, attach: Attach) {
        let State::Connected { key, .. } = &self.state else {
            return self.send_error(not_connected("ATTACH"), Some(attach.channel));
        };
        let granted = key.capabilities.granted(&attach.channel);
        let checked = (|| {
            let channel = parse_channel(&attach.channel)?;
            let from = match (attach.from, attach.rewind) {
                (Some(_), Some(_)) => {
                    return Err(ErrorInfo::new(
                        ErrorCode::InvalidValue,
                        "ATTACH takes `from` or `rewind`, not both",
                    ));
                }
                (Some(position), None) => AttachFrom::After(
                    crate::convert::to_link_cursor(position)
                        .map_err(|why| ErrorInfo::new(ErrorCode::InvalidValue, why))?,
                ),
                (None, None) => AttachFrom::Now,
                (None, Some(rewind)) if rewind.is_nothing() => AttachFrom::Now,
                (None, Some(Rewind::Messages(n))) => AttachFrom::Rewind(n),
                (None, Some(Rewind::Span(span))) => {
                    AttachFrom::Since(self.unix_ms(now).saturating_sub(millis(span)))
                }
            };
            if !granted.contains(KeyOperation::Subscribe) {
                return Err(forbidden("subscribe to", &attach.channel));
            }
            let rewinds = matches!(from, AttachFrom::Rewind(_) | AttachFrom::Since(_));
            if rewinds && !granted.contains(KeyOperation::History) {
                return Err(forbidden("read the history (rewind) of", &attach.channel));
            }
            let max = self.config.limits.max_channels_per_connection;
            if !self.channels.contains(&channel) && self.channels.len() >= max {
                return Err(ErrorInfo::new(
                    ErrorCode::TooManyChannels,
                    format!("at most {max} channels may be attached at once"),
                ));
            }
            Ok((channel, from))
        })();
        match checked {
            Ok((channel, from)) => {
                self.channels.insert(channel.clone());
                self.outputs.push_back(SessionOutput::Attach {
                    channel,
                    from,
                    granted: granted.iter().map(to_protocol_operation).collect(),
                });
            }
            Err(error) => self.refuse_channel(attach.channel, error),
        }
    }

    fn handle_detach(&mut self, detach: Detach) {
        if !self.is_connected() {
            return self.send_error(not_connected("DETACH"), Some(detach.channel));
        }
        let held = ChannelName::parse(&detach.channel)
            .ok()
            .filter(|channel| self.channels.remove(channel));
        match held {
            Some(channel) => self.outputs.push_back(SessionOutput::Detach {
                channel,
                error: None,
            }),
            None => self.send(ServerFrame::Detached(Detached {
                channel: detach.channel,
                error: None,
            })),
        }
    }

    /// DETACHED with `error`: through the hub if it holds the channel (so the answer
    /// follows what it sent before), else directly.
    fn refuse_channel(&mut self, channel: String, error: ErrorInfo) {
        let held = ChannelName::parse(&channel)
            .ok()
            .filter(|name| self.channels.remove(name));
        match held {
            Some(channel) => self.outputs.push_back(SessionOutput::Detach {
                channel,
                error: Some(error),
            }),
            None => self.send(ServerFrame::Detached(Detached {
                channel,
                error: Some(error),
            })),
        }
    }

    fn handle_publish(&mut self, publish: Publish) {
        let msg_serial = publish.msg_serial;
        let State::Connected { key, client_id } = &self.state else {
            return self.send(ServerFrame::Nack(Nack {
                msg_serial,
                error: not_connected("PUBLISH"),
            }));
        };
        let checked = check_publish(
            &self.config,
            key,
            &publish,
            self.inflight.len(),
            &self.params.connection_id,
        );
        match checked {
            Ok(keys) => {
                let client_id = client_id.as_deref();
                let Publish {
                    channel, messages, ..
                } = publish;
                let messages = messages
                    .into_iter()
                    .zip(keys)
                    .map(|(message, key)| to_publish_message(&channel, message, key, client_id))
                    .collect();
                self.inflight.push(msg_serial);
                self.outputs.push_back(SessionOutput::Publish {
                    msg_serial,
                    messages,
                });
            }
            Err(error) => self.send(ServerFrame::Nack(Nack { msg_serial, error })),
        }
    }

    fn send(&mut self, frame: ServerFrame) {
        self.outputs.push_back(SessionOutput::Send(frame));
    }

    fn send_error(&mut self, error: ErrorInfo, channel: Option<String>) {
        self.send(ServerFrame::Error(ErrorFrame { error, channel }));
    }

    fn disconnect(
        &mut self,
        now: Instant,
        error: ErrorInfo,
        reconnect: Reconnect,
        code: CloseCode,
    ) {
        let reason = Some(error.code);
        let last = ServerFrame::Disconnected(Disconnected { error, reconnect });
        self.end(now, last, code, reason);
    }

    /// Ends the session with `last` (CLOSED or DISCONNECTED) and the close `code`: at
    /// once, or after the answers of the publishes in flight (bounded by the log's
    /// request timeout). Only the first end counts.
    fn end(&mut self, now: Instant, last: ServerFrame, code: CloseCode, reason: Option<ErrorCode>) {
        if self.is_closed() {
            return;
        }
        self.state = State::Closing {
            last,
            code,
            reason,
            deadline: now + self.config.log.request_timeout,
        };
        if self.inflight.is_empty() {
            self.finish_closing();
        }
    }

    /// Sends the last frame and asks for the close.
    fn finish_closing(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Closed(None));
        if let State::Closing {
            last, code, reason, ..
        } = state
        {
            self.state = State::Closed(reason);
            self.send(last);
            self.outputs.push_back(SessionOutput::Close(code));
        }
    }
}

/// Checks a PUBLISH (all or nothing); returns each message's idempotency key.
fn check_publish(
    config: &EdgeConfig,
    key: &ApiKey,
    publish: &Publish,
    inflight: usize,
    connection_id: &str,
) -> Result<Vec<String>, ErrorInfo> {
    parse_channel(&publish.channel)?;
    if !key
        .capabilities
        .allows(&publish.channel, KeyOperation::Publish)
    {
        return Err(forbidden("publish to", &publish.channel));
    }
    let prefix = format!("{connection_id}:{}", publish.msg_serial);
    let keys = check_messages(&config.limits, &publish.messages, &prefix)?;
    let max = config.limits.max_inflight_publishes;
    if inflight >= max {
        return Err(ErrorInfo::new(
            ErrorCode::TooManyInflight,
            format!("{max} PUBLISH frames await their answer; wait for one before sending more"),
        ));
    }
    Ok(keys)
}

/// Checks the messages of one publish against the limits (all or nothing); returns
/// each message's idempotency key: its id, else `<key_prefix>:<index>`.
pub(crate) fn check_messages(
    limits: &EdgeLimitsConfig,
    messages: &[Message],
    key_prefix: &str,
) -> Result<Vec<String>, ErrorInfo> {
    if messages.is_empty() {
        return Err(ErrorInfo::new(
            ErrorCode::InvalidValue,
            "a publish must hold at least one message",
        ));
    }
    if messages.len() > limits.max_messages_per_publish {
        return Err(ErrorInfo::new(
            ErrorCode::TooManyMessages,
            format!(
                "{} messages in one publish; the limit is {}",
                messages.len(),
                limits.max_messages_per_publish
            ),
        ));
    }
    let mut keys = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        let size = message.size();
        if size > limits.max_message_bytes {
            return Err(ErrorInfo::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "message {index} is {size} bytes; the limit is {}",
                    limits.max_message_bytes
                ),
            ));
        }
        if let Some(name) = message
            .headers
            .keys()
            .find(|name| name.starts_with(RESERVED_PREFIX))
        {
            return Err(ErrorInfo::new(
                ErrorCode::InvalidValue,
                format!("message {index}: header {name:?} uses the reserved prefix \"tern-\""),
            ));
        }
        keys.push(match &message.id {
            Some(id) if id.is_empty() => {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidValue,
                    format!("message {index}: id is empty"),
                ));
            }
            Some(id) if id.len() > MAX_MESSAGE_ID_BYTES => {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidValue,
                    format!(
                        "message {index}: id is {} bytes; the limit is {MAX_MESSAGE_ID_BYTES}",
                        id.len()
                    ),
                ));
            }
            Some(id) => id.clone(),
            None => format!("{key_prefix}:{index}"),
        });
    }
    Ok(keys)
}

/// Parses a channel name as clients may use it.
pub(crate) fn parse_channel(name: &str) -> Result<ChannelName, ErrorInfo> {
    check_channel_name(name)?;
    ChannelName::parse(name).map_err(|e| ErrorInfo::new(ErrorCode::InvalidChannel, e.to_string()))
}

pub(crate) fn forbidden(what: &str, channel: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::Forbidden,
        format!("this key may not {what} channel {channel:?}"),
    )
}

fn not_connected(kind: &str) -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::NotConnected,
        format!("{kind} before CONNECT; send CONNECT first"),
    )
}

fn check_client_id(client_id: &str) -> Result<(), String> {
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(format!(
            "client_id must be 1 to {MAX_CLIENT_ID_BYTES} bytes, not {}",
            client_id.len()
        ));
    }
    if client_id.chars().any(char::is_control) {
        return Err("client_id holds a control character".into());
    }
    Ok(())
}

pub(crate) fn to_protocol_operation(op: KeyOperation) -> Operation {
    match op {
        KeyOperation::Publish => Operation::Publish,
        KeyOperation::Subscribe => Operation::Subscribe,
        KeyOperation::History => Operation::History,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use tern_config::{Capabilities, ChannelPattern, Operations};
    use tern_protocol::{Close, Data, Position};

    use super::*;

    const KEY: &str = "app.k1:secret-secret-secret";
    const LIMITED: &str = "app.k2:secret-secret-secret";

    fn config() -> Arc<EdgeConfig> {
        let key = |id: &str, grants: Vec<(&str, Operations)>| ApiKey {
            app: "app".into(),
            key_id: id.into(),
            secret: "secret-secret-secret".into(),
            capabilities: Capabilities::new(
                grants
                    .into_iter()
                    .map(|(p, ops)| (ChannelPattern::parse(p).expect("pattern"), ops)),
            ),
        };
        Arc::new(EdgeConfig {
            limits: EdgeLimitsConfig {
                max_channels_per_connection: 2,
                max_messages_per_publish: 2,
                max_inflight_publishes: 2,
                max_message_bytes: 10,
                heartbeat_interval: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(5),
                ..EdgeLimitsConfig::default()
            },
            keys: vec![
                key("k1", vec![("*", Operations::ALL)]),
                key(
                    "k2",
                    vec![
                        ("sub:*", Operations::from(KeyOperation::Subscribe)),
                        ("pub:*", Operations::from(KeyOperation::Publish)),
                    ],
                ),
            ],
            ..EdgeConfig::default()
        })
    }

    /// The cluster secret of the tests.
    const CLUSTER_SECRET: &[u8] = b"cluster-secret-0123456789abcdef0";
    /// The wall clock when the test sessions open.
    const OPENED_UNIX_MS: u64 = 1_800_000_000_000;

    fn session(t0: Instant) -> Session {
        session_with("edge-c1", Signer::new(CLUSTER_SECRET, &[]), t0)
    }

    fn session_with(connection_id: &str, signer: Signer, t0: Instant) -> Session {
        let params = SessionParams {
            connection_id: connection_id.into(),
            signer: Arc::new(signer),
            opened_unix_ms: OPENED_UNIX_MS,
        };
        Session::new(config(), params, t0)
    }

    fn outputs(session: &mut Session) -> Vec<SessionOutput> {
        std::iter::from_fn(|| session.poll_output()).collect()
    }

    fn connect(key: Option<&str>) -> ClientFrame {
        ClientFrame::Connect(Connect {
            key: key.map(Into::into),
            ..Connect::default()
        })
    }

    fn connected(t0: Instant, key: &str) -> Session {
        let mut s = session(t0);
        s.handle_frame(t0, connect(Some(key)));
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [SessionOutput::Send(ServerFrame::Connected(_))]
        ));
        s
    }

    fn publish(msg_serial: u64, channel: &str, messages: Vec<Message>) -> ClientFrame {
        ClientFrame::Publish(Publish {
            msg_serial,
            channel: channel.into(),
            messages,
        })
    }

    fn attach(channel: &str, from: Option<Position>, rewind: Option<u32>) -> ClientFrame {
        ClientFrame::Attach(Attach {
            channel: channel.into(),
            from,
            rewind: rewind.map(Rewind::Messages),
        })
    }

    fn attach_span(channel: &str, span: Duration) -> ClientFrame {
        ClientFrame::Attach(Attach {
            channel: channel.into(),
            from: None,
            rewind: Some(Rewind::Span(span)),
        })
    }

    /// The single frame sent, or a panic.
    fn sent(session: &mut Session) -> ServerFrame {
        match outputs(session).as_slice() {
            [SessionOutput::Send(frame)] => frame.clone(),
            other => panic!("expected one frame, got {other:?}"),
        }
    }

    fn nack_code(session: &mut Session) -> ErrorCode {
        match sent(session) {
            ServerFrame::Nack(nack) => nack.error.code,
            other => panic!("expected NACK, got {other:?}"),
        }
    }

    fn disconnected(session: &mut Session) -> (ErrorCode, Reconnect, CloseCode) {
        match outputs(session).as_slice() {
            [
                SessionOutput::Send(ServerFrame::Disconnected(d)),
                SessionOutput::Close(code),
            ] => (d.error.code, d.reconnect, *code),
            other => panic!("expected DISCONNECTED then close, got {other:?}"),
        }
    }

    #[test]
    fn connect_gives_the_limits_and_ids() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.handle_frame(
            t0,
            ClientFrame::Connect(Connect {
                key: Some(KEY.into()),
                client_id: Some("alice".into()),
                resume: Some("old".into()),
                ..Connect::default()
            }),
        );
        let ServerFrame::Connected(c) = sent(&mut s) else {
            panic!("not CONNECTED")
        };
        assert_eq!(c.connection_id, "edge-c1");
        let claims = Signer::new(CLUSTER_SECRET, &[])
            .verify(&c.connection_key)
            .expect("a key signed with the cluster's secret");
        assert_eq!(claims.connection_id, "edge-c1");
        assert_eq!(claims.client_id.as_deref(), Some("alice"));
        // Valid for the state TTL plus one refresh interval (a quarter of it).
        assert_eq!(claims.expires_unix_ms, OPENED_UNIX_MS + 150_000);
        assert_eq!(c.client_id.as_deref(), Some("alice"));
        assert_eq!(c.heartbeat_interval_ms, 10_000);
        assert_eq!(c.idle_timeout_ms, 30_000);
        assert_eq!(c.state_ttl_ms, 120_000);
        assert_eq!(c.limits.max_channels, 2);
        // "old" is no key: a new connection, and CONNECTED says why.
        assert!(!c.resumed);
        let error = c.error.expect("why the resume failed");
        assert_eq!(error.code, ErrorCode::ResumeFailed);
        assert!(error.message.contains("malformed"), "{}", error.message);
        assert!(s.is_connected());
        s.handle_frame(t0, connect(Some(KEY)));
        match sent(&mut s) {
            ServerFrame::Error(e) => assert_eq!(e.error.code, ErrorCode::AlreadyConnected),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_credentials_end_the_session_for_good() {
        let t0 = Instant::now();
        let cases = [
            (connect(None), ErrorCode::Unauthorized),
            (
                connect(Some("app.k1:wrong-wrong-wrong")),
                ErrorCode::InvalidCredentials,
            ),
            (
                connect(Some("app.nokey:secret-secret-secret")),
                ErrorCode::InvalidCredentials,
            ),
            (
                ClientFrame::Connect(Connect {
                    token: Some("jwt".into()),
                    ..Connect::default()
                }),
                ErrorCode::InvalidCredentials,
            ),
            (
                ClientFrame::Connect(Connect {
                    key: Some(KEY.into()),
                    client_id: Some("bad\nid".into()),
                    ..Connect::default()
                }),
                ErrorCode::InvalidValue,
            ),
            (
                ClientFrame::Connect(Connect {
                    key: Some(KEY.into()),
                    client_id: Some("x".repeat(129)),
                    ..Connect::default()
                }),
                ErrorCode::InvalidValue,
            ),
        ];
        for (frame, code) in cases {
            let mut s = session(t0);
            s.handle_frame(t0, frame);
            assert_eq!(
                disconnected(&mut s),
                (code, Reconnect::Never, CloseCode::Policy)
            );
            assert_eq!(s.disconnect_code(), Some(code));
            // Nothing more is answered.
            s.handle_frame(
                t0,
                ClientFrame::Heartbeat(Heartbeat {
                    id: Some(1),
                    connection_key: None,
                }),
            );
            assert!(outputs(&mut s).is_empty());
            assert_eq!(s.next_deadline(), None);
        }
    }

    #[test]
    fn before_connect_only_heartbeat_and_close_are_served() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.handle_frame(t0, publish(3, "c", vec![Message::new("x")]));
        match sent(&mut s) {
            ServerFrame::Nack(n) => {
                assert_eq!((n.msg_serial, n.error.code), (3, ErrorCode::NotConnected));
            }
            other => panic!("{other:?}"),
        }
        s.handle_frame(t0, attach("c", None, None));
        match sent(&mut s) {
            ServerFrame::Error(e) => {
                assert_eq!(e.error.code, ErrorCode::NotConnected);
                assert_eq!(e.channel.as_deref(), Some("c"));
            }
            other => panic!("{other:?}"),
        }
        s.handle_frame(
            t0,
            ClientFrame::Detach(Detach {
                channel: "c".into(),
            }),
        );
        assert!(matches!(sent(&mut s), ServerFrame::Error(_)));
        s.handle_frame(
            t0,
            ClientFrame::Heartbeat(Heartbeat {
                id: Some(9),
                connection_key: None,
            }),
        );
        assert_eq!(
            sent(&mut s),
            ServerFrame::Heartbeat(Heartbeat {
                id: Some(9),
                connection_key: None
            })
        );
        s.handle_frame(
            t0,
            ClientFrame::Heartbeat(Heartbeat {
                id: None,
                connection_key: None,
            }),
        );
        assert!(outputs(&mut s).is_empty());
        s.handle_frame(t0, connect(Some(KEY)));
        assert!(matches!(sent(&mut s), ServerFrame::Connected(_)));
        s.handle_frame(t0, ClientFrame::Close(Close {}));
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [
                SessionOutput::Send(ServerFrame::Closed(_)),
                SessionOutput::Close(CloseCode::Normal)
            ]
        ));
        assert_eq!(s.disconnect_code(), None);
    }

    #[test]
    fn timeouts_and_heartbeats_in_virtual_time() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(5)));
        s.handle_tick(t0 + Duration::from_secs(4));
        assert!(outputs(&mut s).is_empty());
        s.handle_tick(t0 + Duration::from_secs(5));
        assert_eq!(
            disconnected(&mut s),
            (ErrorCode::IdleTimeout, Reconnect::Retry, CloseCode::Policy)
        );

        let mut s = connected(t0, KEY);
        // Nothing sent for the heartbeat interval: a HEARTBEAT without id.
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(10)));
        s.handle_tick(t0 + Duration::from_secs(10));
        assert_eq!(
            sent(&mut s),
            ServerFrame::Heartbeat(Heartbeat {
                id: None,
                connection_key: None
            })
        );
        // Something written meanwhile pushes the next one back.
        s.handle_sent(t0 + Duration::from_secs(15));
        s.handle_tick(t0 + Duration::from_secs(20));
        assert!(outputs(&mut s).is_empty());
        // Any frame from the client resets the idle timer.
        s.handle_frame(
            t0 + Duration::from_secs(25),
            ClientFrame::Heartbeat(Heartbeat {
                id: None,
                connection_key: None,
            }),
        );
        s.handle_tick(t0 + Duration::from_secs(54));
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [SessionOutput::Send(ServerFrame::Heartbeat(_))]
        ));
        s.handle_tick(t0 + Duration::from_secs(55));
        assert_eq!(
            disconnected(&mut s),
            (ErrorCode::IdleTimeout, Reconnect::Retry, CloseCode::Policy)
        );
    }

    /// CONNECT with `heartbeat_interval_ms`, at the test config's 10 s heartbeat and
    /// 30 s idle timeout (bounds 5 s..=2 min): the session, and the heartbeat
    /// interval and idle timeout CONNECTED answered.
    fn negotiated(t0: Instant, asked_ms: u64) -> (Session, [u64; 2]) {
        let mut s = session(t0);
        s.handle_frame(
            t0,
            ClientFrame::Connect(Connect {
                key: Some(KEY.into()),
                heartbeat_interval_ms: Some(asked_ms),
                ..Connect::default()
            }),
        );
        let ServerFrame::Connected(c) = sent(&mut s) else {
            panic!("not CONNECTED")
        };
        (s, [c.heartbeat_interval_ms, c.idle_timeout_ms])
    }

    #[test]
    fn the_heartbeat_interval_is_negotiated_within_bounds_and_the_idle_timeout_follows() {
        let t0 = Instant::now();
        assert_eq!(negotiated(t0, 20_000).1, [20_000, 60_000]);
        assert_eq!(negotiated(t0, 1_000).1, [5_000, 15_000]);
        assert_eq!(negotiated(t0, 3_600_000).1, [120_000, 360_000]);
        assert_eq!(negotiated(t0, 0).1, [5_000, 15_000]);

        // The timers follow what was answered: a HEARTBEAT after 20 s of silence
        // (not the config's 10 s), the client cut off after 60 s (not 30 s).
        let (mut s, _) = negotiated(t0, 20_000);
        s.handle_tick(t0 + Duration::from_secs(19));
        assert!(outputs(&mut s).is_empty());
        s.handle_tick(t0 + Duration::from_secs(20));
        assert_eq!(sent(&mut s), ServerFrame::Heartbeat(Heartbeat::default()));
        s.handle_tick(t0 + Duration::from_secs(59));
        assert!(!s.is_closed());
        s.handle_tick(t0 + Duration::from_secs(60));
        assert!(s.is_closed());
        assert_eq!(s.disconnect_code(), Some(ErrorCode::IdleTimeout));

        // A short interval notices a silent client sooner: 5 s asked, 15 s idle.
        let (mut s, _) = negotiated(t0, 5_000);
        s.handle_frame(
            t0 + Duration::from_secs(14),
            ClientFrame::Heartbeat(Heartbeat::default()),
        );
        s.handle_tick(t0 + Duration::from_secs(28));
        assert!(!s.is_closed());
        s.handle_tick(t0 + Duration::from_secs(29));
        assert_eq!(s.disconnect_code(), Some(ErrorCode::IdleTimeout));
    }

    #[test]
    fn publish_is_checked_all_or_nothing() {
        let t0 = Instant::now();
        let mut s = connected(t0, KEY);
        s.handle_frame(t0, publish(1, "a b", vec![Message::new("x")]));
        assert_eq!(nack_code(&mut s), ErrorCode::InvalidChannel);
        s.handle_frame(t0, publish(1, "$sys", vec![Message::new("x")]));
        assert_eq!(nack_code(&mut s), ErrorCode::InvalidChannel);
        s.handle_frame(t0, publish(1, "c", vec![]));
        assert_eq!(nack_code(&mut s), ErrorCode::InvalidValue);
        s.handle_frame(t0, publish(1, "c", vec![Message::new("x"); 3]));
        assert_eq!(nack_code(&mut s), ErrorCode::TooManyMessages);
        s.handle_frame(
            t0,
            publish(
                1,
                "c",
                vec![Message::new("ok"), Message::new("eleven char")],
            ),
        );
        assert_eq!(nack_code(&mut s), ErrorCode::MessageTooLarge);
        let mut reserved = Message::new("x");
        reserved.headers.insert("tern-x".into(), "1".into());
        s.handle_frame(t0, publish(1, "c", vec![reserved]));
        assert_eq!(nack_code(&mut s), ErrorCode::InvalidValue);
        let mut empty_id = Message::new("x");
        empty_id.id = Some(String::new());
        s.handle_frame(t0, publish(1, "c", vec![empty_id]));
        assert_eq!(nack_code(&mut s), ErrorCode::InvalidValue);
        assert!(outputs(&mut s).is_empty());
    }

    #[test]
    fn publishes_get_keys_and_are_limited_in_flight() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.handle_frame(
            t0,
            ClientFrame::Connect(Connect {
                key: Some(KEY.into()),
                client_id: Some("alice".into()),
                ..Connect::default()
            }),
        );
        outputs(&mut s);
        let mut with_id = Message::new(Data::Binary(vec![1, 2].into()));
        with_id.id = Some("mine".into());
        s.handle_frame(t0, publish(7, "c", vec![Message::new("a"), with_id]));
        let mut out = outputs(&mut s);
        let Some(SessionOutput::Publish {
            msg_serial,
            messages,
        }) = out.pop()
        else {
            panic!("not a publish")
        };
        assert!(out.is_empty());
        assert_eq!(msg_serial, 7);
        assert_eq!(messages[0].idempotency_key, "edge-c1:7:0");
        assert_eq!(messages[1].idempotency_key, "mine");
        assert!(
            messages[0]
                .headers
                .contains(&("tern-client-id".into(), "alice".into()))
        );
        assert!(
            messages[1]
                .headers
                .contains(&("tern-binary".into(), "1".into()))
        );

        s.handle_frame(t0, publish(8, "c", vec![Message::new("b")]));
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [SessionOutput::Publish { .. }]
        ));
        s.handle_frame(t0, publish(9, "c", vec![Message::new("c")]));
        assert_eq!(nack_code(&mut s), ErrorCode::TooManyInflight);

        let position = Position {
            epoch: 1,
            serial: 1,
        };
        s.handle_publish_result(
            7,
            Ok(vec![
                PublishResult {
                    position,
                    duplicate: false,
                    dropped: None,
                };
                2
            ]),
        );
        match sent(&mut s) {
            ServerFrame::Ack(a) => assert_eq!((a.msg_serial, a.results.len()), (7, 2)),
            other => panic!("{other:?}"),
        }
        s.handle_frame(t0, publish(9, "c", vec![Message::new("c")]));
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [SessionOutput::Publish { .. }]
        ));
        s.handle_publish_result(8, Err(ErrorInfo::new(ErrorCode::LogUnavailable, "down")));
        match sent(&mut s) {
            ServerFrame::Nack(n) => {
                assert_eq!((n.msg_serial, n.error.code), (8, ErrorCode::LogUnavailable))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attach_checks_and_channel_bookkeeping() {
        let t0 = Instant::now();
        let mut s = connected(t0, LIMITED);
        let refused = |s: &mut Session| match sent(s) {
            ServerFrame::Detached(d) => d.error.expect("error").code,
            other => panic!("{other:?}"),
        };
        s.handle_frame(t0, attach("pub:x", None, None));
        assert_eq!(refused(&mut s), ErrorCode::Forbidden);
        s.handle_frame(t0, attach("sub:x", None, Some(3)));
        assert_eq!(refused(&mut s), ErrorCode::Forbidden);
        s.handle_frame(t0, attach_span("sub:x", Duration::from_secs(60)));
        assert_eq!(refused(&mut s), ErrorCode::Forbidden);
        s.handle_frame(t0, publish(1, "sub:x", vec![Message::new("x")]));
        assert_eq!(nack_code(&mut s), ErrorCode::Forbidden);
        s.handle_frame(t0, attach("", None, None));
        assert_eq!(refused(&mut s), ErrorCode::InvalidChannel);
        s.handle_frame(
            t0,
            attach(
                "sub:x",
                Some(Position {
                    epoch: 1,
                    serial: 2,
                }),
                Some(1),
            ),
        );
        assert_eq!(refused(&mut s), ErrorCode::InvalidValue);
        s.handle_frame(
            t0,
            attach(
                "sub:x",
                Some(Position {
                    epoch: 1,
                    serial: 0,
                }),
                None,
            ),
        );
        // Serial 0 names a position only in epoch 0 (`0:0`).
        assert_eq!(refused(&mut s), ErrorCode::InvalidValue);

        let mut s = connected(t0, KEY);
        s.handle_frame(t0, attach("a", None, Some(0)));
        match outputs(&mut s).as_slice() {
            [
                SessionOutput::Attach {
                    channel,
                    from,
                    granted,
                },
            ] => {
                assert_eq!(channel.as_str(), "a");
                assert_eq!(*from, AttachFrom::Now);
                assert_eq!(granted.len(), 3);
            }
            other => panic!("{other:?}"),
        }
        // A span reaches back from the edge's wall clock when the ATTACH arrives; a
        // span of 0 is no rewind.
        let later = t0 + Duration::from_secs(5);
        for (span, expected) in [
            (
                Duration::from_secs(2),
                AttachFrom::Since(OPENED_UNIX_MS + 3_000),
            ),
            (Duration::ZERO, AttachFrom::Now),
        ] {
            s.handle_frame(later, attach_span("a", span));
            match outputs(&mut s).as_slice() {
                [SessionOutput::Attach { from, .. }] => assert_eq!(*from, expected),
                other => panic!("{other:?}"),
            }
        }
        s.handle_frame(
            t0,
            attach(
                "b",
                Some(Position {
                    epoch: 4,
                    serial: 9,
                }),
                None,
            ),
        );
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [SessionOutput::Attach {
                from: AttachFrom::After(Some(p)),
                ..
            }] if p.serial.get() == 9
        ));
        // `from: 0:0` is "from the channel's first message".
        s.handle_frame(t0, attach("b", Some(Position::BEFORE_FIRST), None));
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [SessionOutput::Attach {
                from: AttachFrom::After(None),
                ..
            }]
        ));
        s.handle_frame(t0, attach("c", None, Some(5)));
        assert_eq!(refused(&mut s), ErrorCode::TooManyChannels);
        // Re-attaching a held channel is allowed and goes to the hub again.
        s.handle_frame(t0, attach("a", None, Some(5)));
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [SessionOutput::Attach {
                from: AttachFrom::Rewind(5),
                ..
            }]
        ));
        // A refused re-attach of a held channel detaches it through the hub.
        s.handle_frame(
            t0,
            attach(
                "a",
                Some(Position {
                    epoch: 1,
                    serial: 1,
                }),
                Some(1),
            ),
        );
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [SessionOutput::Detach { error: Some(_), .. }]
        ));
        // DETACH of a held channel goes to the hub; of an unknown one, answered here.
        s.handle_frame(
            t0,
            ClientFrame::Detach(Detach {
                channel: "b".into(),
            }),
        );
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [SessionOutput::Detach { error: None, .. }]
        ));
        s.handle_frame(
            t0,
            ClientFrame::Detach(Detach {
                channel: "zz".into(),
            }),
        );
        assert_eq!(
            sent(&mut s),
            ServerFrame::Detached(Detached {
                channel: "zz".into(),
                error: None
            })
        );
        assert_eq!(s.channels().count(), 0);
    }

    #[test]
    fn decode_errors_keep_the_session() {
        let t0 = Instant::now();
        let mut s = connected(t0, KEY);
        let errors = tern_protocol::decode::<ClientFrame>(
            tern_protocol::Format::Json,
            br#"[{"type":"PUBLISH","msg_serial":4},{"type":"WHAT"},{"type":"ATTACH","channel":5}]"#,
        )
        .expect("an array");
        for error in errors {
            s.handle_decode_error(t0, error.expect_err("bad frames"));
        }
        let frames: Vec<_> = outputs(&mut s)
            .into_iter()
            .map(|o| match o {
                SessionOutput::Send(ServerFrame::Nack(n)) => (Some(n.msg_serial), n.error.code),
                SessionOutput::Send(ServerFrame::Error(e)) => (None, e.error.code),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            frames,
            [
                (Some(4), ErrorCode::Malformed),
                (None, ErrorCode::UnknownFrame),
                (None, ErrorCode::Malformed)
            ]
        );
        assert!(s.is_connected());

        // Before CONNECT, a malformed PUBLISH is first of all too early.
        let mut s = session(t0);
        let error = tern_protocol::decode::<ClientFrame>(
            tern_protocol::Format::Json,
            br#"{"type":"PUBLISH","msg_serial":6}"#,
        )
        .expect("one frame")
        .remove(0)
        .expect_err("malformed");
        s.handle_decode_error(t0, error);
        assert_eq!(nack_code(&mut s), ErrorCode::NotConnected);
    }

    #[test]
    fn transport_events_end_the_session_with_their_reasons() {
        let t0 = Instant::now();
        let mut s = connected(t0, KEY);
        s.handle_frame_too_large(t0);
        assert_eq!(
            disconnected(&mut s),
            (
                ErrorCode::FrameTooLarge,
                Reconnect::Retry,
                CloseCode::TooLarge
            )
        );
        let mut s = connected(t0, KEY);
        s.handle_invalid_text(t0);
        assert_eq!(
            disconnected(&mut s),
            (
                ErrorCode::Malformed,
                Reconnect::Retry,
                CloseCode::InvalidData
            )
        );
        let mut s = connected(t0, KEY);
        s.handle_slow_consumer(t0);
        assert_eq!(
            disconnected(&mut s),
            (ErrorCode::SlowConsumer, Reconnect::Retry, CloseCode::Policy)
        );
        // Only the first end counts.
        s.handle_shutdown(t0);
        assert!(outputs(&mut s).is_empty());
        let mut s = session(t0);
        s.handle_shutdown(t0);
        assert_eq!(
            disconnected(&mut s),
            (
                ErrorCode::ShuttingDown,
                Reconnect::Elsewhere,
                CloseCode::GoingAway
            )
        );
        // A publish answer after the end is dropped.
        s.handle_publish_result(1, Ok(vec![]));
        assert!(outputs(&mut s).is_empty());
        // A drain says the same to the client, and only once.
        let mut s = connected(t0, KEY);
        s.handle_drain(t0);
        assert_eq!(
            disconnected(&mut s),
            (
                ErrorCode::ShuttingDown,
                Reconnect::Elsewhere,
                CloseCode::GoingAway
            )
        );
        s.handle_shutdown(t0);
        assert!(outputs(&mut s).is_empty());
    }

    fn ack_serial(output: &SessionOutput) -> Option<u64> {
        match output {
            SessionOutput::Send(ServerFrame::Ack(a)) => Some(a.msg_serial),
            SessionOutput::Send(ServerFrame::Nack(n)) => Some(n.msg_serial),
            _ => None,
        }
    }

    #[test]
    fn close_waits_for_the_answers_of_publishes_in_flight() {
        let t0 = Instant::now();
        let mut s = connected(t0, KEY);
        s.handle_frame(t0, publish(1, "c", vec![Message::new("a")]));
        s.handle_frame(t0, publish(2, "c", vec![Message::new("b")]));
        assert_eq!(outputs(&mut s).len(), 2);
        s.handle_frame(t0, ClientFrame::Close(Close {}));
        // Nothing yet: CLOSED waits for both answers; frames after CLOSE are ignored.
        assert!(outputs(&mut s).is_empty());
        assert!(s.is_closed());
        s.handle_frame(t0, publish(3, "c", vec![Message::new("c")]));
        assert!(outputs(&mut s).is_empty());
        s.handle_publish_result(2, Err(ErrorInfo::new(ErrorCode::LogRejected, "no")));
        assert_eq!(
            outputs(&mut s).iter().map(ack_serial).collect::<Vec<_>>(),
            [Some(2)]
        );
        s.handle_publish_result(1, Ok(vec![]));
        assert!(matches!(
            outputs(&mut s).as_slice(),
            [
                SessionOutput::Send(ServerFrame::Ack(Ack { msg_serial: 1, .. })),
                SessionOutput::Send(ServerFrame::Closed(_)),
                SessionOutput::Close(CloseCode::Normal)
            ]
        ));
        assert_eq!(s.disconnect_code(), None);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_disconnect_answers_publishes_in_flight_or_nacks_them_log_timeout() {
        let t0 = Instant::now();
        for end in 0..3 {
            let mut s = connected(t0, KEY);
            s.handle_frame(t0, publish(7, "c", vec![Message::new("a")]));
            s.handle_frame(t0, publish(8, "c", vec![Message::new("b")]));
            outputs(&mut s);
            let t1 = t0 + Duration::from_secs(1);
            match end {
                0 => s.handle_slow_consumer(t1),
                1 => s.handle_shutdown(t1),
                _ => s.handle_tick(t0 + Duration::from_secs(30)),
            }
            assert!(outputs(&mut s).is_empty(), "DISCONNECTED waits");
            assert!(s.disconnect_code().is_some());
            s.handle_publish_result(7, Ok(vec![]));
            assert_eq!(
                outputs(&mut s).iter().map(ack_serial).collect::<Vec<_>>(),
                [Some(7)]
            );
            // The wait is bounded by the log's request timeout (10 s): then LogTimeout.
            let deadline = s.next_deadline().expect("a closing deadline");
            s.handle_tick(deadline - Duration::from_millis(1));
            assert!(outputs(&mut s).is_empty());
            s.handle_tick(deadline);
            let out = outputs(&mut s);
            match out.as_slice() {
                [
                    SessionOutput::Send(ServerFrame::Nack(n)),
                    SessionOutput::Send(ServerFrame::Disconnected(_)),
                    SessionOutput::Close(_),
                ] => assert_eq!((n.msg_serial, n.error.code), (8, ErrorCode::LogTimeout)),
                other => panic!("{other:?}"),
            }
            // The link's late answer is not sent twice.
            s.handle_publish_result(8, Ok(vec![]));
            assert!(outputs(&mut s).is_empty());
        }
    }

    /// CONNECT with `key`, `client_id`, `resume` and `channels`; the CONNECTED and
    /// whatever followed it.
    fn connect_resuming(
        s: &mut Session,
        now: Instant,
        key: &str,
        client_id: Option<&str>,
        resume: Option<String>,
        channels: &[(&str, Position)],
    ) -> (Connected, Vec<SessionOutput>) {
        s.handle_frame(
            now,
            ClientFrame::Connect(Connect {
                key: Some(key.into()),
                client_id: client_id.map(Into::into),
                resume,
                channels: channels
                    .iter()
                    .map(|(name, position)| ((*name).to_owned(), *position))
                    .collect(),
                ..Connect::default()
            }),
        );
        let mut out = outputs(s);
        match out.remove(0) {
            SessionOutput::Send(ServerFrame::Connected(c)) => (c, out),
            other => panic!("expected CONNECTED first, got {other:?}"),
        }
    }

    /// The idempotency key the link gets for an id-less message published as
    /// `msg_serial`.
    fn idless_key(s: &mut Session, msg_serial: u64) -> String {
        s.handle_frame(
            Instant::now(),
            publish(msg_serial, "chat:1", vec![Message::new("x")]),
        );
        match outputs(s).as_slice() {
            [SessionOutput::Publish { messages, .. }] => {
                String::from_utf8(messages[0].idempotency_key.to_vec()).expect("UTF-8")
            }
            other => panic!("expected a publish, got {other:?}"),
        }
    }

    #[test]
    fn a_resume_on_another_edge_takes_over_the_connection_and_its_channels() {
        let t0 = Instant::now();
        let mut first = session_with("edge-a-1", Signer::new(CLUSTER_SECRET, &[]), t0);
        let (a, _) = connect_resuming(&mut first, t0, KEY, Some("alice"), None, &[]);
        assert_eq!(idless_key(&mut first, 7), "edge-a-1:7:0");

        // Another edge of the same cluster, a minute later.
        let t1 = t0 + Duration::from_secs(60);
        let mut second = session_with("edge-b-9", Signer::new(CLUSTER_SECRET, &[]), t1);
        let at = |serial| Position { epoch: 3, serial };
        let (b, attaches) = connect_resuming(
            &mut second,
            t1,
            KEY,
            Some("alice"),
            Some(a.connection_key),
            &[("chat:1", at(41)), ("news:2", at(7))],
        );
        assert!(b.resumed);
        assert_eq!(b.error, None);
        assert_eq!(b.connection_id, "edge-a-1");
        assert_eq!(second.connection_id(), "edge-a-1");
        // A fresh key, for the same connection.
        let claims = Signer::new(CLUSTER_SECRET, &[])
            .verify(&b.connection_key)
            .expect("valid");
        assert_eq!(claims.connection_id, "edge-a-1");
        // Each channel attached right after the position the client had.
        let attached: Vec<_> = attaches
            .iter()
            .map(|output| match output {
                SessionOutput::Attach { channel, from, .. } => (channel.to_string(), *from),
                other => panic!("expected attaches only, got {other:?}"),
            })
            .collect();
        let after = |serial| {
            AttachFrom::After(Some(tern_link::Position {
                epoch: tern_link::Epoch(3),
                serial: tern_link::Serial::new(serial).expect("non-zero"),
            }))
        };
        assert_eq!(
            attached,
            vec![("chat:1".into(), after(41)), ("news:2".into(), after(7))]
        );
        // A PUBLISH resent with its original msg_serial gets the same idempotency key,
        // so the log stores it once.
        assert_eq!(idless_key(&mut second, 7), "edge-a-1:7:0");
    }

    #[test]
    fn a_resume_that_cannot_be_honoured_says_why_and_starts_a_new_connection() {
        let t0 = Instant::now();
        let mut first = session(t0);
        let (a, _) = connect_resuming(&mut first, t0, KEY, Some("alice"), None, &[]);
        let foreign = {
            let mut other = session_with(
                "x-1",
                Signer::new(b"another-cluster-0123456789abcdef", &[]),
                t0,
            );
            connect_resuming(&mut other, t0, KEY, Some("alice"), None, &[])
                .0
                .connection_key
        };
        let position = Position {
            epoch: 1,
            serial: 5,
        };
        let cases = [
            (KEY, Some("alice"), foreign, 0, "not issued by this cluster"),
            (
                KEY,
                Some("mallory"),
                a.connection_key.clone(),
                0,
                "another client id",
            ),
            (KEY, None, a.connection_key.clone(), 0, "another client id"),
            (
                "app.k2:secret-secret-secret",
                Some("alice"),
                a.connection_key.clone(),
                0,
                "another API key",
            ),
            // Valid for the state TTL (120 s) plus a refresh interval (30 s).
            (
                KEY,
                Some("alice"),
                a.connection_key.clone(),
                150_001,
                "expired 1 ms ago",
            ),
        ];
        for (key, client_id, resume, later_ms, why) in cases {
            let at = t0 + Duration::from_millis(later_ms);
            let mut s = session_with("edge-b-2", Signer::new(CLUSTER_SECRET, &[]), at);
            s.params.opened_unix_ms = OPENED_UNIX_MS + later_ms;
            let (c, attaches) = connect_resuming(
                &mut s,
                at,
                key,
                client_id,
                Some(resume),
                &[("sub:1", position)],
            );
            assert!(!c.resumed, "{why}");
            assert_eq!(c.connection_id, "edge-b-2", "{why}");
            let error = c.error.expect("why");
            assert_eq!(error.code, ErrorCode::ResumeFailed, "{why}");
            assert!(error.message.contains(why), "{why}: {}", error.message);
            // The channels are attached all the same: continuity is per channel.
            assert!(
                matches!(
                    attaches.as_slice(),
                    [SessionOutput::Attach {
                        from: AttachFrom::After(Some(_)),
                        ..
                    }]
                ),
                "{why}: {attaches:?}"
            );
        }
        // The key of a connection that was honoured just before expiry still works.
        let at = t0 + Duration::from_millis(150_000);
        let mut s = session_with("edge-b-3", Signer::new(CLUSTER_SECRET, &[]), at);
        s.params.opened_unix_ms = OPENED_UNIX_MS + 150_000;
        let (c, _) = connect_resuming(&mut s, at, KEY, Some("alice"), Some(a.connection_key), &[]);
        assert!(c.resumed);
    }

    #[test]
    fn channels_in_connect_are_checked_like_attaches() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let at = Position {
            epoch: 1,
            serial: 1,
        };
        let (_, after) = connect_resuming(
            &mut s,
            t0,
            "app.k2:secret-secret-secret",
            None,
            None,
            &[("pub:1", at), ("sub:1", at), ("sub:2", at), ("sub:3", at)],
        );
        // pub:1 is not subscribable; sub:3 is over max_channels (2).
        let summary: Vec<String> = after
            .iter()
            .map(|output| match output {
                SessionOutput::Attach { channel, .. } => format!("attach {channel}"),
                SessionOutput::Send(ServerFrame::Detached(d)) => {
                    format!(
                        "refuse {} {:?}",
                        d.channel,
                        d.error.as_ref().map(|e| e.code)
                    )
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                "refuse pub:1 Some(Forbidden)".to_owned(),
                "attach sub:1".to_owned(),
                "attach sub:2".to_owned(),
                "refuse sub:3 Some(TooManyChannels)".to_owned(),
            ]
        );
    }

    #[test]
    fn a_fresh_connection_key_comes_every_quarter_of_the_state_ttl() {
        let t0 = Instant::now();
        let mut s = connected(t0, KEY);
        let signer = Signer::new(CLUSTER_SECRET, &[]);
        let mut now = t0;
        for round in 1..=3u64 {
            // The heartbeat interval (10 s) passes twice without a key, then the key
            // is due at 30 s.
            for _ in 0..2 {
                now += Duration::from_secs(10);
                s.handle_frame(now, ClientFrame::Heartbeat(Heartbeat::default()));
                s.handle_tick(now);
                assert_eq!(sent(&mut s), ServerFrame::Heartbeat(Heartbeat::default()));
            }
            now += Duration::from_secs(10);
            s.handle_frame(now, ClientFrame::Heartbeat(Heartbeat::default()));
            assert_eq!(s.next_deadline(), Some(now));
            s.handle_tick(now);
            let ServerFrame::Heartbeat(Heartbeat {
                connection_key: Some(key),
                id: None,
            }) = sent(&mut s)
            else {
                panic!("expected a HEARTBEAT with a fresh key")
            };
            let claims = signer.verify(&key).expect("valid");
            assert_eq!(claims.connection_id, "edge-c1");
            assert_eq!(
                claims.expires_unix_ms,
                OPENED_UNIX_MS + round * 30_000 + 150_000
            );
        }
    }
}
