//! The client's configuration and the check of its URL.

use std::net::SocketAddr;
use std::time::Duration;

use tern_protocol::Format;

use crate::error::ClientError;
use crate::recovery::Recovery;

/// Where the client asks for the addresses of an edge's name.
///
/// Names are resolved in the client, with hickory-resolver, never with the
/// system's `getaddrinfo`: A and AAAA together, answers cached for as long as their
/// TTL says (so a DNS failover with a short TTL is followed on the next connection
/// attempt), one resolver and cache per [`Client`](crate::Client). An IP address in
/// the URL is used as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolver {
    /// The system's name servers, search domains and options from
    /// `/etc/resolv.conf`, and names from `/etc/hosts`. When `/etc/resolv.conf` is
    /// missing, unreadable or names no server, the name server on this machine
    /// (`127.0.0.1:53` and `[::1]:53`) is asked, as the C library does. The default.
    #[default]
    System,
    /// These name servers (`ip:port`), over UDP, TCP for a truncated answer; no
    /// search domains, no `/etc/hosts`.
    Servers(Vec<SocketAddr>),
}

/// How to connect. Start from [`ClientConfig::new`] and change what you need.
///
/// Which edge is dialled: the primary `url` first, then the `fallback_urls` in a
/// random order (each once per round), with jittered exponential backoff between
/// attempts once connected (the very first connection tries every URL once, at
/// once, and fails only when none answered). After a connection is made, the URL
/// that worked goes first next time — a fallback only for `fallback_retry`, after
/// which the primary is tried first again; an edge that said "reconnect elsewhere"
/// goes last. Each attempt resolves the URL's host with [`resolver`](Self::resolver)
/// (A and AAAA) and opens TCP to the addresses one after the other, IPv6 and IPv4
/// interleaved; a name that does not resolve, or whose addresses do not answer,
/// fails that attempt and the next URL is tried.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The edge: `ws://host:port` (the path defaults to `/v1/ws`), or the edge's
    /// `http://host:port` address, which means the same. TLS (`wss://`, `https://`)
    /// is not supported yet.
    pub url: String,
    /// Edges to try when `url` cannot be reached (another domain, another POP), in a
    /// random order after it; the same forms as `url`. Default none.
    pub fallback_urls: Vec<String>,
    /// How long a fallback URL that connected keeps being tried first, before the
    /// primary gets another chance (default 10 minutes). A connection in use is never
    /// moved for this; it decides where the next one is dialled.
    pub fallback_retry: Duration,
    /// Where host names are resolved (default [`Resolver::System`]).
    pub resolver: Resolver,
    /// A recovery key saved from [`Client::recovery_key`](crate::Client::recovery_key)
    /// by an earlier run: the first connection resumes that one, and attaching one of
    /// its channels with `AttachFrom::Now` continues where it left off. Default none.
    pub recovery_key: Option<String>,
    /// The API key, `app.keyid:secret`.
    pub key: Option<String>,
    /// An identity for this client, stamped by the server on its messages.
    pub client_id: Option<String>,
    /// The encoding: JSON (default) or MessagePack.
    pub format: Format,
    /// The first reconnect backoff (default 100 ms); doubles per failed attempt.
    pub reconnect_min: Duration,
    /// The longest reconnect backoff (default 10 s).
    pub reconnect_max: Duration,
    /// How long connecting, attaching and publishing may wait for an answer
    /// (default 15 s). Opening a transport — resolving, TCP and the WebSocket
    /// handshake — may take this long, and so may the CONNECTED that follows; an
    /// address that does not answer gets a quarter of it while the name has other
    /// addresses to try.
    pub request_timeout: Duration,
    /// Events buffered per channel stream before the channel is paused (default 1024).
    pub channel_buffer: usize,
    /// Publishes waiting for an answer at once before `publish` refuses more
    /// (default 10,000).
    pub max_pending_publishes: usize,
    /// The largest WebSocket message accepted from the server, in bytes (default 16 MiB).
    pub max_message_bytes: usize,
    /// The heartbeat interval to ask the server for (CONNECT
    /// `heartbeat_interval_ms`): longer saves a phone's battery and radio, shorter
    /// notices a dead connection sooner (after about two intervals of silence). The
    /// server answers the nearest interval it allows, and the client uses that.
    /// Default none: the server's default.
    pub heartbeat_interval: Option<Duration>,
}

impl ClientConfig {
    /// A configuration with the defaults for `url` and `key`.
    pub fn new(url: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            fallback_urls: Vec::new(),
            fallback_retry: Duration::from_secs(600),
            resolver: Resolver::System,
            recovery_key: None,
            key: Some(key.into()),
            client_id: None,
            format: Format::Json,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            channel_buffer: 1024,
            max_pending_publishes: 10_000,
            max_message_bytes: 16 << 20,
            heartbeat_interval: None,
        }
    }

    /// Sets the fallback URLs.
    pub fn fallback_urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fallback_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Sets how long a fallback URL that worked keeps going first (see
    /// [`fallback_retry`](Self::fallback_retry)).
    pub fn fallback_retry(mut self, retry: Duration) -> Self {
        self.fallback_retry = retry;
        self
    }

    /// Sets where host names are resolved (see [`Resolver`]).
    pub fn resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Resumes the connection saved as `recovery_key` (see
    /// [`Client::recovery_key`](crate::Client::recovery_key)).
    pub fn recover(mut self, recovery_key: impl Into<String>) -> Self {
        self.recovery_key = Some(recovery_key.into());
        self
    }

    /// Sets the client id.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Sets the encoding.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Asks the server for this heartbeat interval (see
    /// [`heartbeat_interval`](Self::heartbeat_interval)).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// Sets the reconnect backoff bounds.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// Sets the request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Checks every field; returns the WebSocket URLs to connect to (the primary
    /// first) and the recovered connection, if any.
    pub(crate) fn validate(&self) -> Result<(Vec<String>, Option<Recovery>), ClientError> {
        let mut problems = Vec::new();
        let urls: Vec<String> = std::iter::once(&self.url)
            .chain(&self.fallback_urls)
            .filter_map(|url| websocket_url(url).map_err(|e| problems.push(e)).ok())
            .collect();
        let recovered = self
            .recovery_key
            .as_deref()
            .and_then(|key| Recovery::decode(key).map_err(|e| problems.push(e)).ok());
        if self.reconnect_min.is_zero() {
            problems.push("reconnect_min must be above zero".to_owned());
        }
        if self.reconnect_max < self.reconnect_min {
            problems.push("reconnect_max must be at least reconnect_min".to_owned());
        }
        if self.request_timeout.is_zero() {
            problems.push("request_timeout must be above zero".to_owned());
        }
        if self.channel_buffer < 2 {
            problems.push("channel_buffer must be at least 2".to_owned());
        }
        if self.max_pending_publishes == 0 {
            problems.push("max_pending_publishes must be above zero".to_owned());
        }
        if self.max_message_bytes < 1024 {
            problems.push("max_message_bytes must be at least 1024".to_owned());
        }
        if self.resolver == Resolver::Servers(Vec::new()) {
            problems.push("resolver: Servers needs at least one name server".to_owned());
        }
        if problems.is_empty() {
            Ok((urls, recovered))
        } else {
            Err(ClientError::Config(problems.join("; ")))
        }
    }
}

/// The WebSocket URL for `url`: `http` becomes `ws`, an empty path becomes `/v1/ws`.
fn websocket_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("url {url:?} has no scheme (expected ws://host:port)"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => {}
        "wss" | "https" => {
            return Err(format!(
                "url {url:?}: TLS is not supported by this client yet; use ws://"
            ));
        }
        other => return Err(format!("url {url:?}: unsupported scheme {other:?}")),
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "url {url:?}: expected a host and port, without user info"
        ));
    }
    let path = if path.is_empty() || path == "/" {
        "/v1/ws"
    } else {
        path
    };
    Ok(format!("ws://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_or_refused() {
        for (given, expected) in [
            ("ws://127.0.0.1:8080", "ws://127.0.0.1:8080/v1/ws"),
            ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/v1/ws"),
            ("WS://h:1/v1/ws?format=json", "ws://h:1/v1/ws?format=json"),
            ("ws://h:1/custom", "ws://h:1/custom"),
        ] {
            assert_eq!(websocket_url(given).as_deref(), Ok(expected), "{given}");
        }
        for bad in [
            "127.0.0.1:8080",
            "wss://h:1",
            "https://h",
            "ftp://h",
            "ws://",
            "ws://u@h:1",
        ] {
            assert!(websocket_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut config = ClientConfig::new("wss://h:1", "app.k:s")
            .fallback_urls(["ws://ok:1", "ftp://fallback"])
            .recover("%%%");
        config.request_timeout = Duration::ZERO;
        config.channel_buffer = 0;
        config.resolver = Resolver::Servers(Vec::new());
        let Err(ClientError::Config(text)) = config.validate() else {
            panic!("accepted");
        };
        assert!(
            text.contains("TLS")
                && text.contains("ftp")
                && text.contains("recovery key")
                && text.contains("request_timeout")
                && text.contains("channel_buffer")
                && text.contains("name server"),
            "{text}"
        );
        let (urls, recovered) = ClientConfig::new("ws://a:1", "k")
            .fallback_urls(["http://b:2"])
            .validate()
            .expect("valid");
        assert_eq!(urls, vec!["ws://a:1/v1/ws", "ws://b:2/v1/ws"]);
        assert_eq!(recovered, None);
        assert!(
            ClientConfig::new("ws://127.0.0.1:1", "k")
                .validate()
                .is_ok()
        );
    }
}
