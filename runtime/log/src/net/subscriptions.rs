//! The subscriptions of one link stream: replay, then live tail, without loss or
//! duplicates (sans-IO).
//!
//! The stream driver owns one [`Subscriptions`] and one `store.tail()` receiver,
//! created before the first replay read. Each channel starts in *replay*: the driver
//! asks [`Subscriptions::next_replay`] what to read, reads one chunk and hands the
//! result to [`Subscriptions::handle_replay`]; tail batches for a replaying channel are
//! ignored, because the store makes everything it sends on the tail visible to `read`
//! first, so the next read finds them. A short read means the channel has caught up:
//! it turns *live* and is fed by [`Subscriptions::handle_tail`], which skips serials
//! already sent.
//!
//! ```text
//! Subscribe ─▶ Replaying{next} ─read chunk─▶ full: stay (back of the queue)
//!                    ▲                       short: Live{next} ◀─ tail batches
//!                    └───────── gap in the tail (should not happen): re-read ◀┘
//! ```
//!
//! The driver must not hand a tail batch over while a replay read of the same channel
//! is in flight (it awaits each chunk before touching the tail); otherwise a message
//! committed after the read could be ignored. Replaying channels take turns, one chunk
//! each, so one long replay does not hold the others up.
//!
//! A gap found in replay (retention removed messages after the subscription was
//! answered) is never silent: the client gets a second `Subscribed` with
//! `Continuity::Lost`, the serial delivery continues from and the position of the
//! (removed) message before it, from the channel's epoch table.
//!
//! A subscription from the latest position is no different here: it starts replay at
//! the next serial to be assigned, so its first read finds only what committed since.

use std::collections::{HashMap, VecDeque};

use tern_link::{ChannelName, Continuity, Epoch, Frame, Position, Serial, StoredMessage};

use crate::store::{ChannelInfo, CommittedBatch, ReadResult, epoch_of};

/// Bytes of a `Messages` frame not taken by messages (tags, channel name, lengths).
const FRAME_OVERHEAD: usize = 512;
/// Bytes of one stored message on the wire besides its payload, key and headers.
const MESSAGE_OVERHEAD: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Replaying,
    Live,
}

#[derive(Debug)]
struct Cursor {
    /// The serial the client expects next.
    next: Serial,
    phase: Phase,
    /// Whether the channel is in the replay queue.
    queued: bool,
    /// The channel's epoch table when the subscription was answered, to name the
    /// position before a retention gap. Epochs only change when the store opens,
    /// which ends every stream, so it stays right for the stream's lifetime.
    epochs: Vec<(Epoch, Serial)>,
    /// The channel's last durable position when the subscription was answered.
    last: Option<Position>,
}

/// The channels followed on one stream and how far each has been sent.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    cursors: HashMap<ChannelName, Cursor>,
    replay_queue: VecDeque<ChannelName>,
    /// Budget for the messages of one outgoing frame.
    frame_budget: usize,
}

impl Subscriptions {
    /// No subscriptions; outgoing `Messages` frames stay under `max_frame_bytes`
    /// (a single message larger than that still goes alone).
    pub(crate) fn new(max_frame_bytes: usize) -> Self {
        Self {
            cursors: HashMap::new(),
            replay_queue: VecDeque::new(),
            frame_budget: max_frame_bytes.saturating_sub(FRAME_OVERHEAD).max(1),
        }
    }

    /// True when no channel is followed (the driver then drops its tail receiver).
    pub(crate) fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }

    /// Number of channels followed.
    pub(crate) fn len(&self) -> usize {
        self.cursors.len()
    }

    /// True when some channel waits for a replay read.
    pub(crate) fn wants_replay(&self) -> bool {
        !self.replay_queue.is_empty()
    }

    /// Starts (or restarts) following `channel` from `next`, replaying first;
    /// `info` is what the store said of the channel when the subscription was
    /// answered.
    pub(crate) fn start(&mut self, channel: ChannelName, next: Serial, info: ChannelInfo) {
        let cursor = self.cursors.entry(channel.clone()).or_insert(Cursor {
            next,
            phase: Phase::Replaying,
            queued: false,
            epochs: Vec::new(),
            last: None,
        });
        cursor.next = next;
        cursor.phase = Phase::Replaying;
        cursor.epochs = info.epochs;
        cursor.last = info.last;
        if !cursor.queued {
            cursor.queued = true;
            self.replay_queue.push_back(channel);
        }
    }

    /// Stops following `channel`; true if it was followed.
    pub(crate) fn remove(&mut self, channel: &ChannelName) -> bool {
        // A queued entry stays behind and is skipped by `next_replay`.
        self.cursors.remove(channel).is_some()
    }

    /// The next replay read to do: `(channel, from)`. The channel leaves the queue until
    /// its result is handled.
    pub(crate) fn next_replay(&mut self) -> Option<(ChannelName, Serial)> {
        while let Some(channel) = self.replay_queue.pop_front() {
            if let Some(cursor) = self.cursors.get_mut(&channel) {
                cursor.queued = false;
                if cursor.phase == Phase::Replaying {
                    return Some((channel, cursor.next));
                }
            }
        }
        None
    }

    /// Handles the result of reading `channel` from `from` with `limit`; returns the
    /// frames to send. A result that no longer matches the cursor (the channel was
    /// unsubscribed or restarted meanwhile) is dropped.
    pub(crate) fn handle_replay(
        &mut self,
        channel: &ChannelName,
        from: Serial,
        result: ReadResult,
    ) -> Vec<Frame> {
        let budget = self.frame_budget;
        let Some(cursor) = self.cursors.get_mut(channel) else {
            return Vec::new();
        };
        if cursor.phase != Phase::Replaying || cursor.next != from {
            return Vec::new();
        }
        let short = !result.more;
        let mut frames = Vec::new();
        let mut batch = Vec::new();
        for message in result.messages {
            let serial = message.position.serial;
            if serial < cursor.next {
                continue;
            }
            if serial > cursor.next {
                // Retention removed what we were about to send: say so, never skip.
                flush(channel, &mut batch, budget, &mut frames);
                let before = Serial::new(serial.get() - 1);
                frames.push(Frame::Subscribed {
                    channel: channel.to_string(),
                    next_serial: serial.get(),
                    // The message before `serial` was just removed; its position
                    // is still known, so a subscriber can continue right after it.
                    previous: before.and_then(|before| {
                        epoch_of(&cursor.epochs, before).map(|epoch| Position {
                            epoch,
                            serial: before,
                        })
                    }),
                    last: cursor.last,
                    continuity: Continuity::Lost {
                        reason: format!(
                            "retention removed serials {} to {} during replay",
                            cursor.next,
                            serial.get() - 1
                        ),
                    },
                });
            }
            cursor.next = serial.next();
            batch.push(message);
        }
        flush(channel, &mut batch, budget, &mut frames);
        if short {
            cursor.phase = Phase::Live;
        } else if !cursor.queued {
            cursor.queued = true;
            self.replay_queue.push_back(channel.clone());
        }
        frames
    }

    /// Handles one committed batch from the store's tail; returns the frames to send
    /// to live channels. A gap (which the store's contract rules out) sends the channel
    /// back to replay instead of skipping messages.
    pub(crate) fn handle_tail(&mut self, committed: &CommittedBatch) -> Vec<Frame> {
        let mut frames = Vec::new();
        for (channel, messages) in &committed.channels {
            let Some(cursor) = self.cursors.get_mut(channel) else {
                continue;
            };
            if cursor.phase != Phase::Live {
                continue;
            }
            let mut batch = Vec::new();
            for message in messages {
                let serial = message.position.serial;
                if serial < cursor.next {
                    continue;
                }
                if serial > cursor.next {
                    tracing::warn!(
                        %channel,
                        expected = %cursor.next,
                        got = %serial,
                        "gap in the store's tail; re-reading from the store"
                    );
                    cursor.phase = Phase::Replaying;
                    if !cursor.queued {
                        cursor.queued = true;
                        self.replay_queue.push_back(channel.clone());
                    }
                    break;
                }
                cursor.next = serial.next();
                batch.push(message.clone());
            }
            flush(channel, &mut batch, self.frame_budget, &mut frames);
        }
        frames
    }
}

/// Wire size of a message, near enough to keep frames under their limit.
fn wire_size(message: &StoredMessage) -> usize {
    let headers: usize = message
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum();
    message.payload.len() + message.idempotency_key.len() + headers + MESSAGE_OVERHEAD
}

/// Moves `batch` into `Messages` frames of at most `budget` bytes of messages each.
fn flush(
    channel: &ChannelName,
    batch: &mut Vec<StoredMessage>,
    budget: usize,
    frames: &mut Vec<Frame>,
) {
    let mut current = Vec::new();
    let mut size = 0;
    for message in batch.drain(..) {
        let m = wire_size(&message);
        if !current.is_empty() && size + m > budget {
            frames.push(Frame::Messages {
                channel: channel.to_string(),
                messages: std::mem::take(&mut current),
            });
            size = 0;
        }
        size += m;
        current.push(message);
    }
    if !current.is_empty() {
        frames.push(Frame::Messages {
            channel: channel.to_string(),
            messages: current,
        });
    }
}

/// Cuts `messages` to what fits in one frame of `max_frame_bytes` (at least one
/// message), for read answers.
pub(crate) fn truncate_to_frame(messages: &mut Vec<StoredMessage>, max_frame_bytes: usize) -> bool {
    let budget = max_frame_bytes.saturating_sub(FRAME_OVERHEAD);
    let mut size = 0;
    let keep = messages
        .iter()
        .take_while(|m| {
            size += wire_size(m);
            size <= budget
        })
        .count()
        .max(1);
    let cut = keep < messages.len();
    messages.truncate(keep);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn s(n: u64) -> Serial {
        Serial::new(n).expect("non-zero in tests")
    }

    /// A channel in one epoch that starts at serial 1.
    fn info() -> ChannelInfo {
        ChannelInfo {
            first_serial: Some(s(1)),
            last: None,
            epochs: vec![(Epoch(1), s(1))],
        }
    }

    fn msg(n: u64) -> StoredMessage {
        StoredMessage {
            position: Position {
                epoch: Epoch(1),
                serial: s(n),
            },
            timestamp_ms: 0,
            idempotency_key: Bytes::from(format!("k{n}")),
            headers: vec![],
            payload: Bytes::from_static(b"x"),
        }
    }

    fn read(range: std::ops::RangeInclusive<u64>, more: bool) -> ReadResult {
        ReadResult {
            messages: range.map(msg).collect(),
            first_serial: Some(s(1)),
            more,
            last: None,
        }
    }

    fn serials(frames: &[Frame]) -> Vec<u64> {
        frames
            .iter()
            .flat_map(|f| match f {
                Frame::Messages { messages, .. } => {
                    messages.iter().map(|m| m.position.serial.get()).collect()
                }
                _ => Vec::new(),
            })
            .collect()
    }

    fn tail(channel: &ChannelName, range: std::ops::RangeInclusive<u64>) -> CommittedBatch {
        CommittedBatch {
            channels: vec![(channel.clone(), range.map(msg).collect())],
        }
    }

    #[test]
    fn replay_then_tail_has_no_gaps_or_duplicates() {
        let ch = ChannelName::parse("a").expect("valid");
        let mut subs = Subscriptions::new(1 << 20);
        subs.start(ch.clone(), s(1), info());
        // The tail delivers 4..=5 while replay is still going: ignored.
        assert!(subs.handle_tail(&tail(&ch, 4..=5)).is_empty());
        let (c, from) = subs.next_replay().expect("replay wanted");
        assert_eq!((c.clone(), from), (ch.clone(), s(1)));
        let frames = subs.handle_replay(&ch, from, read(1..=3, true));
        assert_eq!(serials(&frames), vec![1, 2, 3]);
        let (_, from) = subs.next_replay().expect("full read: again");
        let frames = subs.handle_replay(&ch, from, read(4..=5, false));
        assert_eq!(serials(&frames), vec![4, 5]);
        assert!(!subs.wants_replay());
        // Live: overlap with the replay is skipped, new ones pass.
        let frames = subs.handle_tail(&tail(&ch, 5..=7));
        assert_eq!(serials(&frames), vec![6, 7]);
    }

    #[test]
    fn tail_gap_goes_back_to_replay() {
        let ch = ChannelName::parse("a").expect("valid");
        let mut subs = Subscriptions::new(1 << 20);
        subs.start(ch.clone(), s(1), info());
        let (_, from) = subs.next_replay().expect("replay");
        let empty = ReadResult::default();
        assert!(subs.handle_replay(&ch, from, empty).is_empty());
        assert!(subs.handle_tail(&tail(&ch, 3..=4)).is_empty());
        assert_eq!(subs.next_replay(), Some((ch.clone(), s(1))));
    }

    #[test]
    fn replay_gap_is_reported_as_lost() {
        let ch = ChannelName::parse("a").expect("valid");
        let mut subs = Subscriptions::new(1 << 20);
        subs.start(ch.clone(), s(1), info());
        let (_, from) = subs.next_replay().expect("replay");
        let frames = subs.handle_replay(&ch, from, read(5..=6, false));
        assert!(matches!(
            &frames[0],
            Frame::Subscribed {
                next_serial: 5,
                continuity: Continuity::Lost { .. },
                previous: Some(Position { epoch: Epoch(1), serial }),
                ..
            } if serial.get() == 4
        ));
        assert_eq!(serials(&frames), vec![5, 6]);
    }

    #[test]
    fn replays_take_turns_and_stale_results_are_dropped() {
        let a = ChannelName::parse("a").expect("valid");
        let b = ChannelName::parse("b").expect("valid");
        let mut subs = Subscriptions::new(1 << 20);
        subs.start(a.clone(), s(1), info());
        subs.start(b.clone(), s(1), info());
        let (first, from) = subs.next_replay().expect("a");
        assert_eq!(first, a);
        assert_eq!(
            serials(&subs.handle_replay(&a, from, read(1..=2, true))),
            vec![1, 2]
        );
        assert_eq!(subs.next_replay().map(|r| r.0), Some(b.clone()));
        // b is unsubscribed while its read is in flight.
        assert!(subs.remove(&b));
        assert!(subs.handle_replay(&b, s(1), read(1..=2, true)).is_empty());
        assert_eq!(subs.next_replay().map(|r| r.0), Some(a));
        assert_eq!(subs.next_replay(), None);
        assert_eq!(subs.len(), 1);
    }

    #[test]
    fn frames_are_split_by_size() {
        let ch = ChannelName::parse("a").expect("valid");
        let mut subs = Subscriptions::new(FRAME_OVERHEAD + 2 * (MESSAGE_OVERHEAD + 3));
        subs.start(ch.clone(), s(1), info());
        let (_, from) = subs.next_replay().expect("replay");
        let frames = subs.handle_replay(&ch, from, read(1..=5, false));
        assert_eq!(frames.len(), 3);
        assert_eq!(serials(&frames), vec![1, 2, 3, 4, 5]);
        let mut messages: Vec<_> = (1..=5).map(msg).collect();
        truncate_to_frame(&mut messages, FRAME_OVERHEAD + 2 * (MESSAGE_OVERHEAD + 3));
        assert_eq!(messages.len(), 2);
    }
}
