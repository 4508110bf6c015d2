//! The WebSocket connection driver: one task per client connection owning its socket,
//! its [`Session`] and its [`Outbox`].
//!
//! ```text
//!  socket ──read──▶ decode ──▶ Session ──outputs──▶ outbox (frames) / link (publish, attach)
//!  outbox ──drain, join several frames──▶ one WebSocket message ──▶ socket
//!  timer ──▶ Session::handle_tick (heartbeat, idle, connect timeouts)
//! ```
//!
//! The driver polls reading, writing, its outbox and its timer by hand
//! ([`std::future::poll_fn`]), so a client that stops reading still gets noticed: its
//! outbox overflows, and it is disconnected as a slow consumer while writes are stuck.
//! Reading never buffers more than `limits.max_frame_bytes` for one message: the
//! WebSocket layer refuses a frame by its header. Once the session is ending the driver
//! reads no more, but keeps writing until the session's last frame (it may wait for
//! publish answers first). A client's WebSocket close is answered before the socket goes.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Sink, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tern_protocol::{ClientFrame, ErrorCode, Format, ServerFrame};
use tokio::io::AsyncReadExt as _;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{
    CloseCode as WsCloseCode, Data, OpCode,
};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tracing::{Instrument as _, debug, info_span};

use crate::hub::{ConnKey, SubscriberHandle};
use crate::link::{HubCommand, PublishJob, ReplyTo};
use crate::metrics::{CloseReason, Metrics};
use crate::outbox::Outbox;
use crate::server::Shared;
use crate::session::{CloseCode, Session, SessionOutput, SessionParams};

/// The socket type after the HTTP upgrade.
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Most bytes of frames joined into one WebSocket message.
const WRITE_CHUNK: usize = 16 * 1024;
/// How long the last frames and the close handshake may take (a slow reader gets this
/// long to read up to its DISCONNECTED).
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Most bytes read and discarded after closing, so the client reads our last frame
/// before the socket goes (closing with unread input would reset the connection).
const CLOSE_DRAIN_BYTES: usize = 32 * 1024 * 1024;
/// How long the reply to a client's WebSocket close may take to write.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// The WebSocket settings of every connection: small buffers (idle connections stay
/// small), and messages over `max_frame_bytes` refused by their header.
pub(crate) fn websocket_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(WRITE_CHUNK.max(max_frame_bytes) * 4)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// What woke the driver.
enum Wake {
    Incoming(Option<Result<Message, WsError>>),
    Outbox,
    WriteFailed(WsError),
    Tick,
    Shutdown,
    /// The edge was drained (`false`: the drain signal is gone, nothing to do).
    Drain(bool),
}

/// Serves one upgraded WebSocket until it ends.
pub(crate) async fn serve(socket: Socket, shared: Arc<Shared>, format: Format, conn: ConnKey) {
    let connection_id = shared.connection_id();
    let span = info_span!("conn", id = %connection_id);
    async move {
        debug!(?format, "WebSocket open");
        let reason = run(socket, &shared, format, conn, connection_id).await;
        shared.metrics.connection_closed(reason);
        debug!(?reason, "WebSocket closed");
    }
    .instrument(span)
    .await;
}

async fn run(
    mut socket: Socket,
    shared: &Arc<Shared>,
    format: Format,
    conn: ConnKey,
    connection_id: String,
) -> CloseReason {
    let outbox = Arc::new(Outbox::new(shared.config.limits.outbound_queue_bytes));
    let params = SessionParams {
        connection_id,
        signer: Arc::clone(&shared.signer),
        opened_unix_ms: unix_ms_now(),
    };
    let mut session = Session::new(Arc::clone(&shared.config), params, Instant::now());
    let mut shutdown = shared.shutdown.clone();
    // The edge may have begun shutting down before this receiver was cloned: then
    // `changed()` never fires for it.
    let mut stopped = *shutdown.borrow_and_update();
    if stopped {
        session.handle_shutdown(Instant::now());
    }
    // Drains before this connection began are not its concern; after one, the
    // session is ending and there is nothing more to watch.
    let mut drain = shared.drain.clone();
    drain.borrow_and_update();
    let mut drained = false;
    let mut flushing = false;
    let mut last_words: Option<Bytes> = None;
    let mut client_closed = false;
    let mut sleep = pin!(tokio::time::sleep_until(
        tokio::time::Instant::now() + Duration::from_secs(3600)
    ));
    let close = loop {
        // Carry out what the session asked for.
        let mut close = None;
        while let Some(output) = session.poll_output() {
            match output {
                SessionOutput::Send(frame) => {
                    let bytes = Bytes::from(tern_protocol::encode(format, &frame));
                    match frame {
                        ServerFrame::Disconnected(_) | ServerFrame::Closed(_) => {
                            last_words = Some(bytes);
                        }
                        ServerFrame::Ack(_) | ServerFrame::Nack(_) => outbox.push_answer(bytes),
                        _ => {
                            outbox.push(bytes);
                        }
                    }
                }
                SessionOutput::Publish {
                    msg_serial,
                    messages,
                } => {
                    let reply = ReplyTo::Outbox {
                        outbox: Arc::clone(&outbox),
                        msg_serial,
                    };
                    shared.publish(PublishJob { messages, reply });
                }
                SessionOutput::Attach {
                    channel,
                    from,
                    granted,
                } => {
                    let handle = SubscriberHandle {
                        conn,
                        outbox: Arc::clone(&outbox),
                        format,
                    };
                    shared
                        .link
                        .command(HubCommand::Attach {
                            handle,
                            channel,
                            from,
                            granted,
                        })
                        .await;
                }
                SessionOutput::Detach { channel, error } => {
                    shared
                        .link
                        .command(HubCommand::Detach {
                            conn,
                            channel,
                            error,
                        })
                        .await;
                }
                SessionOutput::Close(code) => close = Some(code),
            }
        }
        if let Some(code) = close {
            break Some(code);
        }
        if client_closed {
            break None;
        }

        // The timer is re-armed only when the deadline comes sooner (or it fired):
        // a write moves the heartbeat deadline later, and the tick then finds nothing
        // to do, which costs less than moving a timer on every write.
        let deadline = session
            .next_deadline()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        if sleep.is_elapsed() || deadline < sleep.deadline() {
            sleep.as_mut().reset(deadline);
        }
        let mut wrote_at = None;
        // An ending session reads no more (frames after CLOSE are ignored; what the
        // client sends meanwhile stays unread) while it waits for publish answers.
        let reading = !session.is_closed();
        let wake = {
            let mut notified = pin!(outbox.notified());
            let mut stopping = pin!(shutdown.changed());
            let mut draining = pin!(drain.changed());
            poll_fn(|cx| {
                loop {
                    if !stopped && let Poll::Ready(changed) = stopping.as_mut().poll(cx) {
                        // A completed future is not polled again: wake either way.
                        return Poll::Ready(if changed.is_err() || *shared.shutdown.borrow() {
                            Wake::Shutdown
                        } else {
                            Wake::Tick
                        });
                    }
                    if !drained && let Poll::Ready(changed) = draining.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Drain(changed.is_ok()));
                    }
                    let mut again = false;
                    if notified.as_mut().poll(cx).is_ready() {
                        if outbox.has_events() {
                            return Poll::Ready(Wake::Outbox);
                        }
                        // Only frames: write them here and wait for the next push.
                        notified.set(outbox.notified());
                        again = true;
                    }
                    // Write: start a message when the socket takes one, then flush it.
                    if !flushing {
                        match std::pin::Pin::new(&mut socket).poll_ready(cx) {
                            Poll::Ready(Ok(())) => {
                                let frames = outbox.drain_frames(WRITE_CHUNK);
                                if !frames.is_empty() {
                                    let message = ws_message(format, &frames);
                                    if let Err(error) =
                                        std::pin::Pin::new(&mut socket).start_send(message)
                                    {
                                        return Poll::Ready(Wake::WriteFailed(error));
                                    }
                                    flushing = true;
                                }
                            }
                            Poll::Ready(Err(error)) => {
                                return Poll::Ready(Wake::WriteFailed(error));
                            }
                            Poll::Pending => {}
                        }
                    }
                    if flushing {
                        match std::pin::Pin::new(&mut socket).poll_flush(cx) {
                            Poll::Ready(Ok(())) => {
                                flushing = false;
                                wrote_at = Some(Instant::now());
                                again = again || outbox.has_frames();
                            }
                            Poll::Ready(Err(error)) => {
                                return Poll::Ready(Wake::WriteFailed(error));
                            }
                            Poll::Pending => {}
                        }
                    }
                    if reading
                        && let Poll::Ready(message) = std::pin::Pin::new(&mut socket).poll_next(cx)
                    {
                        return Poll::Ready(Wake::Incoming(message));
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Tick);
                    }
                    if !again {
                        return Poll::Pending;
                    }
                }
            })
            .await
        };
        if let Some(at) = wrote_at {
            session.handle_sent(at);
        }
        let now = Instant::now();
        match wake {
            Wake::Shutdown => {
                stopped = true;
                session.handle_shutdown(now);
            }
            Wake::Drain(signalled) => {
                drained = true;
                if signalled {
                    session.handle_drain(now);
                }
            }
            Wake::Tick => session.handle_tick(now),
            Wake::WriteFailed(error) => {
                debug!(%error, "write failed");
                break None;
            }
            Wake::Outbox => {
                for reply in outbox.take_replies() {
                    session.handle_publish_result(reply.msg_serial, reply.result);
                }
                if outbox.take_overflow() {
                    session.handle_slow_consumer(now);
                }
            }
            Wake::Incoming(None) => client_closed = true,
            Wake::Incoming(Some(Err(WsError::Capacity(CapacityError::MessageTooLong {
                ..
            })))) => {
                session.handle_frame_too_large(now);
            }
            Wake::Incoming(Some(Err(WsError::Utf8(_)))) => session.handle_invalid_text(now),
            Wake::Incoming(Some(Err(error))) => {
                debug!(%error, "WebSocket read failed");
                break None;
            }
            Wake::Incoming(Some(Ok(message))) => match message {
                Message::Text(text) => {
                    handle_message(&mut session, &shared.metrics, format, text.as_bytes(), now)
                }
                Message::Binary(bytes) => {
                    handle_message(&mut session, &shared.metrics, format, &bytes, now)
                }
                Message::Close(_) => client_closed = true,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            },
        }
    };
    shared
        .link
        .command(HubCommand::Closed {
            conn,
            channels: session.channels().cloned().collect(),
        })
        .await;
    let reason = match session.disconnect_code() {
        Some(ErrorCode::SlowConsumer) => CloseReason::SlowConsumer,
        Some(ErrorCode::FrameTooLarge) => CloseReason::FrameTooLarge,
        Some(ErrorCode::ShuttingDown) => CloseReason::Shutdown,
        Some(ErrorCode::IdleTimeout) => CloseReason::IdleTimeout,
        Some(ErrorCode::Malformed) => CloseReason::Transport,
        Some(_) => CloseReason::Refused,
        None if close.is_some() || client_closed => CloseReason::Client,
        None => CloseReason::Transport,
    };
    if let Some(code) = close {
        // Boxed: the closing steps would otherwise enlarge every idle connection's task.
        let graceful = Box::pin(finish(
            &mut socket,
            &outbox,
            &shared.metrics,
            format,
            last_words,
            code,
        ));
        if tokio::time::timeout(CLOSE_GRACE, graceful).await.is_err() {
            debug!("close handshake timed out");
        }
    } else if client_closed {
        // The WebSocket layer queued the reply to the client's close; it goes out on
        // the next write or flush, not by itself.
        let flushed =
            tokio::time::timeout(CLOSE_REPLY_TIMEOUT, futures::SinkExt::flush(&mut socket)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            debug!("the reply to the client's close was not sent");
        }
    }
    outbox.close();
    reason
}

fn handle_message(
    session: &mut Session,
    metrics: &crate::metrics::Metrics,
    format: Format,
    bytes: &[u8],
    now: Instant,
) {
    match tern_protocol::decode::<ClientFrame>(format, bytes) {
        Ok(frames) => {
            for frame in frames {
                match frame {
                    Ok(frame) => {
                        metrics.frame_received();
                        session.handle_frame(now, frame);
                    }
                    Err(error) => {
                        metrics.decode_error();
                        session.handle_decode_error(now, error);
                    }
                }
            }
        }
        Err(error) => {
            metrics.decode_error();
            session.handle_decode_error(now, error);
        }
    }
}

/// Several encoded frames as one WebSocket message of the connection's format.
fn ws_message(format: Format, frames: &[Bytes]) -> Message {
    let payload = match frames {
        [one] => one.clone(),
        many => Bytes::from(tern_protocol::join(format, many)),
    };
    let opcode = if format.is_text() {
        Data::Text
    } else {
        Data::Binary
    };
    // JSON frames are UTF-8 by construction: sent as a raw text frame, not re-validated.
    Message::Frame(Frame::message(payload, OpCode::Data(opcode), true))
}

/// Sends what is queued (after an overflow, only the publish answers are left), the
/// last frame, the WebSocket close, then reads until the client closes too.
async fn finish(
    socket: &mut Socket,
    outbox: &Outbox,
    metrics: &Metrics,
    format: Format,
    last_words: Option<Bytes>,
    code: CloseCode,
) {
    use futures::SinkExt as _;
    loop {
        let frames = outbox.drain_frames(WRITE_CHUNK);
        if frames.is_empty() {
            break;
        }
        if socket.feed(ws_message(format, &frames)).await.is_err() {
            return;
        }
    }
    if let Some(bytes) = last_words
        && socket.feed(ws_message(format, &[bytes])).await.is_err()
    {
        return;
    }
    let (code, reason) = match code {
        CloseCode::Normal => (WsCloseCode::Normal, "closed"),
        CloseCode::TooLarge => (WsCloseCode::Size, "message too large"),
        CloseCode::InvalidData => (WsCloseCode::Invalid, "text is not UTF-8"),
        CloseCode::GoingAway => (WsCloseCode::Away, "shutting down"),
        CloseCode::Policy => (WsCloseCode::Policy, "disconnected"),
    };
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if socket.send(close).await.is_err() {
        return;
    }
    // Everything is said: a shutting-down edge need not wait for this one any more
    // (behind anycast, the client's reply may go to another edge once this one is
    // withdrawn, and never come back here).
    let _closing = metrics.closing();
    // Wait for the client's close. When reading has already failed (an oversized
    // message), end our side and read (and drop) until the client closes too: closing
    // with unread input would reset the connection and could destroy our last frame
    // before the client reads it.
    // After the client's close reply the server closes TCP first (RFC 6455 §7.1.1).
    if !futures::stream::FusedStream::is_terminated(socket) {
        while let Some(Ok(message)) = futures::StreamExt::next(socket).await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    }
    let io = socket.get_mut();
    let _ = tokio::io::AsyncWriteExt::shutdown(io).await;
    let mut buf = vec![0u8; 4096];
    let mut drained = 0;
    while drained < CLOSE_DRAIN_BYTES {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// The wall clock in milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}
