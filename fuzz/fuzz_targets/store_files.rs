//! Fuzzes every decoder of the embedded store's files (batches in segments,
//! checkpoints, the meta file, dedupe key files) with arbitrary bytes, as recovery
//! meets them after a crash or disk damage. Nothing may panic or allocate without
//! bound. Run: `scripts/fuzz.sh [SECONDS]`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tern_log::fuzzing::decode_store_file(data);
});
