//! A real browser's `EventSource` against the edge's SSE transport (docs/protocol.md
//! §12.3): headless Chromium loads a page from another origin, subscribes to two
//! channels of `tern dev`, and reports every event it dispatches back to the test. The
//! test cuts the browser's connection, kills `tern dev` and starts it again on the same
//! data, publishing all along; the browser must resume by itself with `Last-Event-ID`
//! and get every message once, in order.
//!
//! ```text
//!  chromium ──GET / ─────────────────────▶ page server (this test)  ◀── POST /report (every event)
//!      └──── EventSource /v1/sse ──▶ proxy (this test: cut, hold, record requests) ──▶ tern dev
//!  test ──POST /v1/channels/…/messages ───────────────────────────────────────────────▶ tern dev
//! ```
//!
//! Skipped, with a message, when `chromium` is not installed (`scripts/setup.sh`
//! installs it). Every wait is bounded; Chromium is killed by its process group.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tern_tests::DevProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Longest wait for one step (a browser start, a reconnection, a batch of events) on a
/// loaded 2-core machine. A bound, not a timing assertion.
const WAIT: Duration = Duration::from_secs(90);
/// Most bytes of one request the page server reads.
const MAX_REQUEST: usize = 64 * 1024;

/// `chromium` on the PATH, if any.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
}

/// Headless Chromium in a process group of its own, killed (the whole group) on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(binary: &Path, url: &str) -> anyhow::Result<Browser> {
        use std::os::unix::process::CommandExt as _;
        let profile = tempfile::tempdir()?;
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting chromium")?;
        Ok(Browser {
            child,
            _profile: profile,
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this test created for Chromium
            // (`process_group(0)` makes its id the child's pid); no memory is involved.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of the edge: it records the head of every request, can cut
/// every connection, and holds new ones until it is opened again.
struct Proxy {
    addr: SocketAddr,
    upstream: watch::Sender<SocketAddr>,
    open: watch::Sender<bool>,
    /// Bumped to cut the connections of earlier generations.
    generation: watch::Sender<u64>,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (upstream, upstream_rx) = watch::channel(upstream);
        let (open, open_rx) = watch::channel(true);
        let (generation, generation_rx) = watch::channel(0u64);
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream_rx.clone();
                let mut open = open_rx.clone();
                let cut = generation_rx.clone();
                let heads = Arc::clone(&recorded);
                tokio::spawn(async move {
                    // Held until the proxy is open.
                    if open.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    let target = *upstream.borrow();
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    pipe(client, server, cut, heads).await;
                });
            }
        });
        Ok(Proxy {
            addr,
            upstream,
            open,
            generation,
            heads,
            task,
        })
    }

    /// Drops every connection and holds new ones.
    fn cut(&self) {
        self.open.send_replace(false);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards held and new connections to `upstream`.
    fn reopen(&self, upstream: SocketAddr) {
        self.upstream.send_replace(upstream);
        self.open.send_replace(true);
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways until either side ends or the generation changes; records the
/// request head (request line and headers) the client sends first.
async fn pipe(
    client: TcpStream,
    server: TcpStream,
    mut cut: watch::Receiver<u64>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let born = *cut.borrow_and_update();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut head = Vec::new();
        let mut recorded = false;
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !recorded {
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    if let Ok(mut heads) = heads.lock() {
                        heads.push(String::from_utf8_lossy(&head[..end]).into_owned());
                    }
                    recorded = true;
                    head = Vec::new();
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    let cutting = async {
        let _ = cut.wait_for(|g| *g != born).await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
        () = cutting => {}
    }
}

/// The page: an EventSource on `sse_url`, every event POSTed back in order.
fn page(sse_url: &str) -> String {
    format!(
        r#"<!doctype html>
<meta charset="utf-8">
<title>tern SSE</title>
<script>
let seq = 0;
let chain = Promise.resolve();
function report(kind, fields) {{
  const body = JSON.stringify(Object.assign({{ seq: seq++, kind }}, fields));
  chain = chain.then(() => fetch("/report", {{ method: "POST", body }})).catch(() => {{}});
}}
const source = new EventSource({sse_url:?});
source.onopen = () => report("open", {{}});
source.onerror = () => report("error", {{ readyState: source.readyState }});
for (const kind of ["attached", "message", "detached", "disconnected"]) {{
  source.addEventListener(kind, (e) => report(kind, {{ id: e.lastEventId, data: JSON.parse(e.data) }}));
}}
</script>
"#
    )
}

/// Serves the page at `/` and forwards every `POST /report` body (JSON) to `reports`.
async fn serve_page(listener: TcpListener, page: String, reports: mpsc::UnboundedSender<Value>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let page = page.clone();
        let reports = reports.clone();
        tokio::spawn(async move {
            let Ok(Ok((head, body))) = tokio::time::timeout(WAIT, read_request(&mut stream)).await
            else {
                return;
            };
            let answer = if head.starts_with("GET / ") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                )
            } else if head.starts_with("POST /report ") {
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    let _ = reports.send(value);
                }
                "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_owned()
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// One request's head and body (by Content-Length), at most [`MAX_REQUEST`] bytes.
async fn read_request(stream: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            ensure!(length <= MAX_REQUEST, "request body too large");
            while raw.len() < end + 4 + length {
                let n = stream.read(&mut buf).await?;
                ensure!(n > 0, "connection closed in the body");
                raw.extend_from_slice(&buf[..n]);
            }
            return Ok((head, raw[end + 4..end + 4 + length].to_vec()));
        }
        ensure!(raw.len() <= MAX_REQUEST, "request head too large");
        let n = stream.read(&mut buf).await?;
        ensure!(n > 0, "connection closed in the head");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// What the page reported, in order.
struct Reports {
    rx: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
}

impl Reports {
    /// Waits (at most [`WAIT`]) until `done` holds for the reports so far.
    async fn until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(report)) => {
                    let expected = self.seen.len() as u64;
                    ensure!(
                        report["seq"] == json!(expected),
                        "reports out of order: {report} after {} reports",
                        self.seen.len()
                    );
                    self.seen.push(report);
                }
                Ok(None) => bail!("the page server stopped"),
                Err(_) => bail!(
                    "no {what} within {WAIT:?}; the page reported:\n{}",
                    self.seen
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
        Ok(())
    }
}

/// The message texts the page got on `channel`, with their serials.
fn received(reports: &[Value], channel: &str) -> Vec<(u64, String)> {
    reports
        .iter()
        .filter(|r| r["kind"] == "message" && r["data"]["channel"] == channel)
        .map(|r| {
            (
                r["data"]["position"]["serial"].as_u64().unwrap_or(0),
                r["data"]["message"]["data"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

/// One HTTP/1.1 request to `addr`; the status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .context("no answer in time")??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Waits until `tern dev`'s edge is ready (its link to the log is up).
async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok((200, _)) = http(addr, "GET", "/readyz", "", b"").await {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "tern dev not ready within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes `texts` to `channel`, one request each.
async fn publish(addr: SocketAddr, key: &str, channel: &str, texts: &[&str]) -> anyhow::Result<()> {
    for text in texts {
        let body = serde_json::to_vec(&json!({ "id": text, "data": text }))?;
        let (status, answer) = http(
            addr,
            "POST",
            &format!("/v1/channels/{channel}/messages"),
            key,
            &body,
        )
        .await?;
        ensure!(status == 201, "publish {text}: {status} {answer}");
    }
    Ok(())
}

async fn start_dev(dir: &Path) -> anyhow::Result<DevProcess> {
    let dir = dir.to_path_buf();
    let dev = tokio::task::spawn_blocking(move || DevProcess::start(&dir, &[])).await??;
    wait_ready(dev.addr).await?;
    Ok(dev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_event_source_resumes_with_last_event_id() -> anyhow::Result<()> {
    let Some(chromium) = find_chromium() else {
        eprintln!("skipped: chromium is not installed (scripts/setup.sh installs it)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let dev = start_dev(dir.path()).await?;
    let key = dev.key.clone();
    let proxy = Proxy::start(dev.addr).await?;
    let sse_url = format!(
        "http://{}/v1/sse?channels=news:a,news:b&key={key}",
        proxy.addr
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let page_url = format!("http://{}/", listener.local_addr()?);
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let page_server = tokio::spawn(serve_page(listener, page(&sse_url), reports_tx));
    let mut reports = Reports {
        rx: reports_rx,
        seen: Vec::new(),
    };
    let browser = Browser::open(&chromium, &page_url)?;

    // The page (one origin) attaches both channels through the proxy (another origin).
    let attached = |reports: &[Value], n: usize| {
        reports.iter().filter(|r| r["kind"] == "attached").count() >= n
    };
    reports
        .until("attached events for both channels", |r| attached(r, 2))
        .await?;
    let a_first = ["a1", "a2", "a3"];
    let b_first = ["b1", "b2"];
    publish(dev.addr, &key, "news:a", &a_first).await?;
    publish(dev.addr, &key, "news:b", &b_first).await?;
    reports
        .until("the first 5 messages", |r| {
            received(r, "news:a").len() + received(r, "news:b").len() == 5
        })
        .await?;
    let last_id = reports
        .seen
        .iter()
        .rev()
        .find(|r| r["kind"] == "message")
        .and_then(|r| r["id"].as_str())
        .context("an id")?
        .to_owned();

    // Cut the browser's stream, publish, kill tern dev, start it again on the same
    // data, publish more, then let the browser's reconnection through.
    proxy.cut();
    publish(dev.addr, &key, "news:a", &["a4", "a5"]).await?;
    publish(dev.addr, &key, "news:b", &["b3"]).await?;
    drop(dev);
    let dev = start_dev(dir.path()).await?;
    ensure!(dev.key == key, "the restarted tern dev has the same key");
    publish(dev.addr, &key, "news:b", &["b4", "b5"]).await?;
    publish(dev.addr, &key, "news:a", &["a6"]).await?;
    proxy.reopen(dev.addr);
    reports
        .until("a second attached event per channel", |r| attached(r, 4))
        .await?;
    publish(dev.addr, &key, "news:a", &["end-a"]).await?;
    publish(dev.addr, &key, "news:b", &["end-b"]).await?;
    reports
        .until("the last messages", |r| {
            let ends = |channel: &str, end: &str| {
                received(r, channel)
                    .last()
                    .is_some_and(|(_, text)| text == end)
            };
            ends("news:a", "end-a") && ends("news:b", "end-b")
        })
        .await?;

    // Every message once, in order, at serials 1, 2, 3, …
    for (channel, texts) in [
        ("news:a", vec!["a1", "a2", "a3", "a4", "a5", "a6", "end-a"]),
        ("news:b", vec!["b1", "b2", "b3", "b4", "b5", "end-b"]),
    ] {
        let got = received(&reports.seen, channel);
        let expected: Vec<(u64, String)> = texts
            .iter()
            .zip(1u64..)
            .map(|(text, serial)| (serial, (*text).to_owned()))
            .collect();
        ensure!(
            got == expected,
            "{channel}: got {got:?}, expected {expected:?}"
        );
    }
    // The second attach of each channel resumed exactly.
    for report in reports
        .seen
        .iter()
        .filter(|r| r["kind"] == "attached")
        .skip(2)
    {
        ensure!(
            report["data"]["resumed"] == true && report["data"].get("error").is_none(),
            "not resumed: {report}"
        );
    }
    // EventSource came back by itself, sending the id of the last event it had.
    let streams: Vec<String> = proxy
        .heads()
        .into_iter()
        .filter(|head| head.starts_with("GET /v1/sse"))
        .collect();
    ensure!(streams.len() >= 2, "one stream only: {streams:#?}");
    let header = format!("last-event-id: {last_id}");
    ensure!(
        streams[1..]
            .iter()
            .any(|head| head.to_ascii_lowercase().contains(&header)),
        "no reconnection with {header:?}: {streams:#?}"
    );
    ensure!(
        !streams[0].to_ascii_lowercase().contains("last-event-id"),
        "the first request had no id yet"
    );
    drop(browser);
    page_server.abort();
    Ok(())
}
