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
//! Channels: the session decides whether an ATTACH or DETACH is allowed and keeps the
//! set of channels it handed to the hub; the hub answers them (ATTACHED, DETACHED) in
//! order with the messages it delivers. Refusals of channels the hub does not hold are
//! answered here directly.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_config::{ApiKey, EdgeConfig, EdgeLimitsConfig, Operation as KeyOperation};
use tern_link::{ChannelName, PublishMessage};
use tern_protocol::{
    Ack, Attach, ClientFrame, Closed, Connect, Connected, Detach, Detached, Disconnected,
    ErrorCode, ErrorFrame, ErrorInfo, FrameError, Heartbeat, Limits, MAX_MESSAGE_ID_BYTES, Message,
    Nack, Operation, Publish, PublishResult, Reconnect, ServerFrame, check_channel_name,
};

use crate::convert::{RESERVED_PREFIX, to_publish_message};

/// How long the server keeps a dropped connection's state for a resume (advertised
/// in CONNECTED; resumes are not supported yet).
const STATE_TTL_MS: u64 = 120_000;
/// Longest client id, in bytes.
const MAX_CLIENT_ID_BYTES: usize = 128;

/// Where delivery of an attached channel starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachFrom {
    /// With the next message stored after the attach.
    Now,
    /// Right after this position (a resume).
    After(tern_link::Position),
    /// With the last `n` stored messages.
    Rewind(u32),
}

/// How the transport is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// An orderly end (WebSocket 1000).
    Normal,
    /// The client sent a message over the size limit (WebSocket 1009).
    TooLarge,
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
    /// The connection id sent in CONNECTED (url-safe, no `:`).
    pub connection_id: String,
    /// The opaque connection key sent in CONNECTED.
    pub connection_key: String,
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
    /// Closing or closed: everything is ignored. With the DISCONNECTED code, if the
    /// server ended the session.
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
    /// PUBLISH frames handed to the link and not answered yet.
    inflight: usize,
    opened_at: Instant,
    last_received: Instant,
    last_sent: Instant,
    outputs: std::collections::VecDeque<SessionOutput>,
}

impl Session {
    /// A session for a transport that opened at `now`.
    pub fn new(config: Arc<EdgeConfig>, params: SessionParams, now: Instant) -> Self {
        Self {
            config,
            params,
            state: State::Open,
            channels: HashSet::new(),
            inflight: 0,
            opened_at: now,
            last_received: now,
            last_sent: now,
            outputs: std::collections::VecDeque::new(),
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

    /// True once the session has asked to close.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// The channels the hub holds for this session (to clean up when it ends).
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.channels.iter()
    }

    /// The code of the DISCONNECTED the session ended with, if it did.
    pub fn disconnect_code(&self) -> Option<ErrorCode> {
        match self.state {
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
                (self.last_received + limits.idle_timeout)
                    .min(self.last_sent + limits.heartbeat_interval),
            ),
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
                self.disconnect(error, Reconnect::Retry, CloseCode::Policy);
            }
            State::Connected { .. } if now >= self.last_received + limits.idle_timeout => {
                let error = ErrorInfo::new(
                    ErrorCode::IdleTimeout,
                    format!(
                        "nothing received for {} ms",
                        limits.idle_timeout.as_millis()
                    ),
                );
                self.disconnect(error, Reconnect::Retry, CloseCode::Policy);
            }
            State::Connected { .. } if now >= self.last_sent + limits.heartbeat_interval => {
                self.send(ServerFrame::Heartbeat(Heartbeat { id: None }));
                self.last_sent = now;
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
            ClientFrame::Heartbeat(Heartbeat { id: Some(id) }) => {
                self.send(ServerFrame::Heartbeat(Heartbeat { id: Some(id) }));
            }
            ClientFrame::Heartbeat(Heartbeat { id: None }) => {}
            ClientFrame::Close(_) => {
                self.send(ServerFrame::Closed(Closed {}));
                self.close(CloseCode::Normal);
            }
            ClientFrame::Connect(connect) => self.handle_connect(connect),
            ClientFrame::Publish(publish) => self.handle_publish(publish),
            ClientFrame::Attach(attach) => self.handle_attach(attach),
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
            (Some("PUBLISH"), Some(msg_serial)) => {
                self.send(ServerFrame::Nack(Nack {
                    msg_serial,
                    error: error.info(),
                }));
            }
            _ => self.send_error(error.info(), error.channel.clone()),
        }
    }

    /// The client sent a WebSocket message over `max_frame_bytes`: the session ends.
    pub fn handle_frame_too_large(&mut self) {
        let error = ErrorInfo::new(
            ErrorCode::FrameTooLarge,
            format!(
                "a message is larger than the limit of {} bytes",
                self.config.limits.max_frame_bytes
            ),
        );
        self.disconnect(error, Reconnect::Retry, CloseCode::TooLarge);
    }

    /// The connection's outbound queue went over its byte budget.
    pub fn handle_slow_consumer(&mut self) {
        let error = ErrorInfo::new(
            ErrorCode::SlowConsumer,
            format!(
                "more than {} bytes queued for this connection: read faster, then re-attach from the last positions received",
                self.config.limits.outbound_queue_bytes
            ),
        );
        self.disconnect(error, Reconnect::Retry, CloseCode::Policy);
    }

    /// The edge is shutting down: tell the client to go elsewhere.
    pub fn handle_shutdown(&mut self) {
        let error = ErrorInfo::new(ErrorCode::ShuttingDown, "the edge is shutting down");
        self.disconnect(error, Reconnect::Elsewhere, CloseCode::GoingAway);
    }

    /// The link's answer to the publish of `msg_serial`.
    pub fn handle_publish_result(
        &mut self,
        msg_serial: u64,
        result: Result<Vec<PublishResult>, ErrorInfo>,
    ) {
        self.inflight = self.inflight.saturating_sub(1);
        if self.is_closed() {
            return;
        }
        self.send(match result {
            Ok(results) => ServerFrame::Ack(Ack {
                msg_serial,
                results,
            }),
            Err(error) => ServerFrame::Nack(Nack { msg_serial, error }),
        });
    }

    fn handle_connect(&mut self, connect: Connect) {
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
            Err(error) => return self.disconnect(error, Reconnect::Never, CloseCode::Policy),
        };
        if let Some(client_id) = &connect.client_id
            && let Err(why) = check_client_id(client_id)
        {
            let error = ErrorInfo::new(ErrorCode::InvalidValue, why);
            return self.disconnect(error, Reconnect::Never, CloseCode::Policy);
        }
        let limits = &self.config.limits;
        let connected = Connected {
            connection_id: self.params.connection_id.clone(),
            connection_key: self.params.connection_key.clone(),
            client_id: connect.client_id.clone(),
            heartbeat_interval_ms: millis(limits.heartbeat_interval),
            idle_timeout_ms: millis(limits.idle_timeout),
            state_ttl_ms: STATE_TTL_MS,
            limits: Limits {
                max_frame_bytes: limits.max_frame_bytes as u64,
                max_message_bytes: limits.max_message_bytes as u64,
                max_messages_per_publish: saturating_u32(limits.max_messages_per_publish),
                max_inflight_publishes: saturating_u32(limits.max_inflight_publishes),
                max_channels: saturating_u32(limits.max_channels_per_connection),
            },
            error: connect.resume.as_ref().map(|_| {
                ErrorInfo::new(
                    ErrorCode::InvalidValue,
                    "resume is not supported by this server yet; this is a new connection",
                )
            }),
        };
        self.state = State::Connected {
            key,
            client_id: connect.client_id,
        };
        self.send(ServerFrame::Connected(connected));
    }

    fn handle_attach(&mut self, attach: Attach) {
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
                (Some(position), None) => {
                    AttachFrom::After(crate::convert::to_link_position(position).ok_or_else(
                        || ErrorInfo::new(ErrorCode::InvalidValue, "`from.serial` starts at 1"),
                    )?)
                }
                (None, Some(0)) | (None, None) => AttachFrom::Now,
                (None, Some(n)) => AttachFrom::Rewind(n),
            };
            if !granted.contains(KeyOperation::Subscribe) {
                return Err(forbidden("subscribe to", &attach.channel));
            }
            if matches!(from, AttachFrom::Rewind(_)) && !granted.contains(KeyOperation::History) {
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
            self.inflight,
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
                self.inflight += 1;
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

    fn disconnect(&mut self, error: ErrorInfo, reconnect: Reconnect, code: CloseCode) {
        if self.is_closed() {
            return;
        }
        let error_code = error.code;
        self.send(ServerFrame::Disconnected(Disconnected { error, reconnect }));
        self.close(code);
        self.state = State::Closed(Some(error_code));
    }

    fn close(&mut self, code: CloseCode) {
        self.state = State::Closed(None);
        self.outputs.push_back(SessionOutput::Close(code));
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
