//! [`LogClient`]: the link client used by the edge and by `tern bench`.
//!
//! One QUIC connection to one log node. Publishes, reads and pings share one request
//! stream and are pipelined: each gets a request id, is written by a writer task and
//! answered through a map of waiting callers filled by a reader task, so any number of
//! tasks may call [`LogClient::publish`] at once (up to
//! [`LogClientConfig::max_inflight`] in flight; more wait for a slot, so the node's own
//! per-stream limit is never hit). Subscriptions get streams of their own
//! ([`LogClient::subscribe`]) so a slow subscriber never holds up publishes.
//!
//! ```text
//! publish() ─┐                         ┌─▶ waiter(id) ─▶ publish() returns
//! publish() ─┼─▶ writer task ─▶ stream ─▶ reader task ┤
//! ping()    ─┘     (encoded frames)       (by request id) └─▶ waiter(id) ─▶ ping() returns
//! ```
//!
//! A lost connection fails every waiting call and every later one with
//! [`ClientError::ConnectionLost`] ([`LogClient::closed`] says when and why); the
//! client does not reconnect by itself: connect again (a node not listening yet is
//! given up on after [`LogClientConfig::connect_timeout`]) and resubscribe from the
//! last delivered positions. A node killed and restarted on its address is noticed
//! at the next packet, by its stateless reset, not after the idle timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quinn::{RecvStream, SendStream};
use tern_link::{
    ChannelName, DEFAULT_MAX_FRAME_BYTES, EncodeError, ErrorCode, Frame, FrameDecoder, Outcome,
    PublishMessage, Serial, SubscribeFrom, WireError, encode_to_vec,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{Instrument, debug, debug_span, warn};

use super::codes;
use super::subscribe::Subscription;
use super::tls::{self, TlsError};
use crate::store::ReadResult;

/// Largest chunk taken from a receive stream at once.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// How long answers may still arrive after the node stopped reading requests.
const ANSWER_GRACE: Duration = Duration::from_secs(10);

/// Why a client call failed, and whether trying again may help
/// ([`ClientError::is_retryable`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The trusted certificate file is unusable (operator: fix the file). Not retryable.
    #[error(transparent)]
    Tls(Arc<TlsError>),
    /// The node could not be reached or the handshake failed. Retryable (later or
    /// another node).
    #[error("cannot connect to the log node at {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The connection or stream is gone; calls in flight may or may not have been
    /// carried out (publishes are idempotent: retry with the same keys). Retryable
    /// after connecting again.
    #[error("connection to the log node lost: {0}")]
    ConnectionLost(String),
    /// The node refused the request or ended the stream with this error;
    /// retryable when the error says so (`WireError::retryable`).
    #[error("log node error: {0}")]
    Server(WireError),
    /// The node sent something the protocol does not allow (peer fault). Retryable on
    /// a new connection.
    #[error("log node broke the protocol: {0}")]
    Protocol(String),
    /// The request does not fit in one frame (caller fault: send smaller batches).
    #[error("request too large: {0}")]
    TooLarge(EncodeError),
    /// No answer came within `LogClientConfig::request_timeout`; the request may or
    /// may not have been carried out (publishes are idempotent: retry with the same
    /// keys). Retryable.
    #[error("no answer from the log node within {0:?}")]
    Timeout(Duration),
    /// The client was closed by its owner.
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// Whether the same call may succeed later (possibly on a new connection).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::ConnectionLost(_)
            | ClientError::Protocol(_)
            | ClientError::Timeout(_) => true,
            ClientError::Server(error) => error.retryable,
            ClientError::Tls(_) | ClientError::TooLarge(_) | ClientError::Closed => false,
        }
    }

    /// The link error code, when the node sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(error) => Some(error.code),
            _ => None,
        }
    }

    /// True when a subscription was dropped for not keeping up: resubscribe from the
    /// last position received.
    pub fn is_slow_consumer(&self) -> bool {
        self.code() == Some(ErrorCode::SlowConsumer)
    }
}

impl From<TlsError> for ClientError {
    fn from(error: TlsError) -> Self {
        ClientError::Tls(Arc::new(error))
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct LogClientConfig {
    /// Largest frame sent or accepted, length prefix included; should match the node's
    /// `max_frame_bytes`. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Requests (publish, read, ping) in flight at once; more wait for a slot. Keep it
    /// at or below the node's `max_inflight_per_stream`. Default 64.
    pub max_inflight: usize,
    /// How long a call waits for its answer before failing with
    /// [`ClientError::Timeout`] (a node that could not decode a request answers with
    /// an error that names no request). Default 30 s.
    pub request_timeout: Duration,
    /// How long connecting (the QUIC handshake) may take before it fails with
    /// [`ClientError::Connect`]. A node that is not listening yet answers nothing at
    /// all (UDP), and QUIC resends its first packet only after 1 s, 3 s … of silence,
    /// so a caller retrying until a node comes up should keep this short and retry
    /// with backoff. Default 5 s.
    pub connect_timeout: Duration,
    /// How long the connection may be silent before it counts as lost (keep-alives
    /// go every second, or more often below 3 s). The node's own idle timeout applies
    /// too: the shorter wins. A node restarted on its address and key is noticed
    /// sooner, by the stateless reset it answers with. Default
    /// [`LINK_IDLE_TIMEOUT`](super::tls::LINK_IDLE_TIMEOUT) (5 s); at least 100 ms.
    pub idle_timeout: Duration,
}

impl Default for LogClientConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_inflight: 64,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: tls::LINK_IDLE_TIMEOUT,
        }
    }
}

/// A request sent and not yet answered. It holds its in-flight slot until the
/// answer arrives (or the connection fails), even if its caller gave up: the node
/// still counts it, so freeing the slot early would let the client overrun the
/// node's per-stream limit.
struct Waiter {
    answer: oneshot::Sender<Result<Frame, ClientError>>,
    _slot: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Waiters {
    by_id: HashMap<u64, Waiter>,
    /// Set once the request stream is gone; every later call fails with it.
    failed: Option<ClientError>,
}

/// What the caller side and the reader/writer tasks share.
#[derive(Default)]
struct Shared {
    waiters: Mutex<Waiters>,
}

impl Shared {
    fn fail_all(&self, error: ClientError) {
        let mut waiters = self.waiters.lock();
        if waiters.failed.is_none() {
            waiters.failed = Some(error.clone());
        }
        for (_, waiter) in waiters.by_id.drain() {
            let _ = waiter.answer.send(Err(error.clone()));
        }
    }

    /// Fails every later call with `error`, leaving calls already sent to their
    /// answers.
    fn refuse_new(&self, error: ClientError) {
        let mut waiters = self.waiters.lock();
        if waiters.failed.is_none() {
            waiters.failed = Some(error);
        }
    }

    fn complete(&self, id: u64, answer: Result<Frame, ClientError>) {
        let waiter = self.waiters.lock().by_id.remove(&id);
        match waiter {
            // The caller may have given up meanwhile; nothing to do then.
            Some(waiter) => {
                let _ = waiter.answer.send(answer);
            }
            None => debug!(request_id = id, "answer for a request nobody waits for"),
        }
    }
}

/// Removes a waiter whose caller stopped waiting before its request was handed to
/// the writer (nothing will ever answer it). Once handed over, the waiter stays
/// until the answer comes.
struct WaiterGuard<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.waiters.lock().by_id.remove(&self.id);
        }
    }
}

struct Inner {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    config: LogClientConfig,
    shared: Arc<Shared>,
    outbound: mpsc::Sender<Vec<u8>>,
    slots: Arc<Semaphore>,
    next_id: AtomicU64,
}

/// A connection to one log node. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct LogClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogClient")
            .field("remote", &self.inner.connection.remote_address())
            .finish_non_exhaustive()
    }
}

impl LogClient {
    /// Connects to the node at `addr`, checking that its certificate names
    /// `server_name` and chains to a certificate in `trust_pem`.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        trust_pem: &Path,
    ) -> Result<Self, ClientError> {
        Self::connect_with(addr, server_name, trust_pem, LogClientConfig::default()).await
    }

    /// [`LogClient::connect`] with explicit settings.
    pub async fn connect_with(
        addr: SocketAddr,
        server_name: &str,
        trust_pem: &Path,
        config: LogClientConfig,
    ) -> Result<Self, ClientError> {
        let client_config = tls::client_config_with(trust_pem, config.idle_timeout)?;
        let bind: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let connect_error = |reason: String| ClientError::Connect { addr, reason };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| connect_error(e.to_string()))?;
        endpoint.set_default_client_config(client_config);
        let connecting = endpoint
            .connect(addr, server_name)
            .map_err(|e| connect_error(e.to_string()))?;
        let handshake = async {
            let connection = connecting.await.map_err(|e| connect_error(e.to_string()))?;
            let (send, recv) = connection
                .open_bi()
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            Ok::<_, ClientError>((connection, send, recv))
        };
        let (connection, send, recv) = tokio::time::timeout(config.connect_timeout, handshake)
            .await
            .map_err(|_| {
                connect_error(format!("no answer within {:?}", config.connect_timeout))
            })??;

        let shared = Arc::new(Shared::default());
        let max_inflight = config.max_inflight.max(1);
        let (outbound, outbound_rx) = mpsc::channel(max_inflight);
        let span = debug_span!("log_client", remote = %addr, stream = %send.id());
        tokio::spawn(
            write_requests(send, outbound_rx, Arc::clone(&shared)).instrument(span.clone()),
        );
        tokio::spawn(
            read_answers(recv, config.max_frame_bytes, Arc::clone(&shared)).instrument(span),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint,
                connection,
                config: LogClientConfig {
                    max_inflight,
                    ..config
                },
                shared,
                outbound,
                slots: Arc::new(Semaphore::new(max_inflight)),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// The node's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.connection.remote_address()
    }

    /// True once the connection or the request stream is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.connection.close_reason().is_some()
            || self.inner.shared.waiters.lock().failed.is_some()
    }

    /// Waits until the connection is gone (lost, reset by a restarted node, or
    /// closed) and returns why, as [`ClientError::ConnectionLost`] (or
    /// [`ClientError::Closed`] after [`LogClient::close`]).
    pub async fn closed(&self) -> ClientError {
        match self.inner.connection.closed().await {
            quinn::ConnectionError::LocallyClosed => ClientError::Closed,
            error => ClientError::ConnectionLost(error.to_string()),
        }
    }

    /// Appends `messages`; returns one durable outcome per message, in order.
    pub async fn publish(
        &self,
        messages: Vec<PublishMessage>,
    ) -> Result<Vec<Outcome>, ClientError> {
        let count = messages.len();
        let answer = self
            .request(|request_id| Frame::Publish {
                request_id,
                messages,
            })
            .await?;
        match answer {
            Frame::PublishResult { outcomes, .. } if outcomes.len() == count => Ok(outcomes),
            Frame::PublishResult { outcomes, .. } => Err(ClientError::Protocol(format!(
                "{} outcomes for {count} messages",
                outcomes.len()
            ))),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads up to `limit` messages of `channel` from serial `from` on (the node may
    /// return fewer: it caps `limit` and the frame size).
    pub async fn read(
        &self,
        channel: &ChannelName,
        from: Serial,
        limit: u32,
    ) -> Result<ReadResult, ClientError> {
        let answer = self
            .request(|request_id| Frame::Read {
                request_id,
                channel: channel.to_string(),
                from_serial: from.get(),
                limit,
            })
            .await?;
        read_result(answer)
    }

    /// Reads up to `limit` messages of `channel` from the first one stored at or
    /// after `since_ms` (milliseconds since the Unix epoch); none when nothing was
    /// stored since. Read later pages with [`LogClient::read`].
    pub async fn read_since(
        &self,
        channel: &ChannelName,
        since_ms: u64,
        limit: u32,
    ) -> Result<ReadResult, ClientError> {
        let answer = self
            .request(|request_id| Frame::ReadSince {
                request_id,
                channel: channel.to_string(),
                since_ms,
                limit,
            })
            .await?;
        read_result(answer)
    }

    /// Round trip to the node over the request stream.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let started = Instant::now();
        match self.request(|nonce| Frame::Ping { nonce }).await? {
            Frame::Pong { .. } => Ok(started.elapsed()),
            other => Err(unexpected(&other)),
        }
    }

    /// Follows `channel` from where `from` says on a stream of its own. More channels
    /// can share it ([`Subscription::add`]).
    pub async fn subscribe(
        &self,
        channel: &ChannelName,
        from: SubscribeFrom,
    ) -> Result<Subscription, ClientError> {
        let (send, recv) = self
            .inner
            .connection
            .open_bi()
            .await
            .map_err(|e| ClientError::ConnectionLost(e.to_string()))?;
        let mut subscription = Subscription::new(send, recv, self.inner.config.max_frame_bytes);
        subscription.add(channel, from).await?;
        Ok(subscription)
    }

    /// Closes the connection (calls in flight fail with [`ClientError::Closed`]) and
    /// waits briefly for the node to acknowledge.
    pub async fn close(&self) {
        self.inner.shared.fail_all(ClientError::Closed);
        self.inner.connection.close(codes::DONE, b"client closed");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }

    /// Sends the frame built from a fresh request id and waits for its answer.
    async fn request(&self, build: impl FnOnce(u64) -> Frame) -> Result<Frame, ClientError> {
        let inner = &*self.inner;
        let slot = Arc::clone(&inner.slots)
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_to_vec(&build(id), inner.config.max_frame_bytes)
            .map_err(ClientError::TooLarge)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = inner.shared.waiters.lock();
            if let Some(error) = &waiters.failed {
                return Err(error.clone());
            }
            waiters.by_id.insert(
                id,
                Waiter {
                    answer: tx,
                    _slot: slot,
                },
            );
        }
        let mut guard = WaiterGuard {
            shared: &inner.shared,
            id,
            armed: true,
        };
        if inner.outbound.send(bytes).await.is_err() {
            return Err(self.failure());
        }
        guard.armed = false;
        let answer = match tokio::time::timeout(inner.config.request_timeout, rx).await {
            Ok(answer) => answer,
            Err(_) => {
                // Never answered: let the slot go, or it would leak for good.
                inner.shared.waiters.lock().by_id.remove(&id);
                return Err(ClientError::Timeout(inner.config.request_timeout));
            }
        };
        match answer {
            Ok(Ok(Frame::RequestFailed { error, .. })) => Err(ClientError::Server(error)),
            Ok(answer) => answer,
            Err(_) => Err(self.failure()),
        }
    }

    fn failure(&self) -> ClientError {
        self.inner
            .shared
            .waiters
            .lock()
            .failed
            .clone()
            .unwrap_or_else(|| ClientError::ConnectionLost("request stream closed".into()))
    }
}

/// The messages of a [`Frame::ReadResult`], or the error for any other answer.
fn read_result(answer: Frame) -> Result<ReadResult, ClientError> {
    match answer {
        Frame::ReadResult {
            messages,
            first_serial,
            more,
            last,
            ..
        } => Ok(ReadResult {
            messages,
            first_serial: first_serial.and_then(Serial::new),
            more,
            last,
        }),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(frame: &Frame) -> ClientError {
    ClientError::Protocol(format!("unexpected {} frame as an answer", frame.kind()))
}

/// Writes encoded requests in order; on failure, fails every waiting call.
async fn write_requests(
    mut send: SendStream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(bytes) = rx.recv().await {
        if let Err(error) = send.write_all(&bytes).await {
            debug!(%error, "request stream write failed");
            // The node may have stopped reading (it is shutting down) while it still
            // answers what it received: new calls fail now, calls already sent wait
            // for the reader, which fails them when the answers stop; a node that
            // never ends the stream is given up on after a grace period.
            let error = ClientError::ConnectionLost(error.to_string());
            shared.refuse_new(error.clone());
            drop(rx);
            tokio::time::sleep(ANSWER_GRACE).await;
            shared.fail_all(error);
            return;
        }
    }
    // Every LogClient handle is gone: tell the node we are done.
    let _ = send.finish();
}

/// Reads answers and hands each to the call waiting for its request id.
async fn read_answers(mut recv: RecvStream, max_frame_bytes: usize, shared: Arc<Shared>) {
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    let error = loop {
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => {
                break ClientError::ConnectionLost("the node ended the request stream".into());
            }
            Err(quinn::ReadError::Reset(code)) if code == codes::SHUTTING_DOWN => {
                break ClientError::Server(WireError::new(
                    ErrorCode::ShuttingDown,
                    "the log node is shutting down",
                ));
            }
            Err(error) => break ClientError::ConnectionLost(error.to_string()),
        }
        let fatal = loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(error) = dispatch(&shared, frame) {
                        break Some(error);
                    }
                }
                Ok(None) => break None,
                Err(error) => {
                    warn!(%error, "undecodable frame from the log node");
                    if error.is_fatal() {
                        break Some(ClientError::Protocol(error.to_string()));
                    }
                }
            }
        };
        if let Some(error) = fatal {
            break error;
        }
    };
    debug!(%error, "request stream ended");
    shared.fail_all(error);
}

/// Routes one answer; returns the error ending the stream, if the frame is one.
fn dispatch(shared: &Shared, frame: Frame) -> Option<ClientError> {
    let id = match &frame {
        Frame::PublishResult { request_id, .. }
        | Frame::ReadResult { request_id, .. }
        | Frame::RequestFailed { request_id, .. } => *request_id,
        Frame::Pong { nonce } => *nonce,
        Frame::Error(error) if error.fatal => return Some(ClientError::Server(error.clone())),
        Frame::Error(error) => {
            warn!(code = ?error.code, message = %error.message, "log node reported an error");
            return None;
        }
        other => {
            warn!(
                kind = other.kind(),
                "unexpected frame on the request stream"
            );
            return None;
        }
    };
    shared.complete(id, Ok(frame));
    None
}
