//! `docs/protocol.md`, checked against a real `tern dev`.
//!
//! Written only from the document, with a plain WebSocket library and hand-written
//! JSON — no `tern-protocol`, no `tern-client` — so that what the document promises is
//! what a client written from it gets. Each assertion names the section it checks
//! (`§4`); when one fails, either the edge or the document is wrong.
//!
//! ```text
//!  test ──WebSocket tern.v1.json──▶ tern dev --port 0 --data-dir <tmp>
//!       ──HTTP/1.1, SSE (by hand)─▶   (edge + log in one process)
//! ```

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tern_tests::tern_binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for any single answer; generous for a loaded 2-core CI machine. Not a
/// timing assertion: only a bound so that a missing answer fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

/// A running `tern dev`, killed on drop.
struct Dev {
    child: Child,
    addr: SocketAddr,
    key: String,
    _data: tempfile::TempDir,
}

impl Dev {
    /// `tern dev --port 0 --data-dir <tmp>`: waits for its first line,
    /// `tern dev listening on http://ADDR`, and for the dev key it prints.
    fn start() -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut child = Command::new(tern_binary())
            .args(["dev", "--port", "0", "--data-dir"])
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning tern dev")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end even after the test stopped listening: a closed pipe
            // would fail tern dev's next write to stdout.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut dev = Dev {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            key: String::new(),
            _data: data,
        };
        let mut lines = Vec::new();
        while dev.addr.port() == 0 || dev.key.is_empty() {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) else {
                bail!("tern dev printed no address and key within 120 s; it printed {lines:#?}");
            };
            if lines.is_empty() {
                let addr = line
                    .strip_prefix("tern dev listening on http://")
                    .with_context(|| format!("first line of tern dev: {line:?}"))?;
                dev.addr = addr.trim().parse().context("tern dev's address")?;
            } else if let Some(key) = find_key(&line) {
                dev.key = key;
            }
            lines.push(line);
        }
        Ok(dev)
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An API key `app.keyid:secret` (§10) among the words of a line.
fn find_key(line: &str) -> Option<String> {
    line.split(|c: char| c.is_whitespace() || "\"'`=,;<>()".contains(c))
        .map(|word| word.trim_end_matches(['.', ',']))
        .find(|word| {
            let Some((id, secret)) = word.split_once(':') else {
                return false;
            };
            let Some((app, key_id)) = id.split_once('.') else {
                return false;
            };
            let plain = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            };
            plain(app) && plain(key_id) && secret.len() >= 16 && !secret.contains('/')
        })
        .map(str::to_owned)
}

/// A WebSocket client speaking `tern.v1.json`, one frame at a time.
struct Ws {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames received but not looked at yet (a message may hold several, §1.2).
    pending: VecDeque<Value>,
}

impl Ws {
    /// Opens `/v1/ws` offering `tern.v1.json` and checks it is selected (§1.1).
    async fn open(dev: &Dev) -> anyhow::Result<Self> {
        let mut request = dev.ws_url().into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "tern.v1.json".parse()?);
        let (socket, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
                .await
                .context("WebSocket handshake timed out")??;
        // §1.1: the selected subprotocol is echoed in the handshake answer.
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            Some("tern.v1.json")
        );
        Ok(Self {
            socket,
            pending: VecDeque::new(),
        })
    }

    /// Sends one WebSocket text message (one frame, or an array of frames).
    async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        self.send_text(message.to_string()).await
    }

    async fn send_text(&mut self, text: String) -> anyhow::Result<()> {
        tokio::time::timeout(WAIT, self.socket.send(WsMessage::text(text)))
            .await
            .context("send timed out")??;
        Ok(())
    }

    async fn send_binary(&mut self, text: String) -> anyhow::Result<()> {
        let message = WsMessage::Binary(Bytes::from(text.into_bytes()));
        tokio::time::timeout(WAIT, self.socket.send(message))
            .await
            .context("send timed out")??;
        Ok(())
    }

    /// The next frame from the server, skipping the server's own heartbeats (§8: they
    /// carry no `id` and may come at any time).
    async fn next(&mut self) -> anyhow::Result<Value> {
        loop {
            let frame = self.next_any().await?;
            if frame["type"] == "HEARTBEAT" && frame.get("id").is_none() {
                continue;
            }
            return Ok(frame);
        }
    }

    /// The next frame from the server, whatever it is (the server's heartbeats too).
    async fn next_any(&mut self) -> anyhow::Result<Value> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Ok(frame);
            }
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .context("no frame from the server in time")?
                .context("the WebSocket ended")??;
            match message {
                // §1.1: JSON connections get text messages.
                WsMessage::Text(text) => self.push(text.as_str())?,
                WsMessage::Binary(_) => bail!("a binary message on a tern.v1.json connection"),
                WsMessage::Close(close) => bail!("the WebSocket closed: {close:?}"),
                _ => {}
            }
        }
    }

    /// §1.2: one frame object, or an array of frame objects.
    fn push(&mut self, text: &str) -> anyhow::Result<()> {
        match serde_json::from_str(text)? {
            Value::Array(frames) => {
                ensure!(!frames.is_empty(), "an empty array from the server");
                self.pending.extend(frames);
            }
            frame @ Value::Object(_) => self.pending.push_back(frame),
            other => bail!("not a frame: {other}"),
        }
        Ok(())
    }

    /// The next frame, which must be of type `kind`.
    async fn expect(&mut self, kind: &str) -> anyhow::Result<Value> {
        let frame = self.next().await?;
        ensure!(frame["type"] == kind, "expected {kind}, got {frame}");
        Ok(frame)
    }

    /// Frames until the WebSocket closes; returns them and the close code.
    async fn until_closed(&mut self) -> anyhow::Result<(Vec<Value>, Option<CloseCode>)> {
        let mut frames: Vec<Value> = self.pending.drain(..).collect();
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .context("the server did not close the WebSocket in time")?;
            match message {
                Some(Ok(WsMessage::Text(text))) => {
                    self.push(text.as_str())?;
                    frames.extend(self.pending.drain(..));
                }
                Some(Ok(WsMessage::Close(close))) => {
                    return Ok((frames, close.map(|c| c.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok((frames, None)),
            }
        }
    }

    /// CONNECT with `key` and client id `alice`; returns CONNECTED.
    async fn connect(&mut self, key: &str) -> anyhow::Result<Value> {
        self.send(&json!({"type": "CONNECT", "key": key, "client_id": "alice"}))
            .await?;
        self.expect("CONNECTED").await
    }
}

/// The `code` of a frame's `error`.
fn code(frame: &Value) -> &Value {
    &frame["error"]["code"]
}

/// §2.2: `{"epoch": u64, "serial": u64}`.
fn position(value: &Value) -> (u64, u64) {
    let epoch = value["epoch"].as_u64().expect("position.epoch is a u64");
    let serial = value["serial"].as_u64().expect("position.serial is a u64");
    (epoch, serial)
}

/// §2.2: an ErrorInfo is `{"code": u32, "message": string, "retryable": bool}`.
fn check_error_info(frame: &Value, expected_code: u64, retryable: bool) {
    let error = &frame["error"];
    assert_eq!(error["code"], expected_code, "{frame}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{frame}"
    );
    assert_eq!(error["retryable"], retryable, "{frame}");
}

/// One HTTP/1.1 exchange, by hand: `Connection: close`, read to the end.
struct HttpAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpAnswer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<HttpAnswer> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if let Some(auth) = auth {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.take(16 << 20).read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .context("HTTP exchange timed out")??;
    parse_http(&raw)
}

fn parse_http(raw: &[u8]) -> anyhow::Result<HttpAnswer> {
    let (mut answer, start) = parse_head(raw)?.context("no end of headers")?;
    let mut body = raw[start..].to_vec();
    let chunked = answer
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("chunk size line")?;
            let size_text = std::str::from_utf8(&rest[..line_end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            ensure!(rest.len() >= size + 2, "short chunk");
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    answer.body = body;
    Ok(answer)
}

/// The status line and headers of an HTTP/1.1 answer (with an empty body), and where
/// its body starts; `None` while the end of the headers has not been read.
fn parse_head(raw: &[u8]) -> anyhow::Result<Option<(HttpAnswer, usize)>> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .context("no status")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let answer = HttpAnswer {
        status,
        headers,
        body: Vec::new(),
    };
    Ok(Some((answer, end + 4)))
}

/// The documented session (§13), and each documented answer along the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_session_works_against_tern_dev() -> anyhow::Result<()> {
    let dev = Dev::start()?;
    let channel = "doc:lobby";

    // ---- Before CONNECT (§4): only HEARTBEAT and CLOSE are served.
    let mut ws = Ws::open(&dev).await?;
    ws.send(&json!({"type": "HEARTBEAT", "id": 1})).await?;
    // §3.6: answered with the same id, also before CONNECT.
    assert_eq!(ws.expect("HEARTBEAT").await?["id"], 1);
    // §1.1: a binary message on a JSON connection is read as JSON.
    ws.send_binary(json!({"type": "HEARTBEAT", "id": 11}).to_string())
        .await?;
    assert_eq!(ws.expect("HEARTBEAT").await?["id"], 11);
    ws.send(&json!({"type": "ATTACH", "channel": channel}))
        .await?;
    let error = ws.expect("ERROR").await?;
    // §4: ATTACH before CONNECT → ERROR NotConnected, with the channel it named.
    check_error_info(&error, 40005, false);
    assert_eq!(error["channel"], channel);
    ws.send(&json!({"type": "PUBLISH", "msg_serial": 9, "channel": channel, "messages": [{"data": "x"}]}))
        .await?;
    // §4: PUBLISH before CONNECT → NACK NotConnected with its msg_serial.
    let nack = ws.expect("NACK").await?;
    assert_eq!(nack["msg_serial"], 9);
    check_error_info(&nack, 40005, false);

    // ---- CONNECT → CONNECTED (§3.2).
    let connected = ws.connect(&dev.key).await?;
    let connection_id = connected["connection_id"]
        .as_str()
        .context("connection_id is a string")?
        .to_owned();
    // §3.2: opaque, URL-safe, without ':'.
    assert!(!connection_id.is_empty());
    assert!(
        connection_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)),
        "{connection_id}"
    );
    let connection_key = connected["connection_key"]
        .as_str()
        .context("connection_key is a string")?
        .to_owned();
    // §3.2: `resumed` absent or false without `resume`.
    assert_ne!(connected["resumed"], true, "{connected}");
    assert_eq!(connected["client_id"], "alice");
    assert!(
        connected["heartbeat_interval_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0)
    );
    assert!(
        connected["idle_timeout_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0)
    );
    assert_eq!(connected["state_ttl_ms"], 120_000);
    assert!(
        connected.get("error").is_none(),
        "no resume asked: {connected}"
    );
    let limits = &connected["limits"];
    for field in [
        "max_frame_bytes",
        "max_message_bytes",
        "max_messages_per_publish",
        "max_inflight_publishes",
        "max_channels",
    ] {
        assert!(
            limits[field].as_u64().is_some_and(|n| n > 0),
            "limits.{field}: {connected}"
        );
    }
    let max_frame_bytes = limits["max_frame_bytes"]
        .as_u64()
        .context("max_frame_bytes")?;

    // §4: a second CONNECT → ERROR AlreadyConnected; the connection stays.
    ws.send(&json!({"type": "CONNECT", "key": dev.key})).await?;
    check_error_info(&ws.expect("ERROR").await?, 40004, false);

    // ---- ATTACH → ATTACHED (§3.8, §5).
    ws.send(&json!({"type": "ATTACH", "channel": channel}))
        .await?;
    let attached = ws.expect("ATTACHED").await?;
    assert_eq!(attached["channel"], channel);
    // §5: a plain attach is never `resumed`, and carries no error.
    assert_eq!(attached["resumed"], false);
    assert!(attached.get("error").is_none(), "{attached}");
    // §10: `tern dev`'s key is allowed everything on every channel.
    let granted = attached["granted"]
        .as_array()
        .context("granted is a list")?;
    for op in ["publish", "subscribe", "history"] {
        assert!(granted.contains(&json!(op)), "{attached}");
    }
    // §3.8, §2.2: always present; 0:0 when the channel had no message before (a
    // fresh channel).
    assert_eq!(attached["position"], json!({"epoch": 0, "serial": 0}));

    // ---- Several frames in one WebSocket message (§1.2): PUBLISH + HEARTBEATs.
    ws.send(&json!([
        {"type": "PUBLISH", "msg_serial": 0, "channel": channel, "messages": [
            {"id": "m-1", "name": "chat.message", "data": "hello", "content_type": "text/plain",
             "headers": {"trace": "abc"}},
            {"data": {"base64": "AAH/"}},
        ]},
        {"type": "HEARTBEAT"},
        {"type": "HEARTBEAT", "id": 2},
    ]))
    .await?;
    // §3.6: a HEARTBEAT without id is not answered, so the next answer is for id 2;
    // §7: answers come in the order of the frames, except ACK/NACK.
    let mut ack = None;
    let mut messages = Vec::new();
    let mut heartbeat = None;
    while ack.is_none() || messages.len() < 2 || heartbeat.is_none() {
        let frame = ws.next().await?;
        match frame["type"].as_str() {
            Some("ACK") => ack = Some(frame),
            Some("MESSAGE") => messages.push(frame),
            Some("HEARTBEAT") => {
                ensure!(heartbeat.is_none(), "a second HEARTBEAT answer: {frame}");
                heartbeat = Some(frame);
            }
            _ => bail!("unexpected {frame}"),
        }
    }
    assert_eq!(heartbeat.context("heartbeat")?["id"], 2);
    let ack = ack.context("ack")?;
    // §3.11: one result per message, in PUBLISH order, with increasing positions.
    assert_eq!(ack["msg_serial"], 0);
    let results = ack["results"].as_array().context("results is a list")?;
    assert_eq!(results.len(), 2, "{ack}");
    let (epoch, first) = position(&results[0]["position"]);
    assert_eq!(
        position(&results[1]["position"]),
        (epoch, first + 1),
        "{ack}"
    );
    // §2.2: serials count 1, 2, 3, … per channel.
    assert_eq!(first, 1, "{ack}");
    assert!(results.iter().all(|r| r["duplicate"] == false), "{ack}");

    // §3.10 and §2.4: MESSAGE with position, id, timestamp, client_id and the fields
    // as published; text stays text, binary stays binary. §7: in order, no gap.
    let text = &messages[0];
    assert_eq!(text["channel"], channel);
    assert_eq!(position(&text["position"]), (epoch, first));
    let m = &text["message"];
    assert_eq!(m["id"], "m-1");
    assert_eq!(m["name"], "chat.message");
    assert_eq!(m["data"], "hello");
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(m["headers"], json!({"trace": "abc"}));
    assert_eq!(m["client_id"], "alice");
    assert!(
        m["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "{text}"
    );
    let binary = &messages[1];
    assert_eq!(position(&binary["position"]), (epoch, first + 1));
    let m = &binary["message"];
    // §6.3: without id, the key and delivered id is <connection_id>:<msg_serial>:<index>.
    assert_eq!(m["id"], format!("{connection_id}:0:1"));
    assert_eq!(m["data"], json!({"base64": "AAH/"}));
    assert_eq!(m["client_id"], "alice");
    assert!(m["timestamp"].is_u64(), "{binary}");
    // §2.4: absent fields are left out.
    assert!(
        m.get("name").is_none() && m.get("headers").is_none(),
        "{binary}"
    );

    // ---- Idempotency (§6.3): the same id again is a duplicate with the original
    // position, and nothing new is stored (the next message gets the next serial).
    ws.send(
        &json!({"type": "PUBLISH", "msg_serial": 1, "channel": channel,
        "messages": [{"id": "m-1", "data": "hello again?"}]}),
    )
    .await?;
    let dup = ws.expect("ACK").await?;
    assert_eq!(dup["msg_serial"], 1);
    assert_eq!(dup["results"][0]["duplicate"], true, "{dup}");
    assert_eq!(position(&dup["results"][0]["position"]), (epoch, first));
    ws.send(
        &json!({"type": "PUBLISH", "msg_serial": 2, "channel": channel,
        "messages": [{"id": "m-3", "data": "three"}]}),
    )
    .await?;
    let (mut got_ack, mut got_message) = (false, false);
    while !(got_ack && got_message) {
        let frame = ws.next().await?;
        match frame["type"].as_str() {
            Some("ACK") => {
                assert_eq!(frame["msg_serial"], 2);
                assert_eq!(
                    position(&frame["results"][0]["position"]),
                    (epoch, first + 2)
                );
                got_ack = true;
            }
            Some("MESSAGE") => {
                // §7: no repeat, no gap: the duplicate was not delivered.
                assert_eq!(position(&frame["position"]), (epoch, first + 2), "{frame}");
                assert_eq!(frame["message"]["id"], "m-3");
                got_message = true;
            }
            _ => bail!("unexpected {frame}"),
        }
    }

    // ---- Documented errors; the connection stays (§4, §5, §6.1).
    ws.send(&json!({"type": "SUBSCRIBE", "channel": channel}))
        .await?;
    let unknown = ws.expect("ERROR").await?;
    check_error_info(&unknown, 40001, false);
    ws.send_text("{\"type\": \"ATTACH\",".into()).await?;
    check_error_info(&ws.expect("ERROR").await?, 40000, false);
    ws.send_text("[]".into()).await?;
    check_error_info(&ws.expect("ERROR").await?, 40000, false);
    ws.send(&json!({"type": "PUBLISH", "msg_serial": 3, "channel": channel, "messages": "nope"}))
        .await?;
    let nack = ws.expect("NACK").await?;
    assert_eq!(nack["msg_serial"], 3);
    check_error_info(&nack, 40000, false);
    ws.send(&json!({"type": "PUBLISH", "msg_serial": 4, "channel": channel, "messages": []}))
        .await?;
    let nack = ws.expect("NACK").await?;
    assert_eq!(
        (&nack["msg_serial"], code(&nack)),
        (&json!(4), &json!(40003))
    );
    ws.send(
        &json!({"type": "PUBLISH", "msg_serial": 5, "channel": channel,
        "messages": [{"data": "x", "headers": {"tern-name": "sneaky"}}]}),
    )
    .await?;
    let nack = ws.expect("NACK").await?;
    assert_eq!(
        (&nack["msg_serial"], code(&nack)),
        (&json!(5), &json!(40003))
    );
    ws.send(
        &json!({"type": "PUBLISH", "msg_serial": 6, "channel": "$system",
        "messages": [{"data": "x"}]}),
    )
    .await?;
    let nack = ws.expect("NACK").await?;
    assert_eq!(
        (&nack["msg_serial"], code(&nack)),
        (&json!(6), &json!(40002))
    );
    ws.send(&json!({"type": "ATTACH", "channel": "$system"}))
        .await?;
    let refused = ws.expect("DETACHED").await?;
    assert_eq!(refused["channel"], "$system");
    check_error_info(&refused, 40002, false);
    ws.send(
        &json!({"type": "ATTACH", "channel": "doc:other", "rewind": 1,
        "from": {"epoch": epoch, "serial": 1}}),
    )
    .await?;
    let refused = ws.expect("DETACHED").await?;
    assert_eq!(refused["channel"], "doc:other");
    check_error_info(&refused, 40003, false);
    // §2.2, §5: serial 0 exists only in epoch 0.
    ws.send(
        &json!({"type": "ATTACH", "channel": "doc:other", "from": {"epoch": epoch, "serial": 0}}),
    )
    .await?;
    let refused = ws.expect("DETACHED").await?;
    assert_eq!(refused["channel"], "doc:other");
    check_error_info(&refused, 40003, false);
    // §3.4: DETACH of a channel that is not attached → DETACHED without error.
    ws.send(&json!({"type": "DETACH", "channel": "doc:never"}))
        .await?;
    let detached = ws.expect("DETACHED").await?;
    assert_eq!(detached["channel"], "doc:never");
    assert!(detached.get("error").is_none(), "{detached}");
    // Still connected and attached: HEARTBEAT answered.
    ws.send(&json!({"type": "HEARTBEAT", "id": 3})).await?;
    assert_eq!(ws.expect("HEARTBEAT").await?["id"], 3);

    // ---- HTTP publish (§12.1) while the WebSocket is attached: delivered to it too.
    let bearer = format!("Bearer {}", dev.key);
    let path = format!("/v1/channels/{channel}/messages");
    let answer = http(
        dev.addr,
        "POST",
        &path,
        Some(&bearer),
        Some(
            &json!([{"id": "order-17", "name": "order", "data": "{\"total\":12}",
                       "content_type": "application/json"},
                      {"data": {"base64": "AAE="}}]),
        ),
    )
    .await?;
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    let results = body["results"].as_array().context("results")?;
    assert_eq!(results.len(), 2, "{body}");
    assert_eq!(position(&results[0]["position"]), (epoch, first + 3));
    assert_eq!(position(&results[1]["position"]), (epoch, first + 4));
    let one = ws.expect("MESSAGE").await?;
    assert_eq!(position(&one["position"]), (epoch, first + 3));
    assert_eq!(one["message"]["id"], "order-17");
    assert_eq!(one["message"]["content_type"], "application/json");
    let two = ws.expect("MESSAGE").await?;
    assert_eq!(position(&two["position"]), (epoch, first + 4));
    // §12.1: a message without id gets `http:<uuid>:<index>`.
    let id = two["message"]["id"].as_str().context("id")?;
    assert!(id.starts_with("http:") && id.ends_with(":1"), "{id}");
    assert_eq!(two["message"]["data"], json!({"base64": "AAE="}));
    // §12.1: one Message object (not an array) is accepted too.
    let answer = http(
        dev.addr,
        "POST",
        &path,
        Some(&bearer),
        Some(&json!({"data": "solo"})),
    )
    .await?;
    assert_eq!(answer.status, 201);
    assert_eq!(
        position(&answer.json()["results"][0]["position"]),
        (epoch, first + 5)
    );
    assert_eq!(
        position(&ws.expect("MESSAGE").await?["position"]),
        (epoch, first + 5)
    );

    // ---- CLOSE → CLOSED, then WebSocket close 1000 (§3.7, §1.3).
    ws.send(&json!({"type": "CLOSE"})).await?;
    let (frames, close) = ws.until_closed().await?;
    let frames: Vec<&Value> = frames.iter().filter(|f| f["type"] != "HEARTBEAT").collect();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "CLOSED");
    assert_eq!(close, Some(CloseCode::Normal));

    // ---- Resume the connection (§7.1) with its key and its channel's position.
    let mut ws = Ws::open(&dev).await?;
    let from = json!({"epoch": epoch, "serial": first + 2});
    ws.send(
        &json!({"type": "CONNECT", "key": dev.key, "client_id": "alice",
        "resume": connection_key, "channels": {channel: from}}),
    )
    .await?;
    let resumed = ws.expect("CONNECTED").await?;
    // §3.2: the same connection, a fresh key, no error.
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["connection_id"], json!(connection_id), "{resumed}");
    assert!(resumed["connection_key"].is_string(), "{resumed}");
    assert!(resumed.get("error").is_none(), "{resumed}");
    // §3.1: each entry of `channels` is answered like an ATTACH with `from`.
    let attached = ws.expect("ATTACHED").await?;
    assert_eq!(attached["channel"], channel);
    assert_eq!(attached["resumed"], true, "{attached}");
    assert_eq!(attached["position"], from);
    for serial in first + 3..=first + 5 {
        let message = ws.expect("MESSAGE").await?;
        assert_eq!(position(&message["position"]), (epoch, serial));
    }
    // §7.1, §6.3: the first PUBLISH resent with its msg_serial is stored once, also
    // its message without id; the ACK gives the original positions.
    ws.send(
        &json!({"type": "PUBLISH", "msg_serial": 0, "channel": channel, "messages": [
        {"id": "m-1", "data": "hello"}, {"data": {"base64": "AAH/"}}]}),
    )
    .await?;
    let ack = ws.expect("ACK").await?;
    assert_eq!(position(&ack["results"][0]["position"]), (epoch, first));
    assert_eq!(position(&ack["results"][1]["position"]), (epoch, first + 1));
    assert!(
        ack["results"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["duplicate"] == true)),
        "{ack}"
    );
    // §3.2, §11: a key presented with another client id is refused, with the reason;
    // the session is a new one.
    let mut other = Ws::open(&dev).await?;
    other
        .send(
            &json!({"type": "CONNECT", "key": dev.key, "client_id": "mallory",
            "resume": resumed["connection_key"]}),
        )
        .await?;
    let refused = other.expect("CONNECTED").await?;
    assert_ne!(refused["resumed"], true, "{refused}");
    assert_ne!(refused["connection_id"], json!(connection_id), "{refused}");
    check_error_info(&refused, 41001, false);
    drop(other);
    drop(ws);

    // ---- Reconnect without resume, then ATTACH with `from` (§5, §7).
    let mut ws = Ws::open(&dev).await?;
    let again = ws.connect(&dev.key).await?;
    assert_ne!(
        again["connection_id"],
        json!(connection_id),
        "a new connection"
    );
    // §5: `from` 0:0 (the position ATTACHED named on the fresh channel) gives every
    // message from the channel's first one, resumed.
    let before_first = json!({"epoch": 0, "serial": 0});
    ws.send(&json!({"type": "ATTACH", "channel": channel, "from": before_first}))
        .await?;
    let attached = ws.expect("ATTACHED").await?;
    assert_eq!(attached["resumed"], true, "{attached}");
    assert_eq!(attached["position"], before_first);
    assert!(attached.get("error").is_none(), "{attached}");
    for serial in first..=first + 5 {
        let message = ws.expect("MESSAGE").await?;
        assert_eq!(position(&message["position"]), (epoch, serial));
    }
    // §5: ATTACH again re-attaches with the new `from`.
    let from = json!({"epoch": epoch, "serial": first + 2});
    ws.send(&json!({"type": "ATTACH", "channel": channel, "from": from}))
        .await?;
    let attached = ws.expect("ATTACHED").await?;
    // §5: `from` still continuable → position = from, resumed, no error.
    assert_eq!(attached["resumed"], true, "{attached}");
    assert_eq!(attached["position"], from);
    assert!(attached.get("error").is_none(), "{attached}");
    for serial in first + 3..=first + 5 {
        let message = ws.expect("MESSAGE").await?;
        assert_eq!(position(&message["position"]), (epoch, serial));
    }
    // §5: rewind N delivers the last N stored messages first.
    ws.send(&json!({"type": "ATTACH", "channel": "doc:rewound"}))
        .await?;
    ws.expect("ATTACHED").await?;
    ws.send(&json!({"type": "ATTACH", "channel": channel, "rewind": 2}))
        .await?;
    let attached = ws.expect("ATTACHED").await?;
    assert_eq!(position(&attached["position"]), (epoch, first + 3));
    assert_eq!(attached["resumed"], false);
    for serial in first + 4..=first + 5 {
        let message = ws.expect("MESSAGE").await?;
        assert_eq!(position(&message["position"]), (epoch, serial));
    }
    // §3.4: DETACH of an attached channel → DETACHED without error.
    ws.send(&json!({"type": "DETACH", "channel": channel}))
        .await?;
    let detached = ws.expect("DETACHED").await?;
    assert_eq!(detached["channel"], channel);
    assert!(detached.get("error").is_none());

    // ---- A message over max_frame_bytes ends the session: DISCONNECTED
    // FrameTooLarge, reconnect retry, close 1009 (§1.2, §1.3).
    let huge = "x".repeat(usize::try_from(max_frame_bytes)? + 1024);
    // The server may stop reading (and close) before the whole message is sent.
    let _ = ws
        .send(&json!({"type": "HEARTBEAT", "padding": huge}))
        .await;
    let (frames, close) = ws.until_closed().await?;
    let disconnected = frames
        .iter()
        .find(|f| f["type"] == "DISCONNECTED")
        .with_context(|| format!("no DISCONNECTED in {frames:?}"))?;
    check_error_info(disconnected, 40009, false);
    assert_eq!(disconnected["reconnect"], "retry");
    assert_eq!(close, Some(CloseCode::Size));

    // ---- CONNECT with a wrong key: DISCONNECTED InvalidCredentials, never, 1008 (§10).
    let mut ws = Ws::open(&dev).await?;
    ws.send(&json!({"type": "CONNECT", "key": "nope.nope:0123456789abcdef0123"}))
        .await?;
    let (frames, close) = ws.until_closed().await?;
    let disconnected = frames
        .iter()
        .find(|f| f["type"] == "DISCONNECTED")
        .with_context(|| format!("no DISCONNECTED in {frames:?}"))?;
    check_error_info(disconnected, 40101, false);
    assert_eq!(disconnected["reconnect"], "never");
    assert_eq!(close, Some(CloseCode::Policy));

    // ---- HTTP history (§12.2), with each documented way to give the key (§10).
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&dev.key)
    );
    let page = http(
        dev.addr,
        "GET",
        &format!("{path}?from=1&limit=2"),
        Some(&basic),
        None,
    )
    .await?;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        page.headers
    );
    let body = page.json();
    let listed = body["messages"].as_array().context("messages")?;
    assert_eq!(listed.len(), 2, "{body}");
    assert_eq!(listed[0]["channel"], channel);
    assert_eq!(position(&listed[0]["position"]), (epoch, 1));
    assert_eq!(listed[0]["message"]["id"], "m-1");
    assert_eq!(listed[0]["message"]["data"], "hello");
    assert_eq!(listed[0]["message"]["client_id"], "alice");
    assert_eq!(position(&listed[1]["position"]), (epoch, 2));
    assert_eq!(listed[1]["message"]["data"], json!({"base64": "AAH/"}));
    assert_eq!(body["next"], 3, "{body}");
    let last = http(
        dev.addr,
        "GET",
        &format!("{path}?from=6&key={}", dev.key),
        None,
        None,
    )
    .await?;
    assert_eq!(last.status, 200);
    let body = last.json();
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["messages"][0]["message"]["data"], "solo");
    assert_eq!(body["next"], Value::Null, "{body}");
    // Backwards (§12.2): newest first; `next` is the next page's `until`, `from` bounds.
    let mut pages = Vec::new();
    for query in [
        "direction=backwards&limit=2".to_owned(),
        "direction=backwards&limit=2&until=4".to_owned(),
        "direction=backwards&limit=2&until=2&from=2".to_owned(),
    ] {
        let page = http(
            dev.addr,
            "GET",
            &format!("{path}?{query}"),
            Some(&bearer),
            None,
        )
        .await?;
        assert_eq!(page.status, 200, "{query}");
        let body = page.json();
        let serials: Vec<u64> = body["messages"]
            .as_array()
            .context("messages")?
            .iter()
            .map(|m| position(&m["position"]).1)
            .collect();
        pages.push((serials, body["next"].clone()));
    }
    assert_eq!(
        pages,
        [
            (vec![6, 5], json!(4)),
            (vec![4, 3], json!(2)),
            (vec![2], Value::Null)
        ]
    );
    let reversed = http(
        dev.addr,
        "GET",
        &format!("{path}?from=3&until=2"),
        Some(&bearer),
        None,
    )
    .await?;
    assert_eq!(reversed.status, 400);
    check_error_info(&reversed.json(), 40003, false);
    let bad = http(
        dev.addr,
        "GET",
        &format!("{path}?limit=0"),
        Some(&bearer),
        None,
    )
    .await?;
    assert_eq!(bad.status, 400);
    check_error_info(&bad.json(), 40003, false);

    // ---- HTTP errors (§12, §10).
    let missing = http(dev.addr, "GET", &path, None, None).await?;
    assert_eq!(missing.status, 401);
    check_error_info(&missing.json(), 40100, false);
    let wrong = http(
        dev.addr,
        "GET",
        &path,
        Some("Bearer nope.nope:0123456789abcdef0123"),
        None,
    )
    .await?;
    assert_eq!(wrong.status, 401);
    check_error_info(&wrong.json(), 40101, false);
    let invalid = http(
        dev.addr,
        "POST",
        "/v1/channels/$system/messages",
        Some(&bearer),
        Some(&json!({"data": "x"})),
    )
    .await?;
    assert_eq!(invalid.status, 400);
    check_error_info(&invalid.json(), 40002, false);
    let not_found = http(dev.addr, "GET", "/v1/nothing-here", Some(&bearer), None).await?;
    assert_eq!(not_found.status, 404);
    check_error_info(&not_found.json(), 40400, false);
    let method = http(dev.addr, "DELETE", &path, Some(&bearer), None).await?;
    assert_eq!(method.status, 405);
    check_error_info(&method.json(), 40500, false);
    let health = http(dev.addr, "GET", "/healthz", None, None).await?;
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    // `tern dev` has published through its log above, so its link is up.
    let ready = http(dev.addr, "GET", "/readyz", None, None).await?;
    assert_eq!(ready.status, 200);
    let metrics = http(dev.addr, "GET", "/metrics", None, None).await?;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );

    // ---- MessagePack (§1.1, §1.2, §2): chosen by subprotocol, or by `?format=msgpack`
    // when no subprotocol is offered; binary messages; frames are maps back to back.
    for (url, subprotocol) in [
        (dev.ws_url(), Some("tern.v1.msgpack")),
        (format!("{}?format=msgpack", dev.ws_url()), None),
    ] {
        let mut request = url.into_client_request()?;
        if let Some(subprotocol) = subprotocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", subprotocol.parse()?);
        }
        let (mut socket, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
                .await
                .context("WebSocket handshake timed out")??;
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            subprotocol
        );
        // Two frames in one message: {"type":"HEARTBEAT","id":5}{"type":"HEARTBEAT","id":6}.
        let mut two = msgpack_heartbeat(5);
        two.extend(msgpack_heartbeat(6));
        tokio::time::timeout(WAIT, socket.send(WsMessage::Binary(Bytes::from(two)))).await??;
        let mut ids = Vec::new();
        while ids.len() < 2 {
            let message = tokio::time::timeout(WAIT, socket.next())
                .await
                .context("no answer on the MessagePack connection")?
                .context("the WebSocket ended")??;
            match message {
                WsMessage::Binary(bytes) => {
                    let mut rest = &bytes[..];
                    while !rest.is_empty() {
                        let (frame, tail) = read_small_map(rest)
                            .with_context(|| format!("not a small frame map: {bytes:02x?}"))?;
                        rest = tail;
                        if let Some(id) = frame.get("id") {
                            assert_eq!(frame.get("type"), Some(&json!("HEARTBEAT")));
                            ids.push(id.clone());
                        }
                    }
                }
                WsMessage::Text(text) => {
                    bail!("a text message on a MessagePack connection: {text}")
                }
                _ => {}
            }
        }
        assert_eq!(ids, [json!(5), json!(6)]);
    }
    Ok(())
}

/// `{"type": "HEARTBEAT", "id": id}` in MessagePack, by hand: a fixmap of two entries,
/// fixstr keys and values, a positive fixint id.
fn msgpack_heartbeat(id: u8) -> Vec<u8> {
    assert!(id < 0x80, "a positive fixint");
    let mut out = vec![0x82];
    for text in ["type", "HEARTBEAT", "id"] {
        out.push(0xA0 | u8::try_from(text.len()).expect("short"));
        out.extend_from_slice(text.as_bytes());
    }
    out.push(id);
    out
}

/// Reads one MessagePack map whose keys are strings and whose values are strings or
/// unsigned integers (enough for a HEARTBEAT), and returns it with the bytes after it.
fn read_small_map(bytes: &[u8]) -> Option<(serde_json::Map<String, Value>, &[u8])> {
    fn take(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
        (bytes.len() >= n).then(|| bytes.split_at(n))
    }
    fn value(bytes: &[u8]) -> Option<(Value, &[u8])> {
        let (&marker, rest) = bytes.split_first()?;
        match marker {
            0x00..=0x7F => Some((json!(marker), rest)),
            0xA0..=0xBF | 0xD9 => {
                let (len, rest) = match marker {
                    0xD9 => (usize::from(*rest.first()?), &rest[1..]),
                    _ => (usize::from(marker & 0x1F), rest),
                };
                let (text, rest) = take(rest, len)?;
                Some((json!(std::str::from_utf8(text).ok()?), rest))
            }
            0xCC..=0xCF => {
                let len = 1 << (marker - 0xCC);
                let (raw, rest) = take(rest, len)?;
                let n = raw.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
                Some((json!(n), rest))
            }
            _ => None,
        }
    }
    let (&marker, mut rest) = bytes.split_first()?;
    if marker & 0xF0 != 0x80 {
        return None;
    }
    let mut map = serde_json::Map::new();
    for _ in 0..marker & 0x0F {
        let (key, tail) = value(rest)?;
        let (val, tail) = value(tail)?;
        map.insert(key.as_str()?.to_owned(), val);
        rest = tail;
    }
    Some((map, rest))
}

#[test]
fn keys_are_found_in_printed_lines() {
    assert_eq!(
        find_key("  key: dev.local:0123456789abcdef0123"),
        Some("dev.local:0123456789abcdef0123".into())
    );
    assert_eq!(
        find_key(
            "curl -H \"Authorization: Bearer dev.k1:abcdefghijklmnopq\" http://127.0.0.1:8080/"
        ),
        Some("dev.k1:abcdefghijklmnopq".into())
    );
    assert_eq!(
        find_key("tern dev listening on http://127.0.0.1:8080"),
        None
    );
    assert_eq!(find_key("ws://127.0.0.1:8080/v1/ws"), None);
}

#[test]
fn hand_written_msgpack_reads_back() {
    let mut two = msgpack_heartbeat(5);
    two.extend(msgpack_heartbeat(6));
    let (first, rest) = read_small_map(&two).expect("first map");
    assert_eq!(Value::Object(first), json!({"type": "HEARTBEAT", "id": 5}));
    let (second, rest) = read_small_map(rest).expect("second map");
    assert_eq!(Value::Object(second), json!({"type": "HEARTBEAT", "id": 6}));
    assert!(rest.is_empty());
    assert!(
        read_small_map(&[0x91, 0x01]).is_none(),
        "an array is no map"
    );
}

#[test]
fn chunked_http_bodies_are_joined() {
    let raw =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let answer = parse_http(raw).expect("parses");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, b"abcde");
}

/// Waits (bounded) until `/readyz` says the edge's link to the log is up (§12): `tern
/// dev` prints its address before, and a publish meanwhile is `LogUnavailable`.
async fn wait_ready(dev: &Dev) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = http(dev.addr, "GET", "/readyz", None, None).await?;
        if ready.status == 200 {
            return Ok(());
        }
        ensure!(
            ready.status == 503,
            "§12: /readyz is 200 or 503, not {}",
            ready.status
        );
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the edge's link to the log is not up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CONNECT with `heartbeat_interval_ms: asked` on a new connection; returns it and its
/// CONNECTED.
async fn connect_asking(dev: &Dev, asked: u64) -> anyhow::Result<(Ws, Value)> {
    let mut ws = Ws::open(dev).await?;
    ws.send(&json!({"type": "CONNECT", "key": dev.key, "heartbeat_interval_ms": asked}))
        .await?;
    let connected = ws.expect("CONNECTED").await?;
    Ok((ws, connected))
}

/// Heartbeat negotiation (§3.1, §3.2, §8): CONNECT's `heartbeat_interval_ms` brought
/// within the bounds, `idle_timeout_ms` scaled alike, and the server's own heartbeats
/// at the interval in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_negotiated_as_documented() -> anyhow::Result<()> {
    let dev = Dev::start()?;
    // §3.1, §8: nothing asked → the default interval, 15000 ms, and 45000 ms idle.
    let mut ws = Ws::open(&dev).await?;
    let connected = ws.connect(&dev.key).await?;
    assert_eq!(connected["heartbeat_interval_ms"], 15_000, "{connected}");
    assert_eq!(connected["idle_timeout_ms"], 45_000, "{connected}");
    drop(ws);
    // §3.1, §3.2: the nearest value within 5000 to 120000 ms; `idle_timeout_ms` the
    // same multiple of it as the defaults' (45000 / 15000 = 3×).
    for (asked, answered) in [
        (20_000, 20_000),
        (7_777, 7_777),
        (5_000, 5_000),
        (120_000, 120_000),
        (1_000, 5_000),
        (0, 5_000),
        (600_000, 120_000),
    ] {
        let (_, connected) = connect_asking(&dev, asked).await?;
        assert_eq!(
            connected["heartbeat_interval_ms"], answered,
            "asked {asked}: {connected}"
        );
        assert_eq!(
            connected["idle_timeout_ms"],
            answered * 3,
            "asked {asked}: {connected}"
        );
    }
    // §8: the server sends HEARTBEAT{} (no id) when it has sent nothing else for the
    // interval in force. `slow` (120 s) connects before `fast` (5 s, the minimum): had
    // the asked intervals been ignored, `slow` would get the first heartbeat.
    let (mut slow, _) = connect_asking(&dev, 120_000).await?;
    let (mut fast, connected) = connect_asking(&dev, 5_000).await?;
    assert_eq!(connected["heartbeat_interval_ms"], 5_000, "{connected}");
    let beat = fast.next_any().await?;
    assert_eq!(beat["type"], "HEARTBEAT", "{beat}");
    assert!(beat.get("id").is_none(), "{beat}");
    // Nothing on `slow` but, perhaps, a heartbeat bringing a fresh connection key
    // (§3.6: every state_ttl_ms / 4, whatever the interval).
    while let Ok(frame) = tokio::time::timeout(Duration::from_millis(500), slow.next_any()).await {
        let frame = frame?;
        assert!(
            frame["type"] == "HEARTBEAT" && frame.get("connection_key").is_some(),
            "a 120 s interval, yet: {frame}"
        );
    }
    Ok(())
}

/// Rewind by a span of time (§3.3, §5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_by_a_span_works_as_documented() -> anyhow::Result<()> {
    let dev = Dev::start()?;
    wait_ready(&dev).await?;
    let channel = "doc:span";
    let mut publisher = Ws::open(&dev).await?;
    publisher.connect(&dev.key).await?;
    publisher
        .send(
            &json!({"type": "PUBLISH", "msg_serial": 0, "channel": channel,
            "messages": [{"data": "one"}, {"data": "two"}, {"data": "three"}]}),
        )
        .await?;
    let ack = publisher.expect("ACK").await?;
    let (epoch, first) = position(&ack["results"][0]["position"]);
    assert_eq!(first, 1, "a fresh channel: {ack}");

    // §5: a span that takes in every stored message: ATTACHED at 0:0 (the first of
    // them is the channel's first), then serial 1 on.
    let mut all = Ws::open(&dev).await?;
    all.connect(&dev.key).await?;
    all.send(&json!({"type": "ATTACH", "channel": channel, "rewind": "2h"}))
        .await?;
    let attached = all.expect("ATTACHED").await?;
    assert_eq!(
        attached["position"],
        json!({"epoch": 0, "serial": 0}),
        "{attached}"
    );
    assert_eq!(attached["resumed"], false, "{attached}");
    assert!(attached.get("error").is_none(), "{attached}");
    for (serial, data) in [(1, "one"), (2, "two"), (3, "three")] {
        let message = all.expect("MESSAGE").await?;
        assert_eq!(position(&message["position"]), (epoch, serial), "{message}");
        assert_eq!(message["message"]["data"], data, "{message}");
    }

    // §5: a span that takes in nothing (the last message was stored before its ACK,
    // more than 10 ms before this ATTACH): the channel's last position, and the next
    // message stored comes live.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut none = Ws::open(&dev).await?;
    none.connect(&dev.key).await?;
    none.send(&json!({"type": "ATTACH", "channel": channel, "rewind": "10ms"}))
        .await?;
    let attached = none.expect("ATTACHED").await?;
    assert_eq!(position(&attached["position"]), (epoch, 3), "{attached}");
    assert_eq!(attached["resumed"], false, "{attached}");
    assert!(attached.get("error").is_none(), "{attached}");
    // §3.3: "0s" is the same as no rewind: the channel's last position.
    let mut zero = Ws::open(&dev).await?;
    zero.connect(&dev.key).await?;
    zero.send(&json!({"type": "ATTACH", "channel": channel, "rewind": "0s"}))
        .await?;
    let attached = zero.expect("ATTACHED").await?;
    assert_eq!(position(&attached["position"]), (epoch, 3), "{attached}");
    publisher
        .send(
            &json!({"type": "PUBLISH", "msg_serial": 1, "channel": channel,
            "messages": [{"data": "live"}]}),
        )
        .await?;
    let ack = publisher.expect("ACK").await?;
    assert_eq!(
        position(&ack["results"][0]["position"]),
        (epoch, 4),
        "{ack}"
    );
    for ws in [&mut all, &mut none, &mut zero] {
        let message = ws.expect("MESSAGE").await?;
        assert_eq!(position(&message["position"]), (epoch, 4), "{message}");
        assert_eq!(message["message"]["data"], "live", "{message}");
    }

    // §3.3: any other string is `Malformed`; §3.13: an ERROR, and the connection stays
    // as it was (still attached after serial 4).
    for bad in ["2 days", "5d", "1.5s", "-5s", "10", "s", ""] {
        none.send(&json!({"type": "ATTACH", "channel": channel, "rewind": bad}))
            .await?;
        let error = none.expect("ERROR").await?;
        check_error_info(&error, 40000, false);
    }
    publisher
        .send(
            &json!({"type": "PUBLISH", "msg_serial": 2, "channel": channel,
            "messages": [{"data": "after"}]}),
        )
        .await?;
    publisher.expect("ACK").await?;
    let message = none.expect("MESSAGE").await?;
    assert_eq!(position(&message["position"]), (epoch, 5), "{message}");
    assert_eq!(message["message"]["data"], "after", "{message}");
    Ok(())
}

/// Most bytes an SSE stream may hold unread: a bound against a misbehaving server.
const SSE_BUFFER: usize = 1 << 20;

/// One block of an event stream (its lines up to a blank line), its fields read as the
/// HTML standard reads them; unknown fields are ignored.
#[derive(Debug, Default, PartialEq)]
struct SseBlock {
    event: Option<String>,
    id: Option<String>,
    data: Vec<String>,
    retry: Option<String>,
    comments: Vec<String>,
}

impl SseBlock {
    fn read_line(&mut self, line: &str) {
        if let Some(comment) = line.strip_prefix(':') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            self.comments.push(comment.to_owned());
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "event" => self.event = Some(value),
            "id" => self.id = Some(value),
            "data" => self.data.push(value),
            "retry" => self.retry = Some(value),
            _ => {}
        }
    }

    fn is_comment(&self) -> bool {
        self.event.is_none() && self.id.is_none() && self.data.is_empty() && self.retry.is_none()
    }
}

/// Moves the whole chunks of `raw` (a chunked HTTP/1.1 body as read so far) into
/// `text`; returns whether the last chunk came.
fn dechunk(raw: &mut Vec<u8>, text: &mut Vec<u8>) -> anyhow::Result<bool> {
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return Ok(false);
        };
        let size_text = std::str::from_utf8(&raw[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            raw.clear();
            return Ok(true);
        }
        ensure!(size <= SSE_BUFFER, "a chunk of {size} bytes");
        let start = line_end + 2;
        let end = start + size;
        if raw.len() < end + 2 {
            return Ok(false);
        }
        ensure!(
            &raw[end..end + 2] == b"\r\n",
            "a chunk not followed by CRLF"
        );
        text.extend_from_slice(&raw[start..end]);
        raw.drain(..end + 2);
    }
}

/// Takes the first whole block (lines ended by `\n` or `\r\n`, up to a blank line) off
/// `text`; `None` until one is whole.
fn take_block(text: &mut Vec<u8>) -> Option<SseBlock> {
    let mut block = SseBlock::default();
    let mut lines = 0;
    let mut start = 0;
    while let Some(n) = text[start..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&text[start..start + n]);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        start += n + 1;
        if line.is_empty() {
            if lines > 0 {
                text.drain(..start);
                return Some(block);
            }
            continue;
        }
        lines += 1;
        block.read_line(line);
    }
    None
}

/// Reads what comes next on `stream` (bounded in time and in bytes) onto `into`.
async fn read_some(stream: &mut TcpStream, into: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut buffer = [0; 8192];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buffer))
        .await
        .context("nothing came in time")??;
    ensure!(n > 0, "the connection closed");
    ensure!(
        into.len() + n <= SSE_BUFFER,
        "over {SSE_BUFFER} bytes unread"
    );
    into.extend_from_slice(&buffer[..n]);
    Ok(())
}

/// One `GET /v1/sse` (§12.3) over HTTP/1.1 by hand, read as it comes: the answer's
/// head, then its chunked body cut into blocks.
struct Sse {
    stream: TcpStream,
    /// The status and headers (no body).
    head: HttpAnswer,
    /// Body bytes read, not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked bytes not yet cut into blocks.
    text: Vec<u8>,
    /// The last chunk came.
    ended: bool,
}

impl Sse {
    /// Sends the request with `headers`; reads the answer's head, which must be a 200
    /// with a chunked body.
    async fn open(
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut request =
            format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        tokio::time::timeout(WAIT, stream.write_all(request.as_bytes()))
            .await
            .context("sending the request timed out")??;
        let mut raw = Vec::new();
        let (head, start) = loop {
            if let Some(found) = parse_head(&raw)? {
                break found;
            }
            ensure!(raw.len() < 64 << 10, "an HTTP head over 64 KiB");
            read_some(&mut stream, &mut raw).await?;
        };
        ensure!(
            head.status == 200,
            "{target}: {} {:?} {}",
            head.status,
            head.headers,
            String::from_utf8_lossy(&raw[start..])
        );
        // §12.3: "the event stream format of the HTML standard, chunked".
        ensure!(
            head.header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
            "§12.3: a chunked body: {:?}",
            head.headers
        );
        let mut sse = Self {
            stream,
            head,
            raw: raw.split_off(start),
            text: Vec::new(),
            ended: false,
        };
        sse.ended = dechunk(&mut sse.raw, &mut sse.text)?;
        Ok(sse)
    }

    /// The next block, comments included.
    async fn next_block(&mut self) -> anyhow::Result<SseBlock> {
        loop {
            if let Some(block) = take_block(&mut self.text) {
                return Ok(block);
            }
            ensure!(
                !self.ended,
                "the event stream ended; left: {:?}",
                String::from_utf8_lossy(&self.text)
            );
            read_some(&mut self.stream, &mut self.raw).await?;
            self.ended = dechunk(&mut self.raw, &mut self.text)?;
        }
    }

    /// The next block that is not a `: heartbeat` comment.
    async fn next_event(&mut self) -> anyhow::Result<SseBlock> {
        loop {
            let block = self.next_block().await?;
            if !block.is_comment() {
                return Ok(block);
            }
            // §12.3: the only comment is the heartbeat.
            ensure!(block.comments == ["heartbeat"], "{block:?}");
        }
    }

    /// §12.3: the stream starts with a `retry:` hint of 1000 to 3000 ms.
    async fn expect_retry_hint(&mut self) -> anyhow::Result<()> {
        let hint = self.next_block().await?;
        let retry: u64 = hint
            .retry
            .as_deref()
            .with_context(|| format!("§12.3: the stream starts with retry:, not {hint:?}"))?
            .parse()?;
        ensure!((1000..=3000).contains(&retry), "§12.3: retry: {retry}");
        ensure!(
            hint.event.is_none() && hint.data.is_empty(),
            "a hint only: {hint:?}"
        );
        Ok(())
    }
}

/// The test's own account of a stream's cursors (§12.3, "Event ids"): one per channel,
/// in the order of `channels`; `None` is `-`.
struct Cursors {
    channels: Vec<String>,
    at: Vec<Option<(u64, u64)>>,
    /// Whether the channel's `attached` came on the stream being read.
    attached: Vec<bool>,
}

impl Cursors {
    /// The cursors of a stream opened with the last event id `id` (`None`: without).
    fn new(channels: &[&str], id: Option<&str>) -> anyhow::Result<Self> {
        let at = match id {
            None => vec![None; channels.len()],
            Some(id) => id
                .split(',')
                .map(|cursor| match cursor {
                    "-" => Ok(None),
                    _ => {
                        let (epoch, serial) = cursor.split_once(':').context("epoch:serial")?;
                        anyhow::Ok(Some((epoch.parse()?, serial.parse()?)))
                    }
                })
                .collect::<anyhow::Result<_>>()?,
        };
        Ok(Self {
            channels: channels.iter().map(|&c| c.to_owned()).collect(),
            at,
            attached: vec![false; channels.len()],
        })
    }

    /// `id = cursor *( "," cursor )`, `cursor = epoch ":" serial / "-"`.
    fn id(&self) -> String {
        let cursors: Vec<String> = self
            .at
            .iter()
            .map(|cursor| match cursor {
                Some((epoch, serial)) => format!("{epoch}:{serial}"),
                None => "-".to_owned(),
            })
            .collect();
        cursors.join(",")
    }

    /// Reads an `attached` or `message` event (§12.3): its data is the ATTACHED or
    /// MESSAGE frame on one line, of one of the stream's channels; a message comes
    /// after its channel's `attached`, right after the cursor (no gap, no repeat).
    /// Moves the channel's cursor, checks the event's `id` names every cursor, and
    /// returns the frame with the cursor it had before.
    fn follow(&mut self, block: &SseBlock) -> anyhow::Result<(Value, Option<(u64, u64)>)> {
        let expected = match block.event.as_deref() {
            Some("attached") => "ATTACHED",
            Some("message") => "MESSAGE",
            _ => bail!("not an attached or message event: {block:?}"),
        };
        ensure!(block.data.len() == 1, "§12.3: data on one line: {block:?}");
        let frame: Value = serde_json::from_str(&block.data[0])?;
        ensure!(frame["type"] == expected, "{block:?}");
        let index = self
            .channels
            .iter()
            .position(|c| frame["channel"] == c.as_str())
            .with_context(|| format!("a channel of the stream: {block:?}"))?;
        let before = self.at[index];
        let now = position(&frame["position"]);
        if expected == "ATTACHED" {
            ensure!(!self.attached[index], "a second attached: {block:?}");
            self.attached[index] = true;
        } else {
            ensure!(self.attached[index], "a message before attached: {block:?}");
            let next = match before.context("attached gave a position")? {
                // §2.2: 0:0 is before the channel's first message, serial 1 of its epoch.
                (0, 0) => (now.0, 1),
                (epoch, serial) => (epoch, serial + 1),
            };
            ensure!(now == next, "after {before:?}: {block:?}");
        }
        self.at[index] = Some(now);
        ensure!(
            block.id.as_deref() == Some(self.id().as_str()),
            "§12.3: the id names every cursor, in order ({}): {block:?}",
            self.id()
        );
        Ok((frame, before))
    }
}

/// `POST`s one message per `data` to the channel written as the path segment `segment`
/// (§12.1); returns their positions.
async fn post(dev: &Dev, segment: &str, data: &[&str]) -> anyhow::Result<Vec<(u64, u64)>> {
    let messages: Vec<Value> = data.iter().map(|d| json!({"data": d})).collect();
    let answer = http(
        dev.addr,
        "POST",
        &format!("/v1/channels/{segment}/messages"),
        Some(&format!("Bearer {}", dev.key)),
        Some(&Value::Array(messages)),
    )
    .await?;
    ensure!(
        answer.status == 201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    let results = body["results"].as_array().context("results")?;
    Ok(results.iter().map(|r| position(&r["position"])).collect())
}

/// Server-Sent Events (§12.3): the stream, its event ids, resuming, and the checks
/// before the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_work_as_documented() -> anyhow::Result<()> {
    let dev = Dev::start()?;
    wait_ready(&dev).await?;
    let bearer = format!("Bearer {}", dev.key);
    // The second name holds a `,`: `%2C` in `channels` (§12.3) and in the path (§12).
    let channels = ["doc:sse", "doc:b,c"];
    let (a_path, b_path) = ("doc:sse", "doc:b%2Cc");
    let query = "channels=doc:sse,doc:b%2Cc";
    let key_param = dev.key.replace(':', "%3A");
    let a = post(&dev, a_path, &["a1", "a2"]).await?;
    let epoch = a[0].0;
    assert_eq!(a, [(epoch, 1), (epoch, 2)]);

    // ---- The stream (§12.3), with the key in the query (§10), URL-encoded.
    let mut sse = Sse::open(dev.addr, &format!("/v1/sse?{query}&key={key_param}"), &[]).await?;
    assert!(
        sse.head
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        sse.head.headers
    );
    // §12: CORS.
    assert_eq!(
        sse.head.header("access-control-allow-origin"),
        Some("*"),
        "{:?}",
        sse.head.headers
    );
    sse.expect_retry_hint().await?;
    // §12.3: one `attached` per channel, in any order; ids with `-` for a channel whose
    // `attached` has not come.
    let mut cursors = Cursors::new(&channels, None)?;
    for _ in 0..channels.len() {
        let (frame, _) = cursors.follow(&sse.next_event().await?)?;
        assert_eq!(frame["resumed"], false, "{frame}");
        assert!(
            frame["granted"]
                .as_array()
                .is_some_and(|g| g.contains(&json!("subscribe"))),
            "{frame}"
        );
    }
    assert_eq!(cursors.id(), format!("{epoch}:2,0:0"));
    // §12.3: a `message` event per message, its data the MESSAGE frame (§3.10).
    let b = post(&dev, b_path, &["b1"]).await?;
    let b_epoch = b[0].0;
    assert_eq!(b, [(b_epoch, 1)]);
    post(&dev, a_path, &["a3", "a4"]).await?;
    let mut got = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        let (frame, _) = cursors.follow(&sse.next_event().await?)?;
        let index = usize::from(frame["channel"] != channels[0]);
        let message = &frame["message"];
        assert!(message["id"].is_string(), "{frame}");
        assert!(message["timestamp"].is_u64(), "{frame}");
        got[index].push(message["data"].clone());
    }
    assert_eq!(got, [vec!["a3", "a4"], vec!["b1"]]);
    let saved = cursors.id();
    assert_eq!(saved, format!("{epoch}:4,{b_epoch}:1"));
    drop(sse);

    // ---- Resume (§12.3): Last-Event-ID (and the key in an Authorization header):
    // each channel attached from its cursor, resumed, then exactly what came after.
    post(&dev, a_path, &["a5"]).await?;
    post(&dev, b_path, &["b2", "b3"]).await?;
    let mut sse = Sse::open(
        dev.addr,
        &format!("/v1/sse?{query}"),
        &[("Authorization", &bearer), ("Last-Event-ID", &saved)],
    )
    .await?;
    sse.expect_retry_hint().await?;
    post(&dev, a_path, &["a6"]).await?;
    post(&dev, b_path, &["b4"]).await?;
    let mut cursors = Cursors::new(&channels, Some(&saved))?;
    let mut got = [Vec::new(), Vec::new()];
    let mut events = 0;
    while got[0].last() != Some(&json!("a6")) || got[1].last() != Some(&json!("b4")) {
        events += 1;
        ensure!(events <= 16, "more events than published: {got:?}");
        let (frame, before) = cursors.follow(&sse.next_event().await?)?;
        let index = usize::from(frame["channel"] != channels[0]);
        if frame["type"] == "ATTACHED" {
            assert_eq!(frame["resumed"], true, "{frame}");
            assert_eq!(Some(position(&frame["position"])), before, "{frame}");
            assert!(frame.get("error").is_none(), "{frame}");
        } else {
            got[index].push(frame["message"]["data"].clone());
        }
    }
    assert_eq!(got, [vec!["a5", "a6"], vec!["b2", "b3", "b4"]]);
    let latest = cursors.id();
    assert_eq!(latest, format!("{epoch}:6,{b_epoch}:4"));
    drop(sse);

    // ---- `last_event_id` in the query (§12.3); a `-` cursor attaches without `from`.
    let id = format!("{epoch}:5,-");
    let mut sse = Sse::open(
        dev.addr,
        &format!("/v1/sse?{query}&last_event_id={id}&key={key_param}"),
        &[],
    )
    .await?;
    sse.expect_retry_hint().await?;
    let mut cursors = Cursors::new(&channels, Some(&id))?;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (frame, _) = cursors.follow(&sse.next_event().await?)?;
        seen.push(frame);
    }
    let find = |kind: &str, channel: &str| {
        seen.iter()
            .find(|f| f["type"] == kind && f["channel"] == channel)
            .with_context(|| format!("no {kind} of {channel} in {seen:?}"))
    };
    let attached = find("ATTACHED", channels[0])?;
    assert_eq!(attached["resumed"], true, "{attached}");
    assert_eq!(position(&attached["position"]), (epoch, 5), "{attached}");
    assert_eq!(find("MESSAGE", channels[0])?["message"]["data"], "a6");
    let attached = find("ATTACHED", channels[1])?;
    assert_eq!(attached["resumed"], false, "{attached}");
    assert_eq!(
        position(&attached["position"]),
        (b_epoch, 4),
        "§5: a plain attach: {attached}"
    );
    drop(sse);
    // The header wins over the query parameter.
    let mut sse = Sse::open(
        dev.addr,
        &format!("/v1/sse?{query}&last_event_id=0:0,0:0&key={key_param}"),
        &[("Last-Event-ID", &latest)],
    )
    .await?;
    sse.expect_retry_hint().await?;
    let mut cursors = Cursors::new(&channels, Some(&latest))?;
    for _ in 0..channels.len() {
        let (frame, before) = cursors.follow(&sse.next_event().await?)?;
        assert_eq!(frame["resumed"], true, "{frame}");
        assert_eq!(Some(position(&frame["position"])), before, "{frame}");
    }
    drop(sse);

    // ---- Checks before the stream (§12.3), answered like every HTTP route (§12), CORS
    // included.
    let many: Vec<String> = (0..=200).map(|i| format!("doc:c{i}")).collect();
    let cases = [
        (format!("/v1/sse?{query}"), None, 401, 40100),
        (
            format!("/v1/sse?{query}"),
            Some("Bearer nope.nope:0123456789abcdef0123"),
            401,
            40101,
        ),
        // The key is checked first.
        ("/v1/sse".to_owned(), None, 401, 40100),
        ("/v1/sse".to_owned(), Some(bearer.as_str()), 400, 40003),
        (
            "/v1/sse?channels=doc:x,doc:x".to_owned(),
            Some(&bearer),
            400,
            40003,
        ),
        (
            "/v1/sse?channels=doc:x,$system".to_owned(),
            Some(&bearer),
            400,
            40002,
        ),
        (
            "/v1/sse?channels=doc:x,doc%FF".to_owned(),
            Some(&bearer),
            400,
            40002,
        ),
        (
            format!("/v1/sse?channels={}", many.join(",")),
            Some(&bearer),
            400,
            40012,
        ),
        (
            format!("/v1/sse?{query}&last_event_id={epoch}:1"),
            Some(&bearer),
            400,
            40003,
        ),
        (
            format!("/v1/sse?{query}&last_event_id=x:1,-"),
            Some(&bearer),
            400,
            40003,
        ),
    ];
    for (target, auth, status, error_code) in cases {
        let answer = http(dev.addr, "GET", &target, auth, None).await?;
        assert_eq!(
            answer.status,
            status,
            "{target}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        check_error_info(&answer.json(), error_code, false);
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some("*"),
            "{target}: {:?}",
            answer.headers
        );
    }
    // §12: another method → 405 with an Allow header; OPTIONS → the CORS preflight.
    let target = format!("/v1/sse?{query}");
    let post_answer = http(dev.addr, "POST", &target, Some(&bearer), None).await?;
    assert_eq!(post_answer.status, 405);
    check_error_info(&post_answer.json(), 40500, false);
    assert!(
        post_answer
            .header("allow")
            .is_some_and(|a| a.contains("GET")),
        "{:?}",
        post_answer.headers
    );
    let preflight = http(dev.addr, "OPTIONS", &target, None, None).await?;
    assert_eq!(preflight.status, 204, "{:?}", preflight.headers);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(
        preflight
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("GET")),
        "{:?}",
        preflight.headers
    );
    let allowed: Vec<String> = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for header in ["authorization", "content-type", "last-event-id"] {
        assert!(
            allowed.iter().any(|h| h == header),
            "{:?}",
            preflight.headers
        );
    }
    Ok(())
}

#[test]
fn event_streams_are_cut_into_blocks() {
    // Three whole chunks, the last one's CRLF missing yet; an event cut inside its data.
    let mut raw = b"d\r\nretry: 1742\n\n\r\n".to_vec();
    raw.extend_from_slice(b"22\r\nevent: message\r\nid: 1:4,-\r\ndata: {\r\n");
    raw.extend_from_slice(b"9\r\n}\r\n\r\n: x\n");
    let mut text = Vec::new();
    assert!(!dechunk(&mut raw, &mut text).expect("dechunks"));
    assert_eq!(raw, b"9\r\n}\r\n\r\n: x\n");
    let hint = take_block(&mut text).expect("the hint");
    assert_eq!(hint.retry.as_deref(), Some("1742"));
    assert!(!hint.is_comment());
    assert!(take_block(&mut text).is_none(), "half an event");
    raw.extend_from_slice(b"\r\n3\r\n\nab\r\n0\r\n\r\n");
    assert!(dechunk(&mut raw, &mut text).expect("dechunks"));
    let event = take_block(&mut text).expect("an event");
    assert_eq!(
        event,
        SseBlock {
            event: Some("message".into()),
            id: Some("1:4,-".into()),
            data: vec!["{}".into()],
            ..SseBlock::default()
        }
    );
    let comment = take_block(&mut text).expect("a comment");
    assert!(comment.is_comment());
    assert_eq!(comment.comments, ["x"]);
    assert!(take_block(&mut text).is_none());
    assert_eq!(text, b"ab");
}
