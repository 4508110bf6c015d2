//! Server-Sent Events over real sockets (docs/protocol.md §12.3): a real log node, a real
//! edge on 127.0.0.1:0, and an event-stream reader written here by hand (HTTP/1.1 over a
//! `TcpStream`, chunked transfer decoding, the event-stream grammar).
//!
//! ```text
//!  SseReader ──GET /v1/sse?channels=…──▶ edge ──▶ log
//!  http() ─────POST /v1/channels/…/messages──┘
//! ```

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::{ADMIN_KEY, Cluster, LIMITED_KEY, PATIENCE, http};
use tern_config::{EdgeLimitsConfig, StoreConfig};
use tern_link::ChannelName;
use tern_log::LogStore as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One dispatched event (or what else a stream holds).
#[derive(Debug, Clone, PartialEq)]
enum Item {
    /// `event:` (default `message`), the `id:` if the event had one, `data:` lines
    /// joined with `\n`.
    Event {
        event: String,
        id: Option<String>,
        data: String,
    },
    /// A `:` comment line.
    Comment(String),
    /// A `retry:` field.
    Retry(u64),
    /// The body ended.
    End,
}

/// An HTTP/1.1 response read by hand: status, headers, then the body as it comes.
struct SseReader {
    stream: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    chunked: bool,
    /// `Content-Length` of a body that is not chunked.
    length: Option<usize>,
    /// Bytes read and not decoded yet (transfer coding).
    raw: Vec<u8>,
    /// Body bytes not parsed into lines yet.
    body: Vec<u8>,
    /// Body bytes taken so far (for a `Content-Length` body).
    taken: usize,
    ended: bool,
    /// The event being built.
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

impl SseReader {
    /// `GET path` with `headers`; reads the status line and the headers.
    async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseReader {
        Self::request(addr, "GET", path, headers).await
    }

    async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> SseReader {
        let mut stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut reader = SseReader {
            stream,
            status: 0,
            headers: Vec::new(),
            chunked: false,
            length: None,
            raw: Vec::new(),
            body: Vec::new(),
            taken: 0,
            ended: false,
            event: None,
            id: None,
            data: None,
        };
        let head_end = loop {
            if let Some(end) = reader.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(
                reader.read_more().await,
                "the connection closed in the headers"
            );
        };
        let head = String::from_utf8(reader.raw[..head_end].to_vec()).expect("ASCII head");
        reader.raw.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        reader.status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        for line in lines {
            let (name, value) = line.split_once(':').expect("header line");
            reader
                .headers
                .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        reader.chunked = reader
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        reader.length = reader.header("content-length").and_then(|v| v.parse().ok());
        reader
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads more bytes; false at the end of the connection.
    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut buf))
            .await
            .expect("bytes in time")
            .unwrap_or(0);
        self.raw.extend_from_slice(&buf[..n]);
        n > 0
    }

    /// Moves complete body bytes from `raw` to `body`; sets `ended` at the body's end.
    fn decode(&mut self) {
        if !self.chunked {
            let want = self.length.map_or(usize::MAX, |l| l - self.taken);
            let n = want.min(self.raw.len());
            self.body.extend(self.raw.drain(..n));
            self.taken += n;
            if self.length == Some(self.taken) {
                self.ended = true;
            }
            return;
        }
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = std::str::from_utf8(&self.raw[..line_end]).expect("chunk size");
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("hex chunk size");
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..line_end + 2 + size + 2);
        }
    }

    /// The whole body of a response that is not a stream.
    async fn body_text(&mut self) -> String {
        loop {
            self.decode();
            if self.ended {
                break;
            }
            if !self.read_more().await {
                break;
            }
        }
        String::from_utf8(std::mem::take(&mut self.body)).expect("UTF-8 body")
    }

    /// The body as JSON.
    async fn json(&mut self) -> Value {
        let text = self.body_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The next item of the event stream.
    async fn next(&mut self) -> Item {
        loop {
            while let Some(end) = self.body.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=end).collect();
                let line = String::from_utf8(line[..line.len() - 1].to_vec()).expect("UTF-8");
                if let Some(item) = self.line(&line) {
                    return item;
                }
            }
            if self.ended {
                return Item::End;
            }
            self.decode();
            if self.body.contains(&b'\n') || self.ended {
                continue;
            }
            if !self.read_more().await {
                self.decode();
                if !self.ended {
                    // The connection closed without the last chunk.
                    self.ended = true;
                }
            }
        }
    }

    /// One line of the event stream (the grammar of the HTML standard).
    fn line(&mut self, line: &str) -> Option<Item> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(Item::Event {
                event: self.event.take().unwrap_or_else(|| "message".into()),
                id: self.id.take(),
                data,
            });
        }
        if let Some(comment) = line.strip_prefix(':') {
            return Some(Item::Comment(comment.trim_start().to_owned()));
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            "retry" => return Some(Item::Retry(value.parse().expect("retry is a number"))),
            other => panic!("unknown field {other:?} in {line:?}"),
        }
        None
    }

    /// The next item that is not a comment or `retry:`, within [`PATIENCE`]
    /// (heartbeats alone do not keep a test waiting).
    async fn next_event(&mut self) -> Item {
        let skipping = async {
            loop {
                match self.next().await {
                    Item::Comment(_) | Item::Retry(_) => {}
                    other => return other,
                }
            }
        };
        tokio::time::timeout(PATIENCE, skipping)
            .await
            .expect("an event in time")
    }

    /// The next event with its data as JSON; panics at the end.
    async fn event(&mut self) -> (String, Option<String>, Value) {
        match self.next_event().await {
            Item::Event { event, id, data } => {
                let json =
                    serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: data {data:?}"));
                (event, id, json)
            }
            other => panic!("expected an event: {other:?}"),
        }
    }
}

/// `/v1/sse?channels=…&key=…` (and `extra` query text).
fn sse_path(channels: &str, key: &str, extra: &str) -> String {
    format!("/v1/sse?channels={channels}&key={key}{extra}")
}

/// `epoch:serial` of a JSON position.
fn position(value: &Value) -> (u64, u64) {
    (
        value["epoch"].as_u64().expect("epoch"),
        value["serial"].as_u64().expect("serial"),
    )
}

/// Publishes `data` to `channel` over HTTP; returns the positions.
async fn publish(addr: SocketAddr, channel: &str, data: &[&str]) -> Vec<(u64, u64)> {
    let body: Vec<Value> = data
        .iter()
        .map(|d| serde_json::json!({ "data": d }))
        .collect();
    let body = serde_json::to_vec(&body).expect("JSON");
    let auth = format!("Bearer {ADMIN_KEY}");
    let (status, answer) = http(
        addr,
        "POST",
        &format!("/v1/channels/{channel}/messages"),
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("JSON answer");
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| position(&r["position"]))
        .collect()
}

/// The `id:` for positions listed in channel order.
fn id_of(positions: &[Option<(u64, u64)>]) -> String {
    positions
        .iter()
        .map(|p| p.map_or("-".to_owned(), |(e, s)| format!("{e}:{s}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// What [`events`] read: the `attached` events by channel, and the messages as
/// (channel, position, text) in the order they came.
type Seen = (
    std::collections::HashMap<String, Value>,
    Vec<(String, (u64, u64), String)>,
);

/// Reads events until every channel had its `attached` event (when `attaching`) and
/// `want` messages came. Per channel, `attached` comes before its messages (events of
/// other channels may come between); every event's id names the cursors so far
/// (`cursors`, in channel order, updated here).
async fn events(
    sse: &mut SseReader,
    channels: &[&str],
    cursors: &mut [Option<(u64, u64)>],
    attaching: bool,
    want: usize,
) -> Seen {
    let mut attached = std::collections::HashMap::new();
    let mut got = Vec::new();
    while got.len() < want || (attaching && attached.len() < channels.len()) {
        let (event, id, data) = sse.event().await;
        let channel = data["channel"].as_str().expect("channel").to_owned();
        let index = channels
            .iter()
            .position(|c| *c == channel)
            .expect("a channel of the stream");
        let at = position(&data["position"]);
        cursors[index] = Some(at);
        assert_eq!(id.as_deref(), Some(id_of(cursors).as_str()), "{data}");
        match event.as_str() {
            "attached" => {
                assert!(attaching, "unexpected {data}");
                assert_eq!(data["type"], "ATTACHED");
                assert!(
                    attached.insert(channel, data).is_none(),
                    "one attached each"
                );
            }
            "message" => {
                assert_eq!(data["type"], "MESSAGE");
                assert!(
                    !attaching || attached.contains_key(&channel),
                    "a message before its channel's attached: {data}"
                );
                let text = data["message"]["data"].as_str().expect("text").to_owned();
                got.push((channel, at, text));
            }
            other => panic!("event {other}: {data}"),
        }
    }
    (attached, got)
}

/// Reads the `attached` event of every channel (no message may come yet).
async fn attached_all(
    sse: &mut SseReader,
    channels: &[&str],
    cursors: &mut [Option<(u64, u64)>],
) -> std::collections::HashMap<String, Value> {
    events(sse, channels, cursors, true, 0).await.0
}

/// Reads `want` messages.
async fn messages(
    sse: &mut SseReader,
    channels: &[&str],
    cursors: &mut [Option<(u64, u64)>],
    want: usize,
) -> Vec<(String, (u64, u64), String)> {
    events(sse, channels, cursors, false, want).await.1
}

async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, text) = http(addr, "GET", "/metrics", &[], b"").await;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

/// Waits (bounded) until `/metrics` shows `value` for `name`.
async fn wait_metric(addr: SocketAddr, name: &str, value: u64) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while metric(addr, name).await != value {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{name} stayed at {} instead of {value}",
        metric(addr, name).await
    );
}

/// Two channels: messages in order with ids naming both positions; a dropped stream
/// releases its channels; a new stream with `Last-Event-ID` gets exactly the missed
/// messages, once, in order; `?last_event_id=` does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_channels_resume_with_last_event_id_exactly_once_in_order() {
    let cluster = Cluster::start().await;
    let addr = cluster.addr();
    let channels = ["news:a", "news:b"];
    let path = sse_path("news:a,news:b", ADMIN_KEY, "");
    let mut sse = SseReader::get(addr, &path, &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("access-control-allow-origin"), Some("*"));
    assert!(matches!(sse.next().await, Item::Retry(ms) if (1000..3000).contains(&ms)));
    let mut cursors = [None, None];
    let attached = attached_all(&mut sse, &channels, &mut cursors).await;
    for channel in channels {
        let a = &attached[channel];
        assert_eq!(position(&a["position"]), (0, 0), "fresh channels: {a}");
        assert_eq!(a["resumed"], false);
    }
    wait_metric(addr, "tern_edge_sse_connections_open", 1).await;

    let a1 = publish(addr, "news:a", &["a1", "a2", "a3"]).await;
    let b1 = publish(addr, "news:b", &["b1", "b2"]).await;
    let got = messages(&mut sse, &channels, &mut cursors, 5).await;
    let of = |channel: &str, got: &[(String, (u64, u64), String)]| -> Vec<((u64, u64), String)> {
        got.iter()
            .filter(|(c, _, _)| c == channel)
            .map(|(_, p, d)| (*p, d.clone()))
            .collect()
    };
    assert_eq!(
        of("news:a", &got),
        a1.iter()
            .zip(["a1", "a2", "a3"])
            .map(|(p, d)| (*p, d.to_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        of("news:b", &got),
        b1.iter()
            .zip(["b1", "b2"])
            .map(|(p, d)| (*p, d.to_owned()))
            .collect::<Vec<_>>()
    );
    let last_id = id_of(&cursors);

    // The client goes away; the edge notices and lets the channels go.
    drop(sse);
    wait_metric(addr, "tern_edge_sse_connections_open", 0).await;
    let a2 = publish(addr, "news:a", &["a4", "a5"]).await;
    let b2 = publish(addr, "news:b", &["b3"]).await;
    let b3 = publish(addr, "news:b", &["b4", "b5"]).await;

    let mut sse = SseReader::get(addr, &path, &[("Last-Event-ID", &last_id)]).await;
    assert_eq!(sse.status, 200);
    let before = cursors;
    let (attached, missed) = events(&mut sse, &channels, &mut cursors, true, 5).await;
    for (i, channel) in channels.iter().enumerate() {
        let a = &attached[*channel];
        assert_eq!(a["resumed"], true, "{a}");
        assert!(a.get("error").is_none(), "{a}");
        assert_eq!(Some(position(&a["position"])), before[i]);
    }
    assert_eq!(
        of("news:a", &missed),
        a2.iter()
            .zip(["a4", "a5"])
            .map(|(p, d)| (*p, d.to_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        of("news:b", &missed),
        b2.iter()
            .chain(&b3)
            .zip(["b3", "b4", "b5"])
            .map(|(p, d)| (*p, d.to_owned()))
            .collect::<Vec<_>>()
    );
    // Nothing more than the missed ones: the next messages are the sentinels.
    publish(addr, "news:a", &["end-a"]).await;
    publish(addr, "news:b", &["end-b"]).await;
    let tail = messages(&mut sse, &channels, &mut cursors, 2).await;
    let mut texts: Vec<&str> = tail.iter().map(|(_, _, d)| d.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(texts, ["end-a", "end-b"]);
    drop(sse);

    // A page that saved the id resumes with the query parameter.
    let saved = id_of(&cursors);
    let path = sse_path(
        "news:a,news:b",
        ADMIN_KEY,
        &format!("&last_event_id={saved}"),
    );
    publish(addr, "news:b", &["while-away"]).await;
    let mut sse = SseReader::get(addr, &path, &[]).await;
    let (attached, got) = events(&mut sse, &channels, &mut cursors, true, 1).await;
    assert!(attached.values().all(|a| a["resumed"] == true));
    assert_eq!(got[0].0, "news:b");
    assert_eq!(got[0].2, "while-away");
}

/// A last event id whose positions retention removed: `attached` with
/// `ContinuityLost` naming the position before the first stored message, then every
/// stored message from there. Never a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_after_retention_says_continuity_lost_with_the_position() {
    let mut store = StoreConfig {
        segment_bytes: 64 * 1024,
        checkpoint_bytes: 64 * 1024,
        ..StoreConfig::default()
    };
    store.retention.max_age = None;
    store.retention.max_bytes = Some(128 * 1024);
    let cluster = Cluster::with(
        support::LogNode::with_store(store).await,
        EdgeLimitsConfig::default(),
    )
    .await;
    let addr = cluster.addr();
    let payload = "x".repeat(8 * 1024);
    let mut stored = Vec::new();
    for _ in 0..8 {
        let batch = [payload.as_str(); 5];
        stored.extend(publish(addr, "trimmed", &batch).await);
    }
    let log = cluster.log.store.clone().expect("the log is serving");
    let report = log.enforce_retention().await.expect("retention");
    assert!(report.segments_removed > 0, "{report:?}");
    let info = log
        .channel_info(&ChannelName::parse("trimmed").expect("name"))
        .await
        .expect("channel info");
    let first = info.first_serial.expect("something is kept").get();
    assert!(first > 2, "retention removed the first messages");
    let epoch = stored[0].0;

    // Resume from serial 1 (removed), next to a fresh channel resumed from 0:0.
    let channels = ["trimmed", "fresh"];
    let path = sse_path("trimmed,fresh", ADMIN_KEY, "");
    let last_id = format!("{epoch}:1,0:0");
    let mut sse = SseReader::get(addr, &path, &[("Last-Event-ID", &last_id)]).await;
    assert_eq!(sse.status, 200);
    let mut cursors = [Some((epoch, 1)), Some((0, 0))];
    let total = stored.len();
    let first_index = usize::try_from(first - 1).expect("small");
    let (attached, got) =
        events(&mut sse, &channels, &mut cursors, true, total - first_index).await;
    let lost = &attached["trimmed"];
    assert_eq!(lost["resumed"], false);
    assert_eq!(lost["error"]["code"], 41000, "never a silent gap: {lost}");
    assert_eq!(position(&lost["position"]), (epoch, first - 1));
    let fresh = &attached["fresh"];
    assert_eq!(fresh["resumed"], true, "0:0 on an empty channel: {fresh}");
    let serials: Vec<u64> = got.iter().map(|(_, p, _)| p.1).collect();
    let expected: Vec<u64> = (first..=u64::try_from(total).expect("small")).collect();
    assert_eq!(serials, expected);
}

/// Errors before the stream: the HTTP status and a JSON ErrorInfo, readable from any
/// origin; preflights are answered.
#[tokio::test]
async fn refusals_before_the_stream_are_http_errors_with_json() {
    let cluster = Cluster::start().await;
    let addr = cluster.addr();
    // (path, headers, HTTP status, error code)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, u64);
    let cases: [Case<'_>; 9] = [
        ("/v1/sse?channels=news:a".into(), vec![], 401, 40100),
        (
            sse_path("news:a", "app.admin:wrong-secret-0123456789", ""),
            vec![],
            401,
            40101,
        ),
        (
            "/v1/sse?channels=news:a".into(),
            vec![("Authorization", "Basic !!")],
            401,
            40101,
        ),
        (
            sse_path("news:a,chat:b", LIMITED_KEY, ""),
            vec![],
            403,
            40300,
        ),
        (format!("/v1/sse?key={ADMIN_KEY}"), vec![], 400, 40003),
        (
            sse_path("news:a,$system", ADMIN_KEY, ""),
            vec![],
            400,
            40002,
        ),
        (sse_path("news:a,news:a", ADMIN_KEY, ""), vec![], 400, 40003),
        (
            sse_path("news:a,news:b", ADMIN_KEY, ""),
            vec![("Last-Event-ID", "1:4")],
            400,
            40003,
        ),
        (
            sse_path("news:a", ADMIN_KEY, "&last_event_id=1:0"),
            vec![],
            400,
            40003,
        ),
    ];
    for (path, headers, status, code) in cases {
        let mut answer = SseReader::get(addr, &path, &headers).await;
        assert_eq!(answer.status, status, "{path}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
        let body = answer.json().await;
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    // The limited key may subscribe to news:*: allowed.
    let ok = SseReader::get(addr, &sse_path("news:x", LIMITED_KEY, ""), &[]).await;
    assert_eq!(ok.status, 200);
    drop(ok);

    let mut post = SseReader::request(addr, "POST", "/v1/sse?channels=a", &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, OPTIONS"));
    assert_eq!(post.json().await["error"]["code"], 40500);

    // CORS: preflights of the SSE and channel routes, and the channel routes' answers.
    for path in ["/v1/sse", "/v1/channels/news:a/messages"] {
        let preflight = SseReader::request(
            addr,
            "OPTIONS",
            path,
            &[
                ("Origin", "http://page.example"),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "last-event-id"),
            ],
        )
        .await;
        assert_eq!(preflight.status, 204, "{path}");
        assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
        let allowed = preflight
            .header("access-control-allow-headers")
            .expect("allowed headers")
            .to_ascii_lowercase();
        assert!(allowed.contains("last-event-id") && allowed.contains("authorization"));
        assert!(
            preflight
                .header("access-control-allow-methods")
                .is_some_and(|m| m.contains("GET"))
        );
    }
    let auth = format!("Bearer {ADMIN_KEY}");
    let mut history = SseReader::get(
        addr,
        "/v1/channels/news:a/messages",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(history.status, 200);
    assert_eq!(history.header("access-control-allow-origin"), Some("*"));
    let forbidden = SseReader::get(
        addr,
        "/v1/channels/news:a/messages",
        &[("Authorization", &format!("Bearer {LIMITED_KEY}"))],
    )
    .await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.header("access-control-allow-origin"), Some("*"));
    assert!(history.json().await["messages"].is_array());
}

/// A stream that stops reading overflows its outbox: `event: disconnected`
/// (SlowConsumer, retry) after the events it had, then the body ends; resuming from
/// its last id delivers every later message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_is_disconnected_and_resumes_losing_nothing() {
    let cluster = Cluster::with_limits(EdgeLimitsConfig {
        outbound_queue_bytes: 256 * 1024,
        ..EdgeLimitsConfig::default()
    })
    .await;
    let addr = cluster.addr();
    let channels = ["flood"];
    let path = sse_path("flood", ADMIN_KEY, "");
    let mut sse = SseReader::get(addr, &path, &[]).await;
    let mut cursors = [None];
    attached_all(&mut sse, &channels, &mut cursors).await;
    // 80 × 25 × 8 KiB = 16 MiB: more than the kernel buffers and the outbox hold.
    let payload = "p".repeat(8 * 1024);
    let batch = [payload.as_str(); 25];
    let mut last = (0, 0);
    for _ in 0..80 {
        last = *publish(addr, "flood", &batch)
            .await
            .last()
            .expect("positions");
    }
    let total = last.1;
    let mut serial = 0;
    let disconnected = loop {
        match sse.next_event().await {
            Item::Event { event, id, data } if event == "message" => {
                let data: Value = serde_json::from_str(&data).expect("JSON");
                let at = position(&data["position"]);
                serial += 1;
                assert_eq!(at.1, serial, "in order, no gap");
                cursors[0] = Some(at);
                assert_eq!(id, Some(id_of(&cursors)));
            }
            Item::Event { event, data, .. } if event == "disconnected" => {
                break serde_json::from_str::<Value>(&data).expect("JSON");
            }
            other => panic!("after {serial} messages: {other:?}"),
        }
    };
    assert_eq!(disconnected["type"], "DISCONNECTED");
    assert_eq!(disconnected["error"]["code"], 42910);
    assert_eq!(disconnected["reconnect"], "retry");
    assert!(serial < total, "the stuck stream got everything");
    assert_eq!(
        sse.next().await,
        Item::End,
        "the body ends after disconnected"
    );
    wait_metric(addr, "tern_edge_sse_connections_open", 0).await;
    let (_, text) = http(addr, "GET", "/metrics", &[], b"").await;
    assert!(
        text.contains("tern_edge_connections_closed_total{reason=\"slow_consumer\"} 1"),
        "{text}"
    );

    let last_id = id_of(&cursors);
    let mut sse = SseReader::get(addr, &path, &[("Last-Event-ID", &last_id)]).await;
    let rest = usize::try_from(total - serial).expect("small");
    let (attached, got) = events(&mut sse, &channels, &mut cursors, true, rest).await;
    assert_eq!(attached["flood"]["resumed"], true);
    let serials: Vec<u64> = got.iter().map(|(_, p, _)| p.1).collect();
    assert_eq!(serials, ((serial + 1)..=total).collect::<Vec<_>>());
}

/// Heartbeat comments on a quiet stream; a refusal the client should retry
/// (`max_connections`) is a stream with `event: disconnected`, so EventSource comes
/// back; a shutdown ends streams with `ShuttingDown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_connection_limit_and_shutdown() {
    let cluster = Cluster::with_limits(EdgeLimitsConfig {
        max_connections: 1,
        heartbeat_interval: Duration::from_millis(100),
        ..EdgeLimitsConfig::default()
    })
    .await;
    let addr = cluster.addr();
    let path = sse_path("quiet", ADMIN_KEY, "");
    let mut sse = SseReader::get(addr, &path, &[]).await;
    attached_all(&mut sse, &["quiet"], &mut [None]).await;
    match sse.next().await {
        Item::Comment(text) => assert_eq!(text, "heartbeat"),
        other => panic!("{other:?}"),
    }

    let mut refused = SseReader::get(addr, &path, &[]).await;
    assert_eq!(refused.status, 200);
    assert!(matches!(refused.next().await, Item::Retry(_)));
    match refused.next().await {
        Item::Event { event, data, .. } => {
            assert_eq!(event, "disconnected");
            let data: Value = serde_json::from_str(&data).expect("JSON");
            assert_eq!(data["error"]["code"], 42900);
            assert_eq!(data["reconnect"], "retry");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(refused.next().await, Item::End);
    assert_eq!(
        metric(addr, "tern_edge_connections_refused_limit_total").await,
        1
    );

    let Cluster { log, edge } = cluster;
    let stopping = tokio::spawn(edge.shutdown());
    let (event, _, disconnected) = sse.event().await;
    assert_eq!(event, "disconnected");
    assert_eq!(disconnected["error"]["code"], 50301);
    assert_eq!(disconnected["reconnect"], "elsewhere");
    assert_eq!(sse.next().await, Item::End);
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the edge stops in time")
        .expect("shutdown task");
    drop(log);
}
