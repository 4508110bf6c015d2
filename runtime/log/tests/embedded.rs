//! The embedded store: the conformance suite, plus what only a disk store has —
//! damaged tails, checkpoints, retention and a really full disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tern_config::StoreConfig;
use tern_link::{Continuity, Position, Serial, SubscribeFrom};
mod support;

use support::{fill, segments, wait_unlocked};
use tern_log::conformance::{self, StoreFactory, channel, msg};
use tern_log::{AppendOutcome, EmbeddedStore, LogError, LogStore, OpenError, resolve};

struct Embedded {
    dirs: Vec<tempfile::TempDir>,
    config: StoreConfig,
}

impl Embedded {
    fn new() -> Self {
        Self {
            dirs: Vec::new(),
            config: StoreConfig::default(),
        }
    }
    fn dir(&self) -> &Path {
        self.dirs.last().expect("a store was opened").path()
    }
}

impl StoreFactory for Embedded {
    type Store = EmbeddedStore;
    async fn fresh(&mut self) -> EmbeddedStore {
        self.dirs.push(tempfile::tempdir().expect("tempdir"));
        EmbeddedStore::open(self.dir(), self.config.clone()).expect("open")
    }
    async fn reopen(&mut self, store: EmbeddedStore) -> EmbeddedStore {
        store.close().await.expect("close");
        drop(store);
        EmbeddedStore::open(self.dir(), self.config.clone()).expect("reopen")
    }
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            conformance::$name(&mut Embedded::new()).await;
        }
    )*};
}

/// The same suite under `fsync = "interval"`: acknowledgements come before the
/// fsync, but nothing else about the contract changes.
mod interval {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_suite() {
        let mut factory = Embedded::new();
        factory.config.fsync = tern_config::FsyncPolicy::Interval(Duration::from_millis(5));
        conformance::run_all(&mut factory).await;
    }
}

conformance_tests!(
    dense_serials_per_channel,
    duplicates_return_the_original_position,
    bad_messages_are_rejected_alone,
    reads_return_exact_ranges,
    reads_find_a_point_in_time,
    tail_joins_reads_without_gaps,
    concurrent_appends_stay_dense,
    restart_keeps_everything,
);

fn small_segments() -> StoreConfig {
    StoreConfig {
        segment_bytes: 64 * 1024,
        checkpoint_bytes: 64 * 1024,
        ..StoreConfig::default()
    }
}

/// Simulates a crash after the last checkpoint: drop the store and remove the
/// checkpoint its shutdown wrote, so opening must verify the whole tail.
fn crash(store: EmbeddedStore, dir: &Path) {
    drop(store);
    wait_unlocked(dir);
    std::fs::remove_file(dir.join("index.ckpt")).expect("remove checkpoint");
}

async fn serials(store: &EmbeddedStore, ch: &str) -> Vec<u64> {
    let r = store
        .read(&channel(ch), Serial::FIRST, 10_000)
        .await
        .expect("read");
    r.messages.iter().map(|m| m.position.serial.get()).collect()
}

/// Flip bytes in, or cut, the last batch of the last segment: opening truncates it,
/// reports it, starts a new epoch, keeps everything before it, and appends go on
/// with the next dense serial under the new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_tail_is_cut_and_reported() {
    for damage in [
        "flip-header",
        "flip-body",
        "flip-last-byte",
        "cut-mid-batch",
        "cut-header",
        "garbage-after",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path(), StoreConfig::default()).expect("open");
        fill(&store, "c", "", 5, 10, 200).await;
        let epoch_before = store.recovery_report().epoch;
        crash(store, dir.path());
        let seg = segments(dir.path()).pop().expect("a segment");
        let mut bytes = std::fs::read(&seg).expect("read segment");
        let len = bytes.len();
        let per_batch = len / 5;
        let last_batch = len - per_batch;
        match damage {
            "flip-header" => bytes[last_batch + 5] ^= 0xff,
            "flip-body" => bytes[last_batch + 40] ^= 0x01,
            "flip-last-byte" => bytes[len - 1] ^= 0x80,
            "cut-mid-batch" => bytes.truncate(last_batch + per_batch / 2),
            "cut-header" => bytes.truncate(last_batch + 7),
            "garbage-after" => bytes.extend_from_slice(b"TRNB\xff\xff\xff\x00garbage"),
            _ => unreachable!(),
        }
        std::fs::write(&seg, &bytes).expect("write damage");

        let store = EmbeddedStore::open(dir.path(), StoreConfig::default()).expect("reopen");
        let report = store.recovery_report().clone();
        let cut = report.truncated.clone().expect("damage is reported");
        let kept = if damage == "garbage-after" { 50 } else { 40 };
        assert_eq!(
            cut.offset,
            if damage == "garbage-after" {
                len as u64
            } else {
                last_batch as u64
            },
            "{damage}"
        );
        assert!(
            report.epoch_changed && report.epoch > epoch_before,
            "{damage}: new epoch"
        );
        assert_eq!(
            serials(&store, "c").await,
            (1..=kept).collect::<Vec<_>>(),
            "{damage}"
        );
        let next = store
            .append(vec![msg("c", "after", "y")])
            .await
            .expect("append");
        assert_eq!(
            next,
            vec![AppendOutcome::Appended(Position {
                epoch: report.epoch,
                serial: Serial::new(kept + 1).expect("non-zero"),
            })],
            "{damage}"
        );
        let info = store.channel_info(&channel("c")).await.expect("info");
        assert_eq!(
            info.epochs.len(),
            2,
            "{damage}: the channel records the new epoch"
        );
        // A subscriber that had seen a cut message is told, never silently fed.
        if kept == 40 {
            let stale = Position {
                epoch: epoch_before,
                serial: Serial::new(45).expect("non-zero"),
            };
            assert!(
                matches!(
                    resolve(&info, SubscribeFrom::After(stale)).continuity,
                    Continuity::Lost { .. }
                ),
                "{damage}"
            );
        }
        store.close().await.expect("close");
    }
}

/// Damage in an older segment is not "the tail": opening refuses rather than cut
/// acknowledged data that follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_the_tail_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), small_segments()).expect("open");
    fill(&store, "c", "", 100, 10, 200).await;
    crash(store, dir.path());
    let mut segs: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "small segments roll");
    let mut bytes = std::fs::read(&segs[0]).expect("read");
    bytes[100] ^= 0xff;
    std::fs::write(&segs[0], bytes).expect("write");
    match EmbeddedStore::open(dir.path(), small_segments()) {
        Err(OpenError::Corrupt(msg)) => assert!(msg.contains("nothing was cut"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// A clean close leaves a checkpoint: reopening reads no segment data at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_makes_reopen_skip_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), small_segments()).expect("open");
    fill(&store, "a", "", 50, 20, 200).await;
    store.close().await.expect("close");
    drop(store);
    let store = EmbeddedStore::open(dir.path(), small_segments()).expect("reopen");
    let report = store.recovery_report().clone();
    assert!(report.used_checkpoint);
    assert_eq!(report.replayed_bytes, 0);
    assert!(!report.epoch_changed);
    assert_eq!(serials(&store, "a").await, (1..=1000).collect::<Vec<_>>());
    store.close().await.expect("close");
}

/// Retention by bytes removes the oldest segments; reads and resumes then start at
/// the first kept serial and say so; the dedupe window still answers for removed
/// messages; a reopen agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_bytes_and_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = small_segments();
    config.retention.max_bytes = Some(256 * 1024);
    config.retention.max_age = None;
    let store = EmbeddedStore::open(dir.path(), config.clone()).expect("open");
    let positions = fill(&store, "r", "", 100, 20, 200).await;
    let report = store.enforce_retention().await.expect("retention");
    assert!(report.segments_removed > 0);
    let info = store.channel_info(&channel("r")).await.expect("info");
    let first = info.first_serial.expect("something is kept");
    assert!(first.get() > 1);
    let read = store
        .read(&channel("r"), Serial::FIRST, 10)
        .await
        .expect("read");
    assert_eq!(read.messages[0].position.serial, first);
    assert_eq!(read.first_serial, Some(first));
    // From any time before the oldest kept message: that message, across segments.
    assert_eq!(
        store
            .first_serial_since(&channel("r"), 0)
            .await
            .expect("seek"),
        Some(first)
    );
    let r = resolve(&info, SubscribeFrom::After(positions[0]));
    assert_eq!(r.next, first);
    assert!(matches!(r.continuity, Continuity::Lost { .. }));
    let dup = store
        .append(vec![msg("r", "0-0", "again")])
        .await
        .expect("append");
    assert_eq!(dup, vec![AppendOutcome::Duplicate(positions[0])]);
    store.close().await.expect("close");
    drop(store);

    config.retention.max_bytes = None;
    config.retention.max_age = Some(Duration::from_secs(1));
    let store = EmbeddedStore::open(dir.path(), config).expect("reopen");
    assert_eq!(
        store
            .channel_info(&channel("r"))
            .await
            .expect("info")
            .first_serial,
        Some(first)
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    store
        .append(vec![msg("r", "late", "x")])
        .await
        .expect("append");
    let report = store.enforce_retention().await.expect("retention");
    assert!(report.segments_removed > 0);
    let segments = std::fs::read_dir(dir.path().join("segments"))
        .expect("dir")
        .count();
    assert_eq!(
        segments, 1,
        "only the active segment is younger than a second"
    );
    let info = store.channel_info(&channel("r")).await.expect("info");
    assert!(
        info.first_serial > Some(first),
        "age retention moved the start on"
    );
    assert_eq!(info.last.map(|p| p.serial.get()), Some(2001));
    store.close().await.expect("close");
}

/// A really full disk (a 1 MiB tmpfs; needs root, skipped otherwise): appends fail
/// with StorageFull and store nothing, reads keep working, nothing acknowledged is
/// lost, and appends work again once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_appends_and_loses_nothing() {
    let mount = tempfile::tempdir().expect("tempdir");
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tern-test",
            &mount.path().to_string_lossy(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED full_disk_refuses_appends_and_loses_nothing: mounting a tmpfs needs root"
        );
        return;
    }
    let result = std::panic::AssertUnwindSafe(full_disk_body(mount.path().to_path_buf()));
    let outcome = futures::FutureExt::catch_unwind(result).await;
    let _ = std::process::Command::new("umount")
        .arg(mount.path())
        .status();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn full_disk_body(dir: PathBuf) {
    let config = StoreConfig {
        segment_bytes: 16 * 1024 * 1024,
        ..StoreConfig::default()
    };
    // Ballast the operator can delete to free space later.
    std::fs::write(dir.join("ballast"), vec![0u8; 192 * 1024]).expect("ballast");
    let store = EmbeddedStore::open(&dir, config.clone()).expect("open");
    let mut acked = 0u64;
    let mut full = None;
    for b in 0..10_000 {
        let batch = (0..8)
            .map(|i| msg("f", &format!("{b}-{i}"), &"z".repeat(1000)))
            .collect();
        match store.append(batch).await {
            Ok(out) => acked += out.len() as u64,
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("a 1 MiB disk fills up");
    assert!(matches!(err, LogError::StorageFull(_)), "{err}");
    assert!(
        store.failure().is_none(),
        "a full disk does not fail the store"
    );
    assert_eq!(serials(&store, "f").await, (1..=acked).collect::<Vec<_>>());
    // The operator frees space: appends go on with the next serial.
    std::fs::remove_file(dir.join("ballast")).expect("free space");
    let next = store
        .append(vec![msg("f", "after", &"z".repeat(1000))])
        .await
        .expect("append after space was freed");
    assert!(matches!(&next[0], AppendOutcome::Appended(p) if p.serial.get() == acked + 1));
    drop(store);
    wait_unlocked(&dir);
    let store = EmbeddedStore::open(&dir, config).expect("reopen");
    assert_eq!(
        serials(&store, "f").await,
        (1..=acked + 1).collect::<Vec<_>>()
    );
    assert!(
        store.recovery_report().truncated.is_none(),
        "no torn batch was left behind"
    );
    store.close().await.expect("close");
}

/// Writes the files of a real store (segment, checkpoint, meta, key file) into
/// `$TERN_FUZZ_SEED_DIR` as seeds for the `store_files` fuzz target. Run by
/// `scripts/fuzz.sh`; ignored otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes fuzz seeds; run by scripts/fuzz.sh"]
async fn write_store_fuzz_seeds() {
    let Some(out) = std::env::var_os("TERN_FUZZ_SEED_DIR").map(PathBuf::from) else {
        panic!("set TERN_FUZZ_SEED_DIR");
    };
    std::fs::create_dir_all(&out).expect("seed dir");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), StoreConfig::default()).expect("open");
    let mut batch = vec![msg("seed:a", "1", "hello"), msg("seed:b", "2", "")];
    batch[0].headers = vec![("content-type".into(), "text/plain".into())];
    store.append(batch).await.expect("append");
    store
        .append(vec![msg("seed:a", "3", "again")])
        .await
        .expect("append");
    store.close().await.expect("close");
    drop(store);
    wait_unlocked(dir.path());
    let mut files = segments(dir.path());
    files.push(dir.path().join("index.ckpt"));
    files.push(dir.path().join("meta"));
    for entry in std::fs::read_dir(dir.path().join("dedupe")).expect("dedupe dir") {
        files.push(entry.expect("entry").path());
    }
    for (i, file) in files.iter().enumerate() {
        std::fs::copy(file, out.join(format!("seed-{i}"))).expect("copy seed");
    }
}
