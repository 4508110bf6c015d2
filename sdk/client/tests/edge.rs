//! `tern-client` against a real edge (`tern_edge::Edge`) and a real log node
//! (`tern_log::net::LogServer` on the embedded store), in this process, on
//! 127.0.0.1:0. Transport drops are forced through a TCP proxy that can cut every
//! connection at once, and by restarting the edge on its port. Every edge shares one
//! cluster secret, so a connection resumes on any of them. [`failover`] resolves the
//! edge's names with a DNS responder of its own and fails over between them.
//!
//! Run: `cargo test -p tern-client --test edge`

#[path = "edge/failover.rs"]
mod failover;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use tern_client::{
    AttachFrom, ChannelEvent, ChannelStream, Client, ClientConfig, ClientError, ConnectionState,
};
use tern_config::{
    ApiKey, Capabilities, ChannelPattern, ClusterSecret, EdgeConfig, EdgeLimitsConfig,
    LinkServerConfig, Operation, Operations, StoreConfig,
};
use tern_edge::{Edge, EdgeHandle};
use tern_log::EmbeddedStore;
use tern_log::net::{LogServer, tls};
use tern_protocol::{Data, ErrorCode, Format, Message, Position};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot, watch};

/// Every wait ends by then.
const PATIENCE: Duration = Duration::from_secs(20);
const KEY: &str = "app.all:all-secret-0123456789";
const SUBSCRIBE_ONLY: &str = "app.reader:reader-secret-0123456789";
/// The connection key secret every edge of the tests shares.
const CLUSTER_SECRET: &str = "client-tests-cluster-secret-0123456789";

/// A log node and an edge linked to it.
struct Node {
    _dir: tempfile::TempDir,
    _log: oneshot::Sender<()>,
    log_addr: SocketAddr,
    cert: std::path::PathBuf,
    /// The limits of every edge started.
    limits: EdgeLimitsConfig,
    edge: Option<EdgeHandle>,
}

fn key(text: &str, ops: &[Operation]) -> anyhow::Result<ApiKey> {
    let (app, rest) = text.split_once('.').context("app")?;
    let (key_id, secret) = rest.split_once(':').context("secret")?;
    Ok(ApiKey {
        app: app.into(),
        key_id: key_id.into(),
        secret: secret.into(),
        capabilities: Capabilities::new([(
            ChannelPattern::parse("*").map_err(anyhow::Error::msg)?,
            ops.iter().copied().collect::<Operations>(),
        )]),
    })
}

impl Node {
    async fn start() -> anyhow::Result<Node> {
        Self::with_limits(EdgeLimitsConfig::default()).await
    }

    async fn with_limits(limits: EdgeLimitsConfig) -> anyhow::Result<Node> {
        let dir = tempfile::tempdir()?;
        let cert = tls::ensure_self_signed(dir.path(), "127.0.0.1")?;
        let store = EmbeddedStore::open(&dir.path().join("data"), StoreConfig::default())?;
        let files = tls::TlsFiles::in_data_dir(dir.path());
        let server = LogServer::bind(
            "127.0.0.1:0".parse()?,
            &files,
            store,
            &LinkServerConfig::default(),
        )?;
        let log_addr = server.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve_until(async {
            let _ = stopped.await;
        }));
        let mut node = Node {
            _dir: dir,
            _log: stop,
            log_addr,
            cert: cert.files.cert.clone(),
            limits,
            edge: None,
        };
        node.start_edge("127.0.0.1:0".parse()?).await?;
        Ok(node)
    }

    async fn start_edge(&mut self, listen: SocketAddr) -> anyhow::Result<()> {
        self.edge = Some(self.another_edge(listen).await?);
        Ok(())
    }

    /// An edge on `listen` linked to this node's log, ready.
    async fn another_edge(&self, listen: SocketAddr) -> anyhow::Result<EdgeHandle> {
        let mut config = EdgeConfig {
            name: "client-test".into(),
            listen,
            limits: self.limits.clone(),
            ..EdgeConfig::default()
        };
        config.log.addr = self.log_addr;
        config.log.ca = Some(self.cert.clone());
        config.log.reconnect_min = Duration::from_millis(20);
        config.log.reconnect_max = Duration::from_millis(200);
        config.cluster.connection_key_secret = Some(ClusterSecret::new(CLUSTER_SECRET));
        config.keys = vec![
            key(KEY, &Operation::ALL)?,
            key(SUBSCRIBE_ONLY, &[Operation::Subscribe])?,
        ];
        let edge = Edge::start(config).await?;
        tokio::time::timeout(PATIENCE, async {
            while !edge.ready() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .context("edge ready")?;
        Ok(edge)
    }

    fn addr(&self) -> SocketAddr {
        self.edge
            .as_ref()
            .map_or(self.log_addr, EdgeHandle::local_addr)
    }

    /// Shuts the edge down (clients are told to go elsewhere) and starts a new one on
    /// the same port.
    async fn restart_edge(&mut self) -> anyhow::Result<()> {
        let addr = self.addr();
        if let Some(edge) = self.edge.take() {
            edge.shutdown().await;
        }
        self.start_edge(addr).await
    }
}

/// A TCP proxy in front of `upstream` whose `cut` drops every connection through it,
/// which drops new connections at once while `refuse` is set, and which forwards
/// nothing either way — without closing anything — once `stall` is called: a
/// half-open connection, as a dead NAT or a vanished phone leaves behind.
struct Proxy {
    addr: SocketAddr,
    cut: broadcast::Sender<()>,
    refuse: AtomicBool,
    stalled: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Arc<Proxy>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Arc::new(Proxy {
            addr: listener.local_addr()?,
            cut: broadcast::channel(16).0,
            refuse: AtomicBool::new(false),
            stalled: watch::channel(false).0,
        });
        let accepting = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accepting.refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cut = accepting.cut.subscribe();
                let stalled = accepting.stalled.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = forward(client_read, server_write, stalled.clone()) => {}
                        _ = forward(server_read, client_write, stalled) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        Ok(proxy)
    }

    fn cut(&self) {
        let _ = self.cut.send(());
    }

    fn stall(&self) {
        let _ = self.stalled.send(true);
    }
}

/// Copies `from` to `to` until either ends; holds everything (forever) while stalled.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            std::future::pending::<()>().await;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *stalled.borrow() {
            // Read just as the stall began: never delivered.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

fn config(addr: SocketAddr, format: Format) -> ClientConfig {
    ClientConfig::new(format!("ws://{addr}"), KEY)
        .format(format)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .request_timeout(Duration::from_secs(15))
}

/// The data of the next `n` messages of `stream`, with their positions.
async fn take(stream: &mut ChannelStream, n: usize) -> anyhow::Result<Vec<(String, Position)>> {
    let mut got = Vec::new();
    while got.len() < n {
        let event = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .with_context(|| format!("{} of {n} messages in time", got.len()))?;
        match event {
            Some(ChannelEvent::Message { position, message }) => {
                let text = match message.data {
                    Data::Text(text) => text,
                    Data::Binary(bytes) => format!("bin:{:?}", bytes.to_vec()),
                };
                got.push((text, position));
            }
            other => bail!("unexpected {other:?} after {} messages", got.len()),
        }
    }
    Ok(got)
}

fn texts(got: &[(String, Position)]) -> Vec<&str> {
    got.iter().map(|(t, _)| t.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_attach_modes() -> anyhow::Result<()> {
    let node = Node::start().await?;
    for format in Format::ALL {
        let channel = format!("modes:{format:?}");
        let client = Client::connect(config(node.addr(), format).client_id("me")).await?;
        let results = client
            .publish(
                channel.as_str(),
                vec![
                    Message::new("a"),
                    Message::new(vec![0u8, 255]),
                    Message::new("c"),
                ],
            )
            .await?;
        let positions: Vec<Position> = results.iter().map(|r| r.position).collect();
        ensure!(results.iter().all(|r| !r.duplicate), "{results:?}");
        for pair in positions.windows(2) {
            ensure!(pair[1].serial == pair[0].serial + 1, "{positions:?}");
        }

        let mut now = client.attach(channel.as_str(), AttachFrom::Now).await?;
        ensure!(now.attached_at() == positions[2], "{:?}", now.attached_at());
        let mut rewind = client
            .attach(format!("{channel}:r"), AttachFrom::Now)
            .await?;
        drop(rewind);
        let reader = Client::connect(config(node.addr(), format)).await?;
        rewind = reader
            .attach(channel.as_str(), AttachFrom::Rewind(2))
            .await?;
        let mut after = reader
            .attach(format!("{channel}:x"), AttachFrom::Now)
            .await?;
        drop(after);
        after = Client::connect(config(node.addr(), format))
            .await?
            .attach(channel.as_str(), AttachFrom::After(positions[0]))
            .await?;

        let d = client
            .publish(channel.as_str(), vec![Message::new("d")])
            .await?;
        let got = take(&mut now, 1).await?;
        ensure!(got == [("d".to_owned(), d[0].position)], "{got:?}");
        let mut message_seen = None;
        if let Some(ChannelEvent::Message { message, .. }) =
            tokio::time::timeout(PATIENCE, rewind.next()).await?
        {
            message_seen = Some(message);
        }
        let message = message_seen.context("rewind delivers")?;
        ensure!(
            message.data == Data::Binary(vec![0u8, 255].into()),
            "{message:?}"
        );
        ensure!(message.client_id.as_deref() == Some("me"), "{message:?}");
        ensure!(
            message.id.is_some() && message.timestamp.is_some(),
            "{message:?}"
        );
        ensure!(texts(&take(&mut rewind, 2).await?) == ["c", "d"]);
        let got = take(&mut after, 3).await?;
        ensure!(texts(&got) == ["bin:[0, 255]", "c", "d"], "{got:?}");
        ensure!(got[0].1 == positions[1], "{got:?}");
        client.close().await;
        reader.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed() -> anyhow::Result<()> {
    let node = Node::start().await?;
    let bad = ClientConfig::new(
        format!("ws://{}", node.addr()),
        "app.all:wrong-secret-000000",
    );
    match Client::connect(bad).await {
        Err(ClientError::Refused(info)) => {
            ensure!(info.code == ErrorCode::InvalidCredentials, "{info}");
        }
        Err(other) => bail!("wrong error: {other}"),
        Ok(_) => bail!("a wrong secret was accepted"),
    }
    let mut reader_config = config(node.addr(), Format::Json);
    reader_config.key = Some(SUBSCRIBE_ONLY.into());
    let reader = Client::connect(reader_config).await?;
    let error = reader
        .publish("news", vec![Message::new("x")])
        .await
        .err()
        .context("publish without the capability")?;
    ensure!(error.code() == Some(ErrorCode::Forbidden), "{error}");
    let Err(error) = reader.attach("bad name", AttachFrom::Now).await else {
        bail!("an invalid channel name was accepted");
    };
    ensure!(error.code() == Some(ErrorCode::InvalidChannel), "{error}");
    let Err(error) = reader.attach("news", AttachFrom::Rewind(3)).await else {
        bail!("rewind without the history capability was accepted");
    };
    ensure!(error.code() == Some(ErrorCode::Forbidden), "{error}");
    Ok(())
}

/// Publishers and a subscriber behind a proxy that is cut again and again: every
/// publish resolves, each message is stored once (a direct subscriber sees exactly
/// them), and the proxied subscriber sees each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    let node = Node::start().await?;
    let proxy = Proxy::start(node.addr()).await?;
    let direct = Client::connect(config(node.addr(), Format::Json)).await?;
    let mut watcher = direct.attach("cut", AttachFrom::Now).await?;
    let subscriber = Client::connect(config(proxy.addr, Format::MsgPack)).await?;
    let mut stream = subscriber.attach("cut", AttachFrom::Now).await?;
    let publisher = Client::connect(config(proxy.addr, Format::Json)).await?;

    const TASKS: usize = 8;
    const EACH: usize = 25;
    let total = TASKS * EACH;
    let progress = Arc::new(AtomicUsize::new(0));
    let publishing: Vec<_> = (0..TASKS)
        .map(|t| {
            let publisher = publisher.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for i in 0..EACH {
                    let result = publisher
                        .publish("cut", vec![Message::new(format!("{t}-{i}"))])
                        .await?;
                    results.extend(result);
                    progress.fetch_add(1, Ordering::SeqCst);
                }
                anyhow::Ok(results)
            })
        })
        .collect();
    // Cut every connection through the proxy at each sixth of the acknowledgements.
    for k in 1..=5 {
        tokio::time::timeout(PATIENCE, async {
            while progress.load(Ordering::SeqCst) < k * total / 6 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .context("publishes progress")?;
        proxy.cut();
    }
    let mut acked = HashSet::new();
    let mut duplicates = 0;
    for task in publishing {
        for result in task.await?? {
            ensure!(
                acked.insert(result.position),
                "{} acknowledged twice",
                result.position
            );
            duplicates += usize::from(result.duplicate);
        }
    }
    // How many re-sent publishes the log recognised (depends on where the cuts fell).
    eprintln!("{duplicates} of {total} publishes were answered as duplicates after a re-send");
    let total = TASKS * EACH;
    let seen = take(&mut watcher, total).await?;
    let got = take(&mut stream, total).await?;
    ensure!(
        got == seen,
        "the proxied subscriber's order differs from the direct one's"
    );
    let unique: HashSet<&str> = texts(&got).into_iter().collect();
    ensure!(
        unique.len() == total,
        "duplicates: {} unique of {total}",
        unique.len()
    );
    let positions: HashSet<Position> = got.iter().map(|(_, p)| *p).collect();
    ensure!(
        positions == acked,
        "delivered positions differ from acknowledged ones"
    );
    let last = publisher.publish("cut", vec![Message::new("last")]).await?;
    ensure!(take(&mut watcher, 1).await? == [("last".to_owned(), last[0].position)]);
    ensure!(take(&mut stream, 1).await? == [("last".to_owned(), last[0].position)]);
    Ok(())
}

/// A channel with no message yet when attached, whose subscriber is cut off before
/// the first one: what is published while it is away arrives after the reconnect,
/// each message once and in order, with no `ContinuityLost` (it re-attaches from
/// `0:0`, the position ATTACHED named).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_empty_when_attached_loses_nothing_while_away() -> anyhow::Result<()> {
    let node = Node::start().await?;
    let proxy = Proxy::start(node.addr()).await?;
    let subscriber = Client::connect(config(proxy.addr, Format::MsgPack)).await?;
    let mut stream = subscriber.attach("empty", AttachFrom::Now).await?;
    ensure!(
        stream.attached_at() == Position::BEFORE_FIRST,
        "{}",
        stream.attached_at()
    );

    // Away: the connection is cut and reconnecting fails until the proxy lets it in.
    proxy.refuse.store(true, Ordering::SeqCst);
    proxy.cut();
    let mut state = subscriber.state();
    tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })),
    )
    .await
    .context("the subscriber notices the cut")??;
    let publisher = Client::connect(config(node.addr(), Format::Json)).await?;
    let away = publisher
        .publish(
            "empty",
            vec![Message::new("1"), Message::new("2"), Message::new("3")],
        )
        .await?;
    ensure!(
        !matches!(*state.borrow(), ConnectionState::Connected { .. }),
        "the subscriber reconnected before the messages were stored"
    );
    proxy.refuse.store(false, Ordering::SeqCst);

    let expected: Vec<(String, Position)> = ["1", "2", "3"]
        .iter()
        .zip(&away)
        .map(|(text, result)| ((*text).to_owned(), result.position))
        .collect();
    ensure!(expected[0].1.serial == 1, "{expected:?}");
    // `take` fails on any event other than a message, ContinuityLost included.
    ensure!(take(&mut stream, 3).await? == expected);
    let live = publisher.publish("empty", vec![Message::new("4")]).await?;
    ensure!(
        take(&mut stream, 1).await? == [("4".to_owned(), live[0].position)],
        "the next event is the next message: nothing twice"
    );
    Ok(())
}

/// The edge shuts down (DISCONNECTED, reconnect elsewhere) and a new one starts on its
/// port: the client reconnects and the channel continues after its last position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_restart_resumes_the_channel() -> anyhow::Result<()> {
    let mut node = Node::start().await?;
    let client = Client::connect(config(node.addr(), Format::Json)).await?;
    let mut stream = client.attach("restart", AttachFrom::Now).await?;
    let before = client
        .publish("restart", vec![Message::new("1"), Message::new("2")])
        .await?;
    ensure!(texts(&take(&mut stream, 2).await?) == ["1", "2"]);
    let id = connection_id(&client)?;
    node.restart_edge().await?;
    // Published while the client may still be reconnecting: queued and sent after.
    let after = client.publish("restart", vec![Message::new("3")]).await?;
    ensure!(after[0].position.serial == before[1].position.serial + 1);
    ensure!(take(&mut stream, 1).await? == [("3".to_owned(), after[0].position)]);
    // The new edge shares the cluster's secret: the same connection, resumed.
    let now = client.state().borrow().clone();
    ensure!(
        matches!(&now, ConnectionState::Connected { connection_id, resumed: true, .. } if *connection_id == id),
        "not the same connection resumed: {now:?}"
    );
    Ok(())
}

/// The id of the client's connection, or an error when it is not connected.
fn connection_id(client: &Client) -> anyhow::Result<String> {
    match &*client.state().borrow() {
        ConnectionState::Connected { connection_id, .. } => Ok(connection_id.clone()),
        other => bail!("not connected: {other:?}"),
    }
}

/// An edge drains (DISCONNECTED, reconnect elsewhere): the client dials its fallback
/// URL, another edge of the cluster, and resumes the same connection there; the
/// channel continues with nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_edge_sends_the_client_to_a_fallback_where_it_resumes() -> anyhow::Result<()> {
    let mut node = Node::start().await?;
    let other = node.another_edge("127.0.0.1:0".parse()?).await?;
    let client = Client::connect(
        config(node.addr(), Format::Json).fallback_urls([format!("ws://{}", other.local_addr())]),
    )
    .await?;
    let id = connection_id(&client)?;
    let mut stream = client.attach("moving", AttachFrom::Now).await?;
    let before = client
        .publish("moving", vec![Message::new("1"), Message::new("2")])
        .await?;
    ensure!(texts(&take(&mut stream, 2).await?) == ["1", "2"]);
    // The primary drains and is gone; the client is sent elsewhere.
    if let Some(edge) = node.edge.take() {
        edge.shutdown().await;
    }
    let after = client.publish("moving", vec![Message::new("3")]).await?;
    ensure!(after[0].position.serial == before[1].position.serial + 1);
    ensure!(take(&mut stream, 1).await? == [("3".to_owned(), after[0].position)]);
    let now = client.state().borrow().clone();
    let fallback = format!("ws://{}/v1/ws", other.local_addr());
    ensure!(
        matches!(&now, ConnectionState::Connected { connection_id, resumed: true, url } if *connection_id == id && *url == fallback),
        "not resumed on the fallback: {now:?}"
    );
    other.shutdown().await;
    Ok(())
}

/// A client that lost its memory (a new process, a reloaded page) resumes its
/// connection from a saved recovery key: the same connection id, and each channel
/// continues after the last message handed to the application — the messages
/// published while it was gone arrive once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_key_resumes_the_connection_in_a_new_client() -> anyhow::Result<()> {
    let node = Node::start().await?;
    let first = Client::connect(config(node.addr(), Format::Json).client_id("reloader")).await?;
    let id = connection_id(&first)?;
    let mut stream = first.attach("recovered", AttachFrom::Now).await?;
    first
        .publish("recovered", vec![Message::new("1"), Message::new("2")])
        .await?;
    ensure!(texts(&take(&mut stream, 2).await?) == ["1", "2"]);
    let saved = first.recovery_key().await.context("a recovery key")?;
    drop(stream);
    first.close().await;

    // Published while nobody listens.
    let publisher = Client::connect(config(node.addr(), Format::Json)).await?;
    let missed = publisher
        .publish("recovered", vec![Message::new("3"), Message::new("4")])
        .await?;

    let second = Client::connect(
        config(node.addr(), Format::Json)
            .client_id("reloader")
            .recover(saved),
    )
    .await?;
    let now = second.state().borrow().clone();
    ensure!(
        matches!(&now, ConnectionState::Connected { connection_id, resumed: true, .. } if *connection_id == id),
        "not resumed: {now:?}"
    );
    let mut stream = second.attach("recovered", AttachFrom::Now).await?;
    let got = take(&mut stream, 2).await?;
    ensure!(
        got == [
            ("3".to_owned(), missed[0].position),
            ("4".to_owned(), missed[1].position)
        ],
        "{got:?}"
    );
    // A bad key is refused before anything is sent.
    let refused = Client::connect(config(node.addr(), Format::Json).recover("%%")).await;
    ensure!(
        matches!(refused, Err(ClientError::Config(_))),
        "{:?}",
        refused.err()
    );
    Ok(())
}

/// A connection goes half-open (the proxy forwards nothing either way and closes
/// nothing): the client notices the silence after two heartbeat intervals, gives up
/// on the stalled route and resumes the same connection through its fallback URL; the
/// edge notices the silence after its idle timeout and ends the session
/// (`idle_timeout` in `/metrics`), releasing what it held. Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_detected_on_both_sides() -> anyhow::Result<()> {
    let node = Node::with_limits(EdgeLimitsConfig {
        heartbeat_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..EdgeLimitsConfig::default()
    })
    .await?;
    let proxy = Proxy::start(node.addr()).await?;
    let direct = format!("ws://{}", node.addr());
    let client = Client::connect(
        config(proxy.addr, Format::Json)
            .fallback_urls([direct.clone()])
            .request_timeout(Duration::from_secs(3)),
    )
    .await?;
    let id = connection_id(&client)?;
    let mut stream = client.attach("half-open", AttachFrom::Now).await?;
    let publisher = Client::connect(config(node.addr(), Format::Json)).await?;
    publisher
        .publish("half-open", vec![Message::new("1")])
        .await?;
    ensure!(texts(&take(&mut stream, 1).await?) == ["1"]);

    proxy.stall();
    // Published into the silence: it arrives once the client is back.
    let missed = publisher
        .publish("half-open", vec![Message::new("2")])
        .await?;
    ensure!(take(&mut stream, 1).await? == [("2".to_owned(), missed[0].position)]);
    let now = client.state().borrow().clone();
    let fallback = format!("{direct}/v1/ws");
    ensure!(
        matches!(&now, ConnectionState::Connected { connection_id, resumed: true, url } if *connection_id == id && *url == fallback),
        "not resumed through the fallback: {now:?}"
    );
    // The edge ended the stalled session on its own.
    let closed_idle = tokio::time::timeout(PATIENCE, async {
        loop {
            let metrics = metrics(node.addr()).await?;
            let idle = metrics
                .lines()
                .find(|l| {
                    l.starts_with("tern_edge_connections_closed_total{reason=\"idle_timeout\"}")
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if idle >= 1 {
                return anyhow::Ok(idle);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("the edge never closed the half-open session")??;
    ensure!(closed_idle >= 1);
    Ok(())
}

/// `GET /metrics` of the edge at `addr`.
async fn metrics(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}
