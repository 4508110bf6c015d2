//! `tern log` under concurrent publish load is killed with SIGKILL at random
//! moments, several times. After each restart every acknowledged message is readable
//! exactly once, in order, with dense serials, and re-sending an acknowledged
//! idempotency key returns its original position.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tern_link::{ChannelName, Outcome, Position, PublishMessage, Serial};
use tern_log::net::LogClient;
use tern_tests::LogProcess;
use tokio::sync::Mutex;

const CHANNELS: usize = 4;
const PUBLISHERS: usize = 8;
const BATCH: usize = 20;
const KILLS: usize = 5;

/// key → position, for every acknowledged message.
type Acked = Arc<Mutex<HashMap<String, Position>>>;

fn channel(i: usize) -> ChannelName {
    ChannelName::parse(&format!("crash:{i}")).expect("valid name")
}

fn message(key: &str) -> PublishMessage {
    let i: usize = key.bytes().map(usize::from).sum::<usize>() % CHANNELS;
    PublishMessage {
        channel: channel(i).to_string(),
        idempotency_key: Bytes::copy_from_slice(key.as_bytes()),
        headers: vec![],
        payload: Bytes::from(format!("payload of {key}")),
    }
}

async fn connect(proc: &LogProcess) -> LogClient {
    LogClient::connect(proc.addr, "localhost", &proc.cert)
        .await
        .expect("connect to tern log")
}

/// Publishes batches until the connection dies; records every acknowledged key.
/// Keys whose outcome was not received are retried in the next round, which must
/// answer `Duplicate` for those that were in fact stored.
async fn publish_until_dead(
    client: LogClient,
    publisher: usize,
    round: usize,
    acked: Acked,
    pending: Vec<String>,
) -> Vec<String> {
    let mut seq = 0usize;
    let mut retry = pending;
    loop {
        let keys: Vec<String> = if retry.is_empty() {
            (0..BATCH)
                .map(|i| {
                    seq += 1;
                    format!("p{publisher}-r{round}-{seq}-{i}")
                })
                .collect()
        } else {
            std::mem::take(&mut retry)
        };
        match client
            .publish(keys.iter().map(|k| message(k)).collect())
            .await
        {
            Ok(outcomes) => {
                let mut acked = acked.lock().await;
                for (key, outcome) in keys.iter().zip(outcomes) {
                    match outcome {
                        Outcome::Appended(p) => {
                            assert!(
                                acked.insert(key.clone(), p).is_none(),
                                "{key} appended twice"
                            );
                        }
                        Outcome::Duplicate(p) => {
                            // Only a retried key may be a duplicate; its first outcome was
                            // lost with the connection, so this is its first ack.
                            if let Some(prev) = acked.insert(key.clone(), p) {
                                assert_eq!(prev, p, "{key}: duplicate points elsewhere");
                            }
                        }
                        Outcome::Rejected(e) => panic!("{key} rejected: {e}"),
                    }
                }
            }
            Err(e) => {
                assert!(e.is_retryable(), "unexpected error: {e}");
                return keys;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked: Acked = Arc::default();
    let mut pending: Vec<Vec<String>> = vec![Vec::new(); PUBLISHERS];
    let mut rng = rand::rng();
    for round in 0..KILLS {
        let proc = LogProcess::start(dir.path()).expect("tern log starts");
        let client = connect(&proc).await;
        let tasks: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                tokio::spawn(publish_until_dead(
                    client.clone(),
                    p,
                    round,
                    acked.clone(),
                    std::mem::take(&mut pending[p]),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        proc.kill();
        for (p, t) in tasks.into_iter().enumerate() {
            pending[p] = tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("publishers notice the dead connection")
                .expect("publisher task");
        }
        let proc = LogProcess::start(dir.path()).expect("tern log restarts");
        verify(&proc, &acked).await;
        proc.kill();
    }
    let total = acked.lock().await.len();
    assert!(total > KILLS * BATCH, "the load really ran ({total} acked)");
    eprintln!("{total} acknowledged messages verified across {KILLS} SIGKILLs");
}

async fn verify(proc: &LogProcess, acked: &Acked) {
    let client = connect(proc).await;
    let acked = acked.lock().await.clone();
    let mut by_key_seen: HashMap<String, Position> = HashMap::new();
    for c in 0..CHANNELS {
        let ch = channel(c);
        let mut next = Serial::FIRST;
        loop {
            let r = client.read(&ch, next, 1000).await.expect("read");
            for m in &r.messages {
                assert_eq!(m.position.serial, next, "{ch}: serials are dense");
                next = next.next();
                let key = String::from_utf8(m.idempotency_key.to_vec()).expect("utf-8 key");
                assert_eq!(m.payload, Bytes::from(format!("payload of {key}")));
                assert!(
                    by_key_seen.insert(key.clone(), m.position).is_none(),
                    "{key} stored twice"
                );
            }
            if r.messages.len() < 1000 {
                break;
            }
        }
    }
    for (key, pos) in &acked {
        assert_eq!(
            by_key_seen.get(key),
            Some(pos),
            "acknowledged {key} at {pos} is readable there"
        );
    }
    // Re-sending acknowledged keys returns their original positions.
    let sample: Vec<(&String, &Position)> = acked.iter().take(500).collect();
    for chunk in sample.chunks(100) {
        let outcomes = client
            .publish(chunk.iter().map(|(k, _)| message(k)).collect())
            .await
            .expect("re-publish");
        for ((key, pos), outcome) in chunk.iter().zip(outcomes) {
            assert_eq!(outcome, Outcome::Duplicate(**pos), "{key}");
        }
    }
    client.close().await;
}
