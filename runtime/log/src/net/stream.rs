//! The driver of one link stream on the log node: frames in, store calls, frames out.
//!
//! One task per bidirectional stream runs [`serve_stream`]: a single `select!` loop
//! over the inbound bytes, the answers of in-flight requests, the store's tail, replay
//! reads and the outbound writes, so nothing on the stream needs a lock and nothing on
//! it can hold up another stream.
//!
//! ```text
//! recv ─▶ FrameDecoder ─▶ Publish ─▶ store.append ┐ in flight (≤ max_inflight),
//!                         Read ────▶ store.read ──┤ publishes and reads answered in order
//!                         Subscribe ─▶ resolve ─▶ Subscriptions ◀─ replay reads / store.tail()
//!                                                   │
//!                                  outbox (bounded) ◀┘ ─▶ encode ─▶ send
//! ```
//!
//! Backpressure: while the outbox holds `subscriber_queue_frames` frames or about one
//! largest frame's worth of bytes, the stream stops reading requests (QUIC flow
//! control then holds the peer back), stops taking answers of in-flight requests (so
//! their futures are not polled and load nothing more; at most four reads are loading
//! or loaded and waiting for the outbox, a fifth waits undecoded) and replay pauses. A commit that finds the outbox already full (in frames, or
//! four largest frames' worth of bytes), or a tail receiver that lagged, drops the
//! subscriber with `SlowConsumer`, because waiting would either stall this stream's
//! other work or lose messages. Appends and other streams never wait on a slow
//! reader: the tail is a broadcast channel.
//!
//! Errors from the peer: a malformed frame is answered with a non-fatal `Error` and
//! the stream goes on; an oversized frame or an unknown protocol version ends the
//! stream after a fatal `Error` (in-flight requests are still answered first).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{FuturesOrdered, StreamExt};
use quinn::{RecvStream, SendStream};
use tern_link::{
    ChannelName, DecodeError, ErrorCode, Frame, FrameDecoder, Outcome, PublishMessage, Serial,
    SubscribeFrom, WireError, encode_frame,
};
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use super::codes;
use super::subscriptions::{Subscriptions, truncate_to_frame};
use crate::resume::resolve;
use crate::store::{AppendOutcome, AppendRequest, CommittedBatch, LogStore, ReadLimit, ReadResult};

/// Largest chunk taken from the receive side at once.
const READ_CHUNK: usize = 64 * 1024;
/// Encoded bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// How long a closing stream waits for the peer to take and acknowledge its last bytes
/// before the task lets go (the connection may be closed right after at shutdown).
const LINGER: Duration = Duration::from_secs(2);

/// The limits of one stream, from `LinkServerConfig`.
#[derive(Clone, Debug)]
pub(crate) struct StreamConfig {
    /// Largest frame accepted or sent, length prefix included.
    pub(crate) max_frame_bytes: usize,
    /// Publish and read requests in flight per stream.
    pub(crate) max_inflight: usize,
    /// Outbound frames queued before the subscriber counts as slow.
    pub(crate) queue_frames: usize,
    /// Most messages per read answer and per replay read.
    pub(crate) read_batch: usize,
}

/// How a stream ended, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The peer finished and everything was answered.
    Done,
    /// Closed after a fatal error frame (protocol error, shutdown, store closed).
    Closed(ErrorCode),
    /// The subscriber could not keep up and was dropped.
    SlowConsumer,
    /// The peer went away (reset, stop, connection lost).
    PeerGone,
}

/// An answer being computed, and whether it answers a read (counted in
/// `reads_pending` until it is in the outbox).
type Answer = Pin<Box<dyn Future<Output = (Frame, bool)> + Send>>;

/// Serves one bidirectional stream until the peer is done, a fatal error, or shutdown.
pub(crate) async fn serve_stream<S: LogStore>(
    store: Arc<S>,
    config: Arc<StreamConfig>,
    send: SendStream,
    recv: RecvStream,
    shutdown: watch::Receiver<bool>,
) -> Ended {
    let driver = StreamDriver {
        decoder: FrameDecoder::new(config.max_frame_bytes),
        subs: Subscriptions::new(config.max_frame_bytes),
        store,
        config,
        send,
        recv,
        shutdown,
        reading: true,
        decode_paused: false,
        closing: None,
        close_queued: false,
        close_deadline: None,
        inflight: FuturesOrdered::new(),
        tail: None,
        outbox: Outbox::default(),
        reads_pending: 0,
        stashed: None,
        wbuf: Vec::new(),
        woff: 0,
    };
    driver.run().await
}

struct StreamDriver<S> {
    store: Arc<S>,
    config: Arc<StreamConfig>,
    send: SendStream,
    recv: RecvStream,
    shutdown: watch::Receiver<bool>,
    decoder: FrameDecoder,
    /// The peer may still send requests.
    reading: bool,
    /// Decoding stopped with frames possibly still buffered, because the outbox was full.
    decode_paused: bool,
    /// The fatal error to send once in-flight requests are answered.
    closing: Option<WireError>,
    close_queued: bool,
    /// Once closing, the peer has until then to take the last frames.
    close_deadline: Option<tokio::time::Instant>,
    inflight: FuturesOrdered<Answer>,
    subs: Subscriptions,
    /// Present while `subs` is not empty: created before the first replay read.
    tail: Option<broadcast::Receiver<Arc<CommittedBatch>>>,
    outbox: Outbox,
    /// Reads answered or being answered that are not in the outbox yet (at most
    /// [`READS_IN_FLIGHT`]): a loaded answer waiting for its turn holds memory too.
    reads_pending: usize,
    /// A read decoded while [`READS_IN_FLIGHT`] were pending: handled (and decoding
    /// goes on) once one of them is in the outbox.
    stashed: Option<Frame>,
    /// Encoded bytes being written; `woff` of them are already sent.
    wbuf: Vec<u8>,
    woff: usize,
}

/// Frames waiting to be encoded and sent, with an estimate of their bytes, so a
/// peer that does not read bounds what the node holds for it.
#[derive(Default)]
struct Outbox {
    frames: VecDeque<Frame>,
    bytes: usize,
}

impl Outbox {
    fn push_back(&mut self, frame: Frame) {
        self.bytes += approx_bytes(&frame);
        self.frames.push_back(frame);
    }

    fn extend(&mut self, frames: impl IntoIterator<Item = Frame>) {
        for frame in frames {
            self.push_back(frame);
        }
    }

    fn pop_front(&mut self) -> Option<Frame> {
        let frame = self.frames.pop_front()?;
        self.bytes = self.bytes.saturating_sub(approx_bytes(&frame));
        Some(frame)
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn retain(&mut self, keep: impl FnMut(&Frame) -> bool) {
        self.frames.retain(keep);
        self.bytes = self.frames.iter().map(approx_bytes).sum();
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// About how many bytes `frame` takes encoded (exact enough for budgets).
fn approx_bytes(frame: &Frame) -> usize {
    let messages = |messages: &[tern_link::StoredMessage]| -> usize {
        messages
            .iter()
            .map(|m| {
                32 + m.idempotency_key.len()
                    + m.payload.len()
                    + m.headers
                        .iter()
                        .map(|(k, v)| 4 + k.len() + v.len())
                        .sum::<usize>()
            })
            .sum()
    };
    64 + match frame {
        Frame::ReadResult { messages: m, .. } | Frame::Messages { messages: m, .. } => messages(m),
        Frame::PublishResult { outcomes, .. } => outcomes
            .iter()
            .map(|o| match o {
                Outcome::Rejected(e) => 16 + e.message.len(),
                _ => 16,
            })
            .sum(),
        Frame::Error(e) | Frame::RequestFailed { error: e, .. } => e.message.len(),
        _ => 256,
    }
}

/// Reads of one stream loading, or loaded and waiting for the outbox, at once; a
/// further read waits undecoded (and the requests after it with it: answers go in
/// order anyway), so a burst of reads cannot make the node load far more than it may
/// queue.
const READS_IN_FLIGHT: usize = 4;

/// Whether the loop goes on after handling an event.
enum Flow {
    Continue,
    End(Ended),
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_tail(
    tail: Option<&mut broadcast::Receiver<Arc<CommittedBatch>>>,
) -> Result<Arc<CommittedBatch>, broadcast::error::RecvError> {
    match tail {
        Some(tail) => tail.recv().await,
        None => std::future::pending().await,
    }
}

impl<S: LogStore> StreamDriver<S> {
    async fn run(mut self) -> Ended {
        let stopped = self.send.stopped();
        tokio::pin!(stopped);
        if *self.shutdown.borrow() {
            self.begin_close(
                WireError::new(ErrorCode::ShuttingDown, "the log node is shutting down").fatal(),
                codes::SHUTTING_DOWN,
            );
        }
        let cap = self.config.queue_frames;
        // What may wait for the peer: one largest frame's worth.
        let budget = self.config.max_frame_bytes.max(1 << 20);
        loop {
            let room = self.outbox.len() < cap && self.outbox.bytes() < budget;
            if self.decode_paused && room {
                self.decode_frames().await;
            }
            self.fill_write_buffer();
            if self.is_done() {
                return self.finish().await;
            }
            let room = self.outbox.len() < cap && self.outbox.bytes() < budget;
            let can_read = self.reading && !self.decode_paused && self.closing.is_none() && room;
            let can_replay = self.subs.wants_replay()
                && self.outbox.len() <= cap / 2
                && self.outbox.bytes() < budget / 2;
            let writing = self.woff < self.wbuf.len();
            let flow = tokio::select! {
                biased;
                _ = self.shutdown.changed(), if self.closing.is_none() => {
                    self.begin_close(
                        WireError::new(ErrorCode::ShuttingDown, "the log node is shutting down")
                            .fatal(),
                        codes::SHUTTING_DOWN,
                    );
                    Flow::Continue
                }
                _ = &mut stopped => Flow::End(Ended::PeerGone),
                written = self.send.write(&self.wbuf[self.woff..]), if writing => match written {
                    Ok(n) => {
                        self.woff += n;
                        Flow::Continue
                    }
                    Err(error) => {
                        debug!(%error, "write failed; peer gone");
                        Flow::End(Ended::PeerGone)
                    }
                },
                event = next_tail(self.tail.as_mut()), if self.tail.is_some() => {
                    self.handle_tail(event)
                }
                // Answers are taken only while there is room: until then the
                // futures are not polled, so nothing more is loaded.
                Some((answer, is_read)) = self.inflight.next(), if !self.inflight.is_empty() && room => {
                    self.outbox.push_back(answer);
                    if is_read {
                        self.reads_pending -= 1;
                    }
                    Flow::Continue
                }
                chunk = self.recv.read_chunk(READ_CHUNK, true), if can_read => {
                    self.handle_chunk(chunk).await
                }
                () = std::future::ready(()), if can_replay => self.replay_one().await,
                () = sleep_until(self.close_deadline), if self.close_deadline.is_some() => {
                    debug!("peer did not take the last frames in time; resetting the stream");
                    let _ = self.send.reset(codes::PROTOCOL);
                    Flow::End(Ended::PeerGone)
                }
            };
            if let Flow::End(ended) = flow {
                return ended;
            }
        }
    }

    /// Nothing left to do: the peer is done (or we are closing), every request is
    /// answered, no subscription remains and every byte is handed to QUIC.
    fn is_done(&self) -> bool {
        !self.reading
            && self.inflight.is_empty()
            && self.subs.is_empty()
            && self.outbox.is_empty()
            && self.woff == self.wbuf.len()
            && (self.closing.is_none() || self.close_queued)
    }

    async fn finish(mut self) -> Ended {
        let ended = match &self.closing {
            Some(error) => Ended::Closed(error.code),
            None => Ended::Done,
        };
        if self.send.finish().is_ok() {
            // Best effort: let the last bytes arrive before the task (and maybe the
            // connection) goes away.
            let _ = tokio::time::timeout(LINGER, self.send.stopped()).await;
        }
        ended
    }

    /// Moves outbox frames into the write buffer, once the previous write is done.
    fn fill_write_buffer(&mut self) {
        if self.closing.is_some() && !self.close_queued && self.inflight.is_empty() {
            if let Some(error) = self.closing.clone() {
                self.outbox.push_back(Frame::Error(error));
            }
            self.close_queued = true;
            self.close_deadline = Some(tokio::time::Instant::now() + LINGER);
        }
        if self.woff < self.wbuf.len() {
            return;
        }
        self.wbuf.clear();
        self.woff = 0;
        while self.wbuf.len() < WRITE_BATCH {
            let Some(frame) = self.outbox.pop_front() else {
                break;
            };
            if let Err(error) = encode_frame(&frame, &mut self.wbuf, self.config.max_frame_bytes) {
                self.encode_failed(&frame, &error);
            }
        }
    }

    /// A frame of ours did not encode. Answers are cut to fit and a message always fits
    /// in a frame (config validation), so this is a bug; still, never leave a request
    /// unanswered or skip a message silently.
    fn encode_failed(&mut self, frame: &Frame, error: &tern_link::EncodeError) {
        warn!(kind = frame.kind(), %error, "outbound frame could not be encoded");
        let request_id = match frame {
            Frame::PublishResult { request_id, .. }
            | Frame::ReadResult { request_id, .. }
            | Frame::RequestFailed { request_id, .. } => Some(*request_id),
            _ => None,
        };
        let message = format!("an answer could not be encoded: {error}");
        match request_id {
            Some(request_id) => {
                let failed = Frame::RequestFailed {
                    request_id,
                    error: WireError::new(ErrorCode::Internal, message),
                };
                if let Err(error) =
                    encode_frame(&failed, &mut self.wbuf, self.config.max_frame_bytes)
                {
                    warn!(%error, "error answer could not be encoded either");
                }
            }
            None if self.closing.is_none() => {
                // A lost `Messages` frame would be a silent gap: end the stream instead,
                // so the subscriber resubscribes from what it has; later messages must
                // not go out either.
                self.outbox.retain(|f| !matches!(f, Frame::Messages { .. }));
                self.begin_close(
                    WireError::new(ErrorCode::Internal, message).fatal(),
                    codes::PROTOCOL,
                );
            }
            None => {}
        }
    }

    /// Stops reading and following, and queues `error` to be sent once every request
    /// in flight is answered.
    fn begin_close(&mut self, error: WireError, code: quinn::VarInt) {
        if self.reading {
            // Fails only if the stream is already stopped or finished: nothing to do.
            let _ = self.recv.stop(code);
            self.reading = false;
        }
        self.subs = Subscriptions::new(self.config.max_frame_bytes);
        self.tail = None;
        self.closing = Some(error);
    }

    /// Drops a subscriber that fell behind: a last `SlowConsumer` error if it fits in
    /// the send window right now, else a reset with [`codes::SLOW_CONSUMER`].
    fn slow_consumer(&mut self, why: &str) -> Flow {
        warn!(channels = self.subs.len(), why, "dropping slow subscriber");
        let _ = self.recv.stop(codes::SLOW_CONSUMER);
        let error = WireError::new(
            ErrorCode::SlowConsumer,
            format!("subscriber too slow ({why}); resubscribe from the last position received"),
        )
        .fatal();
        let mut last = Vec::new();
        let sent = self.woff == 0
            && encode_frame(&Frame::Error(error), &mut last, self.config.max_frame_bytes).is_ok()
            && matches!(self.send.write_all(&last).now_or_never(), Some(Ok(())))
            && self.send.finish().is_ok();
        if !sent {
            let _ = self.send.reset(codes::SLOW_CONSUMER);
        }
        Flow::End(Ended::SlowConsumer)
    }

    fn handle_tail(
        &mut self,
        event: Result<Arc<CommittedBatch>, broadcast::error::RecvError>,
    ) -> Flow {
        match event {
            Ok(batch) => {
                let frames = self.subs.handle_tail(&batch);
                // Slow means the queue was already full before this commit: one
                // commit may touch more channels than the queue holds frames. The
                // byte bound is looser than for answers, so a subscriber that keeps
                // up with large messages is not dropped between two writes.
                let full = self.outbox.len() >= self.config.queue_frames
                    || self.outbox.bytes() >= 4 * self.config.max_frame_bytes.max(1 << 20);
                if !frames.is_empty() && full {
                    return self.slow_consumer("outbound queue full");
                }
                self.outbox.extend(frames);
                Flow::Continue
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                self.slow_consumer(&format!("fell {missed} commits behind the store's tail"))
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.begin_close(
                    WireError::new(ErrorCode::ShuttingDown, "the store is closed").fatal(),
                    codes::SHUTTING_DOWN,
                );
                Flow::Continue
            }
        }
    }

    async fn handle_chunk(
        &mut self,
        chunk: Result<Option<quinn::Chunk>, quinn::ReadError>,
    ) -> Flow {
        match chunk {
            Ok(Some(chunk)) => {
                self.decoder.extend(&chunk.bytes);
                self.decode_frames().await;
                Flow::Continue
            }
            Ok(None) => {
                if self.decoder.buffered() > 0 {
                    debug!(
                        bytes = self.decoder.buffered(),
                        "peer finished in the middle of a frame"
                    );
                }
                self.reading = false;
                Flow::Continue
            }
            Err(error) => {
                debug!(%error, "receive side failed; peer gone");
                Flow::End(Ended::PeerGone)
            }
        }
    }

    /// Handles the complete frames buffered in the decoder, pausing while the outbox is
    /// full so that a burst of small requests cannot grow it without bound.
    async fn decode_frames(&mut self) {
        self.decode_paused = false;
        while self.reading {
            if self.outbox.len() >= self.config.queue_frames {
                self.decode_paused = true;
                break;
            }
            let next = match self.stashed.take() {
                Some(frame) => Ok(Some(frame)),
                None => self.decoder.next_frame(),
            };
            match next {
                Ok(Some(frame @ (Frame::Read { .. } | Frame::ReadSince { .. })))
                    if self.reads_pending >= READS_IN_FLIGHT =>
                {
                    self.stashed = Some(frame);
                    self.decode_paused = true;
                    break;
                }
                Ok(Some(frame)) => self.handle_frame(frame).await,
                Ok(None) => break,
                Err(error @ DecodeError::Malformed(_)) => {
                    info!(%error, "malformed frame from peer; skipped");
                    self.outbox.push_back(Frame::Error(WireError::new(
                        ErrorCode::MalformedFrame,
                        error.to_string(),
                    )));
                }
                Err(error) => {
                    info!(%error, "fatal protocol error from peer; closing the stream");
                    let code = match error {
                        DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
                        _ => ErrorCode::FrameTooLarge,
                    };
                    self.begin_close(
                        WireError::new(code, error.to_string()).fatal(),
                        codes::PROTOCOL,
                    );
                }
            }
        }
    }

    async fn handle_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Publish {
                request_id,
                messages,
            } => self.handle_publish(request_id, messages),
            Frame::Read {
                request_id,
                channel,
                from_serial,
                limit,
            } => {
                // Serial 0 does not exist; reading "from 0" means from the start.
                let from = Serial::new(from_serial).unwrap_or(Serial::FIRST);
                self.handle_read(request_id, channel, ReadStart::Serial(from), limit);
            }
            Frame::ReadSince {
                request_id,
                channel,
                since_ms,
                limit,
            } => self.handle_read(request_id, channel, ReadStart::Since(since_ms), limit),
            Frame::Subscribe { channel, from } => self.handle_subscribe(channel, from).await,
            Frame::Unsubscribe { channel } => {
                if let Ok(name) = ChannelName::parse(&channel) {
                    self.subs.remove(&name);
                }
                if self.subs.is_empty() {
                    self.tail = None;
                }
                self.outbox.push_back(Frame::Unsubscribed { channel });
            }
            Frame::Ping { nonce } => self.outbox.push_back(Frame::Pong { nonce }),
            Frame::Error(error) => {
                info!(code = ?error.code, message = %error.message, fatal = error.fatal, "peer reported an error");
            }
            other => {
                let kind = other.kind();
                info!(kind, "peer sent a frame only the log sends; ignored");
                self.outbox.push_back(Frame::Error(WireError::new(
                    ErrorCode::MalformedFrame,
                    format!("{kind} frames are not accepted by the log"),
                )));
            }
        }
    }

    /// Refuses the request when too many are in flight; true if it may go ahead.
    fn admit(&mut self, request_id: u64) -> bool {
        if self.inflight.len() < self.config.max_inflight {
            return true;
        }
        self.outbox.push_back(Frame::RequestFailed {
            request_id,
            error: WireError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "{} requests already in flight on this stream",
                    self.config.max_inflight
                ),
            ),
        });
        false
    }

    fn handle_publish(&mut self, request_id: u64, messages: Vec<PublishMessage>) {
        if !self.admit(request_id) {
            return;
        }
        // Messages with a bad channel are refused on their own; the rest go to the store.
        let mut refused: Vec<Option<Outcome>> = Vec::with_capacity(messages.len());
        let mut batch = Vec::with_capacity(messages.len());
        for message in messages {
            match ChannelName::parse(&message.channel) {
                Ok(channel) => {
                    refused.push(None);
                    batch.push(AppendRequest {
                        channel,
                        idempotency_key: message.idempotency_key,
                        headers: message.headers,
                        payload: message.payload,
                    });
                }
                Err(error) => refused.push(Some(Outcome::Rejected(WireError::new(
                    ErrorCode::InvalidChannel,
                    format!("channel {:?}: {error}", message.channel),
                )))),
            }
        }
        let store = Arc::clone(&self.store);
        self.inflight.push_back(Box::pin(async move {
            let appended = if batch.is_empty() {
                Ok(Vec::new())
            } else {
                store.append(batch).await
            };
            let answer = match appended {
                Ok(results) => merge_outcomes(request_id, refused, results),
                Err(error) => {
                    warn!(request_id, %error, "append failed");
                    Frame::RequestFailed {
                        request_id,
                        error: error.to_wire(),
                    }
                }
            };
            (answer, false)
        }));
    }

    fn handle_read(&mut self, request_id: u64, channel: String, start: ReadStart, limit: u32) {
        if !self.admit(request_id) {
            return;
        }
        let name = match ChannelName::parse(&channel) {
            Ok(name) => name,
            Err(error) => {
                self.outbox.push_back(Frame::RequestFailed {
                    request_id,
                    error: WireError::new(
                        ErrorCode::InvalidChannel,
                        format!("channel {channel:?}: {error}"),
                    ),
                });
                return;
            }
        };
        let limit = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(self.config.read_batch);
        let max_frame_bytes = self.config.max_frame_bytes;
        // Load no more than one answer frame can carry.
        let limit = ReadLimit {
            messages: limit,
            bytes: max_frame_bytes,
        };
        let store = Arc::clone(&self.store);
        self.reads_pending += 1;
        self.inflight.push_back(Box::pin(async move {
            let read = match start {
                ReadStart::Serial(from) => store.read(&name, from, limit).await,
                ReadStart::Since(since_ms) => match store.first_serial_since(&name, since_ms).await
                {
                    Ok(Some(from)) => store.read(&name, from, limit).await,
                    // Nothing stored since: no messages, and where the channel starts.
                    Ok(None) => store.channel_info(&name).await.map(|info| ReadResult {
                        first_serial: info.first_serial,
                        last: info.last,
                        ..ReadResult::default()
                    }),
                    Err(error) => Err(error),
                },
            };
            let answer = match read {
                Ok(mut read) => {
                    let cut = truncate_to_frame(&mut read.messages, max_frame_bytes);
                    Frame::ReadResult {
                        request_id,
                        channel,
                        messages: read.messages,
                        first_serial: read.first_serial.map(Serial::get),
                        more: read.more || cut,
                        last: read.last,
                    }
                }
                Err(error) => {
                    warn!(request_id, %channel, %error, "read failed");
                    Frame::RequestFailed {
                        request_id,
                        error: error.to_wire(),
                    }
                }
            };
            (answer, true)
        }));
    }

    async fn handle_subscribe(&mut self, channel: String, from: SubscribeFrom) {
        let name = match ChannelName::parse(&channel) {
            Ok(name) => name,
            Err(error) => {
                self.outbox.push_back(Frame::Error(WireError::new(
                    ErrorCode::InvalidChannel,
                    format!("cannot subscribe to channel {channel:?}: {error}"),
                )));
                return;
            }
        };
        // The receiver must exist before anything of the channel is read, so that
        // whatever the read misses arrives on it (see `LogStore`).
        if self.tail.is_none() {
            self.tail = Some(self.store.tail());
        }
        match self.store.channel_info(&name).await {
            Ok(info) => {
                // For `Latest` the tail receiver above already exists, so whatever
                // commits after `info` was taken reaches this subscriber by replay or
                // tail; what `info` counted as stored is skipped.
                let resume = resolve(&info, from);
                debug!(%name, ?from, next = %resume.next, previous = ?resume.previous, continuity = ?resume.continuity, "subscribed");
                let last = info.last;
                self.subs.start(name, resume.next, info);
                self.outbox.push_back(Frame::Subscribed {
                    channel,
                    next_serial: resume.next.get(),
                    previous: resume.previous,
                    last,
                    continuity: resume.continuity,
                });
            }
            Err(error) => {
                warn!(%name, %error, "subscribe failed");
                if self.subs.is_empty() {
                    self.tail = None;
                }
                let mut wire = error.to_wire();
                wire.message = format!("cannot subscribe to channel {channel:?}: {}", wire.message);
                self.outbox.push_back(Frame::Error(wire));
            }
        }
    }

    /// Reads one chunk for the next replaying channel.
    async fn replay_one(&mut self) -> Flow {
        let Some((channel, from)) = self.subs.next_replay() else {
            return Flow::Continue;
        };
        // One chunk is at most a frame's worth, whatever the messages' sizes.
        let limit = ReadLimit {
            messages: self.config.read_batch.max(1),
            bytes: self.config.max_frame_bytes,
        };
        match self.store.read(&channel, from, limit).await {
            Ok(read) => {
                let frames = self.subs.handle_replay(&channel, from, read);
                self.outbox.extend(frames);
            }
            Err(error) => {
                warn!(%channel, %from, %error, "replay read failed; ending the subscription");
                self.subs.remove(&channel);
                if self.subs.is_empty() {
                    self.tail = None;
                }
                let mut wire = error.to_wire();
                wire.message = format!("replay of channel {channel} failed: {}", wire.message);
                self.outbox.push_back(Frame::Error(wire));
                self.outbox.push_back(Frame::Unsubscribed {
                    channel: channel.to_string(),
                });
            }
        }
        Flow::Continue
    }
}

/// Puts the store's outcomes back among the messages refused before the store.
fn merge_outcomes(
    request_id: u64,
    refused: Vec<Option<Outcome>>,
    results: Vec<AppendOutcome>,
) -> Frame {
    let mut results = results.into_iter();
    let mut outcomes = Vec::with_capacity(refused.len());
    for slot in refused {
        let outcome = match slot {
            Some(outcome) => outcome,
            None => match results.next() {
                Some(AppendOutcome::Appended(position)) => Outcome::Appended(position),
                Some(AppendOutcome::Duplicate(position)) => Outcome::Duplicate(position),
                Some(AppendOutcome::Rejected(error)) => Outcome::Rejected(error.to_wire()),
                None => {
                    return store_miscounted(request_id);
                }
            },
        };
        outcomes.push(outcome);
    }
    if results.next().is_some() {
        return store_miscounted(request_id);
    }
    Frame::PublishResult {
        request_id,
        outcomes,
    }
}

fn store_miscounted(request_id: u64) -> Frame {
    warn!(
        request_id,
        "store returned a different number of outcomes than messages"
    );
    Frame::RequestFailed {
        request_id,
        error: WireError::new(
            ErrorCode::Internal,
            "the store answered with the wrong number of outcomes",
        ),
    }
}

/// Where a read starts.
#[derive(Clone, Copy, Debug)]
enum ReadStart {
    /// At this serial.
    Serial(Serial),
    /// At the first message stored at or after this time (ms since the Unix epoch).
    Since(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RecordError;
    use tern_link::{Epoch, Position};

    fn pos(n: u64) -> Position {
        Position {
            epoch: Epoch(1),
            serial: Serial::new(n).expect("non-zero"),
        }
    }

    #[test]
    fn outcomes_are_merged_in_request_order() {
        let refused = vec![
            None,
            Some(Outcome::Rejected(WireError::new(
                ErrorCode::InvalidChannel,
                "bad",
            ))),
            None,
        ];
        let frame = merge_outcomes(
            9,
            refused,
            vec![
                AppendOutcome::Appended(pos(1)),
                AppendOutcome::Rejected(RecordError::InvalidKey(0)),
            ],
        );
        let Frame::PublishResult {
            request_id,
            outcomes,
        } = frame
        else {
            panic!("expected a result, got {frame:?}");
        };
        assert_eq!(request_id, 9);
        assert_eq!(outcomes[0], Outcome::Appended(pos(1)));
        assert!(
            matches!(&outcomes[1], Outcome::Rejected(e) if e.code == ErrorCode::InvalidChannel)
        );
        assert!(matches!(&outcomes[2], Outcome::Rejected(e) if e.code == ErrorCode::InvalidKey));
    }

    #[test]
    fn a_miscounting_store_fails_the_request() {
        let frame = merge_outcomes(1, vec![None, None], vec![AppendOutcome::Appended(pos(1))]);
        assert!(matches!(frame, Frame::RequestFailed { request_id: 1, .. }));
        let frame = merge_outcomes(2, vec![], vec![AppendOutcome::Appended(pos(1))]);
        assert!(matches!(frame, Frame::RequestFailed { request_id: 2, .. }));
    }
}
