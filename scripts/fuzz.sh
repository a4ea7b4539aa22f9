#!/usr/bin/env bash
# A bounded libFuzzer run of the wire-frame decoder (proto/fuzz, target `decode_frame`).
#
#   scripts/fuzz.sh [--seconds N]      default 60
#
# Installs cargo-fuzz into .cache/tools on first use. cargo-fuzz passes nightly-only flags
# (sanitizer, coverage instrumentation); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept
# them, so no second toolchain is needed. The run starts from the committed corpus and works
# in a scratch copy, so it never changes tracked files. `-malloc_limit_mb` makes any single
# allocation above 64 MiB a failure: the decoder may not allocate beyond its frame limits
# (1 MiB in the fuzz target) whatever lengths the input declares.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    *) echo "usage: scripts/fuzz.sh [--seconds N]" >&2; exit 2 ;;
  esac
done

CARGO_FUZZ_VERSION=0.13.2
tools="$PWD/.cache/tools"
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools (once)" >&2
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$tools"
fi

work=proto/fuzz/corpus-work
rm -rf "$work"
mkdir -p "$work"
cp proto/fuzz/corpus/decode_frame/* "$work/"

export RUSTC_BOOTSTRAP=1
"$tools/bin/cargo-fuzz" run --fuzz-dir proto/fuzz --sanitizer address decode_frame "$work" -- \
  -max_total_time="$seconds" -max_len=4096 -malloc_limit_mb=64 -rss_limit_mb=2048 -print_final_stats=1
