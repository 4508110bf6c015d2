//! Byte mutations for the bounded mutation tests that stand in for the cargo-fuzz
//! targets under plain `cargo test` (`runtime/fnrecord/tests/fuzz_corpus.rs`,
//! `runtime/connkey/tests/fuzz_corpus.rs`), included with `#[path]`: a small,
//! deterministic PRNG, so a failure replays, and the edits libFuzzer makes most.

/// xorshift64*: small, deterministic, good enough to pick mutations.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`; `n` must be non-zero.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One to three edits of `bytes`: a bit flip, a byte replaced, a truncation, an
/// insertion or a removal.
pub(crate) fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..=rng.below(3) {
        let at = rng.below(bytes.len().max(1));
        match rng.below(5) {
            0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
            1 if !bytes.is_empty() => bytes[at] = rng.next() as u8,
            2 => bytes.truncate(at),
            3 => bytes.insert(at.min(bytes.len()), rng.next() as u8),
            _ if !bytes.is_empty() => {
                bytes.remove(at);
            }
            _ => bytes.push(rng.next() as u8),
        }
    }
}
