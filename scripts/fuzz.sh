#!/usr/bin/env bash
# Coverage-guided fuzzing of the link codec (cargo-fuzz + libFuzzer, AddressSanitizer).
#
#   scripts/fuzz.sh [SECONDS]      # default 60
#
# Installs cargo-fuzz when it is missing, seeds fuzz/corpus/link_codec with valid
# frames of every variant when the corpus is empty, then runs the `link_codec` target
# for SECONDS. Only a stable rustc is available, so the nightly-only flags cargo-fuzz
# passes (-Zsanitizer=address, sancov) are unlocked with RUSTC_BOOTSTRAP=1.
# A crash fails the script; libFuzzer saves the input under fuzz/artifacts/link_codec/
# and cargo-fuzz prints how to reproduce and minimize it.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS]   (a positive number of seconds, default 60)" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Prefer the stable toolchain even where a nightly is the default.
if command -v rustup >/dev/null 2>&1 && rustup which --toolchain stable rustc >/dev/null 2>&1; then
    export RUSTUP_TOOLCHAIN=stable
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
echo "fuzz.sh: $(cargo fuzz --version), $(rustc -V), RUSTC_BOOTSTRAP=1"

corpus="fuzz/corpus/link_codec"
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    echo "fuzz.sh: seeding $corpus with encoded frames of every variant"
    locked=()
    [ -f Cargo.lock ] && locked=(--locked)
    # The frames live in tern-link's mutation test; its ignored `write_fuzz_seeds`
    # writes them in the fuzz target's input layout. This reuses the test build.
    if ! TERN_FUZZ_SEED_DIR="$root/$corpus" cargo test -p tern-link --test fuzz_corpus \
        "${locked[@]}" -- --ignored --exact write_fuzz_seeds --quiet; then
        echo "fuzz.sh: WARNING: could not write seeds; fuzzing from an empty corpus" >&2
    fi
    echo "fuzz.sh: $(ls "$corpus" | wc -l) seeds"
fi

echo "fuzz.sh: fuzzing link_codec for ${seconds}s"
cargo fuzz run --fuzz-dir fuzz link_codec "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1
