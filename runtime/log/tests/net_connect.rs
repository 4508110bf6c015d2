//! Connecting where no log node listens (yet): nothing answers a QUIC handshake sent
//! to a closed UDP port, so the attempt ends on `LogClientConfig::connect_timeout`,
//! not on the (here much longer) idle timeout, and says it may be retried.
//!
//! Run with `cargo test -p tern-log --test net_connect`.

use std::time::Duration;

use tern_log::net::{ClientError, LogClient, LogClientConfig, tls};

/// Bound on the attempt; the idle timeout below is longer, so only the connect
/// timeout can end it within this.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn connecting_to_a_silent_address_gives_up_after_the_connect_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = tls::ensure_self_signed(dir.path(), "127.0.0.1").expect("certificate");
    // A port that was free a moment ago and that nothing listens on now.
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("free port");
    let config = LogClientConfig {
        connect_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(120),
        ..LogClientConfig::default()
    };
    let attempt = LogClient::connect_with(addr, "localhost", &cert.files.cert, config);
    let result = tokio::time::timeout(PATIENCE, attempt)
        .await
        .expect("the attempt ends by itself");
    match result {
        Err(error @ ClientError::Connect { .. }) => assert!(error.is_retryable(), "{error}"),
        other => panic!("connecting to a silent address: {other:?}"),
    }
}
