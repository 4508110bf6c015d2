//! The store's meta file: current epoch, dedupe hash seed, clean-shutdown flag.
//!
//! ```text
//! "TRNM" | version u32 = 1 | epoch u64 | seed u64 | flags u8 | crc32c(previous bytes) u32
//! flags: bit 0 = stopped cleanly, bit 1 = the run that wrote it acknowledged before
//! fsync (`fsync = "interval"`), so an unclean stop of that run may have lost acks.
//! ```

use std::io;
use std::path::Path;

use super::files::replace_atomically;
use super::format::Cursor;

const MAGIC: [u8; 4] = *b"TRNM";
const VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) epoch: u64,
    pub(crate) seed: u64,
    pub(crate) clean: bool,
    pub(crate) acks_before_sync: bool,
}

impl Meta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(33);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.extend_from_slice(&self.seed.to_le_bytes());
        b.push(u8::from(self.clean) | (u8::from(self.acks_before_sync) << 1));
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let body_len = bytes.len().checked_sub(4).ok_or("meta file is too short")?;
        let (body, crc) = bytes.split_at(body_len);
        let mut c = Cursor::new(crc);
        if c.u32() != Some(crc32c::crc32c(body)) {
            return Err("meta file checksum mismatch".into());
        }
        let mut c = Cursor::new(body);
        if c.take(4) != Some(&MAGIC[..]) {
            return Err("not a tern meta file".into());
        }
        match c.u32() {
            Some(VERSION) => {}
            v => return Err(format!("meta file version {v:?} is not supported")),
        }
        match (c.u64(), c.u64(), c.u8()) {
            (Some(epoch), Some(seed), Some(flags)) => Ok(Self {
                epoch,
                seed,
                clean: flags & 1 != 0,
                acks_before_sync: flags & 2 != 0,
            }),
            _ => Err("meta file is truncated".into()),
        }
    }

    pub(crate) fn store(&self, path: &Path) -> io::Result<()> {
        replace_atomically(path, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_detects_damage() {
        let m = Meta {
            epoch: 1_700_000_000,
            seed: 42,
            clean: true,
            acks_before_sync: true,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b), Ok(m));
        b[9] ^= 1;
        assert!(Meta::decode(&b).is_err());
        assert!(Meta::decode(&[]).is_err());
    }
}
