//! Opening a benchmark WebSocket: the URL forms accepted, the TCP connection and the
//! client handshake, bounded in time and in what it buffers.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// A benchmark connection.
pub(super) type Ws = WebSocketStream<TcpStream>;

/// Longest a TCP connect plus WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest WebSocket message a benchmark client accepts (a frame of the workload is
/// far smaller; this only bounds what a misbehaving server can make it buffer).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Bytes read from the socket at a time. tungstenite allocates this per connection
/// up front and zeroes it before every read attempt: its 128 KiB default would cost
/// gigabytes over 20,000 connections, and the zeroing would dominate the load
/// generator's profile under fan-out (deliveries of a few hundred bytes each).
const READ_BUFFER_BYTES: usize = 4 << 10;

/// A `ws://` endpoint: where to connect and what to ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WsUrl {
    /// `host:port` as written.
    pub(super) authority: String,
    /// The request path, with its query.
    pub(super) path: String,
}

impl WsUrl {
    /// Parses `ws://host:port[/path]` or `http://host:port[/path]`; a missing path
    /// becomes `default_path`. TLS (`wss`, `https`) is not supported.
    pub(super) fn parse(text: &str, default_path: &str) -> anyhow::Result<Self> {
        let rest = ["ws://", "http://"]
            .iter()
            .find_map(|scheme| text.strip_prefix(scheme))
            .with_context(|| {
                format!("URL {text:?}: expected ws://HOST:PORT[/PATH] or http://HOST:PORT[/PATH]")
            })?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if authority.is_empty() || !authority.contains(':') {
            bail!("URL {text:?}: expected an explicit HOST:PORT");
        }
        let path = if path.is_empty() || path == "/" {
            default_path
        } else {
            path
        };
        Ok(Self {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The URL of a server listening on `addr`.
    pub(super) fn for_addr(addr: SocketAddr, path: &str) -> Self {
        Self {
            authority: addr.to_string(),
            path: path.to_owned(),
        }
    }

    /// As a `ws://` URL.
    pub(super) fn url(&self) -> String {
        format!("ws://{}{}", self.authority, self.path)
    }

    /// The address connected to.
    pub(super) async fn resolve(&self) -> anyhow::Result<SocketAddr> {
        tokio::net::lookup_host(&self.authority)
            .await
            .with_context(|| format!("cannot resolve {}", self.authority))?
            .next()
            .with_context(|| format!("{} resolves to no address", self.authority))
    }
}

/// Connects to `addr` and performs the client handshake for `url`, asking for
/// `subprotocol` when given (the handshake then fails unless the server picks it).
pub(super) async fn open(
    addr: SocketAddr,
    url: &WsUrl,
    subprotocol: Option<&'static str>,
) -> anyhow::Result<Ws> {
    let connect = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
        let mut request = url
            .url()
            .into_client_request()
            .with_context(|| format!("bad WebSocket URL {}", url.url()))?;
        if let Some(name) = subprotocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(name));
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let (ws, _response) = client_async_with_config(request, stream, Some(config))
            .await
            .with_context(|| format!("WebSocket handshake with {} failed", url.url()))?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
        .await
        .with_context(|| {
            format!(
                "no WebSocket session with {} within {HANDSHAKE_TIMEOUT:?}",
                url.url()
            )
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let edge = WsUrl::parse("http://127.0.0.1:8080", "/v1/ws").expect("parses");
        assert_eq!(edge.url(), "ws://127.0.0.1:8080/v1/ws");
        let explicit = WsUrl::parse("ws://localhost:9/v1/ws?format=json", "/x").expect("parses");
        assert_eq!(explicit.authority, "localhost:9");
        assert_eq!(explicit.path, "/v1/ws?format=json");
        assert_eq!(
            WsUrl::parse("ws://h:1/", "/v1/ws").expect("parses").path,
            "/v1/ws"
        );
        for bad in [
            "127.0.0.1:8080",
            "wss://h:1/",
            "ws://hostonly/",
            "ws:///v1/ws",
        ] {
            assert!(WsUrl::parse(bad, "/").is_err(), "{bad}");
        }
    }
}
