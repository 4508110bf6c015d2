//! `tern log` SIGKILLed and restarted on its address and data dir: a client still on
//! the old connection is told by the new process itself. Its endpoint secrets come
//! from the node's key (`tern_log::net::tls::endpoint_config`), so it recognises the
//! connection id of the client's next packet (a keep-alive) and answers with a
//! stateless reset the client recognises; the client reports the connection lost
//! ("reset by peer"), its subscription ends, and a new connection publishes, the
//! message published before the kill being found as a duplicate at its position.
//!
//! ```text
//!  LogClient ══ connection ══▶ tern log (run 1)   ── SIGKILL, nothing sent ──
//!      │ keep-alive (old connection id)
//!      ▼
//!  tern log (run 2, same port and key) ──stateless reset──▶ LogClient: lost
//!  new LogClient ──publish──▶ tern log (run 2)
//! ```
//!
//! The client's idle timeout is set to 60 s (the node's own is quinn's default,
//! 30 s) and the loss must be reported within [`NOTICE`] (20 s) of the restart: an
//! idle timeout can never pass, only the reset can. No assertion is about time.

use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use tern_link::{ChannelName, Outcome, PublishMessage, SubscribeFrom};
use tern_log::net::{ClientError, LogClient, LogClientConfig, SubscriptionEvent};
use tern_tests::LogProcess;
use tokio::task::block_in_place;

/// How long the client may take to report the old connection lost after the
/// restart; shorter than any idle timeout in play.
const NOTICE: Duration = Duration::from_secs(20);
/// Bound on every other wait.
const PATIENCE: Duration = Duration::from_secs(30);

fn message(key: &str) -> PublishMessage {
    PublishMessage {
        channel: "restart:a".to_owned(),
        idempotency_key: Bytes::copy_from_slice(key.as_bytes()),
        headers: vec![],
        payload: Bytes::from(format!("payload of {key}")),
    }
}

async fn connect(log: &LogProcess) -> anyhow::Result<LogClient> {
    let config = LogClientConfig {
        idle_timeout: Duration::from_secs(60),
        ..LogClientConfig::default()
    };
    let client = tokio::time::timeout(
        PATIENCE,
        LogClient::connect_with(log.addr, "localhost", &log.cert, config),
    )
    .await
    .context("connecting timed out")??;
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_log_resets_the_old_connection() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("log");
    let log = block_in_place(|| LogProcess::start(&data))?;
    let addr = log.addr;

    let client = connect(&log).await?;
    let channel = ChannelName::parse("restart:a").context("channel name")?;
    let mut subscription =
        tokio::time::timeout(PATIENCE, client.subscribe(&channel, SubscribeFrom::Latest))
            .await
            .context("subscribing timed out")??;
    let before = tokio::time::timeout(PATIENCE, client.publish(vec![message("before")]))
        .await
        .context("publishing timed out")??;
    let Some(Outcome::Appended(position)) = before.first().cloned() else {
        anyhow::bail!("the first publish was not appended: {before:?}");
    };

    block_in_place(|| log.kill());
    let log = block_in_place(|| LogProcess::start_at(&data, addr))?;

    let lost = tokio::time::timeout(NOTICE, client.closed())
        .await
        .context("the old connection was not reported lost: no stateless reset came")?;
    ensure!(
        matches!(&lost, ClientError::ConnectionLost(reason) if reason.contains("reset")),
        "the old connection ended otherwise than by a stateless reset: {lost}"
    );
    ensure!(client.is_closed(), "the client still says it is connected");
    let refused = client.publish(vec![message("refused")]).await;
    ensure!(
        refused.as_ref().is_err_and(ClientError::is_retryable),
        "a publish on the lost connection: {refused:?}"
    );
    loop {
        match tokio::time::timeout(PATIENCE, subscription.next_event())
            .await
            .context("the subscription did not end")?
        {
            None | Some(SubscriptionEvent::Closed(_)) => break,
            Some(_) => {}
        }
    }

    let again = connect(&log).await?;
    let outcomes = tokio::time::timeout(
        PATIENCE,
        again.publish(vec![message("before"), message("after")]),
    )
    .await
    .context("publishing after the restart timed out")??;
    ensure!(
        outcomes.first() == Some(&Outcome::Duplicate(position)),
        "the message published before the kill is not found at {position:?}: {outcomes:?}"
    );
    ensure!(
        matches!(outcomes.get(1), Some(Outcome::Appended(_))),
        "the new message was not appended: {outcomes:?}"
    );
    again.close().await;
    block_in_place(|| log.kill());
    Ok(())
}
