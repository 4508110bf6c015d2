//! Target `nats`: the same workload against nats-server's WebSocket listener, core
//! NATS publish/subscribe (no JetStream: nothing is stored, and there are no
//! positions), through a minimal client written for the benchmark.
//!
//! The client speaks the NATS text protocol over WebSocket binary messages: it
//! reads INFO, sends `CONNECT {"verbose":false,"pedantic":false}`, `SUB`, `PUB`,
//! answers `PING` with `PONG`, and parses `MSG`. The protocol is a byte stream, so
//! an op may span WebSocket messages; [`NatsReader`] reassembles them, bounded.
//!
//! Core NATS has no publish acknowledgement. To bound a publisher as Tern's ACK
//! window does, each `PUB` is followed by a `PING`, and its `PONG` (which the server
//! sends once it has processed everything before the PING) counts as the
//! acknowledgement. It says the server routed the message, not that it kept it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::process::Command;
use tokio_tungstenite::tungstenite;

use super::super::child::ChildServer;
use super::super::jetstream;
use super::conn::{self, Ws, WsUrl};
use super::load::{self, Deliveries, Publisher, Run, STAMP_LEN, Stamp, Step, Target};

/// Longest wait for the server's INFO or a PONG during setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Most bytes of unparsed protocol a client buffers (nats-server's default
/// max_payload is 1 MiB; an op larger than this is an error).
const MAX_BUFFERED: usize = 8 << 20;

/// PUB ops written before the socket is flushed, when unpaced.
const FLUSH_EVERY: usize = 32;

/// Starts nats-server with a WebSocket listener (plain, loopback) and its client
/// port on free loopback ports, its config in `dir`; returns the WebSocket address.
pub(super) async fn start_server(
    server: &jetstream::Server,
    dir: &Path,
    deadline: Instant,
) -> anyhow::Result<(ChildServer, SocketAddr)> {
    let free_port = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .context("cannot find a free port")
    };
    // Another process could take a port before the server binds it; the server
    // then fails to start and the run reports it.
    let (port, ws_port) = (free_port()?, free_port()?);
    let config = dir.join("nats.conf");
    let text = format!(
        "listen: \"127.0.0.1:{port}\"\nwebsocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n  no_tls: true\n}}\n"
    );
    std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
    let mut command = Command::new(&server.path);
    command.arg("-c").arg(&config);
    let mut child = ChildServer::spawn(jetstream::SERVER, command)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ws_port));
    loop {
        child.check_running()?;
        let probe = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), probe).await {
            return Ok((child, addr));
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not accept WebSocket connections in time{}",
                jetstream::SERVER,
                child.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one call to [`NatsReader::feed`] found besides messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Parsed {
    /// PINGs to answer with PONG.
    pings: usize,
    /// PONGs received.
    pongs: usize,
    /// Whether an INFO arrived.
    info: bool,
}

/// Reassembles the NATS protocol from WebSocket messages.
#[derive(Debug, Default)]
struct NatsReader {
    /// The start of an op that the last message cut off.
    partial: BytesMut,
}

impl NatsReader {
    /// Parses the ops `received` completes, handing each `MSG` payload to
    /// `message`, and keeps what is left of an incomplete op (at most
    /// [`MAX_BUFFERED`] bytes). A message that holds only whole ops, the usual
    /// case, is parsed where it lies, without a copy.
    fn feed(
        &mut self,
        received: &[u8],
        message: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<Parsed> {
        if self.partial.is_empty() {
            let (parsed, used) = parse_ops(received, message)?;
            self.keep(&received[used..])?;
            return Ok(parsed);
        }
        self.keep(received)?;
        let (parsed, used) = parse_ops(&self.partial, message)?;
        self.partial.advance(used);
        Ok(parsed)
    }

    fn keep(&mut self, rest: &[u8]) -> anyhow::Result<()> {
        if self.partial.len() + rest.len() > MAX_BUFFERED {
            bail!("more than {MAX_BUFFERED} bytes of NATS protocol without a complete op");
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }
}

/// Parses every complete op at the start of `bytes`; returns what was found and
/// how many bytes the complete ops took.
fn parse_ops(
    bytes: &[u8],
    mut message: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<(Parsed, usize)> {
    let mut parsed = Parsed::default();
    let mut used = 0;
    loop {
        let rest = &bytes[used..];
        // Op lines hold no CR: the first one ends the line (a payload is skipped by
        // its length, never scanned).
        let Some(eol) = memchr::memchr(b'\r', rest) else {
            break;
        };
        match rest.get(eol + 1) {
            None => break,
            Some(b'\n') => {}
            Some(_) => bail!("a NATS op line ends in CR without LF"),
        }
        let line = &rest[..eol];
        let op = line.split(|&b| b == b' ').next().unwrap_or_default();
        match op {
            b"MSG" => {
                let len = msg_payload_len(line)?;
                if len > MAX_BUFFERED {
                    bail!("a NATS MSG of {len} bytes (the client takes {MAX_BUFFERED})");
                }
                let start = eol + 2;
                let end = start + len;
                if rest.len() < end + 2 {
                    break;
                }
                if &rest[end..end + 2] != b"\r\n" {
                    bail!("a NATS MSG payload is not followed by CRLF");
                }
                message(&rest[start..end])?;
                used += end + 2;
                continue;
            }
            b"PING" => parsed.pings += 1,
            b"PONG" => parsed.pongs += 1,
            b"INFO" => parsed.info = true,
            b"+OK" => {}
            b"-ERR" => bail!("nats-server: {}", String::from_utf8_lossy(line)),
            _ => bail!("unknown NATS op {:?}", String::from_utf8_lossy(line)),
        }
        used += eol + 2;
    }
    Ok((parsed, used))
}

/// The payload length: the last field of `MSG <subject> <sid> [reply-to] <#bytes>`.
fn msg_payload_len(line: &[u8]) -> anyhow::Result<usize> {
    let malformed = || {
        anyhow::anyhow!(
            "malformed NATS MSG line {:?}",
            String::from_utf8_lossy(line)
        )
    };
    let fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty()).count();
    if !(4..=5).contains(&fields) {
        return Err(malformed());
    }
    let last = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    if last.is_empty() || last.len() > 12 {
        return Err(malformed());
    }
    last.iter().try_fold(0usize, |len, &digit| match digit {
        b'0'..=b'9' => Ok(len * 10 + usize::from(digit - b'0')),
        _ => Err(malformed()),
    })
}

/// The `nats` side of a run.
pub(super) struct NatsTarget {
    addr: SocketAddr,
    url: WsUrl,
    verify: bool,
    subjects: Vec<String>,
    /// `PUB <subject> <size>\r\n` per subject.
    pub_lines: Vec<Vec<u8>>,
    pad: Vec<u8>,
}

impl NatsTarget {
    pub(super) fn new(addr: SocketAddr, verify: bool, subjects: Vec<String>, size: usize) -> Self {
        let pad = vec![b'x'; size.saturating_sub(STAMP_LEN)];
        let pub_lines = subjects
            .iter()
            .map(|subject| format!("PUB {subject} {}\r\n", STAMP_LEN + pad.len()).into_bytes())
            .collect();
        Self {
            addr,
            url: WsUrl::for_addr(addr, "/"),
            verify,
            subjects,
            pub_lines,
            pad,
        }
    }

    /// Opens a connection: WebSocket, INFO, then `setup` (CONNECT and whatever
    /// follows it) with a PING whose PONG confirms the server processed it all.
    async fn open(&self, setup: &str) -> anyhow::Result<Client> {
        let ws = conn::open(self.addr, &self.url, None).await?;
        let mut client = Client {
            ws,
            reader: NatsReader::default(),
            out: BytesMut::new(),
        };
        tokio::time::timeout(SETUP_TIMEOUT, async {
            loop {
                let parsed = client
                    .recv_no_messages("a connection before CONNECT")
                    .await?;
                client.answer_pings(parsed.pings).await?;
                if parsed.info {
                    break;
                }
            }
            client
                .out
                .put_slice(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
            client.out.put_slice(setup.as_bytes());
            client.out.put_slice(b"PING\r\n");
            client.send().await?;
            loop {
                let parsed = client
                    .recv_no_messages("a connection before subscribing")
                    .await?;
                client.answer_pings(parsed.pings).await?;
                if parsed.pongs > 0 {
                    return anyhow::Ok(());
                }
            }
        })
        .await
        .context("nats-server did not answer the setup in time")??;
        Ok(client)
    }
}

/// One NATS connection.
struct Client {
    ws: Ws,
    reader: NatsReader,
    /// Protocol bytes to send as the next WebSocket message.
    out: BytesMut,
}

impl Client {
    /// Queues `out` as one WebSocket message, without flushing.
    async fn feed(&mut self) -> anyhow::Result<()> {
        let message = tungstenite::Message::Binary(self.out.split().freeze());
        self.ws.feed(message).await.context("send failed")
    }

    /// Sends `out` as one WebSocket message, and flushes.
    async fn send(&mut self) -> anyhow::Result<()> {
        self.feed().await?;
        self.ws.flush().await.context("send failed")
    }

    async fn answer_pings(&mut self, pings: usize) -> anyhow::Result<()> {
        if pings == 0 {
            return Ok(());
        }
        for _ in 0..pings {
            self.out.put_slice(b"PONG\r\n");
        }
        self.send().await
    }

    /// The next WebSocket message's bytes (pings are answered by the library).
    async fn next_message(&mut self) -> anyhow::Result<Bytes> {
        loop {
            match self.ws.next().await {
                Some(Ok(tungstenite::Message::Binary(bytes))) => return Ok(bytes),
                Some(Ok(tungstenite::Message::Text(text))) => return Ok(text.into()),
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    bail!("nats-server closed the connection ({frame:?})")
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error).context("receive failed"),
                None => bail!("nats-server closed the connection"),
            }
        }
    }

    /// Reads one WebSocket message and parses the ops it completes; `MSG` is an
    /// error (for connections that subscribe to nothing).
    async fn recv_no_messages(&mut self, what: &str) -> anyhow::Result<Parsed> {
        let bytes = self.next_message().await?;
        self.reader.feed(&bytes, |_| bail!("a MSG on {what}"))
    }
}

impl Target for NatsTarget {
    async fn subscriber(self: Arc<Self>, run: Arc<Run>, index: usize) -> anyhow::Result<()> {
        let subject = &self.subjects[run.plan.channel_of_subscriber(index)];
        let mut phase = run.phase();
        let permit = run.handshake_permit().await?;
        let mut client = self.open(&format!("SUB {subject} 1\r\n")).await?;
        drop(permit);
        run.set_ready();
        let mut deliveries = Deliveries::new(&run, index);
        // Per publisher, the last seq seen (checked with --verify: core NATS keeps
        // one publisher's messages in order).
        let mut last_seq: Vec<Option<u64>> = vec![None; run.plan.publishers];
        loop {
            tokio::select! {
                biased;
                () = load::stopped(&mut phase) => break,
                received = client.next_message() => {
                    let bytes = received?;
                    let now = run.clock.now_ns();
                    let parsed = client.reader.feed(&bytes, |payload| {
                        if self.verify {
                            let stamp = Stamp::decode(payload).context("a payload without a stamp")?;
                            if let Some(last) = last_seq.get_mut(stamp.publisher as usize) {
                                if last.is_some_and(|last| stamp.seq <= last) {
                                    bail!("publisher {}: seq {} after {last:?}", stamp.publisher, stamp.seq);
                                }
                                *last = Some(stamp.seq);
                            }
                        }
                        deliveries.record(payload, now)
                    })?;
                    client.answer_pings(parsed.pings).await?;
                }
            }
        }
        deliveries.finish();
        Ok(())
    }

    async fn publisher(self: Arc<Self>, run: Arc<Run>, index: usize) -> anyhow::Result<()> {
        let mut phase = run.phase();
        let permit = run.handshake_permit().await?;
        let mut client = self.open("").await?;
        drop(permit);
        run.set_ready();
        if !load::wait_for_go(&mut phase).await? {
            return Ok(());
        }
        let mut publisher = Publisher::new(&run, index, run.plan.inflight);
        let mut unflushed = 0usize;
        loop {
            let step = publisher.step();
            match step {
                Step::Done => break,
                Step::Send => {
                    let (channel, stamp) = publisher.next_message();
                    let out = &mut client.out;
                    out.put_slice(&self.pub_lines[channel]);
                    out.put_slice(&stamp.encode());
                    out.put_slice(&self.pad);
                    out.put_slice(b"\r\nPING\r\n");
                    client.feed().await?;
                    unflushed += 1;
                    if unflushed >= FLUSH_EVERY {
                        client.ws.flush().await.context("send failed")?;
                        unflushed = 0;
                    }
                    continue;
                }
                Step::SleepUntil(_) | Step::AwaitAck | Step::AwaitDelivery | Step::Drain => {}
            }
            if unflushed > 0 {
                client.ws.flush().await.context("send failed")?;
                unflushed = 0;
            }
            let due = match step {
                Step::SleepUntil(due) => due,
                _ => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                parsed = client.recv_no_messages("a publisher's connection") => {
                    let parsed = parsed?;
                    client.answer_pings(parsed.pings).await?;
                    publisher.acked(parsed.pongs)?;
                }
                waited = publisher.wait_delivery(), if step == Step::AwaitDelivery => waited?,
                () = tokio::time::sleep_until(due.into()), if matches!(step, Step::SleepUntil(_)) => {}
            }
        }
        Ok(())
    }

    async fn idle(self: Arc<Self>, run: Arc<Run>, _index: usize) -> anyhow::Result<()> {
        let mut phase = run.phase();
        let permit = run.handshake_permit().await?;
        let mut client = self.open("").await?;
        drop(permit);
        run.set_ready();
        loop {
            tokio::select! {
                () = load::stopped(&mut phase) => return Ok(()),
                parsed = client.recv_no_messages("an idle connection") => {
                    let parsed = parsed?;
                    client.answer_pings(parsed.pings).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_parsed_across_message_boundaries() {
        let stream: &[u8] = b"INFO {\"server_id\":\"x\"}\r\nPING\r\nMSG a.b 1 5\r\nhello\r\nMSG a.b 1 reply.to 3\r\nabc\r\nPONG\r\n+OK\r\n";
        // Fed in pieces of every size (one byte at a time up to all at once): the
        // same ops come out, and nothing is left over.
        for piece in 1..=stream.len() {
            let mut reader = NatsReader::default();
            let mut payloads = Vec::new();
            let mut total = Parsed::default();
            for chunk in stream.chunks(piece) {
                let parsed = reader
                    .feed(chunk, |p| {
                        payloads.push(p.to_vec());
                        Ok(())
                    })
                    .expect("parses");
                total.pings += parsed.pings;
                total.pongs += parsed.pongs;
                total.info |= parsed.info;
            }
            assert_eq!(
                total,
                Parsed {
                    pings: 1,
                    pongs: 1,
                    info: true
                },
                "pieces of {piece}"
            );
            assert_eq!(payloads, vec![b"hello".to_vec(), b"abc".to_vec()]);
            assert!(reader.partial.is_empty(), "pieces of {piece}");
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            &b"-ERR 'Authorization Violation'\r\n"[..],
            b"WHAT\r\n",
            b"MSG a 1\r\n",
            b"MSG a 1 x\r\n",
            b"MSG a 1 3\r\nabcd\r\n",
            b"MSG a 1 18446744073709551615\r\n",
            b"MSG a 1 99999999\r\n",
            b"PING\rX",
        ] {
            let mut reader = NatsReader::default();
            assert!(reader.feed(bad, |_| Ok(())).is_err(), "{bad:?}");
        }
        let mut reader = NatsReader::default();
        assert!(
            reader
                .feed(&vec![b'x'; MAX_BUFFERED + 1], |_| Ok(()))
                .is_err()
        );
    }
}
