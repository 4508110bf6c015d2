//! Fuzzes the connection key decoder (`tern_connkey::Signer::verify`): the key a
//! client presents in CONNECT `resume`. Run: `scripts/fuzz.sh [SECONDS]`.
//!
//! Input layout (see `runtime/connkey/tests/support/key_checks.rs`): a mode byte,
//! then either the key text as presented or, for odd modes, the signed part of a key,
//! which the target signs itself so that the claims decoder behind the signature
//! check is reached. Nothing may panic; accepted claims round-trip.
#![no_main]

#[path = "../../runtime/connkey/tests/support/key_checks.rs"]
mod key_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    key_checks::check_input(input);
});
