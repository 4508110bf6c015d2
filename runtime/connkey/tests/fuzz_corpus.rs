//! A deterministic, bounded mutation test of the connection key decoder, run by plain
//! `cargo test`: the always-on little brother of the `connection_keys` cargo-fuzz
//! target (`scripts/fuzz.sh`). Valid keys and their signed parts are mutated (bit
//! flips, byte edits, truncation, insertion, deletion) and checked by
//! `support/key_checks.rs`. The PRNG is seeded with a constant, so a failure replays.
//! `write_fuzz_seeds` (ignored; run by `scripts/fuzz.sh`) writes the valid inputs as
//! the fuzzer's seed corpus.

#[path = "support/key_checks.rs"]
mod key_checks;
#[path = "../../../fuzz/mutate.rs"]
mod mutate;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mutate::{Rng, mutate};
use tern_connkey::{Claims, Signer};

/// Mutated inputs tried.
const ITERATIONS: u64 = 20_000;

/// Valid inputs of both modes (see `key_checks`).
fn samples() -> Vec<Vec<u8>> {
    let signer = Signer::new(key_checks::SECRET, &[]);
    let claims = [
        Claims {
            connection_id: "edge-a-0123456789abcdef".into(),
            app: "app".into(),
            key_id: "key".into(),
            client_id: None,
            expires_unix_ms: 1_795_526_623_000,
        },
        Claims {
            connection_id: "x".into(),
            app: "a".into(),
            key_id: "k".into(),
            client_id: Some("ünïcode client".into()),
            expires_unix_ms: u64::MAX,
        },
    ];
    let mut inputs = Vec::new();
    for claims in &claims {
        let key = signer.issue(claims);
        inputs.push([&[0u8][..], key.as_bytes()].concat());
        let bytes = URL_SAFE_NO_PAD.decode(&key).expect("base64url");
        let signed = &bytes[..bytes.len() - 32];
        inputs.push([&[1u8][..], signed].concat());
    }
    inputs
}

#[test]
fn valid_inputs_pass_the_checks_and_verify() {
    for input in samples() {
        key_checks::check_input(&input);
    }
    let signer = Signer::new(key_checks::SECRET, &[]);
    let key = &samples()[0][1..];
    assert!(
        signer
            .verify(std::str::from_utf8(key).expect("text"))
            .is_ok()
    );
}

#[test]
fn mutated_inputs_never_panic() {
    let samples = samples();
    let mut rng = Rng(0x7e57_c0de_4b1d_0001);
    for i in 0..ITERATIONS {
        let mut input = samples[i as usize % samples.len()].clone();
        mutate(&mut rng, &mut input);
        key_checks::check_input(&input);
    }
}

/// Writes [`samples`] into `$TERN_FUZZ_SEED_DIR` (run by `scripts/fuzz.sh`).
#[test]
#[ignore = "writes the fuzzer's seed corpus; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let dir = std::env::var_os("TERN_FUZZ_SEED_DIR").expect("TERN_FUZZ_SEED_DIR is set");
    for (i, input) in samples().iter().enumerate() {
        std::fs::write(std::path::Path::new(&dir).join(format!("seed-{i}")), input)
            .expect("write seed");
    }
}
