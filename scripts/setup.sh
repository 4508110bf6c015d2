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
#   rustc-web, rust-web-src, lld-19
#                Debian's route for building message functions (DESIGN.md section 7),
#                the fallback of `tern fn build`; tests/functions_cli.rs builds a
#                function that way and skips when they are absent
#   chromium     a real browser's EventSource against the edge's SSE transport
#                (tests/sse_browser.rs, headless); the test skips when it is absent
#   bird2        the BIRD routing daemon (command `bird`): tern-health's tests start
#                two of them on loopback to check anycast announcements over BGP
#                (runtime/health/tests/bird.rs); the tests fail when it is absent
# It also adds rustup's wasm32-unknown-unknown target (message functions) when missing.
# cargo-fuzz is installed by scripts/fuzz.sh when fuzzing, not here.
set -euo pipefail

# "command package" pairs: the package is installed when the command is missing.
needed=(
    "nats-server nats-server"
    "wasm-ld-19 lld-19"
    "chromium chromium"
)

for tool in cargo rustc cc git; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "setup.sh: '$tool' is missing; install the Rust toolchain (rustup), gcc and git first" >&2
        exit 1
    fi
done

# Message functions are built for wasm32-unknown-unknown (tern fn build). rustup's
# target comes first; Debian's rustc-web route (DESIGN.md section 7) is the fallback.
wasm_target=wasm32-unknown-unknown
sysroot="$(rustc --print sysroot)"
if [ -d "$sysroot/lib/rustlib/$wasm_target/lib" ]; then
    echo "setup.sh: rust target $wasm_target present"
elif command -v rustup >/dev/null 2>&1; then
    echo "setup.sh: adding the rust target $wasm_target"
    if ! rustup target add "$wasm_target"; then
        echo "setup.sh: 'rustup target add $wasm_target' failed, so message functions cannot be built;" >&2
        echo "setup.sh: retry it, or use Debian's route: apt-get install rustc-web rust-web-src lld-19" >&2
        exit 1
    fi
elif [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] && command -v wasm-ld-19 >/dev/null 2>&1; then
    echo "setup.sh: no rustup; Debian's rustc-web route builds $wasm_target"
else
    echo "setup.sh: the rustc at $sysroot has no $wasm_target target and rustup is missing," >&2
    echo "setup.sh: so message functions cannot be built; install rustup and run" >&2
    echo "setup.sh: 'rustup target add $wasm_target', or: apt-get install rustc-web rust-web-src lld-19" >&2
    exit 1
fi

missing=()
# The Debian route is found by path, not by command (rustup's rustc shadows /usr/bin/rustc).
[ -x /usr/bin/rustc ] || missing+=(rustc-web)
[ -d /usr/lib/rustlib/src/rust/library ] || missing+=(rust-web-src)
# BIRD's daemon lives in /usr/sbin, which is not on every user's PATH.
if command -v bird >/dev/null 2>&1 || [ -x /usr/sbin/bird ]; then
    echo "setup.sh: bird present ($(command -v bird || echo /usr/sbin/bird))"
else
    missing+=(bird2)
fi
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
if ! command -v bird >/dev/null 2>&1 && ! [ -x /usr/sbin/bird ]; then
    echo "setup.sh: package bird2 installed but neither 'bird' on PATH nor /usr/sbin/bird exists" >&2
    exit 1
fi
echo "setup.sh: installed ${missing[*]}"
