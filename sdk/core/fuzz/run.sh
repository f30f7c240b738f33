#!/usr/bin/env bash
# Runs one coverage-guided fuzz target of flagd-core (libFuzzer through cargo-fuzz):
#
#     sdk/core/fuzz/run.sh TARGET SECONDS [libFuzzer options...]
#     sdk/core/fuzz/run.sh flag_set 600
#
# TARGET is flag_set, wire_frame or context (bodies in sdk/core/src/fuzzing.rs). Installs
# cargo-fuzz if it is missing. Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it
# accept the -Z flags cargo-fuzz passes. SANITIZER=none builds without AddressSanitizer
# (default: address). New inputs go to a scratch corpus ($FUZZ_WORK/TARGET, default
# target/fuzz-corpus/TARGET), the committed corpus (corpus/TARGET) is only read; crashes
# go to artifacts/TARGET/. To fold new inputs into the committed corpus, keeping it a few
# hundred files: `sdk/core/fuzz/minimize.sh TARGET` (plain `cargo fuzz cmin` keeps every
# input with a new feature: thousands). A crash reproducer worth keeping goes to
# sdk/core/tests/fuzz_regressions/TARGET/, which `cargo test` replays.
set -euo pipefail
cd "$(dirname "$0")"

target="${1:?usage: run.sh TARGET SECONDS [libFuzzer options...]}"
seconds="${2:?usage: run.sh TARGET SECONDS [libFuzzer options...]}"
shift 2
[ -f "fuzz_targets/$target.rs" ] || { echo "no fuzz target $target" >&2; exit 2; }

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

work="${FUZZ_WORK:-$PWD/../../../target/fuzz-corpus}"
mkdir -p "$work/$target" "corpus/$target"
target_dir=()
[ -n "${CARGO_TARGET_DIR:-}" ] && target_dir=(--target-dir "$CARGO_TARGET_DIR")

export RUSTC_BOOTSTRAP=1
exec cargo fuzz run --fuzz-dir . "${target_dir[@]}" --sanitizer "${SANITIZER:-address}" \
    "$target" "$work/$target" "$PWD/corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -dict="$PWD/json.dict" -print_final_stats=1 "$@"
