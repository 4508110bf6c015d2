//! Sequential reading of a segment file, batch by batch, with every batch verified.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::format::{BATCH_HEADER_BYTES, Batch, BatchError, BatchHeader};

/// Largest batch body the format can describe (a u32 length). Nothing is allocated
/// before the file is known to hold that many bytes.
const MAX_BODY_BYTES: u64 = u32::MAX as u64;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad batch at byte {pos}: {error}")]
    Bad { pos: u64, error: BatchError },
}

/// Reads batches from `pos` up to `end` (exclusive).
pub(crate) struct SegmentScanner {
    file: BufReader<File>,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
}

impl SegmentScanner {
    pub(crate) fn open(path: &Path, pos: u64, end: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(pos))?;
        Ok(Self {
            file: BufReader::with_capacity(256 * 1024, file),
            pos,
            end,
            buf: Vec::new(),
        })
    }

    /// The next verified batch and its offset; `Ok(None)` at `end`.
    pub(crate) fn next_batch(&mut self) -> Result<Option<(u64, Batch<'_>)>, ScanError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let at = self.pos;
        let bad = |error| ScanError::Bad { pos: at, error };
        if self.end - at < BATCH_HEADER_BYTES as u64 {
            return Err(bad(BatchError::Truncated));
        }
        let mut head = [0u8; BATCH_HEADER_BYTES];
        self.file.read_exact(&mut head)?;
        let header = BatchHeader::parse(&head, MAX_BODY_BYTES).map_err(bad)?;
        if self.end - at < header.total_len() {
            return Err(bad(BatchError::Truncated));
        }
        self.buf.resize(header.body_len as usize, 0);
        self.file.read_exact(&mut self.buf)?;
        self.pos = at + header.total_len();
        let batch = Batch::parse(&header, &self.buf).map_err(bad)?;
        Ok(Some((at, batch)))
    }
}
