//! A client of BIRD's control socket (the protocol `birdc` speaks), without `birdc`.
//!
//! One Unix stream connection, opened on first use and kept; each call writes one
//! command line and reads its reply. Every call is bounded by the client's timeout,
//! connecting included. After any failure the connection is dropped (it may be out of
//! step), so the next call starts afresh; a call on a kept connection that BIRD has
//! closed (it restarted) is retried once on a new one, which is safe because every
//! command here is idempotent.
//!
//! ```text
//!   connect ──▶ 0001 BIRD 2.0.12 ready.
//!   "show protocols\n"  ──▶ 2002-… 1002-… ␠… 0000␠      ProtocolStatus rows
//!   "enable \"anycast4\"\n" ──▶ 0011-anycast4: enabled 0000␠   Toggled::Changed
//!   "enable \"nosuch\"\n"   ──▶ 8003 No protocols match        BirdError::NoSuchProtocol
//! ```

mod reply;
mod show;

pub use reply::{
    Code, MAX_LINE_BYTES, MAX_REPLY_BYTES, Reply, ReplyDecoder, ReplyError, ReplyLine,
};
pub use show::{Destination, NextHop, ProtocolState, ProtocolStatus, Route, Toggled};

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest command line sent, newline excluded (BIRD's own limit is larger).
const MAX_COMMAND_BYTES: usize = 1000;
/// Longest protocol name accepted.
const MAX_NAME_CHARS: usize = 64;

/// The name of a BIRD protocol: a plain BIRD symbol (an ASCII letter or `_`, then
/// letters, digits or `_`; at most 64 characters), so it can be put in a command as
/// is and, quoted, matches exactly one protocol (no wildcards).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolName(String);

/// A protocol name that is not a plain BIRD symbol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} is not a BIRD protocol name (a letter or _, then letters, digits or _; at most {MAX_NAME_CHARS})"
)]
pub struct InvalidName {
    /// The refused name.
    pub name: String,
}

impl ProtocolName {
    /// Checks `name`.
    pub fn new(name: impl Into<String>) -> Result<ProtocolName, InvalidName> {
        let name = name.into();
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if first_ok && rest_ok && name.len() <= MAX_NAME_CHARS {
            Ok(ProtocolName(name))
        } else {
            Err(InvalidName { name })
        }
    }

    /// A name written in the source.
    ///
    /// # Panics
    /// When `name` is not a valid name: a bug in the caller's literal.
    pub fn from_static(name: &'static str) -> ProtocolName {
        ProtocolName::new(name).expect("a literal protocol name is a plain BIRD symbol")
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProtocolName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProtocolName::new(s)
    }
}

impl fmt::Display for ProtocolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IP prefix: an address and a length that fits its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Text that is not `address/length`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an IP prefix (address/length)")]
pub struct InvalidPrefix {
    /// The refused text.
    pub text: String,
}

impl Prefix {
    /// `addr/len`, if `len` fits the family (at most 32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Prefix { addr, len })
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The length in bits.
    pub fn length(&self) -> u8 {
        self.len
    }
}

impl FromStr for Prefix {
    type Err = InvalidPrefix;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPrefix { text: s.to_owned() };
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Prefix::new(addr, len).ok_or_else(bad)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a BIRD call failed. [`BirdError::is_retryable`] says whether trying again
/// later can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BirdError {
    /// The control socket could not be reached: BIRD is not running, the path is
    /// wrong, or we may not open it. Retry later; check the path and permissions.
    #[error("cannot connect to BIRD at {path}: {source}")]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// What connecting said.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the socket failed. Retry.
    #[error("BIRD control socket: {0}")]
    Io(#[source] io::Error),
    /// BIRD closed the connection before its reply was complete (it stopped or
    /// restarted). Retry.
    #[error("BIRD closed the control connection")]
    Closed,
    /// No complete reply within the timeout. Retry.
    #[error("BIRD did not answer {command:?} within {timeout:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// BIRD sent what this client cannot read (a bug here or an unknown BIRD).
    #[error("unreadable reply from BIRD: {0}")]
    Protocol(#[from] ReplyError),
    /// No protocol has that name (`8003`): BIRD's config and ours disagree.
    #[error("BIRD has no protocol named {0}")]
    NoSuchProtocol(ProtocolName),
    /// BIRD refused or failed the command (another 8xxx run-time or 9xxx parse error).
    #[error("BIRD refused {command:?}: {code} {message}")]
    Refused {
        /// The command.
        command: String,
        /// BIRD's code.
        code: Code,
        /// BIRD's message.
        message: String,
    },
    /// The command is not one line of at most 1000 bytes (a bug in the caller).
    #[error("not a single-line BIRD command: {command:?}")]
    InvalidCommand {
        /// The refused command.
        command: String,
    },
}

impl BirdError {
    /// Whether the same call may succeed later (BIRD unreachable, restarting, slow),
    /// as opposed to a disagreement that needs a person (bad config, a bug).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BirdError::Connect { .. }
                | BirdError::Io(_)
                | BirdError::Closed
                | BirdError::Timeout { .. }
        )
    }
}

/// One open control connection.
#[derive(Debug)]
struct Connection {
    stream: UnixStream,
    decoder: ReplyDecoder,
}

/// A client of one BIRD control socket.
#[derive(Debug)]
pub struct BirdClient {
    path: PathBuf,
    timeout: Duration,
    conn: Option<Connection>,
}

impl BirdClient {
    /// A client of the socket at `path`; each call, connecting included, is given
    /// up after `timeout`. Nothing is opened until the first call.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> BirdClient {
        BirdClient {
            path: path.into(),
            timeout,
            conn: None,
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `show protocols`: every protocol's row.
    pub async fn show_protocols(&mut self) -> Result<Vec<ProtocolStatus>, BirdError> {
        let reply = self.command("show protocols").await?;
        Ok(ProtocolStatus::from_reply(&reply)?)
    }

    /// `show protocols "<name>"`: one protocol's row.
    pub async fn show_protocol(
        &mut self,
        name: &ProtocolName,
    ) -> Result<ProtocolStatus, BirdError> {
        let reply = self.named_command("show protocols", name).await?;
        let mut rows = ProtocolStatus::from_reply(&reply)?;
        match rows.iter().position(|r| r.name == name.as_str()) {
            Some(i) if rows.len() == 1 => Ok(rows.swap_remove(i)),
            _ => Err(ReplyError::Unexpected {
                what: format!("{} rows for protocol {name}", rows.len()),
            }
            .into()),
        }
    }

    /// `enable "<name>"`.
    pub async fn enable(&mut self, name: &ProtocolName) -> Result<Toggled, BirdError> {
        let reply = self.named_command("enable", name).await?;
        Ok(Toggled::from_reply(&reply, true)?)
    }

    /// `disable "<name>"`.
    pub async fn disable(&mut self, name: &ProtocolName) -> Result<Toggled, BirdError> {
        let reply = self.named_command("disable", name).await?;
        Ok(Toggled::from_reply(&reply, false)?)
    }

    /// `show route for <prefix> all`: the routes to the longest match of `prefix`
    /// with their attributes; empty when there is none (`8001 Network not found`).
    pub async fn show_route_for(&mut self, prefix: &Prefix) -> Result<Vec<Route>, BirdError> {
        match self.command(&format!("show route for {prefix} all")).await {
            Ok(reply) => Ok(Route::from_reply(&reply)?),
            Err(BirdError::Refused { code, .. }) if code.value() == 8001 => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// `show route protocol <name> all`: the routes the protocol brought.
    pub async fn show_route_protocol(
        &mut self,
        name: &ProtocolName,
    ) -> Result<Vec<Route>, BirdError> {
        // The protocol is a bare symbol here (BIRD takes no quoted name), so an unknown
        // name is a 9001 syntax error; asking for its row first makes that clear.
        self.show_protocol(name).await?;
        let reply = self
            .command(&format!("show route protocol {name} all"))
            .await?;
        Ok(Route::from_reply(&reply)?)
    }

    /// Sends one command line and returns BIRD's reply; an error reply (8xxx,
    /// 9xxx) is [`BirdError::Refused`].
    pub async fn command(&mut self, command: &str) -> Result<Reply, BirdError> {
        if command.len() > MAX_COMMAND_BYTES || command.contains(|c: char| c.is_control()) {
            return Err(BirdError::InvalidCommand {
                command: command.chars().take(120).collect(),
            });
        }
        let timeout = self.timeout;
        let reply = match tokio::time::timeout(timeout, self.exchange(command)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                self.conn = None;
                return Err(e);
            }
            Err(_elapsed) => {
                self.conn = None;
                return Err(BirdError::Timeout {
                    command: command.to_owned(),
                    timeout,
                });
            }
        };
        match reply.error() {
            Some(line) => Err(BirdError::Refused {
                command: command.to_owned(),
                code: line.code,
                message: line.text.clone(),
            }),
            None => Ok(reply),
        }
    }

    /// `<verb> "<name>"`, with 8003 read as [`BirdError::NoSuchProtocol`].
    async fn named_command(&mut self, verb: &str, name: &ProtocolName) -> Result<Reply, BirdError> {
        match self.command(&format!("{verb} \"{name}\"")).await {
            Err(BirdError::Refused { code, .. }) if code.value() == 8003 => {
                Err(BirdError::NoSuchProtocol(name.clone()))
            }
            other => other,
        }
    }

    /// Writes `command` and reads its reply, on the kept connection or a new one; a
    /// kept connection BIRD has dropped is replaced once.
    async fn exchange(&mut self, command: &str) -> Result<Reply, BirdError> {
        if let Some(conn) = self.conn.as_mut() {
            match conn.round_trip(command).await {
                Err(BirdError::Closed | BirdError::Io(_)) => self.conn = None,
                result => return result,
            }
        }
        let conn = self.conn.insert(Connection::open(&self.path).await?);
        conn.round_trip(command).await
    }
}

impl Connection {
    /// Connects and reads BIRD's greeting.
    async fn open(path: &Path) -> Result<Connection, BirdError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| BirdError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let mut conn = Connection {
            stream,
            decoder: ReplyDecoder::new(),
        };
        let greeting = conn.read_reply().await?;
        if greeting.last().code != Code::WELCOME {
            return Err(ReplyError::unexpected(
                "a greeting other than 0001",
                &greeting.last().text,
            )
            .into());
        }
        Ok(conn)
    }

    async fn round_trip(&mut self, command: &str) -> Result<Reply, BirdError> {
        let mut line = Vec::with_capacity(command.len() + 1);
        line.extend_from_slice(command.as_bytes());
        line.push(b'\n');
        self.stream.write_all(&line).await.map_err(BirdError::Io)?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> Result<Reply, BirdError> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(reply) = self.decoder.poll_reply() {
                return Ok(reply);
            }
            let n = self.stream.read(&mut buf).await.map_err(BirdError::Io)?;
            if n == 0 {
                return Err(BirdError::Closed);
            }
            self.decoder.handle_bytes(&buf[..n])?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names() {
        for good in ["anycast4", "_x", "A_1", &"a".repeat(64)] {
            assert_eq!(
                ProtocolName::new(good).map(|n| n.to_string()),
                Ok(good.to_owned())
            );
        }
        for bad in [
            "",
            "4any",
            "any cast",
            "a\"b",
            "a*",
            "a\nshow",
            "é",
            &"a".repeat(65),
        ] {
            assert!(ProtocolName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            "anycast4".parse::<ProtocolName>(),
            Ok(ProtocolName::from_static("anycast4"))
        );
    }

    #[test]
    fn prefixes() {
        let p: Prefix = "203.0.113.10/32".parse().expect("valid");
        assert_eq!(
            (p.addr().to_string(), p.length()),
            ("203.0.113.10".to_owned(), 32)
        );
        assert_eq!(p.to_string(), "203.0.113.10/32");
        assert_eq!(
            "2001:db8::1/128".parse::<Prefix>().map(|p| p.to_string()),
            Ok("2001:db8::1/128".to_owned())
        );
        for bad in [
            "203.0.113.10",
            "203.0.113.10/33",
            "2001:db8::/129",
            "x/1",
            "1.2.3.4/-1",
            "1.2.3.4/32 all",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn commands_with_line_breaks_are_refused_before_sending() {
        let mut client = BirdClient::new("/nonexistent/bird.ctl", Duration::from_secs(1));
        for bad in ["show status\nshutdown", "x\r", &"x".repeat(1001)] {
            let e = client.command(bad).await.expect_err("refused");
            assert!(matches!(e, BirdError::InvalidCommand { .. }), "{e}");
            assert!(!e.is_retryable());
        }
    }

    /// What one scripted connection of [`fake_bird`] does.
    struct Script {
        greeting: &'static str,
        /// One reply per command line received, in order.
        replies: Vec<&'static str>,
        /// After the last reply: close (`true`) or stay silent.
        close: bool,
    }

    /// A control socket at `dir/bird.ctl` that plays `scripts`, one per connection;
    /// returns the number of connections accepted so far.
    fn fake_bird(
        dir: &Path,
        scripts: Vec<Script>,
    ) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncBufReadExt, BufReader};
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        let listener = tokio::net::UnixListener::bind(dir.join("bird.ctl")).expect("bind");
        tokio::spawn(async move {
            for script in scripts {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(script.greeting.as_bytes()).await.ok();
                    for reply in script.replies {
                        if !matches!(lines.next_line().await, Ok(Some(_))) {
                            return;
                        }
                        write.write_all(reply.as_bytes()).await.ok();
                    }
                    if !script.close {
                        // Keep the connection open and silent until the client leaves.
                        while let Ok(Some(_)) = lines.next_line().await {}
                    }
                });
            }
        });
        accepted
    }

    const HELLO: &str = "0001 BIRD 2.0.12 ready.\n";
    const STATUS: &str = "1000-BIRD 2.0.12\n0013 Daemon is up and running\n";

    #[tokio::test]
    async fn a_kept_connection_bird_closed_is_replaced_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let accepted = fake_bird(
            dir.path(),
            vec![
                Script {
                    greeting: HELLO,
                    replies: vec![STATUS],
                    close: true,
                },
                Script {
                    greeting: HELLO,
                    replies: vec![STATUS],
                    close: false,
                },
            ],
        );
        let mut client = BirdClient::new(dir.path().join("bird.ctl"), Duration::from_secs(10));
        let reply = client
            .command("show status")
            .await
            .expect("first connection");
        assert_eq!(reply.last().text, "Daemon is up and running");
        client
            .command("show status")
            .await
            .expect("second connection, after a retry");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_silent_bird_times_out_and_the_next_call_starts_afresh() {
        let dir = tempfile::tempdir().expect("temp dir");
        let accepted = fake_bird(
            dir.path(),
            vec![
                Script {
                    greeting: HELLO,
                    replies: vec![],
                    close: false,
                },
                Script {
                    greeting: HELLO,
                    replies: vec![STATUS],
                    close: false,
                },
            ],
        );
        let mut client = BirdClient::new(dir.path().join("bird.ctl"), Duration::from_millis(300));
        let e = client.command("show status").await.expect_err("no answer");
        assert!(matches!(e, BirdError::Timeout { .. }), "{e}");
        assert!(e.is_retryable());
        client
            .command("show status")
            .await
            .expect("a new connection answers");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn closed_mid_reply_bad_greeting_and_refusals() {
        let dir = tempfile::tempdir().expect("temp dir");
        fake_bird(
            dir.path(),
            vec![
                Script {
                    greeting: HELLO,
                    replies: vec!["1002-anycast4 Static master4 up\n"],
                    close: true,
                },
                Script {
                    greeting: "0000 \n",
                    replies: vec![],
                    close: true,
                },
                Script {
                    greeting: "garbage\n",
                    replies: vec![],
                    close: true,
                },
                Script {
                    greeting: HELLO,
                    replies: vec![
                        "8003 No protocols match\n",
                        "9001 syntax error, unexpected CF_SYM_UNDEFINED\n",
                        "8001 Network not found\n",
                        "0011-anycast4: enabled\n0000 \n",
                    ],
                    close: false,
                },
            ],
        );
        let mut client = BirdClient::new(dir.path().join("bird.ctl"), Duration::from_secs(10));
        let e = client.show_protocols().await.expect_err("cut short");
        assert!(matches!(e, BirdError::Closed), "{e}");
        let e = client.show_protocols().await.expect_err("not a greeting");
        assert!(
            matches!(e, BirdError::Protocol(ReplyError::Unexpected { .. })),
            "{e}"
        );
        let e = client.show_protocols().await.expect_err("not a reply line");
        assert!(
            matches!(e, BirdError::Protocol(ReplyError::BadLine { .. })),
            "{e}"
        );
        assert!(!e.is_retryable());

        let name = ProtocolName::from_static("nosuch");
        let e = client.enable(&name).await.expect_err("8003");
        assert!(
            matches!(e, BirdError::NoSuchProtocol(ref n) if *n == name),
            "{e}"
        );
        let e = client
            .command("show route protocol nosuch")
            .await
            .expect_err("9001");
        match e {
            BirdError::Refused { code, message, .. } => {
                assert_eq!(code.value(), 9001);
                assert!(message.starts_with("syntax error"), "{message}");
            }
            other => panic!("expected Refused, got {other}"),
        }
        let prefix: Prefix = "198.51.100.1/32".parse().expect("prefix");
        assert_eq!(
            client
                .show_route_for(&prefix)
                .await
                .expect("8001 is no route"),
            Vec::new()
        );
        let anycast = ProtocolName::from_static("anycast4");
        assert_eq!(
            client.enable(&anycast).await.expect("enabled"),
            Toggled::Changed
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_retryable_connect_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut client = BirdClient::new(dir.path().join("bird.ctl"), Duration::from_secs(1));
        let e = client.show_protocols().await.expect_err("nothing listens");
        assert!(matches!(e, BirdError::Connect { .. }), "{e}");
        assert!(e.is_retryable());
        assert!(e.to_string().contains("bird.ctl"), "{e}");
    }
}
