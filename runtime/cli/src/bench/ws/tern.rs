//! Target `tern`: a Tern edge over client protocol v1 (frames from `tern-protocol`).
//!
//! Every connection sends CONNECT with the key; subscribers ATTACH their channel
//! and wait for ATTACHED; publishers send one message per PUBLISH and keep at most
//! `--inflight` awaiting ACK (fewer if the edge's `max_inflight_publishes` says so).
//! All of them send a HEARTBEAT often enough for the edge's idle timeout.
//!
//! Subscribers find each delivered message by the stamp in its payload instead of
//! decoding the whole frame, so that the load generator, which shares the machine
//! with the edge, spends per delivery about what the NATS client does (it reads a
//! `MSG` line). A WebSocket message without a stamp is decoded in full and must be
//! a frame the session allows. With `--verify` every frame is decoded and each
//! MESSAGE is checked: its channel, and serials dense from ATTACHED's position.
//!
//! Without `--url` the benchmark starts `tern dev --port 0 --data-dir <tmp>` (this
//! same binary) and reads its address (`tern dev listening on http://ADDR`) and dev
//! key (`API key    app.keyid:secret`) from its output. [`start_split`] starts a
//! `tern log` and a `tern edge` linked to it instead, two processes (for `tern bench
//! resume --topology split`): the edge's config is written next to nothing else, with
//! a fresh random API key and cluster secret, and the edge counts as started once
//! `GET /readyz` answers 200 (linked to the log).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tern_protocol::{
    Attach, ClientFrame, Connect, Connected, Data, Format, Heartbeat, Message, Publish, ServerFrame,
};
use tokio::process::Command;
use tokio_tungstenite::tungstenite;

use super::super::child::ChildServer;
use super::super::quic;
use super::conn::{self, Ws, WsUrl};
use super::load::{self, Deliveries, Publisher, Run, STAMP_LEN, Step, Target};
use crate::http_client::{self, Endpoint, Request};

/// The edge's WebSocket path.
pub(super) const WS_PATH: &str = "/v1/ws";

/// Longest wait for CONNECTED or ATTACHED.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Between two `GET /readyz` of an edge that is not ready yet.
const READY_POLL: Duration = Duration::from_millis(50);

/// PUBLISH frames written before the socket is flushed, when unpaced.
const FLUSH_EVERY: usize = 32;

/// A Tern edge to measure.
#[derive(Clone, Debug)]
pub(super) struct Edge {
    pub(super) url: WsUrl,
    pub(super) key: String,
    /// The edge's process, for its resident memory.
    pub(super) pid: Option<u32>,
}

/// Starts `tern dev` on a free port with its data in `dir`, and waits for its
/// address and dev key.
pub(super) async fn start_dev(
    dir: &Path,
    deadline: Instant,
) -> anyhow::Result<(ChildServer, Edge)> {
    let exe = std::env::current_exe().context("cannot find this tern binary")?;
    let mut command = Command::new(exe);
    command
        .args(["dev", "--port", "0", "--data-dir"])
        .arg(dir)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    let mut child = ChildServer::spawn("tern dev", command)?;
    let mut addr = None;
    let (addr, key) = child
        .wait_for_line(deadline, |line| {
            if addr.is_none() {
                addr = listening_addr(line);
                return None;
            }
            let key = dev_key(line)?;
            addr.clone().map(|addr| (addr, key.to_owned()))
        })
        .await?;
    let edge = Edge {
        url: WsUrl::parse(&addr, WS_PATH)?,
        key,
        pid: child.pid(),
    };
    Ok((child, edge))
}

/// A `tern log` and a `tern edge` linked to it, each a child process of this
/// binary (killed when dropped).
pub(super) struct SplitServers {
    /// The log node.
    pub(super) log: ChildServer,
    /// The edge node.
    pub(super) edge: ChildServer,
}

/// Starts `tern log` with its data in `log_dir`, then `tern edge` with its config in
/// `edge_dir`, both on free loopback ports, and waits until the edge is ready (linked
/// to the log: `GET /readyz` answers 200).
pub(super) async fn start_split(
    log_dir: &Path,
    edge_dir: &Path,
    deadline: Instant,
) -> anyhow::Result<(SplitServers, Edge)> {
    let (log, node) = quic::start_node(log_dir, deadline).await?;
    let key = format!("bench.resume:{}", random_hex(16));
    let config = edge_dir.join("edge.toml");
    let text = edge_config(&node, &key, &random_hex(32))?;
    std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
    let exe = std::env::current_exe().context("cannot find this tern binary")?;
    let mut command = Command::new(exe);
    command.arg("edge").arg("--config").arg(&config).env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    let mut child = ChildServer::spawn("tern edge", command)?;
    let addr = child
        .wait_for_line(deadline, |line| {
            let rest = line.trim().strip_prefix("tern edge listening on ")?;
            Some(rest.split_whitespace().next()?.to_owned())
        })
        .await?;
    let mut servers = SplitServers { log, edge: child };
    wait_until_ready(&mut servers, &addr, deadline).await?;
    let edge = Edge {
        url: WsUrl::parse(&addr, WS_PATH)?,
        key,
        pid: servers.edge.pid(),
    };
    Ok((servers, edge))
}

/// The edge's config: listen on a free loopback port, link to `node`, one API key
/// allowed everything on every channel, a cluster secret; every other setting at
/// its default (as in `tern dev`).
fn edge_config(node: &quic::RemoteNode, key: &str, cluster_secret: &str) -> anyhow::Result<String> {
    let cert = node.cert.to_str().with_context(|| {
        format!(
            "the log's certificate path {} is not UTF-8",
            node.cert.display()
        )
    })?;
    let table = |pairs: Vec<(&str, toml::Value)>| -> toml::Value {
        toml::Value::Table(
            pairs
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        )
    };
    let text = |value: &str| toml::Value::String(value.to_owned());
    let config = table(vec![
        (
            "edge",
            table(vec![
                ("name", text("bench")),
                ("listen", text("127.0.0.1:0")),
            ]),
        ),
        (
            "log",
            table(vec![
                ("addr", text(&node.addr.to_string())),
                ("server_name", text(&node.server_name)),
                ("ca", text(cert)),
            ]),
        ),
        (
            "cluster",
            table(vec![("connection_key_secret", text(cluster_secret))]),
        ),
        (
            "keys",
            toml::Value::Array(vec![table(vec![
                ("key", text(key)),
                (
                    "capabilities",
                    table(vec![("*", toml::Value::Array(vec![text("*")]))]),
                ),
            ])]),
        ),
    ]);
    toml::to_string(&config).context("cannot write the edge's config as TOML")
}

/// Polls the edge's `GET /readyz` until it answers 200; fails when either process
/// exits or at `deadline`.
async fn wait_until_ready(
    servers: &mut SplitServers,
    addr: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    let endpoint = Endpoint::parse(addr)?;
    let request = Request {
        method: "GET",
        path: "/readyz",
        bearer: None,
        json: None,
    };
    loop {
        let answer = http_client::send(&endpoint, request, SETUP_TIMEOUT).await;
        if matches!(&answer, Ok(response) if response.status == 200) {
            return Ok(());
        }
        servers.edge.check_running()?;
        servers.log.check_running()?;
        if Instant::now() + READY_POLL >= deadline {
            let last = match answer {
                Ok(response) => format!("HTTP {}", response.status),
                Err(error) => error.to_string(),
            };
            bail!(
                "tern edge at {addr} was not ready in time (GET /readyz: {last}){}",
                servers.edge.log_tail()
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// `bytes` random bytes as lowercase hex.
fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// `http://ADDR` from `tern dev listening on http://ADDR`.
fn listening_addr(line: &str) -> Option<String> {
    let url = line.trim().strip_prefix("tern dev listening on ")?;
    Some(url.split_whitespace().next()?.to_owned())
}

/// The key of `API key    app.keyid:secret`.
fn dev_key(line: &str) -> Option<&str> {
    let key = line.strip_prefix("API key")?.trim();
    let (id, secret) = key.split_once(':')?;
    (id.contains('.') && !secret.is_empty() && !key.contains(char::is_whitespace)).then_some(key)
}

/// The `tern` side of a run.
pub(super) struct TernTarget {
    addr: SocketAddr,
    url: WsUrl,
    key: String,
    format: Format,
    verify: bool,
    channels: Vec<String>,
    /// What follows the stamp in every payload.
    pad: String,
}

impl TernTarget {
    pub(super) async fn new(
        edge: &Edge,
        format: Format,
        verify: bool,
        channels: Vec<String>,
        size: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            addr: edge.url.resolve().await?,
            url: edge.url.clone(),
            key: edge.key.clone(),
            format,
            verify,
            channels,
            pad: "x".repeat(size.saturating_sub(STAMP_LEN)),
        })
    }

    /// Payloads of English words after the stamp instead of one repeated letter, so a
    /// function that reads the text (`tern bench functions`) sees what a chat sends.
    pub(super) fn with_text_pad(mut self) -> Self {
        const WORDS: &str = "the quick brown fox jumps over the lazy dog while seven \
                             friends share a pot of tea and talk about the weather ";
        let len = self.pad.len();
        self.pad = WORDS.chars().cycle().take(len).collect();
        self
    }

    /// Opens a session: WebSocket, CONNECT, CONNECTED.
    async fn open(&self) -> anyhow::Result<Session> {
        let ws = conn::open(self.addr, &self.url, Some(self.format.subprotocol())).await?;
        let mut session = Session {
            ws,
            format: self.format,
            heartbeat: Duration::ZERO,
            connected: Connected::default(),
        };
        session
            .send(&ClientFrame::Connect(Connect {
                key: Some(self.key.clone()),
                ..Connect::default()
            }))
            .await?;
        let connected = tokio::time::timeout(SETUP_TIMEOUT, async {
            loop {
                for frame in session.recv_frames().await? {
                    match frame {
                        ServerFrame::Connected(connected) => return anyhow::Ok(connected),
                        other => unexpected(other, "waiting for CONNECTED")?,
                    }
                }
            }
        })
        .await
        .context("no CONNECTED in time")??;
        // Often enough for the idle timeout, whatever the edge's figures.
        let every = connected
            .heartbeat_interval_ms
            .min(connected.idle_timeout_ms / 3);
        session.heartbeat = if every == 0 {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(every.max(100))
        };
        session.connected = connected;
        Ok(session)
    }
}

/// An open, CONNECTED session.
struct Session {
    ws: Ws,
    format: Format,
    heartbeat: Duration,
    connected: Connected,
}

impl Session {
    fn message(&self, bytes: Vec<u8>) -> anyhow::Result<tungstenite::Message> {
        Ok(if self.format.is_text() {
            tungstenite::Message::Text(
                String::from_utf8(bytes)
                    .context("a JSON frame is not UTF-8")?
                    .into(),
            )
        } else {
            tungstenite::Message::Binary(bytes.into())
        })
    }

    /// Sends one frame and flushes.
    async fn send(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        let message = self.message(tern_protocol::encode(self.format, frame))?;
        self.ws.send(message).await.context("send failed")
    }

    /// Queues one frame without flushing.
    async fn feed(&mut self, frame: &ClientFrame) -> anyhow::Result<()> {
        let message = self.message(tern_protocol::encode(self.format, frame))?;
        self.ws.feed(message).await.context("send failed")
    }

    async fn heartbeat(&mut self) -> anyhow::Result<()> {
        self.send(&ClientFrame::Heartbeat(Heartbeat::default()))
            .await
    }

    /// The next text or binary message (pings are answered by the library).
    async fn recv(&mut self) -> anyhow::Result<Bytes> {
        loop {
            match self.ws.next().await {
                Some(Ok(tungstenite::Message::Text(text))) => return Ok(text.into()),
                Some(Ok(tungstenite::Message::Binary(bytes))) => return Ok(bytes),
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    bail!("the edge closed the connection ({frame:?})")
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error).context("receive failed"),
                None => bail!("the edge closed the connection"),
            }
        }
    }

    /// The next message, decoded in full.
    async fn recv_frames(&mut self) -> anyhow::Result<Vec<ServerFrame>> {
        let bytes = self.recv().await?;
        decode(self.format, &bytes)
    }
}

fn decode(format: Format, bytes: &[u8]) -> anyhow::Result<Vec<ServerFrame>> {
    tern_protocol::decode::<ServerFrame>(format, bytes)
        .context("undecodable message from the edge")?
        .into_iter()
        .map(|frame| frame.context("undecodable frame from the edge"))
        .collect()
}

/// Fails on a frame the session does not expect at this point, except HEARTBEAT.
fn unexpected(frame: ServerFrame, context: &str) -> anyhow::Result<()> {
    match frame {
        ServerFrame::Heartbeat(_) => Ok(()),
        ServerFrame::Disconnected(d) => {
            bail!(
                "DISCONNECTED {context}: {} (reconnect: {:?})",
                d.error,
                d.reconnect
            )
        }
        ServerFrame::Error(e) => bail!("ERROR {context}: {}", e.error),
        ServerFrame::Detached(d) => match d.error {
            Some(error) => bail!("DETACHED from {} {context}: {error}", d.channel),
            None => bail!("DETACHED from {} {context}", d.channel),
        },
        ServerFrame::Nack(n) => bail!("NACK of PUBLISH {} {context}: {}", n.msg_serial, n.error),
        other => bail!("unexpected {} frame {context}", other.kind()),
    }
}

fn heartbeat_timer(every: Duration) -> tokio::time::Interval {
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

impl Target for TernTarget {
    async fn subscriber(self: Arc<Self>, run: Arc<Run>, index: usize) -> anyhow::Result<()> {
        let channel = &self.channels[run.plan.channel_of_subscriber(index)];
        let mut phase = run.phase();
        let permit = run.handshake_permit().await?;
        let mut session = self.open().await?;
        session
            .send(&ClientFrame::Attach(Attach {
                channel: channel.clone(),
                ..Attach::default()
            }))
            .await?;
        let attached = tokio::time::timeout(SETUP_TIMEOUT, async {
            loop {
                for frame in session.recv_frames().await? {
                    match frame {
                        ServerFrame::Attached(a) if a.channel == *channel => return anyhow::Ok(a),
                        other => unexpected(other, "waiting for ATTACHED")?,
                    }
                }
            }
        })
        .await
        .context("no ATTACHED in time")??;
        drop(permit);
        run.set_ready();

        let mut last_serial = attached.position.map(|p| p.serial);
        let mut deliveries = Deliveries::new(&run, index);
        let mut heartbeat = heartbeat_timer(session.heartbeat);
        loop {
            tokio::select! {
                biased;
                () = load::stopped(&mut phase) => break,
                received = session.recv() => {
                    let bytes = received?;
                    let now = run.clock.now_ns();
                    if self.verify {
                        for frame in decode(self.format, &bytes)? {
                            let ServerFrame::Message(m) = frame else {
                                unexpected(frame, "while subscribed")?;
                                continue;
                            };
                            if m.channel != *channel {
                                bail!("MESSAGE for {} on a subscriber of {channel}", m.channel);
                            }
                            let serial = m.position.serial;
                            if let Some(last) = last_serial
                                && serial != last + 1
                            {
                                bail!("{channel}: serial {serial} followed {last}");
                            }
                            last_serial = Some(serial);
                            deliveries.record(m.message.data.as_bytes(), now)?;
                        }
                    } else {
                        let mut found = false;
                        for stamp in load::stamps(&bytes) {
                            deliveries.record(stamp, now)?;
                            found = true;
                        }
                        if !found {
                            for frame in decode(self.format, &bytes)? {
                                unexpected(frame, "while subscribed")?;
                            }
                        }
                    }
                }
                _ = heartbeat.tick() => session.heartbeat().await?,
            }
        }
        deliveries.finish();
        Ok(())
    }

    async fn publisher(self: Arc<Self>, run: Arc<Run>, index: usize) -> anyhow::Result<()> {
        let mut phase = run.phase();
        let permit = run.handshake_permit().await?;
        let mut session = self.open().await?;
        drop(permit);
        run.set_ready();
        if !load::wait_for_go(&mut phase).await? {
            return Ok(());
        }
        let edge_limit = session.connected.limits.max_inflight_publishes as usize;
        let inflight = if edge_limit == 0 {
            run.plan.inflight
        } else {
            run.plan.inflight.min(edge_limit)
        };
        let mut publisher = Publisher::new(&run, index, inflight);
        let mut frame = ClientFrame::Publish(Publish {
            msg_serial: 0,
            channel: String::new(),
            messages: vec![Message::new(String::with_capacity(run.plan.size))],
        });
        let mut next_serial = 0u64;
        let mut unflushed = 0usize;
        let mut heartbeat = heartbeat_timer(session.heartbeat);
        loop {
            let step = publisher.step();
            match step {
                Step::Done => break,
                Step::Send => {
                    let (channel, stamp) = publisher.next_message();
                    if let ClientFrame::Publish(publish) = &mut frame {
                        publish.msg_serial = next_serial;
                        publish.channel.clear();
                        publish.channel.push_str(&self.channels[channel]);
                        if let Some(Message {
                            data: Data::Text(text),
                            ..
                        }) = publish.messages.first_mut()
                        {
                            text.clear();
                            text.extend(stamp.encode().iter().map(|&b| char::from(b)));
                            text.push_str(&self.pad);
                        }
                    }
                    next_serial += 1;
                    session.feed(&frame).await?;
                    unflushed += 1;
                    if unflushed >= FLUSH_EVERY {
                        session.ws.flush().await.context("send failed")?;
                        unflushed = 0;
                    }
                    continue;
                }
                Step::SleepUntil(_) | Step::AwaitAck | Step::AwaitDelivery | Step::Drain => {}
            }
            if unflushed > 0 {
                session.ws.flush().await.context("send failed")?;
                unflushed = 0;
            }
            let due = match step {
                Step::SleepUntil(due) => due,
                _ => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                received = session.recv_frames() => {
                    for frame in received? {
                        match frame {
                            ServerFrame::Ack(ack) => {
                                if ack.msg_serial >= next_serial || ack.results.len() != 1 {
                                    bail!(
                                        "ACK of PUBLISH {} with {} results; {next_serial} were sent, \
                                         one message each",
                                        ack.msg_serial,
                                        ack.results.len()
                                    );
                                }
                                publisher.acked(1)?;
                            }
                            other => unexpected(other, "while publishing")?,
                        }
                    }
                }
                waited = publisher.wait_delivery(), if step == Step::AwaitDelivery => waited?,
                () = tokio::time::sleep_until(due.into()), if matches!(step, Step::SleepUntil(_)) => {}
                _ = heartbeat.tick() => session.heartbeat().await?,
            }
        }
        Ok(())
    }

    async fn idle(self: Arc<Self>, run: Arc<Run>, _index: usize) -> anyhow::Result<()> {
        let mut phase = run.phase();
        let permit = run.handshake_permit().await?;
        let mut session = self.open().await?;
        drop(permit);
        run.set_ready();
        let mut heartbeat = heartbeat_timer(session.heartbeat);
        loop {
            tokio::select! {
                () = load::stopped(&mut phase) => return Ok(()),
                received = session.recv_frames() => {
                    for frame in received? {
                        unexpected(frame, "while idle")?;
                    }
                }
                _ = heartbeat.tick() => session.heartbeat().await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_output_is_read() {
        assert_eq!(
            listening_addr("tern dev listening on http://127.0.0.1:41234").as_deref(),
            Some("http://127.0.0.1:41234")
        );
        assert_eq!(listening_addr("something else"), None);
        assert_eq!(
            dev_key("API key    dev.local:4422a839b431c193"),
            Some("dev.local:4422a839b431c193")
        );
        assert_eq!(
            dev_key("WebSocket  ws://127.0.0.1:8080/v1/ws  (subprotocol tern.v1.json)"),
            None
        );
        assert_eq!(dev_key("API key    none"), None);
        assert_eq!(dev_key("API key    dev.local:"), None);
    }

    #[test]
    fn the_split_edge_config_is_one_tern_edge_loads() {
        let node = quic::RemoteNode {
            addr: "127.0.0.1:7400".parse().expect("an address"),
            cert: "/tmp/a \"quoted\" dir/cert.pem".into(),
            server_name: "localhost".to_owned(),
        };
        let key = format!("bench.resume:{}", random_hex(16));
        let text = edge_config(&node, &key, &random_hex(32)).expect("TOML");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, &text).expect("written");
        let config = tern_config::load_edge_config(&path).expect("a valid edge config");
        assert_eq!(config.log.addr, node.addr);
        assert_eq!(config.log.ca.as_deref(), Some(node.cert.as_path()));
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.keys.len(), 1);
        assert!(config.cluster.connection_key_secret.is_some(), "{text}");
    }
}
