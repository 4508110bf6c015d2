//! A deterministic, bounded mutation test of the `$functions` record decoder, run by
//! plain `cargo test`: the always-on little brother of the `function_records`
//! cargo-fuzz target (`scripts/fuzz.sh`). Valid records are encoded, mutated (bit
//! flips, byte edits, truncation, insertion, deletion) and checked by
//! `support/record_checks.rs`. The PRNG is seeded with a constant, so a failure
//! replays. `write_fuzz_seeds` (ignored; run by `scripts/fuzz.sh`) writes the valid
//! records as the fuzzer's seed corpus.

#[path = "../../../fuzz/mutate.rs"]
mod mutate;
#[path = "support/record_checks.rs"]
mod record_checks;

use bytes::Bytes;
use mutate::{Rng, mutate};
use tern_config::{FailurePolicy, Stage};
use tern_fnrecord::{BindingRecord, FunctionRecord};

/// Mutated payloads tried.
const ITERATIONS: u64 = 20_000;

/// Valid records of every shape.
fn samples() -> Vec<FunctionRecord> {
    let binding = |patterns: &[&str], stage, policy, timeout_us, order| BindingRecord {
        patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
        stage,
        policy,
        timeout_us,
        memory_bytes: 16 << 20,
        order,
    };
    vec![
        FunctionRecord::Deploy {
            name: "profanity".into(),
            binding: binding(
                &["chat:*"],
                Stage::Ingress,
                FailurePolicy::FailClosed,
                2000,
                0,
            ),
            wasm: Bytes::from_static(b"\0asm\x0d\0\x01\0"),
            rollback_of: None,
        },
        FunctionRecord::Deploy {
            name: "enricher".into(),
            binding: binding(
                &["sensors:#", "chat:*:room"],
                Stage::Egress,
                FailurePolicy::FailOpen,
                500,
                -3,
            ),
            wasm: Bytes::from(vec![0x5a; 300]),
            rollback_of: Some(4),
        },
        FunctionRecord::Remove {
            name: "router".into(),
        },
    ]
}

#[test]
fn valid_records_pass_the_checks() {
    for record in samples() {
        let bytes = record.encode();
        assert_eq!(FunctionRecord::decode(&bytes).expect("decodes"), record);
        record_checks::check_payload(&bytes);
    }
}

#[test]
fn mutated_records_never_panic() {
    let samples: Vec<Bytes> = samples().iter().map(FunctionRecord::encode).collect();
    let mut rng = Rng(0x7e24_f00d_1234_5679);
    let mut decoded = 0;
    for iteration in 0..ITERATIONS {
        let mut bytes = samples[rng.below(samples.len())].to_vec();
        mutate(&mut rng, &mut bytes);
        if FunctionRecord::decode(&bytes).is_ok() {
            decoded += 1;
        }
        if let Err(panic) = std::panic::catch_unwind(|| record_checks::check_payload(&bytes)) {
            panic!("iteration {iteration}, payload {bytes:02x?}: {panic:?}");
        }
    }
    // Some mutants must stay valid, or the checks behind a successful decode never ran.
    assert!(decoded > 100, "only {decoded} mutants decoded");
}

/// Writes the valid records to `$TERN_FUZZ_SEED_DIR` (run by `scripts/fuzz.sh`).
#[test]
#[ignore = "writes the fuzz seed corpus; run by scripts/fuzz.sh"]
fn write_fuzz_seeds() {
    let dir = std::env::var("TERN_FUZZ_SEED_DIR").expect("TERN_FUZZ_SEED_DIR");
    for (i, record) in samples().iter().enumerate() {
        std::fs::write(format!("{dir}/record-{i}"), record.encode()).expect("write a seed");
    }
}
