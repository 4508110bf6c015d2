//! The client's driver over real sockets against a small in-test edge (protocol v1
//! subset: CONNECT, ATTACH with from/rewind, PUBLISH with id dedupe, MESSAGE fan-out),
//! which can drop every connection on demand — before answering publishes, too.
//!
//! Run: `cargo test -p tern-client --test mock_edge`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tern_client::{AttachFrom, ChannelEvent, ChannelStream, Client, ClientConfig, ConnectionState};
use tern_protocol::{
    Ack, Attach, Attached, ClientFrame, Connected, Format, Limits, Message, MessageFrame, Position,
    PublishResult, ServerFrame, decode, encode,
};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, broadcast};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

const EPOCH: u64 = 1;
const LIMIT: Duration = Duration::from_secs(20);

/// One channel's stored messages (serial = index + 1) and ids.
#[derive(Default)]
struct Log {
    messages: Vec<Message>,
    ids: HashMap<String, u64>,
}

struct MockEdge {
    addr: SocketAddr,
    logs: Mutex<HashMap<String, Log>>,
    /// (channel, serial, message) of every newly stored message.
    stored: broadcast::Sender<(String, u64, Message)>,
    /// Bumped to drop every connection.
    generation: AtomicU64,
    kick: broadcast::Sender<()>,
    /// While set, PUBLISH frames are stored but not answered, and the connection is
    /// dropped right after.
    drop_on_publish: AtomicBool,
    connections: AtomicU64,
    attaches: AtomicU64,
    closes: AtomicU64,
}

impl MockEdge {
    async fn start() -> anyhow::Result<Arc<Self>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let edge = Arc::new(MockEdge {
            addr: listener.local_addr()?,
            logs: Mutex::new(HashMap::new()),
            stored: broadcast::channel(4096).0,
            generation: AtomicU64::new(0),
            kick: broadcast::channel(16).0,
            drop_on_publish: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            attaches: AtomicU64::new(0),
            closes: AtomicU64::new(0),
        });
        let accepting = edge.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let edge = accepting.clone();
                tokio::spawn(async move {
                    let _ = edge.serve(tcp).await;
                });
            }
        });
        Ok(edge)
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    fn drop_connections(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let _ = self.kick.send(());
    }

    async fn stored(&self, channel: &str) -> Vec<Message> {
        self.logs
            .lock()
            .await
            .get(channel)
            .map(|l| l.messages.clone())
            .unwrap_or_default()
    }

    #[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
    async fn serve(self: Arc<Self>, tcp: tokio::net::TcpStream) -> anyhow::Result<()> {
        let mut format = Format::Json;
        let callback = |request: &Request, mut response: Response| {
            let offered = request
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .and_then(Format::from_subprotocol);
            if let Some(offered) = offered {
                format = offered;
                response.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static(offered.subprotocol()),
                );
            }
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await?;
        let number = self.connections.fetch_add(1, Ordering::SeqCst);
        let mut kick = self.kick.subscribe();
        let mut stored = self.stored.subscribe();
        // channel → next serial to deliver on this connection.
        let mut attached: HashMap<String, u64> = HashMap::new();
        loop {
            let mut out = Vec::new();
            tokio::select! {
                _ = kick.recv() => return Ok(()),
                item = stored.recv() => {
                    let Ok((channel, serial, _)) = item else { bail!("mock fell behind") };
                    if attached.get(&channel) == Some(&serial) {
                        self.replay(&channel, &mut attached, &mut out).await;
                    }
                }
                message = ws.next() => {
                    let Some(Ok(message)) = message else { return Ok(()) };
                    let data = match message {
                        WsMessage::Text(t) => t.as_bytes().to_vec(),
                        WsMessage::Binary(b) => b.to_vec(),
                        _ => continue,
                    };
                    // CONNECT's channels are answered as ATTACHes with `from` would be.
                    let mut frames = Vec::new();
                    for frame in decode::<ClientFrame>(format, &data)? {
                        let frame = frame?;
                        let channels = match &frame {
                            ClientFrame::Connect(connect) => connect.channels.clone(),
                            _ => Default::default(),
                        };
                        frames.push(frame);
                        frames.extend(channels.into_iter().map(|(channel, from)| {
                            ClientFrame::Attach(Attach { channel, from: Some(from), rewind: None })
                        }));
                    }
                    for frame in frames {
                        match frame {
                            ClientFrame::Connect(_) => out.push(ServerFrame::Connected(Connected {
                                connection_id: format!("mock-{number}"),
                                connection_key: "k".into(),
                                heartbeat_interval_ms: 15_000,
                                idle_timeout_ms: 45_000,
                                state_ttl_ms: 120_000,
                                limits: Limits { max_inflight_publishes: 16, ..Limits::default() },
                                ..Connected::default()
                            })),
                            ClientFrame::Attach(attach) => {
                                self.attaches.fetch_add(1, Ordering::SeqCst);
                                let logs = self.logs.lock().await;
                                let end = logs.get(&attach.channel).map_or(0, |l| l.messages.len() as u64);
                                drop(logs);
                                let after = match (attach.from, attach.rewind) {
                                    (Some(p), _) => p.serial.min(end),
                                    (None, Some(tern_protocol::Rewind::Messages(n))) => end.saturating_sub(u64::from(n)),
                                    // The mock keeps no timestamps: a span rewinds nothing.
                                    (None, Some(tern_protocol::Rewind::Span(_))) | (None, None) => end,
                                };
                                out.push(ServerFrame::Attached(Attached {
                                    channel: attach.channel.clone(),
                                    position: Some(if after > 0 { Position { epoch: EPOCH, serial: after } } else { Position::BEFORE_FIRST }),
                                    resumed: attach.from.is_some(),
                                    granted: vec![],
                                    error: None,
                                }));
                                attached.insert(attach.channel.clone(), after + 1);
                                self.replay(&attach.channel, &mut attached, &mut out).await;
                            }
                            ClientFrame::Publish(publish) => {
                                let mut results = Vec::new();
                                let mut logs = self.logs.lock().await;
                                let log = logs.entry(publish.channel.clone()).or_default();
                                for message in publish.messages {
                                    let id = message.id.clone().context("the client gives every message an id")?;
                                    let (serial, duplicate) = match log.ids.get(&id) {
                                        Some(&serial) => (serial, true),
                                        None => {
                                            log.messages.push(message.clone());
                                            let serial = log.messages.len() as u64;
                                            log.ids.insert(id, serial);
                                            let _ = self.stored.send((publish.channel.clone(), serial, message));
                                            (serial, false)
                                        }
                                    };
                                    results.push(PublishResult { position: Position { epoch: EPOCH, serial }, duplicate, dropped: None });
                                }
                                drop(logs);
                                if self.drop_on_publish.load(Ordering::SeqCst) {
                                    return Ok(());
                                }
                                out.push(ServerFrame::Ack(Ack { msg_serial: publish.msg_serial, results }));
                            }
                            ClientFrame::Close(_) => {
                                self.closes.fetch_add(1, Ordering::SeqCst);
                                out.push(ServerFrame::Closed(Default::default()));
                            }
                            _ => {}
                        }
                    }
                }
            }
            for frame in out {
                let bytes = encode(format, &frame);
                let message = match format {
                    Format::Json => WsMessage::text(String::from_utf8(bytes)?),
                    Format::MsgPack => WsMessage::binary(bytes),
                };
                ws.send(message).await?;
            }
        }
    }

    /// Appends every stored message from the channel's next serial on to `out`.
    async fn replay(
        &self,
        channel: &str,
        attached: &mut HashMap<String, u64>,
        out: &mut Vec<ServerFrame>,
    ) {
        let logs = self.logs.lock().await;
        let Some(log) = logs.get(channel) else { return };
        let Some(next) = attached.get_mut(channel) else {
            return;
        };
        while let Some(message) = log.messages.get((*next - 1) as usize) {
            let mut message = message.clone();
            message.timestamp = Some(0);
            out.push(ServerFrame::Message(MessageFrame {
                channel: channel.to_owned(),
                position: Position {
                    epoch: EPOCH,
                    serial: *next,
                },
                message,
            }));
            *next += 1;
        }
    }
}

fn config(edge: &MockEdge, format: Format) -> ClientConfig {
    ClientConfig::new(edge.url(), "app.k:secret")
        .format(format)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .request_timeout(Duration::from_secs(10))
}

/// Reads `n` messages (no other event expected) from `stream`.
async fn take(stream: &mut ChannelStream, n: usize) -> anyhow::Result<Vec<(Position, Message)>> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(LIMIT, stream.next()).await? {
            Some(ChannelEvent::Message { position, message }) => got.push((position, message)),
            other => bail!("unexpected event {other:?} after {} messages", got.len()),
        }
    }
    Ok(got)
}

async fn wait_reconnected(client: &Client, old: &str) -> anyhow::Result<()> {
    let mut state = client.state();
    tokio::time::timeout(
        LIMIT,
        state.wait_for(
            |s| matches!(s, ConnectionState::Connected { connection_id, .. } if connection_id != old),
        ),
    )
    .await??;
    Ok(())
}

fn connection_id(client: &Client) -> String {
    match &*client.state().borrow() {
        ConnectionState::Connected { connection_id, .. } => connection_id.clone(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn publish_attach_and_deliver_in_both_formats() -> anyhow::Result<()> {
    for format in Format::ALL {
        let edge = MockEdge::start().await?;
        let client = Client::connect(config(&edge, format)).await?;
        let first = client
            .publish(
                "chat",
                vec![Message::new("before"), Message::new(vec![1u8, 2])],
            )
            .await?;
        assert_eq!(
            first.iter().map(|r| r.position.serial).collect::<Vec<_>>(),
            vec![1, 2]
        );

        let mut now = client.attach("chat", AttachFrom::Now).await?;
        assert_eq!(
            now.attached_at(),
            Position {
                epoch: EPOCH,
                serial: 2
            }
        );
        let mut rewind = client.attach("other", AttachFrom::Rewind(5)).await?;
        drop(rewind);
        rewind = client.attach("chat-2", AttachFrom::Now).await?;
        client.publish("chat", vec![Message::new("after")]).await?;
        let got = take(&mut now, 1).await?;
        assert_eq!(got[0].0.serial, 3);
        assert_eq!(got[0].1.data, tern_protocol::Data::Text("after".into()));

        // A second client rewinds and sees text and binary as published.
        let other = Client::connect(config(&edge, format)).await?;
        let mut all = other.attach("chat", AttachFrom::Rewind(10)).await?;
        let got = take(&mut all, 3).await?;
        assert_eq!(
            got[1].1.data,
            tern_protocol::Data::Binary(vec![1u8, 2].into())
        );
        let first = client.publish("chat-3", vec![Message::new("x")]).await?;
        let mut after = other
            .attach("chat-3", AttachFrom::After(first[0].position))
            .await?;
        client.publish("chat-3", vec![Message::new("y")]).await?;
        assert_eq!(take(&mut after, 1).await?[0].0.serial, 2);
        drop(rewind);
        client.close().await;
        assert!(
            client
                .publish("chat", vec![Message::new("late")])
                .await
                .is_err()
        );
        other.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn reconnects_resume_channels_without_loss_or_duplicates() -> anyhow::Result<()> {
    let edge = MockEdge::start().await?;
    let publisher = Client::connect(config(&edge, Format::Json)).await?;
    let subscriber = Client::connect(config(&edge, Format::MsgPack)).await?;
    let mut stream = subscriber.attach("feed", AttachFrom::Now).await?;
    let mut expected = Vec::new();
    for round in 0..5 {
        let publisher_id = connection_id(&publisher);
        let subscriber_id = connection_id(&subscriber);
        for i in 0..20 {
            let results = publisher
                .publish("feed", vec![Message::new(format!("{round}-{i}"))])
                .await?;
            expected.push(results[0].position.serial);
        }
        edge.drop_connections();
        wait_reconnected(&publisher, &publisher_id).await?;
        wait_reconnected(&subscriber, &subscriber_id).await?;
    }
    let got = take(&mut stream, expected.len()).await?;
    let serials: Vec<u64> = got.iter().map(|(p, _)| p.serial).collect();
    assert_eq!(serials, expected);
    assert_eq!(serials, (1..=100).collect::<Vec<_>>());
    assert!(edge.connections.load(Ordering::SeqCst) >= 12);
    // Nothing more (no duplicate) arrives after one more message.
    publisher
        .publish("feed", vec![Message::new("last")])
        .await?;
    assert_eq!(take(&mut stream, 1).await?[0].0.serial, 101);
    Ok(())
}

#[tokio::test]
async fn unanswered_publishes_are_resent_and_stored_once() -> anyhow::Result<()> {
    let edge = MockEdge::start().await?;
    let client = Client::connect(config(&edge, Format::Json)).await?;
    edge.drop_on_publish.store(true, Ordering::SeqCst);
    let publishing = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .publish("orders", vec![Message::new("a"), Message::new("b")])
                .await
        })
    };
    // The publish is stored but its connection drops before the ACK; let the next
    // connection answer.
    let mut state = client.state();
    tokio::time::timeout(
        LIMIT,
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await??;
    edge.drop_on_publish.store(false, Ordering::SeqCst);
    let results = tokio::time::timeout(LIMIT, publishing).await???;
    assert_eq!(
        results
            .iter()
            .map(|r| r.position.serial)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(results.iter().all(|r| r.duplicate), "{results:?}");
    assert_eq!(edge.stored("orders").await.len(), 2, "stored once");
    Ok(())
}

#[tokio::test]
async fn a_slow_reader_loses_nothing() -> anyhow::Result<()> {
    let edge = MockEdge::start().await?;
    let mut config = config(&edge, Format::Json);
    config.channel_buffer = 4;
    let client = Client::connect(config).await?;
    let mut stream = client.attach("burst", AttachFrom::Now).await?;
    let other = Client::connect(self::config(&edge, Format::Json)).await?;
    for chunk in 0..10 {
        let messages = (0..10)
            .map(|i| Message::new(format!("{chunk}-{i}")))
            .collect();
        other.publish("burst", messages).await?;
    }
    // Nothing read yet: the stream's buffer of 4 overflowed long ago.
    let got = take(&mut stream, 100).await?;
    assert_eq!(
        got.iter().map(|(p, _)| p.serial).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    assert!(
        edge.attaches.load(Ordering::SeqCst) > 1,
        "the channel was never paused and re-attached"
    );
    Ok(())
}

#[tokio::test]
async fn first_connection_failure_is_an_error() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    let error = Client::connect(ClientConfig::new(format!("ws://{addr}"), "k"))
        .await
        .err()
        .context("connecting to a closed port must fail")?;
    assert!(
        matches!(error, tern_client::ClientError::Transport(_)),
        "{error}"
    );
    let error = Client::connect(ClientConfig::new("wss://127.0.0.1:1", "k"))
        .await
        .err()
        .context("wss")?;
    assert!(
        matches!(error, tern_client::ClientError::Config(_)),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn dropping_every_handle_closes_the_session() -> anyhow::Result<()> {
    let edge = MockEdge::start().await?;
    let client = Client::connect(config(&edge, Format::Json)).await?;
    let mut stream = client.attach("c", AttachFrom::Now).await?;
    let clone = client.clone();
    drop(client);
    drop(clone);
    // The stream still holds the connection open: it keeps receiving.
    let other = Client::connect(config(&edge, Format::Json)).await?;
    other.publish("c", vec![Message::new("still here")]).await?;
    assert_eq!(take(&mut stream, 1).await?[0].0.serial, 1);
    assert_eq!(edge.closes.load(Ordering::SeqCst), 0);
    drop(stream);
    tokio::time::timeout(LIMIT, async {
        while edge.closes.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .context("CLOSE after the last handle went")?;
    Ok(())
}
