//! Edge cases of recovery, retention and tails, each found in review as a bug and
//! kept as a regression test. Crash images are made by copying a live store's directory
//! after its appends were acknowledged: that is exactly what a kill -9 leaves (the
//! page cache holds what the disk will have), and under `fsync = "always"` what a
//! power cut leaves too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tern_config::{FsyncPolicy, StoreConfig};
use tern_link::{Continuity, Epoch, Position, Serial, SubscribeFrom};
mod support;

use support::{copy_dir, fill, segments, wait_unlocked};
use tern_log::conformance::{channel, msg};
use tern_log::{
    AppendOutcome, AppendRequest, ChannelInfo, EmbeddedStore, LogError, LogStore, resolve,
};

fn s(n: u64) -> Serial {
    Serial::new(n).expect("non-zero")
}

async fn read_all(store: &EmbeddedStore, ch: &str) -> Vec<(u64, Bytes)> {
    try_read_all(store, ch).await.expect("read")
}

async fn try_read_all(store: &EmbeddedStore, ch: &str) -> Result<Vec<(u64, Bytes)>, LogError> {
    let mut out = Vec::new();
    let mut next = Serial::FIRST;
    loop {
        let r = store.read(&channel(ch), next, 1000).await?;
        let n = r.messages.len();
        for m in r.messages {
            next = m.position.serial.next();
            out.push((m.position.serial.get(), m.idempotency_key));
        }
        if n < 1000 {
            return Ok(out);
        }
    }
}

/// Regression (found in review): a checkpoint whose segment was found shorter than its `pos`
/// is ignored but left on disk. Once new appends grow the segment past `pos`
/// again, the next crash-restart trusts the stale checkpoint, starts replay in the
/// middle of a batch, and truncates acknowledged messages away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_checkpoint_is_never_replayed_over_newer_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), StoreConfig::default()).expect("open");
    fill(&store, "c", "a", 5, 10, 200).await;
    store.close().await.expect("close"); // checkpoint at (seg 0, pos = 5 batches)
    drop(store);
    // The segment loses its last batch ("cut file" damage, or a torn tail).
    let seg = &segments(dir.path())[0];
    let len = std::fs::metadata(seg).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .expect("open seg")
        .set_len(len / 5 * 4)
        .expect("cut");

    let store = EmbeddedStore::open(dir.path(), StoreConfig::default()).expect("reopen");
    // New acknowledged messages (different size, so batch boundaries move).
    fill(&store, "c", "b", 3, 10, 333).await;
    let acked = read_all(&store, "c").await;
    assert_eq!(acked.len(), 70);
    // kill -9 now: no newer checkpoint was written (64 MiB not reached).
    let image = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), image.path());
    drop(store);
    wait_unlocked(dir.path());

    let store = EmbeddedStore::open(image.path(), StoreConfig::default()).expect("crash reopen");
    let report = store.recovery_report().clone();
    let after = try_read_all(&store, "c").await;
    assert!(
        after.as_ref().is_ok_and(|a| *a == acked),
        "acknowledged messages lost or unreadable after a kill -9: {after:?}; recovery report: {report:?}"
    );
    store.close().await.expect("close");
}

/// Regression (found in review): the checkpoint proves the segment held `pos` synced bytes; the
/// file is now shorter (synced, acknowledged batches are gone), yet opening reports
/// nothing and keeps the epoch, so the lost serials are handed out again under the
/// same epoch: a subscriber holding (E, 45) silently continues on other messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_shorter_than_checkpoint_is_reported_with_a_new_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), StoreConfig::default()).expect("open");
    let acked = fill(&store, "c", "a", 5, 10, 200).await;
    store.close().await.expect("close");
    drop(store);
    let seg = &segments(dir.path())[0];
    let len = std::fs::metadata(seg).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .expect("open seg")
        .set_len(len / 5 * 4)
        .expect("cut");

    let store = EmbeddedStore::open(dir.path(), StoreConfig::default()).expect("reopen");
    let report = store.recovery_report().clone();
    let info = store.channel_info(&channel("c")).await.expect("info");
    let seen = acked[44]; // (E, 45): acknowledged, then lost
    assert!(
        report.truncated.is_some() || report.epoch_changed,
        "lost acknowledged serials 41..=50 went unreported; report: {report:?}"
    );
    assert!(matches!(
        resolve(&info, SubscribeFrom::After(seen)).continuity,
        Continuity::Lost { .. }
    ));
    store.close().await.expect("close");
}

/// Regression (found in review): after retention removed old segments, a damaged (or lost)
/// index.ckpt makes opening scan "every segment" — but the first kept segment
/// starts mid-channel, `check_dense` calls serial N+1 after 0 "damage", and the
/// store refuses to open (or, with one segment left, truncates it all away).
/// The checkpoint docs promise the scan is "slow, but always right".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_scan_after_retention_opens_with_what_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = StoreConfig {
        segment_bytes: 64 * 1024,
        checkpoint_bytes: 64 * 1024,
        ..StoreConfig::default()
    };
    config.retention.max_bytes = Some(256 * 1024);
    config.retention.max_age = None;
    let store = EmbeddedStore::open(dir.path(), config.clone()).expect("open");
    fill(&store, "r", "", 100, 20, 200).await;
    let removed = store.enforce_retention().await.expect("retention");
    assert!(removed.segments_removed > 0);
    let kept = read_all(&store, "r").await;
    store.close().await.expect("close");
    drop(store);
    // One flipped byte in the checkpoint: it fails its CRC and is ignored.
    let ckpt = dir.path().join("index.ckpt");
    let mut bytes = std::fs::read(&ckpt).expect("ckpt");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&ckpt, bytes).expect("damage ckpt");

    let store = match EmbeddedStore::open(dir.path(), config) {
        Ok(s) => s,
        Err(e) => panic!("a damaged checkpoint must only slow the open down: {e}"),
    };
    assert_eq!(read_all(&store, "r").await, kept);
    store.close().await.expect("close");
}

/// Regression (found in review): same root cause — a channel whose messages retention removed
/// entirely is forgotten by a full scan, and its serials restart at 1 under the
/// same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_scan_after_retention_never_reuses_a_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = StoreConfig {
        segment_bytes: 64 * 1024,
        checkpoint_bytes: 64 * 1024,
        ..StoreConfig::default()
    };
    config.retention.max_bytes = None;
    config.retention.max_age = Some(Duration::from_secs(1));
    let store = EmbeddedStore::open(dir.path(), config.clone()).expect("open");
    let mut gone = Vec::new();
    let mut b = 0;
    while segments(dir.path()).len() < 2 {
        gone.extend(fill(&store, "gone", &format!("g{b}-"), 1, 20, 500).await);
        b += 1;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    fill(&store, "fresh", "", 1, 1, 10).await;
    let report = store.enforce_retention().await.expect("retention");
    assert!(report.segments_removed > 0);
    store.close().await.expect("close");
    drop(store);
    std::fs::remove_file(dir.path().join("index.ckpt")).expect("lose the checkpoint");

    let store = EmbeddedStore::open(dir.path(), config).expect("reopen");
    let out = store
        .append(vec![msg("gone", "new", "x")])
        .await
        .expect("append");
    let last_given = *gone.last().expect("some");
    match &out[0] {
        AppendOutcome::Appended(p) => assert!(
            p.epoch != last_given.epoch || p.serial > last_given.serial,
            "position {p} was already given out (last was {last_given})"
        ),
        other => panic!("unexpected {other:?}"),
    }
    store.close().await.expect("close");
}

/// Regression (found in review): the epoch rule "new epoch after an unclean stop under fsync =
/// interval" looks at the *current* config, not the one the crashed run used.
/// Restarting a crashed interval store under `always` keeps the epoch although
/// acknowledged messages were lost, so their serials are reused silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_interval_stop_starts_a_new_epoch_under_any_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let interval = StoreConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(10)),
        ..StoreConfig::default()
    };
    let store = EmbeddedStore::open(dir.path(), interval).expect("open");
    let acked = fill(&store, "c", "", 3, 10, 200).await;
    // Power cut: the last batch was acknowledged but never synced.
    let image = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), image.path());
    drop(store);
    let seg = &segments(image.path())[0];
    let len = std::fs::metadata(seg).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .expect("open seg")
        .set_len(len / 3 * 2)
        .expect("cut");

    // The operator restarts with the safer policy.
    let store = EmbeddedStore::open(image.path(), StoreConfig::default()).expect("reopen");
    let report = store.recovery_report().clone();
    store
        .append(vec![msg("c", "after", "new")])
        .await
        .expect("append");
    let info = store.channel_info(&channel("c")).await.expect("info");
    let seen = acked[20]; // acknowledged (E, 21), lost in the power cut
    assert!(
        report.epoch_changed,
        "unclean stop under interval must start a new epoch; report: {report:?}"
    );
    assert!(
        matches!(
            resolve(&info, SubscribeFrom::After(seen)).continuity,
            Continuity::Lost { .. }
        ),
        "a subscriber holding the lost {seen} must be told"
    );
    store.close().await.expect("close");
}

/// Regression (found in review): `want_tail` is sampled by the writer when it builds a batch. A
/// subscriber that calls `tail()` after that, but before the syncer publishes the
/// batch, and then reads (too early to see it), never gets that message: it is
/// neither in the read nor on the tail. "Read until short, then follow the tail"
/// loses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_taken_during_a_commit_still_gets_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), StoreConfig::default()).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                store
                    .append(vec![msg("t", &format!("k{n}"), "p")])
                    .await
                    .expect("append");
                n += 1;
            }
        })
    };
    let ch = channel("t");
    let mut next = Serial::FIRST;
    let mut failure = None;
    'attempts: for attempt in 0..300 {
        let mut rx = store.tail();
        loop {
            let r = store.read(&ch, next, 1000).await.expect("read");
            if let Some(m) = r.messages.last() {
                next = m.position.serial.next();
            }
            if r.messages.len() < 1000 {
                break;
            }
        }
        loop {
            let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("tail delivers")
                .expect("tail keeps up");
            let Some((_, msgs)) = batch.channels.iter().find(|(c, _)| *c == ch) else {
                continue;
            };
            if let Some(m) = msgs.iter().find(|m| m.position.serial >= next) {
                if m.position.serial != next {
                    failure = Some(format!(
                        "attempt {attempt}: read ended before {next}, tail resumed at {}",
                        m.position.serial
                    ));
                    break 'attempts;
                }
                break;
            }
        }
        drop(rx);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    appender.await.expect("appender");
    store.close().await.expect("close");
    if let Some(f) = failure {
        panic!("{f}");
    }
}

/// Regression (found in review): `read` silently caps `limit` at
/// 10 000, so a read asking for more returns fewer than `limit` although the
/// channel has more — which the docs define as "reached the last durable message".
/// The link server's replay (`read_batch` may be configured up to 1 000 000) then
/// goes live and skips messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_honour_large_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), StoreConfig::default()).expect("open");
    for b in 0..11 {
        let batch = (0..1000)
            .map(|i| msg("big", &format!("{b}-{i}"), "p"))
            .collect();
        store.append(batch).await.expect("append");
    }
    let r = store
        .read(&channel("big"), Serial::FIRST, 20_000)
        .await
        .expect("read");
    let last = store
        .last_position(&channel("big"))
        .await
        .expect("info")
        .expect("some");
    assert!(
        r.messages.len() == 20_000 || r.messages.last().map(|m| m.position) == Some(last),
        "read returned {} < limit 20000 messages but stopped at {:?}, the log goes on to {last}",
        r.messages.len(),
        r.messages.last().map(|m| m.position.serial),
    );
    store.close().await.expect("close");
}

/// Regression (found in review): kill -9 during the very first open, after the first segment
/// file was created (mod.rs:172) but before the meta file was written (mod.rs:205),
/// leaves a store that never opens again ("has segments but no meta file"), though
/// it holds no data at all.
#[test]
fn crash_during_first_open_leaves_an_openable_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("segments")).expect("mkdir");
    std::fs::File::create(dir.path().join("segments/00000000000000000000.seg")).expect("seg");
    std::fs::File::create(dir.path().join("lock")).expect("lock");
    if let Err(e) = EmbeddedStore::open(dir.path(), StoreConfig::default()) {
        panic!("an empty store left by a crash during its creation must open: {e}");
    }
}

/// Regression (found in review): `resolve` says delivery continues at the start of the next
/// epoch even when retention already removed it; `Resume::next` is documented as
/// "the first serial that will be delivered".
#[test]
fn resolve_skips_removed_serials_after_an_epoch_change() {
    let info = ChannelInfo {
        first_serial: Some(s(15)),
        last: Some(Position {
            epoch: Epoch(11),
            serial: s(20),
        }),
        epochs: vec![(Epoch(10), s(1)), (Epoch(11), s(9))],
    };
    let r = resolve(
        &info,
        SubscribeFrom::After(Position {
            epoch: Epoch(10),
            serial: s(10),
        }),
    );
    assert!(matches!(r.continuity, Continuity::Lost { .. }));
    assert_eq!(r.next, s(15), "serials 9..=14 were removed by retention");
}

/// Regression (found in review): a group commit's body
/// can exceed the 1 GiB the scanner accepts (segment.rs MAX_BODY_BYTES): with
/// `max_batch_bytes` at its allowed maximum of 1 GiB one full append is 1 GiB + 20
/// bytes of body (and groups may reach twice `max_batch_bytes`). It is acknowledged,
/// then every read fails and a reopen truncates it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes 1 GiB; run with --ignored"]
async fn max_size_batch_is_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        max_message_bytes: 64 << 20,
        max_batch_bytes: 1 << 30,
        ..StoreConfig::default()
    };
    let store = EmbeddedStore::open(dir.path(), config.clone()).expect("open");
    // record = 24 fixed + channel (3) + key (2) + payload; 16 records of exactly 64 MiB.
    let payload = Bytes::from(vec![7u8; (64 << 20) - 24 - 3 - 2]);
    let batch: Vec<AppendRequest> = (0..16)
        .map(|i| AppendRequest {
            channel: channel("big"),
            idempotency_key: Bytes::from(format!("{i:02}")),
            headers: Vec::new(),
            payload: payload.clone(),
        })
        .collect();
    let out = store.append(batch).await.expect("append is accepted");
    assert!(out.iter().all(|o| matches!(o, AppendOutcome::Appended(_))));
    let read = store.read(&channel("big"), Serial::FIRST, 1).await;
    assert!(
        !matches!(read, Err(LogError::Corrupt { .. })),
        "an acknowledged batch cannot be read back: {read:?}"
    );
    store.close().await.expect("close");
}

/// Dedupe keys live in one key file per checkpoint: after many checkpoints and a
/// crash, every acknowledged key is still recognised with its original position;
/// once the keys of a file have all expired, the file is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_keys_survive_many_checkpoints_and_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = StoreConfig {
        segment_bytes: 256 * 1024,
        checkpoint_bytes: 64 * 1024,
        ..StoreConfig::default()
    };
    config.dedupe.window = Duration::from_secs(2);
    let store = EmbeddedStore::open(dir.path(), config.clone()).expect("open");
    let acked = fill(&store, "d", "k", 60, 20, 200).await;
    let image = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), image.path());
    let key_files = std::fs::read_dir(image.path().join("dedupe"))
        .expect("dedupe dir")
        .count();
    assert!(
        key_files >= 3,
        "one key file per checkpoint, got {key_files}"
    );

    // The crash image: every acknowledged key is still known.
    let crashed = EmbeddedStore::open(image.path(), config.clone()).expect("crash reopen");
    for (b, chunk) in acked.chunks(20).enumerate() {
        let retry = (0..20)
            .map(|i| msg("d", &format!("k{b}-{i}"), "retry"))
            .collect();
        let out = crashed.append(retry).await.expect("append");
        let want: Vec<_> = chunk.iter().map(|p| AppendOutcome::Duplicate(*p)).collect();
        assert_eq!(out, want, "batch {b}");
    }
    crashed.close().await.expect("close");

    // The live store: once the window has passed, a checkpoint deletes the files
    // whose keys all expired.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    fill(&store, "d", "late", 20, 20, 200).await;
    store.close().await.expect("close");
    let left = std::fs::read_dir(dir.path().join("dedupe"))
        .expect("dedupe dir")
        .count();
    assert!(
        left < key_files,
        "expired key files are deleted ({left} left of {key_files})"
    );
}
