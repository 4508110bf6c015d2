//! The driver: one task that owns the [`Core`], the WebSocket and the application's
//! reply channels, and does every piece of I/O the core asks for.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tern_protocol::{Format, Message, PublishResult, ServerFrame, decode, encode, join};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::channel::{AttachFrom, Attachment, ChannelEvent};
use crate::core::{Core, Output};
use crate::dial::Dialer;
use crate::error::{ClientError, PublishError};
use crate::state::ConnectionState;

type Ws = WebSocketStream<TcpStream>;
type AttachReply = oneshot::Sender<Result<Attachment, ClientError>>;
type Opening = Pin<Box<dyn Future<Output = Result<Ws, String>> + Send>>;

/// Frames joined into one WebSocket message up to this many bytes.
const JOIN_BYTES: usize = 64 * 1024;

/// What the application's handles ask of the driver.
pub(crate) enum Command {
    Publish {
        channel: String,
        messages: Vec<Message>,
        reply: oneshot::Sender<Result<Vec<PublishResult>, PublishError>>,
    },
    Attach {
        channel: String,
        from: AttachFrom,
        reply: AttachReply,
    },
    /// Detach `channel`; with a generation, only if it is still that attachment
    /// (a dropped stream must not detach a newer one).
    Detach {
        channel: String,
        generation: Option<u64>,
    },
    /// The stream of `channel` has room again.
    Resume {
        channel: String,
        generation: u64,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    RecoveryKey {
        reply: oneshot::Sender<Option<String>>,
    },
}

/// How to open transports.
pub(crate) struct Transport {
    pub(crate) format: Format,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    /// Resolves the URLs' hosts (one resolver and cache for the client's life).
    pub(crate) dialer: Arc<Dialer>,
}

/// The driver's side of one attached channel.
struct Sink {
    generation: u64,
    events: mpsc::Sender<ChannelEvent>,
    end: Arc<OnceLock<ClientError>>,
    /// Until the first ATTACHED: the `attach` call and the stream's receiver.
    pending: Option<(AttachReply, mpsc::Receiver<ChannelEvent>)>,
}

pub(crate) struct Driver {
    core: Core,
    transport: Transport,
    ws: Option<Ws>,
    opening: Option<Opening>,
    outbox: Vec<Vec<u8>>,
    commands: mpsc::Receiver<Command>,
    /// For the tasks that wait for room in a paused stream; weak so that the driver
    /// ends when every handle is gone.
    weak_commands: mpsc::WeakSender<Command>,
    sinks: HashMap<String, Sink>,
    publishes: HashMap<u64, oneshot::Sender<Result<Vec<PublishResult>, PublishError>>>,
    closers: Vec<oneshot::Sender<()>>,
    /// Every `Client` and `ChannelStream` was dropped.
    handles_gone: bool,
    state: watch::Sender<ConnectionState>,
    channel_buffer: usize,
    next_generation: u64,
}

/// The time, as the core takes it (tokio's clock, so paused tests stay in control).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    pub(crate) fn new(
        core: Core,
        transport: Transport,
        commands: mpsc::Receiver<Command>,
        weak_commands: mpsc::WeakSender<Command>,
        state: watch::Sender<ConnectionState>,
        channel_buffer: usize,
    ) -> Self {
        Self {
            core,
            transport,
            ws: None,
            opening: None,
            outbox: Vec::new(),
            commands,
            weak_commands,
            sinks: HashMap::new(),
            publishes: HashMap::new(),
            closers: Vec::new(),
            handles_gone: false,
            state,
            channel_buffer,
            next_generation: 0,
        }
    }

    /// Runs until the core is closed.
    pub(crate) async fn run(mut self) {
        loop {
            self.drain().await;
            if self.core.is_closed() {
                break;
            }
            let deadline = self.core.poll_timeout();
            let sleep = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let ws = self.ws.as_mut();
            let opening = self.opening.as_mut();
            tokio::select! {
                command = self.commands.recv(), if !self.handles_gone => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        // Every handle is gone: nobody can use the connection any more.
                        self.handles_gone = true;
                        self.core.close(now());
                    }
                },
                message = async { ws.expect("guarded by the select condition").next().await }, if ws.is_some() => {
                    self.on_ws(message);
                }
                opened = async { opening.expect("guarded by the select condition").await }, if opening.is_some() => {
                    self.opening = None;
                    match opened {
                        Ok(ws) => {
                            self.ws = Some(ws);
                            self.core.handle_open(now());
                        }
                        Err(error) => self.core.handle_open_failed(now(), error),
                    }
                }
                () = sleep => self.core.handle_timeout(now()),
            }
        }
        if let Some(mut ws) = self.ws.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
        for closer in self.closers.drain(..) {
            let _ = closer.send(());
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Publish {
                channel,
                messages,
                reply,
            } => match self.core.publish(now, channel, messages) {
                Ok(id) => {
                    self.publishes.insert(id, reply);
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            Command::Attach {
                channel,
                from,
                reply,
            } => {
                // A stream dropped while the command queue was full left its channel
                // attached; it is gone, so detach it now.
                if self
                    .sinks
                    .get(&channel)
                    .is_some_and(|s| s.events.is_closed())
                {
                    self.detach(now, &channel);
                }
                match self.core.attach(now, channel.clone(), from) {
                    Ok(()) => {
                        let (events, receiver) = mpsc::channel(self.channel_buffer);
                        self.next_generation += 1;
                        self.sinks.insert(
                            channel,
                            Sink {
                                generation: self.next_generation,
                                events,
                                end: Arc::new(OnceLock::new()),
                                pending: Some((reply, receiver)),
                            },
                        );
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::Detach {
                channel,
                generation,
            } => {
                let current = self.sinks.get(&channel).map(|s| s.generation);
                if generation.is_none() || generation == current {
                    self.detach(now, &channel);
                }
            }
            Command::Resume {
                channel,
                generation,
            } => {
                if self.sinks.get(&channel).map(|s| s.generation) == Some(generation) {
                    self.core.handle_resume(now, &channel);
                }
            }
            Command::Close { reply } => {
                self.closers.push(reply);
                self.core.close(now);
            }
            Command::RecoveryKey { reply } => {
                let _ = reply.send(self.core.recovery().map(|r| r.encode()));
            }
        }
    }

    fn detach(&mut self, now: Instant, channel: &str) {
        self.core.detach(now, channel);
        self.sinks.remove(channel);
    }

    fn on_ws(&mut self, message: Option<Result<WsMessage, tungstenite::Error>>) {
        let now = now();
        let data = match message {
            Some(Ok(WsMessage::Text(text))) => text.into(),
            Some(Ok(WsMessage::Binary(bytes))) => bytes,
            Some(Ok(WsMessage::Close(frame))) => {
                let reason = frame.map_or_else(
                    || "the server closed the WebSocket".to_owned(),
                    |f| format!("the server closed the WebSocket: {} {}", f.code, f.reason),
                );
                self.ws = None;
                self.core.handle_closed(now, reason);
                return;
            }
            Some(Ok(_)) => return,
            Some(Err(error)) => {
                self.ws = None;
                self.core
                    .handle_closed(now, format!("WebSocket error: {error}"));
                return;
            }
            None => {
                self.ws = None;
                self.core
                    .handle_closed(now, "the connection closed".to_owned());
                return;
            }
        };
        match decode::<ServerFrame>(self.transport.format, &data) {
            Ok(frames) => {
                for frame in frames {
                    match frame {
                        Ok(frame) => self.core.handle_frame(now, frame),
                        Err(error) => {
                            tracing::warn!(%error, "undecodable frame from the server; ignored");
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "undecodable message from the server; ignored"),
        }
    }

    /// Carries out the core's outputs, then sends what they queued; repeats while
    /// sending produced more (a failed send is a lost connection).
    async fn drain(&mut self) {
        loop {
            while let Some(output) = self.core.poll_output() {
                self.carry_out(output);
            }
            if self.outbox.is_empty() {
                return;
            }
            let parts = std::mem::take(&mut self.outbox);
            let Some(ws) = self.ws.as_mut() else {
                continue;
            };
            if let Err(error) = send_joined(
                ws,
                self.transport.format,
                &parts,
                self.transport.connect_timeout,
            )
            .await
            {
                self.ws = None;
                self.core.handle_closed(now(), error);
            }
        }
    }

    fn carry_out(&mut self, output: Output) {
        match output {
            Output::Open { url } => {
                self.ws = None;
                self.opening = Some(Box::pin(open(
                    url,
                    self.transport.dialer.clone(),
                    self.transport.format,
                    self.transport.connect_timeout,
                    self.transport.max_message_bytes,
                )));
            }
            Output::Send(frame) => self.outbox.push(encode(self.transport.format, &frame)),
            Output::CloseTransport => {
                self.ws = None;
                self.opening = None;
                self.outbox.clear();
            }
            Output::Deliver {
                channel,
                event,
                previous,
            } => self.deliver(channel, event, previous),
            Output::Ended { channel, error } => {
                if let Some(sink) = self.sinks.remove(&channel)
                    && let Some(error) = error
                {
                    let _ = sink.end.set(error);
                }
            }
            Output::AttachDone { channel, result } => self.attach_done(channel, result),
            Output::PublishDone { id, result } => {
                if let Some(reply) = self.publishes.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            Output::State(state) => {
                self.state.send_replace(state);
            }
        }
    }

    fn attach_done(
        &mut self,
        channel: String,
        result: Result<tern_protocol::Position, ClientError>,
    ) {
        let Some(sink) = self.sinks.get_mut(&channel) else {
            return;
        };
        let Some((reply, events)) = sink.pending.take() else {
            return;
        };
        match result {
            Ok(position) => {
                let attachment = Attachment {
                    events,
                    end: sink.end.clone(),
                    generation: sink.generation,
                    position,
                };
                if reply.send(Ok(attachment)).is_err() {
                    // The `attach` call was given up on: nobody will read the stream.
                    self.detach(now(), &channel);
                }
            }
            Err(error) => {
                self.sinks.remove(&channel);
                let _ = reply.send(Err(error));
            }
        }
    }

    fn deliver(
        &mut self,
        channel: String,
        event: ChannelEvent,
        previous: Option<tern_protocol::Position>,
    ) {
        let Some(sink) = self.sinks.get(&channel) else {
            return;
        };
        match sink.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.core.handle_overflow(now(), &channel, previous);
                let events = sink.events.clone();
                let generation = sink.generation;
                let commands = self.weak_commands.clone();
                tokio::spawn(async move {
                    let room = (events.max_capacity() / 2).max(1);
                    let ready = events.reserve_many(room).await.is_ok();
                    drop(events);
                    if ready && let Some(commands) = commands.upgrade() {
                        let resume = Command::Resume {
                            channel,
                            generation,
                        };
                        let _ = commands.send(resume).await;
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.detach(now(), &channel),
        }
    }
}

/// Opens a WebSocket to `url` speaking `format`, all within `timeout`: the host
/// resolved and dialled by `dialer`, then the handshake with the URL as given (the
/// `Host` header is the name, not the address).
async fn open(
    url: String,
    dialer: Arc<Dialer>,
    format: Format,
    timeout: Duration,
    max_message_bytes: usize,
) -> Result<Ws, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad url {url:?}: {e}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(format.subprotocol()),
    );
    let uri = request.uri();
    let host = uri
        .host()
        .ok_or_else(|| format!("bad url {url:?}: no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = dialer
        .connect(&host, port, deadline)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes));
    match tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)),
    )
    .await
    {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(error)) => Err(format!("connecting to {url}: {error}")),
        Err(_) => Err(format!("connecting to {url}: no answer within {timeout:?}")),
    }
}

/// Sends `parts` (encoded frames) in as few WebSocket messages as fit [`JOIN_BYTES`].
async fn send_joined(
    ws: &mut Ws,
    format: Format,
    parts: &[Vec<u8>],
    timeout: Duration,
) -> Result<(), String> {
    let mut start = 0;
    while start < parts.len() {
        let mut end = start + 1;
        let mut size = parts[start].len();
        while end < parts.len() && size + parts[end].len() < JOIN_BYTES {
            size += parts[end].len();
            end += 1;
        }
        let bytes = join(format, &parts[start..end]);
        let message = match format {
            Format::Json => match String::from_utf8(bytes) {
                Ok(text) => WsMessage::text(text),
                Err(e) => WsMessage::binary(e.into_bytes()),
            },
            Format::MsgPack => WsMessage::binary(bytes),
        };
        match tokio::time::timeout(timeout, ws.feed(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("sending: {error}")),
            Err(_) => return Err(format!("sending: blocked for {timeout:?}")),
        }
        start = end;
    }
    match tokio::time::timeout(timeout, ws.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("sending: {error}")),
        Err(_) => Err(format!("sending: blocked for {timeout:?}")),
    }
}
