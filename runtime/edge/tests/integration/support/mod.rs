//! A real log node and a real edge on 127.0.0.1:0, and plain WebSocket / HTTP clients
//! that speak the protocol by hand (no tern-client), for the edge's integration tests.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tern_config::{
    ApiKey, Capabilities, ChannelPattern, EdgeConfig, EdgeLimitsConfig, LinkServerConfig,
    Operation, Operations, StoreConfig,
};
use tern_edge::{Edge, EdgeHandle};
use tern_log::EmbeddedStore;
use tern_log::net::{LogServer, tls};
use tern_protocol::{ClientFrame, Format, ServerFrame};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every wait is bounded so that a bug fails the test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The key with every right.
pub const ADMIN_KEY: &str = "app.admin:admin-secret-0123456789";
/// A key that may only subscribe to `news:*`, publish to `chat:*` and read `chat:*`.
pub const LIMITED_KEY: &str = "app.limited:limited-secret-0123456789";

pub struct LogNode {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    /// How the store is opened (each time it serves).
    pub store_config: StoreConfig,
    /// The store being served (shared: a test may enforce retention on it).
    pub store: Option<EmbeddedStore>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), tern_log::net::ServerError>>>,
    pub dir: tempfile::TempDir,
}

impl LogNode {
    pub async fn start() -> LogNode {
        Self::with_store(StoreConfig::default()).await
    }

    pub async fn with_store(store_config: StoreConfig) -> LogNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = tls::ensure_self_signed(dir.path(), "127.0.0.1").expect("certificate");
        let mut node = LogNode {
            addr: "127.0.0.1:0".parse().expect("addr"),
            cert: cert.files.cert.clone(),
            store_config,
            store: None,
            stop: None,
            served: None,
            dir,
        };
        node.serve().await;
        node
    }

    /// (Re)starts serving on `self.addr` (port 0 the first time).
    pub async fn serve(&mut self) {
        let store = EmbeddedStore::open(&self.dir.path().join("data"), self.store_config.clone())
            .expect("open store");
        self.store = Some(store.clone());
        let files = tls::TlsFiles::in_data_dir(self.dir.path());
        let server = LogServer::bind(self.addr, &files, store, &LinkServerConfig::default())
            .expect("bind log");
        self.addr = server.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel();
        self.stop = Some(stop);
        self.served = Some(tokio::spawn(server.serve_until(async {
            let _ = stopped.await;
        })));
    }

    /// Stops serving and waits until the store is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.store = None;
        if let Some(served) = self.served.take() {
            let _ = tokio::time::timeout(PATIENCE, served).await;
        }
    }
}

fn key(text: &str, grants: &[(&str, &[Operation])]) -> ApiKey {
    let (app, rest) = text.split_once('.').expect("app");
    let (key_id, secret) = rest.split_once(':').expect("secret");
    ApiKey {
        app: app.into(),
        key_id: key_id.into(),
        secret: secret.into(),
        capabilities: Capabilities::new(grants.iter().map(|(pattern, ops)| {
            (
                ChannelPattern::parse(pattern).expect("pattern"),
                ops.iter().copied().collect::<Operations>(),
            )
        })),
    }
}

pub fn edge_config(log: &LogNode, limits: EdgeLimitsConfig) -> EdgeConfig {
    let mut config = EdgeConfig {
        name: "test-edge".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        limits,
        ..EdgeConfig::default()
    };
    config.log.addr = log.addr;
    config.log.ca = Some(log.cert.clone());
    config.log.reconnect_min = Duration::from_millis(20);
    config.log.reconnect_max = Duration::from_millis(200);
    config.admin_keys = vec![key(ADMIN_KEY, &[])];
    config.keys = vec![
        key(ADMIN_KEY, &[("*", &Operation::ALL)]),
        key(
            LIMITED_KEY,
            &[
                ("news:*", &[Operation::Subscribe]),
                ("chat:*", &[Operation::Publish, Operation::History]),
            ],
        ),
    ];
    config
}

pub struct Cluster {
    pub log: LogNode,
    pub edge: EdgeHandle,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::with_limits(EdgeLimitsConfig::default()).await
    }

    pub async fn with_limits(limits: EdgeLimitsConfig) -> Cluster {
        Self::with(LogNode::start().await, limits).await
    }

    /// An edge in front of `log`.
    pub async fn with(log: LogNode, limits: EdgeLimitsConfig) -> Cluster {
        let edge = Edge::start(edge_config(&log, limits))
            .await
            .expect("edge starts");
        let cluster = Cluster { log, edge };
        cluster.wait_ready().await;
        cluster
    }

    pub async fn wait_ready(&self) {
        tokio::time::timeout(PATIENCE, async {
            while !self.edge.ready() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("edge ready");
    }

    pub fn addr(&self) -> SocketAddr {
        self.edge.local_addr()
    }

    pub async fn client(&self, format: Format) -> Client {
        Client::open(self.addr(), format).await
    }

    /// A client that sent CONNECT with `key` and got CONNECTED.
    pub async fn connected(&self, format: Format, key: &str) -> Client {
        let mut client = self.client(format).await;
        client.connect(key).await;
        client
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub format: Format,
    /// Frames received but not yet taken.
    pending: std::collections::VecDeque<ServerFrame>,
}

impl Client {
    pub async fn open(addr: SocketAddr, format: Format) -> Client {
        let mut request = format!("ws://{addr}/v1/ws")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(format.subprotocol()),
        );
        let (ws, response) =
            tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
                .await
                .expect("connect in time")
                .expect("WebSocket handshake");
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            Some(format.subprotocol())
        );
        Client {
            ws,
            format,
            pending: Default::default(),
        }
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_raw(tern_protocol::encode(self.format, frame))
            .await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let message = match self.format {
            Format::Json => WsMessage::Text(String::from_utf8(bytes).expect("utf-8").into()),
            Format::MsgPack => WsMessage::Binary(bytes.into()),
        };
        self.ws.send(message).await.expect("send");
    }

    /// The next frame; panics if the connection ends first.
    pub async fn recv(&mut self) -> ServerFrame {
        match self.next().await {
            Next::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame, or how the connection ended.
    pub async fn next(&mut self) -> Next {
        if let Some(frame) = self.pending.pop_front() {
            return Next::Frame(frame);
        }
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time");
            let bytes = match message {
                Some(Ok(WsMessage::Text(text))) => text.as_bytes().to_vec(),
                Some(Ok(WsMessage::Binary(bytes))) => bytes.to_vec(),
                Some(Ok(WsMessage::Close(frame))) => return Next::Closed(frame),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Next::Error(error.to_string()),
                None => return Next::Closed(None),
            };
            let frames = tern_protocol::decode::<ServerFrame>(self.format, &bytes)
                .expect("server messages decode");
            for frame in frames {
                self.pending.push_back(frame.expect("server frames decode"));
            }
            if let Some(frame) = self.pending.pop_front() {
                return Next::Frame(frame);
            }
        }
    }

    /// The next frame that `pick` accepts (others are skipped: heartbeats, acks…).
    pub async fn recv_matching<T>(&mut self, mut pick: impl FnMut(&ServerFrame) -> Option<T>) -> T {
        loop {
            let frame = self.recv().await;
            if let Some(value) = pick(&frame) {
                return value;
            }
        }
    }

    pub async fn connect(&mut self, key: &str) {
        self.send(&ClientFrame::Connect(tern_protocol::Connect {
            key: Some(key.into()),
            ..Default::default()
        }))
        .await;
        match self.recv().await {
            ServerFrame::Connected(_) => {}
            other => panic!("expected CONNECTED, got {other:?}"),
        }
    }
}

#[derive(Debug)]
pub enum Next {
    Frame(ServerFrame),
    Closed(Option<CloseFrame>),
    Error(String),
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
