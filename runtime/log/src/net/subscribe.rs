//! [`Subscription`]: one link stream following one or more channels.
//!
//! The node answers each subscribe with [`SubscriptionEvent::Subscribed`] (where
//! delivery starts, and whether that continues the position asked for), then sends the
//! stored messages after it, then new ones as they become durable, in serial order
//! without gaps or repeats. A stream that falls behind is dropped by the node; the
//! last event then is [`SubscriptionEvent::Closed`] with an error for which
//! [`ClientError::is_slow_consumer`] holds: subscribe again from the last position
//! received.
//!
//! Events are read only when asked for ([`Subscription::next_event`]): a caller that
//! stops asking stops the stream (QUIC flow control), which the node treats as a slow
//! consumer. [`Subscription::next_event`] is cancel-safe, so it can sit in a
//! `tokio::select!`.

use std::collections::VecDeque;

use quinn::{RecvStream, SendStream};
use tern_link::{
    ChannelName, Continuity, ErrorCode, Frame, FrameDecoder, Position, Serial, StoredMessage,
    SubscribeFrom, WireError, encode_to_vec,
};

use super::client::{ClientError, READ_CHUNK};
use super::codes;

/// What a [`Subscription`] delivers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// `channel` is followed; the next message delivered for it has `next_serial`.
    /// May come again mid-stream with [`Continuity::Lost`] (and no `previous`) if
    /// retention removed messages before they could be replayed.
    Subscribed {
        /// The channel.
        channel: ChannelName,
        /// The serial of the next message delivered for it.
        next_serial: Serial,
        /// The position of the message right before `next_serial`, if the node still
        /// stored it when it answered; `None` when `next_serial` is the channel's
        /// first serial or that message was removed by retention. After
        /// [`SubscribeFrom::Latest`] it is the channel's last stored position.
        previous: Option<Position>,
        /// The channel's last durable position when the node answered (`None`: it
        /// held nothing): delivered up to there, the subscriber has caught up.
        last: Option<Position>,
        /// Whether that continues the position asked for.
        continuity: Continuity,
    },
    /// Durable messages of `channel`, in serial order, contiguous with the previous ones.
    Messages {
        /// The channel.
        channel: ChannelName,
        /// The messages.
        messages: Vec<StoredMessage>,
    },
    /// `channel` is no longer followed (asked for, or its replay failed after an
    /// [`SubscriptionEvent::Error`]).
    Unsubscribed {
        /// The channel.
        channel: ChannelName,
    },
    /// A non-fatal error from the node (for example a refused subscribe); the stream
    /// goes on.
    Error(WireError),
    /// The stream is over; nothing follows. Why, including a slow-consumer drop.
    Closed(ClientError),
}

/// One subscription stream. Dropping it ends the stream.
#[derive(Debug)]
pub struct Subscription {
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
    max_frame_bytes: usize,
    ready: VecDeque<SubscriptionEvent>,
    /// Set once `Closed` was queued.
    closed: bool,
}

impl Subscription {
    pub(super) fn new(send: SendStream, recv: RecvStream, max_frame_bytes: usize) -> Self {
        Self {
            send,
            recv,
            decoder: FrameDecoder::new(max_frame_bytes),
            max_frame_bytes,
            ready: VecDeque::new(),
            closed: false,
        }
    }

    /// Also follows `channel` on this stream, from where `from` says. Subscribing to a
    /// channel already followed restarts it from `from`.
    pub async fn add(
        &mut self,
        channel: &ChannelName,
        from: SubscribeFrom,
    ) -> Result<(), ClientError> {
        self.send_frame(&Frame::Subscribe {
            channel: channel.to_string(),
            from,
        })
        .await
    }

    /// Stops following `channel`; [`SubscriptionEvent::Unsubscribed`] confirms it.
    /// Messages already on their way may still arrive before that.
    pub async fn remove(&mut self, channel: &ChannelName) -> Result<(), ClientError> {
        self.send_frame(&Frame::Unsubscribe {
            channel: channel.to_string(),
        })
        .await
    }

    async fn send_frame(&mut self, frame: &Frame) -> Result<(), ClientError> {
        let bytes = encode_to_vec(frame, self.max_frame_bytes).map_err(ClientError::TooLarge)?;
        self.send
            .write_all(&bytes)
            .await
            .map_err(|e| ClientError::ConnectionLost(e.to_string()))
    }

    /// The next event; `None` after [`SubscriptionEvent::Closed`] was returned.
    /// Cancel-safe.
    pub async fn next_event(&mut self) -> Option<SubscriptionEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if self.closed {
                return None;
            }
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.handle_frame(frame);
                    continue;
                }
                Ok(None) => {}
                Err(error) if error.is_fatal() => {
                    self.close(ClientError::Protocol(error.to_string()));
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "undecodable frame on a subscription stream");
                    continue;
                }
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.decoder.extend(&chunk.bytes),
                Ok(None) => self.close(ClientError::ConnectionLost(
                    "the node ended the subscription stream".into(),
                )),
                Err(quinn::ReadError::Reset(code)) => self.close(reset_error(code)),
                Err(error) => self.close(ClientError::ConnectionLost(error.to_string())),
            }
        }
    }

    fn close(&mut self, error: ClientError) {
        if !self.closed {
            self.closed = true;
            let _ = self.recv.stop(codes::DONE);
            self.ready.push_back(SubscriptionEvent::Closed(error));
        }
    }

    fn handle_frame(&mut self, frame: Frame) {
        let event = match frame {
            Frame::Subscribed {
                channel,
                next_serial,
                previous,
                last,
                continuity,
            } => match (ChannelName::parse(&channel), Serial::new(next_serial)) {
                (Ok(channel), Some(next_serial))
                    if previous.is_none_or(|p| p.serial.next() == next_serial) =>
                {
                    SubscriptionEvent::Subscribed {
                        channel,
                        next_serial,
                        previous,
                        last,
                        continuity,
                    }
                }
                _ => {
                    return self.close(ClientError::Protocol(format!(
                        "Subscribed frame with channel {channel:?}, serial {next_serial} and previous {previous:?}"
                    )));
                }
            },
            Frame::Messages { channel, messages } => match ChannelName::parse(&channel) {
                Ok(channel) => SubscriptionEvent::Messages { channel, messages },
                Err(_) => {
                    return self.close(ClientError::Protocol(format!(
                        "Messages frame for invalid channel {channel:?}"
                    )));
                }
            },
            Frame::Unsubscribed { channel } => match ChannelName::parse(&channel) {
                Ok(channel) => SubscriptionEvent::Unsubscribed { channel },
                Err(_) => {
                    // The answer to unsubscribing a name that was never valid.
                    return;
                }
            },
            Frame::Error(error) if error.fatal => return self.close(ClientError::Server(error)),
            Frame::Error(error) => SubscriptionEvent::Error(error),
            other => {
                return self.close(ClientError::Protocol(format!(
                    "unexpected {} frame on a subscription stream",
                    other.kind()
                )));
            }
        };
        self.ready.push_back(event);
    }
}

/// The error for a stream the node reset instead of sending a last frame.
fn reset_error(code: quinn::VarInt) -> ClientError {
    let (code, message) = if code == codes::SLOW_CONSUMER {
        (
            ErrorCode::SlowConsumer,
            "subscriber too slow; dropped by the log node",
        )
    } else if code == codes::SHUTTING_DOWN {
        (ErrorCode::ShuttingDown, "the log node is shutting down")
    } else if code == codes::PROTOCOL {
        (
            ErrorCode::MalformedFrame,
            "the log node saw a protocol error",
        )
    } else {
        return ClientError::ConnectionLost(format!("stream reset by the node (code {code})"));
    };
    ClientError::Server(WireError::new(code, message).fatal())
}
