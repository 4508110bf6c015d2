//! Server-Sent Events: `GET /v1/sse?channels=a,b`, the subscribe-only transport for
//! browsers' `EventSource` (docs/protocol.md §12.3).
//!
//! Everything a request can get wrong is checked before the stream starts and answered
//! like the other HTTP routes (401, 403, 400 with a JSON ErrorInfo). Then one task per
//! stream owns an [`Outbox`] and an [`SseSession`] (sans-IO): it attaches every channel
//! through the hub, as a WebSocket ATTACH would (so egress functions, catch-up pacing
//! and `ContinuityLost` behave the same), and turns the JSON frames the hub queues into
//! events.
//!
//! ```text
//!  GET /v1/sse ─▶ key, channels, capabilities, Last-Event-ID ─▶ 200 text/event-stream
//!                                                                   ▲ chunks (bounded channel)
//!  hub ──ATTACHED/MESSAGE/DETACHED (JSON)──▶ outbox ──▶ SseSession ─┘ event: attached|message|…
//!  timer ──▶ `: heartbeat`     overflow / shutdown / DETACHED ──▶ event: disconnected, end
//! ```
//!
//! Every `attached` and `message` event carries an `id:` naming the position of every
//! channel of the stream, in the order of `channels` (`1:42,1:17`), so the
//! `Last-Event-ID` an `EventSource` sends when it reconnects resumes each channel right
//! after the last event it dispatched: every later message once, in order, or an
//! `attached` event with `ContinuityLost`.
//!
//! The stream is paced like a WebSocket: frames move from the outbox to the response
//! body only when the body has room, so a client that stops reading fills its outbox
//! and is sent `event: disconnected` (`SlowConsumer`), and loses nothing once it
//! reconnects. A client that goes away drops the body; the task notices, releases its
//! channels in the hub and ends. Not here: publishing (use the HTTP API), rewind.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use rand::Rng as _;
use serde::Deserialize;
use tern_config::{ApiKey, Operation as KeyOperation};
use tern_link::{ChannelName, Epoch, Serial};
use tern_protocol::{
    Disconnected, ErrorCode, ErrorInfo, Format, Operation, Reconnect, ServerFrame,
};
use tokio::sync::mpsc;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::body::HttpBody;
use crate::http::{HttpResponse, authenticate, error_response, percent_decode, with_cors};
use crate::hub::{ConnKey, SubscriberHandle};
use crate::link::HubCommand;
use crate::metrics::CloseReason;
use crate::outbox::Outbox;
use crate::server::Shared;
use crate::session::{AttachFrom, forbidden, parse_channel, to_protocol_operation};

/// Most bytes of frames turned into one chunk of the response body.
const WRITE_CHUNK: usize = 16 * 1024;
/// Chunks waiting for hyper to write them; past this the outbox holds what comes.
const BODY_CHUNKS: usize = 2;
/// How long the last events (after a slow consumer, a shutdown, a refused channel)
/// may wait for the client to take them before the stream is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// The `retry:` hint is this plus a random part below [`RETRY_JITTER`], so that the
/// clients of an edge that went away do not all come back at the same moment.
const RETRY_BASE: Duration = Duration::from_millis(1000);
/// See [`RETRY_BASE`].
const RETRY_JITTER: Duration = Duration::from_millis(2000);

/// Where one channel of the stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cursor {
    /// No position yet (attached without one and no `attached` event since): written
    /// `-`, resumed as a plain attach.
    Unknown,
    /// Right after `epoch:serial` (`0:0`: before the channel's first message).
    At { epoch: u64, serial: u64 },
}

impl Cursor {
    /// Parses `-` or `epoch:serial` (decimal; serial 0 only in epoch 0).
    fn parse(text: &str) -> Result<Self, String> {
        if text == "-" {
            return Ok(Cursor::Unknown);
        }
        let (epoch, serial) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is neither epoch:serial nor -"))?;
        let number = |part: &str| {
            // `u64::from_str` takes a leading `+`; positions are plain digits.
            part.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| part.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| format!("{text:?}: {part:?} is not a decimal number"))
        };
        let (epoch, serial) = (number(epoch)?, number(serial)?);
        if serial == 0 && epoch != 0 {
            return Err(format!(
                "{text:?}: serial 0 exists only in epoch 0 (0:0, before the first message)"
            ));
        }
        Ok(Cursor::At { epoch, serial })
    }

    /// Where the hub starts delivery for a stream resuming from here.
    fn attach_from(self) -> AttachFrom {
        match self {
            Cursor::Unknown => AttachFrom::Now,
            Cursor::At { epoch, serial } => {
                AttachFrom::After(Serial::new(serial).map(|serial| tern_link::Position {
                    epoch: Epoch(epoch),
                    serial,
                }))
            }
        }
    }

    fn write(self, out: &mut String) {
        match self {
            Cursor::Unknown => out.push('-'),
            Cursor::At { epoch, serial } => {
                let _ = write!(out, "{epoch}:{serial}");
            }
        }
    }
}

/// The channels of `?channels=`: names separated by `,`, each percent-decoded on its
/// own (so `%2C` is a comma inside a name); checked like ATTACH's channel, no name
/// twice, at most `max`.
pub(crate) fn parse_channels(
    query: Option<&str>,
    max: usize,
) -> Result<Vec<ChannelName>, ErrorInfo> {
    let invalid = |why: String| ErrorInfo::new(ErrorCode::InvalidValue, why);
    let raw = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| match pair.split_once('=') {
            Some(("channels", value)) => Some(value),
            None if pair == "channels" => Some(""),
            _ => None,
        })
        .ok_or_else(|| invalid("GET /v1/sse needs ?channels=<channel>[,<channel>…]".into()))?;
    let mut channels: Vec<ChannelName> = Vec::new();
    for part in raw.split(',') {
        let name = percent_decode(part).ok_or_else(|| {
            ErrorInfo::new(
                ErrorCode::InvalidChannel,
                format!("channel {part:?} is not valid percent-encoded UTF-8"),
            )
        })?;
        let channel = parse_channel(&name)?;
        if channels.contains(&channel) {
            return Err(invalid(format!("channel {name:?} is listed twice")));
        }
        channels.push(channel);
    }
    if channels.len() > max {
        return Err(ErrorInfo::new(
            ErrorCode::TooManyChannels,
            format!(
                "{} channels; at most {max} may be attached at once",
                channels.len()
            ),
        ));
    }
    Ok(channels)
}

/// One channel of a stream.
#[derive(Debug)]
struct StreamChannel {
    name: ChannelName,
    cursor: Cursor,
    granted: Vec<Operation>,
}

/// A channel to attach in the hub when the stream starts.
#[derive(Debug, PartialEq)]
pub(crate) struct SseAttach {
    /// The channel.
    pub(crate) channel: ChannelName,
    /// Where delivery starts: after the cursor of the last event id, else now.
    pub(crate) from: AttachFrom,
    /// What the key allows on the channel (for ATTACHED).
    pub(crate) granted: Vec<Operation>,
}

/// The fields of a frame's JSON the stream needs; the rest (the message) is skipped.
#[derive(Deserialize)]
struct FrameHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    position: Option<WirePosition>,
    #[serde(default)]
    error: Option<ErrorInfo>,
}

#[derive(Deserialize)]
struct WirePosition {
    epoch: u64,
    serial: u64,
}

/// One SSE stream's state (sans-IO): the channels and their cursors, and the bytes
/// to write next. The driver feeds it the JSON frames the hub queued, ticks and
/// transport events, and writes what [`SseSession::take_output`] gives.
#[derive(Debug)]
pub(crate) struct SseSession {
    channels: Vec<StreamChannel>,
    /// Channel name → index in `channels`.
    index: HashMap<String, usize>,
    /// The `id:` of the cursors now (rebuilt when one moves).
    id: String,
    heartbeat_interval: Duration,
    last_sent: Instant,
    out: Vec<u8>,
    /// Set once `event: disconnected` was written: nothing follows it.
    ended: Option<ErrorCode>,
}

impl SseSession {
    /// A stream of `channels` for `key`, resuming from `last_event_id` (the
    /// `Last-Event-ID` header or `?last_event_id=`), opened at `now`. Refused when the
    /// key may not subscribe to a channel (`Forbidden`), or the id does not name one
    /// cursor per channel (`InvalidValue`). Its first bytes are the `retry:` hint.
    pub(crate) fn open(
        key: &ApiKey,
        channels: Vec<ChannelName>,
        last_event_id: Option<&str>,
        heartbeat_interval: Duration,
        retry: Duration,
        now: Instant,
    ) -> Result<Self, ErrorInfo> {
        let mut stream = Vec::with_capacity(channels.len());
        for name in channels {
            let granted = key.capabilities.granted(name.as_str());
            if !granted.contains(KeyOperation::Subscribe) {
                return Err(forbidden("subscribe to", name.as_str()));
            }
            stream.push(StreamChannel {
                name,
                cursor: Cursor::Unknown,
                granted: granted.iter().map(to_protocol_operation).collect(),
            });
        }
        if let Some(id) = last_event_id.filter(|id| !id.is_empty()) {
            let cursors: Vec<&str> = id.split(',').collect();
            if cursors.len() != stream.len() {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidValue,
                    format!(
                        "the last event id names {} positions for {} channels; it must be the id of an event of this stream (same channels, same order)",
                        cursors.len(),
                        stream.len()
                    ),
                ));
            }
            for (channel, text) in stream.iter_mut().zip(cursors) {
                channel.cursor = Cursor::parse(text).map_err(|why| {
                    ErrorInfo::new(
                        ErrorCode::InvalidValue,
                        format!("last event id, channel {:?}: {why}", channel.name.as_str()),
                    )
                })?;
            }
        }
        let index = stream
            .iter()
            .enumerate()
            .map(|(i, channel)| (channel.name.as_str().to_owned(), i))
            .collect();
        let mut session = SseSession {
            channels: stream,
            index,
            id: String::new(),
            heartbeat_interval,
            last_sent: now,
            out: Vec::with_capacity(64),
            ended: None,
        };
        session.rebuild_id();
        let _ = write!(Writer(&mut session.out), "retry: {}\n\n", retry.as_millis());
        Ok(session)
    }

    /// What to attach in the hub, one per channel, in order.
    pub(crate) fn attaches(&self) -> Vec<SseAttach> {
        self.channels
            .iter()
            .map(|channel| SseAttach {
                channel: channel.name.clone(),
                from: channel.cursor.attach_from(),
                granted: channel.granted.clone(),
            })
            .collect()
    }

    /// The stream's channels.
    pub(crate) fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.channels.iter().map(|channel| &channel.name)
    }

    /// The `id:` of an event sent now: every channel's cursor, in order.
    #[cfg(test)]
    fn event_id(&self) -> &str {
        &self.id
    }

    /// True once `event: disconnected` was written: the stream ends after the output.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// Why the server ended the stream, if it did.
    pub(crate) fn disconnect_code(&self) -> Option<ErrorCode> {
        self.ended
    }

    /// When [`SseSession::handle_tick`] has something to do.
    pub(crate) fn next_deadline(&self) -> Instant {
        self.last_sent + self.heartbeat_interval
    }

    /// The bytes to write next, if any.
    pub(crate) fn take_output(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.out)))
    }

    /// Output was handed to the transport at `now`.
    pub(crate) fn handle_sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// The clock: a `: heartbeat` comment when nothing was sent for the interval.
    pub(crate) fn handle_tick(&mut self, now: Instant) {
        if self.ended.is_none() && self.out.is_empty() && now >= self.next_deadline() {
            self.out.extend_from_slice(b": heartbeat\n\n");
        }
    }

    /// One JSON frame the hub queued (ATTACHED, MESSAGE or DETACHED) → its event.
    pub(crate) fn handle_frame(&mut self, frame: &[u8]) {
        if self.ended.is_some() {
            return;
        }
        let head: FrameHead<'_> = match serde_json::from_slice(frame) {
            Ok(head) => head,
            Err(error) => {
                // The hub encoded it: a bug here, not the client's doing.
                warn!(%error, "a frame for an SSE stream does not decode; skipped");
                return;
            }
        };
        let event = match head.kind.as_ref() {
            "MESSAGE" => "message",
            "ATTACHED" => "attached",
            "DETACHED" => "detached",
            other => {
                debug!(kind = other, "frame without an SSE event skipped");
                return;
            }
        };
        let moved = match (&head.channel, &head.position) {
            (Some(channel), Some(position)) if event != "detached" => {
                match self.index.get(channel.as_ref()) {
                    Some(&i) => {
                        self.channels[i].cursor = Cursor::At {
                            epoch: position.epoch,
                            serial: position.serial,
                        };
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        };
        if moved {
            self.rebuild_id();
        }
        // Every attached and message event names the cursors (an event without an id
        // would keep the previous one: the same, but less plain to read).
        self.write_event(event, event != "detached", frame);
        if event == "detached" {
            // A stream holds all its channels or none: the client reconnects and
            // attaches every channel again from its last event id.
            let channel = head.channel.as_deref().unwrap_or("");
            let error = head.error.unwrap_or_else(|| {
                ErrorInfo::new(
                    ErrorCode::Internal,
                    format!("channel {channel:?} was detached"),
                )
            });
            let reconnect = if error.retryable {
                Reconnect::Retry
            } else {
                Reconnect::Never
            };
            self.end(error, reconnect);
        }
    }

    /// The outbox went over its byte budget.
    pub(crate) fn handle_slow_consumer(&mut self, budget: usize) {
        self.end(
            ErrorInfo::new(
                ErrorCode::SlowConsumer,
                format!(
                    "more than {budget} bytes queued for this stream: read faster, then reconnect with the last event id"
                ),
            ),
            Reconnect::Retry,
        );
    }

    /// The edge is shutting down.
    pub(crate) fn handle_shutdown(&mut self) {
        self.end(
            ErrorInfo::new(ErrorCode::ShuttingDown, "the edge is shutting down"),
            Reconnect::Elsewhere,
        );
    }

    /// The edge is drained (out of anycast and DNS, still running).
    pub(crate) fn handle_drain(&mut self) {
        self.end(
            ErrorInfo::new(
                ErrorCode::ShuttingDown,
                "the edge is drained: reconnect elsewhere",
            ),
            Reconnect::Elsewhere,
        );
    }

    /// `event: disconnected` (data: a DISCONNECTED frame), unless the stream ended.
    fn end(&mut self, error: ErrorInfo, reconnect: Reconnect) {
        if self.ended.is_some() {
            return;
        }
        self.ended = Some(error.code);
        let frame = disconnected_frame(error, reconnect);
        self.write_event("disconnected", false, &frame);
    }

    fn write_event(&mut self, event: &str, with_id: bool, data: &[u8]) {
        let out = &mut self.out;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
        if with_id {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(self.id.as_bytes());
            out.push(b'\n');
        }
        write_data(out, data);
        out.push(b'\n');
    }

    fn rebuild_id(&mut self) {
        self.id.clear();
        for (i, channel) in self.channels.iter().enumerate() {
            if i > 0 {
                self.id.push(',');
            }
            channel.cursor.write(&mut self.id);
        }
    }
}

/// `data:` lines for `data`: compact JSON is one line, but any line break (CRLF, LF or
/// CR, as the event stream grammar reads them) starts another.
fn write_data(out: &mut Vec<u8>, data: &[u8]) {
    let mut rest = data;
    loop {
        let end = rest
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
            .unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..end]);
        out.push(b'\n');
        let skip = match rest[end..] {
            [] => return,
            [b'\r', b'\n', ..] => 2,
            _ => 1,
        };
        rest = &rest[end + skip..];
    }
}

/// A DISCONNECTED frame's JSON.
fn disconnected_frame(error: ErrorInfo, reconnect: Reconnect) -> Vec<u8> {
    tern_protocol::encode(
        Format::Json,
        &ServerFrame::Disconnected(Disconnected { error, reconnect }),
    )
}

/// `fmt::Write` into a byte buffer.
struct Writer<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The whole stream of a refusal the client should retry (too many connections, the
/// edge shutting down): a 200 stream with the `retry:` hint and `event: disconnected`,
/// because `EventSource` gives up for good on an HTTP error but reconnects after a
/// stream that ends.
fn refusal(error: ErrorInfo, reconnect: Reconnect, retry: Duration) -> HttpResponse {
    let mut bytes = format!("retry: {}\n\n", retry.as_millis()).into_bytes();
    bytes.extend_from_slice(b"event: disconnected\n");
    write_data(&mut bytes, &disconnected_frame(error, reconnect));
    bytes.push(b'\n');
    stream_response(HttpBody::full(bytes))
}

/// A 200 `text/event-stream` answer with `body`.
fn stream_response(body: HttpBody) -> HttpResponse {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Reverse proxies that buffer responses would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_cors(response)
}

/// The `retry:` hint of a new stream.
fn retry_hint() -> Duration {
    let jitter = u64::try_from(RETRY_JITTER.as_millis()).unwrap_or(u64::MAX);
    RETRY_BASE + Duration::from_millis(rand::rng().random_range(0..jitter.max(1)))
}

/// Answers `GET /v1/sse`: the checks, then a stream served by a task of its own.
pub(crate) fn open(request: &Request<Incoming>, shared: &Arc<Shared>) -> HttpResponse {
    let refused = |error| with_cors(error_response(error));
    let key = match authenticate(request, shared) {
        Ok(key) => key,
        Err(error) => return refused(error),
    };
    let limits = &shared.config.limits;
    let query = request.uri().query();
    let channels = match parse_channels(query, limits.max_channels_per_connection) {
        Ok(channels) => channels,
        Err(error) => return refused(error),
    };
    // The header (sent by EventSource when it reconnects) wins over the query
    // parameter, which a page sets once from an id it saved.
    let last_event_id = match request.headers().get("last-event-id") {
        Some(value) => match value.to_str() {
            Ok(text) => Some(Cow::Borrowed(text.trim())),
            Err(_) => {
                return refused(ErrorInfo::new(
                    ErrorCode::InvalidValue,
                    "Last-Event-ID is not ASCII",
                ));
            }
        },
        None => crate::http::query_param(query, "last_event_id").map(Cow::Owned),
    };
    let retry = retry_hint();
    let session = match SseSession::open(
        key,
        channels,
        last_event_id.as_deref(),
        limits.heartbeat_interval,
        retry,
        Instant::now(),
    ) {
        Ok(session) => session,
        Err(error) => return refused(error),
    };
    if shared.is_shutting_down() {
        return refusal(
            ErrorInfo::new(ErrorCode::ShuttingDown, "the edge is shutting down"),
            Reconnect::Elsewhere,
            retry,
        );
    }
    if shared.metrics.open_connections() >= limits.max_connections as u64 {
        shared.metrics.connection_refused_limit();
        return refusal(
            ErrorInfo::new(
                ErrorCode::TooManyConnections,
                "this edge has too many connections; try another or later",
            ),
            Reconnect::Retry,
            retry,
        );
    }
    shared.metrics.sse_opened();
    let (body, chunks) = mpsc::channel(BODY_CHUNKS);
    let conn = shared.next_conn();
    tokio::spawn(serve(session, body, Arc::clone(shared), conn));
    stream_response(HttpBody::stream(chunks))
}

/// Serves one stream until it ends.
async fn serve(session: SseSession, body: mpsc::Sender<Bytes>, shared: Arc<Shared>, conn: ConnKey) {
    let connection_id = shared.connection_id();
    let span = info_span!("sse", id = %connection_id);
    async move {
        debug!(channels = session.channels.len(), "SSE stream open");
        let reason = run(session, body, &shared, conn).await;
        shared.metrics.sse_closed(reason);
        debug!(?reason, "SSE stream closed");
    }
    .instrument(span)
    .await;
}

async fn run(
    mut session: SseSession,
    body: mpsc::Sender<Bytes>,
    shared: &Arc<Shared>,
    conn: ConnKey,
) -> CloseReason {
    let budget = shared.config.limits.outbound_queue_bytes;
    let outbox = Arc::new(Outbox::new(budget));
    for attach in session.attaches() {
        let handle = SubscriberHandle {
            conn,
            outbox: Arc::clone(&outbox),
            format: Format::Json,
        };
        shared
            .link
            .command(HubCommand::Attach {
                handle,
                channel: attach.channel,
                from: attach.from,
                granted: attach.granted,
            })
            .await;
    }
    let mut shutdown = shared.shutdown.clone();
    // The edge may have begun shutting down before this receiver was cloned.
    let mut stopped = *shutdown.borrow_and_update();
    if stopped {
        session.handle_shutdown();
    }
    // Drains before this stream began are not its concern.
    let mut drain = shared.drain.clone();
    drain.borrow_and_update();
    let mut drained = false;
    let mut pending: Option<Bytes> = None;
    let mut give_up_at: Option<tokio::time::Instant> = None;
    let gone = loop {
        if pending.is_none() {
            pending = session.take_output();
        }
        if session.is_ended() {
            if give_up_at.is_none() {
                // Nothing more is taken from the outbox: free it, refuse more pushes.
                outbox.close();
                give_up_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            if pending.is_none() {
                break false;
            }
        }
        let frames_waiting = !session.is_ended() && outbox.has_frames();
        let heartbeat_at = tokio::time::Instant::from_std(session.next_deadline());
        let give_up = give_up_at.unwrap_or(heartbeat_at);
        tokio::select! {
            biased;
            () = body.closed() => break true,
            changed = shutdown.changed(), if !stopped => {
                stopped = true;
                if changed.is_err() || *shutdown.borrow() {
                    // What is queued goes first: the client then resumes after it.
                    feed_queued(&mut session, &outbox);
                    session.handle_shutdown();
                }
            }
            changed = drain.changed(), if !drained => {
                drained = true;
                if changed.is_ok() {
                    feed_queued(&mut session, &outbox);
                    session.handle_drain();
                }
            }
            () = tokio::time::sleep_until(give_up), if give_up_at.is_some() => {
                debug!("the client did not take the last events in time");
                break false;
            }
            permit = body.reserve(), if pending.is_some() || frames_waiting => {
                let Ok(permit) = permit else { break true };
                let chunk = match pending.take() {
                    Some(chunk) => chunk,
                    None => {
                        for frame in outbox.drain_frames(WRITE_CHUNK) {
                            session.handle_frame(&frame);
                        }
                        match session.take_output() {
                            Some(chunk) => chunk,
                            None => continue,
                        }
                    }
                };
                permit.send(chunk);
                session.handle_sent(Instant::now());
            }
            () = outbox.notified() => {
                if outbox.take_overflow() {
                    session.handle_slow_consumer(budget);
                }
            }
            () = tokio::time::sleep_until(heartbeat_at), if give_up_at.is_none() => {
                session.handle_tick(Instant::now());
            }
        }
    };
    drop(body);
    shared
        .link
        .command(HubCommand::Closed {
            conn,
            channels: session.channels().cloned().collect(),
        })
        .await;
    outbox.close();
    match session.disconnect_code() {
        Some(ErrorCode::SlowConsumer) => CloseReason::SlowConsumer,
        Some(ErrorCode::ShuttingDown) => CloseReason::Shutdown,
        Some(_) => CloseReason::Refused,
        None if gone => CloseReason::Client,
        None => CloseReason::Transport,
    }
}

/// Moves every frame still queued into the session (bounded by the outbox's budget).
fn feed_queued(session: &mut SseSession, outbox: &Outbox) {
    loop {
        let frames = outbox.drain_frames(WRITE_CHUNK);
        if frames.is_empty() {
            return;
        }
        for frame in frames {
            session.handle_frame(&frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use tern_config::{Capabilities, ChannelPattern, Operations};
    use tern_protocol::{Attached, MessageFrame, Position};

    use super::*;

    fn key() -> ApiKey {
        ApiKey {
            app: "app".into(),
            key_id: "k".into(),
            secret: "0123456789abcdef0123".into(),
            capabilities: Capabilities::new([
                (
                    ChannelPattern::parse("news:*").expect("pattern"),
                    Operations::from_iter([KeyOperation::Subscribe, KeyOperation::History]),
                ),
                (
                    ChannelPattern::parse("chat:*").expect("pattern"),
                    Operations::from_iter([KeyOperation::Publish]),
                ),
            ]),
        }
    }

    fn names(list: &[&str]) -> Vec<ChannelName> {
        list.iter()
            .map(|name| ChannelName::parse(name).expect("name"))
            .collect()
    }

    fn open(channels: &[&str], id: Option<&str>, t0: Instant) -> Result<SseSession, ErrorInfo> {
        SseSession::open(
            &key(),
            names(channels),
            id,
            Duration::from_secs(15),
            Duration::from_millis(1500),
            t0,
        )
    }

    fn output(session: &mut SseSession) -> String {
        session
            .take_output()
            .map(|bytes| String::from_utf8(bytes.to_vec()).expect("utf-8"))
            .unwrap_or_default()
    }

    fn message(channel: &str, epoch: u64, serial: u64, data: &str) -> Vec<u8> {
        tern_protocol::encode(
            Format::Json,
            &ServerFrame::Message(MessageFrame {
                channel: channel.into(),
                position: Position { epoch, serial },
                message: tern_protocol::Message::new(data),
            }),
        )
    }

    fn attached(channel: &str, position: Position, error: Option<ErrorInfo>) -> Vec<u8> {
        tern_protocol::encode(
            Format::Json,
            &ServerFrame::Attached(Attached {
                channel: channel.into(),
                position: Some(position),
                resumed: error.is_none(),
                granted: vec![Operation::Subscribe],
                error,
            }),
        )
    }

    #[test]
    fn channels_are_split_then_decoded_and_checked_like_attach() {
        let parse = |query: &str| parse_channels(Some(query), 3);
        assert_eq!(
            parse("channels=news:a,news%3Ab&key=x").expect("ok"),
            names(&["news:a", "news:b"])
        );
        // A comma inside a name is %2C.
        assert_eq!(parse("channels=a%2Cb,c").expect("ok"), names(&["a,b", "c"]));
        let code = |query: &str| parse(query).expect_err("refused").code;
        assert_eq!(code("key=x"), ErrorCode::InvalidValue);
        assert_eq!(code("channels="), ErrorCode::InvalidChannel);
        assert_eq!(code("channels=a,,b"), ErrorCode::InvalidChannel);
        assert_eq!(code("channels=$system"), ErrorCode::InvalidChannel);
        assert_eq!(code("channels=a%zz"), ErrorCode::InvalidChannel);
        assert_eq!(code("channels=a,b,a"), ErrorCode::InvalidValue);
        assert_eq!(code("channels=a,b,c,d"), ErrorCode::TooManyChannels);
        assert_eq!(
            parse_channels(None, 3).expect_err("none").code,
            ErrorCode::InvalidValue
        );
    }

    #[test]
    fn opening_checks_capabilities_then_the_last_event_id() {
        let t0 = Instant::now();
        let forbidden = open(&["news:a", "chat:b"], Some("garbage"), t0).expect_err("forbidden");
        assert_eq!(forbidden.code, ErrorCode::Forbidden);
        for bad in [
            "1:2",
            "1:2,3:4,5:6",
            "1:2,x",
            "1:2,1:0",
            "1:2,+1:2",
            "1:2,1:",
            ",1:2",
        ] {
            let error = open(&["news:a", "news:b"], Some(bad), t0).expect_err(bad);
            assert_eq!(error.code, ErrorCode::InvalidValue, "{bad}");
        }
        let mut session = open(&["news:a", "news:b"], None, t0).expect("opens");
        assert_eq!(output(&mut session), "retry: 1500\n\n");
        assert_eq!(session.event_id(), "-,-");
        assert_eq!(
            session.attaches(),
            [
                SseAttach {
                    channel: names(&["news:a"])[0].clone(),
                    from: AttachFrom::Now,
                    granted: vec![Operation::Subscribe, Operation::History],
                },
                SseAttach {
                    channel: names(&["news:b"])[0].clone(),
                    from: AttachFrom::Now,
                    granted: vec![Operation::Subscribe, Operation::History],
                }
            ]
        );
    }

    #[test]
    fn a_last_event_id_resumes_every_channel_after_its_position() {
        let session = open(
            &["news:a", "news:b", "news:c"],
            Some("2:42,0:0,-"),
            Instant::now(),
        )
        .expect("opens");
        let from: Vec<AttachFrom> = session.attaches().into_iter().map(|a| a.from).collect();
        assert_eq!(
            from,
            [
                AttachFrom::After(Some(tern_link::Position {
                    epoch: Epoch(2),
                    serial: Serial::new(42).expect("non-zero"),
                })),
                AttachFrom::After(None),
                AttachFrom::Now,
            ]
        );
        assert_eq!(session.event_id(), "2:42,0:0,-");
    }

    #[test]
    fn events_carry_every_channels_position_in_the_order_of_the_request() {
        let mut session = open(&["news:a", "news:b"], None, Instant::now()).expect("opens");
        output(&mut session);
        let at = attached(
            "news:b",
            Position {
                epoch: 1,
                serial: 16,
            },
            None,
        );
        session.handle_frame(&at);
        let m = message("news:a", 1, 42, "hi");
        session.handle_frame(&m);
        let text = output(&mut session);
        let expected = format!(
            "event: attached\nid: -,1:16\ndata: {}\n\nevent: message\nid: 1:42,1:16\ndata: {}\n\n",
            String::from_utf8_lossy(&at),
            String::from_utf8_lossy(&m)
        );
        assert_eq!(text, expected);
        // Continuity lost: the attached event moves the cursor to where delivery
        // continues, and carries the error.
        let lost = ErrorInfo::new(ErrorCode::ContinuityLost, "gone");
        session.handle_frame(&attached(
            "news:a",
            Position {
                epoch: 2,
                serial: 7,
            },
            Some(lost),
        ));
        let text = output(&mut session);
        assert!(
            text.starts_with("event: attached\nid: 2:7,1:16\ndata: "),
            "{text}"
        );
        assert!(text.contains("41000"), "{text}");
        assert_eq!(session.event_id(), "2:7,1:16");
    }

    #[test]
    fn a_detached_channel_ends_the_stream_and_nothing_follows() {
        let mut session =
            open(&["news:a", "news:b"], Some("1:1,1:2"), Instant::now()).expect("opens");
        output(&mut session);
        let detached = tern_protocol::encode(
            Format::Json,
            &ServerFrame::Detached(tern_protocol::Detached {
                channel: "news:b".into(),
                error: Some(ErrorInfo::new(ErrorCode::LogTimeout, "no answer")),
            }),
        );
        session.handle_frame(&detached);
        assert!(session.is_ended());
        assert_eq!(session.disconnect_code(), Some(ErrorCode::LogTimeout));
        let text = output(&mut session);
        assert!(text.starts_with("event: detached\ndata: "), "{text}");
        assert!(
            text.contains("event: disconnected\ndata: {\"type\":\"DISCONNECTED\""),
            "{text}"
        );
        assert!(text.contains("\"reconnect\":\"retry\""), "{text}");
        assert!(!text.contains("id:"), "ids stay as they were: {text}");
        session.handle_frame(&message("news:a", 1, 2, "late"));
        session.handle_slow_consumer(10);
        session.handle_tick(Instant::now() + Duration::from_secs(3600));
        assert_eq!(output(&mut session), "");
        assert_eq!(session.event_id(), "1:1,1:2");
    }

    #[test]
    fn heartbeats_come_only_after_a_silent_interval() {
        let t0 = Instant::now();
        let mut session = open(&["news:a"], None, t0).expect("opens");
        output(&mut session);
        session.handle_sent(t0);
        assert_eq!(session.next_deadline(), t0 + Duration::from_secs(15));
        session.handle_tick(t0 + Duration::from_secs(14));
        assert_eq!(output(&mut session), "");
        session.handle_tick(t0 + Duration::from_secs(15));
        assert_eq!(output(&mut session), ": heartbeat\n\n");
        session.handle_sent(t0 + Duration::from_secs(15));
        assert_eq!(session.next_deadline(), t0 + Duration::from_secs(30));
    }

    #[test]
    fn slow_consumers_and_shutdowns_say_how_to_come_back() {
        let mut slow = open(&["news:a"], None, Instant::now()).expect("opens");
        slow.handle_slow_consumer(1024);
        let text = output(&mut slow);
        assert!(text.contains("event: disconnected\ndata: "), "{text}");
        assert!(
            text.contains("42910") && text.contains("\"retry\""),
            "{text}"
        );
        assert_eq!(slow.disconnect_code(), Some(ErrorCode::SlowConsumer));
        slow.handle_shutdown();
        assert_eq!(output(&mut slow), "", "one disconnected only");

        let mut stopping = open(&["news:a"], None, Instant::now()).expect("opens");
        stopping.handle_shutdown();
        let text = output(&mut stopping);
        assert!(
            text.contains("50301") && text.contains("\"elsewhere\""),
            "{text}"
        );
    }

    #[test]
    fn data_is_one_line_per_line_and_unknown_frames_are_skipped() {
        let mut out = Vec::new();
        write_data(&mut out, b"a\nb\r\nc\r\rd\n");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "data: a\ndata: b\ndata: c\ndata: \ndata: d\ndata: \n"
        );
        let mut session = open(&["news:a"], None, Instant::now()).expect("opens");
        output(&mut session);
        session.handle_frame(br#"{"type":"HEARTBEAT"}"#);
        session.handle_frame(b"not json");
        // A message of a channel the stream does not hold moves no cursor.
        session.handle_frame(&message("news:zz", 1, 5, "x"));
        let text = output(&mut session);
        assert!(text.starts_with("event: message\nid: -\n"), "{text}");
    }
}
