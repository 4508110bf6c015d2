//! A log node on 127.0.0.1:0 (real QUIC, real `EmbeddedStore` in a tempdir) for the
//! link tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tern_config::{LinkServerConfig, StoreConfig};
use tern_log::EmbeddedStore;
use tern_log::net::{LogClient, LogClientConfig, LogServer, tls};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every wait is bounded, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

pub struct Node {
    pub addr: SocketAddr,
    pub store: EmbeddedStore,
    pub cert: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), tern_log::net::ServerError>>>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub async fn start(link: LinkServerConfig) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            EmbeddedStore::open(&dir.path().join("data"), StoreConfig::default()).expect("open");
        let cert = tls::ensure_self_signed(dir.path(), "127.0.0.1").expect("certificate");
        let server = LogServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            &cert.files,
            store.clone(),
            &link,
        )
        .expect("bind");
        let addr = server.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel();
        let served = tokio::spawn(server.serve_until(async {
            let _ = stopped.await;
        }));
        Node {
            addr,
            store,
            cert: cert.files.cert,
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        }
    }

    pub async fn client(&self) -> LogClient {
        LogClient::connect(self.addr, "localhost", &self.cert)
            .await
            .expect("connect")
    }

    pub async fn client_with(&self, config: LogClientConfig) -> LogClient {
        LogClient::connect_with(self.addr, "localhost", &self.cert, config)
            .await
            .expect("connect")
    }

    /// A bare QUIC connection, to behave as a peer the client never would.
    pub async fn raw(&self) -> quinn::Connection {
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(tls::client_config(&self.cert).expect("client tls"));
        endpoint
            .connect(self.addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake")
    }

    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and checks that it shut down cleanly and in time.
    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(served) = self.served.take() {
            tokio::time::timeout(PATIENCE, served)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("clean shutdown");
        }
    }
}
