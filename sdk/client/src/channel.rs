//! Attached channels as the application sees them: where to start, the events, and
//! the [`ChannelStream`] that yields them.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tern_protocol::{ErrorInfo, Message, Position};
use tokio::sync::mpsc;

use crate::driver::Command;
use crate::error::ClientError;

/// Where delivery starts when a channel is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachFrom {
    /// With the next message stored after the attach.
    Now,
    /// Right after this position (one the application received earlier, perhaps in
    /// an earlier process, or [`ChannelStream::attached_at`]);
    /// [`Position::BEFORE_FIRST`] (`0:0`) asks for every message from the channel's
    /// first. If that cannot be honoured, the stream's first event is
    /// [`ChannelEvent::ContinuityLost`].
    After(Position),
    /// With the last `n` stored messages (needs the `history` capability).
    Rewind(u32),
    /// With the messages stored within this long before the attach (needs the
    /// `history` capability). Whole milliseconds count.
    RewindSpan(Duration),
}

/// One event of an attached channel.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ChannelEvent {
    /// The next message, in channel order, each exactly once (the client drops what
    /// a re-attach replays at or below the last position it delivered).
    Message {
        /// Its position in the channel.
        position: Position,
        /// The message, with `id`, `timestamp` and (if the publisher had one)
        /// `client_id` set by the server.
        message: Message,
    },
    /// Messages were missed and cannot be replayed (retention removed them, or the
    /// log's history was rebuilt). Delivery continues right after `position`.
    ContinuityLost {
        /// The position delivery continues after.
        position: Position,
        /// The server's explanation, code `ContinuityLost`.
        reason: ErrorInfo,
    },
    /// The channel was detached by the server (or the client stopped for good); the
    /// stream ends after this event.
    Detached(ClientError),
}

/// What the driver hands over once a channel is attached.
pub(crate) struct Attachment {
    pub(crate) events: mpsc::Receiver<ChannelEvent>,
    pub(crate) end: Arc<OnceLock<ClientError>>,
    pub(crate) generation: u64,
    pub(crate) position: Position,
}

/// The events of one attached channel, from [`Client::attach`](crate::Client::attach).
///
/// The stream ends after a [`ChannelEvent::Detached`], or without one when the
/// application detached the channel or closed the client. Dropping it detaches the
/// channel. Events wait in a bounded buffer; when the application reads too slowly
/// the client pauses the channel (nothing is lost) and re-attaches from the last
/// position delivered once there is room again.
pub struct ChannelStream {
    channel: String,
    position: Position,
    generation: u64,
    events: mpsc::Receiver<ChannelEvent>,
    end: Arc<OnceLock<ClientError>>,
    finished: bool,
    commands: mpsc::Sender<Command>,
}

impl ChannelStream {
    pub(crate) fn new(
        channel: String,
        attachment: Attachment,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        Self {
            channel,
            position: attachment.position,
            generation: attachment.generation,
            events: attachment.events,
            end: attachment.end,
            finished: false,
            commands,
        }
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The position the first ATTACHED named: delivery continued right after it
    /// ([`Position::BEFORE_FIRST`], `0:0`, when the channel had no message before
    /// that point).
    pub fn attached_at(&self) -> Position {
        self.position
    }
}

impl Stream for ChannelStream {
    type Item = ChannelEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ChannelEvent>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(event)),
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(self.end.get().cloned().map(ChannelEvent::Detached))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ChannelStream {
    fn drop(&mut self) {
        // Best effort: should the command queue be full, the driver notices the
        // closed stream at its next event and detaches then.
        let _ = self.commands.try_send(Command::Detach {
            channel: std::mem::take(&mut self.channel),
            generation: Some(self.generation),
        });
    }
}
