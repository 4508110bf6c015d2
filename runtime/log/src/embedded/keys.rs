//! Dedupe key files: the idempotency keys added between two checkpoints.
//!
//! The dedupe index can hold millions of keys; writing all of them into every
//! checkpoint stalled the writer for hundreds of milliseconds. Instead each
//! checkpoint first writes only the keys added since the previous one, to
//! `dedupe/<next lsn of the checkpoint>.keys`, and opening loads the files up to the
//! checkpoint in order, then replays the tail. A file is deleted once every key in
//! it has left the index (expired or evicted), so the files hold about what the
//! index holds: 36 bytes per key.
//!
//! ```text
//! "TRNK" | version u32 = 1 | count u64 | crc32c(entries) u32
//! entries := (hash u128 | time_s u32 | epoch u64 | serial u64){count}
//! ```

use std::io;
use std::path::{Path, PathBuf};

use super::dedupe::DedupeEntry;
use super::files::{list_numbered, replace_atomically};
use super::format::Cursor;

const MAGIC: [u8; 4] = *b"TRNK";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 20;
const ENTRY_BYTES: usize = 36;

pub(crate) fn path(dir: &Path, end_lsn: u64) -> PathBuf {
    dir.join(format!("{end_lsn:020}.keys"))
}

/// Key files in `dir` by the lsn they end at, oldest first.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    list_numbered(dir, ".keys")
}

/// Writes `entries` durably (fsynced, then the directory).
pub(crate) fn write(
    dir: &Path,
    end_lsn: u64,
    entries: impl ExactSizeIterator<Item = (u128, DedupeEntry)>,
) -> io::Result<()> {
    let mut b = Vec::with_capacity(HEADER_BYTES + entries.len() * ENTRY_BYTES);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    for (hash, e) in entries {
        b.extend_from_slice(&hash.to_le_bytes());
        b.extend_from_slice(&e.time_s.to_le_bytes());
        b.extend_from_slice(&e.epoch.to_le_bytes());
        b.extend_from_slice(&e.serial.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b[HEADER_BYTES..]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    replace_atomically(&path(dir, end_lsn), &b)
}

/// Reads a key file, checking its CRC.
pub(crate) fn read(bytes: &[u8]) -> Result<Vec<(u128, DedupeEntry)>, String> {
    let mut c = Cursor::new(bytes);
    if c.take(4) != Some(&MAGIC[..]) || c.u32() != Some(VERSION) {
        return Err("not a tern key file of a known version".into());
    }
    let (Some(count), Some(crc)) = (c.u64(), c.u32()) else {
        return Err("key file header is truncated".into());
    };
    let body = c.rest();
    if Some(body.len() as u64) != count.checked_mul(ENTRY_BYTES as u64)
        || crc32c::crc32c(body) != crc
    {
        return Err("key file length or checksum mismatch".into());
    }
    let mut c = Cursor::new(body);
    let mut out = Vec::with_capacity(body.len() / ENTRY_BYTES);
    while let (Some(hash), Some(time_s), Some(epoch), Some(serial)) =
        (c.u128(), c.u32(), c.u64(), c.u64())
    {
        out.push((
            hash,
            DedupeEntry {
                time_s,
                epoch,
                serial,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn key_files_round_trip_and_detect_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = DedupeEntry {
            time_s: 5,
            epoch: 7,
            serial: 9,
        };
        write(dir.path(), 42, vec![(1u128, e), (u128::MAX, e)].into_iter()).expect("write");
        assert_eq!(list(dir.path()).expect("list")[0].0, 42);
        let mut bytes = fs::read(path(dir.path(), 42)).expect("read");
        assert_eq!(read(&bytes), Ok(vec![(1u128, e), (u128::MAX, e)]));
        bytes[30] ^= 1;
        assert!(read(&bytes).is_err());
        assert!(read(&bytes[..10]).is_err());
    }
}
