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
//! is the buffer. A catch-up waits while its connection's outbox is more than half full.
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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_link::{ChannelName, Continuity, Epoch, Position, Serial, StoredMessage, SubscribeFrom};
use tern_log::ReadResult;
use tern_protocol::{
    Attached, Detached, ErrorCode, ErrorInfo, Format, MessageFrame, Operation, ServerFrame,
};

use crate::convert::{to_client_cursor, to_client_message, to_client_position};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::session::AttachFrom;

/// Identifies a connection inside the edge (not the protocol's connection id).
pub(crate) type ConnKey = u64;

/// Hub settings.
#[derive(Clone, Debug)]
pub(crate) struct HubConfig {
    /// How long a channel without subscribers stays subscribed upstream.
    pub(crate) linger: Duration,
    /// Messages per catch-up read.
    pub(crate) read_batch: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_secs(5),
            read_batch: 256,
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
        from: Serial,
        limit: u32,
    },
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
    /// Catching up.
    Continue,
}

#[derive(Debug)]
enum SubState {
    /// Waiting for the upstream subscription.
    Waiting(AttachFrom),
    /// Reading from the log; `in_flight` false means parked (link down, outbox full,
    /// read failed) until the next tick.
    Reading {
        phase: ReadPhase,
        next: Serial,
        in_flight: bool,
    },
    /// Fed by the upstream.
    Live { next: Serial },
}

#[derive(Debug)]
struct Sub {
    handle: SubscriberHandle,
    granted: Vec<Operation>,
    generation: u64,
    state: SubState,
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

/// The channel registry. See the module docs.
#[derive(Debug)]
pub(crate) struct Hub {
    config: HubConfig,
    metrics: Arc<Metrics>,
    channels: HashMap<ChannelName, Channel>,
    link_up: bool,
    next_generation: u64,
    outputs: VecDeque<HubOutput>,
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
        }
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
            }
            Channel::default()
        });
        channel_state.idle_since = None;
        let conn = handle.conn;
        channel_state.subs.insert(
            conn,
            Sub {
                handle,
                granted,
                generation,
                state: SubState::Waiting(from),
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
        if state.subs.is_empty() {
            state.idle_since = Some(now);
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
                if state.subs.is_empty() {
                    state.idle_since = Some(now);
                }
            }
        }
    }

    /// The link (or a new subscription stream) is up: every channel is subscribed again
    /// from the last position delivered.
    pub(crate) fn handle_link_up(&mut self) {
        self.link_up = true;
        for (channel, state) in &mut self.channels {
            state.subscribed = false;
            self.outputs.push_back(HubOutput::Subscribe {
                channel: channel.clone(),
                from: state.subscribe_from(),
            });
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
        // The log names the position assigned before `next_serial`, except after a
        // gap it found mid-stream (the message before was removed too). Name that one
        // in the epoch of the last position known (epoch 0, which no log assigns, when
        // none is): a client resuming from it is then checked by the log, never
        // continued on trust, so a wrong epoch costs an explicit break, not a gap.
        let previous = previous.or_else(|| {
            let serial = Serial::new(next_serial.get() - 1)?;
            let epoch = state.last.map_or(Epoch(0), |last| last.epoch);
            Some(Position { epoch, serial })
        });
        state.subscribed = true;
        state.next = Some(next_serial);
        state.last = previous;
        if let Continuity::Lost { reason } = continuity {
            self.metrics.continuity_lost();
            let error = ErrorInfo::new(
                ErrorCode::ContinuityLost,
                format!("continuity lost: {reason}"),
            );
            for sub in state.subs.values_mut() {
                if matches!(sub.state, SubState::Waiting(_)) {
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

    /// Durable messages of `channel` from the upstream, in serial order.
    pub(crate) fn handle_messages(&mut self, channel: &ChannelName, messages: &[StoredMessage]) {
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        if !state.subscribed {
            // From a subscription that was replaced; the new one delivers them again.
            return;
        }
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
                        from,
                        limit: self.config.read_batch,
                    });
                    continue;
                }
                *next = serial.next();
                let frame = frame.get_or_insert_with(|| message_frame(channel, stored));
                let slot = match sub.handle.format {
                    Format::Json => 0,
                    Format::MsgPack => 1,
                };
                let bytes = encoded[slot].get_or_insert_with(|| {
                    Bytes::from(tern_protocol::encode(sub.handle.format, &*frame))
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
        };
        for stored in &messages[skip.min(messages.len())..] {
            if stored.position.serial < next {
                continue;
            }
            next = stored.position.serial.next();
            if !sub.send(&message_frame(channel, stored)) {
                return;
            }
            self.metrics.delivered(1);
        }
        if result.more || !subscribed || next < live_point {
            let room = sub.handle.outbox.queued_bytes() < sub.handle.outbox.budget() / 2;
            let in_flight = room && subscribed;
            sub.state = SubState::Reading {
                phase: ReadPhase::Continue,
                next,
                in_flight,
            };
            if in_flight {
                self.outputs.push_back(HubOutput::Read {
                    channel: channel.clone(),
                    conn,
                    generation,
                    from: next,
                    limit: read_batch,
                });
            }
        } else {
            sub.state = SubState::Live { next };
        }
    }

    /// Time passes: channels idle past the linger are dropped upstream; parked
    /// catch-up reads are retried.
    pub(crate) fn handle_tick(&mut self, now: Instant) {
        let linger = self.config.linger;
        let link_up = self.link_up;
        let mut dropped = Vec::new();
        self.channels.retain(|channel, state| {
            let expired = state.subs.is_empty()
                && state
                    .idle_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= linger);
            if expired {
                dropped.push(channel.clone());
            }
            !expired
        });
        for channel in dropped {
            if link_up {
                self.outputs.push_back(HubOutput::Unsubscribe { channel });
            }
        }
        self.metrics.set_channels(self.channels.len());
        if !link_up {
            return;
        }
        for (channel, state) in &mut self.channels {
            if !state.subscribed {
                continue;
            }
            for (conn, sub) in &mut state.subs {
                if let SubState::Reading {
                    phase,
                    next,
                    in_flight: in_flight @ false,
                } = &mut sub.state
                {
                    let outbox = &sub.handle.outbox;
                    if outbox.queued_bytes() >= outbox.budget() / 2 {
                        continue;
                    }
                    *in_flight = true;
                    self.outputs.push_back(HubOutput::Read {
                        channel: channel.clone(),
                        conn: *conn,
                        generation: sub.generation,
                        from: read_start(*phase, *next),
                        limit: self.config.read_batch,
                    });
                }
            }
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
        self.outputs.push_back(HubOutput::Read {
            channel: channel.clone(),
            conn,
            generation: sub.generation,
            from: read_start(phase, next),
            limit: read_batch,
        });
    }

    fn generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }
}

/// The first serial a read of `phase` asks for.
fn read_start(phase: ReadPhase, next: Serial) -> Serial {
    match phase {
        // `p` itself, to check it is still the log's; from 1 for `0:0`.
        ReadPhase::Verify(p) => p.map_or(Serial::FIRST, |p| p.serial),
        // One before the start, to learn the position ATTACHED reports.
        ReadPhase::Rewind(start) => Serial::new(start.get() - 1).unwrap_or(start),
        ReadPhase::Continue => next,
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
                    from,
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
            serial(7),
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
                assert_eq!(from, serial(1));
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
                } if *from == serial(5) => Some(*generation),
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
}
