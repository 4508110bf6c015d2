//! Opening the TCP connection under a WebSocket: the URL's host resolved by the
//! client's own resolver (hickory-resolver, one per client, with its TTL-respecting
//! cache), then TCP to the addresses one after the other, IPv6 and IPv4 interleaved.
//! An IP address in the URL skips DNS.
//!
//! ```text
//!  host ─ IP literal? ──────────────────────────────┐
//!    └─ lookup_ip (A + AAAA, cached per TTL) ─▶ [v6, v4, v6, v4, …] ─▶ TCP, one at a time
//!                                                   each but the last: attempt timeout
//! ```
//!
//! It does not speak WebSocket (the driver does, over the stream returned) nor choose
//! the URL (the core's rotation does): a failure here fails one attempt.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::Resolver;
use crate::error::ClientError;

/// Resolves names and opens TCP connections for one client.
pub(crate) struct Dialer {
    resolver: TokioResolver,
    /// The most one address may take to answer while others are left to try.
    attempt_timeout: Duration,
}

impl Dialer {
    /// A dialer resolving with `resolver`; one address may take `attempt_timeout`
    /// when there are others to try.
    pub(crate) fn new(resolver: &Resolver, attempt_timeout: Duration) -> Result<Self, ClientError> {
        let provider = TokioRuntimeProvider::default();
        let builder = match resolver {
            Resolver::System => match TokioResolver::builder_tokio() {
                Ok(builder) => builder,
                Err(error) => {
                    // What the C library does without a usable resolv.conf.
                    tracing::warn!(%error, "no usable /etc/resolv.conf; asking the name server on this machine");
                    let local = [
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ]
                    .into_iter()
                    .map(NameServerConfig::udp_and_tcp)
                    .collect();
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_name_servers(local),
                        provider,
                    )
                }
            },
            Resolver::Servers(servers) => {
                let servers = servers
                    .iter()
                    .map(|server| {
                        let on = |protocol| {
                            let mut connection = ConnectionConfig::new(protocol);
                            connection.port = server.port();
                            connection
                        };
                        NameServerConfig::new(
                            server.ip(),
                            true,
                            vec![on(ProtocolConfig::Udp), on(ProtocolConfig::Tcp)],
                        )
                    })
                    .collect();
                let mut builder = TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    provider,
                );
                builder.options_mut().use_hosts_file = ResolveHosts::Never;
                builder
            }
        };
        let resolver = builder
            .build()
            .map_err(|e| ClientError::Config(format!("resolver: {e}")))?;
        Ok(Self {
            resolver,
            attempt_timeout,
        })
    }

    /// A TCP connection to `host:port` (`host` a name or an IP address, IPv6 in
    /// brackets or not), made by `deadline`. The error says what failed: the name,
    /// or each address.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<TcpStream, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self.resolve(bare, deadline).await?,
        };
        let mut failures = Vec::new();
        let last = addresses.len().saturating_sub(1);
        for (i, ip) in addresses.into_iter().enumerate() {
            let address = SocketAddr::new(ip, port);
            // The last address may use all the time left.
            let until = if i == last {
                deadline
            } else {
                deadline.min(Instant::now() + self.attempt_timeout)
            };
            match tokio::time::timeout_at(until, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "could not disable Nagle's algorithm");
                    }
                    return Ok(stream);
                }
                Ok(Err(error)) => failures.push(format!("{address}: {error}")),
                Err(_) => failures.push(format!("{address}: no answer in time")),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(format!(
            "no address of {host} answered ({})",
            failures.join("; ")
        ))
    }

    /// The addresses of `name`, IPv6 and IPv4 interleaved (IPv6 first).
    async fn resolve(&self, name: &str, deadline: Instant) -> Result<Vec<IpAddr>, String> {
        let lookup = match tokio::time::timeout_at(deadline, self.resolver.lookup_ip(name)).await {
            Ok(Ok(lookup)) => lookup,
            Ok(Err(error)) if error.is_nx_domain() => {
                return Err(format!("{name} does not exist (NXDOMAIN)"));
            }
            Ok(Err(error)) if error.is_no_records_found() => {
                return Err(format!("{name} has no address"));
            }
            Ok(Err(error)) => return Err(format!("resolving {name}: {error}")),
            Err(_) => return Err(format!("resolving {name}: no answer in time")),
        };
        let addresses = interleave(lookup.iter());
        if addresses.is_empty() {
            return Err(format!("{name} has no address"));
        }
        Ok(addresses)
    }
}

/// `addresses` without repeats, alternating IPv6 and IPv4 (IPv6 first), each family
/// in the order given, so that a broken family costs one attempt at a time.
fn interleave(addresses: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut v6 = Vec::new();
    let mut v4 = Vec::new();
    for ip in addresses {
        let family = if ip.is_ipv6() { &mut v6 } else { &mut v4 };
        if !family.contains(&ip) {
            family.push(ip);
        }
    }
    let mut v6 = v6.into_iter();
    let mut v4 = v4.into_iter();
    let mut out = Vec::new();
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(text: &[&str]) -> Vec<IpAddr> {
        text.iter().map(|t| t.parse().expect("an IP")).collect()
    }

    #[test]
    fn families_alternate_ipv6_first_without_repeats() {
        let given = ips(&["::1", "::2", "::3", "10.0.0.1", "::1", "10.0.0.2"]);
        assert_eq!(
            interleave(given),
            ips(&["::1", "10.0.0.1", "::2", "10.0.0.2", "::3"])
        );
        assert_eq!(interleave(ips(&["10.0.0.1"])), ips(&["10.0.0.1"]));
        assert!(interleave(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn an_ip_literal_skips_dns_and_every_failed_address_is_reported() {
        // A resolver that could answer nothing: a literal must not need it.
        let dialer = Dialer::new(
            &Resolver::Servers(vec!["127.0.0.1:9".parse().expect("an address")]),
            Duration::from_millis(500),
        )
        .expect("a resolver");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let port = listener.local_addr().expect("bound").port();
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = dialer.connect("127.0.0.1", port, deadline).await;
        assert!(stream.is_ok(), "{stream:?}");
        // A port held by a socket that does not listen: refused.
        let closed = tokio::net::TcpSocket::new_v4().expect("a socket");
        closed
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bound");
        let port = closed.local_addr().expect("bound").port();
        let error = dialer
            .connect("127.0.0.1", port, deadline)
            .await
            .expect_err("nothing listens there");
        assert!(
            error.contains(&format!("127.0.0.1:{port}")),
            "the address is named: {error}"
        );
    }
}
