//! `tern dns` as a running service: the DNS listeners (UDP and TCP on one address) and
//! the health report listener, started together and stopped together.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use tern_config::DnsConfig;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::report;
use crate::server::{DnsHandler, NameError, Shared};

/// A DNS-over-TCP connection that sends no request for this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued for one TCP connection.
const TCP_RESPONSE_QUEUE: usize = 16;
/// Attempts to find a port free for both UDP and TCP when `listen` asks for port 0.
const FREE_PORT_ATTEMPTS: usize = 16;
/// How long shutdown waits for the report listener's connections.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why `tern dns` could not start. The fault is the operator's config or host (an
/// address in use or not local, a name hickory refuses); retrying helps only once the
/// address is free.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The DNS listener could not be bound.
    #[error("cannot listen for DNS over {protocol} on {addr}: {source}")]
    Dns {
        /// `"UDP"` or `"TCP"`.
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The health report listener could not be bound.
    #[error("cannot listen for health reports on {addr}: {source}")]
    Report {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The config's name or zone is not one hickory can serve.
    #[error(transparent)]
    Name(#[from] NameError),
}

/// A running `tern dns`: answers DNS queries on [`DnsService::dns_addr`] (UDP and TCP)
/// and takes health reports on [`DnsService::report_addr`] until
/// [`DnsService::shutdown`].
pub struct DnsService {
    dns_addr: SocketAddr,
    report_addr: SocketAddr,
    server: Server<DnsHandler>,
    report: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl DnsService {
    /// Binds both listeners and starts serving. Every edge starts unreported, so the
    /// first answers are the fallback until edges report.
    pub async fn start(config: &DnsConfig) -> Result<Self, StartError> {
        let shared = Arc::new(Shared::new(config)?);
        let (udp, tcp) = bind_dns(config.listen).await?;
        let dns_addr = udp.local_addr().map_err(|source| StartError::Dns {
            protocol: "UDP",
            addr: config.listen,
            source,
        })?;
        let reports = TcpListener::bind(config.report_listen)
            .await
            .map_err(|source| StartError::Report {
                addr: config.report_listen,
                source,
            })?;
        let report_addr = reports.local_addr().map_err(|source| StartError::Report {
            addr: config.report_listen,
            source,
        })?;

        let mut server = Server::new(DnsHandler {
            shared: Arc::clone(&shared),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_QUEUE);
        let (stop, stopped) = watch::channel(false);
        let reports_authenticated = shared.auth.enabled();
        let report = tokio::spawn(report::serve(reports, shared, stopped));
        info!(
            %dns_addr,
            %report_addr,
            reports_authenticated,
            name = %config.name,
            zone = %config.zone,
            pops = config.pops.len(),
            "DNS server started"
        );
        Ok(Self {
            dns_addr,
            report_addr,
            server,
            report,
            stop,
        })
    }

    /// The address DNS is served on, over UDP and TCP.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// The address of the health report listener (HTTP).
    pub fn report_addr(&self) -> SocketAddr {
        self.report_addr
    }

    /// Stops accepting queries and reports, and waits (bounded) for the listeners to
    /// close.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.server.shutdown_gracefully().await {
            warn!(%error, "the DNS listeners ended with an error");
        }
        if tokio::time::timeout(STOP_TIMEOUT, &mut self.report)
            .await
            .is_err()
        {
            debug!("the report listener did not stop in time");
            self.report.abort();
        }
        info!("DNS server stopped");
    }
}

/// Binds UDP and TCP on `addr`. With port 0 the UDP socket picks the port and TCP takes
/// the same one, trying again when TCP finds it taken.
async fn bind_dns(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let udp_error = |source| StartError::Dns {
        protocol: "UDP",
        addr,
        source,
    };
    let tcp_error = |source| StartError::Dns {
        protocol: "TCP",
        addr,
        source,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let udp = UdpSocket::bind(addr).await.map_err(udp_error)?;
        let bound = udp.local_addr().map_err(udp_error)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error)
                if addr.port() == 0
                    && error.kind() == io::ErrorKind::AddrInUse
                    && attempts < FREE_PORT_ATTEMPTS =>
            {
                debug!(%bound, "TCP port taken; trying another");
            }
            Err(error) => return Err(tcp_error(error)),
        }
    }
}
