//! [`Proxy`]: a loopback TCP proxy in front of an edge, to make a client's connection
//! misbehave from the edge's point of view without touching the client.
//!
//! - [`Proxy::stall`]: stop forwarding server → client bytes (and stop reading them
//!   from the server, so the server's socket fills up and its writes block), as a
//!   client that stopped reading would; [`Proxy::resume`] forwards again.
//! - [`Proxy::refuse`]: cut every connection and drop new ones at once, as if the
//!   client lost its network; [`Proxy::admit`] lets them through again.
//!
//! The server-side socket is opened with a small receive buffer, so a stall reaches the
//! server after a few KiB rather than after the several MiB a loopback socket may
//! buffer. Each direction copies through one 16 KiB buffer; client → server bytes are
//! always forwarded (the client's heartbeats keep reaching the server).
//!
//! ```text
//! client ──▶ proxy.addr ──(always)──────────────▶ upstream
//! client ◀── proxy.addr ◀──(unless stalled)───── upstream
//! ```

use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Receive buffer asked for on the proxy's server-side socket (the kernel doubles it).
const UPSTREAM_RECV_BUFFER: u32 = 16 * 1024;
/// Bytes copied at once in each direction.
const CHUNK: usize = 16 * 1024;

/// What connections through the proxy do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mode {
    /// Server → client bytes wait.
    stalled: bool,
    /// Connections are cut and new ones dropped.
    refused: bool,
}

/// A TCP proxy on `127.0.0.1:0` in front of one upstream address. Dropping it stops
/// accepting and cuts every connection through it.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode {
            stalled: false,
            refused: false,
        });
        let modes = mode.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = modes.subscribe();
                if mode.borrow().refused {
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(server) = connect_upstream(upstream).await {
                        forward(client, server, mode).await;
                    }
                });
            }
        });
        Ok(Proxy { addr, mode, accept })
    }

    /// The WebSocket URL of the edge behind the proxy.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Stops forwarding server → client bytes, on every connection.
    pub fn stall(&self) {
        self.mode.send_modify(|m| m.stalled = true);
    }

    /// Forwards server → client bytes again.
    pub fn resume(&self) {
        self.mode.send_modify(|m| m.stalled = false);
    }

    /// Cuts every connection and drops new ones until [`Proxy::admit`].
    pub fn refuse(&self) {
        self.mode.send_modify(|m| m.refused = true);
    }

    /// Accepts connections again.
    pub fn admit(&self) {
        self.mode.send_modify(|m| m.refused = false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.mode.send_modify(|m| m.refused = true);
    }
}

/// A connection to `upstream` with a small receive buffer (set before connecting, so
/// the window it advertises is small from the start).
async fn connect_upstream(upstream: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = match upstream {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_recv_buffer_size(UPSTREAM_RECV_BUFFER)?;
    socket
        .connect(upstream)
        .await
        .with_context(|| format!("connecting to {upstream}"))
}

/// Copies both ways until either side closes or the proxy refuses.
async fn forward(client: TcpStream, server: TcpStream, mut mode: watch::Receiver<Mode>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut refusal = mode.clone();
    let refused = async move {
        // Also ends when the proxy is gone.
        let _ = refusal.wait_for(|m| m.refused).await;
    };
    let up = async move {
        let mut buf = vec![0; CHUNK];
        while let Ok(n @ 1..) = client_read.read(&mut buf).await {
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0; CHUNK];
        loop {
            // Wait while stalled.
            let go = mode
                .wait_for(|m| m.refused || !m.stalled)
                .await
                .map(|m| !m.refused)
                .unwrap_or(false);
            if !go {
                break;
            }
            tokio::select! {
                read = server_read.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                },
                // Stalled meanwhile: the read is dropped (nothing was taken).
                _ = mode.changed() => {}
            }
        }
    };
    // Either direction ending ends the connection: both sockets are dropped here.
    tokio::select! {
        () = up => {}
        () = down => {}
        () = refused => {}
    }
}
