//! On-disk batch format of the embedded store (pure encode/decode, no I/O).
//!
//! A segment file is a sequence of batches; one batch is one group commit.
//!
//! ```text
//! batch  := magic "TRNB" | body_len u32 | crc32c(body) u32 | body
//! body   := base_lsn u64 | timestamp_ms u64 | count u32 | record{count}
//! record := channel_len u8 | channel | epoch u64 | serial u64 | key_len u8 | key
//!           | header_count u16 | (name_len u16 | name | value_len u32 | value){header_count}
//!           | payload_len u32 | payload
//! ```
//! Integers are little-endian. `lsn` (log sequence number) counts records across
//! all channels; segment files are named by the lsn of their first record.
//! Decoding checks every length against the bytes present and never panics.

use bytes::Bytes;

/// Bytes before the body of a batch.
pub(crate) const BATCH_HEADER_BYTES: usize = 12;
const MAGIC: [u8; 4] = *b"TRNB";
const BODY_FIXED_BYTES: usize = 20;
/// Fixed bytes of one record besides channel, key, headers and payload.
pub(crate) const RECORD_OVERHEAD_BYTES: usize = 1 + 8 + 8 + 1 + 2 + 4;

/// Everything about a record except where it is.
pub(crate) struct RecordRef<'a> {
    pub(crate) channel: &'a [u8],
    pub(crate) epoch: u64,
    pub(crate) serial: u64,
    pub(crate) key: &'a [u8],
    headers: &'a [u8],
    header_count: u16,
    pub(crate) payload: &'a [u8],
}

impl RecordRef<'_> {
    /// The headers as owned strings (lossy for invalid UTF-8, which the writer
    /// never produces).
    pub(crate) fn headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(usize::from(self.header_count));
        let mut cur = Cursor::new(self.headers);
        for _ in 0..self.header_count {
            let (Some(name), Some(value)) = (cur.bytes_u16(), cur.bytes_u32()) else {
                break;
            };
            out.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
        out
    }

    /// Bytes of the encoded headers.
    pub(crate) fn headers_len(&self) -> usize {
        self.headers.len()
    }

    pub(crate) fn payload_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.payload)
    }
}

/// Encoded size of one record.
pub(crate) fn record_size(
    channel: &str,
    key: &[u8],
    headers: &[(String, String)],
    payload: &[u8],
) -> usize {
    RECORD_OVERHEAD_BYTES
        + channel.len()
        + key.len()
        + headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum::<usize>()
        + payload.len()
}

/// Builds one batch in a reusable buffer.
pub(crate) struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl BatchWriter {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::with_capacity(1 << 20),
            count: 0,
        }
    }

    /// Starts a new batch, discarding anything unfinished.
    pub(crate) fn begin(&mut self, base_lsn: u64, timestamp_ms: u64) {
        self.buf.clear();
        self.count = 0;
        self.buf.extend_from_slice(&MAGIC);
        self.buf.extend_from_slice(&[0; 8]);
        self.buf.extend_from_slice(&base_lsn.to_le_bytes());
        self.buf.extend_from_slice(&timestamp_ms.to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// Adds a record. The caller has checked the limits: channel and key ≤ 255
    /// bytes, ≤ 65 535 headers, names ≤ 65 535 bytes and values and payload < 4 GiB.
    pub(crate) fn push(
        &mut self,
        channel: &str,
        epoch: u64,
        serial: u64,
        key: &[u8],
        headers: &[(String, String)],
        payload: &[u8],
    ) {
        let b = &mut self.buf;
        b.push(channel.len() as u8);
        b.extend_from_slice(channel.as_bytes());
        b.extend_from_slice(&epoch.to_le_bytes());
        b.extend_from_slice(&serial.to_le_bytes());
        b.push(key.len() as u8);
        b.extend_from_slice(key);
        b.extend_from_slice(&(headers.len() as u16).to_le_bytes());
        for (name, value) in headers {
            b.extend_from_slice(&(name.len() as u16).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&(value.len() as u32).to_le_bytes());
            b.extend_from_slice(value.as_bytes());
        }
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
        self.count += 1;
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Seals the batch (length, count, CRC) and returns its bytes.
    pub(crate) fn finish(&mut self) -> &[u8] {
        let count_at = BATCH_HEADER_BYTES + 16;
        self.buf[count_at..count_at + 4].copy_from_slice(&self.count.to_le_bytes());
        let body_len = (self.buf.len() - BATCH_HEADER_BYTES) as u32;
        let crc = crc32c::crc32c(&self.buf[BATCH_HEADER_BYTES..]);
        self.buf[4..8].copy_from_slice(&body_len.to_le_bytes());
        self.buf[8..12].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// What is wrong with bytes that should hold a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BatchError {
    #[error("bad magic")]
    Magic,
    #[error("batch body of {0} bytes is larger than the segment allows")]
    Length(u64),
    #[error("checksum mismatch")]
    Checksum,
    #[error("batch is cut short")]
    Truncated,
    #[error("record {0} does not parse")]
    Record(u32),
}

/// A parsed batch header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchHeader {
    pub(crate) body_len: u32,
    crc: u32,
}

impl BatchHeader {
    pub(crate) fn parse(
        bytes: &[u8; BATCH_HEADER_BYTES],
        max_body: u64,
    ) -> Result<Self, BatchError> {
        if bytes[..4] != MAGIC {
            return Err(BatchError::Magic);
        }
        let body_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if u64::from(body_len) > max_body || (body_len as usize) < BODY_FIXED_BYTES {
            return Err(BatchError::Length(u64::from(body_len)));
        }
        let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        Ok(Self { body_len, crc })
    }

    pub(crate) fn total_len(&self) -> u64 {
        BATCH_HEADER_BYTES as u64 + u64::from(self.body_len)
    }
}

/// A checked batch body.
pub(crate) struct Batch<'a> {
    pub(crate) base_lsn: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) count: u32,
    records: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Verifies the CRC and the fixed fields of `body`.
    pub(crate) fn parse(header: &BatchHeader, body: &'a [u8]) -> Result<Self, BatchError> {
        if body.len() != header.body_len as usize {
            return Err(BatchError::Truncated);
        }
        if crc32c::crc32c(body) != header.crc {
            return Err(BatchError::Checksum);
        }
        let mut cur = Cursor::new(body);
        let (Some(base_lsn), Some(timestamp_ms), Some(count)) = (cur.u64(), cur.u64(), cur.u32())
        else {
            return Err(BatchError::Truncated);
        };
        Ok(Self {
            base_lsn,
            timestamp_ms,
            count,
            records: cur.rest(),
        })
    }

    /// Iterates the records; the last item is an error if a record does not parse
    /// (possible only if the CRC collided with garbage).
    pub(crate) fn records(&self) -> impl Iterator<Item = Result<RecordRef<'a>, BatchError>> {
        let mut cur = Cursor::new(self.records);
        let count = self.count;
        let mut i = 0;
        std::iter::from_fn(move || {
            if i >= count {
                return None;
            }
            let rec = parse_record(&mut cur).ok_or(BatchError::Record(i));
            i = if rec.is_ok() { i + 1 } else { count };
            Some(rec)
        })
    }
}

fn parse_record<'a>(cur: &mut Cursor<'a>) -> Option<RecordRef<'a>> {
    let channel = cur.bytes_u8()?;
    let epoch = cur.u64()?;
    let serial = cur.u64()?;
    let key = cur.bytes_u8()?;
    let header_count = cur.u16()?;
    let headers_start = cur.rest();
    for _ in 0..header_count {
        cur.bytes_u16()?;
        cur.bytes_u32()?;
    }
    let headers = &headers_start[..headers_start.len() - cur.rest().len()];
    let payload = cur.bytes_u32()?;
    Some(RecordRef {
        channel,
        epoch,
        serial,
        key,
        headers,
        header_count,
        payload,
    })
}

/// A bounds-checked reader over a byte slice.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    pub(crate) fn u128(&mut self) -> Option<u128> {
        self.array().map(u128::from_le_bytes)
    }
    pub(crate) fn bytes_u8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    pub(crate) fn bytes_u16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    pub(crate) fn bytes_u32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = BatchWriter::new();
        w.begin(42, 1_700_000_000_000);
        w.push("chat:a", 7, 1, b"k1", &[("h".into(), "v".into())], b"hello");
        w.push("chat:b", 7, 9, b"k2", &[], &[0u8; 300]);
        w.finish().to_vec()
    }

    type Parsed = (u64, Vec<(Vec<u8>, u64, Vec<(String, String)>, usize)>);

    fn parse(bytes: &[u8]) -> Result<Parsed, BatchError> {
        let head: &[u8; BATCH_HEADER_BYTES] =
            bytes[..BATCH_HEADER_BYTES].try_into().expect("long enough");
        let header = BatchHeader::parse(head, 1 << 30)?;
        let end = (header.total_len() as usize).min(bytes.len());
        let batch = Batch::parse(&header, &bytes[BATCH_HEADER_BYTES..end])?;
        let recs = batch
            .records()
            .map(|r| r.map(|r| (r.channel.to_vec(), r.serial, r.headers(), r.payload.len())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((batch.base_lsn, recs))
    }

    #[test]
    fn batches_round_trip() {
        let (lsn, recs) = parse(&sample()).expect("valid");
        assert_eq!(lsn, 42);
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0],
            (b"chat:a".to_vec(), 1, vec![("h".into(), "v".into())], 5)
        );
        assert_eq!(recs[1].3, 300);
        assert_eq!(
            record_size("chat:a", b"k1", &[("h".into(), "v".into())], b"hello"),
            RECORD_OVERHEAD_BYTES + 6 + 2 + 8 + 5
        );
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_detected() {
        let good = sample();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(parse(&bad).is_err(), "flip at {i} went unnoticed");
        }
        for cut in BATCH_HEADER_BYTES..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut} went unnoticed");
        }
    }
}
