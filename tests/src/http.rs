//! [`get`]: a minimal HTTP/1.1 GET over loopback, enough for an edge's `/metrics`,
//! `/readyz` and REST history in tests (no client library: one request per
//! connection, `Connection: close`, a `Content-Length` or chunked body).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes of one response read.
const MAX_RESPONSE: u64 = 16 << 20;
/// How long one request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP response: its status and body (as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, decoded from chunks when it was chunked.
    pub body: String,
}

/// `GET path` on `addr`, with `Authorization: Bearer KEY` when `key` is given.
pub async fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> anyhow::Result<Response> {
    tokio::time::timeout(TIMEOUT, request(addr, path, key))
        .await
        .with_context(|| format!("GET {path} on {addr} took over {TIMEOUT:?}"))?
}

/// The value of the sample `name` (a metric name with its labels, as rendered:
/// `tern_edge_connections_closed_total{reason="slow_consumer"}`) in Prometheus text,
/// or 0 when it is absent.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

async fn request(addr: SocketAddr, path: &str, key: Option<&str>) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).context("a response that is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("a response without a blank line after its head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok(Response { status, body })
}

/// The body of a chunked transfer.
fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .context("a chunk without its size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("a chunk size {size:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        let Some(chunk) = after.get(..size) else {
            bail!("a chunk cut short");
        };
        body.push_str(chunk);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_metrics_are_read() {
        assert_eq!(
            dechunk("5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n")
                .ok()
                .as_deref(),
            Some("hello!")
        );
        assert!(dechunk("9\r\nshort\r\n").is_err());
        let text =
            "# TYPE a counter\na_total{reason=\"slow\"} 3\na_total{reason=\"client\"} 9\nb 7\n";
        assert_eq!(metric(text, "a_total{reason=\"slow\"}"), 3);
        assert_eq!(metric(text, "b"), 7);
        assert_eq!(metric(text, "c"), 0);
    }
}
