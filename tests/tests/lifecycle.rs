//! `tern log` as an operator meets it: a bad config is refused with every problem
//! listed, SIGTERM shuts down cleanly (exit 0, checkpoint written, so the next start
//! replays nothing), and a second process cannot open a data dir in use.

use std::process::Command;

use bytes::Bytes;
use tern_link::{Outcome, PublishMessage};
use tern_log::net::LogClient;
use tern_tests::{LogProcess, tern_binary};

#[test]
fn bad_config_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("log.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:70000\"\n[store]\nsegment_bytes = 512\nfsync = \"sometimes\"\n",
    )
    .expect("write config");
    let out = Command::new(tern_binary())
        .args(["log", "--config"])
        .arg(&config)
        .output()
        .expect("tern runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in ["listen", "store.segment_bytes", "store.fsync"] {
        assert!(
            stderr.contains(&format!("{path}:")),
            "{path} missing from:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_and_the_next_start_replays_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proc = LogProcess::start(dir.path()).expect("tern log starts");
    let client = LogClient::connect(proc.addr, "localhost", &proc.cert)
        .await
        .expect("connect");
    let messages = (0..100)
        .map(|i| PublishMessage {
            channel: "life:a".into(),
            idempotency_key: Bytes::from(format!("k{i}")),
            headers: vec![],
            payload: Bytes::from_static(b"hello"),
        })
        .collect();
    let outcomes = client.publish(messages).await.expect("publish");
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Appended(_))));
    client.close().await;

    // A second node on the same data dir is refused while the first runs.
    let second = LogProcess::start(dir.path());
    assert!(second.is_err(), "a data dir in use must not open twice");

    assert!(proc.terminate(), "SIGTERM exits 0");
    let proc = LogProcess::start(dir.path()).expect("tern log restarts");
    let logs = wait_for_log(&proc, "store opened");
    assert!(logs.contains("used_checkpoint=true"), "{logs}");
    assert!(logs.contains("replayed_bytes=0"), "{logs}");
}

fn wait_for_log(proc: &LogProcess, needle: &str) -> String {
    for _ in 0..100 {
        let text = proc.log_text();
        if text.contains(needle) {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{needle:?} never logged:\n{}", proc.log_text());
}

/// A node that stops answering (frozen with SIGSTOP) fails calls with a retryable
/// `Timeout` after the configured time instead of hanging them; once thawed, the same
/// client works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_times_calls_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proc = LogProcess::start(dir.path()).expect("tern log starts");
    let client = LogClient::connect_with(
        proc.addr,
        "localhost",
        &proc.cert,
        tern_log::net::LogClientConfig {
            request_timeout: std::time::Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    client.ping().await.expect("ping while running");
    proc.freeze();
    let frozen = client
        .ping()
        .await
        .expect_err("no answer from a frozen node");
    assert!(
        matches!(frozen, tern_log::net::ClientError::Timeout(_)) && frozen.is_retryable(),
        "{frozen}"
    );
    proc.signal(libc::SIGCONT);
    client.ping().await.expect("ping after thawing");
    client.close().await;
}
