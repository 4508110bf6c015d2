#!/usr/bin/env bash
# Idempotent machine setup for Tern's tests and benchmarks on Debian.
#
#   scripts/setup.sh
#
# Expects rustup's stable toolchain, gcc, python3 and git. Installs the Debian packages
# whose commands are missing, and touches apt only then, so a machine that has
# everything is done in well under a second. Run as root (or with sudo available).
#
# What each package is for:
#   nats-server  the NATS comparison in the benchmarks; tests that use it skip
#                cleanly when it is absent
# cargo-fuzz is installed by scripts/fuzz.sh when fuzzing, not here.
set -euo pipefail

# "command package" pairs: the package is installed when the command is missing.
needed=(
    "nats-server nats-server"
)

for tool in cargo rustc cc git; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup.sh: '$tool' is missing; install the Rust toolchain (rustup), gcc and git first" >&2
        exit 1
    fi
done

missing=()
for pair in "${needed[@]}"; do
    read -r cmd pkg <<<"$pair"
    if command -v "$cmd" >/dev/null 2>&1; then
        echo "setup.sh: $cmd present ($(command -v "$cmd"))"
    else
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup.sh: nothing to install"
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
echo "setup.sh: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

for pair in "${needed[@]}"; do
    read -r cmd pkg <<<"$pair"
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "setup.sh: package $pkg installed but '$cmd' is still not on PATH" >&2
        exit 1
    fi
done
echo "setup.sh: installed ${missing[*]}"
