#!/usr/bin/env bash
# Rebuilds the committed corpus of one target from itself and the scratch corpus that
# run.sh fills ($FUZZ_WORK/TARGET, default target/fuzz-corpus/TARGET): the fewest inputs,
# picked greedily, that each add at least MIN_GAIN (default 3) coverage edges, so that it
# stays a few hundred small files (mincorpus.py).
#
#     sdk/core/fuzz/minimize.sh TARGET
set -euo pipefail
cd "$(dirname "$0")"

target="${1:?usage: minimize.sh TARGET}"
work="${FUZZ_WORK:-$PWD/../../../target/fuzz-corpus}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir . --target-dir "$target_dir" --sanitizer "${SANITIZER:-address}" "$target"
bin="$target_dir/x86_64-unknown-linux-gnu/release/$target"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/merged" "$work/$target"
"$bin" -merge=1 -use_counters=0 -max_len=65536 -timeout=10 \
    -merge_control_file="$tmp/control" "$tmp/merged" "$PWD/corpus/$target" "$work/$target" \
    >"$tmp/merge.log" 2>&1 || { cat "$tmp/merge.log" >&2; exit 1; }
python3 mincorpus.py "$tmp/control" "$tmp/picked" "${MIN_GAIN:-3}"
rm -rf "corpus/$target"
mv "$tmp/picked" "corpus/$target"
