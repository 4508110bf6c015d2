//! The conformance suite every [`LogStore`] backend must pass.
//!
//! A backend's tests implement [`StoreFactory`] (open a store on fresh storage;
//! reopen the same storage) and call [`run_all`], or each check on its own. The
//! checks assert the contract in the [`LogStore`] docs: dense per-channel serials,
//! outcomes in request order, idempotency across batches and reopens, reads of any
//! range, durable-only tails joined seamlessly to reads, and survival of restarts.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tern_link::{ChannelName, Position, Serial};

use crate::store::{AppendOutcome, AppendRequest, LogStore, ReadLimit, RecordError};

/// Opens stores for the suite.
pub trait StoreFactory {
    /// The backend under test.
    type Store: LogStore + Clone;
    /// A store on fresh, empty storage.
    fn fresh(&mut self) -> impl Future<Output = Self::Store>;
    /// Closes `store` and opens the same storage again.
    fn reopen(&mut self, store: Self::Store) -> impl Future<Output = Self::Store>;
}

/// A channel name for tests.
pub fn channel(name: &str) -> ChannelName {
    ChannelName::parse(name).expect("test channel names are valid")
}

/// A message for tests.
pub fn msg(channel_name: &str, key: &str, payload: &str) -> AppendRequest {
    AppendRequest {
        channel: channel(channel_name),
        idempotency_key: Bytes::copy_from_slice(key.as_bytes()),
        headers: vec![("k".into(), format!("v-{key}"))],
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

fn appended(o: &AppendOutcome) -> Position {
    match o {
        AppendOutcome::Appended(p) => *p,
        other => panic!("expected Appended, got {other:?}"),
    }
}

fn serials(outcomes: &[AppendOutcome]) -> Vec<u64> {
    outcomes.iter().map(|o| appended(o).serial.get()).collect()
}

/// Runs every check, each on fresh storage.
pub async fn run_all<F: StoreFactory>(f: &mut F) {
    dense_serials_per_channel(f).await;
    duplicates_return_the_original_position(f).await;
    bad_messages_are_rejected_alone(f).await;
    reads_return_exact_ranges(f).await;
    reads_find_a_point_in_time(f).await;
    tail_joins_reads_without_gaps(f).await;
    concurrent_appends_stay_dense(f).await;
    restart_keeps_everything(f).await;
}

/// Serials start at 1 and are dense per channel; outcomes follow request order.
pub async fn dense_serials_per_channel<F: StoreFactory>(f: &mut F) {
    let store = f.fresh().await;
    let out = store
        .append(vec![
            msg("a", "1", "x"),
            msg("b", "2", "x"),
            msg("a", "3", "x"),
        ])
        .await
        .expect("append");
    assert_eq!(serials(&out), vec![1, 1, 2]);
    let out = store
        .append(vec![msg("a", "4", "x"), msg("b", "5", "x")])
        .await
        .expect("append");
    assert_eq!(serials(&out), vec![3, 2]);
    let epoch = appended(&out[0]).epoch;
    assert_eq!(
        store.last_position(&channel("a")).await.expect("info"),
        Some(Position {
            epoch,
            serial: Serial::new(3).expect("non-zero")
        })
    );
    assert_eq!(
        store.last_position(&channel("none")).await.expect("info"),
        None
    );
    let info = store.channel_info(&channel("b")).await.expect("info");
    assert_eq!(info.first_serial, Serial::new(1));
    assert_eq!(info.epochs, vec![(epoch, Serial::FIRST)]);
    store.close().await.expect("close");
}

/// A repeated key returns the first position, within a batch and across batches;
/// the same key on another channel is a different message.
pub async fn duplicates_return_the_original_position<F: StoreFactory>(f: &mut F) {
    let store = f.fresh().await;
    let out = store
        .append(vec![
            msg("a", "k", "1"),
            msg("a", "k", "2"),
            msg("b", "k", "3"),
        ])
        .await
        .expect("append");
    let first = appended(&out[0]);
    assert_eq!(out[1], AppendOutcome::Duplicate(first));
    assert_eq!(appended(&out[2]).serial, Serial::FIRST);
    let again = store
        .append(vec![msg("a", "k", "4")])
        .await
        .expect("append");
    assert_eq!(again, vec![AppendOutcome::Duplicate(first)]);
    let next = store
        .append(vec![msg("a", "k2", "5")])
        .await
        .expect("append");
    assert_eq!(serials(&next), vec![2], "a duplicate takes no serial");
    let read = store
        .read(&channel("a"), Serial::FIRST, 10)
        .await
        .expect("read");
    assert_eq!(read.messages.len(), 2, "a duplicate is not stored");
    assert_eq!(read.messages[0].payload, Bytes::from_static(b"1"));
    store.close().await.expect("close");
}

/// An invalid message is rejected on its own; its neighbours are stored.
pub async fn bad_messages_are_rejected_alone<F: StoreFactory>(f: &mut F) {
    let store = f.fresh().await;
    let mut long_key = msg("a", "x", "p");
    long_key.idempotency_key = Bytes::from(vec![b'k'; 256]);
    let out = store
        .append(vec![
            msg("a", "1", "ok"),
            msg("a", "", "no key"),
            long_key,
            msg("a", "2", "ok"),
        ])
        .await
        .expect("append");
    assert_eq!(appended(&out[0]).serial.get(), 1);
    assert_eq!(out[1], AppendOutcome::Rejected(RecordError::InvalidKey(0)));
    assert_eq!(
        out[2],
        AppendOutcome::Rejected(RecordError::InvalidKey(256))
    );
    assert_eq!(appended(&out[3]).serial.get(), 2);
    store.close().await.expect("close");
}

/// Reads return exactly the requested range, in order, with what was appended.
pub async fn reads_return_exact_ranges<F: StoreFactory>(f: &mut F) {
    let store = f.fresh().await;
    for round in 0..10 {
        let batch = (0..50)
            .flat_map(|i| {
                let n = round * 50 + i;
                [
                    msg("r", &format!("r{n}"), &format!("p{n}")),
                    msg("other", &format!("o{n}"), "noise"),
                ]
            })
            .collect();
        store.append(batch).await.expect("append");
    }
    let ch = channel("r");
    for (from, limit, want) in [
        (1, 10, 10),
        (7, 100, 100),
        (450, 100, 51),
        (500, 5, 1),
        (501, 5, 0),
    ] {
        let r = store
            .read(&ch, Serial::new(from).expect("non-zero"), limit)
            .await
            .expect("read");
        assert_eq!(r.messages.len(), want, "read from {from} limit {limit}");
        for (i, m) in r.messages.iter().enumerate() {
            let n = from + i as u64;
            assert_eq!(m.position.serial.get(), n);
            assert_eq!(m.payload, Bytes::from(format!("p{}", n - 1)));
            assert_eq!(m.idempotency_key, Bytes::from(format!("r{}", n - 1)));
            assert_eq!(m.headers, vec![("k".to_string(), format!("v-r{}", n - 1))]);
        }
        assert_eq!(r.first_serial, Serial::new(1));
        assert_eq!(
            r.last.map(|p| p.serial.get()),
            Some(500),
            "the channel's last"
        );
        assert_eq!(
            r.more,
            from + (want as u64) <= 500,
            "more after {from}+{want}"
        );
    }
    // A byte limit stops early (but never before the first message) and says so.
    let r = store
        .read(
            &ch,
            Serial::FIRST,
            ReadLimit {
                messages: 100,
                bytes: 10,
            },
        )
        .await
        .expect("read");
    assert_eq!(r.messages.len(), 1);
    assert!(r.more);
    let none = store
        .read(&channel("never"), Serial::FIRST, 10)
        .await
        .expect("read");
    assert!(none.messages.is_empty());
    assert_eq!(none.last, None);
    store.close().await.expect("close");
}

/// `first_serial_since` finds the first message stored at or after a time, the same
/// before and after a reopen; timestamps never decrease along a channel.
pub async fn reads_find_a_point_in_time<F: StoreFactory>(f: &mut F) {
    let store = f.fresh().await;
    // 20 appends a few ms apart, 40 messages each among noise: several index
    // entries, and timestamps that differ between appends.
    for round in 0..20 {
        let batch = (0..40)
            .flat_map(|i| {
                let n = round * 40 + i;
                [
                    msg("t", &format!("t{n}"), "x"),
                    msg("noise", &format!("n{n}"), "y"),
                ]
            })
            .collect();
        store.append(batch).await.expect("append");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let ch = channel("t");
    let all = store.read(&ch, Serial::FIRST, 1000).await.expect("read");
    assert_eq!(all.messages.len(), 800);
    let stamps: Vec<u64> = all.messages.iter().map(|m| m.timestamp_ms).collect();
    assert!(stamps.is_sorted(), "timestamps decrease: {stamps:?}");
    let (first, last) = (stamps[0], stamps[799]);
    let mut times = vec![0, first, last, last + 1];
    times.extend(stamps.iter().step_by(37).flat_map(|t| [*t, t + 1]));
    let expected = |since: u64| {
        all.messages
            .iter()
            .find(|m| m.timestamp_ms >= since)
            .map(|m| m.position.serial)
    };
    for since in &times {
        let found = store.first_serial_since(&ch, *since).await.expect("seek");
        assert_eq!(found, expected(*since), "since {since}");
    }
    assert_eq!(
        store
            .first_serial_since(&channel("never"), 0)
            .await
            .expect("seek"),
        None
    );
    let store = f.reopen(store).await;
    for since in &times {
        let found = store.first_serial_since(&ch, *since).await.expect("seek");
        assert_eq!(found, expected(*since), "since {since}, reopened");
    }
    store.close().await.expect("close");
}

/// Reading until short and then following the tail sees every message once.
pub async fn tail_joins_reads_without_gaps<F: StoreFactory>(f: &mut F) {
    let store = f.fresh().await;
    let ch = channel("t");
    store
        .append(
            (0..100)
                .map(|i| msg("t", &format!("a{i}"), "early"))
                .collect(),
        )
        .await
        .expect("append");
    let mut tail = store.tail();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for b in 0..20 {
                let batch = (0..10)
                    .map(|i| msg("t", &format!("b{b}-{i}"), "late"))
                    .collect();
                store.append(batch).await.expect("append");
            }
        })
    };
    let mut seen: Vec<u64> = Vec::new();
    let mut next = Serial::FIRST;
    loop {
        let r = store.read(&ch, next, 64).await.expect("read");
        seen.extend(r.messages.iter().map(|m| m.position.serial.get()));
        if let Some(m) = r.messages.last() {
            next = m.position.serial.next();
        }
        if !r.more {
            break;
        }
    }
    while seen.len() < 300 {
        let batch = tokio::time::timeout(Duration::from_secs(10), tail.recv())
            .await
            .expect("tail delivers within 10 s")
            .expect("tail keeps up");
        for (name, msgs) in &batch.channels {
            if *name != ch {
                continue;
            }
            for m in msgs {
                if m.position.serial >= next {
                    assert_eq!(m.position.serial, next, "no gap between read and tail");
                    seen.push(m.position.serial.get());
                    next = next.next();
                }
            }
        }
    }
    writer.await.expect("writer task");
    assert_eq!(seen, (1..=300).collect::<Vec<_>>());
    store.close().await.expect("close");
}

/// Many tasks appending at once: every serial handed out once, none missing.
pub async fn concurrent_appends_stay_dense<F: StoreFactory>(f: &mut F) {
    let store = f.fresh().await;
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for b in 0..20 {
                    let batch = (0..10)
                        .map(|i| msg(&format!("c{}", i % 3), &format!("{t}-{b}-{i}"), "x"))
                        .collect();
                    for (i, o) in store
                        .append(batch)
                        .await
                        .expect("append")
                        .iter()
                        .enumerate()
                    {
                        got.push((i % 3, appended(o).serial.get()));
                    }
                }
                got
            })
        })
        .collect();
    let mut per_channel = vec![Vec::new(); 3];
    for t in tasks {
        for (c, s) in t.await.expect("task") {
            per_channel[c].push(s);
        }
    }
    for serials in &mut per_channel {
        serials.sort_unstable();
        let n = serials.len() as u64;
        assert_eq!(*serials, (1..=n).collect::<Vec<_>>());
    }
    store.close().await.expect("close");
}

/// After a restart: data, last positions and dedupe keys are all still there, and
/// serials go on densely.
pub async fn restart_keeps_everything<F: StoreFactory>(f: &mut F) {
    let store = f.fresh().await;
    let first = store
        .append(
            (0..20)
                .map(|i| msg("p", &format!("k{i}"), &format!("v{i}")))
                .collect(),
        )
        .await
        .expect("append");
    let store = f.reopen(store).await;
    let again = store
        .append(vec![msg("p", "k3", "retry")])
        .await
        .expect("append");
    assert_eq!(again, vec![AppendOutcome::Duplicate(appended(&first[3]))]);
    let next = store
        .append(vec![msg("p", "k20", "v20")])
        .await
        .expect("append");
    assert_eq!(appended(&next[0]).serial.get(), 21);
    let r = store
        .read(&channel("p"), Serial::FIRST, 100)
        .await
        .expect("read");
    assert_eq!(r.messages.len(), 21);
    assert_eq!(r.messages[20].payload, Bytes::from_static(b"v20"));
    store.close().await.expect("close");
}
