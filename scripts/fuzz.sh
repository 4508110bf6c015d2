#!/usr/bin/env bash
# Coverage-guided fuzzing of Tern's decoders (cargo-fuzz + libFuzzer, AddressSanitizer):
# `link_codec` (edge <-> log frames), `store_files` (the embedded store's files),
# `client_protocol` (client protocol v1 frames, JSON and MessagePack) and
# `function_records` (the `$functions` channel's deploy records), `connection_keys`
# (the connection keys clients resume with) and `bird_replies` (what tern-health reads
# from BIRD's control socket).
#
#   scripts/fuzz.sh [SECONDS]      # per target, default 60
#
# Installs cargo-fuzz when it is missing, seeds each corpus when it is empty, then
# runs every target for SECONDS. Only a stable rustc is available, so the nightly-only flags cargo-fuzz
# passes (-Zsanitizer=address, sancov) are unlocked with RUSTC_BOOTSTRAP=1.
# A crash fails the script; libFuzzer saves the input under fuzz/artifacts/<target>/
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

locked=()
[ -f Cargo.lock ] && locked=(--locked)

# Seeds come from tests that write real data in each target's input layout, which
# reuses the test build: encoded frames of every variant for link_codec (tern-link's
# mutation test), the files of a real store for store_files, and every client and
# server frame in both encodings for client_protocol (tern-protocol's mutation test),
# deploy and remove records for function_records (tern-fnrecord's mutation test),
# issued keys and their signed parts for connection_keys (tern-connkey's mutation test),
# BIRD control-socket transcripts for bird_replies (tern-health's mutation test).
seed() {
    local target="$1" package="$2" test="$3" name="$4"
    local corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    if [ -z "$(ls -A "$corpus")" ]; then
        echo "fuzz.sh: seeding $corpus"
        if ! TERN_FUZZ_SEED_DIR="$root/$corpus" cargo test -p "$package" --test "$test" \
            "${locked[@]}" -- --ignored --exact "$name" --quiet; then
            echo "fuzz.sh: WARNING: could not write seeds; fuzzing $target from an empty corpus" >&2
        fi
        echo "fuzz.sh: $(ls "$corpus" | wc -l) seeds for $target"
    fi
}
seed link_codec tern-link fuzz_corpus write_fuzz_seeds
seed store_files tern-log embedded write_store_fuzz_seeds
seed client_protocol tern-protocol fuzz_corpus write_fuzz_seeds
seed function_records tern-fnrecord fuzz_corpus write_fuzz_seeds
seed connection_keys tern-connkey fuzz_corpus write_fuzz_seeds
seed bird_replies tern-health fuzz_corpus write_fuzz_seeds

for target in link_codec store_files client_protocol function_records connection_keys bird_replies; do
    echo "fuzz.sh: fuzzing $target for ${seconds}s"
    cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1
done
