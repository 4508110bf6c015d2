//! A minimal HTTP/1.1 client over a tokio `TcpStream`, for the edge's admin API.
//!
//! One request per connection (`Connection: close`), a `Content-Length` body, the
//! whole exchange under one timeout, the response read up to [`MAX_RESPONSE_BYTES`].
//! Plain `http://` only: `tern deploy` talks to an edge on the operator's own network
//! (or `tern dev` on loopback); TLS, redirects, keep-alive and proxies are not here.
//!
//! ```text
//! Endpoint::parse("http://127.0.0.1:8080") ─▶ send(endpoint, Request, timeout)
//!        connect ─▶ write head + body ─▶ read to EOF (bounded) ─▶ parse ─▶ Response
//! ```

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Largest response accepted, head and body together.
const MAX_RESPONSE_BYTES: u64 = 8 << 20;

/// Where the edge listens: `http://host:port` (port 80 when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parses `http://host[:port][/]` or a bare `host:port`.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => bail!(
                "edge URL {url:?}: only http:// is supported (not {scheme}://); \
                 reach a TLS edge through a local tunnel"
            ),
            None => url,
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            bail!("edge URL {url:?}: expected http://host:port");
        }
        let (host, port) = match authority.rsplit_once(':') {
            // `[::1]:8080`, `[::1]`, `host:8080`; a bare IPv6 address needs brackets.
            Some((host, port)) if !port.contains(']') => {
                let port = port
                    .parse()
                    .with_context(|| format!("edge URL {url:?}: bad port {port:?}"))?;
                (host, port)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            bail!("edge URL {url:?}: no host");
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The `Host` header's value.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority())
    }
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// `GET`, `POST`, `DELETE`.
    pub(crate) method: &'a str,
    /// Path and query, starting with `/`.
    pub(crate) path: &'a str,
    /// Sent as `Authorization: Bearer …` when present.
    pub(crate) bearer: Option<&'a str>,
    /// A JSON body (`Content-Type: application/json`), or none.
    pub(crate) json: Option<&'a [u8]>,
}

/// A response: its status and body (de-chunked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// The body.
    pub(crate) body: Vec<u8>,
}

/// Why [`send`] failed.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// Nothing listens there, or the address does not resolve.
    Unreachable(std::io::Error),
    /// No complete answer within the timeout.
    TimedOut(Duration),
    /// The connection broke, or the answer is not HTTP/1.x.
    Broken(anyhow::Error),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Unreachable(error) => write!(f, "cannot connect: {error}"),
            HttpError::TimedOut(timeout) => {
                write!(f, "no answer within {} s", timeout.as_secs_f64())
            }
            HttpError::Broken(error) => write!(f, "{error:#}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Sends `request` to `endpoint` and reads the whole answer, all within `timeout`.
pub(crate) async fn send(
    endpoint: &Endpoint,
    request: Request<'_>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let exchange = async {
        let mut stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(HttpError::Unreachable)?;
        stream
            .write_all(&head(endpoint, &request))
            .await
            .map_err(|e| HttpError::Broken(anyhow::Error::new(e).context("sending the request")))?;
        if let Some(body) = request.json {
            stream.write_all(body).await.map_err(|e| {
                HttpError::Broken(anyhow::Error::new(e).context("sending the body"))
            })?;
        }
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| HttpError::Broken(anyhow::Error::new(e).context("reading the answer")))?;
        if raw.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(HttpError::Broken(anyhow::anyhow!(
                "the answer is larger than {} MiB",
                MAX_RESPONSE_BYTES >> 20
            )));
        }
        parse_response(&raw).map_err(HttpError::Broken)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(HttpError::TimedOut(timeout)))
}

/// The request line and headers.
fn head(endpoint: &Endpoint, request: &Request<'_>) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: tern/{}\r\n",
        request.method,
        request.path,
        endpoint.authority(),
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(key) = request.bearer {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    let length = request.json.map_or(0, <[u8]>::len);
    if request.json.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    head.into_bytes()
}

/// Parses a whole HTTP/1.x response (read until the server closed).
fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let end = memchr::memmem::find(raw, b"\r\n\r\n")
        .context("the answer ended before its headers did (not an HTTP server?)")?;
    let head = std::str::from_utf8(&raw[..end]).context("the answer's headers are not text")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>().as_slice() {
        [version, code, ..] if version.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .ok()
            .filter(|code| (100..600).contains(code)),
        _ => None,
    }
    .with_context(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("malformed header line {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        rest.get(..length)
            .with_context(|| {
                format!(
                    "the answer ended after {} of its {length} body bytes",
                    rest.len()
                )
            })?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// Decodes a `Transfer-Encoding: chunked` body (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end =
            memchr::memmem::find(rest, b"\r\n").context("a chunk header is cut short")?;
        let line = std::str::from_utf8(&rest[..line_end]).context("a chunk header is not text")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..size)
            .context("the answer ended inside a chunk")?;
        body.extend_from_slice(chunk);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .context("a chunk is not followed by CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let ok = |url: &str, host: &str, port: u16| {
            assert_eq!(
                Endpoint::parse(url).ok(),
                Some(Endpoint {
                    host: host.to_owned(),
                    port
                }),
                "{url}"
            );
        };
        ok("http://127.0.0.1:8080", "127.0.0.1", 8080);
        ok("http://127.0.0.1:8080/", "127.0.0.1", 8080);
        ok("localhost:9000", "localhost", 9000);
        ok("http://edge.internal", "edge.internal", 80);
        ok("http://[::1]:8080", "::1", 8080);
        ok("[::1]", "::1", 80);
        for bad in [
            "https://x:1",
            "http://",
            "http://x:port",
            "http://x:1/v1",
            "http://u@x:1",
            "http://:80",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(
            Endpoint::parse("[::1]:7").map(|e| e.to_string()).ok(),
            Some("http://[::1]:7".to_owned())
        );
    }

    #[test]
    fn heads_carry_length_auth_and_close() {
        let endpoint = Endpoint::parse("127.0.0.1:1").expect("valid");
        let head = head(
            &endpoint,
            &Request {
                method: "POST",
                path: "/v1/admin/functions/f",
                bearer: Some("ops.k:secret"),
                json: Some(b"{}"),
            },
        );
        let text = String::from_utf8(head).expect("ascii");
        assert!(text.starts_with("POST /v1/admin/functions/f HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        for line in [
            "Connection: close\r\n",
            "Authorization: Bearer ops.k:secret\r\n",
            "Content-Type: application/json\r\n",
            "Content-Length: 2\r\n\r\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from {text:?}");
        }
    }

    #[test]
    fn responses_parse_with_length_chunks_or_eof() {
        let sized = parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}extra")
            .expect("valid");
        assert_eq!((sized.status, sized.body.as_slice()), (201, &b"{}"[..]));
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .expect("valid");
        assert_eq!(
            (chunked.status, chunked.body.as_slice()),
            (200, &b"abcde"[..])
        );
        let to_eof = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").expect("valid");
        assert_eq!((to_eof.status, to_eof.body.as_slice()), (404, &b"nope"[..]));
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let endpoint = Endpoint::parse(&addr.to_string()).expect("valid");
        let get = Request {
            method: "GET",
            path: "/",
            bearer: None,
            json: None,
        };
        let refused = send(&endpoint, get, Duration::from_secs(5)).await;
        assert!(
            matches!(refused, Err(HttpError::Unreachable(_))),
            "{refused:?}"
        );

        // Accepts, never answers: the exchange's timeout ends the wait.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint =
            Endpoint::parse(&silent.local_addr().expect("addr").to_string()).expect("valid");
        let held = tokio::spawn(async move { silent.accept().await.map(|(s, _)| s) });
        let timed_out = send(&endpoint, get, Duration::from_millis(200)).await;
        assert!(
            matches!(timed_out, Err(HttpError::TimedOut(_))),
            "{timed_out:?}"
        );
        drop(held);
    }

    #[tokio::test]
    async fn a_real_exchange_round_trips() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint =
            Endpoint::parse(&listener.local_addr().expect("addr").to_string()).expect("valid");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"\r\n\r\nping") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "the client closed early");
                seen.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong")
                .await
                .expect("write");
            seen
        });
        let response = send(
            &endpoint,
            Request {
                method: "POST",
                path: "/x",
                bearer: None,
                json: Some(b"ping"),
            },
            Duration::from_secs(10),
        )
        .await
        .expect("answered");
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"pong"[..])
        );
        let seen = server.await.expect("server task");
        assert!(seen.starts_with(b"POST /x HTTP/1.1\r\n"));
    }
}
