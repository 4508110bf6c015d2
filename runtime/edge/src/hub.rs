//! [`Hub`]: the edge's channel registry and fan-out (sans-IO: no sockets, no tasks).
//!
//! One upstream subscription per channel however many local subscribers it has; per
//! subscriber a cursor (the next serial it gets). The link driver feeds the hub what the
//! log sends and carries out what [`Hub::poll_output`] asks (subscribe, unsubscribe, read).
//!
//! ```text
//!  ATTACH ─▶ Waiting ──upstream Subscribed──▶ Live{next} ◀───────────────┐
//!               │                                 │ gap (serial > next)  │ caught up
//!               └─ from / rewind ─▶ Reading{next} ◀┘ ──read from log──────┘
//!  upstream Messages ─▶ encode once per format ─▶ push the same bytes to every Live
//!                       subscriber whose next == serial (skip serial < next)
//! ```
//!
//! Catch-up (ATTACH `from` or `rewind`, or a subscriber that fell behind the upstream)
//! reads from the log by serial; serials are dense per channel, so the reads and the
//! live stream join exactly: a reader turns live once its cursor reached the upstream's,
//! and from then on skips what it already read. Nothing is buffered in the hub; the log
//! is the buffer.
//!
//! Catch-up is paced by the subscriber's outbox: a read result is delivered message by
//! message only while the outbox holds less than half its budget; the rest of the
//! batch is dropped and the reader parks with its cursor. A parked reader resumes when
//! its outbox drained to a quarter of the budget (the outbox wakes the link task, see
//! [`Hub::drain_signal`]) or, for other causes (link down, failed read), on the next
//! tick. Reads ask for about as many messages as fit in the room left, judged by the
//! sizes seen so far, so a catch-up never pushes a client over its budget by itself.
//!
//! The upstream subscription of each channel is watched: a subscribe not confirmed
//! within `subscribe_timeout` is sent again (its waiting ATTACHes are answered with
//! `DETACHED{LogTimeout}` then, rather than kept waiting), and a channel the log stops
//! following on its own (`Unsubscribed` after a failed replay) is subscribed again,
//! after its last delivered position, with exponential backoff.
//!
//! Channels without subscribers linger (stay subscribed) for `linger`, at most
//! [`MAX_LINGERING`] of them: past that the ones idle longest are dropped first, so
//! ATTACH/DETACH churn cannot grow the upstream subscriptions without bound.
//!
//! When the upstream loses continuity (the log came back in a new epoch, or retention
//! removed what a resubscribe needed), every subscriber gets a fresh
//! `ATTACHED{resumed: false, error: ContinuityLost, position}` and delivery continues
//! from the log's answer: never a silent gap.
//!
//! Positions are cursors: delivery continues right after one. `None` is the cursor
//! before a channel's first message, which ATTACHED writes `0:0`, so ATTACHED always
//! names a position a client can re-attach from.
//!
//! Resume checks (`from = p`): the first read starts at `p.serial`. The position is
//! honoured when the log holds `p` itself, or (retention removed `p`) the message right
//! after it in the same epoch. `from = 0:0` reads from serial 1 with no position to
//! verify: honoured when serial 1 is still stored. Otherwise continuity is lost: when
//! retention removed messages after `p`, delivery starts at the first stored one
//! (ATTACHED.position is the position just before it, in its epoch); when `p` was
//! replaced by another epoch or lies beyond the log's end, delivery starts at the live
//! point.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_config::LinkClientConfig;
use tern_link::{ChannelName, Continuity, Epoch, Position, Serial, StoredMessage, SubscribeFrom};
use tern_log::ReadResult;
use tern_protocol::{
    Attached, Detached, ErrorCode, ErrorInfo, Format, MessageFrame, Operation, ServerFrame,
};

use crate::convert::{to_client_cursor, to_client_message, to_client_position};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::session::AttachFrom;
use tokio::sync::Notify;

/// Egress message functions, as the hub sees them: run once per message per edge
/// before fan-out (and on catch-up reads). Implemented by the edge's functions.
pub(crate) trait Egress: Send + Sync + std::fmt::Debug {
    /// Whether any egress function is bound (checked first, without locks).
    fn is_active(&self) -> bool;
    /// What to deliver for `stored`.
    fn apply(&self, channel: &ChannelName, stored: &StoredMessage) -> EgressOutcome;
}

/// What egress functions made of a message.
#[derive(Debug)]
pub(crate) enum EgressOutcome {
    /// Deliver it as stored.
    Deliver,
    /// Deliver this instead (same position).
    Replace(StoredMessage),
    /// Deliver nothing; cursors move past it.
    Skip,
}

/// Identifies a connection inside the edge (not the protocol's connection id).
pub(crate) type ConnKey = u64;

/// Most channels kept subscribed upstream without a local subscriber (lingering)
/// across the edge; past it the ones idle longest are unsubscribed first.
pub(crate) const MAX_LINGERING: usize = 10_000;

/// The frame size assumed for a subscriber's first catch-up read, before any size was
/// seen (sets how many messages that read asks for).
const FIRST_READ_FRAME_GUESS: usize = 4 * 1024;

/// Hub settings.
#[derive(Clone, Debug)]
pub(crate) struct HubConfig {
    /// How long a channel without subscribers stays subscribed upstream.
    pub(crate) linger: Duration,
    /// Most lingering channels (see [`MAX_LINGERING`]).
    pub(crate) max_lingering: usize,
    /// Most messages per catch-up read.
    pub(crate) read_batch: u32,
    /// How long an upstream subscribe may go unconfirmed before it is sent again.
    pub(crate) subscribe_timeout: Duration,
    /// First and longest pause before resubscribing a channel the log dropped.
    pub(crate) retry_min: Duration,
    /// See `retry_min`.
    pub(crate) retry_max: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_secs(5),
            max_lingering: MAX_LINGERING,
            read_batch: 256,
            subscribe_timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
        }
    }
}

impl HubConfig {
    /// The defaults, with the link's timeout and backoff.
    pub(crate) fn for_link(link: &LinkClientConfig) -> Self {
        Self {
            subscribe_timeout: link.request_timeout,
            retry_min: link.reconnect_min,
            retry_max: link.reconnect_max,
            ..Self::default()
        }
    }
}

/// What the hub asks the link driver to do.
#[derive(Debug, PartialEq)]
pub(crate) enum HubOutput {
    /// Follow `channel` upstream from `from` (on the edge's subscription stream).
    Subscribe {
        channel: ChannelName,
        from: SubscribeFrom,
    },
    /// Stop following `channel` upstream.
    Unsubscribe { channel: ChannelName },
    /// Read `channel` from `from` for one subscriber; answer with
    /// [`Hub::handle_read_result`] quoting `conn` and `generation`.
    Read {
        channel: ChannelName,
        conn: ConnKey,
        generation: u64,
        from: ReadFrom,
        limit: u32,
    },
}

/// Where a catch-up read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadFrom {
    /// At this serial.
    Serial(Serial),
    /// At the first message stored at or after this time (ms since the Unix epoch).
    Since(u64),
}

/// A subscriber being attached: where its frames go.
#[derive(Clone, Debug)]
pub(crate) struct SubscriberHandle {
    pub(crate) conn: ConnKey,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ReadPhase {
    /// First read of a resume from this cursor (`None`: from the first message).
    Verify(Option<Position>),
    /// First read of a rewind that starts at this serial.
    Rewind(Serial),
    /// First read of a rewind to the messages stored since this time (ms since the
    /// Unix epoch).
    Since(u64),
    /// Catching up.
    Continue,
}

#[derive(Debug)]
enum SubState {
    /// Waiting for the upstream subscription.
    Waiting(AttachFrom),
    /// Reading from the log; `in_flight` false means parked (link down, outbox full,
    /// read failed) in [`Hub::parked`].
    Reading {
        phase: ReadPhase,
        next: Serial,
        in_flight: bool,
    },
    /// Fed by the upstream.
    Live { next: Serial },
    /// The upstream never confirmed the subscription; DETACHED{LogTimeout} was sent.
    /// Kept until the session detaches, re-attaches or closes.
    Refused,
}

#[derive(Debug)]
struct Sub {
    handle: SubscriberHandle,
    granted: Vec<Operation>,
    generation: u64,
    state: SubState,
    /// Average encoded MESSAGE frame size seen by its catch-up reads (0: none yet).
    frame_bytes: usize,
}

impl Sub {
    fn send(&self, frame: &ServerFrame) -> bool {
        self.handle.outbox.push(Bytes::from(tern_protocol::encode(
            self.handle.format,
            frame,
        )))
    }
}

#[derive(Debug, Default)]
struct Channel {
    /// True once the upstream answered the current subscribe.
    subscribed: bool,
    /// The serial the upstream delivers next (None before its first answer).
    next: Option<Serial>,
    /// The position assigned to `next - 1`: the last message the upstream delivered
    /// or the one it named. `None` exactly when `next` is 1 (or not known yet).
    last: Option<Position>,
    subs: HashMap<ConnKey, Sub>,
    /// When the last subscriber left.
    idle_since: Option<Instant>,
    /// Since when the current subscribe is unconfirmed (set by the tick).
    pending_since: Option<Instant>,
    /// When to send the subscribe again (after the log dropped the channel).
    retry_at: Option<Instant>,
    /// Subscribes that failed in a row (for the backoff).
    failures: u32,
}

impl Channel {
    fn subscribe_from(&self) -> SubscribeFrom {
        match (self.next, self.last) {
            (None, _) => SubscribeFrom::Latest,
            (Some(_), Some(last)) => SubscribeFrom::After(last),
            (Some(_), None) => SubscribeFrom::Start,
        }
    }
}

/// A catch-up reader waiting to read again.
#[derive(Debug)]
struct Parked {
    channel: ChannelName,
    conn: ConnKey,
    generation: u64,
}

/// The channel registry. See the module docs.
#[derive(Debug)]
pub(crate) struct Hub {
    config: HubConfig,
    metrics: Arc<Metrics>,
    channels: HashMap<ChannelName, Channel>,
    link_up: bool,
    next_generation: u64,
    outputs: VecDeque<HubOutput>,
    /// Readers parked; entries whose reader moved on are skipped.
    parked: Vec<Parked>,
    /// Handed to the outboxes of readers parked for room; signalled when one drained.
    drained: Arc<Notify>,
    /// Channels whose subscribe is not confirmed yet (may hold confirmed or dropped
    /// ones; the tick clears them).
    unconfirmed: HashSet<ChannelName>,
    /// Channels that became idle, oldest first, with when (stale entries skipped).
    lingering: VecDeque<(ChannelName, Instant)>,
    /// How many channels are idle.
    lingering_count: usize,
    /// Egress functions, if the edge runs any.
    egress: Option<Arc<dyn Egress>>,
}

impl Hub {
    pub(crate) fn new(config: HubConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            metrics,
            channels: HashMap::new(),
            link_up: false,
            next_generation: 1,
            outputs: VecDeque::new(),
            parked: Vec::new(),
            drained: Arc::new(Notify::new()),
            unconfirmed: HashSet::new(),
            lingering: VecDeque::new(),
            lingering_count: 0,
            egress: None,
        }
    }

    /// Runs `egress` on every message before it is delivered.
    pub(crate) fn with_egress(mut self, egress: Arc<dyn Egress>) -> Self {
        self.egress = Some(egress);
        self
    }

    /// Signalled when the outbox of a reader parked for room drained: then call
    /// [`Hub::handle_drained`].
    pub(crate) fn drain_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.drained)
    }

    /// Some parked reader's outbox drained: readers with room read again.
    pub(crate) fn handle_drained(&mut self) {
        self.resume_parked();
    }

    /// The next thing for the link driver to do.
    pub(crate) fn poll_output(&mut self) -> Option<HubOutput> {
        self.outputs.pop_front()
    }

    /// A session attached (or re-attached) `channel`.
    pub(crate) fn handle_attach(
        &mut self,
        handle: SubscriberHandle,
        channel: ChannelName,
        from: AttachFrom,
        granted: Vec<Operation>,
    ) {
        let generation = self.generation();
        let link_up = self.link_up;
        let channel_state = self.channels.entry(channel.clone()).or_insert_with(|| {
            if link_up {
                self.outputs.push_back(HubOutput::Subscribe {
                    channel: channel.clone(),
                    from: SubscribeFrom::Latest,
                });
                self.unconfirmed.insert(channel.clone());
            }
            Channel::default()
        });
        if channel_state.idle_since.take().is_some() {
            self.lingering_count -= 1;
        }
        let conn = handle.conn;
        channel_state.subs.insert(
            conn,
            Sub {
                handle,
                granted,
                generation,
                state: SubState::Waiting(from),
                frame_bytes: 0,
            },
        );
        self.metrics.set_channels(self.channels.len());
        if self.channels[&channel].subscribed {
            self.start(&channel, conn);
        }
    }

    /// A session detached `channel` (asked for, or refused with `error`): DETACHED
    /// follows whatever was sent for the channel before.
    pub(crate) fn handle_detach(
        &mut self,
        now: Instant,
        conn: ConnKey,
        channel: &ChannelName,
        error: Option<ErrorInfo>,
    ) {
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        if let Some(sub) = state.subs.remove(&conn) {
            sub.send(&ServerFrame::Detached(Detached {
                channel: channel.to_string(),
                error,
            }));
        }
        if state.subs.is_empty() && state.idle_since.is_none() {
            self.went_idle(channel, now);
        }
    }

    /// A connection ended: it leaves every channel in `channels` silently.
    pub(crate) fn handle_connection_closed<'a>(
        &mut self,
        now: Instant,
        conn: ConnKey,
        channels: impl IntoIterator<Item = &'a ChannelName>,
    ) {
        for channel in channels {
            if let Some(state) = self.channels.get_mut(channel) {
                state.subs.remove(&conn);
                if state.subs.is_empty() && state.idle_since.is_none() {
                    self.went_idle(channel, now);
                }
            }
        }
    }

    /// `channel` (held) lost its last subscriber at `now`: it lingers, and the
    /// channels idle longest go when too many linger.
    fn went_idle(&mut self, channel: &ChannelName, now: Instant) {
        if let Some(state) = self.channels.get_mut(channel) {
            state.idle_since = Some(now);
            self.lingering_count += 1;
            self.lingering.push_back((channel.clone(), now));
        }
        while self.lingering_count > self.config.max_lingering {
            let Some((name, since)) = self.lingering.pop_front() else {
                break;
            };
            self.drop_if_idle_since(&name, since);
        }
        if self.lingering.len() > 2 * self.lingering_count + 1024 {
            // Churn left stale entries behind: keep the live ones.
            let channels = &self.channels;
            self.lingering.retain(|(name, since)| {
                channels
                    .get(name)
                    .is_some_and(|state| state.idle_since == Some(*since))
            });
        }
        self.metrics.set_channels(self.channels.len());
    }

    /// Drops `channel` (and its upstream subscription) if it is still idle since
    /// `since`; true if it was dropped.
    fn drop_if_idle_since(&mut self, channel: &ChannelName, since: Instant) -> bool {
        let idle = self
            .channels
            .get(channel)
            .is_some_and(|state| state.subs.is_empty() && state.idle_since == Some(since));
        if !idle {
            return false;
        }
        self.channels.remove(channel);
        self.lingering_count -= 1;
        if self.link_up {
            self.outputs.push_back(HubOutput::Unsubscribe {
                channel: channel.clone(),
            });
        }
        true
    }

    /// The link (or a new subscription stream) is up: every channel is subscribed again
    /// from the last position delivered.
    pub(crate) fn handle_link_up(&mut self) {
        self.link_up = true;
        for (channel, state) in &mut self.channels {
            state.subscribed = false;
            state.pending_since = None;
            state.retry_at = None;
            self.outputs.push_back(HubOutput::Subscribe {
                channel: channel.clone(),
                from: state.subscribe_from(),
            });
            self.unconfirmed.insert(channel.clone());
        }
    }

    /// The link (or the subscription stream) is down.
    pub(crate) fn handle_link_down(&mut self) {
        self.link_up = false;
        for state in self.channels.values_mut() {
            state.subscribed = false;
        }
    }

    /// The upstream answered a subscribe of `channel`.
    pub(crate) fn handle_subscribed(
        &mut self,
        channel: &ChannelName,
        next_serial: Serial,
        previous: Option<Position>,
        continuity: Continuity,
    ) {
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        // The log names the position assigned before `next_serial` whenever
        // `next_serial` > 1. Should a log not (an older one did not after a gap it
        // found mid-stream), name it in the epoch of the last position known (epoch 0,
        // which no log assigns, when none is): a client resuming from it is checked by
        // the log, never continued on trust, so a wrong epoch costs an explicit break,
        // not a gap.
        let previous = previous.or_else(|| {
            let serial = Serial::new(next_serial.get() - 1)?;
            let epoch = state.last.map_or(Epoch(0), |last| last.epoch);
            Some(Position { epoch, serial })
        });
        state.subscribed = true;
        state.pending_since = None;
        state.retry_at = None;
        state.next = Some(next_serial);
        state.last = previous;
        if let Continuity::Lost { reason } = continuity {
            self.metrics.continuity_lost();
            let error = ErrorInfo::new(
                ErrorCode::ContinuityLost,
                format!("continuity lost: {reason}"),
            );
            for sub in state.subs.values_mut() {
                if matches!(sub.state, SubState::Waiting(_) | SubState::Refused) {
                    continue;
                }
                sub.generation = self.next_generation;
                self.next_generation += 1;
                sub.state = SubState::Live { next: next_serial };
                sub.send(&attached(
                    channel,
                    previous,
                    false,
                    &sub.granted,
                    Some(error.clone()),
                ));
            }
        }
        let waiting: Vec<ConnKey> = state
            .subs
            .iter()
            .filter(|(_, sub)| matches!(sub.state, SubState::Waiting(_)))
            .map(|(conn, _)| *conn)
            .collect();
        for conn in waiting {
            self.start(channel, conn);
        }
    }

    /// The upstream stopped following `channel`. Expected after [`HubOutput::Unsubscribe`]
    /// (the channel is gone then, or waits for a newer subscribe); otherwise the log
    /// dropped it (a replay failed): it is subscribed again after the last delivered
    /// position, after a pause that doubles with each failure in a row.
    pub(crate) fn handle_unsubscribed(&mut self, now: Instant, channel: &ChannelName) {
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        if !state.subscribed {
            return;
        }
        state.subscribed = false;
        state.failures = state.failures.saturating_add(1);
        let exp = (state.failures - 1).min(20);
        let pause = self
            .config
            .retry_min
            .saturating_mul(1 << exp)
            .min(self.config.retry_max);
        tracing::warn!(%channel, ?pause, "the log stopped following a channel; subscribing again");
        state.retry_at = Some(now + pause);
        state.pending_since = None;
        self.unconfirmed.insert(channel.clone());
    }

    /// Durable messages of `channel` from the upstream, in serial order.
    pub(crate) fn handle_messages(&mut self, channel: &ChannelName, messages: &[StoredMessage]) {
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        if !state.subscribed {
            // From a subscription that was replaced; the new one delivers them again.
            return;
        }
        // Delivering: the subscription works (ends the backoff of earlier failures).
        state.failures = 0;
        let egress = self.egress.clone();
        let mut delivered = 0;
        for stored in messages {
            let serial = stored.position.serial;
            if state.next.is_some_and(|next| serial < next) {
                continue;
            }
            state.next = Some(serial.next());
            state.last = Some(stored.position);
            let mut frame = None;
            let mut encoded: [Option<Bytes>; 2] = [None, None];
            for (conn, sub) in &mut state.subs {
                let SubState::Live { next } = &mut sub.state else {
                    continue;
                };
                if serial < *next {
                    continue;
                }
                if serial > *next {
                    // The upstream skipped serials this subscriber lacks: read them.
                    let from = *next;
                    sub.state = SubState::Reading {
                        phase: ReadPhase::Continue,
                        next: from,
                        in_flight: true,
                    };
                    self.outputs.push_back(HubOutput::Read {
                        channel: channel.clone(),
                        conn: *conn,
                        generation: sub.generation,
                        from: ReadFrom::Serial(from),
                        limit: read_limit(sub, self.config.read_batch),
                    });
                    continue;
                }
                *next = serial.next();
                let Some(frame) =
                    frame.get_or_insert_with(|| frame_for(egress.as_deref(), channel, stored))
                else {
                    // An egress function dropped it: the cursor moves past it.
                    continue;
                };
                let slot = match sub.handle.format {
                    Format::Json => 0,
                    Format::MsgPack => 1,
                };
                let bytes = encoded[slot].get_or_insert_with(|| {
                    Bytes::from(tern_protocol::encode(sub.handle.format, frame))
                });
                if sub.handle.outbox.push(bytes.clone()) {
                    delivered += 1;
                }
            }
        }
        self.metrics.delivered(delivered);
    }

    /// The answer to a [`HubOutput::Read`].
    pub(crate) fn handle_read_result(
        &mut self,
        channel: &ChannelName,
        conn: ConnKey,
        generation: u64,
        result: Result<ReadResult, String>,
    ) {
        let read_batch = self.config.read_batch;
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        let (upstream_next, upstream_last, subscribed) = (state.next, state.last, state.subscribed);
        let Some(sub) = state.subs.get_mut(&conn) else {
            return;
        };
        if sub.generation != generation {
            return;
        }
        let SubState::Reading { phase, next, .. } = sub.state else {
            return;
        };
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                tracing::debug!(%channel, conn, %error, "catch-up read failed; retrying later");
                sub.state = SubState::Reading {
                    phase,
                    next,
                    in_flight: false,
                };
                self.parked.push(Parked {
                    channel: channel.clone(),
                    conn,
                    generation,
                });
                return;
            }
        };
        let messages = &result.messages[..];
        let live_point = upstream_next.unwrap_or(next);
        // What to send first, which messages to deliver, and where to continue.
        let (skip, go_live) = match phase {
            ReadPhase::Continue => (0, false),
            ReadPhase::Verify(p) => match messages.first() {
                Some(m) if Some(m.position) == p => {
                    sub.send(&attached(channel, p, true, &sub.granted, None));
                    (1, false)
                }
                Some(m)
                    if m.position.serial == after(p)
                        && p.is_none_or(|p| m.position.epoch == p.epoch) =>
                {
                    sub.send(&attached(channel, p, true, &sub.granted, None));
                    (0, false)
                }
                Some(m) if m.position.serial >= after(p) => {
                    let error = lost(format!(
                        "messages after {} are no longer stored; delivery continues at {}",
                        to_client_cursor(p),
                        m.position
                    ));
                    let before = position_before(m.position);
                    sub.send(&attached(channel, before, false, &sub.granted, Some(error)));
                    (0, false)
                }
                Some(m) => {
                    let error = lost(format!(
                        "{} was replaced by {} in the log's history; delivery continues with new messages",
                        to_client_cursor(p),
                        m.position
                    ));
                    sub.send(&attached(
                        channel,
                        upstream_last,
                        false,
                        &sub.granted,
                        Some(error),
                    ));
                    (0, true)
                }
                None => {
                    let error = lost(match p {
                        Some(p) => format!(
                            "{p} is beyond the log's last position; delivery continues with new messages"
                        ),
                        None => "no message of the channel is stored any more; delivery continues with new messages".to_owned(),
                    });
                    sub.send(&attached(
                        channel,
                        upstream_last,
                        false,
                        &sub.granted,
                        Some(error),
                    ));
                    (0, true)
                }
            },
            ReadPhase::Rewind(start) => match messages.first() {
                Some(m) if m.position.serial < start => {
                    sub.send(&attached(
                        channel,
                        Some(m.position),
                        false,
                        &sub.granted,
                        None,
                    ));
                    (1, false)
                }
                Some(m) => {
                    let before = position_before(m.position);
                    sub.send(&attached(channel, before, false, &sub.granted, None));
                    (0, false)
                }
                None => {
                    sub.send(&attached(channel, upstream_last, false, &sub.granted, None));
                    (0, true)
                }
            },
            // The first message stored since then, or nothing was: live from here.
            ReadPhase::Since(_) => match messages.first() {
                Some(m) => {
                    let before = position_before(m.position);
                    sub.send(&attached(channel, before, false, &sub.granted, None));
                    (0, false)
                }
                None => {
                    sub.send(&attached(channel, upstream_last, false, &sub.granted, None));
                    (0, true)
                }
            },
        };
        if go_live {
            sub.state = SubState::Live { next: live_point };
            return;
        }
        let mut next = match (phase, messages.get(skip)) {
            (ReadPhase::Continue, _) => next,
            (_, Some(first)) => first.position.serial,
            (ReadPhase::Verify(p), None) => after(p),
            (ReadPhase::Rewind(start), None) => start,
            (ReadPhase::Since(_), None) => next,
        };
        let egress = self.egress.clone();
        // Deliver while the outbox is under half its budget (counted here, one lock:
        // the driver only takes bytes away meanwhile); the rest is read again later.
        let outbox = Arc::clone(&sub.handle.outbox);
        let half = outbox.budget() / 2;
        let mut queued = outbox.queued_bytes();
        let mut full = false;
        let (mut sent, mut sent_bytes) = (0usize, 0usize);
        for stored in &messages[skip.min(messages.len())..] {
            if stored.position.serial < next {
                continue;
            }
            if queued >= half {
                full = true;
                break;
            }
            let Some(frame) = frame_for(egress.as_deref(), channel, stored) else {
                next = stored.position.serial.next();
                continue;
            };
            let bytes = Bytes::from(tern_protocol::encode(sub.handle.format, &frame));
            let len = bytes.len();
            if !outbox.push(bytes) {
                return;
            }
            next = stored.position.serial.next();
            queued += len;
            sent += 1;
            sent_bytes += len;
        }
        if let Some(average) = sent_bytes.checked_div(sent) {
            sub.frame_bytes = average;
            self.metrics
                .delivered(u64::try_from(sent).unwrap_or(u64::MAX));
        }
        if full || result.more || !subscribed || next < live_point {
            let in_flight = !full && subscribed;
            sub.state = SubState::Reading {
                phase: ReadPhase::Continue,
                next,
                in_flight,
            };
            if in_flight {
                let limit = read_limit(sub, read_batch);
                self.outputs.push_back(HubOutput::Read {
                    channel: channel.clone(),
                    conn,
                    generation,
                    from: ReadFrom::Serial(next),
                    limit,
                });
            } else {
                if full {
                    outbox.wake_when_drained(&self.drained);
                }
                self.parked.push(Parked {
                    channel: channel.clone(),
                    conn,
                    generation,
                });
            }
        } else {
            sub.state = SubState::Live { next };
        }
    }

    /// Time passes: channels idle past the linger are dropped upstream, unconfirmed
    /// subscribes are sent again, parked catch-up reads are retried.
    pub(crate) fn handle_tick(&mut self, now: Instant) {
        let linger = self.config.linger;
        while let Some((channel, since)) = self.lingering.front().cloned() {
            let still_idle = self
                .channels
                .get(&channel)
                .is_some_and(|state| state.idle_since == Some(since));
            if still_idle && now.saturating_duration_since(since) < linger {
                break;
            }
            self.lingering.pop_front();
            self.drop_if_idle_since(&channel, since);
        }
        self.metrics.set_channels(self.channels.len());
        if !self.link_up {
            return;
        }
        self.check_subscribes(now);
        self.resume_parked();
    }

    /// Sends again the subscribes due for it; answers the ATTACHes waiting on one
    /// that timed out.
    fn check_subscribes(&mut self, now: Instant) {
        let timeout = self.config.subscribe_timeout;
        let mut refused = Vec::new();
        let channels = &mut self.channels;
        let outputs = &mut self.outputs;
        self.unconfirmed.retain(|channel| {
            let Some(state) = channels.get_mut(channel) else {
                return false;
            };
            if state.subscribed {
                return false;
            }
            let resend = match (state.retry_at, state.pending_since) {
                (Some(at), _) => now >= at,
                (None, None) => {
                    state.pending_since = Some(now);
                    false
                }
                (None, Some(since)) if now.saturating_duration_since(since) >= timeout => {
                    tracing::warn!(%channel, ?timeout, "the log did not confirm a subscribe; sending it again");
                    state.failures = state.failures.saturating_add(1);
                    refused.push(channel.clone());
                    true
                }
                (None, Some(_)) => false,
            };
            if resend {
                state.retry_at = None;
                state.pending_since = Some(now);
                outputs.push_back(HubOutput::Subscribe {
                    channel: channel.clone(),
                    from: state.subscribe_from(),
                });
            }
            true
        });
        for channel in refused {
            let Some(state) = self.channels.get_mut(&channel) else {
                continue;
            };
            let error = ErrorInfo::new(
                ErrorCode::LogTimeout,
                format!(
                    "the log did not confirm following {channel} within {timeout:?}; attach again"
                ),
            );
            for sub in state.subs.values_mut() {
                if matches!(sub.state, SubState::Waiting(_)) {
                    sub.state = SubState::Refused;
                    sub.send(&ServerFrame::Detached(Detached {
                        channel: channel.to_string(),
                        error: Some(error.clone()),
                    }));
                }
            }
        }
    }

    /// Parked readers whose channel is subscribed and whose outbox has room read
    /// again; the others stay parked (those short of room wait for their outbox).
    fn resume_parked(&mut self) {
        if !self.link_up {
            return;
        }
        let read_batch = self.config.read_batch;
        for parked in std::mem::take(&mut self.parked) {
            let Some(state) = self.channels.get_mut(&parked.channel) else {
                continue;
            };
            let subscribed = state.subscribed;
            let Some(sub) = state.subs.get_mut(&parked.conn) else {
                continue;
            };
            if sub.generation != parked.generation {
                continue;
            }
            let SubState::Reading {
                phase,
                next,
                in_flight: false,
            } = sub.state
            else {
                continue;
            };
            let outbox = &sub.handle.outbox;
            if !subscribed || outbox.queued_bytes() >= outbox.budget() / 2 {
                if subscribed {
                    outbox.wake_when_drained(&self.drained);
                }
                self.parked.push(parked);
                continue;
            }
            sub.state = SubState::Reading {
                phase,
                next,
                in_flight: true,
            };
            let limit = read_limit(sub, read_batch);
            self.outputs.push_back(HubOutput::Read {
                channel: parked.channel,
                conn: parked.conn,
                generation: parked.generation,
                from: read_start(phase, next),
                limit,
            });
        }
    }

    /// Starts delivery for a subscriber whose channel is subscribed upstream.
    fn start(&mut self, channel: &ChannelName, conn: ConnKey) {
        let read_batch = self.config.read_batch;
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        let (Some(next), last) = (state.next, state.last) else {
            return;
        };
        let Some(sub) = state.subs.get_mut(&conn) else {
            return;
        };
        let SubState::Waiting(from) = sub.state else {
            return;
        };
        let phase = match from {
            // Already there (for `0:0`: the channel has no message yet).
            AttachFrom::After(p) if p == last => {
                sub.send(&attached(channel, p, true, &sub.granted, None));
                sub.state = SubState::Live { next };
                return;
            }
            AttachFrom::After(p) => ReadPhase::Verify(p),
            AttachFrom::Rewind(n) => {
                let start = next.get().saturating_sub(u64::from(n)).max(1);
                match Serial::new(start).filter(|start| *start < next) {
                    Some(start) => ReadPhase::Rewind(start),
                    None => {
                        sub.send(&attached(channel, last, false, &sub.granted, None));
                        sub.state = SubState::Live { next };
                        return;
                    }
                }
            }
            AttachFrom::Since(since_ms) => ReadPhase::Since(since_ms),
            AttachFrom::Now => {
                sub.send(&attached(channel, last, false, &sub.granted, None));
                sub.state = SubState::Live { next };
                return;
            }
        };
        sub.state = SubState::Reading {
            phase,
            next,
            in_flight: true,
        };
        let limit = read_limit(sub, read_batch);
        self.outputs.push_back(HubOutput::Read {
            channel: channel.clone(),
            conn,
            generation: sub.generation,
            from: read_start(phase, next),
            limit,
        });
    }

    fn generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }
}

/// How many messages `sub`'s next read asks for: about what fits in the room left
/// under half its outbox budget, judged by the frame sizes it saw (1 to `read_batch`).
fn read_limit(sub: &Sub, read_batch: u32) -> u32 {
    let outbox = &sub.handle.outbox;
    let room = (outbox.budget() / 2).saturating_sub(outbox.queued_bytes());
    let frame = if sub.frame_bytes == 0 {
        FIRST_READ_FRAME_GUESS
    } else {
        sub.frame_bytes
    };
    u32::try_from(room / frame.max(1))
        .unwrap_or(u32::MAX)
        .clamp(1, read_batch)
}

/// Where a read of `phase` starts.
fn read_start(phase: ReadPhase, next: Serial) -> ReadFrom {
    match phase {
        // `p` itself, to check it is still the log's; from 1 for `0:0`.
        ReadPhase::Verify(p) => ReadFrom::Serial(p.map_or(Serial::FIRST, |p| p.serial)),
        // One before the start, to learn the position ATTACHED reports.
        ReadPhase::Rewind(start) => ReadFrom::Serial(Serial::new(start.get() - 1).unwrap_or(start)),
        ReadPhase::Since(since_ms) => ReadFrom::Since(since_ms),
        ReadPhase::Continue => ReadFrom::Serial(next),
    }
}

/// The serial right after `cursor` (1 for the cursor before the first message).
fn after(cursor: Option<Position>) -> Serial {
    cursor.map_or(Serial::FIRST, |p| p.serial.next())
}

/// The position right before `position`, in its epoch (None before serial 1).
fn position_before(position: Position) -> Option<Position> {
    Serial::new(position.serial.get() - 1).map(|serial| Position {
        epoch: position.epoch,
        serial,
    })
}

fn lost(reason: String) -> ErrorInfo {
    ErrorInfo::new(
        ErrorCode::ContinuityLost,
        format!("continuity lost: {reason}"),
    )
}

/// ATTACHED naming `position` as the cursor delivery continues after (`0:0` for
/// `None`, before the channel's first message).
fn attached(
    channel: &ChannelName,
    position: Option<Position>,
    resumed: bool,
    granted: &[Operation],
    error: Option<ErrorInfo>,
) -> ServerFrame {
    ServerFrame::Attached(Attached {
        channel: channel.to_string(),
        position: Some(to_client_cursor(position)),
        resumed,
        granted: granted.to_vec(),
        error,
    })
}

/// The MESSAGE for `stored` after the egress functions (if any are bound); `None`
/// when one dropped it.
fn frame_for(
    egress: Option<&dyn Egress>,
    channel: &ChannelName,
    stored: &StoredMessage,
) -> Option<ServerFrame> {
    match egress.filter(|e| e.is_active()) {
        None => Some(message_frame(channel, stored)),
        Some(egress) => match egress.apply(channel, stored) {
            EgressOutcome::Deliver => Some(message_frame(channel, stored)),
            EgressOutcome::Replace(replaced) => Some(message_frame(channel, &replaced)),
            EgressOutcome::Skip => None,
        },
    }
}

fn message_frame(channel: &ChannelName, stored: &StoredMessage) -> ServerFrame {
    ServerFrame::Message(MessageFrame {
        channel: channel.to_string(),
        position: to_client_position(stored.position),
        message: to_client_message(stored),
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tern_link::Epoch;

    use super::*;

    fn serial(n: u64) -> Serial {
        Serial::new(n).expect("non-zero in tests")
    }

    fn pos(epoch: u64, n: u64) -> Position {
        Position {
            epoch: Epoch(epoch),
            serial: serial(n),
        }
    }

    fn stored(epoch: u64, n: u64) -> StoredMessage {
        StoredMessage {
            position: pos(epoch, n),
            timestamp_ms: 1,
            idempotency_key: Bytes::from(format!("k{n}")),
            headers: vec![],
            payload: Bytes::from(format!("m{n}")),
        }
    }

    fn stored_range(epoch: u64, from: u64, to: u64) -> Vec<StoredMessage> {
        (from..=to).map(|n| stored(epoch, n)).collect()
    }

    fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).expect("valid")
    }

    fn hub() -> Hub {
        let mut hub = Hub::new(
            HubConfig {
                linger: Duration::from_secs(1),
                read_batch: 3,
                ..HubConfig::default()
            },
            Arc::new(Metrics::default()),
        );
        hub.handle_link_up();
        hub
    }

    fn subscriber(conn: ConnKey, format: Format) -> SubscriberHandle {
        SubscriberHandle {
            conn,
            outbox: Arc::new(Outbox::new(1 << 20)),
            format,
        }
    }

    fn outputs(hub: &mut Hub) -> Vec<HubOutput> {
        std::iter::from_fn(|| hub.poll_output()).collect()
    }

    /// Every frame queued for `sub`, decoded.
    fn frames(sub: &SubscriberHandle) -> Vec<ServerFrame> {
        sub.outbox
            .drain_frames(usize::MAX)
            .iter()
            .flat_map(|bytes| {
                tern_protocol::decode::<ServerFrame>(sub.format, bytes).expect("decodes")
            })
            .map(|frame| frame.expect("frame decodes"))
            .collect()
    }

    fn serials(frames: &[ServerFrame]) -> Vec<u64> {
        frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Message(m) => Some(m.position.serial),
                _ => None,
            })
            .collect()
    }

    fn attached_of(frames: &[ServerFrame]) -> &Attached {
        match frames.first() {
            Some(ServerFrame::Attached(a)) => a,
            other => panic!("expected ATTACHED first, got {other:?}"),
        }
    }

    /// A hub following "ch" whose last message is (7, last).
    fn live_hub(last: u64) -> Hub {
        let mut hub = hub();
        hub.handle_attach(
            subscriber(100, Format::Json),
            channel("ch"),
            AttachFrom::Now,
            vec![],
        );
        assert_eq!(
            outputs(&mut hub),
            [HubOutput::Subscribe {
                channel: channel("ch"),
                from: SubscribeFrom::Latest
            }]
        );
        hub.handle_subscribed(
            &channel("ch"),
            serial(last + 1),
            Some(pos(7, last)),
            Continuity::Kept,
        );
        hub
    }

    /// The one output, a read: (conn, generation, from, limit).
    fn one_read(hub: &mut Hub) -> (ConnKey, u64, Serial, u32) {
        match outputs(hub).as_slice() {
            [
                HubOutput::Read {
                    conn,
                    generation,
                    from: ReadFrom::Serial(from),
                    limit,
                    ..
                },
            ] => (*conn, *generation, *from, *limit),
            other => panic!("expected one read, got {other:?}"),
        }
    }

    fn read(result: Vec<StoredMessage>, more: bool) -> Result<ReadResult, String> {
        Ok(ReadResult {
            messages: result,
            first_serial: Some(Serial::FIRST),
            more,
            last: None,
        })
    }

    #[test]
    fn one_upstream_subscription_and_one_encoding_per_format() {
        let mut hub = hub();
        let subs: Vec<_> = (0..4)
            .map(|i| subscriber(i, if i < 3 { Format::Json } else { Format::MsgPack }))
            .collect();
        for sub in &subs {
            hub.handle_attach(
                sub.clone(),
                channel("ch"),
                AttachFrom::Now,
                vec![Operation::Subscribe],
            );
        }
        assert_eq!(outputs(&mut hub).len(), 1, "a single upstream subscribe");
        // Nothing is attached before the upstream answers.
        assert!(frames(&subs[0]).is_empty());
        hub.handle_subscribed(&channel("ch"), serial(5), Some(pos(7, 4)), Continuity::Kept);
        for sub in &subs {
            let frames = frames(sub);
            let at = attached_of(&frames);
            assert_eq!(at.position, Some(to_client_position(pos(7, 4))));
            assert!(!at.resumed && at.error.is_none());
        }
        hub.handle_messages(&channel("ch"), &stored_range(7, 5, 6));
        let queued: Vec<Vec<Bytes>> = subs
            .iter()
            .map(|s| s.outbox.drain_frames(usize::MAX))
            .collect();
        // The JSON subscribers share the very same bytes.
        assert_eq!(queued[0][0].as_ptr(), queued[1][0].as_ptr());
        assert_eq!(queued[1][1].as_ptr(), queued[2][1].as_ptr());
        assert_ne!(queued[0][0], queued[3][0]);
        assert!(outputs(&mut hub).is_empty());
    }

    #[test]
    fn resume_at_the_live_point_needs_no_read() {
        let mut hub = live_hub(4);
        let sub = subscriber(1, Format::MsgPack);
        hub.handle_attach(
            sub.clone(),
            channel("ch"),
            AttachFrom::After(Some(pos(7, 4))),
            vec![],
        );
        assert!(outputs(&mut hub).is_empty());
        let frames = frames(&sub);
        assert!(attached_of(&frames).resumed);
        hub.handle_messages(&channel("ch"), &stored_range(7, 5, 5));
        assert_eq!(serials(&self::frames(&sub)), [5]);
    }

    #[test]
    fn catch_up_joins_the_live_stream_without_gaps_or_repeats() {
        let mut hub = live_hub(10);
        let sub = subscriber(1, Format::Json);
        hub.handle_attach(
            sub.clone(),
            channel("ch"),
            AttachFrom::After(Some(pos(7, 2))),
            vec![],
        );
        let (conn, generation, from, limit) = one_read(&mut hub);
        assert_eq!((conn, from, limit), (1, serial(2), 3));
        // Live messages arrive while the read is out: the reader skips them.
        hub.handle_messages(&channel("ch"), &stored_range(7, 11, 12));
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, 2, 4), true),
        );
        let (_, _, from, _) = one_read(&mut hub);
        assert_eq!(from, serial(5));
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, 5, 7), true),
        );
        let (_, _, from, _) = one_read(&mut hub);
        // The log is ahead of the upstream now: the read goes past it.
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, from.get(), 13), false),
        );
        assert!(outputs(&mut hub).is_empty(), "caught up");
        hub.handle_messages(&channel("ch"), &stored_range(7, 13, 15));
        let frames = frames(&sub);
        assert!(attached_of(&frames).resumed);
        assert_eq!(serials(&frames), (3..=15).collect::<Vec<_>>());
        // A stale read answer (older generation) is ignored.
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation - 1,
            read(stored_range(7, 1, 3), false),
        );
        assert!(self::frames(&sub).is_empty());
    }

    #[test]
    fn resume_decisions() {
        // Retention removed p itself but kept the next one: still continuous.
        let mut hub = live_hub(10);
        let sub = subscriber(1, Format::Json);
        hub.handle_attach(
            sub.clone(),
            channel("ch"),
            AttachFrom::After(Some(pos(7, 2))),
            vec![],
        );
        let generation = match outputs(&mut hub).pop() {
            Some(HubOutput::Read { generation, .. }) => generation,
            other => panic!("{other:?}"),
        };
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, 3, 10), false),
        );
        let got = frames(&sub);
        assert!(attached_of(&got).resumed);
        assert_eq!(serials(&got), (3..=10).collect::<Vec<_>>());

        // Retention removed messages after p: continuity lost, delivery from the first.
        let sub = subscriber(2, Format::Json);
        hub.handle_attach(
            sub.clone(),
            channel("ch"),
            AttachFrom::After(Some(pos(7, 2))),
            vec![],
        );
        let generation = match outputs(&mut hub).pop() {
            Some(HubOutput::Read { generation, .. }) => generation,
            other => panic!("{other:?}"),
        };
        hub.handle_read_result(
            &channel("ch"),
            2,
            generation,
            read(stored_range(7, 6, 10), false),
        );
        let got = frames(&sub);
        let at = attached_of(&got);
        assert!(!at.resumed);
        assert_eq!(
            at.error.as_ref().map(|e| e.code),
            Some(ErrorCode::ContinuityLost)
        );
        assert_eq!(at.position, Some(to_client_position(pos(7, 5))));
        assert_eq!(serials(&got), (6..=10).collect::<Vec<_>>());

        // p was replaced by a new epoch: continuity lost, delivery from the live point.
        let sub = subscriber(3, Format::Json);
        hub.handle_attach(
            sub.clone(),
            channel("ch"),
            AttachFrom::After(Some(pos(6, 4))),
            vec![],
        );
        let generation = match outputs(&mut hub).pop() {
            Some(HubOutput::Read { generation, .. }) => generation,
            other => panic!("{other:?}"),
        };
        hub.handle_read_result(
            &channel("ch"),
            3,
            generation,
            read(stored_range(7, 4, 6), true),
        );
        let got = frames(&sub);
        let at = attached_of(&got);
        assert_eq!(
            at.error.as_ref().map(|e| e.code),
            Some(ErrorCode::ContinuityLost)
        );
        assert_eq!(at.position, Some(to_client_position(pos(7, 10))));
        assert!(serials(&got).is_empty());
        assert!(outputs(&mut hub).is_empty());
        hub.handle_messages(&channel("ch"), &stored_range(7, 11, 11));
        assert_eq!(serials(&frames(&sub)), [11]);

        // p beyond the log's end: continuity lost, live point.
        let sub = subscriber(4, Format::Json);
        hub.handle_attach(
            sub.clone(),
            channel("ch"),
            AttachFrom::After(Some(pos(7, 99))),
            vec![],
        );
        let generation = match outputs(&mut hub).pop() {
            Some(HubOutput::Read { generation, .. }) => generation,
            other => panic!("{other:?}"),
        };
        hub.handle_read_result(&channel("ch"), 4, generation, read(vec![], false));
        let got = frames(&sub);
        assert_eq!(
            attached_of(&got).error.as_ref().map(|e| e.code),
            Some(ErrorCode::ContinuityLost)
        );
        assert_eq!(
            attached_of(&got).position,
            Some(to_client_position(pos(7, 11)))
        );
    }

    #[test]
    fn a_rewind_to_a_time_reads_from_the_first_message_stored_since() {
        let mut hub = live_hub(10);
        let sub = subscriber(1, Format::Json);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Since(5_000), vec![]);
        let generation = match outputs(&mut hub).pop() {
            Some(HubOutput::Read {
                generation, from, ..
            }) => {
                assert_eq!(from, ReadFrom::Since(5_000));
                generation
            }
            other => panic!("{other:?}"),
        };
        // The log answers with serials 8 to 10 (stored since then).
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, 8, 10), false),
        );
        let got = frames(&sub);
        let at = attached_of(&got);
        assert_eq!(at.position, Some(to_client_position(pos(7, 7))));
        assert!(at.error.is_none());
        assert_eq!(serials(&got), [8, 9, 10]);

        // Nothing stored since: attached at the last position, then live.
        let sub = subscriber(2, Format::Json);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Since(9_000), vec![]);
        let generation = match outputs(&mut hub).pop() {
            Some(HubOutput::Read { generation, .. }) => generation,
            other => panic!("{other:?}"),
        };
        hub.handle_read_result(&channel("ch"), 2, generation, read(vec![], false));
        let got = frames(&sub);
        assert_eq!(
            attached_of(&got).position,
            Some(to_client_position(pos(7, 10)))
        );
        assert!(serials(&got).is_empty());
        assert!(outputs(&mut hub).is_empty(), "no further read: live");
    }

    #[test]
    fn rewind_reads_the_last_messages() {
        let mut hub = live_hub(10);
        let sub = subscriber(1, Format::MsgPack);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Rewind(3), vec![]);
        let (generation, from) = match outputs(&mut hub).pop() {
            Some(HubOutput::Read {
                generation, from, ..
            }) => (generation, from),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            from,
            ReadFrom::Serial(serial(7)),
            "one before the first delivered, for ATTACHED.position"
        );
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, 7, 10), false),
        );
        let got = frames(&sub);
        let at = attached_of(&got);
        assert_eq!(at.position, Some(to_client_position(pos(7, 7))));
        assert!(at.error.is_none());
        assert_eq!(serials(&got), [8, 9, 10]);
        // Rewinding more than there is starts at serial 1 with no position.
        let sub = subscriber(2, Format::Json);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Rewind(50), vec![]);
        let generation = match outputs(&mut hub).pop() {
            Some(HubOutput::Read {
                generation, from, ..
            }) => {
                assert_eq!(from, ReadFrom::Serial(serial(1)));
                generation
            }
            other => panic!("{other:?}"),
        };
        hub.handle_read_result(
            &channel("ch"),
            2,
            generation,
            read(stored_range(7, 1, 3), true),
        );
        hub.handle_read_result(
            &channel("ch"),
            2,
            generation,
            read(stored_range(7, 4, 6), true),
        );
        hub.handle_read_result(
            &channel("ch"),
            2,
            generation,
            read(stored_range(7, 7, 10), false),
        );
        let got = frames(&sub);
        assert_eq!(
            attached_of(&got).position,
            Some(tern_protocol::Position::BEFORE_FIRST)
        );
        assert_eq!(serials(&got), (1..=10).collect::<Vec<_>>());
    }

    /// The hub after the upstream answered a subscribe of "ch", which has no message.
    fn empty_hub() -> Hub {
        let mut hub = hub();
        let first = subscriber(100, Format::Json);
        hub.handle_attach(first.clone(), channel("ch"), AttachFrom::Now, vec![]);
        outputs(&mut hub);
        hub.handle_subscribed(&channel("ch"), Serial::FIRST, None, Continuity::Kept);
        let at = attached_of(&frames(&first)).clone();
        assert_eq!(
            at.position,
            Some(tern_protocol::Position::BEFORE_FIRST),
            "a plain attach to an empty channel names 0:0"
        );
        hub
    }

    /// Attaches `conn` from 0:0 and returns its read's generation (after checking the
    /// read starts at serial 1).
    fn attach_from_start(hub: &mut Hub, sub: &SubscriberHandle) -> u64 {
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::After(None), vec![]);
        let (conn, generation, from, _) = one_read(hub);
        assert_eq!((conn, from), (sub.conn, Serial::FIRST));
        generation
    }

    #[test]
    fn from_0_0_on_an_empty_channel_is_live_at_once() {
        let mut hub = empty_hub();
        let sub = subscriber(1, Format::MsgPack);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::After(None), vec![]);
        assert!(outputs(&mut hub).is_empty(), "nothing to read");
        let got = frames(&sub);
        let at = attached_of(&got);
        assert!(at.resumed && at.error.is_none(), "{at:?}");
        assert_eq!(at.position, Some(tern_protocol::Position::BEFORE_FIRST));
        hub.handle_messages(&channel("ch"), &stored_range(7, 1, 2));
        assert_eq!(serials(&frames(&sub)), [1, 2]);
    }

    #[test]
    fn from_0_0_reads_from_the_first_message() {
        let mut hub = live_hub(5);
        let sub = subscriber(1, Format::Json);
        let generation = attach_from_start(&mut hub, &sub);
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, 1, 3), true),
        );
        let (_, _, from, _) = one_read(&mut hub);
        assert_eq!(from, serial(4));
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, 4, 5), false),
        );
        assert!(outputs(&mut hub).is_empty(), "caught up");
        hub.handle_messages(&channel("ch"), &stored_range(7, 6, 6));
        let got = frames(&sub);
        let at = attached_of(&got);
        assert!(at.resumed && at.error.is_none(), "{at:?}");
        assert_eq!(at.position, Some(tern_protocol::Position::BEFORE_FIRST));
        assert_eq!(serials(&got), (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn from_0_0_after_retention_says_continuity_lost() {
        // Retention removed serials 1 to 3: delivery starts at 4, right after 7:3.
        let mut hub = live_hub(6);
        let sub = subscriber(1, Format::Json);
        let generation = attach_from_start(&mut hub, &sub);
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, 4, 6), false),
        );
        let got = frames(&sub);
        let at = attached_of(&got);
        assert!(!at.resumed);
        assert_eq!(
            at.error.as_ref().map(|e| e.code),
            Some(ErrorCode::ContinuityLost)
        );
        assert_eq!(at.position, Some(to_client_position(pos(7, 3))));
        assert_eq!(serials(&got), [4, 5, 6]);

        // Nothing stored any more: continuity lost, delivery from the live point.
        let sub = subscriber(2, Format::Json);
        let generation = attach_from_start(&mut hub, &sub);
        hub.handle_read_result(&channel("ch"), 2, generation, read(vec![], false));
        let got = frames(&sub);
        let at = attached_of(&got);
        assert_eq!(
            at.error.as_ref().map(|e| e.code),
            Some(ErrorCode::ContinuityLost)
        );
        assert_eq!(at.position, Some(to_client_position(pos(7, 6))));
        assert!(serials(&got).is_empty());
        hub.handle_messages(&channel("ch"), &stored_range(7, 7, 7));
        assert_eq!(serials(&frames(&sub)), [7]);
    }

    #[test]
    fn continuity_lost_upstream_always_names_a_position() {
        // The log lost everything the channel had: delivery restarts at serial 1, 0:0.
        let mut hub = live_hub(4);
        let sub = subscriber(1, Format::Json);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Now, vec![]);
        frames(&sub);
        let lost = || Continuity::Lost {
            reason: "gone".into(),
        };
        hub.handle_subscribed(&channel("ch"), Serial::FIRST, None, lost());
        let got = frames(&sub);
        assert_eq!(
            attached_of(&got).position,
            Some(tern_protocol::Position::BEFORE_FIRST)
        );
        hub.handle_messages(&channel("ch"), &stored_range(8, 1, 2));
        assert_eq!(serials(&frames(&sub)), [1, 2]);

        // A gap the log found mid-stream comes without the position before it: it is
        // named in the last epoch known, and the next attach continues from there.
        hub.handle_subscribed(&channel("ch"), serial(6), None, lost());
        let got = frames(&sub);
        let at = attached_of(&got);
        assert_eq!(
            at.error.as_ref().map(|e| e.code),
            Some(ErrorCode::ContinuityLost)
        );
        assert_eq!(at.position, Some(to_client_position(pos(8, 5))));
        let again = subscriber(2, Format::Json);
        hub.handle_attach(again.clone(), channel("ch"), AttachFrom::Now, vec![]);
        assert_eq!(
            attached_of(&frames(&again)).position,
            Some(to_client_position(pos(8, 5)))
        );
        hub.handle_messages(&channel("ch"), &stored_range(8, 6, 6));
        assert_eq!(serials(&frames(&sub)), [6]);
        assert_eq!(serials(&frames(&again)), [6]);
    }

    #[test]
    fn an_upstream_gap_is_read_from_the_log() {
        let mut hub = live_hub(4);
        let sub = subscriber(1, Format::Json);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Now, vec![]);
        frames(&sub);
        hub.handle_messages(&channel("ch"), &stored_range(7, 7, 7));
        let reads = outputs(&mut hub);
        assert_eq!(reads.len(), 2, "each live subscriber reads what it lacks");
        let generation = reads
            .iter()
            .find_map(|r| match r {
                HubOutput::Read {
                    conn: 1,
                    generation,
                    from,
                    ..
                } if *from == ReadFrom::Serial(serial(5)) => Some(*generation),
                _ => None,
            })
            .expect("a read for subscriber 1 from serial 5");
        hub.handle_read_result(
            &channel("ch"),
            1,
            generation,
            read(stored_range(7, 5, 7), false),
        );
        assert_eq!(serials(&frames(&sub)), [5, 6, 7]);
    }

    #[test]
    fn reconnect_resubscribes_after_the_last_position_and_reports_lost_continuity() {
        let mut hub = live_hub(4);
        let sub = subscriber(1, Format::Json);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Now, vec![]);
        hub.handle_messages(&channel("ch"), &stored_range(7, 5, 6));
        frames(&sub);
        hub.handle_link_down();
        // Messages from the dead stream are ignored.
        hub.handle_messages(&channel("ch"), &stored_range(7, 7, 7));
        hub.handle_link_up();
        assert_eq!(
            outputs(&mut hub),
            [HubOutput::Subscribe {
                channel: channel("ch"),
                from: SubscribeFrom::After(pos(7, 6))
            }]
        );
        hub.handle_subscribed(&channel("ch"), serial(7), Some(pos(7, 6)), Continuity::Kept);
        hub.handle_messages(&channel("ch"), &stored_range(7, 7, 8));
        let got = frames(&sub);
        assert_eq!(serials(&got), [7, 8], "no repeat, no gap, no new ATTACHED");

        // The log came back in a new epoch that reassigned serials from 8.
        hub.handle_link_down();
        hub.handle_link_up();
        outputs(&mut hub);
        hub.handle_subscribed(
            &channel("ch"),
            serial(8),
            Some(pos(7, 7)),
            Continuity::Lost {
                reason: "serials from 8 were reassigned".into(),
            },
        );
        hub.handle_messages(&channel("ch"), &stored_range(9, 8, 9));
        let got = frames(&sub);
        let at = attached_of(&got);
        assert_eq!(
            at.error.as_ref().map(|e| e.code),
            Some(ErrorCode::ContinuityLost)
        );
        assert_eq!(at.position, Some(to_client_position(pos(7, 7))));
        assert_eq!(serials(&got), [8, 9]);
    }

    #[test]
    fn detach_follows_the_messages_and_the_last_leaver_unsubscribes_after_the_linger() {
        let mut hub = live_hub(1);
        let t0 = Instant::now();
        let sub = subscriber(1, Format::Json);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Now, vec![]);
        hub.handle_messages(&channel("ch"), &stored_range(7, 2, 2));
        hub.handle_detach(t0, 1, &channel("ch"), None);
        hub.handle_connection_closed(t0, 100, [&channel("ch")]);
        let got = frames(&sub);
        assert!(matches!(
            got.as_slice(),
            [
                ServerFrame::Attached(_),
                ServerFrame::Message(_),
                ServerFrame::Detached(_)
            ]
        ));
        hub.handle_tick(t0 + Duration::from_millis(500));
        assert!(outputs(&mut hub).is_empty());
        // Someone comes back within the linger: the subscription is reused.
        let again = subscriber(2, Format::Json);
        hub.handle_attach(again.clone(), channel("ch"), AttachFrom::Now, vec![]);
        assert!(outputs(&mut hub).is_empty());
        assert_eq!(
            attached_of(&frames(&again)).position,
            Some(to_client_position(pos(7, 2)))
        );
        hub.handle_connection_closed(t0 + Duration::from_secs(1), 2, [&channel("ch")]);
        hub.handle_tick(t0 + Duration::from_secs(2));
        assert_eq!(
            outputs(&mut hub),
            [HubOutput::Unsubscribe {
                channel: channel("ch")
            }]
        );
    }

    fn big(epoch: u64, n: u64, bytes: usize) -> StoredMessage {
        StoredMessage {
            payload: Bytes::from(vec![b'x'; bytes]),
            ..stored(epoch, n)
        }
    }

    /// A catch-up never pushes a subscriber over its budget: it stops at half, parks
    /// with its cursor, and reads again (no sooner) when the outbox drained, asking
    /// for about what fits.
    #[tokio::test]
    async fn catch_up_is_paced_by_the_outbox() {
        let mut hub = Hub::new(
            HubConfig {
                read_batch: 256,
                ..HubConfig::default()
            },
            Arc::new(Metrics::default()),
        );
        hub.handle_link_up();
        // Messages 4 times the size the first read guesses: only the per-message room
        // check keeps that read under the budget.
        let budget = 256 * 1024;
        let sub = SubscriberHandle {
            conn: 1,
            outbox: Arc::new(Outbox::new(budget)),
            format: Format::Json,
        };
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Rewind(100), vec![]);
        outputs(&mut hub);
        hub.handle_subscribed(
            &channel("ch"),
            serial(101),
            Some(pos(7, 100)),
            Continuity::Kept,
        );
        let drained = hub.drain_signal();
        let mut got = Vec::new();
        let mut reads = 0;
        let (_, generation, mut from, mut limit) = one_read(&mut hub);
        assert_eq!(from, Serial::FIRST);
        loop {
            reads += 1;
            assert!(reads < 100, "catch-up makes progress");
            let to = (from.get() + u64::from(limit) - 1).min(100);
            let batch = (from.get()..=to).map(|n| big(7, n, 16_000)).collect();
            hub.handle_read_result(&channel("ch"), 1, generation, read(batch, to < 100));
            assert!(!sub.outbox.is_overflowed(), "never over the budget");
            assert!(sub.outbox.queued_bytes() <= budget / 2 + 17_000);
            let next = outputs(&mut hub);
            if let [
                HubOutput::Read {
                    from: ReadFrom::Serial(f),
                    limit: l,
                    ..
                },
            ] = next.as_slice()
            {
                // Room was left: the next read follows at once.
                (from, limit) = (*f, *l);
                continue;
            }
            assert!(next.is_empty(), "{next:?}");
            // Parked (or done): the tick reads nothing more while the outbox is full.
            hub.handle_tick(Instant::now());
            assert!(
                outputs(&mut hub).is_empty(),
                "the tick leaves a full reader parked"
            );
            got.extend(frames(&sub));
            if serials(&got).len() == 100 {
                break;
            }
            tokio::time::timeout(Duration::from_secs(5), drained.notified())
                .await
                .expect("the drained outbox wakes the hub");
            hub.handle_drained();
            (_, _, from, limit) = one_read(&mut hub);
            assert!(limit > 1 && limit < 256, "sized by the room: {limit}");
        }
        got.extend(frames(&sub));
        assert!(matches!(got.first(), Some(ServerFrame::Attached(_))));
        assert_eq!(serials(&got), (1..=100).collect::<Vec<_>>());
        assert!(reads > 2, "the backlog took several paced reads");
        hub.handle_messages(&channel("ch"), &stored_range(7, 101, 101));
        assert_eq!(serials(&frames(&sub)), [101], "live after catching up");
    }

    /// A subscribe the log never confirms is sent again after the timeout, and the
    /// ATTACH waiting on it is answered (DETACHED LogTimeout) rather than kept waiting.
    #[test]
    fn an_unconfirmed_subscribe_is_retried_and_its_attaches_answered() {
        let mut hub = hub();
        let t0 = Instant::now();
        let sub = subscriber(1, Format::Json);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Now, vec![]);
        assert_eq!(outputs(&mut hub).len(), 1);
        hub.handle_tick(t0);
        hub.handle_tick(t0 + Duration::from_secs(4));
        assert!(outputs(&mut hub).is_empty(), "within the timeout");
        assert!(frames(&sub).is_empty());
        hub.handle_tick(t0 + Duration::from_secs(5));
        assert_eq!(
            outputs(&mut hub),
            [HubOutput::Subscribe {
                channel: channel("ch"),
                from: SubscribeFrom::Latest
            }]
        );
        match frames(&sub).as_slice() {
            [ServerFrame::Detached(d)] => {
                assert_eq!(
                    d.error.as_ref().map(|e| e.code),
                    Some(ErrorCode::LogTimeout)
                );
            }
            other => panic!("{other:?}"),
        }
        // The retry is confirmed: nothing more for the refused subscriber, a new
        // ATTACH is answered at once, and DETACH is still answered.
        hub.handle_subscribed(&channel("ch"), serial(3), Some(pos(7, 2)), Continuity::Kept);
        assert!(frames(&sub).is_empty());
        hub.handle_messages(&channel("ch"), &stored_range(7, 3, 3));
        assert!(frames(&sub).is_empty());
        let again = subscriber(2, Format::Json);
        hub.handle_attach(again.clone(), channel("ch"), AttachFrom::Now, vec![]);
        assert_eq!(
            attached_of(&frames(&again)).position,
            Some(to_client_position(pos(7, 3)))
        );
        hub.handle_detach(t0, 1, &channel("ch"), None);
        assert!(matches!(frames(&sub).as_slice(), [ServerFrame::Detached(d)] if d.error.is_none()));
        hub.handle_tick(t0 + Duration::from_secs(60));
        assert!(outputs(&mut hub).is_empty(), "confirmed: no more retries");
    }

    /// The log dropping a channel on its own (Unsubscribed after a failed replay) is
    /// answered by subscribing again after the last delivered position, with a pause
    /// that doubles while it keeps failing; delivery continues without gap or repeat.
    #[test]
    fn an_unexpected_unsubscribed_resubscribes_with_backoff() {
        let mut hub = live_hub(4);
        let t0 = Instant::now();
        let sub = subscriber(1, Format::Json);
        hub.handle_attach(sub.clone(), channel("ch"), AttachFrom::Now, vec![]);
        hub.handle_messages(&channel("ch"), &stored_range(7, 5, 5));
        frames(&sub);
        hub.handle_unsubscribed(t0, &channel("ch"));
        hub.handle_messages(&channel("ch"), &stored_range(7, 6, 6));
        assert!(
            frames(&sub).is_empty(),
            "nothing from a dropped subscription"
        );
        hub.handle_tick(t0 + Duration::from_millis(50));
        assert!(outputs(&mut hub).is_empty(), "the pause (100 ms) first");
        hub.handle_tick(t0 + Duration::from_millis(100));
        let resubscribe = [HubOutput::Subscribe {
            channel: channel("ch"),
            from: SubscribeFrom::After(pos(7, 5)),
        }];
        assert_eq!(outputs(&mut hub), resubscribe);
        // Confirmed, then dropped again before delivering anything: the pause doubles.
        hub.handle_subscribed(&channel("ch"), serial(6), Some(pos(7, 5)), Continuity::Kept);
        let t1 = t0 + Duration::from_secs(1);
        hub.handle_unsubscribed(t1, &channel("ch"));
        hub.handle_tick(t1 + Duration::from_millis(100));
        assert!(outputs(&mut hub).is_empty(), "200 ms now");
        // Another Unsubscribed while not subscribed changes nothing.
        hub.handle_unsubscribed(t1 + Duration::from_millis(150), &channel("ch"));
        hub.handle_tick(t1 + Duration::from_millis(200));
        assert_eq!(outputs(&mut hub), resubscribe);
        hub.handle_subscribed(&channel("ch"), serial(6), Some(pos(7, 5)), Continuity::Kept);
        hub.handle_messages(&channel("ch"), &stored_range(7, 6, 7));
        assert_eq!(serials(&frames(&sub)), [6, 7]);
        // The answer to the hub's own Unsubscribe changes nothing.
        hub.handle_detach(t1, 1, &channel("ch"), None);
        hub.handle_detach(t1, 100, &channel("ch"), None);
        hub.handle_tick(t1 + Duration::from_secs(2));
        assert_eq!(
            outputs(&mut hub),
            [HubOutput::Unsubscribe {
                channel: channel("ch")
            }]
        );
        hub.handle_unsubscribed(t1 + Duration::from_secs(2), &channel("ch"));
        hub.handle_tick(t1 + Duration::from_secs(10));
        assert!(outputs(&mut hub).is_empty());
    }

    /// ATTACH/DETACH churn over many channels keeps at most `max_lingering` of them
    /// subscribed without subscribers: the ones idle longest go first.
    #[test]
    fn lingering_channels_are_capped_oldest_first() {
        let mut hub = Hub::new(
            HubConfig {
                max_lingering: 3,
                ..HubConfig::default()
            },
            Arc::new(Metrics::default()),
        );
        hub.handle_link_up();
        let t0 = Instant::now();
        let sub = subscriber(1, Format::Json);
        for i in 0..6u64 {
            let name = channel(&format!("ch{i}"));
            hub.handle_attach(sub.clone(), name.clone(), AttachFrom::Now, vec![]);
            hub.handle_detach(t0 + Duration::from_millis(i), 1, &name, None);
        }
        // Re-attaching a lingering one takes it off the list; leaving again puts it
        // last, so the next one over the cap evicts ch4.
        hub.handle_attach(sub.clone(), channel("ch3"), AttachFrom::Now, vec![]);
        hub.handle_detach(t0 + Duration::from_millis(10), 1, &channel("ch3"), None);
        hub.handle_attach(sub.clone(), channel("ch6"), AttachFrom::Now, vec![]);
        hub.handle_detach(t0 + Duration::from_millis(11), 1, &channel("ch6"), None);
        let unsubscribed: Vec<_> = outputs(&mut hub)
            .into_iter()
            .filter_map(|o| match o {
                HubOutput::Unsubscribe { channel } => Some(channel.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(unsubscribed, ["ch0", "ch1", "ch2", "ch4"]);
        let mut left: Vec<_> = hub.channels.keys().map(ToString::to_string).collect();
        left.sort();
        assert_eq!(left, ["ch3", "ch5", "ch6"]);
        // The rest still go after the linger.
        hub.handle_tick(t0 + Duration::from_secs(6));
        assert_eq!(outputs(&mut hub).len(), 3);
        assert!(hub.channels.is_empty());
        assert_eq!(hub.lingering_count, 0);
    }
}
