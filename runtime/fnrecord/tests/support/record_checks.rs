//! Checks one `$functions` payload must pass, shared by the bounded mutation test
//! (`tests/fuzz_corpus.rs`) and the `function_records` cargo-fuzz target:
//!
//! - [`FunctionRecord::decode`] never panics, whatever the bytes;
//! - a decoded record re-encodes and decodes back to an equal record;
//! - a deploy's binding either compiles to a `BindingSpec` or is refused with an error,
//!   never a panic; a compiled spec stored again compiles to the same spec.

use tern_fnrecord::{BindingRecord, FunctionRecord};

/// This edge's memory ceiling in the checks (the default of `[functions]`).
const MAX_MEMORY_BYTES: usize = 64 << 20;

/// Runs every check on `bytes` as one `$functions` message payload.
pub(crate) fn check_payload(bytes: &[u8]) {
    let Ok(record) = FunctionRecord::decode(bytes) else {
        return;
    };
    let again = FunctionRecord::decode(&record.encode()).expect("a re-encoded record decodes");
    assert_eq!(again, record, "re-encoding changed the record");
    if let FunctionRecord::Deploy { binding, .. } = &record
        && let Ok(spec) = binding.to_spec(MAX_MEMORY_BYTES)
    {
        let stored = BindingRecord::from_spec(&spec);
        let back = stored
            .to_spec(MAX_MEMORY_BYTES)
            .expect("a spec stored again compiles");
        assert_eq!(back, spec, "storing a spec changed it");
    }
}
