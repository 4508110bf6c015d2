//! Helpers shared by the store's integration tests.

#![allow(dead_code, unreachable_pub)]

pub mod node;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tern_link::Position;
use tern_log::conformance::msg;
use tern_log::{AppendOutcome, EmbeddedStore, LogStore};

/// Copies a live store's files the way a crash leaves them. The checkpoint goes
/// first: everything it depends on (key files, segment data) was durable before it
/// was written, so copying it first never pairs it with an older key file, as a
/// file-by-file copy in another order could while the checkpoint thread works.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .expect("read_dir")
        .map(|e| e.expect("entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name() != "index.ckpt");
    for entry in entries {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The segment files of a store, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .expect("segments dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

/// Waits (bounded) until the store's writer thread has finished and released the
/// lock after its last handle was dropped.
pub fn wait_unlocked(dir: &Path) {
    let lock = std::fs::File::open(dir.join("lock")).expect("lock file");
    for _ in 0..1000 {
        if lock.try_lock().is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the store's writer did not stop within 10 s");
}

/// Appends `batches` batches of `per_batch` equal-sized messages (keys `{b}-{i}`,
/// so batches are byte-for-byte the same size while b, i < 10).
pub async fn fill(
    store: &EmbeddedStore,
    ch: &str,
    tag: &str,
    batches: usize,
    per_batch: usize,
    payload: usize,
) -> Vec<Position> {
    let mut out = Vec::new();
    for b in 0..batches {
        let batch = (0..per_batch)
            .map(|i| msg(ch, &format!("{tag}{b}-{i}"), &"x".repeat(payload)))
            .collect();
        for o in store.append(batch).await.expect("append") {
            match o {
                AppendOutcome::Appended(p) => out.push(p),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    out
}
