//! Fuzzes the `$functions` record decoder (`tern_fnrecord::FunctionRecord::decode`):
//! arbitrary bytes as one message payload of the `$functions` channel, which every
//! edge replays. Run: `scripts/fuzz.sh [SECONDS]`.
//!
//! Input layout: the payload itself (seeds in `corpus/function_records` are deploy and
//! remove records). Checked on every input (see
//! `runtime/fnrecord/tests/support/record_checks.rs`): nothing panics, a decoded record
//! round-trips, a deploy's binding compiles or is refused without a panic.
#![no_main]

#[path = "../../runtime/fnrecord/tests/support/record_checks.rs"]
mod record_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    record_checks::check_payload(payload);
});
