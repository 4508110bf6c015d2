//! Fuzzes the BIRD control-socket reply decoder (`tern_health::bird::ReplyDecoder`)
//! and the typed readings of its replies (`show protocols`, `show route`,
//! `enable`/`disable`): what tern-health reads from BIRD's socket. Run:
//! `scripts/fuzz.sh [SECONDS]`.
//!
//! Input layout (see `runtime/health/tests/support/reply_checks.rs`): a byte picking
//! the chunk size, then the bytes BIRD sent. Decoding whole and in chunks must agree,
//! and nothing may panic.
#![no_main]

#[path = "../../runtime/health/tests/support/reply_checks.rs"]
mod reply_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    reply_checks::check_input(input);
});
