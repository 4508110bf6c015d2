//! [`Outbox`]: what is waiting to be written to one client connection.
//!
//! Everyone who has something for the connection pushes into its outbox without ever
//! waiting: the hub (ATTACHED, MESSAGE, DETACHED), the publish batcher (publish
//! outcomes) and the connection's own session (ACK, ERROR, HEARTBEAT…). The connection
//! driver is woken, drains the frames and writes them, several per WebSocket message.
//!
//! Frames are already encoded in the connection's format; a MESSAGE frame's bytes are
//! shared (reference counted) by every subscriber of the same format. The frames
//! queued may take at most the byte budget (`limits.outbound_queue_bytes`); a push
//! past it drops the queue and marks the connection a slow consumer, which the driver
//! then disconnects. The log is the buffer, not the edge. ACK and NACK frames
//! ([`Outbox::push_answer`]) are not counted and survive an overflow: there are at most
//! `max_inflight_publishes` of them, and a publish is always answered.
//!
//! ```text
//! hub ──push(frame)──┐
//! batcher ─reply()───┼─▶ Outbox{frames ≤ budget, replies} ──notify──▶ connection driver ─▶ socket
//! session ──push()───┘
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tern_protocol::{ErrorInfo, PublishResult};
use tokio::sync::Notify;

/// The link's answer to one PUBLISH.
#[derive(Debug)]
pub(crate) struct PublishReply {
    /// The PUBLISH answered.
    pub(crate) msg_serial: u64,
    /// Its results, or why it failed.
    pub(crate) result: Result<Vec<PublishResult>, ErrorInfo>,
}

/// A queued frame; `counted` unless it is an ACK/NACK.
#[derive(Debug)]
struct Queued {
    frame: Bytes,
    counted: bool,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Queued>,
    /// Bytes of the counted frames.
    bytes: usize,
    replies: VecDeque<PublishReply>,
    /// Set when a push went over the budget; nothing more is queued but answers.
    overflowed: bool,
    /// Set once the driver took the overflow ([`Outbox::take_overflow`]).
    overflow_taken: bool,
    /// Set when the connection is gone; pushes are dropped.
    closed: bool,
    /// Signalled (once) when the frames drain to a quarter of the budget: the hub's
    /// catch-up reader parked for room waits on it.
    drain_wake: Option<Arc<Notify>>,
}

/// One connection's outbound queue. Shared (`Arc`) between the connection driver and
/// whoever sends to it.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    budget: usize,
}

impl Outbox {
    /// An empty outbox holding at most `budget` bytes of frames.
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            budget,
        }
    }

    /// Queues an encoded frame. Returns false if it was not queued (the connection is
    /// closed or over its budget; in the latter case the driver is told).
    pub(crate) fn push(&self, frame: Bytes) -> bool {
        let accepted = {
            let mut queue = self.queue.lock();
            if queue.closed || queue.overflowed {
                return false;
            }
            if queue.bytes + frame.len() > self.budget {
                queue.overflowed = true;
                queue.frames.retain(|queued| !queued.counted);
                queue.bytes = 0;
                false
            } else {
                queue.bytes += frame.len();
                queue.frames.push_back(Queued {
                    frame,
                    counted: true,
                });
                true
            }
        };
        self.notify.notify_one();
        accepted
    }

    /// Queues an encoded ACK or NACK, in order with the other frames but outside the
    /// budget, also after an overflow (their number is bounded by
    /// `max_inflight_publishes`). Dropped only when the connection is gone.
    pub(crate) fn push_answer(&self, frame: Bytes) {
        {
            let mut queue = self.queue.lock();
            if queue.closed {
                return;
            }
            queue.frames.push_back(Queued {
                frame,
                counted: false,
            });
        }
        self.notify.notify_one();
    }

    /// Queues the answer to a PUBLISH (not counted against the budget: their number is
    /// bounded by `max_inflight_publishes`).
    pub(crate) fn reply(&self, reply: PublishReply) {
        {
            let mut queue = self.queue.lock();
            if queue.closed {
                return;
            }
            queue.replies.push_back(reply);
        }
        self.notify.notify_one();
    }

    /// Bytes of frames queued.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queue.lock().bytes
    }

    /// The byte budget.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Takes up to about `max_bytes` of frames (at least one if any is queued).
    pub(crate) fn drain_frames(&self, max_bytes: usize) -> Vec<Bytes> {
        let mut queue = self.queue.lock();
        let mut frames = Vec::new();
        let mut taken = 0;
        let mut counted = 0;
        while let Some(queued) = queue.frames.front() {
            if !frames.is_empty() && taken + queued.frame.len() > max_bytes {
                break;
            }
            taken += queued.frame.len();
            if let Some(queued) = queue.frames.pop_front() {
                if queued.counted {
                    counted += queued.frame.len();
                }
                frames.push(queued.frame);
            }
        }
        queue.bytes -= counted;
        if queue.bytes <= self.budget / 4
            && let Some(wake) = queue.drain_wake.take()
        {
            wake.notify_one();
        }
        if queue.frames.is_empty() && queue.frames.capacity() > 64 {
            // A burst is over: give its memory back (idle connections stay small).
            queue.frames = VecDeque::new();
        }
        frames
    }

    /// Signals `wake` once the frames queued drain to a quarter of the budget (at once
    /// if they already did). Replaces an earlier wake not signalled yet.
    pub(crate) fn wake_when_drained(&self, wake: &Arc<Notify>) {
        let mut queue = self.queue.lock();
        if queue.bytes <= self.budget / 4 {
            drop(queue);
            wake.notify_one();
        } else {
            queue.drain_wake = Some(Arc::clone(wake));
        }
    }

    /// Takes every publish answer queued.
    pub(crate) fn take_replies(&self) -> Vec<PublishReply> {
        self.queue.lock().replies.drain(..).collect()
    }

    /// True when publish answers are queued or the budget was exceeded and the driver
    /// was not told yet: what the driver must hand to its session.
    pub(crate) fn has_events(&self) -> bool {
        let queue = self.queue.lock();
        !queue.replies.is_empty() || (queue.overflowed && !queue.overflow_taken)
    }

    /// True once a push went over the budget.
    #[cfg(test)]
    pub(crate) fn is_overflowed(&self) -> bool {
        self.queue.lock().overflowed
    }

    /// True the first time it is called after a push went over the budget.
    pub(crate) fn take_overflow(&self) -> bool {
        let mut queue = self.queue.lock();
        let first = queue.overflowed && !queue.overflow_taken;
        queue.overflow_taken |= queue.overflowed;
        first
    }

    /// True when frames are queued.
    pub(crate) fn has_frames(&self) -> bool {
        !self.queue.lock().frames.is_empty()
    }

    /// Marks the connection gone: later pushes are dropped, queued ones freed.
    pub(crate) fn close(&self) {
        let mut queue = self.queue.lock();
        queue.closed = true;
        queue.frames = VecDeque::new();
        queue.bytes = 0;
        queue.replies = VecDeque::new();
    }

    /// Resolves when something was pushed since the last call (or is pending).
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_drops_the_queue_and_says_so() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(Bytes::from_static(b"12345")));
        assert!(outbox.push(Bytes::from_static(b"12345")));
        assert_eq!(outbox.queued_bytes(), 10);
        assert!(!outbox.push(Bytes::from_static(b"1")));
        assert!(outbox.is_overflowed());
        assert!(outbox.drain_frames(usize::MAX).is_empty());
        assert!(!outbox.push(Bytes::from_static(b"1")));
        assert!(outbox.has_events());
        assert!(outbox.take_overflow());
        assert!(!outbox.take_overflow());
        assert!(!outbox.has_events(), "told once");
    }

    #[test]
    fn answers_are_outside_the_budget_and_survive_an_overflow() {
        let outbox = Outbox::new(10);
        assert!(outbox.push(Bytes::from_static(b"12345")));
        outbox.push_answer(Bytes::from_static(b"ack-1-over-the-budget"));
        assert_eq!(outbox.queued_bytes(), 5);
        assert!(outbox.push(Bytes::from_static(b"12345")));
        assert!(!outbox.push(Bytes::from_static(b"1")));
        outbox.push_answer(Bytes::from_static(b"ack-2"));
        assert_eq!(
            outbox.drain_frames(usize::MAX),
            [
                Bytes::from_static(b"ack-1-over-the-budget"),
                Bytes::from_static(b"ack-2")
            ]
        );
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn drain_takes_at_least_one_frame_and_respects_the_size() {
        let outbox = Outbox::new(100);
        for _ in 0..4 {
            outbox.push(Bytes::from_static(b"0123456789"));
        }
        outbox.reply(PublishReply {
            msg_serial: 1,
            result: Ok(vec![]),
        });
        assert_eq!(outbox.drain_frames(25).len(), 2);
        assert_eq!(outbox.take_replies().len(), 1);
        assert_eq!(outbox.queued_bytes(), 20);
        assert_eq!(outbox.drain_frames(1).len(), 1);
        assert_eq!(outbox.drain_frames(1000).len(), 1);
        assert!(!outbox.has_frames());
        outbox.close();
        assert!(!outbox.push(Bytes::from_static(b"x")));
    }
}
